//! `append`: consistency-checked appends through the gateway against raw JetStream publishes
//! carrying the same expected-sequence headers, from the same client, at the same concurrency.
//! Each case starts a fresh nats-server and gateway.

use crate::procs::{Proc, Usage};
use crate::report::Row;
use crate::Bins;
use bytes::Bytes;
use futures::future::join_all;
use sequent_protocol::subjects;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub async fn run(bins: &Bins, events: usize, key_counts: &[usize], batches: &[usize]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &keys in key_counts {
        for &batch in batches {
            // Fresh servers per case, so every case starts from the same empty stream.
            let nats = Proc::nats().await?;
            let gateway = Proc::gateway(&bins.gateway, &nats.url, None).await?;
            let client = crate::load::admin(&nats.url).await?;
            let me = Proc::this("sequent-bench (writers)");
            let procs = [&nats, &gateway, &me];

            let before = Usage::sample(&procs);
            let (rate, lat) = run_writers(keys, batch, events, Target::Gateway(client.clone()), "gw").await?;
            let case = format!("keys {keys}, batch {batch}");
            let (stored, secs) = rate;
            rows.push(Row::new("append", "gateway (version-checked)", case.clone(), stored, secs, Some(lat), Usage::since(&before, &procs)));

            // Batches: the same guarantee is an atomic batch; individual publishes are the
            // ceiling without it.
            let mut baselines = vec![(Target::Raw(client.clone()), "raw JetStream (same headers)", "raw")];
            if batch > 1 {
                baselines = vec![
                    (Target::RawAtomic(client.clone(), Arc::new(tokio::sync::Semaphore::new(32))), "raw JetStream atomic batch", "rawb"),
                    (Target::Raw(client.clone()), "raw JetStream, not atomic", "raw"),
                ];
            }
            for (target, path, prefix) in baselines {
                let before = Usage::sample(&procs);
                let ((stored, secs), lat) = run_writers(keys, batch, events, target, prefix).await?;
                rows.push(Row::new("append", path, case.clone(), stored, secs, Some(lat), Usage::since(&before, &procs)));
            }
            let gateway_rate = rows.iter().rev().find(|r| r.path.starts_with("gateway")).map_or(0.0, |r| r.per_s);
            eprintln!("keys {keys:>5} batch {batch:>3}: gateway {gateway_rate:.0}/s, same-guarantee raw {:.0}/s", rows[rows.len() - if batch > 1 { 2 } else { 1 }].per_s);
        }
    }
    Ok(rows)
}

#[derive(Clone)]
enum Target {
    Gateway(async_nats::Client),
    Raw(async_nats::Client),
    /// JetStream's atomic batch (what the gateway uses for several events).
    /// With the gateway's bound on open batches (JetStream allows 50 per stream).
    RawAtomic(async_nats::Client, Arc<tokio::sync::Semaphore>),
}

/// One writer per key, each appending `batch` events per request with an explicit expected
/// version (the gateway) or expected last subject sequence (raw), until `events` are stored.
async fn run_writers(keys: usize, batch: usize, events: usize, target: Target, prefix: &str) -> anyhow::Result<((usize, f64), Vec<Duration>)> {
    let per_key = events.div_ceil(keys).div_ceil(batch).max(1);
    let payload = Arc::new(serde_json::json!({"amount_cents": 1234, "note": "x".repeat(100)}));
    let started = Instant::now();
    let writers = (0..keys).map(|k| {
        let target = target.clone();
        let key = format!("{prefix}-{k}");
        let payload = payload.clone();
        tokio::spawn(async move { write_key(target, key, batch, per_key, payload).await })
    });
    let mut latencies = Vec::new();
    let mut stored = 0usize;
    for r in join_all(writers).await {
        let (n, lat) = r??;
        stored += n;
        latencies.extend(lat);
    }
    Ok(((stored, started.elapsed().as_secs_f64()), latencies))
}

async fn write_key(target: Target, key: String, batch: usize, requests: usize, data: Arc<serde_json::Value>) -> anyhow::Result<(usize, Vec<Duration>)> {
    let mut latencies = Vec::with_capacity(requests);
    let mut version = 0u64;
    let mut last_seq = 0u64;
    for _ in 0..requests {
        let t = Instant::now();
        match &target {
            Target::Gateway(client) => {
                let events: Vec<_> = (0..batch)
                    .map(|i| serde_json::json!({"type": "Bench", "key": key, "expect": version + i as u64, "data": *data}))
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({"events": events}))?;
                let reply = client.request(subjects::append_subject("bench"), body.into()).await?;
                let reply: sequent_protocol::AppendReply = serde_json::from_slice(&reply.payload)?;
                anyhow::ensure!(reply.all_stored(), "append refused: {reply:?}");
            }
            Target::RawAtomic(client, slots) => {
                let _slot = slots.acquire().await?;
                let id = format!("{key}-{version}");
                for i in 0..batch {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Batch-Id", id.as_str());
                    h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
                    if i == 0 {
                        h.insert("Nats-Expected-Last-Subject-Sequence", last_seq.to_string().as_str());
                        h.insert("Nats-Expected-Last-Subject-Sequence-Subject", subjects::key_filter(&key).as_str());
                    }
                    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"version": version + i as u64, "data": *data}))?);
                    let subject = subjects::publish_subject(&key, "Bench");
                    if i + 1 < batch {
                        client.publish_with_headers(subject, h, body).await?;
                        continue;
                    }
                    h.insert("Nats-Batch-Commit", "1");
                    let reply = client.request_with_headers(subject, h, body).await?;
                    let ack: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                    anyhow::ensure!(ack.get("error").is_none(), "raw batch refused: {ack}");
                    last_seq = ack["seq"].as_u64().unwrap_or(0);
                }
            }
            Target::Raw(client) => {
                // The same work JetStream does for the gateway: one expectation per key, the
                // batch as individual publishes awaited together (raw has no version chain).
                let mut acks = Vec::with_capacity(batch);
                for i in 0..batch {
                    let mut h = async_nats::HeaderMap::new();
                    if i == 0 {
                        h.insert("Nats-Expected-Last-Subject-Sequence", last_seq.to_string().as_str());
                        h.insert("Nats-Expected-Last-Subject-Sequence-Subject", subjects::key_filter(&key).as_str());
                    }
                    let body = serde_json::to_vec(&serde_json::json!({"version": version + i as u64, "data": *data}))?;
                    acks.push(client.request_with_headers(subjects::publish_subject(&key, "Bench"), h, Bytes::from(body)));
                }
                for reply in join_all(acks).await {
                    let reply = reply?;
                    let ack: serde_json::Value = serde_json::from_slice(&reply.payload)?;
                    anyhow::ensure!(ack.get("error").is_none(), "raw publish refused: {ack}");
                    last_seq = last_seq.max(ack["seq"].as_u64().unwrap_or(0));
                }
            }
        }
        latencies.push(t.elapsed());
        version += batch as u64;
    }
    Ok((requests * batch, latencies))
}

