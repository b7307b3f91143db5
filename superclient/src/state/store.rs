//! The Redis side of a service's state: namespaces, reads made atomically with a look at the
//! active namespace, and the one script that commits a call's (or a batch's) writes together
//! with its checkpoint, after checking that what it read is still current.
//!
//! Redis may lose everything (restarted without persistence, flushed). Then `active` is gone:
//! every read of a handler, route or live listener is made atomically with a look at `active`
//! ([`Store::read`]) and fails as an infrastructure error when the namespace it reads is not
//! the active one, so nothing is decided, sent or answered from a lost (empty) or half-rebuilt
//! state; commits refuse for the same reason; `consume::rebuild::watch` notices and rebuilds.
//!
//! Serializable state: every read from Redis comes with the key's revision (`<ns>:__rev`, moved
//! by each commit that writes the key); a commit refuses if a key it read has moved since, and
//! the caller runs its handler (or route) again on fresh state. A call about to send events
//! decided on what it read first checks those reads and locks them ([`Store::lock_reads`]) until
//! its commit: a send cannot be undone, so nobody may change what it was decided on meanwhile.
//! A key the call also wrote is locked exclusively; a key it only read, shared: readers do not
//! wait for each other, writers wait for both (superclient/README.md, "Serializable state").

use super::keys::*;
use super::overlay::Overlay;
use super::connection::{Con, Target};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What must hold for a commit to apply; checked atomically with it.
#[derive(Debug, Clone)]
pub enum Guard {
    /// Nothing (HTTP routes).
    None,
    /// Events `first..=last` of `partition`: none of them applied yet (the checkpoint is below
    /// `first`); the checkpoint moves to `last`.
    Checkpoint { partition: u32, first: u64, last: u64 },
    /// The held list of `key` still starts with `seq` (a release step); the caller pops it.
    HeldHead { key: String, seq: u64 },
}

/// A commit ready to run ([`Store::prepare_commit`]): the script argument for its namespace
/// (none when a rebuild's batch wrote nothing there), and for each other partition it touched.
pub struct Prepared {
    main: Option<(String, String)>,
    side: Vec<(String, String)>,
    live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    Applied,
    /// The guard said this was applied already (a redelivery, or another owner was faster).
    AlreadyApplied,
    /// The namespace the call read from is no longer active (a rebuild swapped in a new one):
    /// run it again against the new namespace.
    NamespaceMoved,
    /// A key the call read was written by another commit since: run it again on fresh state.
    Stale(String),
    /// A key the call wrote is locked by another call that sent events decided on it: wait a
    /// moment and try again.
    Locked(String),
}

/// The locks a call holds: script key (revision) → exclusive (true) or shared (false).
pub type Locks = BTreeMap<String, bool>;

/// What a call commits.
pub struct Changes<'a> {
    /// The namespace the call read from (None for a rebuild, which writes to a namespace that
    /// is not active yet and is read by nobody else).
    pub expected_active: Option<&'a str>,
    pub ns: &'a str,
    pub guard: Guard,
    pub overlay: &'a Overlay,
    /// The lock owner of this call, if it locked its reads before sending.
    pub owner: Option<&'a str>,
    /// The keys it locked (released by the commit).
    pub locked: &'a Locks,
}

/// How long a lock taken before a send holds if its owner never commits (it died).
pub const LOCK_TTL: Duration = Duration::from_secs(10);

/// Lua shared by the commit, lock and unlock scripts. Locks: `a.locks` (hash: key →
/// `<owner>:<deadline ms>`) holds the exclusive ones; `a.rlocks .. key` (hash: owner → deadline
/// ms) the shared ones of a key. A lock past its deadline is nobody's (its owner died).
macro_rules! lua_locks {
    () => {
        r#"
local clock = nil
-- Redis's clock (ms), asked once and only when a lock or a wait needs it.
local function now_ms()
  if clock == nil then local t = redis.call('TIME'); clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end
  return clock
end
-- `cmd [first] list...` in chunks (Lua's unpack takes a few thousand values at most): the
-- replies joined (tables) or summed (numbers).
local function chunked(cmd, first, list)
  local out, sum = {}, 0
  for i = 1, #list, 500 do
    local last = math.min(i + 499, #list)
    local r
    if first then r = redis.call(cmd, first, unpack(list, i, last)) else r = redis.call(cmd, unpack(list, i, last)) end
    if type(r) == 'table' then for _, v in ipairs(r) do out[#out + 1] = v end else sum = sum + r end
  end
  return out, sum
end
-- The first of `keys` on which another owner holds a valid exclusive lock, if any. Drops the
-- expired ones.
local function held_by_other(a, keys)
  local held, gone = chunked('HMGET', a.locks, keys), {}
  for i, k in ipairs(keys) do
    if held[i] then
      local o, deadline = string.match(held[i], '^(.*):(%d+)$')
      if tonumber(deadline) <= now_ms() then gone[#gone + 1] = k elseif o ~= a.owner then return k end
    end
  end
  if #gone > 0 then chunked('HDEL', a.locks, gone) end
  return nil
end
-- The first of `keys` on which another owner holds a valid shared lock, if any, and the
-- shared-lock hashes in which the owner has one of its own. Drops expired entries.
local function read_by_other(a, keys)
  local rks, own = {}, {}
  for i, k in ipairs(keys) do rks[i] = a.rlocks .. k end
  local _, n = chunked('EXISTS', nil, rks)
  if n == 0 then return nil, own end
  for i, k in ipairs(keys) do
    local entries, gone, found = redis.call('HGETALL', rks[i]), {}, false
    for j = 1, #entries, 2 do
      local o, deadline = entries[j], tonumber(entries[j + 1])
      if deadline <= now_ms() then gone[#gone + 1] = o elseif o == a.owner then own[#own + 1] = rks[i] else found = true end
    end
    if #gone > 0 then chunked('HDEL', rks[i], gone) end
    if found then return k, own end
  end
  return nil, own
end
-- Releases the owner's locks: exclusive ones on `a.xlocked`, shared ones on `a.slocked`.
local function release(a)
  if a.owner == '' then return end
  if #a.xlocked > 0 then
    local held, mine = chunked('HMGET', a.locks, a.xlocked), {}
    for i, k in ipairs(a.xlocked) do
      if held[i] and string.sub(held[i], 1, #a.owner + 1) == a.owner .. ':' then mine[#mine + 1] = k end
    end
    if #mine > 0 then chunked('HDEL', a.locks, mine) end
  end
  for _, k in ipairs(a.slocked) do redis.call('HDEL', a.rlocks .. k, a.owner) end
end
-- Whether the revisions read (`reads`: key → revision) are all current; else the first stale.
local function stale(revs, reads)
  local names = {}
  for k, _ in pairs(reads) do names[#names + 1] = k end
  if #names == 0 then return nil end
  local now = chunked('HMGET', revs, names)
  for i, k in ipairs(names) do if tonumber(now[i] or '0') ~= reads[k] then return k end end
  return nil
end
"#
    };
}

/// Applies a call's writes and the checkpoint in one step. Redis runs a script atomically, but
/// does not roll back on error, so the types of the touched keys are checked before anything is
/// written (those the call's reads did not prove: [`Overlay::type_checks`]). Returns `{code,
/// detail}`: 1 applied, 0 already applied, -1 namespace moved, -2 frozen (retry), -3 stale read
/// (detail: the key), -4 locked (detail: the key: another call holds a lock of either kind on a
/// key written).
const COMMIT_SCRIPT: &str = concat!(
    lua_locks!(),
    r#"
local a = cjson.decode(ARGV[1])
if a.expected ~= '' then
  local cur = redis.call('MGET', a.active, a.freeze)
  if cur[1] ~= a.expected then return {-1, ''} end
  if cur[2] then return {-2, ''} end
end
if a.gkind == 'ckpt' then
  if tonumber(redis.call('GET', a.gkey) or '0') >= tonumber(a.gfirst) then return {0, ''} end
elseif a.gkind == 'head' then
  if redis.call('LINDEX', a.gkey, 0) ~= a.gval then return {0, ''} end
end
if #a.bumps > 0 then
  local k = stale(a.revs, a.reads)
  if k then return {-3, k} end
  k = held_by_other(a, a.bumps) or read_by_other(a, a.bumps)
  if k then return {-4, k} end
end
for _, c in ipairs(a.checks) do
  local t = redis.call('TYPE', c[1]).ok
  if t ~= 'none' and t ~= c[2] then
    return redis.error_reply('WRONGTYPE key ' .. c[1] .. ' holds a ' .. t .. ' but the handler used it as a ' .. c[2])
  end
end
for _, op in ipairs(a.ops) do
  if op[1] == 'VMAX' then
    -- {'VMAX', hash, field, version, field, version...}: each field keeps the highest.
    local fields = {}
    for i = 3, #op, 2 do fields[#fields + 1] = op[i] end
    local cur, higher = chunked('HMGET', op[2], fields), {}
    for j, f in ipairs(fields) do
      local v = op[2 * j + 2]
      if tonumber(v) > tonumber(cur[j] or '-1') then higher[#higher + 1] = f; higher[#higher + 1] = v end
    end
    if #higher > 0 then chunked('HSET', op[2], higher) end
  else
    redis.call(unpack(op))
  end
end
if #a.bumps > 0 then
  -- Each revision written moves on by one: one read and one write for all of them.
  local old, revs = chunked('HMGET', a.revs, a.bumps), {}
  for i, k in ipairs(a.bumps) do revs[#revs + 1] = k; revs[#revs + 1] = tonumber(old[i] or '0') + 1 end
  chunked('HSET', a.revs, revs)
end
release(a)
if a.gkind == 'ckpt' then redis.call('SET', a.gkey, a.glast) end
if #a.written > 0 then
  -- Waits on a key written (Store::watch drops the ones past their deadline).
  local deadlines, woken = chunked('ZMSCORE', a.watch, a.written), {}
  for i, k in ipairs(a.written) do
    if deadlines[i] and tonumber(deadlines[i]) >= now_ms() then woken[#woken + 1] = k end
  end
  if #woken > 0 then redis.call('PUBLISH', a.channel, table.concat(woken, '\n')) end
end
return {1, ''}
"#
);

/// The shared part of the arguments of the commit and (un)lock scripts: where the locks are and
/// which of them the owner holds.
fn lock_fields(ns: &str, owner: &str, locked: &Locks) -> serde_json::Value {
    let of = |kind: bool| locked.iter().filter(|(_, x)| **x == kind).map(|(k, _)| k).collect::<Vec<_>>();
    serde_json::json!({
        "locks": locks_key(ns),
        "rlocks": read_locks_key(ns, ""),
        "owner": owner,
        "xlocked": of(true),
        "slocked": of(false),
    })
}

/// Joins `b`'s fields into `a` (both JSON objects).
fn merged(mut a: serde_json::Value, b: serde_json::Value) -> String {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a.to_string()
}

/// The overlay's commands, with its version notes (`VMAX`, which only ever touch the versions
/// hash) joined into one per hash at the end, keeping each key's highest version.
fn commit_ops(overlay: &Overlay) -> Vec<Cow<'_, [String]>> {
    let mut highest: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut out = Vec::with_capacity(overlay.ops().len());
    for op in overlay.ops() {
        if op[0] == "VMAX" {
            let v = op[3].parse().unwrap_or(0);
            let e = highest.entry(&op[1]).or_default().entry(&op[2]).or_insert(v);
            *e = (*e).max(v);
        } else {
            out.push(Cow::Borrowed(op.as_slice()));
        }
    }
    for (hash, fields) in highest {
        let mut op = vec!["VMAX".to_string(), hash.to_string()];
        for (f, v) in fields {
            op.extend([f.to_string(), v.to_string()]);
        }
        out.push(Cow::Owned(op));
    }
    out
}

/// A commit's commands and type checks in one namespace.
type Part<'a> = (Vec<Cow<'a, [String]>>, Vec<(String, &'static str)>);

/// The one argument of [`COMMIT_SCRIPT`]: everything it needs, as JSON, written from borrowed
/// parts (a rebuild's batch commits hundreds of ops). `ops` and `checks` are the overlay's
/// ([`commit_ops`], [`Overlay::type_checks`]), or the part of them in one namespace; the active
/// pointer, freeze and watch set checked are those of that namespace's slot.
#[derive(serde::Serialize)]
struct CommitArgs<'a> {
    active: String,
    expected: &'a str,
    freeze: String,
    gkind: &'a str,
    gkey: String,
    gfirst: String,
    glast: String,
    gval: String,
    reads: &'a HashMap<String, u64>,
    written: Vec<String>,
    bumps: Vec<String>,
    checks: &'a [(String, &'static str)],
    ops: &'a [Cow<'a, [String]>],
    revs: String,
    watch: String,
    channel: String,
    #[serde(flatten)]
    locks: serde_json::Value,
}

fn commit_args(service: &str, changes: &Changes<'_>, ops: &[Cow<'_, [String]>], checks: &[(String, &'static str)]) -> String {
    let ns = changes.ns;
    let (kind, gkey, first, last, head) = match &changes.guard {
        Guard::None => ("", String::new(), 0, 0, String::new()),
        Guard::Checkpoint { partition, first, last } => ("ckpt", applied_key(ns, *partition), *first, *last, String::new()),
        Guard::HeldHead { key, seq } => ("head", held_key(ns, key), 0, 0, seq.to_string()),
    };
    let overlay = changes.overlay;
    let live = changes.expected_active.is_some();
    let no_reads = HashMap::new();
    let commit = CommitArgs {
        active: slot_key(ns, "active"),
        expected: changes.expected_active.unwrap_or(""),
        freeze: slot_key(ns, "swap-freeze"),
        gkind: kind,
        gkey,
        gfirst: first.to_string(),
        glast: last.to_string(),
        gval: head,
        reads: if live { overlay.reads() } else { &no_reads },
        // A rebuild's namespace is read by nobody: no revisions, no announcements.
        written: if live { overlay.written() } else { Vec::new() },
        bumps: if live { overlay.revisions_written() } else { Vec::new() },
        checks,
        ops,
        revs: revisions_key(ns),
        watch: slot_key(ns, "watch"),
        channel: commits_channel(service),
        locks: lock_fields(ns, changes.owner.unwrap_or(""), changes.locked),
    };
    serde_json::to_string(&commit).expect("strings and numbers serialise")
}

/// Before a call sends events decided on what it read: checks the reads are still current and
/// locks them for its owner until its commit (or the deadline). The keys in `a.exclusive`
/// (read and written) are locked exclusively: refused while another owner holds a valid lock
/// of either kind on them. The others (only read) get a shared lock, refused only by another
/// owner's valid exclusive lock: calls that only read a key do not wait for each other.
/// `{1, ''}` locked; `{-1, ''}` namespace moved; `{-3, key}` stale; `{-4, key}` locked by
/// another call.
const LOCK_SCRIPT: &str = concat!(
    lua_locks!(),
    r#"
local a = cjson.decode(ARGV[1])
if redis.call('GET', a.active) ~= a.expected then return {-1, ''} end
local k = stale(a.revs, a.reads)
if k then return {-3, k} end
local names, exclusive = {}, {}
for k, _ in pairs(a.reads) do names[#names + 1] = k end
for _, k in ipairs(a.exclusive) do exclusive[k] = true end
k = held_by_other(a, names)
if k then return {-4, k} end
local own
k, own = read_by_other(a, a.exclusive)
if k then return {-4, k} end
local deadline, xs = now_ms() + a.ttl, {}
for _, k in ipairs(a.exclusive) do xs[#xs + 1] = k; xs[#xs + 1] = a.owner .. ':' .. deadline end
if #xs > 0 then chunked('HSET', a.locks, xs) end
-- Taking a key exclusively replaces the owner's shared lock on it (an upgrade).
for _, rk in ipairs(own) do redis.call('HDEL', rk, a.owner) end
for _, k in ipairs(names) do
  if not exclusive[k] then
    redis.call('HSET', a.rlocks .. k, a.owner, deadline)
    -- The hash goes when its last lock expires, should its owners die.
    redis.call('PEXPIRE', a.rlocks .. k, a.ttl)
  end
end
return {1, ''}
"#
);

/// The one argument of [`LOCK_SCRIPT`]: lock `reads` (key → revision read), `exclusive` of
/// them exclusively, the others shared.
fn lock_args(ns: &str, reads: &HashMap<String, u64>, exclusive: &[String], owner: &str) -> String {
    let lock = serde_json::json!({
        "active": slot_key(ns, "active"),
        "expected": ns,
        "reads": reads,
        "exclusive": exclusive,
        "revs": revisions_key(ns),
        "ttl": LOCK_TTL.as_millis() as u64,
    });
    merged(lock, lock_fields(ns, owner, &Locks::new()))
}

/// Releases the locks of an owner (a call that locked, then failed): `ARGV[1]` as
/// [`lock_fields`] makes it.
const UNLOCK_SCRIPT: &str = concat!(
    lua_locks!(),
    r#"
release(cjson.decode(ARGV[1]))
return 0
"#
);

/// Makes a rebuilt namespace the active one, but only if it has applied at least everything the
/// current one has, partition by partition (live instances keep applying to the old one while
/// the rebuild runs), and lifts the rebuild's freeze. Returns -1 on success, or the first
/// partition that is still behind. The new namespace notes the partition count its checkpoints
/// are for (`keys::partitions_key`). ARGV: pointer, old namespace ('' none), new namespace,
/// partition count, freeze, first and last partition compared, and '1' when a pointer found
/// missing is taken as the old one (a partition of partitioned state whose shard was lost, or
/// a rebuild from nothing replacing whatever is there) and one found swapped already as done
/// (an earlier try swapped it, then found a later partition behind). A partitioned service
/// swaps each partition's pointer (its partition alone compared), then the service's (none
/// compared).
const SWAP_SCRIPT: &str = r#"
local cur = redis.call('GET', ARGV[1])
if cur == false then cur = '' end
if cur ~= ARGV[2] and not (ARGV[8] == '1' and (cur == '' or cur == ARGV[3] or ARGV[2] == '')) then
  return redis.error_reply('the active namespace changed from ' .. ARGV[2] .. ' to ' .. cur .. ' during the rebuild')
end
if ARGV[2] ~= '' then
  for p = tonumber(ARGV[6]), tonumber(ARGV[7]) do
    local old = tonumber(redis.call('GET', ARGV[2] .. ':__applied:' .. p) or '0')
    local new = tonumber(redis.call('GET', ARGV[3] .. ':__applied:' .. p) or '0')
    if new < old then return p end
  end
end
redis.call('SET', ARGV[3] .. ':__partitions', ARGV[4])
redis.call('SET', ARGV[1], ARGV[3])
if redis.call('GET', ARGV[5]) == ARGV[3] then redis.call('DEL', ARGV[5]) end
return -1
"#;

/// Lifts a rebuild's freeze (`KEYS[1]`) if it is still the one of namespace `ARGV[1]`.
const UNFREEZE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The next generation for a new namespace, above `ARGV[1]` (the newest this instance knows
/// of): after Redis lost its data the counter restarts at 1, and a namespace name must never
/// come back with other content while someone may still hold it.
const GENERATION_SCRIPT: &str = r#"
local g = redis.call('INCR', KEYS[1])
if g <= tonumber(ARGV[1]) then g = tonumber(ARGV[1]) + 1; redis.call('SET', KEYS[1], g) end
return g
"#;

/// One SCAN step, in a script so that a cluster runs it on the node of `KEYS[1]`'s slot (the
/// pattern itself, whose hash tag is the namespace's), where every key of the namespace is (a
/// plain SCAN would go to any node).
const SCAN_SCRIPT: &str = r#"
return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)
"#;

#[derive(Clone)]
pub struct Store {
    pub con: Con,
    pub service: String,
    /// The partition count when the service's state is partitioned (`state = "partitioned"`):
    /// namespace `{<svc>}@<g>` then names the generation, and partition p's keys are in
    /// `{<svc>.<p>}@<g>` ([`partition_namespace`]).
    pub partitioned: Option<u32>,
    commit: std::sync::Arc<redis::Script>,
    lock: std::sync::Arc<redis::Script>,
    unlock: std::sync::Arc<redis::Script>,
    swap: std::sync::Arc<redis::Script>,
    unfreeze: std::sync::Arc<redis::Script>,
    generation: std::sync::Arc<redis::Script>,
    scan: std::sync::Arc<redis::Script>,
}

impl Store {
    /// Connects, retrying with back-off until Redis answers (it may start after us). Later
    /// disconnects are handled by the connection, which reconnects on its own. `url` names one
    /// node or a cluster (`connection::Target`).
    pub async fn connect(url: &str, service: &str) -> anyhow::Result<Store> {
        let target = Target::parse(url).map_err(|e| anyhow::anyhow!("bad Redis URL {:?}: {e}", sequent_net::redact_url(url)))?;
        if let Target::Single(url) = &target {
            redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("bad Redis URL {:?}: {e}", sequent_net::redact_url(url)))?;
        }
        let mut delay = Duration::from_millis(200);
        let con = loop {
            match Con::connect(&target).await {
                Ok(con) => break con,
                Err(e) => {
                    tracing::warn!(error = %e, url = sequent_net::redact_url(url), "Redis is not reachable yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        Ok(Store {
            con,
            service: service.to_string(),
            partitioned: None,
            commit: std::sync::Arc::new(redis::Script::new(COMMIT_SCRIPT)),
            lock: std::sync::Arc::new(redis::Script::new(LOCK_SCRIPT)),
            unlock: std::sync::Arc::new(redis::Script::new(UNLOCK_SCRIPT)),
            swap: std::sync::Arc::new(redis::Script::new(SWAP_SCRIPT)),
            unfreeze: std::sync::Arc::new(redis::Script::new(UNFREEZE_SCRIPT)),
            generation: std::sync::Arc::new(redis::Script::new(GENERATION_SCRIPT)),
            scan: std::sync::Arc::new(redis::Script::new(SCAN_SCRIPT)),
        })
    }

    /// The store of a service whose state is partitioned over `partitions` slots (or not: None).
    pub fn with_partitions(mut self, partitions: Option<u32>) -> Store {
        self.partitioned = partitions;
        self
    }

    /// The layout a service's state was last built in (for tools that do not load its script:
    /// `superclient dump`): partitioned when the service key `partitioned` holds a count.
    pub async fn detect_layout(self) -> redis::RedisResult<Store> {
        let n: Option<u32> = redis::cmd("GET").arg(service_key(&self.service, "partitioned")).query_async(&mut self.con.clone()).await?;
        Ok(self.with_partitions(n))
    }

    /// The namespace of partition `p` of namespace `ns`: `ns` itself unless partitioned.
    pub fn partition_ns(&self, ns: &str, p: u32) -> String {
        match self.partitioned {
            Some(_) => partition_namespace(ns, p),
            None => ns.to_string(),
        }
    }

    /// The namespace holding the state of event key (or script key) `key`.
    pub fn key_ns(&self, ns: &str, key: &str) -> String {
        match self.partitioned {
            Some(n) => partition_namespace(ns, key_partition(key, n)),
            None => ns.to_string(),
        }
    }

    /// Every namespace whose keys make up namespace `ns`: its partitions' when partitioned.
    pub fn namespaces(&self, ns: &str) -> Vec<String> {
        match self.partitioned {
            Some(n) => (0..n).map(|p| partition_namespace(ns, p)).collect(),
            None => vec![ns.to_string()],
        }
    }

    /// A new namespace name, `{<service>}@<generation>`, never one of `known` or before it.
    pub async fn new_namespace(&self, known: &str) -> redis::RedisResult<String> {
        let g: u64 =
            self.generation.key(generation_key(&self.service)).arg(generation_of(known)).invoke_async(&mut self.con.clone()).await?;
        Ok(namespace(&self.service, g))
    }

    /// Runs a read of namespace `ns` atomically with a look at the active namespace and the
    /// values of `revisions` (see `keys::Depends`). `Ok(None)` when `ns` is not active (Redis
    /// lost the state, a rebuild is running or swapped another one in): the read's answer would
    /// be wrong, not merely old.
    pub async fn read<T: redis::FromRedisValue>(&self, ns: &str, cmd: &redis::Cmd, revisions: &[String]) -> redis::RedisResult<Option<(T, Vec<u64>)>> {
        let mut pipe = redis::pipe();
        pipe.atomic().get(slot_key(ns, "active")).add_command(cmd.clone());
        if !revisions.is_empty() {
            pipe.cmd("HMGET").arg(revisions_key(ns)).arg(revisions);
        }
        let mut values: Vec<redis::Value> = pipe.query_async(&mut self.con.clone()).await?;
        let revs: Vec<Option<u64>> =
            if revisions.is_empty() { Vec::new() } else { redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))? };
        let value = values.pop().unwrap_or(redis::Value::Nil);
        let active: Option<String> = redis::from_redis_value(values.pop().unwrap_or(redis::Value::Nil))?;
        if active.as_deref() != Some(ns) {
            return Ok(None);
        }
        Ok(Some((redis::from_redis_value(value)?, revs.into_iter().map(|r| r.unwrap_or(0)).collect())))
    }

    /// The active namespace. Partitioned state is active only while every partition's pointer
    /// is there (a shard may be lost alone): then the service's pointer names it.
    pub async fn active(&self) -> redis::RedisResult<Option<String>> {
        let service = namespace(&self.service, 0);
        if self.partitioned.is_none() {
            return self.pointer(&service).await;
        }
        // Asked at once (one round trip on the multiplexed connection): a slot's pointer key
        // does not depend on the generation. Each GET alone, not a pipeline or an MGET, since
        // each partition's pointer is in its own slot (a cluster routes each to its node).
        let namespaces: Vec<String> = std::iter::once(service.clone()).chain(self.namespaces(&service)).collect();
        let pointers = futures::future::try_join_all(namespaces.iter().map(|ns| self.pointer(ns))).await?;
        let (active, partitions) = pointers.split_first().expect("the service's pointer was asked for");
        Ok(active.clone().filter(|_| partitions.iter().all(Option::is_some)))
    }

    /// The active pointer of the slot of namespace `ns` (the service's, or a partition's).
    pub async fn pointer(&self, ns: &str) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET").arg(slot_key(ns, "active")).query_async(&mut self.con.clone()).await
    }

    /// Deletes the active pointers of partitioned state (some partition's is gone with its
    /// shard): every live commit stops, as when the whole state is lost, until it is rebuilt.
    pub async fn drop_pointers(&self, ns: &str) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        for n in self.namespaces(ns).iter().chain([&namespace(&self.service, 0)]) {
            let _: () = redis::cmd("DEL").arg(slot_key(n, "active")).query_async(&mut con).await?;
        }
        Ok(())
    }

    pub async fn applied(&self, ns: &str, partition: u32) -> redis::RedisResult<u64> {
        let key = applied_key(&self.partition_ns(ns, partition), partition);
        let v: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut self.con.clone()).await?;
        Ok(v.unwrap_or(0))
    }

    /// Runs the commit script (see [`COMMIT_SCRIPT`]); waits while a rebuild freezes commits.
    /// Partitioned state: the ops go to their namespace's slot, one script each. A live commit
    /// (`expected_active`) writes in `changes.ns` only, with the reads it checks; elsewhere it
    /// may only note versions of event keys (`VMAX`, which keep the highest and are hints for
    /// `expect = false`), committed after it. A rebuild's batch commits per partition.
    pub async fn commit(&self, changes: &Changes<'_>) -> redis::RedisResult<Commit> {
        self.commit_prepared(self.prepare_commit(changes)?).await
    }

    /// The commit of `changes` as the scripts' arguments, made now: the overlay may change
    /// before [`Store::commit_prepared`] runs them (a rebuild's next batch runs meanwhile).
    /// Refused when a live commit of partitioned state writes outside its partition.
    pub fn prepare_commit(&self, changes: &Changes<'_>) -> redis::RedisResult<Prepared> {
        let (ops, checks) = (commit_ops(changes.overlay), changes.overlay.type_checks());
        let live = changes.expected_active.is_some();
        if self.partitioned.is_none() {
            let main = Some((changes.ns.to_string(), commit_args(&self.service, changes, &ops, &checks)));
            return Ok(Prepared { main, side: Vec::new(), live });
        }
        let mut groups: BTreeMap<String, Part> = BTreeMap::new();
        for op in ops {
            groups.entry(namespace_of_stored(&op[1]).to_string()).or_default().0.push(op);
        }
        for check in checks {
            groups.entry(namespace_of_stored(&check.0).to_string()).or_default().1.push(check);
        }
        let (main_ops, main_checks) = groups.remove(changes.ns).unwrap_or_default();
        if let Some((ns, _)) = groups.iter().find(|(_, (ops, checks))| live && (!checks.is_empty() || ops.iter().any(|op| op[0] != "VMAX"))) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a commit of partitioned state writes outside its partition",
                format!("{} and {ns}", changes.ns),
            )));
        }
        let main = (live || !main_ops.is_empty()).then(|| (changes.ns.to_string(), commit_args(&self.service, changes, &main_ops, &main_checks)));
        let none = Locks::new();
        let side = groups
            .iter()
            .map(|(ns, (ops, checks))| {
                let side = Changes { expected_active: changes.expected_active.map(|_| ns.as_str()), ns, guard: Guard::None, overlay: changes.overlay, owner: None, locked: &none };
                (ns.clone(), commit_args(&self.service, &side, ops, checks))
            })
            .collect();
        Ok(Prepared { main, side, live })
    }

    /// Runs a commit made by [`Store::prepare_commit`]: its namespace's script, then, once that
    /// applied, the other partitions' (version notes of a live commit, a rebuild's batch).
    pub async fn commit_prepared(&self, prepared: Prepared) -> redis::RedisResult<Commit> {
        let outcome = match &prepared.main {
            Some((ns, args)) => self.commit_in(ns, args).await?,
            None => Commit::Applied,
        };
        if outcome != Commit::Applied {
            return Ok(outcome);
        }
        for (ns, args) in &prepared.side {
            match self.commit_in(ns, args).await {
                // A live commit's notes elsewhere are hints: the commit itself applied.
                Err(e) if prepared.live => tracing::warn!(ns, error = %e, "could not note event versions in another partition"),
                other => drop(other?),
            }
        }
        Ok(outcome)
    }

    /// One commit script on the slot of namespace `ns`.
    async fn commit_in(&self, ns: &str, args: &str) -> redis::RedisResult<Commit> {
        let mut invocation = self.commit.prepare_invoke();
        // KEYS[1] only routes the script to the namespace's slot on a cluster.
        invocation.key(slot_key(ns, "active")).arg(args);
        loop {
            let (code, detail): (i64, String) = invocation.invoke_async(&mut self.con.clone()).await?;
            return Ok(match code {
                1 => Commit::Applied,
                0 => Commit::AlreadyApplied,
                // Frozen: a rebuild is catching up right before its swap (briefly; the freeze
                // expires by itself if the rebuild dies). Try again: the commit then applies or
                // finds the state moved. No notification exists for the lift, hence the poll.
                -2 => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                -3 => Commit::Stale(detail),
                -4 => Commit::Locked(detail),
                _ => Commit::NamespaceMoved,
            });
        }
    }

    /// Checks that `reads` (script key → revision) are current in the active namespace `ns` and
    /// locks them for `owner`, `exclusive` of them exclusively (see [`LOCK_SCRIPT`]).
    pub async fn lock_reads(&self, ns: &str, reads: &HashMap<String, u64>, exclusive: &[String], owner: &str) -> redis::RedisResult<Commit> {
        let args = lock_args(ns, reads, exclusive, owner);
        let (code, detail): (i64, String) = self.lock.key(slot_key(ns, "active")).arg(args).invoke_async(&mut self.con.clone()).await?;
        Ok(match code {
            1 => Commit::Applied,
            -3 => Commit::Stale(detail),
            -4 => Commit::Locked(detail),
            _ => Commit::NamespaceMoved,
        })
    }

    /// [`Store::lock_reads`], waiting (up to [`LOCK_TTL`]) while another call holds a lock on a
    /// key read: it commits soon, or its lock expires.
    pub async fn lock_reads_waiting(&self, ns: &str, reads: &HashMap<String, u64>, exclusive: &[String], owner: &str) -> redis::RedisResult<Commit> {
        let deadline = tokio::time::Instant::now() + LOCK_TTL;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.lock_reads(ns, reads, exclusive, owner).await? {
                Commit::Locked(key) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(key, "a key read is locked by another call that sent on it; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return Ok(other),
            }
        }
    }

    /// [`Store::commit`], waiting (up to twice [`LOCK_TTL`]) while another call holds a lock on
    /// a key written.
    pub async fn commit_waiting(&self, changes: &Changes<'_>) -> redis::RedisResult<Commit> {
        let deadline = tokio::time::Instant::now() + LOCK_TTL * 2;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.commit(changes).await? {
                Commit::Locked(key) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(key, "a key written is locked by another call that sent on it; waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                other => return Ok(other),
            }
        }
    }

    /// Releases `owner`'s locks (a call that locked its reads, then failed).
    pub async fn unlock(&self, ns: &str, owner: &str, locked: &Locks) -> redis::RedisResult<()> {
        if locked.is_empty() {
            return Ok(());
        }
        let args = lock_fields(ns, owner, locked).to_string();
        self.unlock.key(locks_key(ns)).arg(args).invoke_async(&mut self.con.clone()).await
    }

    /// Marks `keys` as watched by a `bus:wait` until `deadline_ms` (Unix ms): commits that
    /// write one of them announce it on the commits channel. Drops the marks past their
    /// deadline (here rather than in every commit).
    pub async fn watch(&self, keys: &[String], deadline_ms: u64) -> redis::RedisResult<()> {
        // Partitioned state: each key's mark is in its partition's slot, where its commits look.
        let mut by_set: BTreeMap<String, Vec<&String>> = BTreeMap::new();
        for k in keys {
            by_set.entry(slot_key(&self.key_ns(&namespace(&self.service, 0), k), "watch")).or_default().push(k);
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        for (watch, keys) in by_set {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("ZREMRANGEBYSCORE").arg(&watch).arg("-inf").arg(format!("({now_ms}")).ignore();
            let zadd = pipe.cmd("ZADD").arg(&watch).arg("GT");
            for k in keys {
                zadd.arg(deadline_ms).arg(k);
            }
            zadd.ignore();
            let _: () = pipe.query_async(&mut self.con.clone()).await?;
        }
        Ok(())
    }

    /// Makes commits to the active namespace wait for up to `ttl` while rebuilt namespace `ns`
    /// catches up with it (see rebuild.rs). Setting it again extends it.
    /// (Partitioned state: each partition's freeze, set one after the other.)
    pub async fn freeze(&self, ns: &str, ttl: Duration) -> redis::RedisResult<()> {
        for n in self.namespaces(ns) {
            let _: () = redis::cmd("SET")
                .arg(slot_key(&n, "swap-freeze"))
                .arg(&n)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async(&mut self.con.clone())
                .await?;
        }
        Ok(())
    }

    /// Lifts the freeze of namespace `ns` (a swap lifts it by itself).
    pub async fn unfreeze(&self, ns: &str) -> redis::RedisResult<()> {
        for n in self.namespaces(ns) {
            let _: () = self.unfreeze.key(slot_key(&n, "swap-freeze")).arg(&n).invoke_async(&mut self.con.clone()).await?;
        }
        Ok(())
    }

    /// See [`SWAP_SCRIPT`]. Ok(None) when swapped, Ok(Some(p)) when partition p is still behind.
    /// Partitioned state swaps partition by partition, each only if the new namespace has
    /// applied at least what the old one had in that partition, then the service's pointer.
    /// A partition swapped first is complete for itself; commits never span partitions.
    pub async fn swap(&self, old: Option<&str>, new: &str, partitions: u32) -> anyhow::Result<Option<u32>> {
        let run = |pointer_ns: &str, old: &str, new: &str, range: (i64, i64), missing_ok: bool| {
            let mut invocation = self.swap.prepare_invoke();
            invocation
                .key(slot_key(pointer_ns, "active"))
                .arg(slot_key(pointer_ns, "active"))
                .arg(old)
                .arg(new)
                .arg(partitions)
                .arg(slot_key(pointer_ns, "swap-freeze"))
                .arg(range.0)
                .arg(range.1)
                .arg(if missing_ok { "1" } else { "" });
            invocation
        };
        let Some(_) = self.partitioned else {
            let r: i64 = run(new, old.unwrap_or(""), new, (0, i64::from(partitions) - 1), false).invoke_async(&mut self.con.clone()).await?;
            if r < 0 {
                let _: () = redis::cmd("DEL").arg(service_key(&self.service, "partitioned")).query_async(&mut self.con.clone()).await?;
            }
            return Ok(u32::try_from(r).ok());
        };
        for p in 0..partitions {
            let (from, to) = (old.map(|o| partition_namespace(o, p)).unwrap_or_default(), partition_namespace(new, p));
            let r: i64 = run(&to, &from, &to, (i64::from(p), i64::from(p)), true).invoke_async(&mut self.con.clone()).await?;
            if let Ok(behind) = u32::try_from(r) {
                return Ok(Some(behind));
            }
        }
        let _: i64 = run(new, old.unwrap_or(""), new, (0, -1), true).invoke_async(&mut self.con.clone()).await?;
        let _: () = redis::cmd("SET").arg(service_key(&self.service, "partitioned")).arg(partitions).query_async(&mut self.con.clone()).await?;
        Ok(None)
    }

    /// All keys matching `pattern` (a full Redis glob of one namespace's keys), by SCAN of the
    /// node that holds the namespace's slot.
    pub async fn scan(&self, pattern: &str, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut con = self.con.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self.scan.key(pattern).arg(cursor).arg(pattern).invoke_async(&mut con).await?;
            out.extend(keys);
            if next == 0 || out.len() >= limit {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deletes every key of a namespace (a failed rebuild's leftovers, or a replaced namespace).
    pub async fn drop_namespace(&self, ns: &str) -> redis::RedisResult<usize> {
        let mut con = self.con.clone();
        let mut dropped = 0;
        for n in self.namespaces(ns) {
            let keys = self.scan(&format!("{}:*", glob_escape(&n)), usize::MAX).await?;
            for chunk in keys.chunks(500) {
                let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut con).await?;
            }
            dropped += keys.len();
        }
        Ok(dropped)
    }

    /// The script's keys of a namespace and their values (strings JSON-decoded where they are
    /// JSON, hashes as objects, lists as arrays, sets sorted), for `superclient dump` and tests.
    /// Partitioned state: the keys of every partition, together.
    pub async fn dump(&self, ns: &str) -> redis::RedisResult<BTreeMap<String, serde_json::Value>> {
        let mut keys = Vec::new();
        for n in self.namespaces(ns) {
            keys.extend(self.scan(&format!("{}:*", glob_escape(&n)), usize::MAX).await?);
        }
        let mut con = self.con.clone();
        let mut out = BTreeMap::new();
        for full in keys {
            let stored = &full[namespace_of_stored(&full).len() + 1..];
            let Some(key) = script_name(stored).map(str::to_string) else { continue };
            let kind: String = redis::cmd("TYPE").arg(&full).query_async(&mut con).await?;
            let value = match kind.as_str() {
                "string" => {
                    let v: Option<String> = redis::cmd("GET").arg(&full).query_async(&mut con).await?;
                    v.map(|s| decode(&s)).unwrap_or(serde_json::Value::Null)
                }
                "hash" => {
                    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&full).query_async(&mut con).await?;
                    serde_json::Value::Object(h.into_iter().map(|(k, v)| (k, decode(&v))).collect())
                }
                "list" => {
                    let l: Vec<String> = redis::cmd("LRANGE").arg(&full).arg(0).arg(-1).query_async(&mut con).await?;
                    serde_json::Value::Array(l.iter().map(|v| decode(v)).collect())
                }
                "set" => {
                    let mut s: Vec<String> = redis::cmd("SMEMBERS").arg(&full).query_async(&mut con).await?;
                    s.sort();
                    serde_json::Value::Array(s.iter().map(|v| decode(v)).collect())
                }
                _ => continue,
            };
            out.insert(key, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod script_tests;
