//! The globals a service script sees: `bus`, `redis`, `log`, `json`, `crypto`, `HTTP_*`, and a
//! sandboxed standard library.
//!
//! Functions may be called with a colon (`bus:send(...)`, the original's style) or a dot.

use super::{Call, Handlers, Mode, Shared, Slot};
use crate::state::{self, check_user_key, Str};
use mlua::{FromLuaMulti, Function, Lua, LuaSerdeExt, MultiValue, Table, Value};
use sequent_protocol::envelope::{derived_event_id, new_event_id};
use sequent_protocol::validate::{validate_id, validate_key, validate_type};
use sequent_protocol::{Expect, NewEvent, Receipt};
use serde_json::value::RawValue;
use std::sync::Arc;

type LResult<T> = mlua::Result<T>;

pub(super) fn err<T>(msg: impl Into<String>) -> LResult<T> {
    Err(mlua::Error::runtime(msg.into()))
}

/// Drops the module table passed by a colon call, then parses the arguments.
pub(super) fn args<A: FromLuaMulti>(lua: &Lua, mut values: MultiValue, what: &str) -> LResult<A> {
    if let Some(Value::Table(t)) = values.front() {
        // Only the module itself (`bus:send(...)`), never a table argument (`json.array(t)`).
        let module = what.split(['.', ':']).next().unwrap_or_default();
        if lua.globals().raw_get::<Value>(module).ok().is_some_and(|m| m == Value::Table(t.clone())) {
            values.pop_front();
        }
    }
    A::from_lua_multi(values, lua).map_err(|e| mlua::Error::runtime(format!("{what}: bad arguments: {e}")))
}

pub(super) fn slot(lua: &Lua) -> Slot {
    lua.app_data_ref::<Slot>().expect("the call slot is installed").clone()
}

pub(super) fn shared(lua: &Lua) -> Arc<Shared> {
    lua.app_data_ref::<Arc<Shared>>().expect("shared state is installed").clone()
}

/// Runs `f` on the current call context.
pub(super) fn with_call<R>(lua: &Lua, what: &str, f: impl FnOnce(&mut Call) -> LResult<R>) -> LResult<R> {
    let slot = slot(lua);
    let mut guard = slot.lock();
    match guard.as_mut() {
        Some(call) => f(call),
        None => err(format!("{what} is only available while the script runs")),
    }
}

pub(super) fn mode(lua: &Lua) -> Option<Mode> {
    slot(lua).lock().as_ref().map(|c| c.mode)
}

/// Records an infrastructure failure on the call (so it is retried, not parked) and returns
/// the Lua error for it.
pub(super) fn infra<T>(lua: &Lua, what: &str, e: impl std::fmt::Display) -> LResult<T> {
    let msg = format!("{what}: {e}");
    if let Some(call) = slot(lua).lock().as_mut() {
        call.infra_error = Some(msg.clone());
    }
    err(msg)
}

pub fn json_to_lua(lua: &Lua, value: &serde_json::Value) -> LResult<Value> {
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    lua.to_value_with(value, options)
}

pub fn lua_to_json(value: &Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(value.to_serializable().sort_keys(true).deny_unsupported_types(true).deny_recursive_tables(true))
        .map_err(|e| format!("the value cannot be written as JSON: {e}"))
}

fn encode(value: &Value, what: &str) -> LResult<String> {
    if value.is_nil() {
        return err(format!("{what}: the value is nil (use redis:del to remove a key)"));
    }
    lua_to_json(value).map(|j| j.to_string()).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))
}

fn decode(lua: &Lua, s: &str) -> LResult<Value> {
    json_to_lua(lua, &state::decode(s))
}

pub fn install(lua: &Lua) -> LResult<()> {
    sandbox(lua)?;
    install_json(lua)?;
    install_log(lua)?;
    install_http_constants(lua)?;
    install_bus(lua)?;
    install_redis(lua)?;
    super::crypto::install(lua)?;
    super::ext::install(lua)?;
    Ok(())
}

/// Removes what a service script must not reach: files, processes, the debug library,
/// bytecode. Leaves `os.time/clock/date/difftime`. `load` accepts text chunks only. The
/// standard library tables and the string metatable are made read-only; `__gc` finalizers are
/// refused (they would run with hooks off, outside any budget).
fn sandbox(lua: &Lua) -> LResult<()> {
    let g = lua.globals();
    for name in ["dofile", "loadfile", "require", "module", "collectgarbage"] {
        g.raw_set(name, Value::Nil)?;
    }
    let string: Table = g.get("string")?;
    string.raw_set("dump", Value::Nil)?;
    let os: Table = g.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["time", "clock", "date", "difftime"] {
        safe_os.raw_set(name, os.get::<Value>(name)?)?;
    }
    g.raw_set("os", safe_os)?;
    let budget = lua.app_data_ref::<Arc<super::Budget>>().map(|b| b.clone());
    g.raw_set(
        "__sequent_over_budget",
        lua.create_function(move |_, ()| Ok(budget.as_ref().is_some_and(|b| b.exceeded.load(std::sync::atomic::Ordering::Relaxed))))?,
    )?;
    lua.load(
        r##"
        local raw_load, raw_pcall, raw_xpcall, raw_resume = load, pcall, xpcall, coroutine.resume
        local raw_setmetatable, rawget = setmetatable, rawget
        local over, error, type = __sequent_over_budget, error, type
        __sequent_over_budget = nil
        -- text chunks only: precompiled bytecode can break out of any sandbox
        load = function(chunk, name, mode, env)
            return raw_load(chunk, name, "t", env)
        end
        -- an exhausted instruction budget must not be swallowed by pcall
        local function check(ok, ...)
            if not ok and over() then error((...), 0) end
            return ok, ...
        end
        pcall = function(f, ...) return check(raw_pcall(f, ...)) end
        -- The budget's error is raised inside the hook, where Lua runs the message handler
        -- with hooks off: a handler that loops would never be stopped, so it is skipped then.
        xpcall = function(f, h, ...)
            return check(raw_xpcall(f, function(...) if over() then return ... end return h(...) end, ...))
        end
        -- Finalizers run with hooks off (no budget) at some later collection: none allowed.
        setmetatable = function(t, mt)
            if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
                error("__gc metamethods are not allowed: finalizers would run outside any call's budget", 2)
            end
            return raw_setmetatable(t, mt)
        end
        coroutine.resume = function(co, ...) return check(raw_resume(co, ...)) end
        print = function(...)
            local parts = {}
            for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
            log:info(table.concat(parts, " "))
        end
        -- The standard libraries are shared by every call of a state: read-only, so that no
        -- call changes them for the next (string methods too: the string metatable is locked).
        local frozen, raw_rawset = {}, rawset
        for _, name in ipairs({ "string", "table", "math", "utf8", "coroutine", "os" }) do
            local proxy = setmetatable({}, {
                __index = _G[name],
                __newindex = function() error(name .. " is read-only: the standard libraries are shared by every call", 2) end,
                __metatable = false,
            })
            frozen[proxy] = true
            raw_rawset(_G, name, proxy)
        end
        getmetatable("").__metatable = false
        rawset = function(t, k, v)
            if frozen[t] then error("the standard libraries are read-only", 2) end
            return raw_rawset(t, k, v)
        end
        "##,
    )
    .set_name("=sandbox")
    .exec()
}

fn install_json(lua: &Lua) -> LResult<()> {
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, values: MultiValue| {
            let value: Value = args(lua, values, "json.encode")?;
            lua_to_json(&value).map(|j| j.to_string()).map_err(|e| mlua::Error::runtime(format!("json.encode: {e}")))
        })?,
    )?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, values: MultiValue| {
            let text: String = args(lua, values, "json.decode")?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| mlua::Error::runtime(format!("json.decode: not valid JSON: {e}")))?;
            json_to_lua(lua, &value)
        })?,
    )?;
    // Marks a table as an array, so an empty one encodes as [] rather than {}.
    json.raw_set(
        "array",
        lua.create_function(|lua, values: MultiValue| {
            let t: Option<Table> = args(lua, values, "json.array")?;
            let t = match t {
                Some(t) => t,
                None => lua.create_table()?,
            };
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    json.raw_set("null", lua.null())?;
    lua.globals().raw_set("json", json)
}

fn install_log(lua: &Lua) -> LResult<()> {
    let log = lua.create_table()?;
    for level in ["trace", "debug", "info", "warn", "error"] {
        let f = lua.create_function(move |_lua, mut values: MultiValue| {
            if matches!(values.front(), Some(Value::Table(t)) if t.raw_get::<bool>("__is_log").unwrap_or(false)) {
                values.pop_front();
            }
            let mut parts = Vec::with_capacity(values.len());
            for v in values.iter() {
                parts.push(match v {
                    Value::String(s) => s.to_string_lossy(),
                    Value::Integer(_) | Value::Number(_) | Value::Boolean(_) => v.to_string()?,
                    Value::Table(_) => lua_to_json(v).map(|j| j.to_string()).map_err(|e| mlua::Error::runtime(format!("log:{level}: {e}")))?,
                    other => return err(format!("log:{level}: cannot log a {} (log strings, numbers, booleans or tables)", other.type_name())),
                });
            }
            if parts.is_empty() {
                return err(format!("log:{level}: nothing to log"));
            }
            let msg = parts.join(" ");
            match level {
                "trace" => tracing::trace!(target: "lua", "{msg}"),
                "debug" => tracing::debug!(target: "lua", "{msg}"),
                "info" => tracing::info!(target: "lua", "{msg}"),
                "warn" => tracing::warn!(target: "lua", "{msg}"),
                _ => tracing::error!(target: "lua", "{msg}"),
            }
            Ok(())
        })?;
        log.raw_set(level, f)?;
    }
    log.raw_set("__is_log", true)?;
    lua.globals().raw_set("log", log)
}

fn install_http_constants(lua: &Lua) -> LResult<()> {
    let g = lua.globals();
    for (name, code) in HTTP_STATUS {
        g.raw_set(format!("HTTP_{name}"), *code)?;
    }
    Ok(())
}

/// Standard status codes, named as in the Rust `http` crate.
const HTTP_STATUS: &[(&str, u16)] = &[
    ("CONTINUE", 100), ("SWITCHING_PROTOCOLS", 101), ("PROCESSING", 102),
    ("OK", 200), ("CREATED", 201), ("ACCEPTED", 202), ("NON_AUTHORITATIVE_INFORMATION", 203), ("NO_CONTENT", 204),
    ("RESET_CONTENT", 205), ("PARTIAL_CONTENT", 206), ("MULTI_STATUS", 207), ("ALREADY_REPORTED", 208), ("IM_USED", 226),
    ("MULTIPLE_CHOICES", 300), ("MOVED_PERMANENTLY", 301), ("FOUND", 302), ("SEE_OTHER", 303), ("NOT_MODIFIED", 304),
    ("USE_PROXY", 305), ("TEMPORARY_REDIRECT", 307), ("PERMANENT_REDIRECT", 308),
    ("BAD_REQUEST", 400), ("UNAUTHORIZED", 401), ("PAYMENT_REQUIRED", 402), ("FORBIDDEN", 403), ("NOT_FOUND", 404),
    ("METHOD_NOT_ALLOWED", 405), ("NOT_ACCEPTABLE", 406), ("PROXY_AUTHENTICATION_REQUIRED", 407), ("REQUEST_TIMEOUT", 408),
    ("CONFLICT", 409), ("GONE", 410), ("LENGTH_REQUIRED", 411), ("PRECONDITION_FAILED", 412), ("PAYLOAD_TOO_LARGE", 413),
    ("URI_TOO_LONG", 414), ("UNSUPPORTED_MEDIA_TYPE", 415), ("RANGE_NOT_SATISFIABLE", 416), ("EXPECTATION_FAILED", 417),
    ("IM_A_TEAPOT", 418), ("MISDIRECTED_REQUEST", 421), ("UNPROCESSABLE_ENTITY", 422), ("LOCKED", 423), ("FAILED_DEPENDENCY", 424),
    ("TOO_EARLY", 425), ("UPGRADE_REQUIRED", 426), ("PRECONDITION_REQUIRED", 428), ("TOO_MANY_REQUESTS", 429),
    ("REQUEST_HEADER_FIELDS_TOO_LARGE", 431), ("UNAVAILABLE_FOR_LEGAL_REASONS", 451),
    ("INTERNAL_SERVER_ERROR", 500), ("NOT_IMPLEMENTED", 501), ("BAD_GATEWAY", 502), ("SERVICE_UNAVAILABLE", 503),
    ("GATEWAY_TIMEOUT", 504), ("HTTP_VERSION_NOT_SUPPORTED", 505), ("VARIANT_ALSO_NEGOTIATES", 506), ("INSUFFICIENT_STORAGE", 507),
    ("LOOP_DETECTED", 508), ("NOT_EXTENDED", 510), ("NETWORK_AUTHENTICATION_REQUIRED", 511),
];

pub(super) fn registering(lua: &Lua, what: &str) -> LResult<()> {
    if mode(lua) != Some(Mode::Load) {
        return err(format!("{what} may only be called at the top level of the script, while it loads"));
    }
    Ok(())
}

fn install_bus(lua: &Lua) -> LResult<()> {
    let bus = lua.create_table()?;
    bus.raw_set(
        "register",
        lua.create_function(|lua, values: MultiValue| {
            let name: String = args(lua, values, "bus:register")?;
            registering(lua, "bus:register")?;
            if name.is_empty()
                || name.len() > 32
                || !name.starts_with(|c: char| c.is_ascii_lowercase())
                || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            {
                return err(format!(
                    "bus:register({name:?}): a service type is 1 to 32 characters, a lowercase letter first, then lowercase letters, digits, '-' or '_'"
                ));
            }
            let mut h = lua.app_data_mut::<Handlers>().expect("handlers are installed");
            match &h.service {
                Some(old) if *old != name => err(format!("bus:register: the script already registered as {old:?}")),
                _ => {
                    h.service = Some(name);
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
            validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_event_listener: {e}")))?;
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
            crate::http::check_pattern(&path).map_err(|e| mlua::Error::runtime(format!("bus:add_route: {e}")))?;
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            if h.routes.iter().any(|(p, m, _)| *p == path && *m == method) {
                return err(format!("bus:add_route: {method} {path} is registered twice"));
            }
            h.routes.push((path, method, f));
            Ok(())
        })?,
    )?;
    bus.raw_set("send", lua.create_async_function(send)?)?;
    bus.raw_set("instance", lua.create_function(|lua, _: MultiValue| Ok(shared(lua).instance.clone()))?)?;
    bus.raw_set("service", lua.create_function(|lua, _: MultiValue| Ok(shared(lua).service.get().cloned()))?)?;
    lua.globals().raw_set("bus", bus)
}

/// `bus:send(type, key, expect, correlation, data)`.
async fn send(lua: Lua, values: MultiValue) -> LResult<Value> {
    let (event_type, key, expect, correlation, data, opts): (String, String, Value, Value, Value, Option<Table>) = args(&lua, values, "bus:send")?;
    let what = format!("bus:send({event_type}, {key})");
    let chosen_id: Option<String> = match &opts {
        Some(t) => {
            for pair in t.pairs::<String, Value>() {
                let (k, _) = pair?;
                if k != "id" {
                    return err(format!("{what}: unknown option {k:?}; the only option is id"));
                }
            }
            t.get::<Option<String>>("id")?
        }
        None => None,
    };
    if let Some(id) = &chosen_id {
        validate_id("id", id).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    }
    validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    validate_key(&key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    let correlation = match correlation {
        Value::Nil => None,
        Value::String(s) => Some(s.to_str()?.to_string()),
        Value::Integer(n) => Some(n.to_string()),
        other => return err(format!("{what}: correlation must be a string or nil, not a {}", other.type_name())),
    };
    if let Some(c) = &correlation {
        validate_id("correlation", c).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    }
    let data = match &data {
        Value::Table(_) => lua_to_json(&data).map_err(|e| mlua::Error::runtime(format!("{what}: data: {e}")))?,
        other => return err(format!("{what}: data must be a table, not a {}", other.type_name())),
    };
    let data = match data {
        serde_json::Value::Array(a) if a.is_empty() => serde_json::Value::Object(Default::default()),
        d @ serde_json::Value::Object(_) => d,
        _ => return err(format!("{what}: data must be a table with named fields (a JSON object), not an array")),
    };
    let data = RawValue::from_string(data.to_string()).expect("serde_json output is JSON");
    let expect = match expect {
        Value::Integer(n) if n >= 0 => Expect::Version(n as u64),
        Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => Expect::Version(n as u64),
        Value::String(s) if s.to_str()?.as_ref() as &str == "any" => Expect::Any,
        Value::String(s) if s.to_str()?.as_ref() as &str == "new" => Expect::Version(0),
        // The original's `implicit` flag: true lets the store pick the version.
        Value::Boolean(true) => Expect::Any,
        // false: the version after the last event of this key the service knows of.
        Value::Boolean(false) => Expect::Version(known_version(&lua, &key).await?.map_or(0, |v| v + 1)),
        other => {
            return err(format!(
                "{what}: expect must be a version number, \"any\", \"new\", true (any) or false (the next version after the last one this service saw); got {}",
                other.to_string().unwrap_or_else(|_| other.type_name().to_string())
            ))
        }
    };
    let Some(mode) = mode(&lua) else { return err(format!("{what}: not inside a call")) };
    match mode {
        Mode::Load => err(format!("{what}: events cannot be sent while the script loads; send from a handler or a route")),
        Mode::Rebuild => {
            tracing::debug!(event_type, key, "bus:send ignored during a rebuild (the events exist already)");
            Ok(Value::Nil)
        }
        Mode::Live => err(format!("{what}: a live listener runs on every instance and cannot send events; send from an event listener or a route")),
        Mode::Handler => {
            if chosen_id.is_some() {
                return err(format!("{what}: a handler's events get ids derived from the handled event; the id option is for routes"));
            }
            let service = shared(&lua).service.get().cloned().unwrap_or_default();
            with_call(&lua, &what, |call| {
                let handled = call.handled.clone().ok_or_else(|| mlua::Error::runtime(format!("{what}: no handled event")))?;
                let id = derived_event_id(&service, &handled.id, call.sent);
                call.sent += 1;
                call.sends.push(NewEvent {
                    id: Some(id.clone()),
                    event_type,
                    key,
                    expect,
                    correlation: Some(correlation.unwrap_or(handled.correlation)),
                    causation: Some(handled.id),
                    data,
                });
                Ok(Value::String(lua.create_string(&id)?))
            })
        }
        Mode::Route => {
            let gateway = shared(&lua).gateway.get().cloned();
            let Some(gateway) = gateway else { return infra(&lua, &what, "not connected to NATS yet") };
            let event = NewEvent { id: Some(chosen_id.unwrap_or_else(new_event_id)), event_type, key, expect, correlation, causation: None, data };
            match gateway.append(vec![event]).await {
                Ok(reply) => {
                    let receipt = reply.receipts.into_iter().next();
                    let Some(receipt) = receipt else { return infra(&lua, &what, "the gateway sent no receipt") };
                    with_call(&lua, &what, |call| {
                        // Counted so that the route is not silently run again after a rebuild swap.
                        call.sent += 1;
                        note_receipt(call, &receipt);
                        Ok(())
                    })?;
                    receipt_table(&lua, &receipt).map(Value::Table)
                }
                Err(crate::gateway::AppendError::Unavailable(e)) => infra(&lua, &what, e),
                Err(crate::gateway::AppendError::Refused(e)) => err(format!("{what}: {e}")),
            }
        }
    }
}

/// What a receipt teaches about a key's version, recorded with the call's writes.
pub fn note_receipt(call: &mut Call, receipt: &Receipt) {
    match receipt {
        Receipt::Stored { key, version, .. } => note_version(call, key, *version),
        Receipt::Conflict { key, current_version: Some(v), .. } => note_version(call, key, *v),
        _ => {}
    }
}

/// Remembers that `key` has reached `version` (the commit keeps the maximum).
pub fn note_version(call: &mut Call, key: &str, version: u64) {
    let full = state::versions_key(&call.ns);
    call.writes.ops.push(vec!["VMAX".into(), full, key.to_string(), version.to_string()]);
    let fields = &mut call.writes.hashes.entry("__versions".into()).or_default().fields;
    let newer = match fields.get(key) {
        Some(Str::Set(v)) => v.parse::<u64>().map_or(true, |old| version > old),
        _ => true,
    };
    if newer {
        fields.insert(key.to_string(), Str::Set(version.to_string()));
    }
}

async fn known_version(lua: &Lua, key: &str) -> LResult<Option<u64>> {
    let (full, buffered) = with_call(lua, "bus:send", |call| {
        let buffered = match call.writes.hashes.get("__versions").and_then(|h| h.fields.get(key)) {
            Some(Str::Set(v)) => v.parse::<u64>().ok(),
            _ => None,
        };
        Ok((state::versions_key(&call.ns), buffered))
    })?;
    let stored: Option<u64> = query(lua, "bus:send: reading the known version", redis::cmd("HGET").arg(&full).arg(key)).await?;
    Ok(match (stored, buffered) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

pub fn receipt_table(lua: &Lua, receipt: &Receipt) -> LResult<Table> {
    let t = lua.create_table()?;
    match receipt {
        Receipt::Stored { id, key, seq, version, duplicate } => {
            t.raw_set("status", "ok")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
            t.raw_set("seq", *seq)?;
            t.raw_set("version", *version)?;
            t.raw_set("duplicate", *duplicate)?;
        }
        Receipt::Conflict { id, key, expected, current_version, next_version } => {
            t.raw_set("status", "conflict")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
            t.raw_set("expected", *expected)?;
            t.raw_set("current_version", *current_version)?;
            t.raw_set("next_version", *next_version)?;
        }
        Receipt::Invalid { index, reason } => {
            t.raw_set("status", "invalid")?;
            t.raw_set("index", *index)?;
            t.raw_set("reason", reason.as_str())?;
        }
        Receipt::Aborted { id, key } => {
            t.raw_set("status", "aborted")?;
            t.raw_set("id", id.as_str())?;
            t.raw_set("key", key.as_str())?;
        }
    }
    Ok(t)
}

pub(super) fn redis_store(lua: &Lua) -> LResult<crate::state::Store> {
    shared(lua).redis.get().cloned().ok_or_else(|| mlua::Error::runtime("redis is not connected yet"))
}

/// Resolves a script key to its full name in the call's namespace.
pub(super) fn full_key(lua: &Lua, what: &str, key: &str) -> LResult<String> {
    check_user_key(key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    with_call(lua, what, |call| match call.mode {
        Mode::Load => err(format!("{what}: redis is not available while the script loads; use it in handlers and routes")),
        _ => Ok(format!("{}:{key}", call.ns)),
    })
}

/// The Redis type this call already gave `key`, for early type errors.
fn require_type(call: &mut Call, key: &str, want: &'static str, what: &str) -> LResult<()> {
    match call.writes.types.get(key) {
        Some(t) if *t != want => err(format!("{what}: key {key:?} was written as a {t} in this call; it cannot be used as a {want}")),
        _ => {
            call.writes.types.insert(key.to_string(), want);
            Ok(())
        }
    }
}

/// Moves a route's call to the active namespace if a rebuild swapped one in and the call has
/// written nothing but notes of versions (the rebuilt state holds the same events; the call's
/// own writes would pin it to the state they were decided on). Returns the namespace moved to.
pub(super) async fn follow_swap(lua: &Lua, what: &str, store: &crate::state::Store) -> LResult<Option<String>> {
    let Ok(Some(active)) = store.active().await else { return Ok(None) };
    with_call(lua, what, |c| {
        let moved = c.mode == Mode::Route && c.ns != active && state::move_version_notes(&mut c.writes.ops, &active);
        if moved {
            c.ns = active.clone();
        }
        Ok(moved.then_some(active))
    })
}

/// `cmd`, a read of one key (its first argument, as every read here is), with that key moved
/// from namespace `from` to namespace `to`.
fn retarget(cmd: &redis::Cmd, from: &str, to: &str) -> redis::Cmd {
    let (from, to) = (format!("{from}:"), format!("{to}:"));
    let mut out = redis::Cmd::new();
    for (i, arg) in cmd.args_iter().enumerate() {
        if let redis::Arg::Simple(bytes) = arg {
            match bytes.strip_prefix(from.as_bytes()).filter(|_| i == 1) {
                Some(rest) => out.arg([to.as_bytes(), rest].concat()),
                None => out.arg(bytes),
            };
        }
    }
    out
}

async fn query<T: redis::FromRedisValue>(lua: &Lua, what: &str, cmd: &redis::Cmd) -> LResult<T> {
    let store = redis_store(lua)?;
    let (mode, ns) = with_call(lua, what, |c| Ok((c.mode, c.ns.clone())))?;
    let not_active = |ns: &str| format!("the state {ns} is not the active one (Redis lost it, or a rebuild is running or swapped another in); retry");
    // A rebuild reads a namespace that is not active yet; every other read must come from the
    // active one, checked atomically with the read (see state.rs: Redis may have lost it).
    let read = match mode {
        Mode::Rebuild => cmd.query_async(&mut store.con.clone()).await,
        _ => match store.read(&ns, cmd).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => match follow_swap(lua, what, &store).await? {
                Some(active) => match store.read(&active, &retarget(cmd, &ns, &active)).await {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => return infra(lua, what, not_active(&active)),
                    Err(e) => Err(e),
                },
                None => return infra(lua, what, not_active(&ns)),
            },
            Err(e) => Err(e),
        },
    };
    match read {
        Ok(v) => Ok(v),
        Err(e) if e.code() == Some("WRONGTYPE") => {
            err(format!("{what}: the key holds another type of value ({e})"))
        }
        Err(e) => infra(lua, what, e),
    }
}

fn parse_int(s: &str, what: &str) -> LResult<i64> {
    s.trim().parse::<i64>().map_err(|_| mlua::Error::runtime(format!("{what}: the value {s:?} is not an integer")))
}

fn install_redis(lua: &Lua) -> LResult<()> {
    let r = lua.create_table()?;
    r.raw_set(
        "get",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:get")?;
            let full = full_key(&lua, "redis:get", &key)?;
            let buffered = with_call(&lua, "redis:get", |c| Ok(c.writes.strings.get(&key).cloned()))?;
            match buffered {
                Some(Str::Set(v)) => decode(&lua, &v),
                Some(Str::Deleted) => Ok(Value::Nil),
                Some(Str::Incr(d)) => {
                    let base: Option<String> = query(&lua, "redis:get", redis::cmd("GET").arg(&full)).await?;
                    let base = base.map(|b| parse_int(&b, "redis:get")).transpose()?.unwrap_or(0);
                    Ok(Value::Integer(base + d))
                }
                None => {
                    let v: Option<String> = query(&lua, "redis:get", redis::cmd("GET").arg(&full)).await?;
                    v.map_or(Ok(Value::Nil), |v| decode(&lua, &v))
                }
            }
        })?,
    )?;
    r.raw_set(
        "set",
        lua.create_function(|lua, values: MultiValue| {
            let (key, value): (String, Value) = args(lua, values, "redis:set")?;
            let full = full_key(lua, "redis:set", &key)?;
            let json = encode(&value, "redis:set")?;
            with_call(lua, "redis:set", |c| {
                c.writes.clear(&key);
                c.writes.types.insert(key.clone(), "string");
                c.writes.strings.insert(key.clone(), Str::Set(json.clone()));
                c.writes.ops.push(vec!["SET".into(), full, json]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "del",
        lua.create_function(|lua, values: MultiValue| {
            let key: String = args(lua, values, "redis:del")?;
            let full = full_key(lua, "redis:del", &key)?;
            with_call(lua, "redis:del", |c| {
                c.writes.clear(&key);
                c.writes.types.remove(&key);
                c.writes.ops.push(vec!["DEL".into(), full]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "exists",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:exists")?;
            let full = full_key(&lua, "redis:exists", &key)?;
            let known = with_call(&lua, "redis:exists", |c| Ok(c.writes.key_states().get(key.as_str()).copied()))?;
            match known {
                Some(true) => Ok(true),
                Some(false) => Ok(false),
                None => query::<bool>(&lua, "redis:exists", redis::cmd("EXISTS").arg(&full)).await,
            }
        })?,
    )?;
    r.raw_set(
        "incr",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, by): (String, Option<i64>) = args(&lua, values, "redis:incr")?;
            let by = by.unwrap_or(1);
            let full = full_key(&lua, "redis:incr", &key)?;
            let buffered = with_call(&lua, "redis:incr", |c| {
                require_type(c, &key, "string", "redis:incr")?;
                Ok(c.writes.strings.get(&key).cloned())
            })?;
            let (base, known) = match &buffered {
                Some(Str::Set(v)) => (parse_int(v, "redis:incr")?, true),
                Some(Str::Deleted) => (0, true),
                Some(Str::Incr(d)) => {
                    let b: Option<String> = query(&lua, "redis:incr", redis::cmd("GET").arg(&full)).await?;
                    (b.map(|b| parse_int(&b, "redis:incr")).transpose()?.unwrap_or(0) + d, false)
                }
                None => {
                    let b: Option<String> = query(&lua, "redis:incr", redis::cmd("GET").arg(&full)).await?;
                    (b.map(|b| parse_int(&b, "redis:incr")).transpose()?.unwrap_or(0), false)
                }
            };
            let value = base.checked_add(by).ok_or_else(|| mlua::Error::runtime("redis:incr: integer overflow"))?;
            with_call(&lua, "redis:incr", |c| {
                let next = match (known, c.writes.strings.get(&key)) {
                    (true, _) => Str::Set(value.to_string()),
                    (false, Some(Str::Incr(d))) => Str::Incr(d + by),
                    _ => Str::Incr(by),
                };
                c.writes.strings.insert(key.clone(), next);
                c.writes.ops.push(vec!["INCRBY".into(), full, by.to_string()]);
                Ok(value)
            })
        })?,
    )?;
    r.raw_set(
        "keys",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let pattern: String = args(&lua, values, "redis:keys")?;
            let ns = with_call(&lua, "redis:keys", |c| match c.mode {
                Mode::Load => err("redis:keys: redis is not available while the script loads"),
                _ => Ok(c.ns.clone()),
            })?;
            let store = redis_store(&lua)?;
            const LIMIT: usize = 10_000;
            let prefix = format!("{ns}:");
            let found = match store.scan(&format!("{}{pattern}", state::glob_escape(&prefix)), LIMIT + 1).await {
                Ok(k) => k,
                Err(e) => return infra(&lua, "redis:keys", e),
            };
            // SCAN cannot join a transaction: look at the active namespace after it instead.
            query::<redis::Value>(&lua, "redis:keys", &redis::cmd("EXISTS").arg(&prefix)).await?;
            if found.len() > LIMIT {
                return err(format!("redis:keys({pattern:?}) matches more than {LIMIT} keys; use a narrower pattern or a hash"));
            }
            let mut keys: std::collections::BTreeSet<String> =
                found.into_iter().map(|k| k[prefix.len()..].to_string()).filter(|k| !k.starts_with("__")).collect();
            with_call(&lua, "redis:keys", |c| {
                for (k, live) in c.writes.key_states() {
                    if k.starts_with("__") || !state::glob_match(&pattern, k) {
                        continue;
                    }
                    if live {
                        keys.insert(k.to_string());
                    } else {
                        keys.remove(k);
                    }
                }
                Ok(())
            })?;
            lua.create_sequence_from(keys)
        })?,
    )?;
    install_redis_hashes(lua, &r)?;
    install_redis_lists_and_sets(lua, &r)?;
    lua.globals().raw_set("redis", r)
}

fn field_name(v: Value, what: &str) -> LResult<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::Integer(n) => Ok(n.to_string()),
        other => err(format!("{what}: a field name must be a string or an integer, not a {}", other.type_name())),
    }
}

fn install_redis_hashes(lua: &Lua, r: &Table) -> LResult<()> {
    r.raw_set(
        "hget",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, field): (String, Value) = args(&lua, values, "redis:hget")?;
            let field = field_name(field, "redis:hget")?;
            let full = full_key(&lua, "redis:hget", &key)?;
            let (buffered, cleared) = with_call(&lua, "redis:hget", |c| {
                let h = c.writes.hashes.get(&key);
                Ok((h.and_then(|h| h.fields.get(&field).cloned()), h.is_some_and(|h| h.cleared)))
            })?;
            match buffered {
                Some(Str::Set(v)) => decode(&lua, &v),
                Some(Str::Deleted) => Ok(Value::Nil),
                Some(Str::Incr(d)) if cleared => Ok(Value::Integer(d)),
                _ if cleared => Ok(Value::Nil),
                other => {
                    let v: Option<String> = query(&lua, "redis:hget", redis::cmd("HGET").arg(&full).arg(&field)).await?;
                    match other {
                        Some(Str::Incr(d)) => Ok(Value::Integer(v.map(|v| parse_int(&v, "redis:hget")).transpose()?.unwrap_or(0) + d)),
                        _ => v.map_or(Ok(Value::Nil), |v| decode(&lua, &v)),
                    }
                }
            }
        })?,
    )?;
    r.raw_set(
        "hset",
        lua.create_function(|lua, values: MultiValue| {
            let (key, field, value): (String, Value, Value) = args(lua, values, "redis:hset")?;
            let field = field_name(field, "redis:hset")?;
            let full = full_key(lua, "redis:hset", &key)?;
            let json = encode(&value, "redis:hset")?;
            with_call(lua, "redis:hset", |c| {
                require_type(c, &key, "hash", "redis:hset")?;
                c.writes.strings.remove(&key);
                c.writes.hashes.entry(key.clone()).or_default().fields.insert(field.clone(), Str::Set(json.clone()));
                c.writes.ops.push(vec!["HSET".into(), full, field, json]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "hdel",
        lua.create_function(|lua, values: MultiValue| {
            let (key, field): (String, Value) = args(lua, values, "redis:hdel")?;
            let field = field_name(field, "redis:hdel")?;
            let full = full_key(lua, "redis:hdel", &key)?;
            with_call(lua, "redis:hdel", |c| {
                require_type(c, &key, "hash", "redis:hdel")?;
                c.writes.hashes.entry(key.clone()).or_default().fields.insert(field.clone(), Str::Deleted);
                c.writes.ops.push(vec!["HDEL".into(), full, field]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "hincr",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, field, by): (String, Value, Option<i64>) = args(&lua, values, "redis:hincr")?;
            let field = field_name(field, "redis:hincr")?;
            let by = by.unwrap_or(1);
            let full = full_key(&lua, "redis:hincr", &key)?;
            let (buffered, cleared) = with_call(&lua, "redis:hincr", |c| {
                require_type(c, &key, "hash", "redis:hincr")?;
                let h = c.writes.hashes.get(&key);
                Ok((h.and_then(|h| h.fields.get(&field).cloned()), h.is_some_and(|h| h.cleared)))
            })?;
            let (base, known) = match &buffered {
                Some(Str::Set(v)) => (parse_int(v, "redis:hincr")?, true),
                Some(Str::Deleted) => (0, true),
                _ if cleared => (match &buffered { Some(Str::Incr(d)) => *d, _ => 0 }, true),
                _ => {
                    let v: Option<String> = query(&lua, "redis:hincr", redis::cmd("HGET").arg(&full).arg(&field)).await?;
                    let stored = v.map(|v| parse_int(&v, "redis:hincr")).transpose()?.unwrap_or(0);
                    (stored + match &buffered { Some(Str::Incr(d)) => *d, _ => 0 }, false)
                }
            };
            let value = base.checked_add(by).ok_or_else(|| mlua::Error::runtime("redis:hincr: integer overflow"))?;
            with_call(&lua, "redis:hincr", |c| {
                let h = c.writes.hashes.entry(key.clone()).or_default();
                let next = match (known, h.fields.get(&field)) {
                    (true, _) => Str::Set(value.to_string()),
                    (false, Some(Str::Incr(d))) => Str::Incr(d + by),
                    _ => Str::Incr(by),
                };
                h.fields.insert(field.clone(), next);
                c.writes.ops.push(vec!["HINCRBY".into(), full, field, by.to_string()]);
                Ok(value)
            })
        })?,
    )?;
    r.raw_set(
        "hgetall",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:hgetall")?;
            let full = full_key(&lua, "redis:hgetall", &key)?;
            let overlay = with_call(&lua, "redis:hgetall", |c| Ok(c.writes.hashes.get(&key).cloned()))?;
            let mut map: std::collections::BTreeMap<String, String> = if overlay.as_ref().is_some_and(|h| h.cleared) {
                Default::default()
            } else {
                query(&lua, "redis:hgetall", redis::cmd("HGETALL").arg(&full)).await?
            };
            if let Some(h) = overlay {
                for (f, s) in h.fields {
                    match s {
                        Str::Set(v) => {
                            map.insert(f, v);
                        }
                        Str::Deleted => {
                            map.remove(&f);
                        }
                        Str::Incr(d) => {
                            let base = map.get(&f).map(|v| parse_int(v, "redis:hgetall")).transpose()?.unwrap_or(0);
                            map.insert(f, (base + d).to_string());
                        }
                    }
                }
            }
            let t = lua.create_table()?;
            for (f, v) in map {
                t.raw_set(f, decode(&lua, &v)?)?;
            }
            Ok(t)
        })?,
    )?;
    Ok(())
}

fn install_redis_lists_and_sets(lua: &Lua, r: &Table) -> LResult<()> {
    r.raw_set(
        "rpush",
        lua.create_function(|lua, values: MultiValue| {
            let (key, value): (String, Value) = args(lua, values, "redis:rpush")?;
            let full = full_key(lua, "redis:rpush", &key)?;
            let json = encode(&value, "redis:rpush")?;
            with_call(lua, "redis:rpush", |c| {
                require_type(c, &key, "list", "redis:rpush")?;
                c.writes.lists.entry(key.clone()).or_default().pushed.push(json.clone());
                c.writes.ops.push(vec!["RPUSH".into(), full, json]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "lrange",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, start, stop): (String, Option<i64>, Option<i64>) = args(&lua, values, "redis:lrange")?;
            let (start, stop) = (start.unwrap_or(0), stop.unwrap_or(-1));
            let full = full_key(&lua, "redis:lrange", &key)?;
            let overlay = with_call(&lua, "redis:lrange", |c| Ok(c.writes.lists.get(&key).cloned()))?;
            let items: Vec<String> = match overlay {
                None => query(&lua, "redis:lrange", redis::cmd("LRANGE").arg(&full).arg(start).arg(stop)).await?,
                Some(l) => {
                    let mut all: Vec<String> =
                        if l.cleared { Vec::new() } else { query(&lua, "redis:lrange", redis::cmd("LRANGE").arg(&full).arg(0).arg(-1)).await? };
                    all.extend(l.pushed);
                    let n = all.len() as i64;
                    let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i };
                    let (s, e) = (norm(start), norm(stop).min(n - 1));
                    if s > e || s >= n { Vec::new() } else { all[s as usize..=e as usize].to_vec() }
                }
            };
            let t = lua.create_table()?;
            for (i, v) in items.iter().enumerate() {
                t.raw_set(i + 1, decode(&lua, v)?)?;
            }
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    r.raw_set(
        "llen",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:llen")?;
            let full = full_key(&lua, "redis:llen", &key)?;
            let overlay = with_call(&lua, "redis:llen", |c| Ok(c.writes.lists.get(&key).cloned()))?;
            let (cleared, pushed) = overlay.map_or((false, 0), |l| (l.cleared, l.pushed.len()));
            let stored: usize = if cleared { 0 } else { query(&lua, "redis:llen", redis::cmd("LLEN").arg(&full)).await? };
            Ok(stored + pushed)
        })?,
    )?;
    r.raw_set(
        "sadd",
        lua.create_function(|lua, values: MultiValue| {
            let (key, member): (String, Value) = args(lua, values, "redis:sadd")?;
            let full = full_key(lua, "redis:sadd", &key)?;
            let json = encode(&member, "redis:sadd")?;
            with_call(lua, "redis:sadd", |c| {
                require_type(c, &key, "set", "redis:sadd")?;
                let s = c.writes.sets.entry(key.clone()).or_default();
                s.removed.remove(&json);
                s.added.insert(json.clone());
                c.writes.ops.push(vec!["SADD".into(), full, json]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "srem",
        lua.create_function(|lua, values: MultiValue| {
            let (key, member): (String, Value) = args(lua, values, "redis:srem")?;
            let full = full_key(lua, "redis:srem", &key)?;
            let json = encode(&member, "redis:srem")?;
            with_call(lua, "redis:srem", |c| {
                require_type(c, &key, "set", "redis:srem")?;
                let s = c.writes.sets.entry(key.clone()).or_default();
                s.added.remove(&json);
                s.removed.insert(json.clone());
                c.writes.ops.push(vec!["SREM".into(), full, json]);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "smembers",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:smembers")?;
            let full = full_key(&lua, "redis:smembers", &key)?;
            let overlay = with_call(&lua, "redis:smembers", |c| Ok(c.writes.sets.get(&key).cloned()))?;
            let cleared = overlay.as_ref().is_some_and(|s| s.cleared);
            let mut members: std::collections::BTreeSet<String> =
                if cleared { Default::default() } else { query(&lua, "redis:smembers", redis::cmd("SMEMBERS").arg(&full)).await? };
            if let Some(s) = overlay {
                members.retain(|m| !s.removed.contains(m));
                members.extend(s.added);
            }
            let t = lua.create_table()?;
            for (i, m) in members.iter().enumerate() {
                t.raw_set(i + 1, decode(&lua, m)?)?;
            }
            t.set_metatable(Some(lua.array_metatable()))?;
            Ok(t)
        })?,
    )?;
    r.raw_set(
        "sismember",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, member): (String, Value) = args(&lua, values, "redis:sismember")?;
            let full = full_key(&lua, "redis:sismember", &key)?;
            let json = encode(&member, "redis:sismember")?;
            let overlay = with_call(&lua, "redis:sismember", |c| Ok(c.writes.sets.get(&key).cloned()))?;
            if let Some(s) = &overlay {
                if s.added.contains(&json) {
                    return Ok(true);
                }
                if s.removed.contains(&json) || s.cleared {
                    return Ok(false);
                }
            }
            query::<bool>(&lua, "redis:sismember", redis::cmd("SISMEMBER").arg(&full).arg(&json)).await
        })?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::retarget;

    #[test]
    fn retarget_moves_the_key_and_nothing_else() {
        let mut cmd = redis::cmd("HGET");
        cmd.arg("accounts@2:ops:acc-1").arg("accounts@2:a-field-not-a-key");
        let moved = retarget(&cmd, "accounts@2", "accounts@3");
        let args: Vec<Vec<u8>> = moved.args_iter().filter_map(|a| if let redis::Arg::Simple(b) = a { Some(b.to_vec()) } else { None }).collect();
        assert_eq!(args, vec![b"HGET".to_vec(), b"accounts@3:ops:acc-1".to_vec(), b"accounts@2:a-field-not-a-key".to_vec()]);
        let mut other = redis::cmd("GET");
        other.arg("users@2:x");
        let unchanged = retarget(&other, "accounts@2", "accounts@3");
        assert_eq!(unchanged.args_iter().count(), 2);
        assert!(unchanged.args_iter().any(|a| matches!(a, redis::Arg::Simple(b) if b == b"users@2:x")));
    }
}
