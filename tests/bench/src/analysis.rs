//! `analysis`: pyreport's scan of N events into an Arrow table against the pure-Python nats-py
//! reader of pyreport/bench/scan_bench.py, each in its own Python process
//! (tests/bench/analysis.py), over the same stream. The gateway creates the streams and is
//! stopped before loading, as scan_bench.py does (its indexer would compete for the cores); one
//! runs again for the scans, since pyreport asks the gateways for its readers (tails) and pulls
//! through their relay, once its indexer has caught up.

use crate::load::{self, Kind};
use crate::procs::{run_measured, Proc, Usage};
use crate::report::Row;
use crate::Bins;
use anyhow::Context;

pub async fn run(bins: &Bins, events: usize) -> anyhow::Result<Vec<Row>> {
    let nats = Proc::nats().await?;
    drop(Proc::gateway(&bins.gateway, &nats.url, None).await?);
    let client = load::admin(&nats.url).await?;
    eprintln!("analysis: loading {events} events");
    load::load(&client, Kind::Bank, events).await?;
    let gateway = Proc::gateway(&bins.gateway, &nats.url, None).await?;
    wait_indexed(&client).await?;
    let case = format!("{events} events");
    let mut rows = Vec::new();
    for (reader, path) in [("python", "pure-Python nats-py reader"), ("pyreport", "pyreport scan → Arrow")] {
        let mut cmd = std::process::Command::new(&bins.python);
        cmd.args(["tests/bench/analysis.py", reader, &nats.url, &events.to_string()]);
        let before = Usage::sample(&[&nats, &gateway]);
        let (out, mut py) = run_measured(&format!("analysis-{reader}"), cmd).await.context("is pyreport installed in the venv? (.sequent/venv/bin/pip install .)")?;
        let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default()).with_context(|| format!("analysis.py printed {out:?}"))?;
        let n = v["rows"].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(n == events, "{reader} read {n} rows of {events}");
        // The scan's own CPU (the interpreter's start and imports are not part of it).
        py.cpu_s = v["cpu_s"].as_f64().unwrap_or(py.cpu_s);
        py.name = format!("python ({reader})");
        let mut usage = vec![py];
        usage.extend(Usage::since(&before, &[&nats, &gateway]));
        rows.push(Row::new("analysis", path, case.clone(), n, v["seconds"].as_f64().unwrap_or(0.0), None, usage));
    }
    eprintln!("analysis {events}: pyreport {:.0}/s, pure Python {:.0}/s ({:.1}x)", rows[1].per_s, rows[0].per_s, rows[1].per_s / rows[0].per_s);
    Ok(rows)
}

/// Waits until the gateways' indexer has handled every loaded event.
async fn wait_indexed(client: &async_nats::Client) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::pull;
    let js = async_nats::jetstream::new(client.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    loop {
        let stream = js.get_stream("EVENTS").await.context("the event stream")?;
        if let Ok(mut c) = stream.get_consumer::<pull::Config>("sequent-indexer").await {
            let info = c.info().await.context("the indexer's consumer")?;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return Ok(());
            }
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the gateway's indexer did not catch up within 15 minutes");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
