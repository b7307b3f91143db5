//! One running service: its script pool, connections, and [`Service::apply`], the path every
//! event takes through a handler (live, released from parking, or rebuilt).
//!
//! Order of effects for one event (contract items 5 and 6):
//!
//! 1. Run the handler. Its Redis writes are buffered (its reads see them), its sends are
//!    buffered with ids derived from the handled event's id.
//! 2. Append the sends through the gateway as one atomic batch and wait for the receipts;
//!    receipt listeners run in the same call context (their writes join the buffer, their
//!    sends go out in a further round).
//! 3. Commit the buffered writes and the partition checkpoint in one Redis script, which
//!    refuses if the checkpoint is already at or past the event (a redelivery, or a stale
//!    owner) or if the namespace was swapped by a rebuild meanwhile.
//! 4. Only then does the caller ack the JetStream message.
//!
//! Why publish before commit: a crash between 2 and 3 leaves Redis untouched, so the event is
//! redelivered and the handler runs again on the same state; it makes the same decisions and
//! sends the same derived ids, which the store absorbs as duplicates. Committing first would
//! lose the sends if the process died before publishing (the checkpoint would skip the event).

use crate::cli::RunOpts;
use crate::lua::{self, Call, CallError, Handled, Mode, Pool, Shared, Spec};
use crate::state::{self, Commit, Guard, Store};
use async_nats::jetstream;
use mlua::{Lua, Table, Value};
use parking_lot::RwLock;
use sequent_protocol::{Event, Receipt};
use std::sync::Arc;
use std::time::Duration;

pub struct Service {
    pub name: String,
    pub instance: String,
    pub spec: Spec,
    /// Lua states for event handlers and receipt listeners.
    pub pool: Arc<Pool>,
    /// Lua states for routes and WebSocket connect functions (they may wait: `bus:wait`,
    /// `http.call`), kept apart so waiting requests never starve event handling.
    pub route_pool: Arc<Pool>,
    /// One Lua state for the live listeners (in stream order).
    pub live_pool: Arc<Pool>,
    pub shared: Arc<Shared>,
    pub store: Store,
    pub js: jetstream::Context,
    pub stream_name: String,
    pub partitions: u32,
    pub opts: RunOpts,
    /// The active namespace as last seen; refreshed when a commit finds it moved.
    active: RwLock<String>,
    /// Partitions this instance consumes now (for /health).
    pub owned: RwLock<Vec<u32>>,
}

/// Where an event is applied.
#[derive(Debug, Clone)]
pub enum Target {
    /// Live delivery from the partition's durable consumer; `attempt` is the delivery count.
    Live { partition: u32, attempt: i64 },
    /// Re-processing a parked key's held event (the head of its held list).
    Release { key: String },
    /// Rebuilding into a namespace that is not active yet.
    Rebuild { ns: String, partition: u32 },
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The script failed: counts towards parking.
    #[error("{0}")]
    Script(String),
    /// Redis, NATS or the gateway failed: retried without counting.
    #[error("{0}")]
    Infra(String),
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Script(m) | CallError::Resource(m) => Failure::Script(m),
            CallError::Infra(m) => Failure::Infra(m),
        }
    }
}

/// Most rounds of "append, then run receipt listeners that send again" for one event.
const MAX_SEND_ROUNDS: usize = 5;
/// Most immediate re-runs of a `rerun_on_conflict` listener for one delivery.
const MAX_RERUNS: u32 = 50;

/// How publishing a handler's sends went.
enum Published {
    Done(Box<Call>),
    /// A send of a `rerun_on_conflict` listener conflicted: nothing was stored (batches are
    /// atomic); the handler must run again on fresh state.
    Conflicted(String),
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: Spec,
        instance: String,
        pools: (Arc<Pool>, Arc<Pool>, Arc<Pool>),
        shared: Arc<Shared>,
        store: Store,
        nats: async_nats::Client,
        stream_name: String,
        partitions: u32,
        opts: RunOpts,
    ) -> Service {
        Service {
            name: spec.service.clone(),
            instance,
            spec,
            pool: pools.0,
            route_pool: pools.1,
            live_pool: pools.2,
            shared,
            store,
            js: jetstream::new(nats),
            stream_name,
            partitions,
            opts,
            active: RwLock::new(String::new()),
            owned: RwLock::new(Vec::new()),
        }
    }

    pub fn active_ns(&self) -> String {
        self.active.read().clone()
    }

    pub fn set_active(&self, ns: &str) {
        *self.active.write() = ns.to_string();
    }

    /// Re-reads the active namespace from Redis.
    pub async fn refresh_active(&self) -> Result<String, Failure> {
        match self.store.active().await {
            Ok(Some(ns)) => {
                self.set_active(&ns);
                Ok(ns)
            }
            Ok(None) => Err(Failure::Infra(format!("the service {} has no active namespace in Redis (was it flushed?)", self.name))),
            Err(e) => Err(Failure::Infra(format!("reading the active namespace: {e}"))),
        }
    }

    pub async fn events_stream(&self) -> Result<jetstream::stream::Stream<()>, Failure> {
        self.js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| Failure::Infra(format!("opening stream {}: {e}", self.stream_name)))
    }

    /// Commits framework-only writes (parking, holding) under the same rules as a handler's.
    pub async fn commit(&self, expected: Option<&str>, ns: &str, guard: &Guard, ops: &[state::Cmd]) -> Result<Commit, Failure> {
        self.store.commit(expected, ns, guard, ops).await.map_err(redis_failure)
    }

    /// Runs `event` through the script and commits its effects (see the module docs).
    pub async fn apply(&self, event: &Event, target: &Target) -> Result<Commit, Failure> {
        let started = std::time::Instant::now();
        let rerun = self.spec.rerun.contains(&event.event_type);
        let mut reruns = 0u32;
        loop {
            let (mode, ns, expected) = match target {
                Target::Rebuild { ns, .. } => (Mode::Rebuild, ns.clone(), None),
                _ => {
                    let ns = self.active_ns();
                    (Mode::Handler, ns.clone(), Some(ns))
                }
            };
            let guard = match target {
                Target::Live { partition, .. } | Target::Rebuild { partition, .. } => {
                    Guard::Checkpoint { partition: *partition, seq: event.seq }
                }
                Target::Release { key } => Guard::HeldHead { key: key.clone(), seq: event.seq },
            };
            let mut call = Call::new(mode, &ns);
            call.handled = Some(Handled {
                id: event.id.clone(),
                correlation: event.correlation.clone(),
            });
            call = match self.run_handler(event, target, call).await {
                Ok(c) => c,
                // A rebuild swapped the state in (and dropped the one read) while the handler
                // ran: its failure may come from reading vanished keys. Run it again on the new
                // state without counting an attempt.
                Err(Failure::Script(e)) if expected.is_some() => match self.refresh_active().await {
                    Ok(now) if now != ns => {
                        tracing::info!(from = ns, to = now, error = e, "the handler failed while a rebuild was swapped in; running it again");
                        continue;
                    }
                    _ => return Err(Failure::Script(e)),
                },
                Err(e) => return Err(e),
            };
            if mode == Mode::Handler {
                match self.publish_sends(call, rerun).await? {
                    Published::Done(c) => call = *c,
                    Published::Conflicted(what) => {
                        reruns += 1;
                        metrics::counter!("sequent_handler_reruns_total").increment(1);
                        if reruns > MAX_RERUNS {
                            return Err(Failure::Script(format!("the handler's sends kept conflicting ({what}) for {MAX_RERUNS} re-runs")));
                        }
                        tracing::debug!(what, reruns, "a send conflicted: running the handler again on fresh state");
                        // Spread racing deciders apart a little.
                        let jitter = rand::random::<u64>() % (2 + u64::from(reruns.min(10)) * 5);
                        tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                        continue;
                    }
                }
            }
            lua::note_version_of(&mut call, &event.key, event.version);
            let mut ops = std::mem::take(&mut call.writes.ops);
            if let Target::Release { key } = target {
                ops.push(vec!["LPOP".into(), state::held_key(&ns, key)]);
            }
            match self.commit(expected.as_deref(), &ns, &guard, &ops).await? {
                Commit::NamespaceMoved => {
                    let now = self.refresh_active().await?;
                    tracing::info!(from = ns, to = now, "the active namespace moved (a rebuild was swapped in); running the handler again");
                }
                done => {
                    metrics::histogram!("sequent_handler_seconds").record(started.elapsed().as_secs_f64());
                    if done == Commit::Applied {
                        self.shared.hub.apply(std::mem::take(&mut call.hub_ops));
                    }
                    return Ok(done);
                }
            }
        }
    }

    /// Runs `event`'s rebuild handler with `writes`, the buffer of a batch of replayed events
    /// (rebuild.rs commits it). On failure the buffer is gone: it may hold half an event.
    pub async fn rebuild_into(&self, event: &Event, ns: &str, partition: u32, writes: state::Writes) -> Result<state::Writes, Failure> {
        let mut call = Call::new(Mode::Rebuild, ns);
        call.writes = writes;
        call.handled = Some(Handled { id: event.id.clone(), correlation: event.correlation.clone() });
        let mut call = self.run_handler(event, &Target::Rebuild { ns: ns.to_string(), partition }, call).await?;
        lua::note_version_of(&mut call, &event.key, event.version);
        Ok(call.writes)
    }

    async fn run_handler(&self, event: &Event, target: &Target, call: Call) -> Result<Call, Failure> {
        let mut lease = self.pool.get().await;
        let handler = match call.mode {
            Mode::Rebuild => lease
                .rebuild_handler(&event.event_type)
                .or_else(|| lease.listener(&event.event_type).filter(|(_, rebuild)| *rebuild).map(|(f, _)| f)),
            _ => lease.listener(&event.event_type).map(|(f, _)| f),
        };
        let Some(handler) = handler else {
            // A type registered only for rebuilds (or only live): nothing to run, but the
            // checkpoint and the known version still move.
            return Ok(call);
        };
        let args = handler_args(lease.lua(), event, target).map_err(|e| Failure::Script(format!("preparing the handler's arguments: {e}")))?;
        let (result, call) = lease.call::<()>(&handler, args, call).await;
        match result {
            Ok(()) => Ok(call),
            Err(e) => {
                if matches!(e, CallError::Resource(_)) {
                    lease.renew();
                }
                Err(e.into())
            }
        }
    }

    /// Appends the handler's sends and runs receipt listeners, round by round.
    async fn publish_sends(&self, mut call: Call, rerun: bool) -> Result<Published, Failure> {
        let gateway = self.shared.gateway.get().cloned().ok_or_else(|| Failure::Infra("not connected to NATS".into()))?;
        let mut rounds = 0;
        while !call.sends.is_empty() {
            rounds += 1;
            if rounds > MAX_SEND_ROUNDS {
                return Err(Failure::Script(format!(
                    "receipt listeners kept sending events for {MAX_SEND_ROUNDS} rounds; a listener that resends on every conflict loops"
                )));
            }
            let batch = std::mem::take(&mut call.sends);
            let reply = gateway.append(batch.clone()).await.map_err(|e| match e {
                crate::gateway::AppendError::Unavailable(m) => Failure::Infra(m),
                crate::gateway::AppendError::Refused(m) => Failure::Script(m),
            })?;
            let invalid: Vec<String> = reply
                .receipts
                .iter()
                .filter_map(|r| match r {
                    Receipt::Invalid { index, reason } => Some(format!("event {index} ({}): {reason}", batch.get(*index).map_or("?", |e| e.event_type.as_str()))),
                    _ => None,
                })
                .collect();
            if !invalid.is_empty() {
                return Err(Failure::Script(format!("the gateway refused sent events: {}", invalid.join("; "))));
            }
            if rerun && rounds == 1 {
                let conflicts: Vec<String> = batch
                    .iter()
                    .zip(&reply.receipts)
                    .filter_map(|(sent, r)| match r {
                        Receipt::Conflict { key, current_version, .. } => Some(format!("{} on {key} at version {current_version:?}", sent.event_type)),
                        _ => None,
                    })
                    .collect();
                if !conflicts.is_empty() {
                    return Ok(Published::Conflicted(conflicts.join(", ")));
                }
            }
            for (sent, receipt) in batch.iter().zip(&reply.receipts) {
                lua::note_receipt(&mut call, receipt);
                if let Receipt::Conflict { key, current_version, .. } = receipt {
                    metrics::counter!("sequent_send_conflicts_total").increment(1);
                    tracing::info!(event_type = sent.event_type, key, ?current_version, "a sent event conflicted");
                }
                let lease = self.pool.get().await;
                let Some(listener) = lease.receipt_listener(&sent.event_type) else {
                    if matches!(receipt, Receipt::Conflict { .. }) {
                        tracing::warn!(event_type = sent.event_type, key = sent.key, "a sent event conflicted and the script has no receipt listener for its type");
                    }
                    continue;
                };
                let lua = lease.lua();
                let status = match receipt {
                    Receipt::Stored { .. } => "ok",
                    Receipt::Conflict { .. } => "conflict",
                    Receipt::Aborted { .. } => "aborted",
                    Receipt::Invalid { .. } => "invalid",
                };
                let data: serde_json::Value = serde_json::from_str(sent.data.get()).unwrap_or_default();
                let args = (|| -> mlua::Result<_> {
                    Ok((
                        status,
                        sent.event_type.clone(),
                        sent.key.clone(),
                        sent.correlation.clone(),
                        lua::json_to_lua(lua, &data)?,
                        lua::receipt_table(lua, receipt)?,
                    ))
                })()
                .map_err(|e| Failure::Script(format!("preparing the receipt listener's arguments: {e}")))?;
                let (result, back) = lease.call::<()>(&listener, args, call).await;
                call = back;
                result.map_err(Failure::from)?;
            }
        }
        Ok(Published::Done(Box::new(call)))
    }

    /// Waits for NATS (used before anything that needs it); never gives up.
    pub async fn wait_connected(client: &async_nats::Client) {
        let started = std::time::Instant::now();
        let mut logged = false;
        while client.connection_state() != async_nats::connection::State::Connected {
            if !logged && started.elapsed() > Duration::from_secs(2) {
                tracing::warn!("waiting for the NATS connection (is nats-server running? are the credentials right?)");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The handler's arguments: `(event_type, key, correlation, data, meta)`.
pub fn handler_args(lua: &Lua, event: &Event, target: &Target) -> mlua::Result<(String, String, String, Value, Table)> {
    let data: serde_json::Value = serde_json::from_str(event.data.get()).map_err(mlua::Error::external)?;
    let meta = lua.create_table()?;
    meta.raw_set("id", event.id.as_str())?;
    meta.raw_set("seq", event.seq)?;
    meta.raw_set("version", event.version)?;
    meta.raw_set("time", event.time.as_str())?;
    meta.raw_set("correlation", event.correlation.as_str())?;
    meta.raw_set("causation", event.causation.as_deref())?;
    meta.raw_set("producer", event.producer.service.as_str())?;
    meta.raw_set("producer_instance", event.producer.instance.as_deref())?;
    match target {
        Target::Live { partition, attempt } => {
            meta.raw_set("partition", *partition)?;
            meta.raw_set("attempt", *attempt)?;
        }
        Target::Rebuild { partition, .. } => {
            meta.raw_set("partition", *partition)?;
            meta.raw_set("rebuild", true)?;
        }
        Target::Release { .. } => {
            meta.raw_set("released", true)?;
        }
    }
    Ok((event.event_type.clone(), event.key.clone(), event.correlation.clone(), lua::json_to_lua(lua, &data)?, meta))
}

/// Redis errors on commit: a refusal of the script's writes (wrong type, not an integer) is
/// the script's fault; anything else is the connection's.
pub fn redis_failure(e: redis::RedisError) -> Failure {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_unrecoverable_error() {
        Failure::Infra(format!("Redis: {e}"))
    } else {
        Failure::Script(format!("Redis refused the handler's writes: {e}"))
    }
}
