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
