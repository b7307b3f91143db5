//! The path of events through the script, a batch at a time (DESIGN.md, "Delivery"):
//!
//! 1. The handlers run in stream order on one Lua state and one write overlay: each reads what
//!    the earlier ones wrote.
//! 2. Right after each handler, its sends are appended through the gateway as one atomic batch
//!    and their receipts waited for (receipt listeners run in the same context; their sends go
//!    out in a further round), so decisions stay sequential. Before a handler's sends leave,
//!    what the batch read from Redis is checked and locked until its commit (`state::store`):
//!    a send cannot be undone, so nothing it was decided on may change in between. Keys only
//!    read get shared locks; a later handler that writes one of them waits for the next batch.
//! 3. The batch's writes commit with the partition checkpoint in one Redis script, which
//!    refuses if the checkpoint is already at or past the batch (a redelivery, a stale owner),
//!    if a rebuild swapped the namespace, or if a key the batch read was written since; in the
//!    last case the batch runs again on fresh state. A live batch whose namespace was swapped
//!    goes back to its worker ([`Outcome::Moved`]): the new state may be behind what the worker
//!    applied (Redis lost it and it was rebuilt up to the acked events), and then what follows
//!    its checkpoint must be delivered again first, not skipped by this batch's commit.
//! 4. Only then does the worker ack, once for the batch.
//!
//! A handler that fails leaves no trace in the overlay (it is rolled back to before it): the
//! events before it commit and are acked, and the worker retries the failing one.
//!
//! Why publish before commit: a crash between 2 and 3 leaves Redis untouched, so the events are
//! redelivered and the handlers run again on the same state; they make the same decisions and
//! send the same derived ids, which the store absorbs as duplicates. Committing first would
//! lose the sends if the process died before publishing (the checkpoint would skip the event).

use crate::error::{redis_failure, Failure};
use crate::runtime::Service;
use crate::script::convert::{handler_args, receipt_status, receipt_table, Delivery};
use crate::script::{api, Call, CallError, Handled, Lease, Mode};
use crate::state::{self, Changes, Commit, Guard};
use crate::stream::AppendError;
use sequent_protocol::{subjects, Event, Receipt};
use std::collections::HashSet;

/// Most rounds of "append, then run receipt listeners that send again" for one event.
const MAX_SEND_ROUNDS: usize = 5;
/// Most immediate re-runs of a handler for one delivery (send conflicts, stale reads).
const MAX_RERUNS: u32 = 50;
/// Most runs of a whole batch whose commit found the state moved under it.
const MAX_BATCH_RUNS: u32 = 100;

/// Where a batch applies.
#[derive(Debug, Clone)]
pub enum Target {
    /// Live delivery from the partition's durable consumer, into the namespace its worker
    /// loaded the checkpoint from (`ns`).
    Live { partition: u32, ns: String },
    /// Re-processing a parked key's held event (the head of its held list).
    Release { key: String },
}

/// How a batch went.
#[derive(Debug)]
pub enum Outcome {
    /// The first `count` events are applied and committed with the checkpoint (and may be
    /// acked). If fewer than the batch, the next one failed with `failure`. `ran` counts the
    /// events whose handlers ran (their sends may be stored even if they were not committed).
    Applied { count: usize, ran: usize, failure: Option<Failure> },
    /// The checkpoint is already at or past the batch: another owner applied it.
    AlreadyApplied,
    /// Live only: a rebuild swapped another namespace in for the partition before the batch
    /// committed (nothing committed; the handlers of the first `ran` events ran). Its
    /// checkpoint may be behind what the worker applied (Redis lost the state): the worker
    /// looks before it goes on (`consume::worker`), instead of the batch moving on to it.
    Moved { ran: usize },
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Script(m) | CallError::Resource(m) => Failure::script(m),
            CallError::Infra(m) => Failure::infra(m),
        }
    }
}

/// How locking a call's reads went.
enum Locking {
    /// Checked and locked until the commit.
    Held,
    /// A key read was written since: run again on fresh state.
    Stale,
    /// Another call holds a lock on this key (asked not to wait).
    Busy(String),
}

/// How publishing a handler's sends went.
enum Published {
    Done,
    /// A send of a `rerun_on_conflict` listener conflicted: nothing was stored (batches are
    /// atomic); the handler must run again on fresh state.
    Conflicted(String),
}

impl Service {
    /// Applies `events` (stream order, none at or below the checkpoint) to the active state.
    /// Events of a key in `parked` are held behind it instead of running.
    pub async fn apply_batch(&self, target: &Target, events: &[(Event, Delivery)], parked: &HashSet<String>) -> Outcome {
        let Some(first) = events.first().map(|(e, _)| e.seq) else { return Outcome::Applied { count: 0, ran: 0, failure: None } };
        let started = std::time::Instant::now();
        let mut again = false;
        let mut runs = 0;
        let partition = match target {
            Target::Live { partition, .. } => *partition,
            Target::Release { key } => subjects::partition_of(key, self.partitions),
        };
        // After a commit found its namespace moved: where the partition's state is now.
        let mut moved_to: Option<String> = None;
        loop {
            runs += 1;
            let ns = match target {
                Target::Live { ns, .. } => ns.clone(),
                Target::Release { .. } => moved_to.take().unwrap_or_else(|| self.active_ns_of(partition)),
            };
            let mut call = self.call(Mode::Handler, &ns);
            let mut lease = self.pool.get().await;
            let (mut count, mut ran, mut failure) = (0, 0, None);
            for (event, delivery) in events {
                if let Target::Live { .. } = target {
                    if parked.contains(&event.key) {
                        tracing::info!(seq = event.seq, key = event.key, "key is parked: holding the event");
                        call.overlay.push_op(vec!["RPUSH".into(), state::held_key(&ns, &event.key), event.seq.to_string()]);
                        count += 1;
                        continue;
                    }
                }
                let delivery = Delivery { redelivered: delivery.redelivered || again, ..*delivery };
                ran += 1;
                let (result, back) = self.handle(&mut lease, call, event, delivery, count > 0).await;
                call = back;
                match result {
                    Ok(true) => {
                        api::note_version(&mut call, &event.key, event.version);
                        count += 1;
                    }
                    Ok(false) => {
                        // Left to the next batch (see `handle`): commit the ones before it.
                        ran -= 1;
                        break;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            drop(lease);
            // A rebuild swapped the state in while a handler ran: its failure may come from
            // reading vanished keys. Run the batch again on the new state.
            if failure.as_ref().is_some_and(Failure::is_script) && self.moved(&ns).await && runs < MAX_BATCH_RUNS {
                tracing::info!(from = ns, to = self.active_ns_of(partition), "a handler failed while a rebuild was swapped in; running the batch again");
                self.unlock(&call).await;
                if let Target::Live { .. } = target {
                    return Outcome::Moved { ran };
                }
                again = true;
                continue;
            }
            if count == 0 {
                self.unlock(&call).await;
                return Outcome::Applied { count, ran, failure };
            }
            // After a conflict, optimism failed once: lock what the batch read before
            // committing, so that of the batches contending for a key one always gets through.
            if again && !call.overlay.written().is_empty() {
                let wait = call.locked.is_empty();
                match self.lock_reads(&mut call, false, wait).await {
                    Ok(Locking::Held) => {}
                    Ok(Locking::Stale | Locking::Busy(_)) if runs < MAX_BATCH_RUNS => {
                        self.unlock(&call).await;
                        continue;
                    }
                    Ok(_) => {
                        self.unlock(&call).await;
                        return Outcome::Applied { count: 0, ran, failure: Some(Failure::infra("the batch kept reading keys written or locked meanwhile")) };
                    }
                    Err(e) => {
                        self.unlock(&call).await;
                        return Outcome::Applied { count: 0, ran, failure: Some(e) };
                    }
                }
            }
            let last = events[count - 1].0.seq;
            let guard = match target {
                Target::Live { partition, .. } => Guard::Checkpoint { partition: *partition, first, last },
                Target::Release { key } => {
                    call.overlay.push_op(vec!["LPOP".into(), state::held_key(&ns, key)]);
                    Guard::HeldHead { key: key.clone(), seq: first }
                }
            };
            let committed = self
                .store
                .commit_waiting(&Changes {
                    expected_active: Some(&ns),
                    ns: &ns,
                    guard,
                    overlay: &call.overlay,
                    owner: call.owner.as_deref(),
                    locked: &call.locked,
                })
                .await
                .map_err(redis_failure);
            match committed {
                Ok(Commit::Applied) => {
                    metrics::histogram!("sequent_batch_seconds").record(started.elapsed().as_secs_f64());
                    metrics::histogram!("sequent_batch_events").record(count as f64);
                    self.hub.apply(std::mem::take(&mut call.hub_ops));
                    return Outcome::Applied { count, ran, failure };
                }
                Ok(Commit::AlreadyApplied) => {
                    self.unlock(&call).await;
                    return Outcome::AlreadyApplied;
                }
                Ok(moved @ (Commit::NamespaceMoved | Commit::Stale(_) | Commit::Locked(_))) if runs < MAX_BATCH_RUNS => {
                    self.unlock(&call).await;
                    if let Commit::NamespaceMoved = moved {
                        moved_to = self.refresh_active_of(&ns).await.ok();
                        if let Target::Live { .. } = target {
                            return Outcome::Moved { ran };
                        }
                    }
                    metrics::counter!("sequent_batch_reruns_total").increment(1);
                    tracing::debug!(?moved, "the state moved under the batch; running it again");
                    again = true;
                }
                Ok(other) => {
                    self.unlock(&call).await;
                    return Outcome::Applied { count: 0, ran, failure: Some(Failure::infra(format!("the batch kept finding its state moved ({other:?})"))) };
                }
                Err(e) => {
                    self.unlock(&call).await;
                    return Outcome::Applied { count: 0, ran, failure: Some(e) };
                }
            }
        }
    }

    /// Whether the active namespace is no longer `ns` (a partition's, or the service's).
    async fn moved(&self, ns: &str) -> bool {
        matches!(self.refresh_active_of(ns).await, Ok(now) if now != ns)
    }

    /// Releases the locks a call took that will not commit.
    async fn unlock(&self, call: &Call) {
        if let Some(owner) = &call.owner {
            if let Err(e) = self.store.unlock(&call.ns, owner, &call.locked).await {
                tracing::warn!(error = %e, "could not release locks (they expire by themselves)");
            }
        }
    }

    /// Runs one event's handler on the batch's call and publishes its sends. Ok(false), only
    /// when `can_defer` (handlers ran before it): the handler is rolled back and left to the
    /// next batch, which runs after this one committed and released its locks, because
    /// - it wrote a key that an earlier handler of the batch read before its sends and holds a
    ///   shared lock on,
    /// - or a key it read before its sends is locked by another call.
    ///
    /// Otherwise two batches could each hold a lock the other waits for, and stall until the
    /// locks expire: a call waits for a lock only while it holds none.
    async fn handle(&self, lease: &mut Lease, mut call: Call, event: &Event, delivery: Delivery, can_defer: bool) -> (Result<bool, Failure>, Call) {
        let rerun_on_conflict = self.spec.reruns(&event.event_type);
        let mut reruns = 0u32;
        loop {
            let mark = call.overlay.mark();
            call.next_event(Handled { id: event.id.clone(), correlation: event.correlation.clone() });
            let (result, back) = self.run_handler(lease, event, delivery, call).await;
            call = back;
            if let Err(e) = result {
                call.overlay.rollback(mark);
                return (Err(e), call);
            }
            if can_defer && call.writes_shared_locked() {
                call.overlay.rollback(mark);
                return (Ok(false), call);
            }
            if call.sends.is_empty() {
                return (Ok(true), call);
            }
            // A receipt listener runs after the sends are stored and may write what was read.
            let any_write = call.sends.iter().any(|e| lease.receipt_listener(&e.event_type).is_some());
            // Only a call that holds no lock waits for one: two batches each holding a lock the
            // other waits for would stall until the locks expire.
            let wait = !can_defer && call.locked.is_empty();
            let again = match self.lock_reads(&mut call, any_write, wait).await {
                Ok(Locking::Held) => {
                    let (published, back) = self.publish_sends(lease, call, rerun_on_conflict).await;
                    call = back;
                    match published {
                        Ok(Published::Done) => return (Ok(true), call),
                        Ok(Published::Conflicted(what)) => what,
                        Err(e) => {
                            call.overlay.rollback(mark);
                            return (Err(e), call);
                        }
                    }
                }
                Ok(Locking::Stale) => "a key it read was written meanwhile".to_string(),
                // Handlers before it hold locks: they commit first and release them, and this
                // one runs in the next batch.
                Ok(Locking::Busy(_)) if can_defer => {
                    call.overlay.rollback(mark);
                    return (Ok(false), call);
                }
                // Its own locks come from earlier runs whose sends were refused (nothing of them
                // is stored): let them go, then wait without holding any.
                Ok(Locking::Busy(key)) => {
                    self.unlock(&call).await;
                    call.locked.clear();
                    format!("{key} was locked by another call")
                }
                Err(e) => {
                    call.overlay.rollback(mark);
                    return (Err(e), call);
                }
            };
            call.overlay.rollback(mark);
            reruns += 1;
            metrics::counter!("sequent_handler_reruns_total").increment(1);
            if reruns > MAX_RERUNS {
                return (Err(Failure::script(format!("the handler kept deciding on a state that moved ({again}) for {MAX_RERUNS} re-runs"))), call);
            }
            tracing::debug!(again, reruns, "running the handler again on fresh state");
            // Spread racing deciders apart a little.
            let jitter = rand::random::<u64>() % (2 + u64::from(reruns.min(10)) * 5);
            tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
        }
    }

    /// Checks what the call read from Redis and locks it until the commit (exclusively what it
    /// also wrote, or everything if `any_write`: see [`Call::lock_request`]). When another call
    /// holds one of the locks: with `wait`, waits for it (up to the lock's TTL, then fails);
    /// without, answers [`Locking::Busy`] at once.
    async fn lock_reads(&self, call: &mut Call, any_write: bool, wait: bool) -> Result<Locking, Failure> {
        let (reads, exclusive) = call.lock_request(any_write);
        if reads.is_empty() {
            return Ok(Locking::Held);
        }
        let owner = call.owner.get_or_insert_with(|| format!("{}/{}", self.instance, uuid::Uuid::now_v7().simple())).clone();
        let locked = match wait {
            true => self.store.lock_reads_waiting(&call.ns, &reads, &exclusive, &owner).await,
            false => self.store.lock_reads(&call.ns, &reads, &exclusive, &owner).await,
        };
        match locked.map_err(redis_failure)? {
            Commit::Applied => {
                call.note_locked(reads, &exclusive);
                Ok(Locking::Held)
            }
            Commit::Stale(_) => Ok(Locking::Stale),
            Commit::Locked(key) if !wait => Ok(Locking::Busy(key)),
            Commit::Locked(key) => Err(Failure::infra(format!("{key}, which the handler read, stayed locked by another call"))),
            _ => Err(Failure::infra("the active namespace moved (a rebuild was swapped in)")),
        }
    }

    /// Runs the handler of `event` for `call.mode` (live or rebuild) on `lease`.
    pub async fn run_handler(&self, lease: &mut Lease, event: &Event, delivery: Delivery, call: Call) -> (Result<(), Failure>, Call) {
        let handler = match call.mode {
            Mode::Rebuild => lease
                .rebuild_handler(&event.event_type)
                .or_else(|| lease.listener(&event.event_type).filter(|(_, rebuild)| *rebuild).map(|(f, _)| f)),
            _ => lease.listener(&event.event_type).map(|(f, _)| f),
        };
        let Some(handler) = handler else {
            // A type registered only for rebuilds (or only live): nothing to run, but the
            // checkpoint and the known version still move.
            return (Ok(()), call);
        };
        let args = match handler_args(lease.lua(), event, delivery) {
            Ok(a) => a,
            Err(e) => return (Err(Failure::script(format!("preparing the handler's arguments: {e}"))), call),
        };
        metrics::counter!("sequent_lua_calls_total", "kind" => "handler").increment(1);
        let (live, started) = (call.mode != Mode::Rebuild, std::time::Instant::now());
        let (result, call) = lease.call::<()>(&handler, args, call).await;
        if live {
            metrics::histogram!("sequent_handler_seconds", "service" => self.name.clone(), "type" => event.event_type.clone()).record(started.elapsed().as_secs_f64());
        }
        if let Err(CallError::Resource(_)) = &result {
            lease.renew();
        }
        (result.map_err(Failure::from), call)
    }

    /// A send the store already had (its id is derived from the handled event: a handler run
    /// again after a crash, a failure or a conflict): the event stored first stands. Said loudly
    /// when this run decided other data, which needs state that changed under a call after its
    /// sends left (superclient/README.md, "Serializable state") or a handler that is not a
    /// function of its reads (a clock, a random number). One direct get per duplicate.
    async fn say_if_decided_otherwise(&self, sent: &sequent_protocol::NewEvent, seq: u64) {
        let Ok(Some(stored)) = self.events.get(seq).await else { return };
        let parsed = |raw: &serde_json::value::RawValue| serde_json::from_str::<serde_json::Value>(raw.get()).ok();
        if parsed(&sent.data) == parsed(&stored.data) {
            return;
        }
        metrics::counter!("sequent_sends_decided_otherwise_total", "service" => self.name.clone()).increment(1);
        tracing::warn!(
            seq,
            id = stored.id,
            event_type = stored.event_type,
            key = stored.key,
            stored = stored.data.get(),
            this_run = sent.data.get(),
            "a handler run again sent other data under an id already stored: the stored event stands, and this run's state may not match it"
        );
    }

    /// Appends the handler's sends and runs receipt listeners, round by round.
    async fn publish_sends(&self, lease: &mut Lease, mut call: Call, rerun: bool) -> (Result<Published, Failure>, Call) {
        let Some(gateway) = self.shared.gateway.get().cloned() else { return (Err(Failure::infra("not connected to NATS")), call) };
        let mut rounds = 0;
        while !call.sends.is_empty() {
            rounds += 1;
            if rounds > MAX_SEND_ROUNDS {
                return (
                    Err(Failure::script(format!(
                        "receipt listeners kept sending events for {MAX_SEND_ROUNDS} rounds; a listener that resends on every conflict loops"
                    ))),
                    call,
                );
            }
            let batch = std::mem::take(&mut call.sends);
            let reply = match gateway.append(batch.clone()).await {
                Ok(r) => r,
                Err(AppendError::Unavailable(m)) => return (Err(Failure::infra(m)), call),
                Err(AppendError::Refused(m)) => return (Err(Failure::script(m)), call),
            };
            let invalid: Vec<String> = reply
                .receipts
                .iter()
                .filter_map(|r| match r {
                    Receipt::Invalid { index, reason } => Some(format!("event {index} ({}): {reason}", batch.get(*index).map_or("?", |e| e.event_type.as_str()))),
                    _ => None,
                })
                .collect();
            if !invalid.is_empty() {
                return (Err(Failure::script(format!("the gateway refused sent events: {}", invalid.join("; ")))), call);
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
                    return (Ok(Published::Conflicted(conflicts.join(", "))), call);
                }
            }
            for (sent, receipt) in batch.iter().zip(&reply.receipts) {
                api::note_receipt(&mut call, receipt);
                if let Receipt::Stored { duplicate: true, seq, .. } = receipt {
                    self.say_if_decided_otherwise(sent, *seq).await;
                }
                if let Receipt::Conflict { key, current_version, .. } = receipt {
                    metrics::counter!("sequent_send_conflicts_total").increment(1);
                    tracing::info!(event_type = sent.event_type, key, ?current_version, "a sent event conflicted");
                }
                let Some(listener) = lease.receipt_listener(&sent.event_type) else {
                    if matches!(receipt, Receipt::Conflict { .. }) {
                        tracing::warn!(event_type = sent.event_type, key = sent.key, "a sent event conflicted and the script has no receipt listener for its type");
                    }
                    continue;
                };
                let status = receipt_status(receipt, self.spec.original_statuses);
                let lua = lease.lua();
                let args = (|| -> mlua::Result<_> {
                    Ok((
                        status,
                        sent.event_type.clone(),
                        sent.key.clone(),
                        sent.correlation.clone(),
                        crate::script::convert::data_to_lua(lua, sent.data.get())?,
                        receipt_table(lua, receipt)?,
                    ))
                })();
                let args = match args {
                    Ok(a) => a,
                    Err(e) => return (Err(Failure::script(format!("preparing the receipt listener's arguments: {e}"))), call),
                };
                metrics::counter!("sequent_lua_calls_total", "kind" => "receipt").increment(1);
                let (result, back) = lease.call::<()>(&listener, args, call).await;
                call = back;
                if let Err(e) = result {
                    return (Err(e.into()), call);
                }
            }
        }
        (Ok(Published::Done), call)
    }
}
