//! Service state in Redis: namespaces, buffered writes with read-your-writes, and the one
//! atomic commit that applies a handler's writes together with its checkpoint.
//!
//! Key layout (`<svc>` = service type, `<ns>` = `<svc>@<generation>`):
//!
//! | key | what |
//! |---|---|
//! | `sequent:<svc>:active` | name of the active namespace, e.g. `accounts@3` |
//! | `sequent:<svc>:generation` | counter for new namespaces |
//! | `sequent:<svc>:rebuild-lock` | instance doing the automatic initial rebuild (expires) |
//! | `sequent:<svc>:swap-freeze` | rebuilt namespace catching up right before its swap: commits to the active one wait (expires) |
//! | `<ns>:<key>` | the script's own keys (`redis:set("acc-1", ...)`) |
//! | `<ns>:__applied:<p>` | stream sequence of the last event of partition `p` applied |
//! | `<ns>:__versions` | hash: event key → last version this service knows of (for `expect = false`) |
//! | `<ns>:__parked` | set of parked keys |
//! | `<ns>:__parked:<key>` | JSON: why and where the key is parked |
//! | `<ns>:__held:<key>` | list of stream sequences of the key not yet applied (head = parked one) |
//! | `<ns>:__release` | set of keys an operator asked to release |
//! | channel `sequent:<svc>:commits` | pub/sub: every commit is announced (wakes `bus:wait`) |
//!
//! Script keys may not start with `__`, so they never collide with the framework's.
//!
//! Redis may lose everything (restarted without persistence, flushed). Then `active` is gone:
//! every read of a handler, route or live listener is made atomically with a look at `active`
//! ([`Store::read`]) and fails as an infrastructure error when the namespace it reads is not
//! the active one, so nothing is decided, sent or answered from a lost (empty) or half-rebuilt
//! state; commits refuse for the same reason; `rebuild::watch` notices and rebuilds.

use redis::aio::ConnectionManager;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub type Cmd = Vec<String>;

pub fn active_key(service: &str) -> String {
    format!("sequent:{service}:active")
}
pub fn generation_key(service: &str) -> String {
    format!("sequent:{service}:generation")
}
pub fn rebuild_lock_key(service: &str) -> String {
    format!("sequent:{service}:rebuild-lock")
}
/// Set (to the rebuilt namespace, with an expiry) while a rebuild catches up with live
/// delivery right before its swap: commits to the active namespace wait meanwhile.
pub fn swap_freeze_key(service: &str) -> String {
    format!("sequent:{service}:swap-freeze")
}
pub fn applied_key(ns: &str, partition: u32) -> String {
    format!("{ns}:__applied:{partition}")
}
pub fn versions_key(ns: &str) -> String {
    format!("{ns}:__versions")
}
/// Moves writes that are only bookkeeping of versions learnt from sends (`VMAX` on the
/// versions hash) to namespace `ns`; false (and nothing changed) if there are other writes,
/// which belong to the state they were decided on.
pub fn move_version_notes(ops: &mut [Cmd], ns: &str) -> bool {
    if !ops.iter().all(|op| op[0] == "VMAX") {
        return false;
    }
    let versions = versions_key(ns);
    for op in ops.iter_mut() {
        op[1] = versions.clone();
    }
    true
}
pub fn parked_set_key(ns: &str) -> String {
    format!("{ns}:__parked")
}
pub fn parked_key(ns: &str, key: &str) -> String {
    format!("{ns}:__parked:{key}")
}
pub fn held_key(ns: &str, key: &str) -> String {
    format!("{ns}:__held:{key}")
}
pub fn release_key(ns: &str) -> String {
    format!("{ns}:__release")
}
/// Redis pub/sub channel on which every commit of the service is announced (`bus:wait`).
pub fn commits_channel(service: &str) -> String {
    format!("sequent:{service}:commits")
}

/// Checks a script-chosen key.
pub fn check_user_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("redis key is empty".into());
    }
    if key.len() > 512 {
        return Err(format!("redis key is {} bytes long; the limit is 512", key.len()));
    }
    if key.starts_with("__") {
        return Err(format!("redis key {key:?} starts with \"__\", which is reserved for the superclient"));
    }
    Ok(())
}

/// What must hold for a commit to apply; checked atomically with it.
#[derive(Debug, Clone)]
pub enum Guard {
    /// Nothing (HTTP routes).
    None,
    /// Event `seq` of `partition` has not been applied yet; the checkpoint moves to `seq`.
    Checkpoint { partition: u32, seq: u64 },
    /// The held list of `key` still starts with `seq` (a release step); the caller pops it.
    HeldHead { key: String, seq: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Applied,
    /// The guard said this was applied already (a redelivery, or another owner was faster).
    AlreadyApplied,
    /// The namespace the handler read from is no longer active (a rebuild swapped in a new
    /// one): run the handler again against the new namespace.
    NamespaceMoved,
}

/// Applies a handler's writes and the checkpoint in one step. Redis runs a script atomically,
/// but does not roll back on error, so the types of the touched keys are checked before
/// anything is written.
const COMMIT_SCRIPT: &str = r#"
local active_key, expected, gkind, gkey, gval = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if expected ~= '' and redis.call('GET', active_key) ~= expected then return -1 end
if expected ~= '' and redis.call('EXISTS', ARGV[8]) == 1 then return -2 end
if gkind == 'ckpt' then
  if tonumber(redis.call('GET', gkey) or '0') >= tonumber(gval) then return 0 end
elseif gkind == 'head' then
  if redis.call('LINDEX', gkey, 0) ~= gval then return 0 end
end
local ops = cjson.decode(ARGV[6])
local want = {HSET='hash', HDEL='hash', HINCRBY='hash', VMAX='hash', RPUSH='list', LPOP='list', INCRBY='string', SADD='set', SREM='set'}
local seen = {}
for _, op in ipairs(ops) do
  local c, k = op[1], op[2]
  if c == 'SET' or c == 'DEL' then
    seen[k] = true
  elseif not seen[k] then
    seen[k] = true
    local t = redis.call('TYPE', k).ok
    if t ~= 'none' and t ~= want[c] then
      return redis.error_reply('WRONGTYPE key ' .. k .. ' holds a ' .. t .. ' but the handler used it as a ' .. want[c])
    end
    if c == 'INCRBY' and t == 'string' then
      local v = tonumber(redis.call('GET', k))
      if v == nil or math.floor(v) ~= v then return redis.error_reply('key ' .. k .. ' does not hold an integer; incr needs one') end
    end
  end
  if c == 'HINCRBY' and not seen[k .. '\0' .. op[3]] then
    seen[k .. '\0' .. op[3]] = true
    local f = redis.call('HGET', k, op[3])
    if f and (tonumber(f) == nil or math.floor(tonumber(f)) ~= tonumber(f)) then
      return redis.error_reply('field ' .. op[3] .. ' of ' .. k .. ' does not hold an integer; hincr needs one')
    end
  end
end
for _, op in ipairs(ops) do
  if op[1] == 'VMAX' then
    if tonumber(op[4]) > tonumber(redis.call('HGET', op[2], op[3]) or '-1') then redis.call('HSET', op[2], op[3], op[4]) end
  else
    redis.call(unpack(op))
  end
end
if gkind == 'ckpt' then redis.call('SET', gkey, gval) end
if ARGV[7] ~= '' and (#ops > 0 or gkind ~= '') then redis.call('PUBLISH', ARGV[7], gval) end
return 1
"#;

/// Makes a rebuilt namespace the active one, but only if it has applied at least everything the
/// current one has, partition by partition (live instances keep applying to the old one while
/// the rebuild runs), and lifts the rebuild's freeze. Returns -1 on success, or the first
/// partition that is still behind.
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

#[derive(Clone)]
pub struct Store {
    pub con: ConnectionManager,
    pub service: String,
    commit: std::sync::Arc<redis::Script>,
    swap: std::sync::Arc<redis::Script>,
    unfreeze: std::sync::Arc<redis::Script>,
    generation: std::sync::Arc<redis::Script>,
}

impl Store {
    /// Connects, retrying with back-off until Redis answers (it may start after us). Later
    /// disconnects are handled by the connection manager, which reconnects on its own.
    pub async fn connect(url: &str, service: &str) -> anyhow::Result<Store> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("bad Redis URL {:?}: {e}", bus_gateway::redact_url(url)))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(2));
        let mut delay = Duration::from_millis(200);
        let con = loop {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(con) => break con,
                Err(e) => {
                    tracing::warn!(error = %e, url = bus_gateway::redact_url(url), "Redis is not reachable yet; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        Ok(Store {
            con,
            service: service.to_string(),
            commit: std::sync::Arc::new(redis::Script::new(COMMIT_SCRIPT)),
            swap: std::sync::Arc::new(redis::Script::new(SWAP_SCRIPT)),
            unfreeze: std::sync::Arc::new(redis::Script::new(UNFREEZE_SCRIPT)),
            generation: std::sync::Arc::new(redis::Script::new(GENERATION_SCRIPT)),
        })
    }

    /// A new namespace name, `<service>@<generation>`, never one of `known` or before it.
    pub async fn new_namespace(&self, known: &str) -> redis::RedisResult<String> {
        let known = known.rsplit_once('@').and_then(|(_, g)| g.parse::<u64>().ok()).unwrap_or(0);
        let g: u64 = self.generation.key(generation_key(&self.service)).arg(known).invoke_async(&mut self.con.clone()).await?;
        Ok(format!("{}@{g}", self.service))
    }

    /// Runs a read of namespace `ns` atomically with a look at the active namespace. `Ok(None)`
    /// when `ns` is not active (Redis lost the state, a rebuild is running or swapped another
    /// one in): the read's answer would be wrong, not merely old.
    pub async fn read<T: redis::FromRedisValue>(&self, ns: &str, cmd: &redis::Cmd) -> redis::RedisResult<Option<T>> {
        let (active, value): (Option<String>, redis::Value) =
            redis::pipe().atomic().get(active_key(&self.service)).add_command(cmd.clone()).query_async(&mut self.con.clone()).await?;
        if active.as_deref() != Some(ns) {
            return Ok(None);
        }
        Ok(Some(redis::from_redis_value(value)?))
    }

    pub async fn active(&self) -> redis::RedisResult<Option<String>> {
        redis::cmd("GET").arg(active_key(&self.service)).query_async(&mut self.con.clone()).await
    }

    pub async fn applied(&self, ns: &str, partition: u32) -> redis::RedisResult<u64> {
        let v: Option<u64> = redis::cmd("GET").arg(applied_key(ns, partition)).query_async(&mut self.con.clone()).await?;
        Ok(v.unwrap_or(0))
    }

    /// Runs the commit script. `expected_active` is the namespace the handler read from (None
    /// for a rebuild, which writes to a namespace that is not active yet).
    pub async fn commit(&self, expected_active: Option<&str>, ns: &str, guard: &Guard, ops: &[Cmd]) -> redis::RedisResult<Commit> {
        let (kind, gkey, gval) = match guard {
            Guard::None => ("", String::new(), String::new()),
            Guard::Checkpoint { partition, seq } => ("ckpt", applied_key(ns, *partition), seq.to_string()),
            Guard::HeldHead { key, seq } => ("head", held_key(ns, key), seq.to_string()),
        };
        let ops = serde_json::to_string(ops).expect("string lists serialise");
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .arg(active_key(&self.service))
            .arg(expected_active.unwrap_or(""))
            .arg(kind)
            .arg(gkey)
            .arg(gval)
            .arg(ops)
            .arg(commits_channel(&self.service))
            .arg(swap_freeze_key(&self.service));
        loop {
            let r: i64 = invocation.invoke_async(&mut self.con.clone()).await?;
            match r {
                1 => return Ok(Commit::Applied),
                0 => return Ok(Commit::AlreadyApplied),
                // Frozen: a rebuild is catching up right before its swap (briefly; the freeze
                // expires by itself if the rebuild dies). Try again: the commit then applies or
                // finds the state moved. No notification exists for the lift, hence the poll.
                -2 => tokio::time::sleep(Duration::from_millis(5)).await,
                _ => return Ok(Commit::NamespaceMoved),
            }
        }
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
            .arg(active_key(&self.service))
            .arg(old.unwrap_or(""))
            .arg(new)
            .arg(partitions)
            .arg(swap_freeze_key(&self.service))
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(u32::try_from(r).ok())
    }

    /// All keys matching `pattern` (a full Redis glob), by SCAN.
    pub async fn scan(&self, pattern: &str, limit: usize) -> redis::RedisResult<Vec<String>> {
        let mut con = self.con.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) =
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query_async(&mut con).await?;
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
            let key = full[prefix.len()..].to_string();
            if key.starts_with("__") {
                continue;
            }
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

/// Stored values are JSON text; anything else (written by other tools) reads as a string.
pub fn decode(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
}

pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Glob match with `*` and `?` (what `redis:keys` patterns use), for the write buffer's keys.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], s) || (!s.is_empty() && rec(p, &s[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), s.as_bytes())
}

/// What a handler wrote so far to one string key.
#[derive(Debug, Clone)]
pub enum Str {
    Set(String),
    Deleted,
    /// Incremented by this much over a base not read yet.
    Incr(i64),
}

#[derive(Debug, Clone, Default)]
pub struct HashOverlay {
    /// The key was deleted or overwritten first: nothing of the stored hash shows through.
    pub cleared: bool,
    pub fields: HashMap<String, Str>,
}

#[derive(Debug, Clone, Default)]
pub struct SetOverlay {
    pub cleared: bool,
    pub added: std::collections::BTreeSet<String>,
    pub removed: std::collections::BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListOverlay {
    pub cleared: bool,
    pub pushed: Vec<String>,
}

/// A handler's writes: the commands to run at commit (full key names) and an overlay so that
/// the handler's own reads see them.
#[derive(Debug, Default)]
pub struct Writes {
    pub ops: Vec<Cmd>,
    pub strings: HashMap<String, Str>,
    pub hashes: HashMap<String, HashOverlay>,
    pub lists: HashMap<String, ListOverlay>,
    pub sets: HashMap<String, SetOverlay>,
    /// The Redis type each key was given in this call, so a mix-up fails at once, in the
    /// script, rather than at commit.
    pub types: HashMap<String, &'static str>,
}

impl Writes {
    /// Forgets every overlay of `key` and marks it gone (a DEL, or the start of a SET).
    pub fn clear(&mut self, key: &str) {
        self.strings.insert(key.to_string(), Str::Deleted);
        self.hashes.insert(key.to_string(), HashOverlay { cleared: true, fields: HashMap::new() });
        self.lists.insert(key.to_string(), ListOverlay { cleared: true, pushed: Vec::new() });
        self.sets.insert(key.to_string(), SetOverlay { cleared: true, ..Default::default() });
    }

    /// After the ops were committed: drops them, and the overlays that are relative to what
    /// Redis held before (increments over an unread base, pushes onto an unread list), which
    /// would now count twice. What is left states values Redis now holds: a cache for the
    /// next batch of a rebuild.
    pub fn settle(&mut self) {
        self.ops.clear();
        self.strings.retain(|_, s| !matches!(s, Str::Incr(_)));
        for h in self.hashes.values_mut() {
            if !h.cleared {
                h.fields.retain(|_, f| !matches!(f, Str::Incr(_)));
            }
        }
        self.lists.retain(|_, l| l.cleared);
    }

    /// How many keys the overlays know of.
    pub fn len(&self) -> usize {
        self.strings.len() + self.hashes.len() + self.lists.len() + self.sets.len()
    }

    /// Keys this buffer created (true) or deleted (false), for `redis:keys`.
    pub fn key_states(&self) -> HashMap<&str, bool> {
        let mut out = HashMap::new();
        for (k, s) in &self.strings {
            out.insert(k.as_str(), !matches!(s, Str::Deleted));
        }
        for (k, h) in &self.hashes {
            let live = h.fields.values().any(|f| !matches!(f, Str::Deleted));
            if live || h.cleared {
                let e = out.entry(k.as_str()).or_insert(false);
                *e |= live;
            }
        }
        for (k, l) in &self.lists {
            if !l.pushed.is_empty() || l.cleared {
                let e = out.entry(k.as_str()).or_insert(false);
                *e |= !l.pushed.is_empty();
            }
        }
        for (k, set) in &self.sets {
            if !set.added.is_empty() || set.cleared {
                let e = out.entry(k.as_str()).or_insert(false);
                *e |= !set.added.is_empty();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("count:*", "count:k-1"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert_eq!(glob_escape("svc@1:a*"), "svc@1:a\\*");
    }

    #[test]
    fn reserved_keys_are_refused() {
        assert!(check_user_key("__applied:1").is_err());
        assert!(check_user_key("").is_err());
        assert!(check_user_key("acc-1").is_ok());
    }
}
