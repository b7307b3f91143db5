//! Rebuilds asked for by operators (`admin.rebuild`, the explorer's button) and their progress,
//! in one Redis hash per service (`sequent:{<svc>}:rebuild`): `status` (`requested`, `running`,
//! `done`, `failed`), `requested_at`, `instance` (who runs it), `done` and `expected` (events
//! replayed, and the total as last estimated), `updated_at` (ms; a running rebuild refreshes
//! it), `namespace` (the rebuilt one) or `error`. A running instance of the service takes a
//! request (`consume::rebuild::take_requests`); Redis decides which one.

use super::keys::{active_key, service_key};
use super::store::Store;
use std::collections::HashMap;

/// Beside the service's active pointer (same hash slot: the request script reads both).
pub fn rebuild_request_key(service: &str) -> String {
    service_key(service, "rebuild")
}

/// A running rebuild whose instance has not reported for this long is taken as dead: another
/// request may be made.
pub const STALE_MS: u64 = 30_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Why a rebuild cannot be requested now.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The service has no state in Redis: it never ran here (or the name is wrong).
    Unknown,
    /// A rebuild is requested or running already.
    Busy,
}

/// Asks for a rebuild of `service`. Atomic: of two operators asking at once, one gets Busy.
pub async fn request(store: &Store, service: &str) -> redis::RedisResult<Result<(), Refused>> {
    // KEYS: active, request; ARGV: now ms, stale ms, requested_at. 0 unknown, 1 busy, 2 made.
    const SCRIPT: &str = r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        local status = redis.call('HGET', KEYS[2], 'status')
        local updated = tonumber(redis.call('HGET', KEYS[2], 'updated_at') or '0')
        if (status == 'requested' or status == 'running') and tonumber(ARGV[1]) - updated < tonumber(ARGV[2]) then return 1 end
        redis.call('DEL', KEYS[2])
        redis.call('HSET', KEYS[2], 'status', 'requested', 'requested_at', ARGV[3], 'updated_at', ARGV[1], 'done', 0, 'expected', 0)
        return 2
    "#;
    let made: i64 = redis::Script::new(SCRIPT)
        .key(active_key(service))
        .key(rebuild_request_key(service))
        .arg(now_ms())
        .arg(STALE_MS)
        .arg(now_rfc3339())
        .invoke_async(&mut store.con.clone())
        .await?;
    Ok(match made {
        0 => Err(Refused::Unknown),
        1 => Err(Refused::Busy),
        _ => Ok(()),
    })
}

/// The request's fields as stored, or None when none was ever made.
pub async fn status(store: &Store, service: &str) -> redis::RedisResult<Option<HashMap<String, String>>> {
    let fields: HashMap<String, String> = redis::cmd("HGETALL").arg(rebuild_request_key(service)).query_async(&mut store.con.clone()).await?;
    Ok((!fields.is_empty()).then_some(fields))
}

/// Takes a waiting request for `instance`: true when this instance is to run it.
pub async fn claim(store: &Store, service: &str, instance: &str) -> redis::RedisResult<bool> {
    const SCRIPT: &str = r#"
        if redis.call('HGET', KEYS[1], 'status') ~= 'requested' then return 0 end
        redis.call('HSET', KEYS[1], 'status', 'running', 'instance', ARGV[1], 'updated_at', ARGV[2])
        return 1
    "#;
    // Nearly every poll finds nothing to take: one HGET then, the script (which checks again,
    // atomically) only when a request waits.
    let status: Option<String> = redis::cmd("HGET").arg(rebuild_request_key(service)).arg("status").query_async(&mut store.con.clone()).await?;
    if status.as_deref() != Some("requested") {
        return Ok(false);
    }
    let took: i64 = redis::Script::new(SCRIPT).key(rebuild_request_key(service)).arg(instance).arg(now_ms()).invoke_async(&mut store.con.clone()).await?;
    Ok(took == 1)
}

/// Records progress (and that the runner lives), or the end: `fields` such as `status`,
/// `namespace`, `error`.
pub async fn report(store: &Store, service: &str, done: u64, expected: u64, fields: &[(&str, String)]) -> redis::RedisResult<()> {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(rebuild_request_key(service)).arg("done").arg(done).arg("expected").arg(expected).arg("updated_at").arg(now_ms());
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd.query_async(&mut store.con.clone()).await
}
