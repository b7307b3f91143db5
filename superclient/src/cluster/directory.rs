//! Every service type's instances, as their heartbeats in the membership bucket show them:
//! where to send `http.call(service, ...)`, and what `admin.services()` reports. Started on
//! first use (most services never need it); the bucket is read back every second with a
//! direct multi-last get.
//!
//! "Live" is judged against the newest heartbeat seen in the whole bucket (server time), like
//! the membership of one service, so the clocks of the instances do not matter.

use super::membership::{self, owner};
use parking_lot::RwLock;
use sequent_net::DirectReader;
use sequent_protocol::subjects;
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

    /// Starts reading the bucket (once) and waits until its current content is loaded.
    pub async fn ensure_started(self: &std::sync::Arc<Self>, members: &DirectReader) {
        let this = self.clone();
        let members = members.clone();
        self.started
            .get_or_init(|| async move {
                this.refresh(&members).await;
                let poller = this.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    loop {
                        tick.tick().await;
                        poller.refresh(&members).await;
                    }
                });
            })
            .await;
    }

    async fn refresh(&self, members: &DirectReader) {
        let beats = match membership::read(members, &subjects::members_filter("*")).await {
            Ok(b) => b,
            Err(e) => return tracing::debug!(error = %e, "directory: reading the membership bucket failed"),
        };
        for b in beats {
            self.record(&b.service, &b.instance, b.http.filter(|_| b.at.is_some()), b.at);
        }
    }

    fn record(&self, service: &str, instance: &str, http: Option<String>, at: Option<OffsetDateTime>) {
        let mut members = self.members.write();
        match (http, at) {
            (Some(http), Some(at)) => {
                let all = members.entry(service.to_string()).or_default();
                let suspect_since = all.get(instance).and_then(|m| m.suspect_since);
                all.insert(instance.to_string(), Member { http, last_seen: at, suspect_since });
                let mut newest = self.newest.write();
                if newest.is_none_or(|n| at > n) {
                    *newest = Some(at);
                }
            }
            _ => {
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

    /// How many instances of `service` are live (0: none runs).
    pub fn live_count(&self, service: &str) -> usize {
        self.members.read().get(service).map_or(0, |all| all.values().filter(|m| self.is_live(m)).count())
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
            // Asked all at once: one round trip, not one per partition.
            let infos = futures::future::join_all((0..partitions).map(|p| {
                let (stream, name) = (stream.clone(), subjects::consumer_name(&service, p));
                async move { stream.consumer_info(name).await }
            }))
            .await;
            let mut lag: Option<u64> = None;
            for info in infos.into_iter().flatten() {
                *lag.get_or_insert(0) += info.num_pending + info.num_ack_pending as u64;
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
