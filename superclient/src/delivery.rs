//! Live delivery: the partitions this instance owns, one worker each.
//!
//! A worker consumes its partition's durable consumer through the pinned-client priority group
//! (`max_ack_pending = 1`, so one event at a time, in stream order). Per event: skip it if the
//! checkpoint is past it (redelivery), hold it if its key is parked, otherwise apply it
//! ([`Service::apply`]: handler → sends → commit) and ack. A failing handler is NAKed with a
//! growing delay and parked after `--max-attempts`; infrastructure failures are retried
//! forever, keeping the message with progress signals.
//!
//! Losing a partition (another instance joined): finish the event in hand, stop pulling, then
//! unpin the consumer so the new owner is pinned at once. Taking over from an instance that
//! vanished: unpin (its pin would otherwise last `--pin-timeout`) and reset the consumer to
//! its ack floor so the event it held is redelivered now rather than after `--ack-wait`.

use crate::membership::owner;
use crate::parking;
use crate::runtime::{Failure, Service, Target};
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use tracing::Instrument;
use sequent_protocol::subjects::{self, PIN_GROUP};
use sequent_protocol::{Event, ProvisionReply, ProvisionRequest};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Asks a gateway for the service's consumers, retrying until one answers.
pub async fn provision(client: &async_nats::Client, service: &str, types: Vec<String>, ack_wait: Duration, pin_timeout: Duration) -> anyhow::Result<ProvisionReply> {
    let request = ProvisionRequest {
        types,
        ack_wait_ms: Some(ack_wait.as_millis() as u64),
        pin_timeout_ms: Some(pin_timeout.as_millis() as u64),
    };
    let body = serde_json::to_vec(&request).expect("provision requests serialise");
    let subject = subjects::provision_subject(service);
    let mut delay = Duration::from_millis(200);
    loop {
        let req = async_nats::Request::new().payload(body.clone().into()).timeout(Some(Duration::from_secs(30)));
        match client.send_request(subject.clone(), req).await {
            Ok(msg) => {
                let reply: ProvisionReply = serde_json::from_slice(&msg.payload)
                    .map_err(|e| anyhow::anyhow!("unreadable provision reply: {e}"))?;
                match &reply.error {
                    None => return Ok(reply),
                    Some(e) if e.code == sequent_protocol::ErrorCode::Unavailable => {
                        tracing::warn!(error = e.message, "provisioning failed; retrying");
                    }
                    Some(e) => anyhow::bail!("the gateway refused to provision {service}: {}", e.message),
                }
            }
            Err(e) => tracing::warn!(error = %e, subject, "no gateway answered the provision request yet (is bus-gateway running?); retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

struct Worker {
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// Routes operator release requests to the worker owning the key's partition.
pub type ReleaseRoutes = Arc<parking_lot::Mutex<HashMap<u32, mpsc::Sender<String>>>>;

/// Follows membership changes and starts/stops partition workers until `shutdown` fires;
/// then stops all workers (each finishes its event and unpins) and returns.
pub async fn run(svc: Arc<Service>, mut live_rx: watch::Receiver<Vec<String>>, mut shutdown: watch::Receiver<bool>) {
    let mut workers: HashMap<u32, Worker> = HashMap::new();
    let routes: ReleaseRoutes = Default::default();
    tokio::spawn(parking::dispatch_releases(svc.clone(), routes.clone()));
    let mut previous: Vec<String> = Vec::new();
    loop {
        let live = live_rx.borrow_and_update().clone();
        let owned: HashSet<u32> = (0..svc.partitions).filter(|p| owner(*p, &live) == Some(&svc.instance)).collect();
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
            let done = tokio::spawn(worker(svc.clone(), *p, stop_rx, takeover, rel_rx).instrument(span));
            workers.insert(*p, Worker { stop: stop_tx, done });
        }
        let lost: Vec<u32> = workers.keys().filter(|p| !owned.contains(p)).copied().collect();
        for p in lost {
            let w = workers.remove(&p).expect("listed");
            routes.lock().remove(&p);
            let _ = w.stop.send(true);
            tokio::spawn(async move {
                let _ = w.done.await;
            });
        }
        metrics::gauge!("sequent_partitions_owned").set(workers.len() as f64);
        let mut mine: Vec<u32> = workers.keys().copied().collect();
        mine.sort();
        tracing::info!(partitions = ?mine, "owned partitions");
        *svc.owned.write() = mine;
        previous = live;
        tokio::select! {
            r = live_rx.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, w) in workers.drain() {
        let _ = w.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(15), w.done).await;
    }
}

/// What a worker remembers about its partition in the active namespace.
pub struct PartitionState {
    pub partition: u32,
    pub ns: String,
    /// Checkpoint: the last applied stream sequence.
    pub applied: u64,
    /// Parked keys of this partition.
    pub parked: HashSet<String>,
}

impl PartitionState {
    pub async fn load(svc: &Service, partition: u32) -> PartitionState {
        let mut delay = Duration::from_millis(100);
        loop {
            let ns = svc.active_ns();
            let loaded = async {
                let applied = svc.store.applied(&ns, partition).await?;
                let parked = parking::parked_keys(svc, &ns).await?;
                Ok::<_, redis::RedisError>((applied, parked))
            }
            .await;
            match loaded {
                Ok((applied, parked)) => {
                    let parked = parked.into_iter().filter(|k| subjects::partition_of(k, svc.partitions) == partition).collect();
                    return PartitionState { partition, ns, applied, parked };
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "reading the partition's checkpoint failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reloads after a rebuild swapped the namespace.
    pub async fn refresh_if_moved(&mut self, svc: &Service) {
        if svc.active_ns() != self.ns {
            *self = PartitionState::load(svc, self.partition).await;
        }
    }
}

async fn worker(svc: Arc<Service>, partition: u32, mut stop: watch::Receiver<bool>, mut takeover: bool, mut releases: mpsc::Receiver<String>) {
    let name = subjects::consumer_name(&svc.name, partition);
    tracing::info!(partition, takeover, "taking partition");
    let mut state = PartitionState::load(&svc, partition).await;
    let expires = (svc.opts.pin_timeout / 2).min(Duration::from_secs(30)).max(Duration::from_millis(500));
    'outer: loop {
        if *stop.borrow() {
            break;
        }
        let consumer = match svc.events_stream().await {
            Ok(stream) => stream.get_consumer::<pull::Config>(&name).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(partition, consumer = name, error = e, "consumer not available; retrying");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.changed() => break }
            }
        };
        let messages = consumer
            .stream()
            .group(PIN_GROUP)
            .max_messages_per_batch(1)
            .expires(expires)
            .heartbeat(expires / 3)
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
            tokio::spawn(take_over(svc.clone(), name.clone()));
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break 'outer,
                Some(key) = releases.recv() => {
                    state.refresh_if_moved(&svc).await;
                    parking::release(&svc, &mut state, &key).await;
                }
                m = messages.next() => match m {
                    Some(Ok(msg)) => handle(&svc, &mut state, msg, &stop).await,
                    Some(Err(e)) => {
                        tracing::debug!(partition, error = %e, "pull stream error; restarting it");
                        tokio::select! { _ = tokio::time::sleep(Duration::from_millis(300)) => {}, _ = stop.changed() => break 'outer }
                        // The new pull stream has no pin id: the server would hold its pulls until
                        // the old stream's pin expires (--pin-timeout), stalling the partition
                        // (e.g. 4 s after a missed heartbeat under load). We own the partition and
                        // hold no event, so release our old pin, as on hand-over.
                        if let Ok(stream) = svc.events_stream().await {
                            let _ = stream.unpin_consumer(&name, PIN_GROUP).await;
                        }
                        continue 'outer;
                    }
                    None => continue 'outer,
                },
            }
        }
    }
    // Hand over: nothing is in hand any more; release the pin so the next owner starts now.
    if let Ok(stream) = svc.events_stream().await {
        if let Err(e) = stream.unpin_consumer(&name, PIN_GROUP).await {
            tracing::debug!(partition, error = %e, "unpin failed (the pin may have moved already)");
        }
    }
    tracing::info!(partition, "released partition");
}

/// After a crash of the previous owner: wait until our pull is registered, move the pin to
/// us, and have the event the dead owner held redelivered at once.
async fn take_over(svc: Arc<Service>, name: String) {
    let Ok(stream) = svc.events_stream().await else { return };
    let started = std::time::Instant::now();
    for _ in 0..30 {
        match stream.consumer_info(&name).await {
            Ok(info) if info.num_waiting > 0 => break,
            Ok(info) => tracing::debug!(consumer = name, waiting = info.num_waiting, "takeover: no pull waiting yet"),
            Err(e) => tracing::debug!(consumer = name, error = %e, "takeover: consumer info failed"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::debug!(consumer = name, waited = ?started.elapsed(), "takeover: unpinning");
    if let Err(e) = stream.unpin_consumer(&name, PIN_GROUP).await {
        tracing::warn!(consumer = name, error = %e, "unpin on takeover failed; the pin expires after --pin-timeout");
        return;
    }
    match stream.consumer_info(&name).await {
        Ok(info) if info.num_ack_pending > 0 => {
            if let Err(e) = stream.reset_consumer(&name, None).await {
                tracing::warn!(consumer = name, error = %e, "reset on takeover failed; the held event comes back after --ack-wait");
            } else {
                tracing::info!(consumer = name, "took over from a vanished instance: its unacked event is redelivered now");
            }
        }
        Ok(_) => tracing::info!(consumer = name, "took over from a vanished instance: nothing was in flight"),
        Err(e) => tracing::warn!(consumer = name, error = %e, "consumer info after takeover failed"),
    }
}

async fn handle(svc: &Service, state: &mut PartitionState, msg: async_nats::jetstream::Message, stop: &watch::Receiver<bool>) {
    let (seq, attempt) = match msg.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(e) => {
            tracing::error!(error = %e, "a delivered message has no JetStream metadata; ignoring it");
            return;
        }
    };
    let event = match Event::from_stored(&msg.payload, seq) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(seq, subject = %msg.subject, error = %e, "unreadable event in the stream; terminating its delivery");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("event", seq, id = event.id, correlation = event.correlation, key = event.key, event_type = event.event_type);
    process(svc, state, &msg, event, seq, attempt, stop).instrument(span).await
}

async fn process(
    svc: &Service,
    state: &mut PartitionState,
    msg: &async_nats::jetstream::Message,
    event: Event,
    seq: u64,
    attempt: i64,
    stop: &watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        state.refresh_if_moved(svc).await;
        if seq <= state.applied {
            metrics::counter!("sequent_events_total", "outcome" => "skipped").increment(1);
            let _ = msg.ack().await;
            return;
        }
        let outcome = if state.parked.contains(&event.key) {
            parking::hold(svc, state, &event).await.map(|_| "held")
        } else {
            keep_alive(svc, msg, svc.apply(&event, &Target::Live { partition: state.partition, attempt })).await.map(|_| "applied")
        };
        match outcome {
            Ok(what) => {
                state.applied = state.applied.max(seq);
                metrics::counter!("sequent_events_total", "outcome" => what).increment(1);
                // Acked only now: the effects are committed and the sends are stored.
                if let Err(e) = msg.ack().await {
                    tracing::warn!(seq, error = %e, "ack failed; the redelivery will be skipped by the checkpoint");
                }
                return;
            }
            Err(Failure::Script(error)) if attempt >= svc.opts.max_attempts => {
                tracing::error!(seq, id = event.id, key = event.key, attempt, error, "handler failed {attempt} times: parking the key");
                match parking::park(svc, state, &event, &error, attempt).await {
                    Ok(()) => {
                        metrics::counter!("sequent_events_total", "outcome" => "parked").increment(1);
                        let _ = msg.ack().await;
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "parking failed; retrying"),
                }
            }
            Err(Failure::Script(error)) => {
                let backoff = svc.opts.retry_delay.saturating_mul(1 << (attempt.clamp(1, 16) - 1)).min(Duration::from_secs(10));
                tracing::warn!(seq, id = event.id, key = event.key, attempt, error, "handler failed; retrying in {backoff:?}");
                metrics::counter!("sequent_events_total", "outcome" => "failed").increment(1);
                let _ = msg.ack_with(AckKind::Nak(Some(backoff))).await;
                return;
            }
            Err(Failure::Infra(error)) => {
                tracing::warn!(seq, error, "infrastructure failure; retrying in {delay:?}");
                // Perhaps the state moved (a rebuild) or is being rebuilt after Redis lost it:
                // the next try reads the active namespace, not the cached one.
                let _ = svc.refresh_active().await;
            }
        }
        if *stop.borrow() {
            // Leave it to the next owner.
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return;
        }
        let _ = msg.ack_with(AckKind::Progress).await;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs `work` while telling JetStream every third of the ack wait that the event is still
/// being worked on, so a slow handler does not get its event redelivered elsewhere.
async fn keep_alive<T>(svc: &Service, msg: &async_nats::jetstream::Message, work: impl std::future::Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let every = (svc.opts.ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = tick.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
}
