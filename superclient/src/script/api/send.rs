//! `bus:send`: in a handler, buffered and published as one atomic batch when the handler
//! succeeds (ids derived from the handled event); in a route, published at once (after the
//! route's reads are checked and locked), returning the receipt.

use super::{args, err, infra, mode, offline, read, redis_store, shared, with_call, LResult};
use crate::script::convert::{data_to_lua, lua_to_json, receipt_status, receipt_table};
use crate::script::handlers::Handlers;
use crate::script::{Call, Mode};
use crate::state::{self, Commit};
use crate::stream::AppendError;
use mlua::{Lua, MultiValue, Table, Value};
use sequent_protocol::envelope::{derived_event_id, new_event_id};
use sequent_protocol::validate::{validate_id, validate_key, validate_type};
use sequent_protocol::{Expect, NewEvent, Producer, Receipt};
use serde_json::value::RawValue;

pub fn install(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set("send", lua.create_async_function(send)?)
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
            let event = NewEvent { id: Some(chosen_id.unwrap_or_else(new_event_id)), event_type, key, expect, correlation, causation: None, data };
            let receipt = match offline(&lua) {
                Some(offline) => offline_append(&lua, &offline, event.clone()).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?,
                None => {
                    let gateway = shared(&lua).gateway.get().cloned();
                    let Some(gateway) = gateway else { return infra(&lua, &what, "not connected to NATS yet") };
                    lock_reads(&lua, &what).await?;
                    match gateway.append(vec![event.clone()]).await {
                        Ok(reply) => match reply.receipts.into_iter().next() {
                            Some(receipt) => receipt,
                            None => return infra(&lua, &what, "the gateway sent no receipt"),
                        },
                        Err(AppendError::Unavailable(e)) => return infra(&lua, &what, e),
                        Err(AppendError::Refused(e)) => return err(format!("{what}: {e}")),
                    }
                }
            };
            with_call(&lua, &what, |call| {
                // Counted so that the route is not silently run again after a rebuild swap.
                call.sent += 1;
                note_receipt(call, &receipt);
                Ok(())
            })?;
            route_receipt(&lua, &what, &event, &receipt).await?;
            receipt_table(&lua, &receipt).map(Value::Table)
        }
    }
}

/// Appends one event of a route to the in-memory stream (`superclient test`).
fn offline_append(lua: &Lua, offline: &crate::script::Offline, event: NewEvent) -> Result<Receipt, String> {
    let (producer, appends) = {
        let h = lua.app_data_ref::<Handlers>().expect("handlers are installed");
        let service = h.service.clone().unwrap_or_default();
        (Producer { service, instance: Some(shared(lua).instance.clone()) }, h.declaration.appends.clone())
    };
    let receipts = offline.log.lock().append(vec![event], &producer, &appends)?;
    Ok(receipts.into_iter().next().expect("one receipt per event"))
}

/// Most receipt listeners nested in one route (a listener that resends on every conflict).
const MAX_ROUTE_RECEIPT_DEPTH: u32 = 5;

/// A route's send: the receipt listener of its type runs at once, in the route's call (its
/// writes commit with the route's, its sends go out at once and get their receipts too), as
/// the original delivered a receipt for every send.
async fn route_receipt(lua: &Lua, what: &str, event: &NewEvent, receipt: &Receipt) -> LResult<()> {
    let (listener, original) = {
        let h = lua.app_data_ref::<Handlers>().expect("handlers are installed");
        (h.receipts.get(&event.event_type).cloned(), h.original_statuses)
    };
    let Some(listener) = listener else { return Ok(()) };
    let depth = with_call(lua, what, |c| {
        c.receipt_depth += 1;
        Ok(c.receipt_depth)
    })?;
    let result = if depth > MAX_ROUTE_RECEIPT_DEPTH {
        err(format!("{what}: receipt listeners kept sending events for {MAX_ROUTE_RECEIPT_DEPTH} rounds; a listener that resends on every conflict loops"))
    } else {
        let correlation = event.correlation.clone().or_else(|| event.id.clone());
        let args = (
            receipt_status(receipt, original),
            event.event_type.clone(),
            event.key.clone(),
            correlation,
            data_to_lua(lua, event.data.get())?,
            receipt_table(lua, receipt)?,
        );
        listener.call_async::<()>(args).await
    };
    with_call(lua, what, |c| {
        c.receipt_depth -= 1;
        Ok(())
    })?;
    result
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
    let full = state::versions_key(&call.versions_namespace(key));
    call.overlay.note_version(&full, key, version);
}

async fn known_version(lua: &Lua, key: &str) -> LResult<Option<u64>> {
    let (full, buffered) = with_call(lua, "bus:send", |call| Ok((state::versions_key(&call.versions_namespace(key)), call.overlay.known_version(key))))?;
    let stored: Option<u64> = read(lua, "bus:send: reading the known version", ::redis::cmd("HGET").arg(&full).arg(key), None).await?;
    Ok(match (stored, buffered) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

/// Before a route's send: checks that what the route read from Redis is still current and
/// locks it until the route commits (`state::store` explains why). A stale read means the
/// decision was taken on old state: a route that has sent nothing yet runs again; one that has
/// sent fails with a retryable error.
async fn lock_reads(lua: &Lua, what: &str) -> LResult<()> {
    // A route goes on running after its send and may write anything it read: it locks its
    // reads exclusively.
    let (ns, owner, (reads, exclusive), sent) = with_call(lua, what, |c| {
        let owner = c.owner.get_or_insert_with(|| format!("{}/{}", shared_name(lua), uuid::Uuid::now_v7().simple())).clone();
        Ok((c.commit_namespace(true), owner, c.lock_request(true), c.sent))
    })?;
    if reads.is_empty() {
        return Ok(());
    }
    let ns = ns.map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    let store = redis_store(lua)?;
    match store.lock_reads_waiting(&ns, &reads, &exclusive, &owner).await {
        Ok(Commit::Applied) => with_call(lua, what, |c| {
            c.note_locked(reads, &exclusive);
            Ok(())
        }),
        Ok(Commit::Stale(key)) => {
            with_call(lua, what, |c| {
                c.infra_error = Some(format!("{what}: {key} changed since the route read it"));
                c.rerun = sent == 0;
                Ok(())
            })?;
            err(format!(
                "{what}: the state this route decided on changed ({key} was written meanwhile); {}",
                if sent == 0 { "running it again" } else { "retry the request" }
            ))
        }
        Ok(Commit::Locked(key)) => infra(lua, what, format!("{key}, which this route read, stayed locked by another call")),
        Ok(_) => infra(lua, what, "the service's state was swapped by a rebuild; retry"),
        Err(e) => infra(lua, what, e),
    }
}

fn shared_name(lua: &Lua) -> String {
    shared(lua).instance.clone()
}
