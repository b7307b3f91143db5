//! Many events through the rebuild handlers in one call into Lua (a rebuild's batches): the
//! loop over the events runs in Lua, so a batch pays for one call (one coroutine, one budget,
//! one trip through the async machinery) instead of one per event. Handler errors stop the batch
//! and name the event.

use super::budget::{unlimited, Budget};
use super::convert::{data_to_lua, meta_table, Delivery};
use super::handlers::{Handlers, Slot};
use crate::state;
use super::{Call, CallError, Lease, ALL_TYPES};
use mlua::{Function, Lua, Table, Value};
use sequent_protocol::Event;
use std::collections::HashMap;
use std::sync::Arc;

/// Loops over `events` (`{type, key, correlation, data, meta}` each), calling the handler of
/// each type (else the `*` one; `false`: none), each with a whole instruction budget (as if it were a call of its own); `at.i`
/// says which one runs, for the error of a failing one. `fresh_budget` also takes the event's
/// partition: with partitioned state the handler runs in its partition's namespace, held to its
/// partition's keys as live.
const DISPATCH: &str = r#"
local handlers, events, at, fresh_budget = ...
for i = 1, #events do
  local e = events[i]
  local f = handlers[e[1]]
  if f == nil then f = handlers["*"] end
  if f then
    fresh_budget(e[6])
    at.i = i
    f(e[1], e[2], e[3], e[4], e[5])
  end
end
"#;

const DISPATCH_KEY: &str = "sequent_replay_dispatch";
const HANDLERS_KEY: &str = "sequent_replay_handlers";
const FRESH_BUDGET_KEY: &str = "sequent_replay_fresh_budget";

/// How many of the five arguments the rebuild handler of each type can see (its parameters, 5
/// if it takes `...`; 0: no handler), with `*`'s for the others. Arguments a handler has no
/// parameter for are not built: most rebuild handlers never name `meta`.
struct Seen {
    by_type: HashMap<String, u8>,
    any: u8,
}

impl Seen {
    fn of(&self, event_type: &str) -> u8 {
        self.by_type.get(event_type).copied().unwrap_or(self.any)
    }
}

fn arity(handler: &Value) -> u8 {
    match handler {
        Value::Function(f) => {
            let info = f.info();
            if info.is_vararg { 5 } else { info.num_params.min(5) }
        }
        _ => 0,
    }
}

/// The dispatcher, the table type → rebuild handler and the budget reset of this state, made
/// once (with the handlers' [`Seen`], kept as the state's app data).
fn prepared(lua: &Lua) -> mlua::Result<(Function, Table, Function)> {
    if let (Ok(f), Ok(t), Ok(b)) = (
        lua.named_registry_value::<Function>(DISPATCH_KEY),
        lua.named_registry_value::<Table>(HANDLERS_KEY),
        lua.named_registry_value::<Function>(FRESH_BUDGET_KEY),
    ) {
        return Ok((f, t, b));
    }
    let f = lua.load(DISPATCH).set_name("=replay").into_function()?;
    // A handler that caught the budget's error with pcall still fails, as in a call of its own.
    let fresh_budget = lua.create_function(|lua, partition: Option<u32>| {
        let budget = lua.app_data_ref::<Arc<Budget>>().expect("every state has a budget");
        if budget.exceeded.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(mlua::Error::runtime(budget.message()));
        }
        budget.fresh_instructions();
        if let Some(p) = partition {
            let slot = lua.app_data_ref::<Slot>().expect("the call slot is installed").clone();
            let mut call = slot.lock();
            if let Some(call) = call.as_mut() {
                call.ns = state::partition_namespace(&call.ns, p);
            }
        }
        Ok(())
    })?;
    let t = lua.create_table()?;
    {
        let h = lua.app_data_ref::<Handlers>().expect("handlers are installed");
        for (event_type, (listener, rebuild)) in &h.listeners {
            if *rebuild {
                t.raw_set(event_type.as_str(), listener.clone())?;
            } else {
                // Its own live-only listener wins over a `*` listener, in rebuilds as live.
                t.raw_set(event_type.as_str(), false)?;
            }
        }
        // A rebuild handler wins over a listener used in rebuilds.
        for (event_type, handler) in &h.rebuild {
            t.raw_set(event_type.as_str(), handler.clone())?;
        }
    }
    let mut seen = Seen { by_type: HashMap::new(), any: 0 };
    for pair in t.pairs::<String, Value>() {
        let (event_type, handler) = pair?;
        match event_type.as_str() {
            ALL_TYPES => seen.any = arity(&handler),
            _ => {
                seen.by_type.insert(event_type, arity(&handler));
            }
        }
    }
    lua.set_app_data(seen);
    lua.set_named_registry_value(DISPATCH_KEY, &f)?;
    lua.set_named_registry_value(HANDLERS_KEY, &t)?;
    lua.set_named_registry_value(FRESH_BUDGET_KEY, &fresh_budget)?;
    Ok((f, t, fresh_budget))
}

/// `{type, key, correlation, data, meta}`, as far as the event's handler can see them, and the
/// partition 6th when the state is `partitioned` (the handler runs in its namespace).
fn event_args(lua: &Lua, event: &Event, partition: u32, seen: u8, partitioned: bool) -> mlua::Result<Table> {
    let e = lua.create_table_with_capacity(if partitioned { 6 } else { seen.max(1) as usize }, 0)?;
    e.raw_set(1, event.event_type.as_str())?;
    if partitioned {
        e.raw_set(6, partition)?;
    }
    if seen >= 2 {
        e.raw_set(2, event.key.as_str())?;
    }
    if seen >= 3 {
        e.raw_set(3, event.correlation.as_str())?;
    }
    if seen >= 4 {
        e.raw_set(4, data_to_lua(lua, event.data.get())?)?;
    }
    if seen >= 5 {
        e.raw_set(5, meta_table(lua, event, Delivery { partition: Some(partition), rebuild: true, ..Default::default() })?)?;
    }
    Ok(e)
}

/// Runs the rebuild handlers of `events` (each with its partition) in order on `call` (a
/// rebuild's call). On failure: the index of the event that failed, and why.
pub async fn replay(lease: &mut Lease, events: &[(Event, u32)], call: Call) -> (Result<(), (usize, CallError)>, Call) {
    let lua = lease.lua();
    let partitioned = call.partitions.is_some();
    let prepared = (|| -> mlua::Result<_> {
        let (dispatch, handlers, fresh_budget) = prepared(lua)?;
        let list = unlimited(lua, || -> mlua::Result<Table> {
            let seen = lua.app_data_ref::<Seen>().expect("prepared with the dispatcher");
            let list = lua.create_table_with_capacity(events.len(), 0)?;
            for (i, (event, partition)) in events.iter().enumerate() {
                list.raw_set(i + 1, event_args(lua, event, *partition, seen.of(&event.event_type), partitioned)?)?;
            }
            Ok(list)
        })?;
        let at = lua.create_table()?;
        at.raw_set("i", 0)?;
        Ok((dispatch, handlers, list, at, fresh_budget))
    })();
    let (dispatch, handlers, list, at, fresh_budget) = match prepared {
        Ok(p) => p,
        Err(e) => return (Err((0, CallError::Script(format!("preparing the replayed events: {e}")))), call),
    };
    metrics::counter!("sequent_lua_calls_total", "kind" => "replay").increment(1);
    let (result, call) = lease.call::<()>(&dispatch, (handlers, list, at.clone(), fresh_budget), call).await;
    match result {
        Ok(()) => (Ok(()), call),
        Err(e) => {
            // Read before a renewal, which drops the state `at` lives in.
            let i: usize = at.raw_get::<usize>("i").unwrap_or(1).max(1);
            drop((at, dispatch));
            if matches!(e, CallError::Resource(_)) {
                lease.renew();
            }
            (Err((i - 1, e)), call)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replay;
    use crate::script::{Call, CallError, Limits, Mode, Pool, Shared};
    use sequent_protocol::{Event, Producer};
    use std::sync::Arc;

    /// A script whose handler burns `data.work` loop turns, fails when `data.fail`, and
    /// swallows the budget's error when `data.catch`.
    const SCRIPT: &str = r##"
bus:register("replayed")
local seen = 0
bus:add_rebuild_handler("Work", function(event_type, key, correlation, data, meta)
  if data.fail then error("failing on purpose") end
  local f = function() local x = 0; for i = 1, data.work do x = x + i end end
  if data.catch then pcall(f) else f() end
  seen = seen + 1
  assert(meta.rebuild and meta.seq > 0 and not meta.redelivered)
end)
-- Arguments are built as far as a handler has parameters for them, all of them for `...`.
bus:add_rebuild_handler("Few", function(event_type, key)
  assert(event_type == "Few" and key == "k")
end)
bus:add_rebuild_handler("Any", function(...)
  local event_type, key, correlation, data, meta = ...
  assert(select("#", ...) == 5 and key == "k" and correlation == "c-" .. meta.seq and data.work == 1 and meta.rebuild)
end)
"##;

    fn event(seq: u64, data: &str) -> (Event, u32) {
        typed(seq, "Work", data)
    }

    fn typed(seq: u64, event_type: &str, data: &str) -> (Event, u32) {
        let event = Event {
            seq,
            id: format!("e-{seq}"),
            event_type: event_type.into(),
            key: "k".into(),
            version: seq,
            correlation: format!("c-{seq}"),
            causation: None,
            producer: Producer { service: "test".into(), instance: None },
            time: "2026-12-01T00:00:00.000000Z".into(),
            data: serde_json::value::RawValue::from_string(data.to_string()).unwrap(),
        };
        (event, 0)
    }

    async fn run(events: &[(Event, u32)]) -> Result<(), (usize, CallError)> {
        let shared = Arc::new(Shared::new("i".into(), std::path::Path::new("replayed.lua"), Default::default(), false, std::time::Duration::from_secs(5), Default::default()));
        let limits = Limits { memory_bytes: 64 << 20, instructions: 1_000_000, timeout: std::time::Duration::from_secs(5) };
        let (pool, _) = Pool::new(SCRIPT.to_string(), shared, limits, 1).unwrap();
        let mut lease = pool.get().await;
        replay(&mut lease, events, Call::new(Mode::Rebuild, "replayed@1")).await.0
    }

    #[tokio::test]
    async fn each_event_has_a_whole_budget() {
        // Each handler uses about half of the budget; together far more than one.
        let events: Vec<_> = (1..=8).map(|s| event(s, r#"{"work": 120000}"#)).collect();
        run(&events).await.unwrap();
    }

    #[tokio::test]
    async fn handlers_get_the_arguments_they_take() {
        let events = vec![typed(1, "Few", r#"{"work": 1}"#), typed(2, "Any", r#"{"work": 1}"#), event(3, r#"{"work": 1}"#)];
        run(&events).await.unwrap();
    }

    #[tokio::test]
    async fn a_failure_names_its_event() {
        let events = vec![event(1, r#"{"work": 1}"#), event(2, r#"{"work": 1}"#), event(3, r#"{"fail": true}"#), event(4, r#"{"work": 1}"#)];
        let (at, e) = run(&events).await.unwrap_err();
        assert_eq!(at, 2);
        assert!(matches!(&e, CallError::Script(m) if m.contains("failing on purpose")), "{e:?}");
    }

    #[tokio::test]
    async fn an_endless_handler_is_stopped_even_when_it_catches_the_error() {
        for data in [r#"{"work": 1e12}"#, r#"{"work": 1e12, "catch": true}"#] {
            let events = vec![event(1, r#"{"work": 1}"#), event(2, data), event(3, r#"{"work": 1}"#)];
            let (at, e) = run(&events).await.unwrap_err();
            assert_eq!(at, 1, "{data}");
            assert!(matches!(&e, CallError::Resource(m) if m.contains("instructions")), "{data}: {e:?}");
        }
    }
}
