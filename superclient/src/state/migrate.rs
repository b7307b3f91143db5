//! Migrations of a service's state when an instance starts.
//!
//! From the key layout before hash tags (`sequent:<svc>:active` naming namespace `<svc>@<g>`,
//! keys `<svc>@<g>:...`) to today's (`keys`): one script renames the active namespace's keys
//! and moves the pointers, atomically, so a reader sees either the old layout or the new one.
//! It runs when an instance starts (`run`, `rebuild`) and does nothing once migrated or on a
//! new deployment. Only a single Redis can hold the old layout (its commits span slots, which
//! a cluster refuses), so a cluster is never migrated.
//!
//! Instances of the old version must all be stopped first: they would take the migrated
//! state for lost and rebuild it in the old layout (the upgrade note in SCALING.md).

use super::keys::{active_key, generation_key, tag};
use super::store::Store;

/// The old layout's per-service keys (`active`, `generation`, ...).
fn legacy_key(service: &str, what: &str) -> String {
    format!("sequent:{service}:{what}")
}

/// KEYS: new active, new generation, old active, old generation, then old keys to drop
/// (rebuild lock, freeze, watch). ARGV[1]: the service's tag; the new namespace is
/// `<tag>@<old generation>` (`keys::namespace`). Returns {old ns, new ns, keys renamed}, or
/// an empty table if there is nothing to do. KEYS (not SCAN) lists the old namespace in one
/// step: a key renamed during a SCAN could be listed twice, and RENAME of a missing key would
/// stop the script half-way.
const MIGRATE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local old = redis.call('GET', KEYS[3])
if not old then return {} end
local g = string.match(old, '@(%d+)$')
if not g then return redis.error_reply('the old active namespace ' .. old .. ' has no generation') end
local new = ARGV[1] .. '@' .. g
local keys = redis.call('KEYS', old .. ':*')
for _, k in ipairs(keys) do redis.call('RENAME', k, new .. string.sub(k, #old + 1)) end
local gen = tonumber(redis.call('GET', KEYS[4]) or '0')
if gen < tonumber(g) then gen = tonumber(g) end
redis.call('SET', KEYS[2], gen)
redis.call('SET', KEYS[1], new)
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
return {old, new, #keys}
"#;

/// What a migration did: (old namespace, new namespace, keys renamed).
pub type Migrated = (String, String, usize);

/// Migrates the service's state from the old layout if there is one (see the module's doc).
pub async fn migrate_legacy(store: &Store) -> redis::RedisResult<Option<Migrated>> {
    if store.con.is_cluster() {
        return Ok(None);
    }
    let svc = &store.service;
    let done: Vec<redis::Value> = redis::Script::new(MIGRATE_SCRIPT)
        .key(active_key(svc))
        .key(generation_key(svc))
        .key(legacy_key(svc, "active"))
        .key(legacy_key(svc, "generation"))
        .key(legacy_key(svc, "rebuild-lock"))
        .key(legacy_key(svc, "swap-freeze"))
        .key(legacy_key(svc, "watch"))
        .arg(tag(svc))
        .invoke_async(&mut store.con.clone())
        .await?;
    if done.is_empty() {
        return Ok(None);
    }
    Ok(Some(redis::from_redis_value(redis::Value::Array(done))?))
}

/// The stream a service runs on, as far as its partitions go: their count, and, for a copy of
/// an older stream with another count (`bus-gateway --repartition-from`), that count and the
/// last sequence copied (the stream's metadata, `subjects::META_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitioning {
    pub partitions: u32,
    pub copied: Option<(u32, u64)>,
}

/// KEYS[1]: the active pointer. ARGV: partitions now, partitions before the copy ('' if the
/// stream is no copy), last sequence copied. Returns {what, ns}: 'none' (no state), 'same',
/// 'recorded' (a state from before the record, on a stream that is no copy: it is for this
/// count), 'moved' (checkpoints moved to the copy's end in every new partition). A state
/// without a record on a copied stream predates the copy (every version that copies records
/// the count), so it is for the count before.
const REPARTITION_SCRIPT: &str = r#"
local ns = redis.call('GET', KEYS[1])
if not ns then return {'none', ''} end
local rec = redis.call('GET', ns .. ':__partitions')
if rec == ARGV[1] then return {'same', ns} end
if not rec then
  if ARGV[2] == '' then redis.call('SET', ns .. ':__partitions', ARGV[1]); return {'recorded', ns} end
  rec = ARGV[2]
end
if rec ~= ARGV[2] then
  return redis.error_reply('the state ' .. ns .. ' is for ' .. rec .. ' partitions, but the stream has ' .. ARGV[1] ..
    ' and is not a copy of a stream with ' .. rec .. ' (bus-gateway --repartition-from); start against the stream it was built on')
end
local last = tonumber(ARGV[3])
for p = 0, tonumber(rec) - 1 do
  local applied = tonumber(redis.call('GET', ns .. ':__applied:' .. p) or '0')
  if applied > last then
    return redis.error_reply('partition ' .. p .. ' of ' .. ns .. ' applied up to ' .. applied .. ', past the copy\'s end ' .. last .. '; the state is not the one the copy was made from')
  end
end
for p = 0, tonumber(rec) - 1 do redis.call('DEL', ns .. ':__applied:' .. p) end
for p = 0, tonumber(ARGV[1]) - 1 do redis.call('SET', ns .. ':__applied:' .. p, last) end
redis.call('SET', ns .. ':__partitions', ARGV[1])
return {'moved', ns}
"#;

/// Makes the active state's checkpoints fit the stream's partitions. After a copy into a
/// stream with another count, every event up to the copy's end was applied before it (the copy
/// waits for that), so each new partition's checkpoint becomes that sequence: live delivery
/// skips what was applied and applies the rest, and nothing is rebuilt. A state for another
/// count on a stream that is no copy of it is refused (its checkpoints would skip or repeat
/// events). Atomic; a second instance finds it done. Returns what it did (see the script).
pub async fn repartition(store: &Store, stream: Partitioning) -> redis::RedisResult<(String, String)> {
    let (before, last) = match stream.copied {
        Some((p, seq)) => (p.to_string(), seq),
        None => (String::new(), 0),
    };
    redis::Script::new(REPARTITION_SCRIPT)
        .key(active_key(&store.service))
        .arg(stream.partitions)
        .arg(before)
        .arg(last)
        .invoke_async(&mut store.con.clone())
        .await
}
