//! `bus:last_event(key)` and `bus:events_after(key, seq[, limit])`: a key's events read from
//! the stream itself (the authority), by direct gets, for decisions that must not trust a
//! projection that lags. `events_after` is one request (per 1,000 events).

use super::{args, check_reads_allowed, infra, offline, shared, LResult};
use crate::script::convert::event_table;
use crate::stream::{EventReader, ReadFailure};
use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};
use sequent_protocol::validate::validate_key;

pub fn install(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set(
        "last_event",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "bus:last_event")?;
            let what = format!("bus:last_event({key})");
            if let Some(offline) = offline_reads(&lua, &what, &key)? {
                let last = offline.log.lock().last(&key).cloned();
                return last.map_or(Ok(Value::Nil), |e| Ok(Value::Table(event_table(&lua, &e)?)));
            }
            let reader = reader(&lua, &what, &key)?;
            match reader.last(&key).await {
                Ok(Some(event)) => Ok(Value::Table(event_table(&lua, &event)?)),
                Ok(None) => Ok(Value::Nil),
                Err(e) => failed(&lua, &what, e),
            }
        })?,
    )?;
    bus.raw_set(
        "events_after",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, after, limit): (String, u64, Option<usize>) = args(&lua, values, "bus:events_after")?;
            let what = format!("bus:events_after({key}, {after})");
            let limit = limit.unwrap_or(1000).clamp(1, 10_000);
            let events = match offline_reads(&lua, &what, &key)? {
                Some(offline) => offline.log.lock().after(&key, after, limit),
                None => match reader(&lua, &what, &key)?.after(&key, after, limit).await {
                    Ok(events) => events,
                    Err(e) => return failed(&lua, &what, e),
                },
            };
            let out = lua.create_table_with_capacity(events.len(), 0)?;
            for event in &events {
                out.raw_push(event_table(&lua, event)?)?;
            }
            out.set_metatable(Some(lua.array_metatable()))?;
            Ok(Value::Table(out))
        })?,
    )?;
    Ok(())
}

/// The in-memory stream under `superclient test` (the arguments checked as for the real one).
fn offline_reads(lua: &Lua, what: &str, key: &str) -> LResult<Option<std::sync::Arc<crate::script::Offline>>> {
    match offline(lua) {
        Some(o) => {
            check_reads_allowed(lua, what)?;
            validate_key(key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
            Ok(Some(o))
        }
        None => Ok(None),
    }
}

fn reader(lua: &Lua, what: &str, key: &str) -> LResult<EventReader> {
    check_reads_allowed(lua, what)?;
    validate_key(key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    match shared(lua).events.get() {
        Some(r) => Ok(r.clone()),
        None => infra(lua, what, "not connected to NATS yet"),
    }
}

fn failed<T>(lua: &Lua, what: &str, e: ReadFailure) -> LResult<T> {
    match e {
        ReadFailure::Unavailable(e) => infra(lua, what, e),
        unreadable => Err(mlua::Error::runtime(format!("{what}: {unreadable}"))),
    }
}
