//! One service script run without servers: its state and the stream in memory
//! ([`crate::script::Offline`]), its handlers, receipt listeners and routes called as live
//! delivery and the HTTP server call them. What `superclient test` drives.
//!
//! Delivery follows the runtime's path for one event (`consume::apply`): the handler runs on a
//! fresh overlay, its sends are appended as one atomic batch with ids derived from the handled
//! event, the receipt listeners run (their sends go out in further rounds), then the writes
//! commit with the key's version. The service also receives the events it sent, when it listens
//! to their types, as it would from the stream: [`Session::settle`] delivers every stored event
//! of its types not delivered yet, in stream order.

use crate::script::api;
use crate::script::convert::{handler_args, json_to_lua, lua_to_json, receipt_status, receipt_table, Delivery};
use crate::script::routes;
use crate::script::{Call, Engine, Handled, Limits, Mode, Offline, Secrets, Shared, Spec};
use crate::state::{self, memory::Stored};
use mlua::{MultiValue, Value};
use sequent_protocol::{subjects, Event, Expect, NewEvent, Producer, Receipt};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::Arc;

/// Rounds of "append, then run receipt listeners that send again" for one event (as live).
const MAX_SEND_ROUNDS: usize = 5;
/// Immediate re-runs of a `rerun_on_conflict` handler (as live).
const MAX_RERUNS: u32 = 50;
/// Deliveries one step may cause (handlers that keep sending events to each other).
const MAX_DELIVERIES: usize = 10_000;
/// Partitions the runtime uses by default (for `meta.partition`).
const PARTITIONS: u32 = 16;

pub struct Session {
    engine: Engine,
    pub spec: Spec,
    pub offline: Arc<Offline>,
    ns: String,
    /// [`PARTITIONS`] when the service's state is partitioned: the partition rules hold
    /// offline too (a handler keeps to its partition, a route commits in one).
    partitions: Option<u32>,
    producer: Producer,
    /// Events of the stream looked at for delivery so far.
    delivered: usize,
}

/// An HTTP answer of a route.
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Session {
    /// Loads the script into a fresh state, with an empty state and stream.
    pub fn load(script: &Path, source: &str) -> anyhow::Result<Session> {
        let shared = Arc::new(Shared::new("test-1".into(), script, Secrets::from_env(true)?, false, std::time::Duration::from_secs(2), Default::default()));
        let offline = Arc::new(Offline::default());
        let _ = shared.offline.set(offline.clone());
        let limits = Limits { memory_bytes: 64 * 1024 * 1024, instructions: 50_000_000, timeout: std::time::Duration::from_secs(5) };
        let (engine, spec) = Engine::load(source, shared.clone(), limits)?;
        let _ = shared.service.set(spec.service.clone());
        let producer = Producer { service: spec.service.clone(), instance: Some(shared.instance.clone()) };
        let partitions = (spec.declaration.state == sequent_protocol::declaration::StateLayout::Partitioned).then_some(PARTITIONS);
        Ok(Session { engine, ns: crate::state::namespace(&spec.service, 1), partitions, spec, offline, producer, delivered: 0 })
    }

    /// Appends an event from outside (a command, another service's event) to the stream, then
    /// delivers what the service listens to. Returns the stored event.
    pub async fn given(&mut self, event: NewEvent, from: &str) -> Result<Event, String> {
        let producer = Producer { service: from.to_string(), instance: None };
        let receipts = self.offline.log.lock().append(vec![event], &producer, &[])?;
        let stored = match receipts.first() {
            Some(Receipt::Stored { seq, .. }) => self.offline.log.lock().events()[*seq as usize - 1].clone(),
            Some(Receipt::Conflict { key, current_version, .. }) => {
                return Err(format!("the given event conflicts: key {key} is at version {current_version:?}"))
            }
            other => return Err(format!("the given event was refused: {other:?}")),
        };
        self.settle().await?;
        Ok(stored)
    }

    /// Delivers every stored event of the service's types it has not seen yet, in order.
    pub async fn settle(&mut self) -> Result<(), String> {
        let mut deliveries = 0;
        loop {
            let next = self.offline.log.lock().events().get(self.delivered).cloned();
            let Some(event) = next else { return Ok(()) };
            self.delivered += 1;
            if !self.spec.consumes(&event.event_type) {
                continue;
            }
            deliveries += 1;
            if deliveries > MAX_DELIVERIES {
                return Err(format!("handlers kept sending events the service handles again ({MAX_DELIVERIES} deliveries)"));
            }
            self.deliver(&event).await.map_err(|e| {
                format!("the handler of {} (key {}, seq {}) failed: {e} (deployed, the event would be retried, then parked)", event.event_type, event.key, event.seq)
            })?;
        }
    }

    /// One event through its handler, sends and receipt listeners, then the commit.
    async fn deliver(&mut self, event: &Event) -> Result<(), String> {
        let mut reruns = 0;
        loop {
            let mut call = self.call(Mode::Handler, Some(&event.key));
            call.next_event(Handled { id: event.id.clone(), correlation: event.correlation.clone() });
            if let Some((handler, _)) = self.engine.listener(&event.event_type) {
                let delivery = Delivery { partition: Some(subjects::partition_of(&event.key, PARTITIONS)), attempt: Some(1), ..Default::default() };
                let args = handler_args(self.engine.lua(), event, delivery).map_err(|e| e.to_string())?;
                let (result, back) = self.engine.call::<()>(&handler, args, call).await;
                call = back;
                result.map_err(|e| e.to_string())?;
                if !self.publish(&mut call, self.spec.reruns(&event.event_type)).await? {
                    reruns += 1;
                    if reruns > MAX_RERUNS {
                        return Err(format!("its sends kept conflicting for {MAX_RERUNS} re-runs"));
                    }
                    continue;
                }
            }
            api::note_version(&mut call, &event.key, event.version);
            return self.commit(&call);
        }
    }

    /// Appends the call's sends round by round, running receipt listeners. Ok(false): a send of
    /// a `rerun_on_conflict` handler conflicted in the first round (nothing stored): run again.
    async fn publish(&self, call: &mut Call, rerun: bool) -> Result<bool, String> {
        let mut rounds = 0;
        while !call.sends.is_empty() {
            rounds += 1;
            if rounds > MAX_SEND_ROUNDS {
                return Err(format!("receipt listeners kept sending events for {MAX_SEND_ROUNDS} rounds"));
            }
            let batch = std::mem::take(&mut call.sends);
            let receipts = self.offline.log.lock().append(batch.clone(), &self.producer, &self.spec.declaration.appends)?;
            if let Some(Receipt::Invalid { reason, index }) = receipts.iter().find(|r| matches!(r, Receipt::Invalid { .. })) {
                return Err(format!("sent event {index} was refused: {reason}"));
            }
            if rerun && rounds == 1 && receipts.iter().any(|r| matches!(r, Receipt::Conflict { .. })) {
                return Ok(false);
            }
            for (sent, receipt) in batch.iter().zip(&receipts) {
                api::note_receipt(call, receipt);
                let Some(listener) = self.engine.receipt_listener(&sent.event_type) else { continue };
                let lua = self.engine.lua();
                let args = (
                    receipt_status(receipt, self.spec.original_statuses),
                    sent.event_type.clone(),
                    sent.key.clone(),
                    sent.correlation.clone(),
                    crate::script::convert::data_to_lua(lua, sent.data.get()).map_err(|e| e.to_string())?,
                    receipt_table(lua, receipt).map_err(|e| e.to_string())?,
                );
                let taken = std::mem::replace(call, Call::new(Mode::Handler, &self.ns));
                let (result, back) = self.engine.call::<()>(&listener, args, taken).await;
                *call = back;
                result.map_err(|e| format!("the receipt listener of {}: {e}", sent.event_type))?;
            }
        }
        Ok(true)
    }

    fn commit(&self, call: &Call) -> Result<(), String> {
        self.offline.state.lock().apply(call.overlay.ops()).map_err(|e| format!("committing the writes: {e}"))
    }

    /// Calls the route matching `method path` as the HTTP server would, commits its writes,
    /// then delivers the events it sent to the service's own listeners.
    pub async fn request(&mut self, method: &str, path: &str, body: Option<serde_json::Value>, query_given: Vec<(String, String)>, headers: Vec<(String, String)>) -> Result<Answer, String> {
        let method = method.to_ascii_uppercase();
        // A query string in the path joins the given query.
        let (path, mut query) = match path.split_once('?') {
            Some((p, q)) => (p, q.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))).map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            None => (path, Vec::new()),
        };
        query.extend(query_given);
        let table = routes::table(self.spec.routes.iter().map(|(p, m)| (p.as_str(), m.as_str())));
        let segments: Vec<String> = path.split('/').skip(1).map(str::to_string).collect();
        let found = table.iter().filter(|r| r.method == method).find_map(|r| r.matches(&segments).map(|p| (r.index, p)));
        let Some((index, params)) = found else {
            let body = serde_json::json!({ "title": format!("no route for {method} {path}") });
            return Ok(Answer { status: 404, body });
        };
        let f = self.engine.route(index).ok_or("the route vanished")?;
        let lua = self.engine.lua();
        let args = (|| -> mlua::Result<_> {
            let p = lua.create_table()?;
            for (k, v) in &params {
                p.raw_set(k.as_str(), v.as_str())?;
            }
            let q = lua.create_table()?;
            for (k, v) in &query {
                q.raw_set(k.as_str(), v.as_str())?;
            }
            let h = lua.create_table()?;
            for (k, v) in &headers {
                h.raw_set(k.to_ascii_lowercase(), v.as_str())?;
            }
            let b = match &body {
                Some(b) => json_to_lua(lua, b)?,
                None => Value::Nil,
            };
            Ok((method.clone(), path.to_string(), p, b, q, h, Value::Nil))
        })()
        .map_err(|e| e.to_string())?;
        let (result, call) = self.engine.call::<MultiValue>(&f, args, self.call(Mode::Route, None)).await;
        let values = result.map_err(|e| format!("the route {method} {path} failed: {e} (deployed: a 500)"))?;
        let status = match values.front() {
            Some(Value::Integer(n)) => u16::try_from(*n).ok(),
            Some(Value::Number(n)) if n.fract() == 0.0 => Some(*n as u16),
            _ => None,
        }
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| format!("the route {method} {path} must return (status, table|string|nil)"))?;
        let body = match values.get(1) {
            None | Some(Value::Nil) => serde_json::Value::Null,
            Some(Value::String(s)) => serde_json::Value::String(s.to_string_lossy()),
            Some(v @ Value::Table(_)) => lua_to_json(v).map_err(|e| format!("the route {method} {path} returned {e}"))?,
            Some(other) => return Err(format!("the route {method} {path} returned a {} as body", other.type_name())),
        };
        call.commit_namespace(false).map_err(|e| format!("the route {method} {path} failed: {e} (deployed: a 500)"))?;
        self.commit(&call)?;
        self.settle().await?;
        Ok(Answer { status, body })
    }

    /// A call of the service: a handler's in its event key's partition (partitioned state).
    fn call(&self, mode: Mode, event_key: Option<&str>) -> Call {
        let ns = match event_key {
            Some(key) => self.key_ns(key),
            None => self.ns.clone(),
        };
        Call::new(mode, &ns).partitioned(self.partitions)
    }

    /// The namespace of script (or event) key `key`.
    fn key_ns(&self, key: &str) -> String {
        match self.partitions {
            Some(n) => state::partition_namespace(&self.ns, state::key_partition(key, n)),
            None => self.ns.clone(),
        }
    }

    /// Sets script key `key` to `value` (JSON) before the test's events: state the service
    /// would have had (set by an operator, or by an earlier version of it).
    pub fn set_state(&self, key: &str, value: &serde_json::Value) -> Result<(), String> {
        state::check_user_key(key)?;
        let full = state::script_key(&self.key_ns(key), key);
        self.offline.state.lock().apply(&[vec!["SET".into(), full, value.to_string()]])
    }

    /// The value of script key `key` (a string's JSON, a hash's fields, a list's or set's
    /// members), or None.
    pub fn state(&self, key: &str) -> Option<serde_json::Value> {
        let full = state::script_key(&self.key_ns(key), key);
        let memory = self.offline.state.lock();
        Some(match memory.get(&full)? {
            Stored::Str(s) => state::decode(s),
            Stored::Hash(h) => serde_json::Value::Object(h.iter().map(|(f, v)| (f.clone(), state::decode(v))).collect()),
            Stored::List(l) => l.iter().map(|v| state::decode(v)).collect(),
            Stored::Set(s) => s.iter().map(|v| state::decode(v)).collect(),
        })
    }

    /// Every script key of the state with its value.
    pub fn dump(&self) -> serde_json::Map<String, serde_json::Value> {
        let namespaces: Vec<String> = match self.partitions {
            Some(n) => (0..n).map(|p| state::partition_namespace(&self.ns, p)).collect(),
            None => vec![self.ns.clone()],
        };
        let mut names: Vec<String> = Vec::new();
        for ns in namespaces {
            let prefix = format!("{ns}:");
            let memory = self.offline.state.lock();
            names.extend(memory.with_prefix(&prefix).filter_map(|(k, _)| state::script_name(&k[prefix.len()..]).map(str::to_string)));
        }
        names.into_iter().filter_map(|k| self.state(&k).map(|v| (k, v))).collect()
    }

    /// The events the service appended, in stream order.
    pub fn sent(&self) -> Vec<Event> {
        // By producer and instance: a given event may name the service as its producer.
        self.offline.log.lock().events().iter().filter(|e| e.producer == self.producer).cloned().collect()
    }
}

/// An event from outside as `given` builds it.
pub fn outside_event(event_type: &str, key: &str, data: &serde_json::Value, id: Option<String>, correlation: Option<String>) -> Result<NewEvent, String> {
    let data = match data {
        serde_json::Value::Object(_) => data.to_string(),
        serde_json::Value::Array(a) if a.is_empty() => "{}".to_string(),
        serde_json::Value::Null => "{}".to_string(),
        _ => return Err("an event's data is a table with named fields".into()),
    };
    Ok(NewEvent {
        id,
        event_type: event_type.to_string(),
        key: key.to_string(),
        expect: Expect::Any,
        correlation,
        causation: None,
        data: RawValue::from_string(data).expect("serde_json output is JSON"),
    })
}
