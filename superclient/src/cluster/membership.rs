//! Which instances of the service are alive, and which partitions each owns.
//!
//! Each instance puts `<service>.<instance>` into the KV bucket `sequent_members` every
//! `--heartbeat` and reads `<service>.*` back as often (direct reads, no consumer). An instance is live while its last heartbeat is at
//! most `--member-timeout` older than the newest heartbeat seen (server timestamps only, so
//! clocks of the instances do not matter); one missing from the bucket altogether (lost with a
//! nats-server restart) stays live while its heartbeat changed within `--member-timeout` on the
//! reader's clock ([`Seen`]). Partitions are assigned by rendezvous hashing over
//! the live instances: everyone computes the same owner, and only the partitions of an
//! instance that joins or leaves move.

use async_nats::jetstream;
use sequent_net::DirectReader;
use sequent_protocol::subjects;
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

/// One instance as it heartbeats.
#[derive(Debug, Clone)]
pub struct Me {
    pub service: String,
    pub instance: String,
    /// Where its HTTP server listens (for `http.call` and operators).
    pub http: String,
}

/// A heartbeat as read back from the bucket.
#[derive(Debug, Clone)]
pub struct Beat {
    pub service: String,
    pub instance: String,
    pub http: Option<String>,
    /// When the server stored it; None for a removal.
    pub at: Option<time::OffsetDateTime>,
}

/// The latest heartbeat (or removal) of every instance matching `filter`, read with one direct
/// multi-last get: no consumer is created, so instances need no right to create one.
pub async fn read(members: &DirectReader, filter: &str) -> Result<Vec<Beat>, sequent_net::ReadError> {
    let stored = members.multi_last(&[filter.to_string()], sequent_net::direct::MAX_BATCH).await?;
    let prefix = format!("$KV.{}.", subjects::MEMBERS_BUCKET);
    Ok(stored
        .into_iter()
        .filter_map(|m| {
            let (service, instance) = m.subject.strip_prefix(&prefix)?.split_once('.')?;
            let removed = m.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_some_and(|op| op.as_str() != "PUT");
            let at = time::OffsetDateTime::parse(&m.time, &time::format_description::well_known::Rfc3339).ok();
            let http = serde_json::from_slice::<serde_json::Value>(&m.payload).ok().and_then(|v| v["http"].as_str().map(str::to_string));
            Some(Beat { service: service.to_string(), instance: instance.to_string(), http, at: if removed { None } else { at } })
        })
        .collect())
}

/// The instances of `beats` alive at the newest heartbeat among them (server time, so the
/// clocks of the instances do not matter): sorted.
pub fn live(beats: &[Beat], timeout: Duration) -> Vec<String> {
    let timeout = time::Duration::try_from(timeout).unwrap_or(time::Duration::seconds(2));
    let Some(newest) = beats.iter().filter_map(|b| b.at).max() else { return Vec::new() };
    let mut live: Vec<String> = beats.iter().filter(|b| b.at.is_some_and(|t| t >= newest - timeout)).map(|b| b.instance.clone()).collect();
    live.sort();
    live
}

/// What an instance remembers of its service's members between reads: each one's last
/// heartbeat time as read, and when (on this instance's clock) it last changed.
///
/// The members bucket is kept in memory: a nats-server restart loses it, and the gateway makes
/// it again empty. Judged by the bucket alone, every instance would then see only the members
/// whose heartbeat is back already (often just itself), take every partition, and give them
/// back a heartbeat later: a storm of takeovers for nothing. So a member missing from a read is
/// still live while its heartbeat changed within the timeout on this clock. A member whose
/// heartbeat is in the bucket but stale is dead as before, and one that left (a removal) is gone
/// at once.
#[derive(Debug, Default)]
pub struct Seen(std::collections::HashMap<String, (time::OffsetDateTime, std::time::Instant)>);

impl Seen {
    /// The live members, sorted: [`live`] over `beats`, plus those missing from `beats` whose
    /// heartbeat changed less than `timeout` ago (`now`, this instance's clock).
    pub fn live(&mut self, beats: &[Beat], timeout: Duration, now: std::time::Instant) -> Vec<String> {
        let mut out: std::collections::BTreeSet<String> = live(beats, timeout).into_iter().collect();
        for b in beats {
            match b.at {
                None => {
                    self.0.remove(&b.instance);
                }
                Some(at) => {
                    let seen = self.0.entry(b.instance.clone()).or_insert((at, now));
                    if seen.0 != at {
                        *seen = (at, now);
                    }
                }
            }
        }
        self.0.retain(|_, (_, changed)| now.duration_since(*changed) < timeout);
        let read: std::collections::HashSet<&str> = beats.iter().map(|b| b.instance.as_str()).collect();
        out.extend(self.0.keys().filter(|name| !read.contains(name.as_str())).cloned());
        out.into_iter().collect()
    }
}

/// Heartbeats and publishes the sorted live set of this instance's service, read back every
/// heartbeat, until `stop`: then the heartbeats end and the instance leaves the bucket
/// (after its last heartbeat, so none can land after the removal), and `run` returns.
pub async fn run(
    js: jetstream::Context,
    members: DirectReader,
    me: Me,
    heartbeat: Duration,
    member_timeout: Duration,
    live_tx: watch::Sender<Vec<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let subject = subjects::member_subject(&me.service, &me.instance);
    let value = serde_json::json!({ "instance": me.instance, "http": me.http, "pid": std::process::id() }).to_string();
    let beat_js = js.clone();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let mut beat_stop = stop.clone();
    let (service, instance) = (me.service.clone(), me.instance.clone());
    let beats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut warned = false;
        let mut first = Some(first_tx);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = sequent_net::serve::stopped(&mut beat_stop) => break,
            }
            let stored = async { beat_js.publish(subject.clone(), value.clone().into()).await?.await.map_err(async_nats::Error::from) }.await;
            if stored.is_ok() {
                // Our own heartbeat is in: the first read can count us.
                first.take().map(|tx| tx.send(()));
            }
            match stored {
                Ok(_) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "membership heartbeat failed (is a bus-gateway running? it creates the bucket {})", subjects::MEMBERS_BUCKET);
                    warned = true;
                }
                Err(_) => {}
            }
        }
        leave(&beat_js, &service, &instance).await;
        tracing::info!("left the membership: the other instances take the partitions over");
    });
    let filter = subjects::members_filter(&me.service);
    tokio::select! {
        _ = first_rx => {}
        () = sequent_net::serve::stopped(&mut stop) => {
            let _ = beats.await;
            return;
        }
    }
    // As often as the heartbeats (not twice as often): a death is seen at most one heartbeat
    // after `member_timeout`, and a service's reads cost half the messages.
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen = Seen::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = sequent_net::serve::stopped(&mut stop) => break,
        }
        let beats = match read(&members, &filter).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "reading the membership bucket failed; retrying");
                continue;
            }
        };
        let mut live = seen.live(&beats, member_timeout, std::time::Instant::now());
        // Until our own heartbeat shows up we own nothing.
        if !live.contains(&me.instance) {
            live.clear();
        }
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
    let _ = beats.await;
}

/// Removes this instance from the bucket (graceful stop), so the others take over at once.
pub async fn leave(js: &jetstream::Context, service: &str, instance: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    let removed = async { js.publish_with_headers(subjects::member_subject(service, instance), headers, bytes::Bytes::new()).await?.await.map_err(async_nats::Error::from) }.await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "could not remove this instance from the membership bucket");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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

    fn beat(instance: &str, secs: i64) -> Beat {
        Beat { service: "s".into(), instance: instance.into(), http: None, at: Some(time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(secs)) }
    }

    #[test]
    fn live_is_judged_against_the_newest_heartbeat() {
        let beats = vec![beat("a", 100), beat("b", 99), beat("c", 90), Beat { at: None, ..beat("d", 0) }];
        assert_eq!(live(&beats, Duration::from_secs(2)), ["a", "b"]);
        assert!(live(&[], Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn a_member_missing_from_the_bucket_stays_live_while_its_heartbeat_is_recent() {
        let timeout = Duration::from_secs(2);
        let t0 = std::time::Instant::now();
        let mut seen = Seen::default();
        assert_eq!(seen.live(&[beat("a", 100), beat("b", 100)], timeout, t0), ["a", "b"]);
        // The bucket was lost and made again: only a's heartbeat is back.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(seen.live(&[beat("a", 200)], timeout, later), ["a", "b"], "b's last change was 1.5 s ago");
        // b never comes back: gone once its last change is older than the timeout.
        assert_eq!(seen.live(&[beat("a", 201)], timeout, t0 + Duration::from_millis(2100)), ["a"]);
    }

    #[test]
    fn a_stale_heartbeat_in_the_bucket_or_a_removal_is_not_kept() {
        let timeout = Duration::from_secs(2);
        let t0 = std::time::Instant::now();
        let mut seen = Seen::default();
        assert_eq!(seen.live(&[beat("a", 100), beat("b", 100), beat("c", 100)], timeout, t0), ["a", "b", "c"]);
        let soon = t0 + Duration::from_millis(500);
        // b stopped heartbeating (its beat is there, 5 s old); c left.
        let beats = [beat("a", 105), beat("b", 100), Beat { at: None, ..beat("c", 0) }];
        assert_eq!(seen.live(&beats, timeout, soon), ["a"]);
    }

    #[test]
    fn instance_names_are_sanitised() {
        assert_eq!(sanitize_instance("host.example.com-12"), "host-example-com-12");
    }
}
