//! Poison events. After `--max-attempts` failures an event is parked: its key gets a record
//! (`<ns>:__parked:<key>`: seq, id, type, error, attempts, time) and a held list
//! (`<ns>:__held:<key>`) whose head is the parked event; later events of that key are appended
//! to the held list (and acked) while other keys flow. All of this commits with the partition
//! checkpoint, like a handler's writes.
//!
//! `superclient parked release SERVICE KEY` adds the key to `<ns>:__release`; the instance
//! owning the key's partition then applies the held events in order (reading them from the
//! stream by sequence), popping each from the held list in the same commit as its effects,
//! and clears the park when the list is empty. If an event fails again, the key stays parked
//! with the new error.

use super::apply::{Outcome, Target};
use super::partition::{PartitionState, ReleaseRoutes};
use crate::cli::RedisOpt;
use crate::error::{redis_failure, Failure};
use crate::runtime::Service;
use crate::script::convert::Delivery;
use crate::state::{self, parked, Changes, Commit, Guard, Overlay, Store};
use sequent_protocol::{subjects, Event};
use std::collections::HashSet;
use std::time::Duration;

fn record(event: &Event, partition: u32, error: &str, attempts: i64) -> String {
    serde_json::json!({
        "key": event.key,
        "seq": event.seq,
        "id": event.id,
        "type": event.event_type,
        "partition": partition,
        "error": error,
        "attempts": attempts,
        "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    })
    .to_string()
}

/// Commits framework writes (`ops`) with a guard, in the active namespace.
async fn commit_ops(svc: &Service, ns: &str, guard: Guard, ops: Vec<state::Cmd>) -> Result<Commit, Failure> {
    let mut overlay = Overlay::new();
    for op in ops {
        overlay.push_op(op);
    }
    svc.store
        .commit(&Changes { expected_active: Some(ns), ns, guard, overlay: &overlay, owner: None, locked: &state::Locks::new() })
        .await
        .map_err(redis_failure)
}

/// Parks the event's key: the event becomes the head of the key's held list, and the
/// checkpoint moves past it.
pub async fn park(svc: &Service, st: &mut PartitionState, event: &Event, error: &str, attempts: i64) -> Result<(), Failure> {
    let ns = st.ns.clone();
    let ops = vec![
        vec!["SET".into(), state::parked_key(&ns, &event.key), record(event, st.partition, error, attempts)],
        vec!["SADD".into(), state::parked_set_key(&ns), event.key.clone()],
        vec!["DEL".into(), state::held_key(&ns, &event.key)],
        vec!["RPUSH".into(), state::held_key(&ns, &event.key), event.seq.to_string()],
    ];
    let guard = Guard::Checkpoint { partition: st.partition, first: event.seq, last: event.seq };
    match commit_ops(svc, &ns, guard, ops).await? {
        Commit::Applied | Commit::AlreadyApplied => {
            st.parked.insert(event.key.clone());
            Ok(())
        }
        _ => {
            svc.refresh_active().await?;
            st.refresh_if_moved(svc).await;
            Err(Failure::infra("the namespace moved while parking; deciding again"))
        }
    }
}

/// Processes an operator's release of `key` (called by the worker owning its partition,
/// between two batches, so the key's order holds).
pub async fn release(svc: &Service, st: &mut PartitionState, key: &str) {
    let ns = st.ns.clone();
    let held = state::held_key(&ns, key);
    let mut con = svc.store.con.clone();
    let mut done = 0;
    loop {
        let head: redis::RedisResult<Option<u64>> = redis::cmd("LINDEX").arg(&held).arg(0).query_async(&mut con).await;
        let head = match head {
            Ok(h) => h,
            Err(e) => return tracing::warn!(key, error = %e, "release: reading the held list failed; will retry"),
        };
        let Some(seq) = head else {
            let ops = vec![
                vec!["DEL".into(), state::parked_key(&ns, key)],
                vec!["SREM".into(), state::parked_set_key(&ns), key.to_string()],
                vec!["DEL".into(), held.clone()],
                vec!["SREM".into(), state::release_key(&ns), key.to_string()],
            ];
            match commit_ops(svc, &ns, Guard::None, ops).await {
                Ok(Commit::Applied) => {
                    st.parked.remove(key);
                    tracing::info!(key, events = done, "released: the key flows again");
                }
                other => tracing::warn!(key, ?other, "release: clearing the park did not apply; will retry"),
            }
            return;
        };
        let event = match svc.events.get(seq).await {
            Ok(Some(e)) => e,
            Ok(None) => return tracing::warn!(key, seq, "release: the held event is no longer in the stream; will retry"),
            Err(e) => return tracing::warn!(key, seq, error = %e, "release: reading the held event failed; will retry"),
        };
        let delivery = Delivery { released: true, partition: Some(st.partition), ..Default::default() };
        let outcome = svc.apply_batch(&Target::Release { key: key.to_string() }, &[(event.clone(), delivery)], &HashSet::new()).await;
        match outcome {
            Outcome::Applied { count: 1, .. } | Outcome::AlreadyApplied => done += 1,
            Outcome::Applied { failure: Some(f), .. } if f.is_script() => {
                let old: Option<String> = redis::cmd("GET").arg(state::parked_key(&ns, key)).query_async(&mut con).await.unwrap_or(None);
                let attempts = old.and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok()).and_then(|v| v["attempts"].as_i64()).unwrap_or(0);
                let error = f.to_string();
                let ops = vec![
                    vec!["SET".into(), state::parked_key(&ns, key), record(&event, st.partition, &error, attempts + 1)],
                    vec!["SREM".into(), state::release_key(&ns), key.to_string()],
                ];
                let _ = commit_ops(svc, &ns, Guard::None, ops).await;
                tracing::error!(key, seq, error, "release: the event failed again; the key stays parked");
                return;
            }
            Outcome::Applied { failure, .. } => {
                return tracing::warn!(key, seq, error = ?failure.map(|f| f.to_string()), "release interrupted; will retry")
            }
            Outcome::Moved { .. } => return tracing::warn!(key, seq, "release interrupted by a rebuild; will retry"),
        }
    }
}

/// Polls the release requests and hands each to the worker owning the key's partition.
pub async fn dispatch_releases(svc: std::sync::Arc<Service>, routes: ReleaseRoutes) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut keys = Vec::new();
        for ns in svc.store.namespaces(&svc.active_ns()) {
            let some: redis::RedisResult<Vec<String>> =
                redis::cmd("SMEMBERS").arg(state::release_key(&ns)).query_async(&mut svc.store.con.clone()).await;
            keys.extend(some.unwrap_or_default());
        }
        for key in keys {
            let p = subjects::partition_of(&key, svc.partitions);
            if let Some(tx) = routes.lock().get(&p) {
                let _ = tx.try_send(key);
            }
        }
    }
}

async fn cli_store(redis: &RedisOpt, service: &str) -> anyhow::Result<(Store, String)> {
    let store = Store::connect(&redis.redis_url, service).await?;
    let ns = store.active().await?.ok_or_else(|| {
        anyhow::anyhow!("service {service:?} has no state in Redis at {} (no instance ever ran?)", sequent_net::redact_url(&redis.redis_url))
    })?;
    Ok((store, ns))
}

/// `superclient parked list SERVICE`.
pub async fn cli_list(service: &str, redis: &RedisOpt) -> anyhow::Result<()> {
    let (store, ns) = cli_store(redis, service).await?;
    let records = parked::list(&store, &ns).await?;
    if records.is_empty() {
        println!("no parked keys in {ns}");
        return Ok(());
    }
    println!("{:<24} {:>8} {:>6} {:>8} {:<20} {:<25} error", "KEY", "SEQ", "HELD", "ATTEMPTS", "TYPE", "PARKED AT");
    for p in records {
        let rec = &p.record;
        println!(
            "{:<24} {:>8} {:>6} {:>8} {:<20} {:<25} {}",
            p.key,
            rec["seq"],
            p.held,
            rec["attempts"],
            rec["type"].as_str().unwrap_or("?"),
            rec["time"].as_str().unwrap_or("?"),
            rec["error"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `superclient parked release SERVICE [KEY]`.
pub async fn cli_release(service: &str, key: Option<&str>, redis: &RedisOpt, wait: Duration) -> anyhow::Result<()> {
    let (store, ns) = cli_store(redis, service).await?;
    let mut con = store.con.clone();
    let keys: Vec<String> = match key {
        Some(k) => {
            let kns = parked::key_namespace(&store, &ns, k).await?;
            let parked: bool = redis::cmd("SISMEMBER").arg(state::parked_set_key(&kns)).arg(k).query_async(&mut con).await?;
            if !parked {
                anyhow::bail!("key {k:?} is not parked in {ns}; `superclient parked list {service}` shows the parked keys");
            }
            vec![k.to_string()]
        }
        None => parked::list(&store, &ns).await?.into_iter().map(|p| p.key).collect(),
    };
    if keys.is_empty() {
        println!("no parked keys in {ns}");
        return Ok(());
    }
    let mut requested = Vec::new();
    for k in &keys {
        let release = state::release_key(&parked::key_namespace(&store, &ns, k).await?);
        let _: () = redis::cmd("SADD").arg(&release).arg(k).query_async(&mut con).await?;
        requested.push((release, k));
    }
    println!("release requested for {} key(s); waiting for the owning instances...", keys.len());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut pending = false;
        for (release, k) in &requested {
            let is: bool = redis::cmd("SISMEMBER").arg(release).arg(k).query_async(&mut con).await?;
            pending |= is;
        }
        if !pending {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            println!("not processed within {wait:?}: is an instance of {service} running? The request stays and is processed when one runs.");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let still: Vec<parked::Parked> = parked::list(&store, &ns).await?.into_iter().filter(|p| keys.contains(&p.key)).collect();
    for k in &keys {
        match still.iter().find(|p| &p.key == k) {
            Some(p) => println!("{k}: still parked ({} held) at seq {}: {}", p.held, p.record["seq"], p.record["error"].as_str().unwrap_or("?")),
            None => println!("{k}: released, its held events were processed"),
        }
    }
    if !still.is_empty() {
        anyhow::bail!("{} key(s) failed again", still.len());
    }
    Ok(())
}
