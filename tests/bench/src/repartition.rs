//! `repartition`: the write pause of raising the partition count, `bus-gateway
//! --repartition-from EVENTS` copying N events into a stream with 64 partitions (every event
//! read and published again at its own sequence), start to exit.

use crate::load::{self, Kind};
use crate::procs::{run_measured, Proc, Usage};
use crate::report::Row;
use crate::Bins;
use std::time::Instant;

pub async fn run(bins: &Bins, events: usize) -> anyhow::Result<Vec<Row>> {
    let nats = Proc::nats().await?;
    let gateway = Proc::gateway(&bins.gateway, &nats.url, None).await?;
    let client = load::admin(&nats.url).await?;
    eprintln!("repartition: loading {events} events");
    load::load(&client, Kind::Nectar, events).await?;
    load::wait_indexer(&client).await?;
    drop(gateway); // the appends stop

    let mut cmd = std::process::Command::new(&bins.gateway);
    cmd.args(["--repartition-from", "EVENTS", "--stream", "EVENTS64", "--partitions", "64"])
        .env("NATS_URL", &nats.url)
        .env("RUST_LOG", "warn,bus_gateway::repartition=info");
    let procs = [&nats];
    let before = Usage::sample(&procs);
    let started = Instant::now();
    let (out, copier) = run_measured("bus-gateway-repartition", cmd).await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(out.contains(&format!("copied {events} events")), "the copy did not report {events} events: {out}");
    let mut usage = vec![copier];
    usage.extend(Usage::since(&before, &procs));
    let row = Row::new("repartition", "bus-gateway --repartition-from (16 → 64 partitions)", format!("{events} events"), events, secs, None, usage);
    eprintln!("repartition {events}: {:.0} events/s", row.per_s);
    Ok(vec![row])
}
