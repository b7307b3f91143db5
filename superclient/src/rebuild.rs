//! Rebuilding a service's state from the stream.
//!
//! A new namespace `<service>@<generation>` is filled by replaying, with an ordered consumer,
//! every stored event of the service's types through the rebuild handlers (or the listeners
//! registered with `{rebuild = true}`; sends are ignored). Each event commits with the new
//! namespace's partition checkpoint, exactly as live delivery does in the active one.
//!
//! Live instances keep running meanwhile, applying to the old namespace. When the replay has
//! caught up with the stream, a Redis script swaps the active pointer, but only if the new
//! namespace has applied at least what the old one has in every partition; otherwise the
//! replay goes on (the events live delivery applied are on their way to it too). Live commits
//! check the active pointer atomically, so a handler that read the old namespace is re-run
//! against the new one, where the checkpoint says whether the event is in already. Nothing is
//! lost and nothing applied twice.
//!
//! A rebuild handler that fails stops the rebuild with the event and the error; the active
//! state is untouched. Parked keys of the old namespace are not carried over: the rebuilt
//! state is what replaying every event gives.

use crate::runtime::{Failure, Service, Target};
use crate::state;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use sequent_protocol::{subjects, Event};
use std::time::{Duration, Instant};

/// Rebuilds into a fresh namespace and swaps it in. Returns the new namespace.
pub async fn rebuild(svc: &Service, why: &str) -> anyhow::Result<String> {
    let old = svc.store.active().await?;
    let ns = svc.store.new_namespace(&svc.active_ns()).await?;
    let leftovers = svc.store.drop_namespace(&ns).await?;
    if leftovers > 0 {
        tracing::info!(ns, leftovers, "removed leftovers of an earlier attempt");
    }
    let filters: Vec<String> = svc.spec.types().iter().map(|t| subjects::type_filter(t)).collect();
    tracing::info!(service = svc.name, from = old.as_deref().unwrap_or("(nothing)"), into = ns, why, types = ?svc.spec.types(), "rebuild starting");

    let stream = svc.events_stream().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let floors = if old.is_none() { live_floors(svc, &stream).await? } else { Vec::new() };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subjects: filters,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the replay consumer on {}: {e} (does this NATS user may create consumers on the stream?)", svc.stream_name))?;
    let total = consumer.cached_info().num_pending;
    let progress = Progress::new(total);

    if total == 0 {
        if let Some(p) = svc.store.swap(old.as_deref(), &ns, svc.partitions).await? {
            anyhow::bail!("no events to replay, yet partition {p} of {} has applied some: the stream and the state disagree", old.unwrap_or_default());
        }
    } else {
        let mut messages = consumer.messages().await.map_err(|e| anyhow::anyhow!("starting the replay: {e}"))?;
        loop {
            let msg = match messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "replay stream error; the ordered consumer recovers by itself");
                    continue;
                }
                None => anyhow::bail!("the replay stream ended before the rebuild caught up"),
            };
            let info = msg.info().map_err(|e| anyhow::anyhow!("replayed message without metadata: {e}"))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let partition = subjects::parse_stored_subject(&msg.subject).map(|(p, _, _)| p).unwrap_or(0);
            let event = Event::from_stored(&msg.payload, seq).map_err(|e| anyhow::anyhow!("unreadable event at seq {seq}: {e}"))?;
            if floors.get(partition as usize).is_none_or(|floor| seq <= *floor) {
                apply_with_retry(svc, &event, &ns, partition).await?;
            }
            progress.step(pending);
            if pending == 0 {
                match svc.store.swap(old.as_deref(), &ns, svc.partitions).await? {
                    None => break,
                    Some(p) => tracing::debug!(partition = p, "live delivery is ahead in a partition; replaying on"),
                }
            }
        }
    }
    progress.finish(&ns);
    svc.set_active(&ns);
    if let Some(old) = old {
        // Live handlers that still read the old namespace find it moved at commit and re-run.
        match svc.store.drop_namespace(&old).await {
            Ok(n) => tracing::info!(ns = old, keys = n, "dropped the replaced namespace"),
            Err(e) => tracing::warn!(ns = old, error = %e, "could not drop the replaced namespace"),
        }
    }
    Ok(ns)
}

/// Building from nothing while live delivery has run before (Redis lost the state): per
/// partition, the last event live delivery completed, i.e. its durable consumer's ack floor
/// (acks come after the effects, one event at a time). The rebuild applies only up to there
/// and leaves the later events to live delivery: their handlers may not have run, or their
/// sends not been stored, and a rebuild sends nothing, so checkpointing them here would lose
/// those sends for good. A partition whose consumer never delivered anything is not bounded
/// (first start, or a service added later: its history is rebuilt without sending).
async fn live_floors(svc: &Service, stream: &async_nats::jetstream::stream::Stream<()>) -> anyhow::Result<Vec<u64>> {
    let mut floors = Vec::new();
    for p in 0..svc.partitions {
        let name = subjects::consumer_name(&svc.name, p);
        let floor = match stream.consumer_info(&name).await {
            Ok(info) if info.delivered.stream_sequence > 0 => info.ack_floor.stream_sequence,
            Ok(_) => u64::MAX,
            Err(e) => anyhow::bail!("reading consumer {name} (where live delivery stopped): {e}"),
        };
        floors.push(floor);
    }
    if floors.iter().any(|f| *f != u64::MAX) {
        tracing::info!(?floors, "live delivery ran before: replaying each partition up to its last acknowledged event");
    }
    Ok(floors)
}

async fn apply_with_retry(svc: &Service, event: &Event, ns: &str, partition: u32) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    loop {
        match svc.apply(event, &Target::Rebuild { ns: ns.to_string(), partition }).await {
            Ok(_) => return Ok(()),
            Err(Failure::Script(e)) => anyhow::bail!(
                "rebuild stopped at seq {} (event {}, type {}, key {}): {e}. The active state is untouched; fix the script and rebuild again",
                event.seq,
                event.id,
                event.event_type,
                event.key
            ),
            Err(Failure::Infra(e)) => {
                tracing::warn!(error = e, "rebuild: infrastructure failure; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Makes sure the service has an active namespace before live delivery starts. When there is
/// none (first start, or Redis was emptied) and the stream holds events of the service's
/// types, one instance rebuilds (under a lock) while the others wait.
pub async fn ensure_namespace(svc: &Service) -> anyhow::Result<String> {
    let mut con = svc.store.con.clone();
    let lock = state::rebuild_lock_key(&svc.name);
    let mut waiting_logged = false;
    loop {
        if let Some(ns) = svc.store.active().await? {
            svc.set_active(&ns);
            return Ok(ns);
        }
        if svc.opts.no_auto_rebuild || svc.spec.types().is_empty() {
            let ns = svc.store.new_namespace(&svc.active_ns()).await?;
            let _: () = redis::cmd("SET").arg(state::active_key(&svc.name)).arg(ns).arg("NX").query_async(&mut con).await?;
            continue;
        }
        let got: Option<String> =
            redis::cmd("SET").arg(&lock).arg(&svc.instance).arg("NX").arg("PX").arg(30_000).query_async(&mut con).await?;
        if got.is_some() {
            let renew_con = svc.store.con.clone();
            let (renew_lock, me) = (lock.clone(), svc.instance.clone());
            let renewer = tokio::spawn(async move {
                let mut con = renew_con;
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let holder: Option<String> = redis::cmd("GET").arg(&renew_lock).query_async(&mut con).await.unwrap_or(None);
                    if holder.as_deref() == Some(me.as_str()) {
                        let _: redis::RedisResult<()> = redis::cmd("PEXPIRE").arg(&renew_lock).arg(30_000).query_async(&mut con).await;
                    }
                }
            });
            let result = rebuild(svc, "the service has no state yet").await;
            renewer.abort();
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&lock).query_async(&mut con).await;
            return result;
        }
        if !waiting_logged {
            let holder: Option<String> = redis::cmd("GET").arg(&lock).query_async(&mut con).await.unwrap_or(None);
            tracing::info!(holder = holder.as_deref().unwrap_or("?"), "another instance is building the initial state; waiting");
            waiting_logged = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Watches the active namespace for the life of the instance. A rebuild run elsewhere swaps it:
/// the cached name follows. Redis lost it (restarted without persistence, flushed): until it is
/// back, reads and commits of handlers and routes fail (routes answer 503, events wait
/// unacked), and [`ensure_namespace`] rebuilds it from the stream (one instance, under the lock,
/// the others wait). Polled, because a flush announces nothing; reads do not rely on the poll
/// (see state.rs), only the recovery does.
pub async fn watch(svc: std::sync::Arc<Service>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match svc.store.active().await {
            Ok(Some(ns)) => {
                if ns != svc.active_ns() {
                    svc.set_active(&ns);
                }
            }
            Ok(None) => {
                tracing::error!(service = svc.name, lost = svc.active_ns(), "the service's state is gone from Redis (restarted empty or flushed): rebuilding it from the stream; meanwhile routes answer 503 and events wait");
                metrics::counter!("sequent_state_lost_total").increment(1);
                match ensure_namespace(&svc).await {
                    Ok(ns) => tracing::info!(ns, "the state is back"),
                    Err(e) => tracing::error!(error = %e, "rebuilding the lost state failed; trying again"),
                }
            }
            // Redis is down: reads and commits fail by themselves meanwhile.
            Err(e) => tracing::debug!(error = %e, "cannot read the active namespace"),
        }
    }
}

/// Progress on a terminal (indicatif; hidden when stderr is not one) and in the logs.
struct Progress {
    bar: indicatif::ProgressBar,
    started: Instant,
    last_log: std::cell::Cell<Instant>,
    done: std::cell::Cell<u64>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("rebuild {bar:40} {pos}/{len} events, {per_sec}, {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        tracing::info!(total, "replaying events");
        Progress { bar, started: Instant::now(), last_log: std::cell::Cell::new(Instant::now()), done: std::cell::Cell::new(0) }
    }

    fn step(&self, pending: u64) {
        let done = self.done.get() + 1;
        self.done.set(done);
        self.bar.set_length(done + pending);
        self.bar.set_position(done);
        if self.last_log.get().elapsed() >= Duration::from_secs(5) {
            self.last_log.set(Instant::now());
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let left = pending as f64 / rate.max(0.001);
            tracing::info!(done, pending, rate = format!("{rate:.0}/s"), left = format!("{left:.0}s"), "rebuild progress");
        }
        metrics::counter!("sequent_rebuild_events_total").increment(1);
    }

    fn finish(&self, ns: &str) {
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        let done = self.done.get();
        tracing::info!(ns, events = done, seconds = format!("{secs:.1}"), rate = format!("{:.0}/s", done as f64 / secs.max(0.001)), "rebuild done: new state swapped in");
    }
}
