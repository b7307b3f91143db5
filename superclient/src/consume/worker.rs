//! Live delivery: the partitions this instance owns, one worker each.
//!
//! A worker consumes its partition's durable consumer through the pinned-client priority group,
//! keeping the messages it received in hand, in stream order. It takes what is in hand (up to
//! `--batch` events, without waiting for more) and applies it as one batch
//! ([`Service::apply_batch`]: handlers in order on one overlay, each one's sends published right
//! after it, one commit with the checkpoint), then acks: the consumer acks all earlier
//! messages with the last (`AckAll`), so one ack may cover several batches ([`late_ack`]).
//! Events at or below the checkpoint (redeliveries) are skipped and acked; events of a parked
//! key are held behind it.
//!
//! A failing event in the middle of a batch: the events before it commit and are acked; the
//! failing one is retried in place with a doubling delay (the messages behind it wait in hand,
//! kept alive with progress signals) and parked after `--max-attempts`; infrastructure failures
//! are retried forever without counting.
//!
//! Order across owners: a worker takes deliveries only in the consumer's order (consecutive
//! consumer sequences, the first one right after the ack floor when its pull stream starts).
//! With several events in flight, a pin that moved while another instance still held
//! deliveries (it is stopping, frozen, or its pin lapsed) would let newer events arrive first:
//! the new holder sees the gap, and unless the ack floor shows the deliveries in between were
//! acked meanwhile, it resets the consumer to the event after its checkpoint and takes
//! everything again, in order ([`resync`]). The checkpoint makes the repeats harmless.
//!
//! Losing a partition (another instance joined): finish the batch being applied, stop pulling,
//! then unpin the consumer so the new owner is pinned at once. What else was delivered to the
//! old owner stays delivered to it until `--ack-wait` (it does not NAK them: a frozen owner
//! could not, and a NAK takes effect on the server's own time): the new owner, idle once the
//! old one has unpinned, finds deliveries still waiting for an ack and resets the consumer to
//! the event after the checkpoint ([`stranded`]), rather than wait `--ack-wait` for them.
//! Taking over from an instance that vanished: unpin (its pin would otherwise last
//! `--pin-timeout`) and reset the consumer to its ack floor so the events it held are
//! redelivered now rather than after `--ack-wait`.
//!
//! Redis lost the state: it is rebuilt from the stream up to each consumer's ack floor, while
//! workers wait. A worker that finds its checkpoint moved back (it committed events to the lost
//! state whose ack was late or in flight) drops the ack that waits and resets its consumer to
//! the event after the checkpoint, so those events are delivered again and applied to the new
//! state. A worker that starts on a partition whose consumer acked past the checkpoint does the
//! same.
//!
//! `meta.redelivered` is true for an event that may have been handled before (its sends
//! stored): delivered more than once, delivered to this partition's consumer before this
//! worker took the partition, or run here by a batch that did not commit.

use super::apply::{Outcome, Target};
use super::late_ack::LateAck;
use super::parking;
use super::provision;
use super::partition::{PartitionState, ReleaseRoutes};
use crate::cluster::membership::owner;
use crate::runtime::Service;
use crate::script::convert::Delivery;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{AckKind, Message};
use futures::{FutureExt, StreamExt};
use sequent_protocol::subjects::{self, PIN_GROUP};
use sequent_protocol::Event;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

struct Worker {
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}


/// Follows membership changes and starts/stops partition workers until `shutdown` fires;
/// then stops all workers (each finishes its batch and unpins) and returns.
pub async fn run(svc: Arc<Service>, mut live_rx: watch::Receiver<Vec<String>>, mut shutdown: watch::Receiver<bool>) {
    let mut workers: HashMap<u32, Worker> = HashMap::new();
    // Workers told to stop that may still be finishing their batch, by partition.
    let mut stopping: HashMap<u32, tokio::task::JoinHandle<()>> = HashMap::new();
    let routes: ReleaseRoutes = Default::default();
    tokio::spawn(parking::dispatch_releases(svc.clone(), routes.clone()));
    // Exported at 0 from the start, so that an alert on any increase has a series to watch.
    metrics::counter!("sequent_sends_decided_otherwise_total", "service" => svc.name.clone()).increment(0);
    let mut previous: Vec<String> = Vec::new();
    loop {
        let live = live_rx.borrow_and_update().clone();
        let owned: HashSet<u32> = (0..svc.partitions).filter(|p| owner(*p, &live) == Some(&svc.instance)).collect();
        stopping.retain(|_, done| !done.is_finished());
        for p in &owned {
            if workers.contains_key(p) {
                continue;
            }
            // The previous owner vanished (rather than handing over): take over actively.
            let takeover = owner(*p, &previous).is_some_and(|prev| *prev != svc.instance && !live.contains(prev));
            let (stop_tx, stop_rx) = watch::channel(false);
            let (rel_tx, rel_rx) = mpsc::channel(64);
            routes.lock().insert(*p, rel_tx);
            let span = tracing::info_span!("partition", p = *p);
            // A partition lost and owned again at once (membership flapped, e.g. when the
            // members bucket was lost with a nats-server restart): the worker told to stop may
            // still be finishing its batch. The new one starts after it has acked and unpinned,
            // never beside it: two workers of one partition would interleave their commits.
            let previous_worker = stopping.remove(p);
            let (svc2, p2) = (svc.clone(), *p);
            let done = tokio::spawn(
                async move {
                    if let Some(previous_worker) = previous_worker {
                        tracing::info!(partition = p2, "waiting for this partition's previous worker to finish");
                        let _ = previous_worker.await;
                        if *stop_rx.borrow() {
                            return; // lost again meanwhile: nothing was taken, nothing to hand over
                        }
                    }
                    worker(svc2, p2, stop_rx, takeover, rel_rx).await
                }
                .instrument(span),
            );
            workers.insert(*p, Worker { stop: stop_tx, done });
        }
        let lost: Vec<u32> = workers.keys().filter(|p| !owned.contains(p)).copied().collect();
        for p in lost {
            let w = workers.remove(&p).expect("listed");
            routes.lock().remove(&p);
            let _ = w.stop.send(true);
            stopping.insert(p, w.done);
        }
        metrics::gauge!("sequent_partitions_owned", "service" => svc.name.clone()).set(workers.len() as f64);
        let mut mine: Vec<u32> = workers.keys().copied().collect();
        mine.sort();
        tracing::info!(partitions = ?mine, "owned partitions");
        *svc.owned.write() = mine;
        *svc.live.write() = live.clone();
        previous = live;
        tokio::select! {
            r = live_rx.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    // Stopping: every worker finishes the batch in hand (handlers, sends, commit, ack) and
    // unpins, all at once, within --shutdown-timeout.
    let n = workers.len();
    for w in workers.values() {
        let _ = w.stop.send(true);
    }
    let bound = svc.opts.http.shutdown_timeout;
    let all = futures::future::join_all(workers.into_values().map(|w| w.done).chain(stopping.into_values()));
    match tokio::time::timeout(bound, all).await {
        Ok(_) => tracing::info!(partitions = n, "every partition worker finished its batch and released its partition"),
        Err(_) => tracing::warn!(partitions = n, "partition workers still busy after --shutdown-timeout {bound:?}: their unacked events are redelivered to the next owner"),
    }
    *svc.owned.write() = Vec::new();
    metrics::gauge!("sequent_partitions_owned", "service" => svc.name.clone()).set(0.0);
}

/// The messages a worker received and has not acked yet, in delivery order.
struct Hand {
    messages: VecDeque<Message>,
    /// Failed attempts made here per stream sequence (a crash restarts the count at the
    /// delivery count).
    attempts: HashMap<u64, i64>,
    /// Events at or below this were delivered before this worker took the partition.
    delivered_before: u64,
    /// Events whose handlers ran in a batch that did not commit: their sends may be stored.
    ran: HashSet<u64>,
    highest: u64,
    /// The consumer sequence the next delivery must have: deliveries are taken only in the
    /// consumer's order, so that none is handled while an earlier one is still out elsewhere
    /// (a pin that lapsed while another instance held deliveries).
    next_delivery: u64,
    /// After a reset: deliveries made before it are still arriving; drop them until the one
    /// expected comes.
    resyncing: bool,
    /// Deliveries received after one that skipped ahead of `next_delivery`, held back until
    /// [`resync`] decides.
    stash: Vec<Message>,
    /// Committed deliveries whose ack waits, to cover several batches with one.
    late: LateAck<Message>,
}

impl Hand {
    fn seq(msg: &Message) -> u64 {
        msg.info().map(|i| i.stream_sequence).unwrap_or(0)
    }

    /// Starts over with a new pull stream: the next delivery continues from the ack floor.
    fn start(&mut self, ack_floor_delivery: u64) {
        self.messages.clear();
        self.stash.clear();
        self.delivered_before = self.delivered_before.max(self.highest);
        self.highest = 0;
        self.next_delivery = ack_floor_delivery + 1;
        self.resyncing = false;
    }

    /// Takes a delivered message in consumer order. A delivery that skips ahead, or one numbered
    /// behind (the consumer's numbering started over), is held back (see `resync`); an event in
    /// hand already (JetStream redelivers what waited in hand longer than the ack wait, with a
    /// new number) is dropped: it would apply twice.
    fn push(&mut self, msg: Message) {
        let Ok(info) = msg.info() else {
            tracing::error!(subject = %msg.subject, "a delivered message has no JetStream metadata; dropped");
            return;
        };
        let (seq, delivery) = (info.stream_sequence, info.consumer_sequence);
        if !self.stash.is_empty() {
            self.stash.push(msg);
            return;
        }
        if self.resyncing {
            if delivery != self.next_delivery {
                return;
            }
            self.resyncing = false;
        }
        if delivery < self.next_delivery {
            // Behind: the consumer's numbering started over (it was reset by someone else, or
            // made again after a nats-server restart lost it). Not a redelivery of what is in
            // hand (those come with new, higher numbers): dropping it would leave it unacked,
            // delivered again and dropped for ever. `resync` decides.
            self.stash.push(msg);
            return;
        }
        if seq <= self.highest {
            metrics::counter!("sequent_redeliveries_dropped_total").increment(1);
            return;
        }
        if delivery != self.next_delivery {
            // Ahead: deliveries in between are out elsewhere. Behind: the consumer was reset
            // (its numbering starts over). Either way `resync` decides, with the ack floor.
            self.stash.push(msg);
            return;
        }
        self.next_delivery = delivery + 1;
        self.highest = seq;
        self.messages.push_back(msg);
    }

    /// Takes what the pull stream has ready now, without waiting.
    fn fill(&mut self, messages: &mut pull::Stream, up_to: usize) -> Result<(), String> {
        while self.messages.len() < up_to {
            match messages.next().now_or_never() {
                Some(Some(Ok(msg))) => self.push(msg),
                Some(Some(Err(e))) => return Err(e.to_string()),
                Some(None) | None => break,
            }
        }
        Ok(())
    }

    fn delivery(&self, msg: &Message, partition: u32) -> Delivery {
        let (seq, delivered) = msg.info().map(|i| (i.stream_sequence, i.delivered)).unwrap_or((0, 1));
        let attempt = delivered.max(self.attempts.get(&seq).map_or(1, |a| a + 1));
        Delivery {
            partition: Some(partition),
            attempt: Some(attempt),
            redelivered: delivered > 1 || seq <= self.delivered_before || self.ran.contains(&seq),
            ..Default::default()
        }
    }

    /// Acks the first `n` messages (one ack: the consumer acks all earlier ones with it).
    async fn ack_front(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let msgs: Vec<Message> = self.messages.drain(..n).collect();
        for m in &msgs {
            let seq = Self::seq(m);
            self.attempts.remove(&seq);
            self.ran.remove(&seq);
        }
        if let Some(last) = msgs.into_iter().last() {
            let now = tokio::time::Instant::now();
            if self.late.hold(last, n, now) || self.late.due().is_some_and(|due| due <= now) {
                self.flush_ack().await;
            }
        }
    }

    /// Sends the ack that waits, if any: before the consumer's state is read or handed on.
    async fn flush_ack(&mut self) {
        if let Some(last) = self.late.take() {
            if let Err(e) = last.ack().await {
                tracing::warn!(error = %e, "ack failed; the redeliveries will be skipped by the checkpoint");
            }
        }
    }

    /// Tells JetStream every message in hand is still being worked on.
    async fn keep_alive(&self) {
        for m in &self.messages {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

/// While alive, `partition` is in `svc.waiting` (the worker waits on its pull, hand empty).
struct Waiting<'a>(&'a Service, u32);

impl<'a> Waiting<'a> {
    fn mark(svc: &'a Service, partition: u32) -> Self {
        svc.waiting.write().insert(partition);
        Waiting(svc, partition)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.write().remove(&self.1);
    }
}

/// How working on the hand ended.
enum Worked {
    /// The hand is empty.
    Empty,
    /// A stop was asked while waiting to retry.
    Stopped,
    /// The pull stream failed while waiting to retry.
    StreamFailed(String),
    /// The checkpoint moved back: what follows it must be delivered again.
    Rewound,
}

async fn worker(svc: Arc<Service>, partition: u32, mut stop: watch::Receiver<bool>, mut takeover: bool, mut releases: mpsc::Receiver<String>) {
    let name = subjects::consumer_name(&svc.name, partition);
    tracing::info!(partition, takeover, "taking partition");
    let mut state = PartitionState::load(&svc, partition).await;
    let mut hand = Hand {
        messages: VecDeque::new(),
        attempts: HashMap::new(),
        delivered_before: delivered_so_far(&svc, &name).await,
        ran: HashSet::new(),
        highest: 0,
        next_delivery: 1,
        resyncing: false,
        stash: Vec::new(),
        // Acked at half the consumer's max_ack_pending (twice the batch, see app.rs) at most.
        late: LateAck::new(svc.opts.batch.max(1), svc.opts.ack_linger),
    };
    let batch = svc.opts.batch.max(1);
    let mut active_changes = svc.active_changes();
    // The checkpoint moved back (see the module doc): deliver again what follows it.
    let mut rewound = false;
    let expires = (svc.opts.pin_timeout / 2).min(Duration::from_secs(30)).max(Duration::from_millis(500));
    // Taken over from a previous owner: when to look for deliveries it left unhandled, and
    // until when (see `stranded`).
    let mut stranded_check = Some(tokio::time::Instant::now() + STRANDED_POLL);
    let stranded_until = tokio::time::Instant::now() + svc.opts.pin_timeout * 2 + Duration::from_secs(1);
    let mut left_by_previous = false;
    'outer: loop {
        if *stop.borrow() {
            break;
        }
        rewound |= state.refresh_if_moved(&svc).await;
        if rewound {
            // Its events' effects are gone with the lost state: they are delivered again.
            hand.late.take();
        }
        hand.flush_ack().await;
        // (The error, and whether the consumer does not exist.)
        let consumer = match svc.events_stream().await {
            Ok(stream) => stream.get_consumer::<pull::Config>(&name).await.map_err(|e| (e.to_string(), sequent_net::consumers::missing(e.as_ref()))),
            Err(e) => Err((e.to_string(), false)),
        };
        let consumer = match consumer {
            Ok(c) => c,
            Err((e, missing)) => {
                tracing::warn!(partition, consumer = name, error = e, "consumer not available; retrying");
                if missing {
                    tokio::select! { _ = provision::again(&svc) => {}, _ = stop.changed() => break }
                }
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.changed() => break }
            }
        };
        // Fresh: getting the consumer read its info.
        let info = consumer.cached_info().clone();
        // Made again after a nats-server restart lost it (kept in memory): what the stream held
        // then may have been handled already.
        let made_again = info.config.metadata.get(subjects::MADE_AGAIN_BELOW).and_then(|v| v.parse::<u64>().ok());
        if let Some(end) = made_again {
            hand.delivered_before = hand.delivered_before.max(end);
        }
        // Behind the checkpoint: the consumer was made again (a nats-server that kept it in
        // memory restarted) and would deliver from the stream's start.
        let reborn = info.delivered.stream_sequence < state.applied;
        let left = std::mem::take(&mut left_by_previous);
        if left {
            // Where the previous owner left the partition.
            state = PartitionState::load(&svc, partition).await;
        }
        let info = if left || rewound || reborn || info.ack_floor.stream_sequence > state.applied {
            let why = if left {
                Rewind::LeftInHand
            } else if made_again.is_none() && info.delivered.stream_sequence == 0 && info.ack_floor.stream_sequence == 0 {
                Rewind::NewConsumer
            } else {
                Rewind::OffCheckpoint
            };
            match deliver_again_after_checkpoint(&svc, &name, &state, &mut hand, info, reborn, why).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(partition, consumer = name, error = %e, "could not move the consumer to the checkpoint; retrying");
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.changed() => break }
                }
            }
        } else {
            info
        };
        rewound = false;
        hand.start(info.ack_floor.consumer_sequence);
        let messages = consumer
            .stream()
            .group(PIN_GROUP)
            .max_messages_per_batch(batch)
            .expires(expires)
            // The largest the server takes (twice it must not exceed the expiry): one idle
            // heartbeat per pull instead of two; a lost pull is still seen within the expiry.
            .heartbeat(expires / 2)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition, error = %e, "could not start pulling; retrying");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.changed() => break }
            }
        };
        if std::mem::take(&mut takeover) {
            take_over(&svc, &name).await;
        }
        loop {
            let failed = match work(&svc, &mut state, &mut hand, &mut messages, &stop).await {
                Worked::Empty => None,
                Worked::Stopped => break 'outer,
                Worked::StreamFailed(e) => Some(e),
                Worked::Rewound => {
                    rewound = true;
                    continue 'outer;
                }
            };
            let ack_due = hand.late.due();
            let failed = match failed {
                Some(e) => Some(e),
                None => {
                    let _idle = Waiting::mark(&svc, partition);
                    tokio::select! {
                        biased;
                        _ = stop.changed() => break 'outer,
                        Some(key) = releases.recv() => {
                            rewound |= state.refresh_if_moved(&svc).await;
                            parking::release(&svc, &mut state, &key).await;
                            if rewound {
                                continue 'outer;
                            }
                            None
                        }
                        // A rebuild swapped the state (an idle worker would not look otherwise).
                        Ok(()) = active_changes.changed() => {
                            if state.refresh_if_moved(&svc).await {
                                rewound = true;
                                continue 'outer;
                            }
                            None
                        }
                        m = messages.next() => match m {
                            Some(Ok(msg)) => {
                                hand.push(msg);
                                hand.fill(&mut messages, batch).err()
                            }
                            Some(Err(e)) => Some(e.to_string()),
                            None => continue 'outer,
                        },
                        _ = tokio::time::sleep_until(ack_due.unwrap_or_else(tokio::time::Instant::now)), if ack_due.is_some() => {
                            hand.flush_ack().await;
                            None
                        }
                        _ = tokio::time::sleep_until(stranded_check.unwrap_or_else(tokio::time::Instant::now)), if stranded_check.is_some() => {
                            match stranded(&svc, &name).await {
                                Stranded::Yes => {
                                    // Reset once this pull stream is gone: a pull still waiting
                                    // would take the deliveries, and be dropped with them.
                                    stranded_check = None;
                                    left_by_previous = true;
                                    continue 'outer;
                                }
                                Stranded::No => stranded_check = None,
                                Stranded::NotYet => {
                                    let next = tokio::time::Instant::now() + STRANDED_POLL;
                                    stranded_check = (next < stranded_until).then_some(next);
                                }
                            }
                            None
                        }
                    }
                }
            };
            if let Some(e) = failed {
                tracing::debug!(partition, error = e, "pull stream error; restarting it");
                tokio::select! { _ = tokio::time::sleep(Duration::from_millis(300)) => {}, _ = stop.changed() => break 'outer }
                // The new pull stream has no pin id: the server would hold its pulls until the
                // old stream's pin expires (--pin-timeout), stalling the partition. We own the
                // partition: release our old pin. What was in hand is delivered again: the new
                // stream finds the gap and resets the consumer (see `resync`).
                hand.start(0);
                if let Ok(stream) = svc.events_stream().await {
                    let _ = stream.unpin_consumer(&name, PIN_GROUP).await;
                }
                continue 'outer;
            }
        }
    }
    // Hand over: release the pin so the next owner starts now. What this worker received and did
    // not ack is delivered again to it: it finds the gap and resets the consumer (see `resync`).
    hand.flush_ack().await;
    if let Ok(stream) = svc.events_stream().await {
        if let Err(e) = stream.unpin_consumer(&name, PIN_GROUP).await {
            tracing::debug!(partition, error = %e, "unpin failed (the pin may have moved already)");
        }
    }
    tracing::info!(partition, "released partition");
}

/// How often a worker that took a partition over looks for deliveries its previous owner left.
const STRANDED_POLL: Duration = Duration::from_millis(250);

enum Stranded {
    /// Deliveries wait for an ack, and nobody is pinned: the previous owner released the
    /// partition without handling them.
    Yes,
    /// Nothing waits for an ack.
    No,
    /// Deliveries wait for an ack while a client is pinned: the previous owner may still be
    /// finishing its batch (or they are on their way here).
    NotYet,
}

/// A worker told to stop finishes the batch it is applying and releases the partition; what
/// else it had received stays delivered to it, so those would go out again only after
/// `--ack-wait` (or when a newer event shows the gap here). The worker that takes the partition
/// looks, while idle, until the previous owner has unpinned: deliveries still waiting for an
/// ack then are stranded, and the consumer is reset to the event after the checkpoint.
async fn stranded(svc: &Service, name: &str) -> Stranded {
    let Ok(stream) = svc.events_stream().await else { return Stranded::NotYet };
    let Ok(info) = stream.consumer_info(name).await else { return Stranded::NotYet };
    let pinned = info.priority_groups.iter().any(|g| g.pinned_client_id.is_some());
    match (info.num_ack_pending, pinned) {
        (0, _) => Stranded::No,
        (_, true) => Stranded::NotYet,
        _ => Stranded::Yes,
    }
}

/// The last stream sequence the consumer had delivered (to anyone) before this worker started.
async fn delivered_so_far(svc: &Service, name: &str) -> u64 {
    let Ok(stream) = svc.events_stream().await else { return u64::MAX };
    match stream.consumer_info(name).await {
        Ok(info) => info.delivered.stream_sequence,
        // Unknown: every event may have been handled before.
        Err(_) => u64::MAX,
    }
}

/// Why a worker moves its consumer to the event after its checkpoint.
#[derive(Clone, Copy)]
enum Rewind {
    /// The previous owner released the partition with deliveries it had not handled: routine
    /// when partitions move.
    LeftInHand,
    /// The consumer never delivered anything, and the service's first rebuild already applied
    /// the stream up to the checkpoint: routine for a new service.
    NewConsumer,
    /// The state was rebuilt behind the consumer, or the consumer was made again: worth an
    /// operator's look.
    OffCheckpoint,
}

impl Rewind {
    fn why(self) -> &'static str {
        match self {
            Rewind::LeftInHand => "the previous owner released the partition with deliveries it did not handle",
            Rewind::NewConsumer => "a new consumer starts after what the first rebuild applied",
            Rewind::OffCheckpoint => "the consumer is not where the checkpoint is (the state was rebuilt behind it, or the consumer was made again)",
        }
    }
}

/// Resets the consumer so that delivery starts again right after the checkpoint:
/// - the checkpoint moved back (the state was rebuilt from the stream after Redis lost it), or
///   the consumer acked past it (an ack that was late or in flight when Redis lost the state,
///   arriving after the rebuild read the ack floor): every event the consumer delivered after
///   the checkpoint may have been handled, its sends stored;
/// - or the consumer is `reborn` (made again, it knows nothing of earlier deliveries): every
///   event in the stream now may have been handled.
///
/// Those count as redelivered. Returns the consumer's info after the reset.
async fn deliver_again_after_checkpoint(
    svc: &Service,
    name: &str,
    state: &PartitionState,
    hand: &mut Hand,
    before: async_nats::jetstream::consumer::Info,
    reborn: bool,
    why: Rewind,
) -> Result<async_nats::jetstream::consumer::Info, String> {
    hand.delivered_before = hand.delivered_before.max(before.delivered.stream_sequence).max(hand.highest);
    if reborn {
        let end = match svc.js.get_stream(&svc.stream_name).await {
            Ok(stream) => stream.cached_info().state.last_sequence,
            Err(_) => u64::MAX,
        };
        hand.delivered_before = hand.delivered_before.max(end);
    }
    let from = state.applied + 1;
    let (checkpoint, ack_floor, delivered) = (state.applied, before.ack_floor.stream_sequence, before.delivered.stream_sequence);
    let (partition, why_text) = (state.partition, why.why());
    match why {
        Rewind::OffCheckpoint => {
            tracing::warn!(partition, consumer = name, checkpoint, ack_floor, delivered, reborn, "{why_text}: delivering again from {from}")
        }
        Rewind::LeftInHand | Rewind::NewConsumer => {
            tracing::info!(partition, consumer = name, checkpoint, ack_floor, delivered, reborn, "{why_text}: delivering from {from}")
        }
    }
    metrics::counter!("sequent_partition_rewinds_total", "service" => svc.name.clone()).increment(1);
    let stream = svc.events_stream().await.map_err(|e| e.to_string())?;
    reset_to(&stream, name, from).await?;
    stream.consumer_info(name).await.map_err(|e| e.to_string())
}

/// Resets consumer `name` to deliver from stream sequence `from` on. A consumer made to start
/// later (migrated from `AckExplicit`, see bus-gateway's provision.rs) refuses a sequence
/// before its start: then it is reset to its ack floor, the best it allows.
async fn reset_to(stream: &async_nats::jetstream::stream::Stream<()>, name: &str, from: u64) -> Result<(), String> {
    use async_nats::jetstream::stream::ConsumerResetErrorKind;
    match stream.reset_consumer(name, Some(from)).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() != ConsumerResetErrorKind::InvalidReset => Err(format!("resetting the consumer to {from}: {e}")),
        Err(e) => {
            tracing::warn!(consumer = name, from, error = %e, "the consumer refused to go back to the checkpoint; resetting it to its ack floor");
            stream.reset_consumer(name, None).await.map(|_| ()).map_err(|e| format!("resetting the consumer: {e}"))
        }
    }
}

/// Applies what is in hand, batch by batch, until it is empty.
async fn work(svc: &Service, state: &mut PartitionState, hand: &mut Hand, messages: &mut pull::Stream, stop: &watch::Receiver<bool>) -> Worked {
    let batch_size = svc.opts.batch.max(1);
    let mut delay = Duration::from_millis(100);
    while !hand.messages.is_empty() || !hand.stash.is_empty() {
        // The partition moved on: what is in hand and not acked goes to the next owner (it finds
        // the gap and has it delivered again). A stopping worker must not move the consumer.
        if *stop.borrow() {
            return Worked::Stopped;
        }
        if hand.messages.is_empty() {
            // Resync compares with the ack floor: what we committed must be acked first.
            hand.flush_ack().await;
            resync(svc, hand, state).await;
            continue;
        }
        if state.refresh_if_moved(svc).await {
            return Worked::Rewound;
        }
        // Redeliveries of what is applied already: ack them.
        let skip = hand.messages.iter().take_while(|m| Hand::seq(m) <= state.applied).count();
        if skip > 0 {
            metrics::counter!("sequent_events_total", "service" => svc.name.clone(), "outcome" => "skipped").increment(skip as u64);
            hand.ack_front(skip).await;
            continue;
        }
        // A message that is not an event (or no JetStream message at all) ends its batch; at the
        // front it is acked and dropped, since nothing can ever handle it.
        let mut events: Vec<(Event, Delivery)> = Vec::new();
        for m in hand.messages.iter().take(batch_size) {
            match m.info().map_err(|e| e.to_string()).and_then(|i| Event::from_stored(&m.payload, i.stream_sequence).map_err(|e| e.to_string())) {
                Ok(event) => events.push((event, hand.delivery(m, state.partition))),
                Err(e) if events.is_empty() => {
                    tracing::error!(subject = %m.subject, error = e, "unreadable event in the stream; acking it without handling it");
                    break;
                }
                Err(_) => break,
            }
        }
        if events.is_empty() {
            hand.ack_front(1).await;
            continue;
        }
        let target = Target::Live { partition: state.partition, ns: state.ns.clone() };
        let (outcome, stream_failed) = keep_alive(svc, hand, messages, svc.apply_batch(&target, &events, &state.parked)).await;
        let moved = matches!(outcome, Outcome::Moved { .. });
        let (count, ran, failure) = match outcome {
            Outcome::AlreadyApplied => {
                // Another owner was faster: reload the checkpoint; the skip above acks. (Unless
                // a rebuild moved the partition behind what this worker applied.)
                if state.refresh_if_moved(svc).await {
                    return Worked::Rewound;
                }
                *state = PartitionState::load(svc, state.partition).await;
                (0, 0, None)
            }
            Outcome::Applied { count, ran, failure } => (count, ran, failure),
            Outcome::Moved { ran } => (0, ran, None),
        };
        for (event, _) in &events[count..ran.max(count)] {
            hand.ran.insert(event.seq);
        }
        // A rebuild swapped the partition's state: behind what this worker applied, deliver
        // again from the new checkpoint; else go on in the new state.
        if moved && state.refresh_if_moved(svc).await {
            return Worked::Rewound;
        }
        if count > 0 {
            let held = events[..count].iter().filter(|(e, _)| state.parked.contains(&e.key)).count() as u64;
            metrics::counter!("sequent_events_total", "service" => svc.name.clone(), "outcome" => "applied").increment(count as u64 - held);
            metrics::counter!("sequent_events_total", "service" => svc.name.clone(), "outcome" => "held").increment(held);
            state.applied = events[count - 1].0.seq;
            hand.ack_front(count).await;
            delay = Duration::from_millis(100);
        }
        if let Some(e) = stream_failed {
            return Worked::StreamFailed(e);
        }
        let Some(failure) = failure else { continue };
        // The front event failed.
        let (event, delivery) = &events[count];
        let attempt = delivery.attempt.unwrap_or(1);
        let wait = if failure.is_script() {
            metrics::counter!("sequent_events_total", "service" => svc.name.clone(), "outcome" => "failed").increment(1);
            if attempt >= svc.opts.max_attempts {
                tracing::error!(seq = event.seq, id = event.id, key = event.key, attempt, error = %failure, "handler failed {attempt} times: parking the key");
                match parking::park(svc, state, event, &failure.to_string(), attempt).await {
                    Ok(()) => {
                        metrics::counter!("sequent_events_total", "service" => svc.name.clone(), "outcome" => "parked").increment(1);
                        state.applied = event.seq;
                        hand.ack_front(1).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "parking failed; retrying");
                        delay
                    }
                }
            } else {
                hand.attempts.insert(event.seq, attempt);
                let backoff = svc.opts.retry_delay.saturating_mul(1 << (attempt.clamp(1, 16) - 1)).min(Duration::from_secs(10));
                tracing::warn!(seq = event.seq, id = event.id, key = event.key, attempt, error = %failure, "handler failed; retrying in {backoff:?}");
                backoff
            }
        } else {
            tracing::warn!(seq = event.seq, error = %failure, "infrastructure failure; retrying in {delay:?}");
            // Perhaps the state moved (a rebuild) or is being rebuilt after Redis lost it: the
            // next try reads the active namespace, not the cached one.
            let _ = svc.refresh_active().await;
            let d = delay;
            delay = (delay * 2).min(Duration::from_secs(5));
            d
        };
        if let Some(worked) = pause(svc, hand, messages, stop, wait).await {
            return worked;
        }
    }
    Worked::Empty
}

/// A delivery out of the consumer's order arrived (the messages before it in hand are done).
/// If the consumer's ack floor is right behind it, the deliveries before it were acked by
/// whoever held them, or the consumer was reset and numbers its deliveries from the floor
/// again: the held-back messages are taken. Otherwise another instance still holds deliveries
/// before them (its pin lapsed, or it is stopping): the consumer is reset (this worker is
/// pinned: it received them) so that everything after the checkpoint (read again) is delivered
/// again, in order, here. Not to the ack floor: an ack numbered before an earlier reset (an old
/// owner's, arriving late) can lift the floor above events never applied, which a reset to the
/// floor would skip for good; the checkpoint is the truth, the events up to it are skipped.
async fn resync(svc: &Service, hand: &mut Hand, state: &mut PartitionState) {
    let stash = std::mem::take(&mut hand.stash);
    let Some(first) = stash.first().and_then(|m| m.info().ok().map(|i| i.consumer_sequence)) else { return };
    let name = stash[0].info().map(|i| i.consumer.to_string()).unwrap_or_default();
    let stream = match svc.events_stream().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "resync: the stream is not available; trying again");
            hand.stash = stash;
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    };
    let info = stream.consumer_info(&name).await;
    // Whatever was delivered (to anyone) may have been handled, its sends stored.
    if let Ok(i) = &info {
        hand.delivered_before = hand.delivered_before.max(i.delivered.stream_sequence);
    }
    let floor = info.map(|i| i.ack_floor.consumer_sequence);
    if let Ok(floor) = floor {
        if first == floor + 1 {
            hand.start(floor);
            for m in stash {
                hand.push(m);
            }
            return;
        }
    }
    // Read again: another instance may have owned the partition meanwhile (membership flaps).
    if let Ok(now) = svc.store.applied(&state.ns, state.partition).await {
        state.applied = state.applied.max(now);
    }
    let applied = state.applied;
    tracing::info!(consumer = name, first, ?floor, applied, "deliveries arrived out of the consumer's order: resetting it to the event after the checkpoint");
    metrics::counter!("sequent_partition_resyncs_total").increment(1);
    if let Err(e) = reset_to(&stream, &name, applied + 1).await {
        tracing::warn!(consumer = name, error = e, "reset failed; the deliveries come back after --ack-wait");
    }
    match stream.consumer_info(&name).await {
        Ok(info) => {
            hand.start(info.ack_floor.consumer_sequence);
            hand.resyncing = true;
        }
        Err(e) => {
            tracing::warn!(consumer = name, error = %e, "consumer info after the reset failed");
            hand.start(floor.unwrap_or(0));
            hand.resyncing = true;
        }
    }
}

/// Waits `wait` before a retry, keeping what is in hand alive and taking what arrives.
async fn pause(svc: &Service, hand: &mut Hand, messages: &mut pull::Stream, stop: &watch::Receiver<bool>, wait: Duration) -> Option<Worked> {
    hand.flush_ack().await;
    let mut stop = stop.clone();
    let until = tokio::time::sleep(wait);
    tokio::pin!(until);
    let every = (svc.opts.ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = &mut until => return None,
            _ = stop.changed() => return Some(Worked::Stopped),
            _ = tick.tick() => hand.keep_alive().await,
            m = messages.next() => match m {
                Some(Ok(msg)) => hand.push(msg),
                Some(Err(e)) => return Some(Worked::StreamFailed(e.to_string())),
                None => return Some(Worked::StreamFailed("the pull stream ended".into())),
            },
        }
    }
}

/// Runs `work` while telling JetStream every third of the ack wait that the messages in hand
/// are still being worked on (so a slow batch does not get them redelivered), and while taking
/// what arrives into the hand: the pull stream keeps pulling, so the partition stays pinned to
/// this instance however long the batch takes (a pin lapses after `--pin-timeout` without
/// pulls, and the next owner would receive newer events before the ones in hand).
async fn keep_alive<T>(svc: &Service, hand: &mut Hand, messages: &mut pull::Stream, work: impl std::future::Future<Output = T>) -> (T, Option<String>) {
    let mut work = std::pin::pin!(work);
    let every = (svc.opts.ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut failed = None;
    loop {
        tokio::select! {
            r = &mut work => return (r, failed),
            _ = tick.tick() => hand.keep_alive().await,
            m = messages.next(), if failed.is_none() => match m {
                Some(Ok(msg)) => hand.push(msg),
                // Finish the batch; the stream restarts after it.
                Some(Err(e)) => failed = Some(e.to_string()),
                None => failed = Some("the pull stream ended".into()),
            },
        }
    }
}

/// After a crash of the previous owner: wait until our pull is registered and move the pin to
/// us, instead of waiting `--pin-timeout`. The events the dead owner held are out of the
/// consumer's order for us: `resync` resets the consumer and takes them again, first.
async fn take_over(svc: &Service, name: &str) {
    let Ok(stream) = svc.events_stream().await else { return };
    let started = std::time::Instant::now();
    for _ in 0..30 {
        match stream.consumer_info(name).await {
            Ok(info) if info.num_waiting > 0 => break,
            Ok(info) => tracing::debug!(consumer = name, waiting = info.num_waiting, "takeover: no pull waiting yet"),
            Err(e) => tracing::debug!(consumer = name, error = %e, "takeover: consumer info failed"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::debug!(consumer = name, waited = ?started.elapsed(), "takeover: unpinning");
    match stream.unpin_consumer(name, PIN_GROUP).await {
        Ok(_) => tracing::info!(consumer = name, "took over from a vanished instance"),
        Err(e) => tracing::warn!(consumer = name, error = %e, "unpin on takeover failed; the pin expires after --pin-timeout"),
    }
}
