//! Reading parked keys and asking for their release, for operators (`superclient parked`,
//! `admin.parked/release`). Parking itself is the partition worker's (`consume::parking`).

use super::keys::*;
use super::store::Store;

/// One parked key: its record (why, where), and how many events wait behind it.
#[derive(Debug, Clone)]
pub struct Parked {
    pub key: String,
    /// `{key, seq, id, type, partition, error, attempts, time}` as parking wrote it.
    pub record: serde_json::Value,
    /// Events of the key not applied yet, the parked one included.
    pub held: u64,
}

/// The partition count of a service's namespace `ns` if its state is partitioned, as its last
/// rebuild left it (`sequent:{<svc>}:partitioned`): tools do not load the service's script.
pub async fn partitioned(store: &Store, ns: &str) -> redis::RedisResult<Option<u32>> {
    redis::cmd("GET").arg(slot_key(ns, "partitioned")).query_async(&mut store.con.clone()).await
}

/// The namespace where key `key`'s parking is kept (its partition's, when partitioned).
pub async fn key_namespace(store: &Store, ns: &str, key: &str) -> redis::RedisResult<String> {
    Ok(match partitioned(store, ns).await? {
        Some(n) => partition_namespace(ns, key_partition(key, n)),
        None => ns.to_string(),
    })
}

/// The parked keys of namespace `ns` (of every partition, when partitioned), sorted.
pub async fn list(store: &Store, ns: &str) -> redis::RedisResult<Vec<Parked>> {
    let mut con = store.con.clone();
    let namespaces: Vec<String> = match partitioned(store, ns).await? {
        Some(n) => (0..n).map(|p| partition_namespace(ns, p)).collect(),
        None => vec![ns.to_string()],
    };
    let mut out = Vec::new();
    for ns in &namespaces {
        let keys: Vec<String> = redis::cmd("SMEMBERS").arg(parked_set_key(ns)).query_async(&mut con).await?;
        for key in keys {
            let record: Option<String> = redis::cmd("GET").arg(parked_key(ns, &key)).query_async(&mut con).await?;
            let held: u64 = redis::cmd("LLEN").arg(held_key(ns, &key)).query_async(&mut con).await?;
            out.push(Parked { key, record: record.map(|r| decode(&r)).unwrap_or_default(), held });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The active namespace of `service`, if it has one.
pub async fn active_of(store: &Store, service: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(active_key(service)).query_async(&mut store.con.clone()).await
}

/// Parked keys of the given services: `[{service, key, event_id, seq, type, error, attempts,
/// parked_at, held}]`.
pub async fn all(store: &Store, services: &[String]) -> redis::RedisResult<serde_json::Value> {
    let mut out = Vec::new();
    for service in services {
        let Some(ns) = active_of(store, service).await? else { continue };
        for p in list(store, &ns).await? {
            let r = &p.record;
            out.push(serde_json::json!({
                "service": service,
                "key": p.key,
                "event_id": r["id"],
                "seq": r["seq"],
                "type": r["type"],
                "error": r["error"],
                "attempts": r["attempts"],
                "parked_at": r["time"],
                "held": p.held,
            }));
        }
    }
    Ok(serde_json::Value::Array(out))
}

/// Asks the instance owning the key's partition to release it (it polls the release set).
/// False when the key is not parked.
pub async fn request_release(store: &Store, service: &str, key: &str) -> redis::RedisResult<bool> {
    let Some(ns) = active_of(store, service).await? else { return Ok(false) };
    let ns = key_namespace(store, &ns, key).await?;
    let mut con = store.con.clone();
    let parked: bool = redis::cmd("SISMEMBER").arg(parked_set_key(&ns)).arg(key).query_async(&mut con).await?;
    if parked {
        let _: () = redis::cmd("SADD").arg(release_key(&ns)).arg(key).query_async(&mut con).await?;
    }
    Ok(parked)
}
