//! Which instances of the service are alive, and which partitions each owns.
//!
//! Each instance puts `<service>.<instance>` into the KV bucket `sequent_members` every
//! `--heartbeat` and watches `<service>.*`. An instance is live while its last heartbeat is at
//! most `--member-timeout` older than the newest heartbeat seen (server timestamps only, so
//! clocks of the instances do not matter). Partitions are assigned by rendezvous hashing over
//! the live instances: everyone computes the same owner, and only the partitions of an
//! instance that joins or leaves move.

use crate::runtime::Service;
use futures::StreamExt;
use sequent_protocol::subjects::MEMBERS_BUCKET;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Rendezvous score of `instance` for `partition`: FNV-1a 64 then a splitmix64 finaliser,
/// stable across builds and platforms.
pub fn score(instance: &str, partition: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance.as_bytes().iter().chain(b"/").chain(partition.to_string().as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The live instance that owns `partition`.
pub fn owner(partition: u32, live: &[String]) -> Option<&String> {
    live.iter().max_by_key(|m| (score(m, partition), m.as_str()))
}

pub fn member_key(service: &str, instance: &str) -> String {
    format!("{service}.{instance}")
}

/// Makes an instance name usable as a KV key token and a log field.
pub fn sanitize_instance(raw: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .take(64)
        .collect();
    if s.is_empty() {
        "instance".into()
    } else {
        s
    }
}

pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "host".into());
    sanitize_instance(&format!("{}-{}", host.trim(), std::process::id()))
}

/// Heartbeats and watches the membership bucket forever; publishes the sorted live set.
pub async fn run(svc: Arc<Service>, live_tx: watch::Sender<Vec<String>>, http: String) {
    let kv = loop {
        match svc.js.get_key_value(MEMBERS_BUCKET).await {
            Ok(kv) => break kv,
            Err(e) => {
                tracing::warn!(error = %e, "membership bucket {MEMBERS_BUCKET} not available yet (is a bus-gateway running?); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let key = member_key(&svc.name, &svc.instance);
    let value = serde_json::json!({ "instance": svc.instance, "http": http, "pid": std::process::id() }).to_string();
    let beat_kv = kv.clone();
    let beat_every = svc.opts.heartbeat;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(beat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Err(e) = beat_kv.put(&key, value.clone().into()).await {
                tracing::warn!(error = %e, "membership heartbeat failed");
            }
        }
    });

    let timeout = time::Duration::try_from(svc.opts.member_timeout).unwrap_or(time::Duration::seconds(2));
    let prefix = format!("{}.", svc.name);
    loop {
        let mut watch = match kv.watch_with_history(format!("{}.*", svc.name)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "watching the membership bucket failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut seen: HashMap<String, time::OffsetDateTime> = HashMap::new();
        let mut tick = tokio::time::interval(svc.opts.heartbeat / 2);
        loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        let Some(instance) = entry.key.strip_prefix(&prefix) else { continue };
                        match entry.operation {
                            async_nats::jetstream::kv::Operation::Put => { seen.insert(instance.to_string(), entry.created); }
                            _ => { seen.remove(instance); }
                        }
                    }
                    Some(Err(e)) => { tracing::warn!(error = %e, "membership watch error; restarting it"); break; }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            let Some(newest) = seen.values().max().copied() else { continue };
            let mut live: Vec<String> = seen.iter().filter(|(_, t)| **t >= newest - timeout).map(|(i, _)| i.clone()).collect();
            // Until our own heartbeat shows up we own nothing.
            if !live.contains(&svc.instance) {
                live.clear();
            }
            live.sort();
            live_tx.send_if_modified(|old| {
                if *old != live {
                    tracing::info!(live = ?live, "members changed");
                    *old = live;
                    true
                } else {
                    false
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes this instance from the bucket (graceful stop), so the others take over at once.
pub async fn leave(svc: &Service) {
    if let Ok(kv) = svc.js.get_key_value(MEMBERS_BUCKET).await {
        if let Err(e) = kv.delete(member_key(&svc.name, &svc.instance)).await {
            tracing::warn!(error = %e, "could not remove this instance from the membership bucket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_leavers_partitions() {
        let three: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let two: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let mut counts = HashMap::new();
        for p in 0..64 {
            let before = owner(p, &three).unwrap();
            *counts.entry(before.clone()).or_insert(0) += 1;
            if before != "c" {
                assert_eq!(owner(p, &two).unwrap(), before, "partition {p} moved although its owner stayed");
            }
        }
        assert!(counts.values().all(|n| *n >= 10), "unbalanced: {counts:?}");
    }

    #[test]
    fn instance_names_are_sanitised() {
        assert_eq!(sanitize_instance("host.example.com-12"), "host-example-com-12");
    }
}
