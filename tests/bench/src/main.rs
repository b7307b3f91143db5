//! `cargo run --release -p sequent-bench -- SCENARIO`: Sequent's benchmarks, each scenario
//! beside its baseline in the same run (see BENCHMARKS.md). Prints a table (throughput, latency
//! quantiles, CPU per event, CPU seconds and peak memory of every process) and, with `--json`,
//! writes the rows as JSON.

mod analysis;
mod append;
mod counters;
mod e2e;
mod load;
mod procs;
mod rebuild;
mod repartition;
mod report;
mod scale;

use clap::{Args, Parser, Subcommand};
use e2e::Mode;
use report::Row;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "sequent-bench", about = "Sequent benchmarks, each beside its baseline")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Write the results as JSON to this file too.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(flatten)]
    bins: Bins,
}

/// The binaries the scenarios run (release builds for real figures; the smoke test uses the
/// debug ones). Run from the repository root.
#[derive(Args, Clone)]
pub struct Bins {
    /// The bus-gateway binary.
    #[arg(long, global = true, default_value = "target/release/bus-gateway")]
    pub gateway: PathBuf,
    /// The superclient binary.
    #[arg(long, global = true, default_value = "target/release/superclient")]
    pub superclient: PathBuf,
    /// A Python with pyreport, nats-py and pyarrow (analysis).
    #[arg(long, global = true, default_value = ".sequent/venv/bin/python")]
    pub python: PathBuf,
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
    },
    /// Transfers through the bfaf (request to the outcome on the live socket), two instances of
    /// each service, open loop at --rate and closed loop with --clients; vs the four
    /// consistency-checked appends of a transfer in sequence through the gateway.
    E2e {
        /// Transfers per load.
        #[arg(long, default_value_t = 10_000)]
        transfers: usize,
        /// Offered rate of the open-loop load, transfers per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Clients of the closed-loop load (saturation).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// First measure the bank this many seconds with no load (CPU and counts per second).
        #[arg(long, default_value_t = 0)]
        idle: u64,
        /// Skip the loads (with --idle: only the idle row).
        #[arg(long)]
        no_load: bool,
        /// Customers (two accounts each); transfer i is customer i % N's.
        #[arg(long, default_value_t = 64)]
        customers: usize,
        /// Instances of each service.
        #[arg(long, default_value_t = 2)]
        instances: usize,
        /// Run nectar too (it reads every completed transfer; the amounts earn nothing).
        #[arg(long)]
        nectar: bool,
        /// One process per bank instance hosting every service (`superclient a.lua b.lua ...`;
        /// calls between them stay in the process) instead of one process per service instance.
        #[arg(long)]
        cohost: bool,
    },
    /// Rebuild of services/examples/nectar.lua's state from N events (`superclient rebuild`) vs
    /// a bare ordered-consumer read of the same events.
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Raising the partition count: `bus-gateway --repartition-from` copying N events into a
    /// stream with 64 partitions (the write pause).
    Repartition {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
    },
    /// pyreport's scan of N events into Arrow vs a pure-Python nats-py reader.
    Analysis {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// e2e at saturation with 1, 2, 4 instances; rebuild at 10^5 and 10^6 events (10^7 with
    /// --huge): CPU per event should stay flat.
    Scale {
        #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
        instances: Vec<usize>,
        #[arg(long, default_value_t = 5_000)]
        transfers: usize,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 64)]
        customers: usize,
        #[arg(long, default_value = "100000,1000000", value_delimiter = ',')]
        sizes: Vec<usize>,
        /// Also 10^7 events.
        #[arg(long)]
        huge: bool,
    },
    /// Every scenario at a tiny size (a test, not a measurement); non-zero if any fails.
    Smoke,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The benchmarks' servers use the test users of nats/test-users.conf: the processes they
    // start run in development mode.
    std::env::set_var("SEQUENT_DEV", "1");
    let cli = Cli::parse();
    let bins = &cli.bins;
    let rows = match cli.scenario {
        Scenario::Append { events, keys, batches } => append::run(bins, events, &keys, &batches).await?,
        Scenario::E2e { transfers, rate, clients, idle, no_load, customers, instances, nectar, cohost } => {
            let mut modes = if idle > 0 { vec![Mode::Idle(idle)] } else { vec![] };
            if !no_load {
                modes.extend([Mode::Open(rate), Mode::Closed(clients)]);
            }
            e2e::run(bins, &e2e::Opts { transfers, modes, customers, instances, nectar, cohost, baseline: true, strict: false }).await?
        }
        Scenario::Rebuild { events } => rebuild::run(bins, events).await?,
        Scenario::Repartition { events } => repartition::run(bins, events).await?,
        Scenario::Analysis { events } => analysis::run(bins, events).await?,
        Scenario::Scale { instances, transfers, clients, customers, mut sizes, huge } => {
            if huge {
                sizes.push(10_000_000);
            }
            scale::run(bins, &scale::Opts { instances, transfers, clients, customers, sizes }).await?
        }
        Scenario::Smoke => smoke(bins).await?,
    };
    report::print_table(&rows);
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Every scenario, tiny; the first error fails the run (after the others had their go).
async fn smoke(bins: &Bins) -> anyhow::Result<Vec<Row>> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let e2e = |instances, baseline, modes| e2e::Opts { transfers: 20, modes, customers: 2, instances, nectar: baseline, cohost: false, baseline, strict: true };
    let results = [
        ("append", append::run(bins, 200, &[1, 4], &[1, 4]).await),
        ("e2e", e2e::run(bins, &e2e(1, true, vec![Mode::Open(100.0), Mode::Closed(4)])).await),
        ("rebuild", rebuild::run(bins, 2_000).await),
        ("repartition", repartition::run(bins, 2_000).await),
        ("analysis", analysis::run(bins, 2_000).await),
        ("scale", scale::run(bins, &scale::Opts { instances: vec![2], transfers: 10, clients: 2, customers: 2, sizes: vec![1_000, 3_000] }).await),
    ];
    for (name, r) in results {
        match r {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("smoke: {name} FAILED: {e:#}");
                failed.push(name);
            }
        }
    }
    eprintln!("smoke: {} rows in {:.1} s", rows.len(), started.elapsed().as_secs_f64());
    anyhow::ensure!(failed.is_empty(), "smoke: failed: {}", failed.join(", "));
    Ok(rows)
}

