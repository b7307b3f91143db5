//! The Lua runtime: sandboxed states that each load the service script ([`engine`], bounded by a
//! [`budget`], their registrations kept as [`handlers`]), pools of them ([`pool`]), the globals a script sees ([`api`], one file per table), and the conversions
//! between JSON, events and Lua values ([`convert`]).
//!
//! Every call (event handler, rebuild handler, receipt listener, HTTP route) runs with a
//! [`Call`]: the namespace it reads, the Redis writes it buffered (an [`Overlay`]), the events it
//! sent. The Rust side takes the `Call` back when the Lua function returns and commits it. A
//! batch of handlers shares one `Call`, hence one overlay: each handler reads what the earlier
//! ones wrote.

pub(crate) mod api;
pub(crate) mod budget;
pub mod convert;
pub mod engine;
pub mod live_topics;
pub(crate) mod handlers;
pub mod pool;
pub mod replay;
pub mod routes;

use crate::hub::HubOp;
use crate::state::{self, Overlay, Store};
use crate::stream::{EventReader, Gateway};
use sequent_net::DirectReader;
use sequent_protocol::NewEvent;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

pub use api::crypto::Secrets;
pub use api::StaticSpec;
pub use engine::{CallError, Engine};
pub use pool::{Lease, Pool};

/// What the runtime gives the API functions of every state.
pub struct Shared {
    pub service: OnceLock<String>,
    pub redis: OnceLock<Store>,
    pub gateway: OnceLock<Gateway>,
    /// Stored events by direct reads (`bus:last_event`, `bus:events_after`).
    pub events: OnceLock<EventReader>,
    /// The membership bucket by direct reads (`http.call`, `admin.services`).
    pub members: OnceLock<DirectReader>,
    /// JetStream and the events stream's name (`admin.services`: consumer lag).
    pub js: OnceLock<(async_nats::jetstream::Context, String)>,
    /// The keys of `crypto.*` (token signing, password pepper).
    pub secrets: Secrets,
    /// This instance's name (`bus:instance()`).
    pub instance: String,
    pub script_name: String,
    /// The directory of the script: relative paths (`bus:serve_static`) start there.
    pub script_dir: std::path::PathBuf,
    /// Commit announcements of watched keys, for `bus:wait`.
    pub woken: tokio::sync::broadcast::Sender<crate::state::notify::Woken>,
    /// Outbound HTTP (`http.request`, `http.call`).
    pub http: reqwest::Client,
    /// The per-deployment secret `http.call` sends and internal routes require
    /// (`SEQUENT_SERVICE_TOKEN`; none in development mode when it is not set).
    pub service_token: Option<String>,
    /// Live instances of every service type (membership bucket), for `http.call` and `admin.*`.
    pub directory: Arc<crate::cluster::Directory>,
    /// Services run by this process, by name: `http.call` reaches them without the network.
    pub local: Arc<crate::cohost::Cohosted>,
    /// Whether `admin.*` is available (`--admin-api`).
    pub admin_api: bool,
    /// Set by `superclient test`: the state and the stream are kept in memory, and the API reads
    /// and appends there instead of Redis and the gateway.
    pub offline: OnceLock<Arc<Offline>>,
}

/// The state and stream of a service run without servers (`superclient test`).
#[derive(Default)]
pub struct Offline {
    pub state: parking_lot::Mutex<crate::state::Memory>,
    pub log: parking_lot::Mutex<crate::stream::MemoryLog>,
}

impl Shared {
    pub fn new(instance: String, script: &std::path::Path, secrets: Secrets, admin_api: bool, member_timeout: std::time::Duration, local: Arc<crate::cohost::Cohosted>) -> Shared {
        let script_dir = script
            .parent()
            .map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p })
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        Shared {
            instance,
            service: OnceLock::new(),
            redis: OnceLock::new(),
            gateway: OnceLock::new(),
            events: OnceLock::new(),
            members: OnceLock::new(),
            js: OnceLock::new(),
            secrets,
            script_name: script.file_name().map_or_else(|| script.display().to_string(), |n| n.to_string_lossy().into_owned()),
            script_dir,
            woken: crate::state::notify::fanout(),
            service_token: std::env::var(sequent_protocol::declaration::SERVICE_TOKEN_VAR).ok().filter(|t| !t.is_empty()),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                // Below the servers' default --header-read-timeout (30 s), which closes idle
                // connections: a pooled connection is dropped here before the server drops it.
                .pool_idle_timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("an HTTP client without TLS builds"),
            directory: Arc::new(crate::cluster::Directory::new(member_timeout)),
            local,
            admin_api,
            offline: OnceLock::new(),
        }
    }
}

/// The listener type `bus:add_event_listener("*", fn)` registers: every event type, with the
/// same delivery as any listener (sticky per key, effectively once, parking). A listener of the
/// event's own type wins over it.
pub const ALL_TYPES: &str = "*";

/// Limits of each Lua state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub instructions: u64,
    /// How long one call may run (waits for Redis, HTTP, the gateway or `bus:wait` excluded).
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The script's top level: only registration functions work.
    Load,
    /// A live event handler or its receipt listeners: sends are buffered and published when
    /// the handler succeeds, with ids derived from the handled event.
    Handler,
    /// A rebuild handler: sends are ignored (the events exist already).
    Rebuild,
    /// An HTTP route (or a WebSocket's connect handler): sends are published at once and
    /// return their receipt.
    Route,
    /// A live listener (`bus:add_live_listener`): runs on every instance for every event of its
    /// type, in stream order; it may read Redis and push to WebSockets, not send or write.
    Live,
}

impl Mode {
    /// Whether reads are recorded with their revisions, to be checked at commit. A rebuild
    /// writes a namespace nobody else does; a live listener commits nothing.
    pub fn serializable(self) -> bool {
        matches!(self, Mode::Handler | Mode::Route)
    }
}

/// The event a handler is running for.
#[derive(Debug, Clone)]
pub struct Handled {
    pub id: String,
    pub correlation: String,
}

/// The context of one call into Lua (or of a batch of handler calls).
pub struct Call {
    pub mode: Mode,
    /// Namespace the call reads and writes (`{<service>}@<generation>`). Partitioned state
    /// (`partitions`): a handler's is its partition's (`{<service>.<p>}@<generation>`), and it
    /// may touch that partition's keys only; a route's (or a rebuild's) is the service's, and
    /// each key it touches is in its partition's namespace ([`Call::key_namespace`]).
    pub ns: String,
    /// The partition count when the service's state is partitioned.
    pub partitions: Option<u32>,
    pub overlay: Overlay,
    /// Sends of the running handler, not published yet.
    pub sends: Vec<NewEvent>,
    pub handled: Option<Handled>,
    /// Sends made so far while handling this event (numbers the derived ids).
    pub sent: u32,
    /// Set when Redis or the gateway failed under the script: the failure is not the
    /// script's fault, so the event is retried rather than counted towards parking.
    pub infra_error: Option<String>,
    /// WebSocket pushes and joins, applied to this instance's hub when the call commits.
    pub hub_ops: Vec<HubOp>,
    /// Lock owner name of this call, once it locked its reads before a send.
    pub owner: Option<String>,
    /// The keys it locked, exclusively or shared (its commit releases them).
    pub locked: state::Locks,
    /// Set by a route whose reads went stale before it sent anything: run it again.
    pub rerun: bool,
    /// While `bus:wait` runs its condition: the script keys it read from Redis.
    pub watching: Option<Vec<String>>,
    /// Receipt listeners running now inside a route (each route send runs its listener, which
    /// may send again): bounded like a handler's send rounds.
    pub receipt_depth: u32,
}

impl Call {
    pub fn new(mode: Mode, ns: &str) -> Call {
        Call {
            mode,
            ns: ns.to_string(),
            partitions: None,
            overlay: Overlay::new(),
            sends: Vec::new(),
            handled: None,
            sent: 0,
            infra_error: None,
            hub_ops: Vec::new(),
            owner: None,
            locked: state::Locks::new(),
            rerun: false,
            watching: None,
            receipt_depth: 0,
        }
    }

    /// The call for a service whose state is partitioned over `partitions` (None: it is not).
    pub fn partitioned(mut self, partitions: Option<u32>) -> Call {
        self.partitions = partitions;
        self
    }

    /// The namespace holding script key (or event key) `key` for this call. A handler of a
    /// partition of partitioned state may reach no other partition's key: `Err` says which.
    pub fn key_namespace(&self, key: &str) -> Result<String, String> {
        let Some(n) = self.partitions else { return Ok(self.ns.clone()) };
        let p = state::key_partition(key, n);
        match state::namespace_partition(&self.ns) {
            Some(own) if own != p => Err(format!(
                "key {key:?} is in partition {p} ({}), but this handler runs for partition {own}: with state = \"partitioned\" a handler \
                 reads and writes its partition's keys only (give a key the event key's hash tag, e.g. \"count:{{<event key>}}\"; reach other keys through events)",
                match state::hash_tag(key) {
                    Some(tag) => format!("that of its hash tag {{{tag}}}"),
                    None => "that of its whole name, having no hash tag".to_string(),
                }
            )),
            _ => Ok(state::partition_namespace(&self.ns, p)),
        }
    }

    /// The namespace the call's commit (or, `locking`, its locks before a send) runs in.
    /// Partitioned state: the partition of every key it wrote or locked, and of the reads the
    /// commit checks (when it writes) or the lock does (a handler's is its own); a route
    /// touching keys of several partitions so cannot commit atomically and is refused (`Err`
    /// names two of them). A route that only read, several partitions or not, commits no check.
    /// Notes of event versions go to their own partitions after the commit (`Store::commit`).
    pub fn commit_namespace(&self, locking: bool) -> Result<String, String> {
        if self.partitions.is_none() || state::namespace_partition(&self.ns).is_some() {
            return Ok(self.ns.clone());
        }
        let written = self.overlay.written();
        let reads = self.overlay.reads().keys().filter(|_| locking || !written.is_empty());
        let keys = written.iter().cloned().chain(reads.chain(self.locked.keys()).map(|r| r.split('\0').next().unwrap_or(r).to_string()));
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for key in keys {
            let ns = self.key_namespace(&key)?;
            found.entry(ns).or_insert(key);
            if found.len() > 1 {
                let mut two = found.iter();
                let ((a, ka), (b, kb)) = (two.next().expect("two"), two.next().expect("two"));
                return Err(format!(
                    "this route wrote or read keys of two partitions of partitioned state ({ka:?} in {a}, {kb:?} in {b}): a route's commit checks and writes \
                     one partition only (a route may read several partitions when it writes nothing); send events to reach the others"
                ));
            }
        }
        Ok(found.into_keys().next().unwrap_or_else(|| self.ns.clone()))
    }

    /// The namespace holding what this service knows of event key `key` (its `__versions`
    /// entry): partitioned state keeps it in the key's partition, whichever call notes it.
    pub fn versions_namespace(&self, key: &str) -> String {
        match self.partitions {
            Some(n) => state::partition_namespace(&self.ns, state::key_partition(key, n)),
            None => self.ns.clone(),
        }
    }

    /// The namespace of the locks the call holds (all in one, see [`Call::commit_namespace`]).
    pub fn locks_namespace(&self) -> String {
        let first = self.locked.keys().next().map(|r| r.split('\0').next().unwrap_or(r));
        first.and_then(|k| self.key_namespace(k).ok()).unwrap_or_else(|| self.ns.clone())
    }

    /// What this call must lock before a send (`state::store` explains the locks): its reads
    /// not locked yet, and those locked shared that it must now hold exclusively; with the
    /// ones to lock exclusively. A read is locked exclusively when the call wrote it too, or
    /// whatever it wrote when `any_write` says the call may still write any key after the send
    /// (a route goes on running, a receipt listener runs after the send is stored).
    pub fn lock_request(&self, any_write: bool) -> (std::collections::HashMap<String, u64>, Vec<String>) {
        let written: BTreeSet<String> = if any_write { BTreeSet::new() } else { self.overlay.revisions_written().into_iter().collect() };
        let (mut reads, mut exclusive) = (std::collections::HashMap::new(), Vec::new());
        for (k, revision) in self.overlay.reads() {
            let x = any_write || written.contains(k);
            match self.locked.get(k) {
                Some(true) => continue,
                Some(false) if !x => continue,
                _ => {}
            }
            reads.insert(k.clone(), *revision);
            if x {
                exclusive.push(k.clone());
            }
        }
        (reads, exclusive)
    }

    /// Records the locks a [`Call::lock_request`] took.
    pub fn note_locked(&mut self, reads: std::collections::HashMap<String, u64>, exclusive: &[String]) {
        for k in reads.into_keys() {
            let x = exclusive.contains(&k);
            self.locked.insert(k, x);
        }
    }

    /// Whether the call writes a key it holds only a shared lock on: it read the key before a
    /// send, and writes it after (a later handler of the batch).
    pub fn writes_shared_locked(&self) -> bool {
        self.locked.values().any(|x| !x) && self.overlay.revisions_written().iter().any(|k| self.locked.get(k) == Some(&false))
    }

    /// Starts the next handler of a batch on the same overlay.
    pub fn next_event(&mut self, handled: Handled) {
        self.handled = Some(handled);
        self.sent = 0;
        self.sends.clear();
        self.infra_error = None;
    }
}

/// What the script registered (the same in every state of the pool).
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub service: String,
    /// What the service declared (`bus:register(name, {...})`), with the types it listens to.
    pub declaration: sequent_protocol::Declaration,
    /// Live listeners; `true` when the script asked for it to be used in rebuilds too.
    pub listeners: BTreeMap<String, bool>,
    pub rebuild: BTreeSet<String>,
    pub receipts: BTreeSet<String>,
    /// (path pattern, method), in registration order.
    pub routes: Vec<(String, String)>,
    /// Listeners re-run at once on fresh state when one of their sends conflicts.
    pub rerun: BTreeSet<String>,
    /// Types of the live listeners (every instance, every event, not sticky).
    pub live: BTreeSet<String>,
    /// The topics a live listener declared it pushes to (`{topics = ...}`), by type.
    pub live_topics: BTreeMap<String, live_topics::LiveTopics>,
    /// WebSocket path patterns, in registration order.
    pub websockets: Vec<String>,
    /// Static file trees.
    pub statics: Vec<StaticSpec>,
    /// Receipt listeners get the original system's statuses (`success`, `inconsistent`):
    /// see [`convert::speaks_original_statuses`].
    pub original_statuses: bool,
}

impl Spec {
    /// The event types the service consumes: listeners and rebuild handlers (as in the
    /// original, a rebuild handler's type is also delivered live so versions stay known).
    /// With a `*` listener that is `["*"]` alone (a consumer filter on every type; JetStream
    /// refuses overlapping filters).
    pub fn types(&self) -> Vec<String> {
        let mut t: BTreeSet<String> = self.listeners.keys().cloned().collect();
        t.extend(self.rebuild.iter().cloned());
        if t.contains(ALL_TYPES) {
            return vec![ALL_TYPES.to_string()];
        }
        t.into_iter().collect()
    }

    /// Whether events of `event_type` reach this service (its types, or `*`).
    pub fn consumes(&self, event_type: &str) -> bool {
        self.listeners.contains_key(ALL_TYPES) || self.listeners.contains_key(event_type) || self.rebuild.contains(event_type)
    }

    /// Whether the live listener of `event_type` re-runs on conflicts (its own, or the `*` one's
    /// when it has none).
    pub fn reruns(&self, event_type: &str) -> bool {
        match self.listeners.contains_key(event_type) {
            true => self.rerun.contains(event_type),
            false => self.rerun.contains(ALL_TYPES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(listeners: &[(&str, bool)], rebuild: &[&str], rerun: &[&str]) -> Spec {
        Spec {
            listeners: listeners.iter().map(|(t, r)| (t.to_string(), *r)).collect(),
            rebuild: rebuild.iter().map(|t| t.to_string()).collect(),
            rerun: rerun.iter().map(|t| t.to_string()).collect(),
            ..Spec::default()
        }
    }

    #[test]
    fn an_all_types_listener_consumes_every_type_through_one_filter() {
        let s = spec(&[("*", true), ("Special", false)], &["Rebuilt"], &["*"]);
        assert_eq!(s.types(), ["*"], "one filter: JetStream refuses overlapping ones");
        assert!(s.consumes("Anything") && s.consumes("Special"));
        assert!(s.reruns("Anything"), "the * listener's option applies to the types it handles");
        assert!(!s.reruns("Special"), "a type's own listener keeps its own option");
        let plain = spec(&[("A", false)], &["B"], &[]);
        assert_eq!(plain.types(), ["A", "B"]);
        assert!(!plain.consumes("C"));
    }

    /// What a call locks before a send: shared what it only read, exclusive what it also wrote
    /// (or everything when it may still write after the send), and an upgrade when it writes a
    /// key it holds shared.
    #[test]
    fn a_call_locks_shared_what_it_only_read() {
        let mut call = Call::new(Mode::Handler, "s@1");
        call.overlay.note_read("a", 1);
        call.overlay.note_read("b", 2);
        call.overlay.set("b", "s@1:b", "1".into());
        let (reads, exclusive) = call.lock_request(false);
        assert_eq!(reads.len(), 2);
        assert_eq!(exclusive, ["b"]);
        assert_eq!(call.lock_request(true).1.len(), 2, "a route locks everything exclusively");
        call.note_locked(reads, &exclusive);
        assert_eq!(call.locked.get("a"), Some(&false));
        assert_eq!(call.locked.get("b"), Some(&true));
        assert!(call.lock_request(false).0.is_empty(), "nothing new to lock");
        assert!(!call.writes_shared_locked());
        // A later write of a: the call now holds it too weakly.
        call.overlay.set("a", "s@1:a", "2".into());
        assert!(call.writes_shared_locked());
        let (reads, exclusive) = call.lock_request(false);
        assert_eq!((reads.keys().collect::<Vec<_>>(), exclusive.clone()), (vec![&"a".to_string()], vec!["a".to_string()]));
        call.note_locked(reads, &exclusive);
        assert!(!call.writes_shared_locked());
    }

    /// Partitioned state: a handler keeps to its partition's keys; a route reaches any key in
    /// its partition, reads several, and commits (or locks before a send) in one only.
    #[test]
    fn partitioned_state_keeps_handlers_to_their_partition_and_route_commits_to_one() {
        let of = |k: &str| state::key_partition(k, 16);
        let (a, b) = ("acc-1", (2..).map(|i| format!("acc-{i}")).find(|k| of(k) != of("acc-1")).unwrap());
        let ns_a = state::partition_namespace("{ledger}@2", of(a));
        let handler = Call::new(Mode::Handler, &ns_a).partitioned(Some(16));
        assert_eq!(handler.key_namespace("count:{acc-1}"), Ok(ns_a.clone()));
        assert_eq!(handler.key_namespace(a), Ok(ns_a.clone()), "a key without a tag: its whole name");
        let refused = handler.key_namespace(&format!("count:{{{b}}}")).unwrap_err();
        assert!(refused.contains(&format!("partition {}", of(&b))) && refused.contains(&format!("partition {}", of(a))), "{refused}");
        assert!(refused.contains(&format!("hash tag {{{b}}}")), "{refused}");
        assert_eq!(handler.versions_namespace(&b), state::partition_namespace("{ledger}@2", of(&b)), "versions of any event key");
        assert_eq!(handler.commit_namespace(false), Ok(ns_a.clone()));

        let mut route = Call::new(Mode::Route, "{ledger}@2").partitioned(Some(16));
        let kb = format!("count:{{{b}}}");
        let ns_b = route.key_namespace(&kb).unwrap();
        assert_eq!(ns_b, state::partition_namespace("{ledger}@2", of(&b)));
        route.overlay.note_read("count:{acc-1}", 1);
        route.overlay.note_read(&state::field_revision(&kb, "f"), 1);
        assert_eq!(route.commit_namespace(false), Ok("{ledger}@2".to_string()), "reading two partitions, writing nothing: nothing checked");
        let two = route.commit_namespace(true).unwrap_err();
        assert!(two.contains("two partitions") && two.contains(&ns_a) && two.contains(&ns_b), "locking reads of two: {two}");
        route.overlay.set(&kb, &state::script_key(&ns_b, &kb), "1".into());
        assert!(route.commit_namespace(false).unwrap_err().contains("two partitions"), "a write checks the reads of the other");
        let mut one = Call::new(Mode::Route, "{ledger}@2").partitioned(Some(16));
        one.overlay.note_read(&kb, 1);
        one.overlay.set(&kb, &state::script_key(&ns_b, &kb), "1".into());
        assert_eq!(one.commit_namespace(false), Ok(ns_b), "one partition: its namespace");
        let plain = Call::new(Mode::Route, "{ledger}@2");
        assert_eq!((plain.key_namespace(&kb), plain.commit_namespace(true)), (Ok("{ledger}@2".to_string()), Ok("{ledger}@2".to_string())));
    }
}
