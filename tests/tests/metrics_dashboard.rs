//! The Grafana dashboard of the repository (deploy/grafana/sequent.json) graphs metrics that
//! exist: every metric name its queries use is scraped from the `/metrics` listeners
//! (`--metrics-listen`) of a real gateway and a real superclient that did the work each metric
//! counts (a rebuild from nothing, live events, a route, sends through the gateway, an append
//! over HTTP). Also: the metrics are not on the API or route ports any more.

mod superclient_common;

use serde_json::{json, Value};
use sequent_tests::{repo_root, wait_until};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use superclient_common::*;

/// Every query expression of the dashboard (panels, panels of rows, template variables).
fn queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", Value::String(s)) => out.push(s.clone()),
                        // Template variables: `query` is a string or {query: "..."}.
                        ("query" | "definition", Value::String(s)) if s.contains("sequent_") => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The metric names a PromQL expression uses: `sequent_` identifiers (labels of Sequent are
/// never named so; `sequent_.+` in a regex matcher is no name).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sequent_") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "sequent_".len();
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if before_ok && end > start + "sequent_".len() {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The sample names of a Prometheus text exposition (`name{labels} value` or `name value`).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn names_are_extracted_from_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (service, le) (rate(sequent_append_seconds_bucket{service=~"$service"}[5m]))) / sequent_x_total and label_values({__name__=~"sequent_.+"}, service) or my_sequent_other"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["sequent_append_seconds_bucket", "sequent_x_total"]);
    let text = "# TYPE sequent_a counter\nsequent_a{service=\"x\"} 1\nsequent_b 2\nsequent_h_bucket{le=\"0.1\"} 3\n";
    assert_eq!(exported(text).into_iter().collect::<Vec<_>>(), ["sequent_a", "sequent_b", "sequent_h_bucket"]);
}

#[tokio::test]
async fn every_metric_the_dashboard_graphs_is_exported() {
    let _serial = serial().await;
    let path = repo_root().join("deploy/grafana/sequent.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let used: BTreeMap<String, Vec<String>> = queries(&dashboard).iter().fold(BTreeMap::new(), |mut m, q| {
        for name in metric_names(q) {
            m.entry(name).or_default().push(q.clone());
        }
        m
    });
    // The dashboard graphs what operators asked for (the issue): not an empty shell.
    for needed in [
        "sequent_consumer_lag",
        "sequent_parked_keys",
        "sequent_handler_seconds_bucket",
        "sequent_route_seconds_bucket",
        "sequent_append_seconds_bucket",
        "sequent_append_conflicts_total",
        "sequent_rebuild_events_done",
        "sequent_rebuild_events_expected",
        "sequent_events_stored_total",
        "sequent_events_total",
        "sequent_sends_decided_otherwise_total",
    ] {
        assert!(used.contains_key(needed), "the dashboard has no panel on {needed}; it uses {:?}", used.keys().collect::<Vec<_>>());
    }

    let mut stack = stack().await;
    let gateway_metrics = listener(&mut stack.gateway).await;
    // Events exist before the service starts: it rebuilds its state from nothing (rebuild
    // progress), then handles new ones live.
    let before: Vec<(String, String, Value)> = (0..40).map(|i| ("Counted".to_string(), format!("k{}", i % 8), json!({ "i": i }))).collect();
    stack.append_many("test", before, 8).await;
    let mut inst = stack.instance("superclient_counter.lua", "metrics-1", &[]).await;
    let superclient_metrics = listener(&mut inst.child).await;
    let live: Vec<(String, String, Value)> = (0..20).map(|i| ("Counted".to_string(), format!("k{}", i % 8), json!({ "i": i }))).collect();
    stack.append_many("test", live, 8).await;
    // A handler that sends (Ping → Pong through the gateway, over NATS as "test").
    let ping = stack.append("test", "Ping", "p1", json!({ "n": 1 })).await;
    assert!(ping.all_stored(), "{ping:?}");
    // An append over the REST API (service "http"), and a conflict.
    let http = reqwest::Client::new();
    for _ in 0..2 {
        http.post(format!("{}/v1/events", stack.gateway_http))
            .json(&json!({"events": [{"type": "Opened", "key": "acc-m", "expect": "new", "data": {}}]}))
            .send()
            .await
            .unwrap();
    }
    let mut expected = BTreeMap::new();
    for i in 0..8 {
        expected.insert(format!("k{i}"), if i < 4 { 8 } else { 7 });
    }
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    // A route.
    let (status, _) = get_json(&format!("{}/count/k1", inst.http)).await;
    assert_eq!(status, 200);

    // Every name the dashboard uses shows up (the sampled gauges within a few seconds).
    let missing = std::sync::Mutex::new(Vec::<String>::new());
    wait_until("every metric of the dashboard to be exported", Duration::from_secs(30), || async {
        let mut names = BTreeSet::new();
        for url in [&gateway_metrics, &superclient_metrics] {
            let text = reqwest::get(format!("{url}/metrics")).await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
            names.extend(exported(&text));
        }
        let now: Vec<String> = used.keys().filter(|n| !names.contains(*n)).cloned().collect();
        let done = now.is_empty();
        *missing.lock().unwrap() = now;
        Ok::<bool, String>(done)
    })
    .await
    .unwrap_or_else(|e| {
        let missing = missing.lock().unwrap().clone();
        panic!("{e}: the dashboard uses metrics nobody exports: {:?}", missing.iter().map(|n| (n, &used[n])).collect::<Vec<_>>())
    });

    // Labels: per service, per partition, per type, per route pattern (never a path).
    let text = reqwest::get(format!("{superclient_metrics}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("sequent_consumer_lag{service=\"test\",partition=\"")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sequent_handler_seconds_bucket{service=\"test\",type=\"Counted\"")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sequent_route_seconds_bucket{service=\"test\",route=\"GET /count/{key}\"")), "{text}");
    assert!(!text.contains("/count/k1"), "a route's metrics are labelled by its pattern, never by a path:\n{text}");
    assert!(text.contains("sequent_rebuild_events_done{service=\"test\"} 40"), "the rebuild replayed the 40 earlier events:\n{text}");
    let text = reqwest::get(format!("{gateway_metrics}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("sequent_append_conflicts_total{service=\"http\"} 1"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("sequent_append_seconds_count{service=\"test\"}")), "{text}");

    // Metrics are off the API and the routes' ports.
    let (status, _) = get_json(&format!("{}/metrics", stack.gateway_http)).await;
    assert_eq!(status, 404, "the gateway's API port serves no metrics");
    let (status, _) = get_json(&format!("{}/metrics", inst.http)).await;
    assert_eq!(status, 404, "the superclient's routes port serves no metrics");
}

/// The `http://addr` of a process's metrics listener, from its log line.
async fn listener(child: &mut sequent_tests::Child) -> String {
    let line = child.wait_for_line("metrics listening on", Duration::from_secs(30)).await.expect("the metrics listener is logged");
    let addr = line.rsplit("metrics listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
    format!("http://{addr}")
}

/// `sequent_consumer_lag{partition}` of a metrics text (None: not exported yet).
fn lag(text: &str, partition: u32) -> Option<f64> {
    let label = format!("sequent_consumer_lag{{service=\"test\",partition=\"{partition}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&label)).and_then(|v| v.trim().parse().ok())
}

/// The lag gauge asks JetStream only about partitions whose worker has events in hand: a
/// partition stuck on a failing handler shows its events, idle ones show 0, and the stuck one
/// goes back to 0 once its events are handled.
#[tokio::test]
async fn the_lag_gauge_shows_a_stuck_partition_and_idle_ones_as_zero() {
    let _serial = serial().await;
    let stack = stack().await;
    let mut inst = stack.instance("superclient_counter.lua", "lag-1", &["--max-attempts", "1000", "--retry-delay", "500ms"]).await;
    let metrics = listener(&mut inst.child).await;
    let ns = stack.active_ns("test").await.unwrap();
    let mut con = stack.redis_con().await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:stuck-1")).arg("true").query_async(&mut con).await.unwrap();
    let stuck = sequent_protocol::subjects::partition_of("stuck-1", 16);
    let free = (0..).map(|i| format!("free-{i}")).find(|k| sequent_protocol::subjects::partition_of(k, 16) != stuck).unwrap();
    let idle = (0..16).find(|p| *p != stuck && *p != sequent_protocol::subjects::partition_of(&free, 16)).unwrap();
    for (key, n) in [("stuck-1", 3), (free.as_str(), 1)] {
        for i in 0..n {
            assert!(stack.append("test", "Counted", key, json!({ "i": i })).await.all_stored());
        }
    }
    stack.wait_counts("test", &BTreeMap::from([(free.clone(), 1)]), Duration::from_secs(30)).await;
    let scrape = || async { reqwest::get(format!("{metrics}/metrics")).await.unwrap().text().await.unwrap() };
    wait_until("the stuck partition's lag to show its events, an idle one's 0", Duration::from_secs(20), || async {
        let text = scrape().await;
        lag(&text, stuck).is_some_and(|l| l >= 1.0) && lag(&text, idle) == Some(0.0)
    })
    .await
    .unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{ns}:fail:stuck-1")).query_async(&mut con).await.unwrap();
    stack.wait_counts("test", &BTreeMap::from([("stuck-1".to_string(), 3)]), Duration::from_secs(30)).await;
    wait_until("the stuck partition's lag to go back to 0", Duration::from_secs(20), || async { lag(&scrape().await, stuck) == Some(0.0) }).await.unwrap();
}
