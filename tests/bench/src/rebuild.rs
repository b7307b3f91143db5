//! `rebuild`: the real rebuild path (`superclient rebuild SCRIPT.lua`: an ordered consumer
//! replaying every event of the script's types through its Lua rebuild handlers, committed to
//! Redis with the partitions' checkpoints every 512 events) against a bare ordered-consumer read of
//! the same events (every message received, nothing parsed or applied).

use crate::load::{self, Kind};
use crate::procs::{run_measured, Proc, Usage};
use crate::report::Row;
use crate::Bins;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use sequent_protocol::subjects;
use std::time::Instant;

/// The script replayed: the original talk's nectar (get + set of one Redis key per event).
pub const SCRIPT: &str = "services/examples/nectar.lua";
const TYPES: [&str; 3] = ["AcceptedTransaction", "NectarCredit", "NectarDebit"];
/// Largest stream read through the script's filters as well (see the baselines).
const MAX_FILTERED_READ: usize = 100_000;

pub async fn run(bins: &Bins, events: usize) -> anyhow::Result<Vec<Row>> {
    let nats = Proc::nats().await?;
    // The gateway creates the stream and provisions the service's consumers (superclient start).
    let gateway = Proc::gateway(&bins.gateway, &nats.url, None).await?;
    let redis = Proc::redis().await?;
    let client = load::admin(&nats.url).await?;
    eprintln!("rebuild: loading {events} events");
    load::load(&client, Kind::Nectar, events).await?;
    load::wait_indexer(&client).await?;
    let case = format!("{events} events");
    let mut rows = Vec::new();

    // Baselines: a bare ordered-consumer read of the same events with no filter (the stream
    // holds only these events; what the rebuild of a multi-type script reads) and, on small
    // streams only, with one filter per type of the script: nats-server 2.15 serves several
    // wildcard filters at ~1,000 events/s once the stream holds many keys, which is why the
    // rebuild does not use them (18 minutes for 10^6 events).
    let me = Proc::this("sequent-bench (reader)");
    let procs = [&nats, &me];
    let mut baselines = vec![("bare read, no filter (ev.>)", vec![subjects::ALL_EVENTS.to_string()])];
    if events <= MAX_FILTERED_READ {
        baselines.push(("bare read, one filter per type", TYPES.iter().map(|t| subjects::type_filter(t)).collect()));
    }
    for (path, filters) in baselines {
        let before = Usage::sample(&procs);
        let started = Instant::now();
        let read = bare_read(&client, filters, events).await?;
        let secs = started.elapsed().as_secs_f64();
        rows.push(Row::new("rebuild", path, case.clone(), read, secs, None, Usage::since(&before, &procs)));
    }

    // The system: `superclient rebuild`, start to swap (process start, script load and
    // provisioning included: a few ms).
    let mut cmd = std::process::Command::new(&bins.superclient);
    cmd.args(["rebuild", SCRIPT, "--instance", "rebuild-1"])
        .env("NATS_URL", &nats.url)
        .env("REDIS_URL", &redis.url)
        .env("RUST_LOG", "warn,superclient=info");
    let procs = [&nats, &redis, &gateway];
    let before = Usage::sample(&procs);
    let started = Instant::now();
    let (_, superclient) = run_measured("superclient-rebuild", cmd).await?;
    let secs = started.elapsed().as_secs_f64();
    let mut usage = vec![superclient];
    usage.extend(Usage::since(&before, &procs));
    let log = std::fs::read_to_string(crate::procs::log_path("superclient-rebuild")?)?;
    let done = log.lines().find(|l| l.contains("rebuild done")).unwrap_or_default();
    let field = |name: &str| done.split(&format!("{name}=")).nth(1).and_then(|v| v.split_whitespace().next()).unwrap_or_default().trim_matches('"').to_string();
    let replayed = field("events")
        .parse::<usize>()
        .map_err(|_| anyhow::anyhow!("the rebuild did not log `rebuild done ... events=N`; see target/bench-logs/superclient-rebuild.log"))?;
    anyhow::ensure!(replayed == events, "the rebuild replayed {replayed} events, the stream holds {events}");
    rows.push(Row::new("rebuild", "superclient rebuild (Lua→Redis)", case, replayed, secs, None, usage));
    eprintln!(
        "rebuild {events}: superclient {:.0}/s (the replay alone, as it logs: {}), bare read {:.0}/s",
        rows[rows.len() - 1].per_s,
        field("rate"),
        rows[0].per_s
    );
    Ok(rows)
}

/// Reads `n` events with an ordered consumer over `filter_subjects`; returns how many came.
async fn bare_read(client: &async_nats::Client, filter_subjects: Vec<String>, n: usize) -> anyhow::Result<usize> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("EVENTS").await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subjects,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut got = 0;
    while got < n {
        match messages.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => eprintln!("  bare read: {e} (the ordered consumer recovers)"),
            None => anyhow::bail!("the read ended after {got} of {n} events"),
        }
    }
    Ok(got)
}
