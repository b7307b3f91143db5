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

/// The one argument of [`COMMIT_SCRIPT`]: everything it needs, as JSON, written from borrowed
/// parts (a rebuild's batch commits hundreds of ops).
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
    checks: Vec<(String, &'static str)>,
    ops: Vec<Cow<'a, [String]>>,
    revs: String,
    watch: String,
    channel: String,
    #[serde(flatten)]
    locks: serde_json::Value,
}

fn commit_args(service: &str, changes: &Changes<'_>) -> String {
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
        active: active_key(service),
        expected: changes.expected_active.unwrap_or(""),
        freeze: swap_freeze_key(service),
        gkind: kind,
        gkey,
        gfirst: first.to_string(),
        glast: last.to_string(),
        gval: head,
        reads: if live { overlay.reads() } else { &no_reads },
        // A rebuild's namespace is read by nobody: no revisions, no announcements.
        written: if live { overlay.written() } else { Vec::new() },
        bumps: if live { overlay.revisions_written() } else { Vec::new() },
        checks: overlay.type_checks(),
        ops: commit_ops(overlay),
        revs: revisions_key(ns),
        watch: watch_key(service),
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
fn lock_args(service: &str, ns: &str, reads: &HashMap<String, u64>, exclusive: &[String], owner: &str) -> String {
    let lock = serde_json::json!({
        "active": active_key(service),
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
/// are for (`keys::partitions_key`).
const SWAP_SCRIPT: &str = r#"
local cur = redis.call('GET', ARGV[1])
if cur == false then cur = '' end
if cur ~= ARGV[2] then return redis.error_reply('the active namespace changed from ' .. ARGV[2] .. ' to ' .. cur .. ' during the rebuild') end
if ARGV[2] ~= '' then
  for p = 0, tonumber(ARGV[4]) - 1 do
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

/// One SCAN step, in a script so that a cluster runs it on the node of `KEYS[1]`'s slot, where
/// every key of the service is (a plain SCAN would go to any node).
const SCAN_SCRIPT: &str = r#"
return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)
"#;

#[derive(Clone)]
pub struct Store {
    pub con: Con,
    pub service: String,
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
            commit: std::sync::Arc::new(redis::Script::new(COMMIT_SCRIPT)),
            lock: std::sync::Arc::new(redis::Script::new(LOCK_SCRIPT)),
            unlock: std::sync::Arc::new(redis::Script::new(UNLOCK_SCRIPT)),
            swap: std::sync::Arc::new(redis::Script::new(SWAP_SCRIPT)),
            unfreeze: std::sync::Arc::new(redis::Script::new(UNFREEZE_SCRIPT)),
            generation: std::sync::Arc::new(redis::Script::new(GENERATION_SCRIPT)),
            scan: std::sync::Arc::new(redis::Script::new(SCAN_SCRIPT)),
        })
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
        pipe.atomic().get(active_key(&self.service)).add_command(cmd.clone());
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

    pub async fn active(&self) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET").arg(active_key(&self.service)).query_async(&mut self.con.clone()).await
    }

    pub async fn applied(&self, ns: &str, partition: u32) -> redis::RedisResult<u64> {
        let v: Option<u64> = redis::cmd("GET").arg(applied_key(ns, partition)).query_async(&mut self.con.clone()).await?;
        Ok(v.unwrap_or(0))
    }

    /// Runs the commit script (see [`COMMIT_SCRIPT`]); waits while a rebuild freezes commits.
    pub async fn commit(&self, changes: &Changes<'_>) -> redis::RedisResult<Commit> {
        self.commit_prepared(self.prepare_commit(changes)).await
    }

    /// The commit of `changes` as the script's argument, made now: the overlay may change
    /// before [`Store::commit_prepared`] runs it (a rebuild's next batch runs meanwhile).
    pub fn prepare_commit(&self, changes: &Changes<'_>) -> String {
        commit_args(&self.service, changes)
    }

    /// Runs a commit made by [`Store::prepare_commit`].
    pub async fn commit_prepared(&self, args: String) -> redis::RedisResult<Commit> {
        let mut invocation = self.commit.prepare_invoke();
        // KEYS[1] only routes the script to the service's slot on a cluster.
        invocation.key(active_key(&self.service)).arg(args);
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
        let args = lock_args(&self.service, ns, reads, exclusive, owner);
        let (code, detail): (i64, String) = self.lock.key(active_key(&self.service)).arg(args).invoke_async(&mut self.con.clone()).await?;
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
        if keys.is_empty() {
            return Ok(());
        }
        let watch = watch_key(&self.service);
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("ZREMRANGEBYSCORE").arg(&watch).arg("-inf").arg(format!("({now_ms}")).ignore();
        let zadd = pipe.cmd("ZADD").arg(&watch).arg("GT");
        for k in keys {
            zadd.arg(deadline_ms).arg(k);
        }
        zadd.ignore();
        pipe.query_async(&mut self.con.clone()).await
    }

    /// Makes commits to the active namespace wait for up to `ttl` while rebuilt namespace `ns`
    /// catches up with it (see rebuild.rs). Setting it again extends it.
    pub async fn freeze(&self, ns: &str, ttl: Duration) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(swap_freeze_key(&self.service))
            .arg(ns)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.con.clone())
            .await
    }

    /// Lifts the freeze of namespace `ns` (a swap lifts it by itself).
    pub async fn unfreeze(&self, ns: &str) -> redis::RedisResult<()> {
        self.unfreeze.key(swap_freeze_key(&self.service)).arg(ns).invoke_async(&mut self.con.clone()).await
    }

    /// See [`SWAP_SCRIPT`]. Ok(None) when swapped, Ok(Some(p)) when partition p is still behind.
    pub async fn swap(&self, old: Option<&str>, new: &str, partitions: u32) -> anyhow::Result<Option<u32>> {
        let r: i64 = self
            .swap
            .key(active_key(&self.service))
            .arg(active_key(&self.service))
            .arg(old.unwrap_or(""))
            .arg(new)
            .arg(partitions)
            .arg(swap_freeze_key(&self.service))
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(u32::try_from(r).ok())
    }

    /// All keys matching `pattern` (a full Redis glob of this service's keys), by SCAN of the
    /// node that holds the service's slot.
    pub async fn scan(&self, pattern: &str, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut con = self.con.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) =
                self.scan.key(active_key(&self.service)).arg(cursor).arg(pattern).invoke_async(&mut con).await?;
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
        let keys = self.scan(&format!("{}:*", glob_escape(ns)), usize::MAX).await?;
        let mut con = self.con.clone();
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut con).await?;
        }
        Ok(keys.len())
    }

    /// The script's keys of a namespace and their values (strings JSON-decoded where they are
    /// JSON, hashes as objects, lists as arrays, sets sorted), for `superclient dump` and tests.
    pub async fn dump(&self, ns: &str) -> redis::RedisResult<BTreeMap<String, serde_json::Value>> {
        let prefix = format!("{ns}:");
        let keys = self.scan(&format!("{}*", glob_escape(&prefix)), usize::MAX).await?;
        let mut con = self.con.clone();
        let mut out = BTreeMap::new();
        for full in keys {
            let Some(key) = script_name(&full[prefix.len()..]).map(str::to_string) else { continue };
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
