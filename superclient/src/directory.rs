//! Every service type's instances, as their heartbeats in the membership bucket show them:
//! where to send `http.call(service, ...)`, and what `admin.services()` reports. Started on
//! first use (most services never need it).
//!
//! "Live" is judged against the newest heartbeat seen in the whole bucket (server time), like
//! the membership of one service, so the clocks of the instances do not matter.

use crate::membership::owner;
use futures::StreamExt;
use parking_lot::RwLock;
use sequent_protocol::subjects::{self, MEMBERS_BUCKET};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
struct Member {
    http: String,
    last_seen: OffsetDateTime,
    /// Set when a request to it could not connect: skipped until its next heartbeat.
    suspect_since: Option<OffsetDateTime>,
}

pub struct Directory {
    timeout: Duration,
    started: tokio::sync::OnceCell<()>,
    /// service → instance → member
    members: RwLock<BTreeMap<String, BTreeMap<String, Member>>>,
    newest: RwLock<Option<OffsetDateTime>>,
    next: AtomicUsize,
    partitions: tokio::sync::OnceCell<u32>,
}

impl Directory {
    pub fn new(member_timeout: Duration) -> Directory {
        Directory {
            // Discovery tolerates a little more than sticky ownership does.
            timeout: member_timeout.max(Duration::from_secs(3)),
            started: tokio::sync::OnceCell::new(),
            members: RwLock::new(BTreeMap::new()),
            newest: RwLock::new(None),
            next: AtomicUsize::new(0),
            partitions: tokio::sync::OnceCell::new(),
        }
    }

    /// Starts watching the bucket (once) and waits until its current content is loaded.
    pub async fn ensure_started(self: &std::sync::Arc<Self>, js: &async_nats::jetstream::Context) {
        let this = self.clone();
        let js = js.clone();
        self.started
            .get_or_init(|| async move {
                let (loaded_tx, mut loaded_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(watch(this, js, loaded_tx));
                // An empty bucket sends nothing: do not wait for ever.
                let _ = tokio::time::timeout(Duration::from_secs(2), loaded_rx.wait_for(|l| *l)).await;
            })
            .await;
    }

    fn record(&self, key: &str, http: Option<String>, at: OffsetDateTime) {
        let Some((service, instance)) = key.split_once('.') else { return };
        let mut members = self.members.write();
        match http {
            Some(http) => {
                members
                    .entry(service.to_string())
                    .or_default()
                    .insert(instance.to_string(), Member { http, last_seen: at, suspect_since: None });
                let mut newest = self.newest.write();
                if newest.is_none_or(|n| at > n) {
                    *newest = Some(at);
                }
            }
            None => {
                if let Some(m) = members.get_mut(service) {
                    m.remove(instance);
                }
            }
        }
    }

    fn is_live(&self, m: &Member) -> bool {
        let Some(newest) = *self.newest.read() else { return false };
        let timeout = time::Duration::try_from(self.timeout).unwrap_or(time::Duration::seconds(3));
        m.last_seen >= newest - timeout
    }

    /// The HTTP address of a live instance of `service`, round robin, avoiding suspects.
    pub fn pick(&self, service: &str) -> Option<String> {
        let members = self.members.read();
        let all = members.get(service)?;
        let live: Vec<&Member> = all.values().filter(|m| self.is_live(m)).collect();
        let healthy: Vec<&&Member> = live.iter().filter(|m| m.suspect_since.is_none_or(|s| m.last_seen > s)).collect();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if !healthy.is_empty() {
            return Some(healthy[n % healthy.len()].http.clone());
        }
        // Everyone failed once: try them again rather than give up.
        (!live.is_empty()).then(|| live[n % live.len()].http.clone())
    }

    /// A request to `addr` could not connect: prefer the others until it heartbeats again.
    pub fn suspect(&self, service: &str, addr: &str) {
        let mut members = self.members.write();
        if let Some(all) = members.get_mut(service) {
            for m in all.values_mut().filter(|m| m.http == addr) {
                m.suspect_since = Some(m.last_seen);
            }
        }
    }

    pub fn service_names(&self) -> Vec<String> {
        self.members.read().keys().cloned().collect()
    }

    async fn partitions(&self, js: &async_nats::jetstream::Context, stream: &str) -> u32 {
        *self
            .partitions
            .get_or_init(|| async {
                match js.get_stream(stream).await {
                    Ok(s) => s
                        .cached_info()
                        .config
                        .subject_transform
                        .as_ref()
                        .and_then(|t| t.destination.split("partition(").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok()))
                        .unwrap_or(16),
                    Err(_) => 16,
                }
            })
            .await
    }

    /// `[{service, instances:[{instance, http, partitions, last_seen, live}], consumer_lag}]`.
    pub async fn services(&self, js: &async_nats::jetstream::Context, stream_name: &str) -> anyhow::Result<serde_json::Value> {
        let partitions = self.partitions(js, stream_name).await;
        type Instances = Vec<(String, Member, bool)>;
        let snapshot: Vec<(String, Instances)> = {
            let members = self.members.read();
            members
                .iter()
                .map(|(s, all)| (s.clone(), all.iter().map(|(i, m)| (i.clone(), m.clone(), self.is_live(m))).collect()))
                .collect()
        };
        let stream = js.get_stream_no_info(stream_name).await?;
        let mut out = Vec::new();
        for (service, instances) in snapshot {
            // Events not yet handled by this service type: pending plus in flight, all partitions
            // (None: the service consumes no events, so it has no partitions either).
            let mut lag: Option<u64> = None;
            for p in 0..partitions {
                if let Ok(info) = stream.consumer_info(subjects::consumer_name(&service, p)).await {
                    *lag.get_or_insert(0) += info.num_pending + info.num_ack_pending as u64;
                }
            }
            let live: Vec<String> = instances.iter().filter(|(_, _, l)| *l).map(|(i, _, _)| i.clone()).collect();
            let mut list = Vec::new();
            for (instance, m, is_live) in &instances {
                let owned: Vec<u32> = if *is_live && lag.is_some() {
                    (0..partitions).filter(|p| owner(*p, &live) == Some(instance)).collect()
                } else {
                    Vec::new()
                };
                list.push(serde_json::json!({
                    "instance": instance,
                    "http": m.http,
                    "partitions": owned,
                    "last_seen": m.last_seen.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "live": is_live,
                }));
            }
            out.push(serde_json::json!({ "service": service, "instances": list, "consumer_lag": lag }));
        }
        Ok(serde_json::Value::Array(out))
    }
}

async fn watch(dir: std::sync::Arc<Directory>, js: async_nats::jetstream::Context, loaded: tokio::sync::watch::Sender<bool>) {
    loop {
        let kv = match js.get_key_value(MEMBERS_BUCKET).await {
            Ok(kv) => kv,
            Err(e) => {
                tracing::debug!(error = %e, "directory: membership bucket not available yet");
                let _ = loaded.send(true);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut entries = match kv.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "directory: watching the membership bucket failed; retrying");
                let _ = loaded.send(true);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(entry) = entries.next().await {
            let Ok(entry) = entry else { break };
            let http = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => serde_json::from_slice::<serde_json::Value>(&entry.value)
                    .ok()
                    .and_then(|v| v["http"].as_str().map(str::to_string)),
                _ => None,
            };
            dir.record(&entry.key, http, entry.created);
            if entry.delta == 0 {
                let _ = loaded.send(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Parked keys of the given services: `[{service, key, event_id, seq, type, error, attempts,
/// parked_at, held}]`.
pub async fn parked(store: &crate::state::Store, services: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut con = store.con.clone();
    let mut out = Vec::new();
    for service in services {
        let ns: Option<String> = redis::cmd("GET").arg(crate::state::active_key(service)).query_async(&mut con).await?;
        let Some(ns) = ns else { continue };
        let mut keys: Vec<String> = redis::cmd("SMEMBERS").arg(crate::state::parked_set_key(&ns)).query_async(&mut con).await?;
        keys.sort();
        for key in keys {
            let rec: Option<String> = redis::cmd("GET").arg(crate::state::parked_key(&ns, &key)).query_async(&mut con).await?;
            let rec: serde_json::Value = rec.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default();
            let held: u64 = redis::cmd("LLEN").arg(crate::state::held_key(&ns, &key)).query_async(&mut con).await?;
            out.push(serde_json::json!({
                "service": service,
                "key": key,
                "event_id": rec["id"],
                "seq": rec["seq"],
                "type": rec["type"],
                "error": rec["error"],
                "attempts": rec["attempts"],
                "parked_at": rec["time"],
                "held": held,
            }));
        }
    }
    Ok(serde_json::Value::Array(out))
}

/// Asks the instance owning the key's partition to release it (as `superclient parked
/// release`). False when the key is not parked.
pub async fn release(store: &crate::state::Store, service: &str, key: &str) -> anyhow::Result<bool> {
    let mut con = store.con.clone();
    let ns: Option<String> = redis::cmd("GET").arg(crate::state::active_key(service)).query_async(&mut con).await?;
    let Some(ns) = ns else { return Ok(false) };
    let parked: bool = redis::cmd("SISMEMBER").arg(crate::state::parked_set_key(&ns)).arg(key).query_async(&mut con).await?;
    if !parked {
        return Ok(false);
    }
    let _: () = redis::cmd("SADD").arg(crate::state::release_key(&ns)).arg(key).query_async(&mut con).await?;
    Ok(true)
}
