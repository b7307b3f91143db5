//! One result row per measured path, the table every scenario prints, and latency quantiles.

use crate::procs::Usage;
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize, Clone)]
pub struct Row {
    pub scenario: String,
    /// What was measured: the system's path, or the baseline beside it.
    pub path: String,
    /// The case: keys and batch, offered rate, clients, instances, stream size.
    pub case: String,
    /// Events (or transfers, for e2e) done.
    pub count: usize,
    pub per_s: f64,
    /// Latency quantiles; absent for throughput-only scenarios (rebuild, analysis).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// CPU of every measured process together, per event (transfer): flat as things grow.
    pub cpu_us_per_item: f64,
    pub processes: Vec<Usage>,
    /// Messages and calls per item (e2e).
    pub counts: Option<crate::counters::Counts>,
}

impl Row {
    pub fn new(scenario: &str, path: &str, case: String, count: usize, seconds: f64, latencies: Option<Vec<Duration>>, processes: Vec<Usage>) -> Row {
        let q = latencies.map(quantiles);
        let cpu: f64 = processes.iter().map(|p| p.cpu_s).sum();
        Row {
            scenario: scenario.into(),
            path: path.into(),
            case,
            count,
            per_s: count as f64 / seconds.max(1e-9),
            p50_ms: q.map(|q| q[0]),
            p99_ms: q.map(|q| q[1]),
            p999_ms: q.map(|q| q[2]),
            cpu_us_per_item: cpu / count.max(1) as f64 * 1e6,
            processes,
            counts: None,
        }
    }

    pub fn with_counts(mut self, counts: crate::counters::Counts) -> Row {
        self.counts = Some(counts);
        self
    }
}

/// p50, p99 and p99.9 in milliseconds.
pub fn quantiles(mut lat: Vec<Duration>) -> [f64; 3] {
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    [q(0.50), q(0.99), q(0.999)]
}

pub fn print_table(rows: &[Row]) {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "\n{:<9} {:<32} {:<22} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9}  processes (cpu s, peak MiB)",
        "scenario", "path", "case", "count", "per s", "p50 ms", "p99 ms", "p99.9", "cpu µs/1"
    );
    for r in rows {
        let procs: Vec<String> = r.processes.iter().map(|p| format!("{} {:.2}s {:.0}MiB", p.name, p.cpu_s, p.peak_mib)).collect();
        println!(
            "{:<9} {:<32} {:<22} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>9.1}  {}",
            r.scenario,
            r.path,
            r.case,
            r.count,
            r.per_s,
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            r.cpu_us_per_item,
            procs.join(", ")
        );
        if let Some(c) = &r.counts {
            let list = |v: &[(String, f64)]| v.iter().map(|(name, n)| format!("{name} {n:.1}")).collect::<Vec<_>>().join(", ");
            println!(
                "{:<9} {:<32} per item: {:.1} NATS messages ({}), {:.1} Redis commands ({}), {:.1} Lua calls ({})",
                "",
                "",
                c.nats_msgs,
                list(&c.nats_top),
                c.redis_cmds,
                list(&c.redis_top),
                c.lua_calls,
                list(&c.lua_kinds)
            );
        }
    }
}
