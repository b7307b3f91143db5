//! Rebuilding a service's state from the stream.
//!
//! A new namespace `<service>@<generation>` is filled by replaying, with batched direct reads
//! (no consumer), every stored event of the service's types through the rebuild handlers (or the listeners
//! registered with `{rebuild = true}`; sends are ignored). Each event commits with the new
//! namespace's partition checkpoint, exactly as live delivery does in the active one.
//!
//! Live instances keep running meanwhile, applying to the old namespace. The replay never
//! applies an event live delivery has not handled yet (see [`Bound`]): a replay sends nothing,
//! so such an event is left to live delivery, which sends. When the replay has caught up with
//! the stream, it catches up with live delivery's checkpoints (from the first event it left to
//! live delivery, if live delivery has applied it meanwhile); from the second time there on, it
//! first freezes live commits for a moment (they wait; the freeze expires by itself), so that
//! the checkpoints stop moving and the catch-up is exact. Then a Redis script swaps the
//! active pointer, but only if the new namespace has applied what the old one has in every
//! partition, and lifts the freeze. Live commits check the active pointer atomically, so a
//! handler that read the old namespace is re-run against the new one, where the checkpoint
//! says whether the event is in already. Nothing is lost and nothing applied twice.
//!
//! A rebuild handler that fails stops the rebuild with the event and the error; the active
//! state is untouched. Parked keys of the old namespace are not carried over: the rebuilt
//! state is what replaying every event gives.

use crate::error::{redis_failure, Failure};
use crate::runtime::Service;
use crate::script::{replay, Call, Lease, Mode, ALL_TYPES};
use crate::state::{self, Changes, Guard, Overlay};
use futures::StreamExt;
use sequent_protocol::{subjects, Event};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Events per Redis commit while replaying. Nobody reads the new namespace before the swap,
/// so its writes and checkpoints need only move together, not once per event: one commit per
/// batch instead of one round trip per event.
const BATCH: usize = 512;
/// Keys whose last written value a replay keeps in memory between batches.
const CACHED_KEYS: usize = 100_000;
/// How long live commits may wait for a rebuild catching up right before its swap, if the
/// rebuild stalls or dies (normally it lifts the freeze with the swap, milliseconds later).
const FREEZE: Duration = Duration::from_secs(10);
/// How often a replay that reached the stream's end looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

/// Why one attempt at a rebuild ended without swapping.
enum Stop {
    /// The script failed on an event: retrying gives the same failure.
    Script(anyhow::Error),
    /// Redis or NATS failed: a later attempt can succeed.
    Infra(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Stop {
        Stop::Infra(e.into())
    }
}

/// Rebuilds into a fresh namespace and swaps it in. Returns the new namespace. Redis or NATS
/// failures start the replay over (the half-built namespace is dropped); a failing rebuild
/// handler stops it with the event and the error.
pub async fn rebuild(svc: &Service, why: &str) -> anyhow::Result<String> {
    let mut delay = Duration::from_millis(200);
    loop {
        let mut started = None;
        let mut in_flight = None;
        let result = attempt(svc, why, &mut started, &mut in_flight).await;
        // A failed attempt's last commit may still be running: it must not write into the
        // namespace after the namespace is dropped.
        if let Some(commit) = in_flight {
            let _ = commit.await;
        }
        if let (Err(_), Some(ns)) = (&result, started) {
            drop_unused(svc, &ns).await;
        }
        match result {
            Ok(ns) => return Ok(ns),
            Err(Stop::Script(e)) => return Err(e),
            Err(Stop::Infra(e)) => {
                tracing::warn!(error = format!("{e:#}"), "rebuild: infrastructure failure; starting the replay over in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Drops the namespace of a failed attempt, unless it is active after all (a swap whose reply
/// was lost) or Redis cannot say.
async fn drop_unused(svc: &Service, ns: &str) {
    if let Err(e) = svc.store.unfreeze(ns).await {
        tracing::warn!(ns, error = %e, "could not lift the rebuild's freeze (it expires by itself)");
    }
    match svc.store.active().await {
        Ok(active) if active.as_deref() != Some(ns) => match svc.store.drop_namespace(ns).await {
            Ok(keys) => tracing::info!(ns, keys, "dropped the namespace of the failed rebuild"),
            Err(e) => tracing::warn!(ns, error = %e, "could not drop the namespace of the failed rebuild"),
        },
        _ => {}
    }
}

/// One replay into a new namespace (named in `started` as soon as it exists; its last commit,
/// if still running, in `in_flight`).
async fn attempt(svc: &Service, why: &str, started: &mut Option<String>, in_flight: &mut InFlight) -> Result<String, Stop> {
    let old = svc.store.active().await?;
    let ns = svc.store.new_namespace(&svc.active_ns()).await?;
    *started = Some(ns.clone());
    let leftovers = svc.store.drop_namespace(&ns).await?;
    if leftovers > 0 {
        tracing::info!(ns, leftovers, "removed leftovers of an earlier attempt");
    }
    // One filter per read: a script handling one event type reads through that type's filter;
    // several types read the stream unfiltered and keep their types here (a direct read takes
    // one filter, and nats-server serves several wildcard filters slowly: ~1,000 events/s
    // measured on 2.15.1 with an ordered consumer).
    let types = svc.spec.types();
    let filter = match types.as_slice() {
        [one] if one != ALL_TYPES => subjects::type_filter(one),
        _ => subjects::ALL_EVENTS.to_string(),
    };
    let wanted: std::collections::HashSet<&str> = types.iter().map(String::as_str).collect();
    tracing::info!(service = svc.name, from = old.as_deref().unwrap_or("(nothing)"), into = ns, why, types = ?svc.spec.types(), "rebuild starting");

    let stream = svc.events_stream().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut bound = match &old {
        Some(old) => Bound::live(svc, old).await?,
        None => Bound::from_nothing(svc, &stream).await?,
    };
    let reader = svc.events.direct().clone();
    let total = match reader.batch(&filter, 1, 1).await {
        Ok((first, _)) => first.first().map_or(0, |m| m.pending.unwrap_or(0) + 1),
        Err(e) => return Err(Stop::Infra(anyhow::anyhow!("reading the stream: {e}"))),
    };
    let progress = Progress::new(svc, total);

    if total == 0 {
        if let Some(p) = svc.store.swap(old.as_deref(), &ns, svc.partitions).await? {
            return Err(Stop::Script(anyhow::anyhow!(
                "no events to replay, yet partition {p} of {} has applied some: the stream and the state disagree",
                old.unwrap_or_default()
            )));
        }
    } else {
        let mut messages = reader.follow(&filter, 1, FOLLOW_POLL);
        let mut batch = Batch::new(svc, &ns, in_flight).await;
        // Per partition: the last event applied to the new namespace, and the first event left
        // to live delivery in this pass (every later one of the partition is left too: a
        // partition's events apply in order).
        let mut applied = vec![0u64; svc.partitions as usize];
        let mut left: Vec<Option<u64>> = vec![None; svc.partitions as usize];
        // Times the replay reached the end of the stream (or, frozen, live delivery's checkpoints).
        let mut at_end = 0;
        // While live commits are frozen: their checkpoints, and when the freeze was last set.
        let mut frozen: Option<(Vec<u64>, Instant)> = None;
        'replay: loop {
            let msg = match messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(Stop::Infra(anyhow::anyhow!("replaying the stream: {e}"))),
                None => return Err(Stop::Infra(anyhow::anyhow!("the replay stream ended before the rebuild caught up"))),
            };
            let (seq, pending) = (msg.seq, msg.pending.unwrap_or(0));
            let (partition, event_type) = subjects::parse_stored_subject(&msg.subject).map_or((0, ""), |(p, _, t)| (p, t));
            let p = partition as usize;
            if (wanted.contains(event_type) || wanted.contains(ALL_TYPES)) && p < applied.len() && seq > applied[p] && left[p].is_none() {
                if bound.allows(svc, partition, seq).await? {
                    let event = Event::from_stored(&msg.payload, seq).map_err(|e| Stop::Script(anyhow::anyhow!("unreadable event at seq {seq}: {e}")))?;
                    batch.add(event, partition).await?;
                    applied[p] = seq;
                } else {
                    left[p] = Some(seq);
                }
            }
            progress.step(pending);
            // Frozen: the catch-up is done once every partition reached the frozen checkpoints,
            // whether or not new events keep coming in behind them.
            let caught_up = frozen.as_ref().is_some_and(|(floors, _)| (0..applied.len()).all(|p| reached(&applied, &left, p, seq) >= floors[p]));
            if batch.events >= BATCH || pending == 0 || caught_up {
                batch.flush(svc).await?;
            }
            if !caught_up && pending > 0 {
                // A long catch-up keeps the freeze (its expiry is for a rebuild that died).
                if let Some((_, since)) = frozen.as_mut().filter(|(_, since)| since.elapsed() > FREEZE / 4) {
                    svc.store.freeze(&ns, FREEZE).await?;
                    *since = Instant::now();
                }
                continue;
            }
            // At the end of the stream (or caught up). Building from nothing, live delivery
            // waits for this state: swap. Otherwise live delivery keeps applying to the current
            // state. The first time here the replay catches up with it and tries to swap as it
            // is (a quiet service never pauses); after that live commits are frozen (briefly;
            // the freeze expires by itself) to stop its checkpoints, the replay catches up with
            // them exactly, and the swap lifts the freeze. Without it a busy service could move
            // on before every swap.
            at_end += 1;
            loop {
                let Some(old) = &old else {
                    svc.store.swap(None, &ns, svc.partitions).await?;
                    break 'replay;
                };
                if at_end > 1 {
                    if at_end == 2 {
                        tracing::info!("live delivery keeps moving: freezing its commits for a moment to catch up exactly");
                    }
                    svc.store.freeze(&ns, FREEZE).await?;
                }
                let floors = bound.refresh(svc).await?;
                if at_end > 1 {
                    frozen = Some((floors.clone(), Instant::now()));
                }
                // A checkpoint that is no event of its partition (one moved to a copy's end,
                // `state::migrate::repartition`) is matched by what the replay has read.
                for p in 0..applied.len() {
                    if applied[p] < floors[p] && reached(&applied, &left, p, seq) >= floors[p] {
                        applied[p] = floors[p];
                        batch.checkpoints.insert(p as u32, floors[p]);
                    }
                }
                batch.flush(svc).await?;
                // The swap compares the new namespace's checkpoints: every commit must be in.
                batch.settled().await?;
                let behind: Vec<usize> = (0..applied.len()).filter(|&p| floors[p] > applied[p]).collect();
                if behind.is_empty() {
                    match svc.store.swap(Some(old), &ns, svc.partitions).await? {
                        None => break 'replay,
                        Some(p) => {
                            if at_end > 1 {
                                tracing::info!(partition = p, "the freeze lapsed before the swap; catching up again");
                            }
                            at_end += 1;
                            continue;
                        }
                    }
                }
                // What live delivery applied and this replay has not: events it left to live
                // delivery (read again from the first of them), or events still on their way.
                // The replay restarts from the first event left in ANY partition: clearing a
                // partition's mark without reading its events again would let the replay take
                // that partition's later events (live delivery may have applied them by then)
                // and skip the ones between, which then nobody applies to the new state.
                if behind.iter().any(|&p| left[p].is_some()) {
                    let from = left.iter().flatten().min().copied().expect("a partition left an event");
                    tracing::debug!(from, "catching up with live delivery: replaying again from the first event left to it");
                    left.fill(None);
                    messages = reader.follow(&filter, from, FOLLOW_POLL);
                } else if let Some(&p) = behind.iter().find(|&&p| floors[p] <= seq) {
                    return Err(Stop::Script(anyhow::anyhow!(
                        "partition {p} of {old} has applied seq {}, which the stream no longer holds among the service's events: the stream and the state disagree",
                        floors[p]
                    )));
                }
                break;
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

/// The replay applies no event that live delivery has not handled yet: such an event may still
/// have sends to make (a debit, a credit), and a replay sends nothing, so checkpointing it in the
/// new state would make live delivery skip it after the swap and lose those sends for good.
/// Per partition, the bound is:
/// - with a state in place: its checkpoint (the last event live delivery applied), re-read
///   when the replay reaches it, because live delivery keeps going;
/// - building from nothing after live delivery ran (Redis lost the state): the durable
///   consumer's ack floor (acks come after the effects), fixed because live delivery waits for
///   the state meanwhile; also for a consumer kept in memory and made again after a nats-server
///   restart, which starts after the floor the gateway had recorded;
/// - building from nothing where nothing was ever delivered (a first start, or a service added
///   to a running system): the stream's end when the build started. That history is rebuilt
///   without sending; later events are live delivery's.
enum Bound {
    Live { old: String, floors: Vec<u64> },
    Fixed(Vec<u64>),
}

impl Bound {
    async fn live(svc: &Service, old: &str) -> anyhow::Result<Bound> {
        let mut bound = Bound::Live { old: old.to_string(), floors: vec![0; svc.partitions as usize] };
        bound.refresh(svc).await?;
        Ok(bound)
    }

    async fn from_nothing(svc: &Service, stream: &async_nats::jetstream::stream::Stream<()>) -> anyhow::Result<Bound> {
        let end = svc.js.get_stream(&svc.stream_name).await?.cached_info().state.last_sequence;
        let mut floors = Vec::new();
        for p in 0..svc.partitions {
            let name = subjects::consumer_name(&svc.name, p);
            let floor = match stream.consumer_info(&name).await {
                // Also a consumer made again after a nats-server restart lost it: it started
                // after its recorded floor, which is where live delivery stood.
                Ok(info) if sequent_net::consumers::has_run(&info) => info.ack_floor.stream_sequence,
                Ok(_) => end,
                Err(e) => anyhow::bail!("reading consumer {name} (where live delivery stopped): {e}"),
            };
            floors.push(floor);
        }
        tracing::info!(?floors, "replaying each partition up to the last event live delivery handled (or the stream's end where it never ran)");
        Ok(Bound::Fixed(floors))
    }

    /// The bounds as they are now (live delivery's checkpoints read again).
    async fn refresh(&mut self, svc: &Service) -> anyhow::Result<Vec<u64>> {
        if let Bound::Live { old, floors } = self {
            for (p, floor) in floors.iter_mut().enumerate() {
                *floor = svc.store.applied(old, p as u32).await?;
            }
        }
        Ok(match self {
            Bound::Live { floors, .. } | Bound::Fixed(floors) => floors.clone(),
        })
    }

    /// May the replay apply event `seq` of `partition`?
    async fn allows(&mut self, svc: &Service, partition: u32, seq: u64) -> anyhow::Result<bool> {
        match self {
            Bound::Fixed(floors) => Ok(seq <= floors[partition as usize]),
            Bound::Live { old, floors } => {
                let floor = &mut floors[partition as usize];
                if seq > *floor {
                    *floor = svc.store.applied(old, partition).await?;
                }
                Ok(seq <= *floor)
            }
        }
    }
}

/// How far partition `p` of the new state is complete, the replay having read the stream up to
/// `seq`: with nothing of it left to live delivery, every event of it up to `seq` is applied.
fn reached(applied: &[u64], left: &[Option<u64>], p: usize, seq: u64) -> u64 {
    if left[p].is_none() {
        applied[p].max(seq)
    } else {
        applied[p]
    }
}

/// The commit of a batch running in Redis while the next batch runs in Lua.
type InFlight = Option<tokio::task::JoinHandle<redis::RedisResult<state::Commit>>>;

/// Replayed events not yet committed. Events are handed to Lua [`DISPATCH`] at a time, all
/// on one state and one overlay (each handler reads what the earlier ones wrote); the batch
/// commits with the checkpoint each partition reached and the highest version of each key (one
/// command, not one per event). A batch's commit runs while the next batch runs in Lua; the
/// next commit waits for it (commits apply in order), and so does a read of a key the overlay
/// forgot (see [`Batch::flush`]).
struct Batch<'a> {
    call: Option<Call>,
    lease: Lease,
    ns: String,
    /// Events read, not handed to Lua yet.
    waiting: Vec<(Event, u32)>,
    checkpoints: BTreeMap<u32, u64>,
    versions: HashMap<String, u64>,
    events: usize,
    in_flight: &'a mut InFlight,
}

/// Events per call into Lua.
const DISPATCH: usize = 128;

impl<'a> Batch<'a> {
    async fn new(svc: &Service, ns: &str, in_flight: &'a mut InFlight) -> Batch<'a> {
        Batch {
            call: Some(svc.call(Mode::Rebuild, ns)),
            lease: svc.pool.get().await,
            ns: ns.to_string(),
            waiting: Vec::with_capacity(DISPATCH),
            checkpoints: BTreeMap::new(),
            versions: HashMap::new(),
            events: 0,
            in_flight,
        }
    }

    async fn add(&mut self, event: Event, partition: u32) -> Result<(), Stop> {
        self.checkpoints.insert(partition, event.seq);
        match self.versions.get_mut(&event.key) {
            Some(v) => *v = (*v).max(event.version),
            None => {
                self.versions.insert(event.key.clone(), event.version);
            }
        }
        self.waiting.push((event, partition));
        self.events += 1;
        if self.waiting.len() >= DISPATCH {
            self.dispatch().await?;
        }
        Ok(())
    }

    /// Runs the handlers of the waiting events.
    async fn dispatch(&mut self) -> Result<(), Stop> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        let call = self.call.take().expect("a batch always has its call between dispatches");
        let (result, call) = replay::replay(&mut self.lease, &self.waiting, call).await;
        self.call = Some(call);
        let waiting = std::mem::take(&mut self.waiting);
        match result {
            Ok(()) => Ok(()),
            Err((i, e)) => {
                let event = &waiting[i.min(waiting.len() - 1)].0;
                let e = Failure::from(e);
                if e.is_script() {
                    Err(Stop::Script(anyhow::anyhow!(
                        "rebuild stopped at seq {} (event {}, type {}, key {}): {e}. The active state is untouched; fix the script and rebuild again",
                        event.seq,
                        event.id,
                        event.event_type,
                        event.key
                    )))
                } else {
                    // The overlay may hold part of the failed batch's writes: this attempt is over.
                    Err(Stop::Infra(anyhow::anyhow!("replaying seq {}: {e}", event.seq)))
                }
            }
        }
    }

    /// Commits the buffered writes with the partitions' checkpoints, atomically: starts the
    /// commit once the previous one is in, and returns (see [`Batch::settled`]).
    async fn flush(&mut self, svc: &Service) -> Result<(), Stop> {
        self.dispatch().await?;
        if self.events == 0 && self.checkpoints.is_empty() {
            return Ok(());
        }
        let ns = self.ns.clone();
        let call = self.call.as_mut().expect("present between dispatches");
        // One HSET of the batch's keys, not a compare per key: a replay applies each key's events
        // once, in stream order (a key stays in one partition), so the last version is the highest.
        // (Partitioned state: one HSET per partition, in its namespace; the commit runs one
        // script per partition touched.)
        let mut hsets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, version) in self.versions.drain() {
            let hset = hsets.entry(state::versions_key(&svc.store.key_ns(&ns, &key))).or_default();
            hset.extend([key, version.to_string()]);
        }
        for (hash, fields) in hsets {
            call.overlay.push_op([vec!["HSET".to_string(), hash], fields].concat());
        }
        for (partition, seq) in std::mem::take(&mut self.checkpoints) {
            call.overlay.push_op(vec!["SET".into(), state::applied_key(&svc.store.partition_ns(&ns, partition), partition), seq.to_string()]);
        }
        self.events = 0;
        let changes = Changes { expected_active: None, ns: &ns, guard: Guard::None, overlay: &call.overlay, owner: None, locked: &state::Locks::new() };
        let args = svc.store.prepare_commit(&changes).map_err(|e| Stop::Infra(anyhow::anyhow!("preparing the replayed events' commit: {e}")))?;
        // Keep what the overlay knows as a read cache: most events touch a key an earlier batch
        // wrote, and a Redis read per event is most of a replay's cost. What it knows is what
        // Redis holds once this commit is in; keys it forgets (or all, past the cache's size)
        // are read from Redis, so only after the commit.
        let forgot = call.overlay.settle();
        let reset = call.overlay.len() > CACHED_KEYS;
        if reset {
            call.overlay = Overlay::new();
        }
        self.settled().await?;
        let store = svc.store.clone();
        *self.in_flight = Some(tokio::spawn(async move { store.commit_prepared(args).await }));
        if forgot || reset {
            self.settled().await?;
        }
        Ok(())
    }

    /// Waits for the commit in flight, if any.
    async fn settled(&mut self) -> Result<(), Stop> {
        let Some(commit) = self.in_flight.take() else { return Ok(()) };
        match commit.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match redis_failure(e) {
                e if e.is_script() => Err(Stop::Script(anyhow::anyhow!("committing replayed events: {e}"))),
                e => Err(Stop::Infra(anyhow::anyhow!("committing replayed events: {e}"))),
            },
            Err(e) => Err(Stop::Infra(anyhow::anyhow!("committing replayed events: {e}"))),
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
            if svc.store.partitioned.is_some() {
                // The first to set the service's pointer picks the generation; every instance
                // then points the partitions at it (the same namespace: a repeat changes
                // nothing, and one that died half-way is finished by the next).
                let _: () = redis::cmd("SET").arg(state::active_key(&svc.name)).arg(&ns).arg("NX").query_async(&mut con).await?;
                if let Some(picked) = redis::cmd("GET").arg(state::active_key(&svc.name)).query_async::<Option<String>>(&mut con).await? {
                    svc.store.swap(None, &picked, svc.partitions).await?;
                }
                continue;
            }
            let _: () = redis::cmd("SET").arg(state::partitions_key(&ns)).arg(svc.partitions).query_async(&mut con).await?;
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
                // Partitioned state may lose one partition's shard alone: the others' pointers
                // go too, so that no live commit moves on while the rebuild reads its bounds
                // (unless an instance is rebuilding already: its swap sets them one by one).
                let rebuilding = async {
                    redis::cmd("EXISTS").arg(state::rebuild_lock_key(&svc.name)).query_async::<bool>(&mut svc.store.con.clone()).await.unwrap_or(true)
                };
                if svc.store.partitioned.is_some() && !rebuilding.await {
                    if let Err(e) = svc.store.drop_pointers(&svc.active_ns()).await {
                        tracing::warn!(error = %e, "could not drop the remaining partitions' pointers");
                        continue;
                    }
                }
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
    /// Labels the gauges `sequent_rebuild_events_done` / `_expected` and `sequent_rebuild_running`.
    service: String,
    bar: indicatif::ProgressBar,
    started: Instant,
    last_log: std::cell::Cell<Instant>,
    done: std::cell::Cell<u64>,
    /// The service's shared counters (done, expected), read by `consume::rebuild_requests`.
    counters: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// `sequent_rebuild_events_total`, looked up once (it moves with every event).
    events_total: metrics::Counter,
}

impl Drop for Progress {
    /// The rebuild ended (swapped in, or failed: a next attempt starts its own progress).
    fn drop(&mut self) {
        metrics::gauge!("sequent_rebuild_running", "service" => self.service.clone()).set(0.0);
    }
}

impl Progress {
    fn new(svc: &Service, total: u64) -> Progress {
        let service = svc.name.as_str();
        svc.rebuild_progress[0].store(0, std::sync::atomic::Ordering::Relaxed);
        svc.rebuild_progress[1].store(total, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!("sequent_rebuild_running", "service" => service.to_string()).set(1.0);
        metrics::gauge!("sequent_rebuild_events_done", "service" => service.to_string()).set(0.0);
        metrics::gauge!("sequent_rebuild_events_expected", "service" => service.to_string()).set(total as f64);
        let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("rebuild {bar:40} {pos}/{len} events, {per_sec}, {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        tracing::info!(total, "replaying events");
        Progress {
            service: service.to_string(),
            bar,
            started: Instant::now(),
            last_log: std::cell::Cell::new(Instant::now()),
            done: std::cell::Cell::new(0),
            counters: svc.rebuild_progress.clone(),
            events_total: metrics::counter!("sequent_rebuild_events_total"),
        }
    }

    fn step(&self, pending: u64) {
        let done = self.done.get() + 1;
        self.done.set(done);
        self.counters[0].store(done, std::sync::atomic::Ordering::Relaxed);
        self.counters[1].store(done + pending, std::sync::atomic::Ordering::Relaxed);
        self.bar.set_length(done + pending);
        self.bar.set_position(done);
        if self.last_log.get().elapsed() >= Duration::from_secs(5) {
            self.last_log.set(Instant::now());
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let left = pending as f64 / rate.max(0.001);
            tracing::info!(done, pending, rate = format!("{rate:.0}/s"), left = format!("{left:.0}s"), "rebuild progress");
        }
        self.events_total.increment(1);
        if done % 256 == 0 || pending == 0 {
            metrics::gauge!("sequent_rebuild_events_done", "service" => self.service.clone()).set(done as f64);
            metrics::gauge!("sequent_rebuild_events_expected", "service" => self.service.clone()).set((done + pending) as f64);
        }
    }

    fn finish(&self, ns: &str) {
        self.bar.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        let done = self.done.get();
        tracing::info!(ns, events = done, seconds = format!("{secs:.1}"), rate = format!("{:.0}/s", done as f64 / secs.max(0.001)), "rebuild done: new state swapped in");
    }
}
