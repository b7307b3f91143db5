//! `bus`: the service's name and registrations (`bus:register`, `bus:add_event_listener`,
//! `bus:add_rebuild_handler`, `bus:add_receipt_listener`, `bus:add_route`), `bus:instance`,
//! `bus:service`, `bus:env`; the rest of the table is installed by [`super::send`],
//! [`super::stream`], [`super::wait`] and [`super::web`].

use super::{args, err, registering, send, shared, stream, wait, web, LResult};
use crate::script::handlers::Handlers;
use crate::script::ALL_TYPES;
use crate::script::convert::lua_to_json;
use mlua::{Function, Lua, MultiValue, Table, Value};
use sequent_protocol::declaration::{validate_service, Declaration};
use sequent_protocol::validate::validate_type;

/// Why a variable is never a script's to read (`None`: it may be, if declared): the secrets the
/// superclient itself uses, and the gateway's API tokens.
pub(crate) fn superclient_secret(name: &str) -> Option<&'static str> {
    match name {
        "SEQUENT_TOKEN_SECRET" | "SEQUENT_PASSWORD_PEPPER" => Some("this secret belongs to the superclient: scripts use it through crypto.*"),
        "SEQUENT_NATS_PASSWORD" | "SEQUENT_REDIS_PASSWORD" => Some("this credential belongs to the superclient, not to scripts"),
        "SEQUENT_API_TOKENS" => Some("these are the gateway's API tokens, not a script's"),
        n if n.ends_with("_SEAL_KEY") => Some("seal keys belong to the superclient: scripts use them through crypto.seal and crypto.open"),
        _ => None,
    }
}

pub fn install(lua: &Lua) -> LResult<()> {
    let bus = lua.create_table()?;
    bus.raw_set(
        "register",
        lua.create_function(|lua, values: MultiValue| {
            let (name, declared): (String, Option<Table>) = args(lua, values, "bus:register")?;
            registering(lua, "bus:register")?;
            validate_service(&name).map_err(|e| mlua::Error::runtime(format!("bus:register: {e}")))?;
            let mut declaration = match declared {
                None => serde_json::Map::new(),
                Some(t) => match lua_to_json(&Value::Table(t)).map_err(|e| mlua::Error::runtime(format!("bus:register({name:?}): {e}")))? {
                    serde_json::Value::Object(m) => m,
                    serde_json::Value::Array(a) if a.is_empty() => serde_json::Map::new(),
                    _ => return err(format!("bus:register({name:?}, declaration): the declaration is a table with named fields")),
                },
            };
            declaration.insert("service".into(), name.clone().into());
            let declaration: Declaration = serde_json::from_value(serde_json::Value::Object(declaration)).map_err(|e| {
                mlua::Error::runtime(format!(
                    "bus:register({name:?}, declaration): {e}; the fields are appends, env, sensitive, mints_tokens, http, state (see superclient/README.md)"
                ))
            })?;
            declaration.validate().map_err(|e| mlua::Error::runtime(format!("bus:register({name:?}, declaration): {e}")))?;
            if let Some((var, why)) = declaration.env.iter().find_map(|v| superclient_secret(v).map(|why| (v, why))) {
                return err(format!("bus:register({name:?}, declaration): env lists {var}: {why}"));
            }
            let mut h = lua.app_data_mut::<Handlers>().expect("handlers are installed");
            match &h.service {
                Some(old) if *old != name => err(format!("bus:register: the script already registered as {old:?}")),
                _ => {
                    h.service = Some(name);
                    h.declaration = declaration;
                    Ok(())
                }
            }
        })?,
    )?;
    bus.raw_set(
        "add_event_listener",
        lua.create_function(|lua, values: MultiValue| {
            let (event_type, f, opts): (String, Function, Option<Table>) = args(lua, values, "bus:add_event_listener")?;
            registering(lua, "bus:add_event_listener")?;
            // `*`: every event type (audit, forwarding, indexing); a listener of the event's own
            // type wins over it.
            if event_type != ALL_TYPES {
                validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_event_listener: {e}")))?;
            }
            let (rebuild, rerun) = match &opts {
                Some(t) => {
                    for pair in t.pairs::<String, Value>() {
                        let (k, _) = pair?;
                        if k != "rebuild" && k != "rerun_on_conflict" {
                            return err(format!("bus:add_event_listener({event_type}): unknown option {k:?}; the options are rebuild and rerun_on_conflict"));
                        }
                    }
                    (t.get::<Option<bool>>("rebuild")?.unwrap_or(false), t.get::<Option<bool>>("rerun_on_conflict")?.unwrap_or(false))
                }
                None => (false, false),
            };
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            if rerun {
                h.rerun.insert(event_type.clone());
            } else {
                h.rerun.remove(&event_type);
            }
            h.listeners.insert(event_type, (f, rebuild));
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_rebuild_handler",
        lua.create_function(|lua, values: MultiValue| {
            let (event_type, f): (String, Function) = args(lua, values, "bus:add_rebuild_handler")?;
            registering(lua, "bus:add_rebuild_handler")?;
            validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_rebuild_handler: {e}")))?;
            lua.app_data_mut::<Handlers>().expect("installed").rebuild.insert(event_type, f);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_receipt_listener",
        lua.create_function(|lua, values: MultiValue| {
            let (event_type, f): (String, Function) = args(lua, values, "bus:add_receipt_listener")?;
            registering(lua, "bus:add_receipt_listener")?;
            validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_receipt_listener: {e}")))?;
            lua.app_data_mut::<Handlers>().expect("installed").receipts.insert(event_type, f);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_route",
        lua.create_function(|lua, values: MultiValue| {
            let (path, method, f): (String, String, Function) = args(lua, values, "bus:add_route")?;
            registering(lua, "bus:add_route")?;
            let method = method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"].contains(&method.as_str()) {
                return err(format!("bus:add_route: unknown method {method:?}"));
            }
            crate::script::routes::check_pattern(&path).map_err(|e| mlua::Error::runtime(format!("bus:add_route: {e}")))?;
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            if h.routes.iter().any(|(p, m, _)| *p == path && *m == method) {
                return err(format!("bus:add_route: {method} {path} is registered twice"));
            }
            h.routes.push((path, method, f));
            Ok(())
        })?,
    )?;
    bus.raw_set("instance", lua.create_function(|lua, _: MultiValue| Ok(shared(lua).instance.clone()))?)?;
    bus.raw_set("service", lua.create_function(|lua, _: MultiValue| Ok(shared(lua).service.get().cloned()))?)?;
    bus.raw_set(
        "env",
        lua.create_function(|lua, values: MultiValue| {
            let name: String = args(lua, values, "bus:env")?;
            if let Some(why) = superclient_secret(&name) {
                return err(format!("bus:env({name:?}): {why}"));
            }
            let h = lua.app_data_ref::<Handlers>().expect("handlers are installed");
            if !h.declaration.env.iter().any(|n| *n == name) {
                let service = h.service.as_deref().unwrap_or("<service>");
                return err(format!(
                    "bus:env({name:?}): the script did not declare it; a script reads only the variables it declares: \
                     bus:register({service:?}, {{ env = {{ {name:?} }} }})"
                ));
            }
            Ok(std::env::var(&name).ok())
        })?,
    )?;
    send::install(lua, &bus)?;
    stream::install(lua, &bus)?;
    wait::install(lua, &bus)?;
    web::install(lua, &bus)?;
    lua.globals().raw_set("bus", bus)
}

