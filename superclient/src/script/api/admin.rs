//! `admin.services()`, `admin.parked()`, `admin.release(service, key)`, `admin.rebuild(service)`,
//! `admin.rebuild_status(service)`, `admin.redact(events, rules)`: what operators see and do,
//! only with `--admin-api` (an operators' backend such as the platform's explorer).

use super::{args, check_reads_allowed, err, infra, shared, LResult};
use crate::script::convert::{json_to_lua, lua_to_json};
use crate::state::rebuilds;
use mlua::{IntoLuaMulti, Lua, MultiValue};

fn require_admin(lua: &Lua, what: &str) -> LResult<std::sync::Arc<crate::script::Shared>> {
    let shared = shared(lua);
    if !shared.admin_api {
        return err(format!("{what}: the admin API is off; start the superclient with --admin-api (SEQUENT_ADMIN_API=1)"));
    }
    check_reads_allowed(lua, what)?;
    Ok(shared)
}

pub fn install(lua: &Lua) -> LResult<()> {
    let admin = lua.create_table()?;
    admin.raw_set(
        "services",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.services")?;
            let (Some((js, stream)), Some(members)) = (shared.js.get(), shared.members.get()) else {
                return infra(&lua, "admin.services", "not connected to NATS yet");
            };
            shared.directory.ensure_started(members).await;
            match shared.directory.services(js, stream).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.services", e),
            }
        })?,
    )?;
    admin.raw_set(
        "parked",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.parked")?;
            let Some(members) = shared.members.get() else { return infra(&lua, "admin.parked", "not connected to NATS yet") };
            shared.directory.ensure_started(members).await;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.parked", "redis is not connected yet") };
            match crate::state::parked::all(store, &shared.directory.service_names()).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.parked", e),
            }
        })?,
    )?;
    admin.raw_set(
        "release",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service, key): (String, String) = args(&lua, values, "admin.release")?;
            let shared = require_admin(&lua, "admin.release")?;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.release", "redis is not connected yet") };
            match crate::state::parked::request_release(store, &service, &key).await {
                Ok(found) => Ok(found),
                Err(e) => infra(&lua, "admin.release", e),
            }
        })?,
    )?;
    // A rebuild of the service by one of its running instances: true, or nil and why not.
    admin.raw_set(
        "rebuild",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service,): (String,) = args(&lua, values, "admin.rebuild")?;
            let shared = require_admin(&lua, "admin.rebuild")?;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.rebuild", "redis is not connected yet") };
            match rebuilds::request(store, &service).await {
                Ok(Ok(())) => (true,).into_lua_multi(&lua),
                Ok(Err(rebuilds::Refused::Unknown)) => (mlua::Value::Nil, "unknown").into_lua_multi(&lua),
                Ok(Err(rebuilds::Refused::Busy)) => (mlua::Value::Nil, "busy").into_lua_multi(&lua),
                Err(e) => infra(&lua, "admin.rebuild", e),
            }
        })?,
    )?;
    // The last requested rebuild of the service: {status, done, expected, ...}, or nil.
    admin.raw_set(
        "rebuild_status",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service,): (String,) = args(&lua, values, "admin.rebuild_status")?;
            let shared = require_admin(&lua, "admin.rebuild_status")?;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.rebuild_status", "redis is not connected yet") };
            match rebuilds::status(store, &service).await {
                Ok(None) => Ok(mlua::Value::Nil),
                Ok(Some(fields)) => {
                    let mut v = serde_json::Map::new();
                    for (k, x) in fields {
                        let number = matches!(k.as_str(), "done" | "expected" | "updated_at").then(|| x.parse::<u64>().ok()).flatten();
                        v.insert(k, number.map_or(serde_json::Value::String(x), Into::into));
                    }
                    json_to_lua(&lua, &serde_json::Value::Object(v))
                }
                Err(e) => infra(&lua, "admin.rebuild_status", e),
            }
        })?,
    )?;
    // The events with the fields of `rules` ({Type = {fields}, ["*"] = {fields}}) hidden.
    admin.raw_set(
        "redact",
        lua.create_function(|lua, (events, rules): (mlua::Value, mlua::Value)| {
            require_admin(lua, "admin.redact")?;
            let rules: sequent_protocol::Redaction = match lua_to_json(&rules).map_err(mlua::Error::runtime)? {
                serde_json::Value::Array(a) if a.is_empty() => Default::default(),
                v => serde_json::from_value(v).map_err(|e| mlua::Error::runtime(format!("admin.redact: rules must be {{Type = {{\"field\", ...}}}}: {e}")))?,
            };
            let mut events = lua_to_json(&events).map_err(mlua::Error::runtime)?;
            match &mut events {
                serde_json::Value::Array(list) => list.iter_mut().for_each(|e| rules.apply(e)),
                serde_json::Value::Object(_) => rules.apply(&mut events),
                _ => return Err(mlua::Error::runtime("admin.redact: give a list of events (or one event) and the rules")),
            }
            json_to_lua(lua, &events)
        })?,
    )?;
    lua.globals().raw_set("admin", admin)
}

