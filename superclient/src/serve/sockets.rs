//! WebSockets of a service: live updates fed by the event stream, and event tails.
//!
//! - A script registers `bus:add_websocket(path, connect)`. On each upgrade the `connect`
//!   function (run like a route, with `(path, params, query, headers)`) decides what the socket
//!   is: `{close = 4401, reason = "..."}`; `{topics = {...}, messages = {...}}` (it receives
//!   `messages` first, then what is pushed to those topics); or `{events = {types=, keys=, from_seq=}, redact = {...}}` (a tail of the stream,
//!   one event per message, from its own ordered consumer; `redact` hides data fields: a list of
//!   field names for every type, or `{Type = {fields}, ["*"] = {fields}}` as `admin.sensitive()` gives).
//! - `bus:add_live_listener(type, fn)`: every instance runs one ordered consumer of these types
//!   (from "now") and calls `fn` for each event, in stream order, on one dedicated Lua state.
//!   `bus:push(topics, message)` and `bus:join(topic, new_topic)` reach this instance's sockets;
//!   since every instance sees every event, a browser gets its updates whichever instance it is
//!   connected to, without polling and without any instance talking to another.
//! - A socket that cannot keep up (its queue of 256 messages is full) is closed with 1013; the
//!   client reconnects and re-reads. The server pings every 20 s.

use crate::runtime::Service;
use crate::script::convert::{handler_args, lua_to_json_text, Delivery};
use crate::script::{live_topics, CallError, Mode};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use mlua::{Table, Value};
use sequent_protocol::subjects;
use sequent_net::Tail;
use sequent_protocol::{Event, Redaction, TailStart};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const PING_EVERY: Duration = Duration::from_secs(20);

/// What the connect function decided.
enum Decision {
    Close(u16, String),
    /// Subscribe to the topics, then send the messages (JSON text) first.
    Topics(Vec<String>, Vec<String>),
    Events { filters: Vec<String>, from_seq: Option<u64>, redact: Redaction },
}

/// The request a socket was opened with.
pub struct Opening {
    pub index: usize,
    pub path: String,
    pub params: Vec<(String, String)>,
    pub query: HashMap<String, String>,
    pub headers: Vec<(String, String)>,
}

pub async fn serve(svc: Arc<Service>, mut socket: WebSocket, opening: Opening) {
    let decision = match connect(&svc, &opening).await {
        Ok(d) => d,
        Err(e) => {
            let id = uuid::Uuid::now_v7();
            tracing::error!(error_id = %id, path = opening.path, error = e, "WebSocket connect handler failed");
            Decision::Close(1011, format!("internal error (error id {id})"))
        }
    };
    match decision {
        Decision::Close(code, reason) => close(&mut socket, code, &reason).await,
        Decision::Topics(topics, first) => topics_loop(&svc, socket, topics, first).await,
        Decision::Events { filters, from_seq, redact } => events_loop(&svc, socket, filters, from_seq, redact).await,
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let reason: String = reason.chars().take(120).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

fn strings(t: &Table, field: &str) -> mlua::Result<Vec<String>> {
    match t.get::<Value>(field)? {
        Value::Nil => Ok(Vec::new()),
        Value::String(s) => Ok(s.to_str()?.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()),
        Value::Table(list) => list.sequence_values::<String>().collect(),
        other => Err(mlua::Error::runtime(format!("{field} must be a list of strings, not a {}", other.type_name()))),
    }
}

async fn connect(svc: &Arc<Service>, o: &Opening) -> Result<Decision, String> {
    let ns = svc.active_ns();
    let mut lease = svc.route_pool.get().await;
    let f = lease.websocket(o.index).ok_or("the WebSocket handler vanished")?;
    let lua_ref = lease.lua();
    let args = (|| -> mlua::Result<_> {
        let p = lua_ref.create_table()?;
        for (k, v) in &o.params {
            p.raw_set(k.as_str(), v.as_str())?;
        }
        let q = lua_ref.create_table()?;
        for (k, v) in &o.query {
            q.raw_set(k.as_str(), v.as_str())?;
        }
        let h = lua_ref.create_table()?;
        for (k, v) in &o.headers {
            h.raw_set(k.as_str(), v.as_str())?;
        }
        Ok((o.path.clone(), p, q, h))
    })()
    .map_err(|e| e.to_string())?;
    let (result, call) = lease.call::<Value>(&f, args, svc.call(Mode::Route, &ns)).await;
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            if matches!(e, CallError::Resource(_)) {
                lease.renew();
            }
            return Err(e.to_string());
        }
    };
    svc.hub.apply(call.hub_ops);
    let Value::Table(t) = value else {
        return Err("the connect function must return a table: {topics = {...}}, {events = {...}} or {close = code, reason = \"...\"}".into());
    };
    let decide = || -> mlua::Result<Result<Decision, String>> {
        if let Some(code) = t.get::<Option<u16>>("close")? {
            return Ok(Ok(Decision::Close(code, t.get::<Option<String>>("reason")?.unwrap_or_default())));
        }
        if let Some(ev) = t.get::<Option<Table>>("events")? {
            let types = strings(&ev, "types")?;
            let keys = strings(&ev, "keys")?;
            let from_seq = ev.get::<Option<u64>>("from_seq")?;
            return Ok(match subjects::read_filters(&types, &keys) {
                Ok(filters) => Ok(Decision::Events { filters, from_seq, redact: redaction(&t)? }),
                Err(why) => Ok(Decision::Close(1008, why)),
            });
        }
        let mut first = Vec::new();
        if let Some(list) = t.get::<Option<Table>>("messages")? {
            for m in list.sequence_values::<Value>() {
                let m = m?;
                first.push(match &m {
                    Value::String(s) => s.to_str()?.to_string(),
                    _ => lua_to_json_text(&m).map_err(mlua::Error::runtime)?,
                });
            }
        }
        Ok(Ok(Decision::Topics(strings(&t, "topics")?, first)))
    };
    match decide() {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("the connect function returned a malformed table: {e}")),
    }
}


async fn topics_loop(svc: &Arc<Service>, mut socket: WebSocket, topics: Vec<String>, first: Vec<String>) {
    let (id, mut rx) = svc.hub.register(topics);
    for m in first {
        if socket.send(Message::Text(m.into())).await.is_err() {
            svc.hub.unregister(id);
            return;
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(text) => if socket.send(Message::Text(text.into())).await.is_err() { break },
                None => {
                    close(&mut socket, 1013, "too many updates queued; reconnect and re-read").await;
                    break;
                }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => if socket.send(Message::Ping(Vec::new().into())).await.is_err() { break },
        }
    }
    svc.hub.unregister(id);
}

/// The connect function's `redact`: a list of fields (of every type) or a map type → fields.
fn redaction(t: &Table) -> mlua::Result<Redaction> {
    match t.get::<Value>("redact")? {
        Value::Table(map) if map.raw_len() == 0 => {
            let mut rules = std::collections::BTreeMap::new();
            for pair in map.pairs::<String, Table>() {
                let (event_type, fields) = pair?;
                rules.insert(event_type, fields.sequence_values::<String>().collect::<mlua::Result<_>>()?);
            }
            Ok(Redaction(rules))
        }
        _ => Ok(Redaction([("*".to_string(), strings(t, "redact")?.into_iter().collect())].into())),
    }
}

fn redacted(json: String, redaction: &Redaction) -> String {
    if redaction.is_empty() {
        return json;
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&json) else { return json };
    redaction.apply(&mut v);
    v.to_string()
}

async fn events_loop(svc: &Arc<Service>, mut socket: WebSocket, filters: Vec<String>, from_seq: Option<u64>, redact: Redaction) {
    let start = match from_seq {
        Some(n) => TailStart::Seq { seq: n.max(1) },
        None => TailStart::New,
    };
    let mut tail = match Tail::open(svc.client.clone(), &svc.principal, sequent_net::tail::events(filters, start)).await {
        Ok(t) => t,
        Err(e) => return close(&mut socket, 1011, &format!("cannot read the stream: {e}")).await,
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            m = tail.next() => match m {
                Ok(msg) => {
                    let Ok(json) = sequent_protocol::envelope::event_json_with_seq(&msg.payload, msg.seq) else { continue };
                    if socket.send(Message::Text(redacted(json, &redact).into())).await.is_err() { break }
                }
                Err(e) => { close(&mut socket, 1011, &format!("the event stream ended: {e}")).await; break }
            },
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => if socket.send(Message::Ping(Vec::new().into())).await.is_err() { break },
        }
    }
}

/// Feeds the live listeners: one tail of their types, from "now", opened again after the last
/// event seen when it fails.
pub async fn live_feed(svc: Arc<Service>) {
    let filters: Vec<String> = svc.spec.live.iter().map(|t| subjects::type_filter(t)).collect();
    let mut next: Option<u64> = None;
    loop {
        let start = match next {
            Some(n) => TailStart::Seq { seq: n },
            None => TailStart::New,
        };
        let mut tail = match Tail::open(svc.client.clone(), &svc.principal, sequent_net::tail::events(filters.clone(), start)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = e, "live feed: cannot read the stream yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(types = ?svc.spec.live, "live feed running");
        loop {
            match tail.next().await {
                Ok(msg) => {
                    let seq = msg.seq;
                    next = Some(seq + 1);
                    let partition = subjects::parse_stored_subject(&msg.subject).map(|(p, _, _)| p).unwrap_or(0);
                    match Event::from_stored(&msg.payload, seq) {
                        Ok(event) => run_live(&svc, &event, partition).await,
                        Err(e) => tracing::warn!(seq, error = %e, "live feed: unreadable event skipped"),
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "live feed: stream error; restarting after the last event seen");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn run_live(svc: &Service, event: &Event, partition: u32) {
    // A listener that declared its topics runs only when a socket here listens to one of them.
    let declared = svc.spec.live_topics.get(&event.event_type).map(|t| t.of(event));
    if let Some(topics) = &declared {
        if !svc.hub.listens_to_any(topics) {
            metrics::counter!("sequent_live_listener_skips_total").increment(1);
            return;
        }
    }
    let mut lease = svc.live_pool.get().await;
    let Some(f) = lease.live_listener(&event.event_type) else { return };
    let args = match handler_args(lease.lua(), event, Delivery { partition: Some(partition), attempt: Some(1), ..Default::default() }) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "live listener: cannot prepare the arguments");
            return;
        }
    };
    metrics::counter!("sequent_lua_calls_total", "kind" => "live").increment(1);
    let (result, call) = lease.call::<()>(&f, args, svc.call(Mode::Live, &svc.active_ns())).await;
    if let Err(e) = result {
        if matches!(e, CallError::Resource(_)) {
            lease.renew();
        }
        metrics::counter!("sequent_live_listener_errors_total").increment(1);
        tracing::warn!(seq = event.seq, id = event.id, event_type = event.event_type, error = %e, "live listener failed (its pushes are dropped)");
        return;
    }
    drop(lease);
    if !call.overlay.is_empty() {
        tracing::warn!(event_type = event.event_type, "a live listener wrote to Redis: live listeners run on every instance, so their writes are discarded");
    }
    let mut ops = call.hub_ops;
    if let Some(topics) = &declared {
        if live_topics::keep_pushes_to(&mut ops, topics) {
            tracing::warn!(event_type = event.event_type, ?topics, "a live listener pushed to topics it did not declare for the event; those pushes are dropped");
        }
    }
    svc.hub.apply(ops);
}
