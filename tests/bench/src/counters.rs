//! What a transfer costs in messages and calls, read from the processes themselves around a
//! measurement: NATS messages in and out of nats-server (`/varz`), Redis commands
//! (`INFO commandstats`), and Lua calls of the superclients (`sequent_lua_calls_total` on their
//! `/metrics`). Deltas divided by the items done give the per-item counts of a row.

use serde::Serialize;
use std::collections::BTreeMap;

/// Where the counters are read.
#[derive(Clone, Default)]
pub struct Probe {
    /// nats-server's monitoring URL (`http://127.0.0.1:port`).
    pub nats_monitor: Option<String>,
    pub redis_url: Option<String>,
    /// `/metrics` URLs of the superclients.
    pub metrics: Vec<String>,
}

#[derive(Clone, Default, Debug)]
pub struct Sample {
    nats_msgs: u64,
    /// In + out messages by client connection name (the instance after `/` left out).
    nats_by_client: BTreeMap<String, u64>,
    redis_cmds: BTreeMap<String, u64>,
    /// By the metric's `kind` label: handler, receipt, route, live, replay.
    lua_calls: BTreeMap<String, u64>,
}

/// Per item: socket messages through nats-server, Redis commands, Lua calls.
#[derive(Clone, Debug, Serialize)]
pub struct Counts {
    pub nats_msgs: f64,
    /// Which clients made `nats_msgs`, per item (JetStream's own messages are not a client's).
    pub nats_top: Vec<(String, f64)>,
    pub redis_cmds: f64,
    pub lua_calls: f64,
    /// The Redis commands that made most of `redis_cmds`, per item.
    pub redis_top: Vec<(String, f64)>,
    /// `lua_calls` by kind (handler, receipt, route, live), per item.
    pub lua_kinds: Vec<(String, f64)>,
}

impl Probe {
    pub async fn sample(&self, http: &reqwest::Client) -> Sample {
        let mut s = Sample::default();
        if let Some(url) = &self.nats_monitor {
            if let Ok(v) = http.get(format!("{url}/varz")).send().await.and_then(|r| r.error_for_status()) {
                if let Ok(v) = v.json::<serde_json::Value>().await {
                    s.nats_msgs = v["in_msgs"].as_u64().unwrap_or(0) + v["out_msgs"].as_u64().unwrap_or(0);
                }
            }
            if let Ok(v) = http.get(format!("{url}/connz?limit=4096")).send().await.and_then(|r| r.error_for_status()) {
                if let Ok(v) = v.json::<serde_json::Value>().await {
                    s.nats_by_client = by_client(&v);
                }
            }
        }
        if let Some(url) = &self.redis_url {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut con).await.unwrap_or_default();
                    s.redis_cmds = commandstats(&info);
                }
            }
        }
        for url in &self.metrics {
            if let Ok(r) = http.get(url).send().await {
                let text = r.text().await.unwrap_or_default();
                for (kind, calls) in lua_calls(&text) {
                    *s.lua_calls.entry(kind).or_default() += calls;
                }
            }
        }
        s
    }
}

/// `/connz` → client name (without its instance) → messages in and out.
fn by_client(connz: &serde_json::Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in connz["connections"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("unnamed");
        let name = name.split_once('/').map_or(name, |(service, _)| service);
        *out.entry(name.to_string()).or_default() += c["in_msgs"].as_u64().unwrap_or(0) + c["out_msgs"].as_u64().unwrap_or(0);
    }
    out
}

/// `cmdstat_get:calls=12,usec=...` lines → command → calls.
fn commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// `sequent_lua_calls_total{kind="route",...} 12` lines of a Prometheus text → kind → calls.
fn lua_calls(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("sequent_lua_calls_total")) {
        let kind = line.split("kind=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?");
        if let Some(calls) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *out.entry(kind.to_string()).or_default() += calls as u64;
        }
    }
    out
}

/// The per-item deltas of `after` over `before`, largest first.
fn deltas(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, n: f64) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(c, v)| (c.clone(), v.saturating_sub(*before.get(c).unwrap_or(&0)) as f64 / n))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

pub fn per_item(before: &Sample, after: &Sample, items: usize) -> Counts {
    let n = items.max(1) as f64;
    let mut by_cmd = deltas(&before.redis_cmds, &after.redis_cmds, n);
    let total: f64 = by_cmd.iter().map(|(_, v)| v).sum();
    by_cmd.truncate(5);
    let lua_kinds = deltas(&before.lua_calls, &after.lua_calls, n);
    let mut nats_top = deltas(&before.nats_by_client, &after.nats_by_client, n);
    nats_top.truncate(6);
    Counts {
        nats_msgs: after.nats_msgs.saturating_sub(before.nats_msgs) as f64 / n,
        nats_top,
        redis_cmds: total,
        lua_calls: lua_kinds.iter().fold(0.0, |sum, (_, v)| sum + v),
        redis_top: by_cmd,
        lua_kinds,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_commandstats() {
        let info = "# Commandstats\r\ncmdstat_get:calls=12,usec=30,usec_per_call=2.50\r\ncmdstat_evalsha:calls=3,usec=9\r\n";
        let m = super::commandstats(info);
        assert_eq!(m.get("get"), Some(&12));
        assert_eq!(m.get("evalsha"), Some(&3));
    }

    #[test]
    fn sums_messages_by_client_without_the_instance() {
        let connz = serde_json::json!({"connections": [
            {"name": "superclient accounts/a1", "in_msgs": 5, "out_msgs": 7},
            {"name": "superclient accounts/a2", "in_msgs": 1, "out_msgs": 2},
            {"name": "bus-gateway", "in_msgs": 3, "out_msgs": 4},
            {"in_msgs": 1, "out_msgs": 0}
        ]});
        let m = super::by_client(&connz);
        assert_eq!(m.get("superclient accounts"), Some(&15));
        assert_eq!(m.get("bus-gateway"), Some(&7));
        assert_eq!(m.get("unnamed"), Some(&1));
    }

    #[test]
    fn reads_lua_calls_by_kind() {
        let text = "# TYPE sequent_lua_calls_total counter\nsequent_lua_calls_total{kind=\"route\",service=\"bfaf\"} 12\nsequent_lua_calls_total{kind=\"live\",service=\"bfaf\"} 8\nsequent_lua_calls_total{kind=\"route\",service=\"users\"} 3\n";
        let m = super::lua_calls(text);
        assert_eq!(m.get("route"), Some(&15));
        assert_eq!(m.get("live"), Some(&8));
    }
}
