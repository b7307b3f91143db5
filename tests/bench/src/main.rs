//! `cargo run --release -p sequent-bench -- append`: consistency-checked appends through the
//! gateway against raw JetStream publishes carrying the same expected-sequence headers, from
//! the same client, at the same concurrency. Prints a table (and JSON with `--json`).

mod procs;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::future::join_all;
use procs::{Proc, Usage};
use sequent_protocol::subjects;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sequent-bench", about = "Sequent benchmarks, each beside its baseline")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Write the results as JSON to this file too.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Appends: gateway (NATS request/reply, per-key version check) vs raw JetStream with the
    /// same expected-last-subject-sequence headers.
    Append {
        /// Events per run (per key count and batch size).
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        /// Key counts to run, comma separated (one writer per key).
        #[arg(long, default_value = "1,16,1024", value_delimiter = ',')]
        keys: Vec<usize>,
        /// Batch sizes to run, comma separated.
        #[arg(long, default_value = "1,32", value_delimiter = ',')]
        batches: Vec<usize>,
        /// Path of the bus-gateway binary (built with --release for real figures).
        #[arg(long, default_value = "target/release/bus-gateway")]
        gateway: std::path::PathBuf,
    },
}

#[derive(Serialize)]
struct Row {
    scenario: String,
    path: String,
    keys: usize,
    batch: usize,
    events: usize,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    processes: Vec<Usage>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rows = match cli.scenario {
        Scenario::Append { events, keys, batches, gateway } => append(events, &keys, &batches, &gateway).await?,
    };
    print_table(&rows);
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn append(events: usize, key_counts: &[usize], batches: &[usize], gateway_bin: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &keys in key_counts {
        for &batch in batches {
            // Fresh servers per case, so every case starts from the same empty stream.
            let nats = Proc::nats().await?;
            let gateway = Proc::gateway(gateway_bin, &nats.url).await?;
            let client = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-dev".into())
                .connect(nats.url.as_str())
                .await
                .context("connecting as admin")?;
            let procs = [&nats, &gateway];

            let before = Usage::sample(&procs);
            let (rate, lat) = run_writers(keys, batch, events, Target::Gateway(client.clone()), "gw").await?;
            rows.push(row("append", "gateway", keys, batch, events, rate, lat, Usage::since(&before, &procs)));

            let before = Usage::sample(&procs);
            let (rate, lat) = run_writers(keys, batch, events, Target::Raw(client.clone()), "raw").await?;
            rows.push(row("append", "raw JetStream", keys, batch, events, rate, lat, Usage::since(&before, &procs)));
            println!("keys {keys:>5} batch {batch:>3}: gateway {:.0}/s, raw {:.0}/s", rows[rows.len() - 2].events_per_s, rate);
        }
    }
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
fn row(scenario: &str, path: &str, keys: usize, batch: usize, events: usize, rate: f64, mut lat: Vec<Duration>, processes: Vec<Usage>) -> Row {
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Row {
        scenario: scenario.into(),
        path: path.into(),
        keys,
        batch,
        events,
        events_per_s: rate,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        processes,
    }
}

#[derive(Clone)]
enum Target {
    Gateway(async_nats::Client),
    Raw(async_nats::Client),
}

/// One writer per key, each appending `batch` events per request with an explicit expected
/// version (the gateway) or expected last subject sequence (raw), until `events` are stored.
async fn run_writers(keys: usize, batch: usize, events: usize, target: Target, prefix: &str) -> anyhow::Result<(f64, Vec<Duration>)> {
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
    Ok((stored as f64 / started.elapsed().as_secs_f64(), latencies))
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

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<8} {:<14} {:>5} {:>5} {:>9} {:>11} {:>8} {:>8} {:>8}  processes (cpu s, peak MiB)",
        "scenario", "path", "keys", "batch", "events", "events/s", "p50 ms", "p99 ms", "p99.9"
    );
    for r in rows {
        let procs: Vec<String> = r.processes.iter().map(|p| format!("{} {:.1}s {:.0}MiB", p.name, p.cpu_s, p.peak_mib)).collect();
        println!(
            "{:<8} {:<14} {:>5} {:>5} {:>9} {:>11.0} {:>8.2} {:>8.2} {:>8.2}  {}",
            r.scenario, r.path, r.keys, r.batch, r.events, r.events_per_s, r.p50_ms, r.p99_ms, r.p999_ms, procs.join(", ")
        );
    }
}
