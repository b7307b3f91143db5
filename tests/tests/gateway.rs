//! bus-gateway against a real nats-server: the append contract (DESIGN.md items 1 and 2),
//! queries, the live feed, bad input and authorization.

use futures::StreamExt;
use serde_json::{json, Value};
use sequent_tests::{binary, free_port, nats, nats_cluster, Child, NatsServer};
use async_nats::jetstream::consumer;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKENS: &str = "ops:ops-token-0123456789:write,bi:bi-token-0123456789:read";

struct Gateway {
    _child: Child,
    base: String,
    /// `http://addr` of its metrics listener.
    metrics: String,
}

async fn gateway(nats: &NatsServer, extra: &[(&str, &str)]) -> Gateway {
    gateway_at(&nats.url, extra).await
}

async fn gateway_at(nats_url: &str, extra: &[(&str, &str)]) -> Gateway {
    let port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("NATS_URL".into(), nats_url.to_string()),
        ("SEQUENT_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("RUST_LOG".into(), "info".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut child = Child::spawn("gateway", binary("bus-gateway"), &[] as &[&str], &env).expect("spawn bus-gateway");
    let line = child.wait_for_line("metrics listening on", Duration::from_secs(30)).await.expect("gateway starts");
    let metrics = format!("http://{}", line.rsplit("metrics listening on ").next().unwrap().split_whitespace().next().unwrap());
    child.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.expect("gateway starts");
    Gateway { _child: child, base: format!("http://127.0.0.1:{port}"), metrics }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(gw: &Gateway, body: Value) -> (u16, Value) {
    let r = http().post(format!("{}/v1/events", gw.base)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn get(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = http().get(format!("{}{path}", gw.base)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn ev(t: &str, key: &str, expect: Value, data: Value) -> Value {
    json!({"type": t, "key": key, "expect": expect, "data": data})
}

/// How many messages the events stream holds, read with the admin user.
async fn stream_count(nats: &NatsServer) -> u64 {
    count_with(nats.admin().await.unwrap()).await
}

async fn count_with(admin: async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(admin);
    let mut stream = js.get_stream("EVENTS").await.unwrap();
    stream.info().await.unwrap().state.messages
}

async fn key_events(gw: &Gateway, key: &str) -> Vec<Value> {
    let (status, body) = get(gw, &format!("/v1/keys/{key}/events?limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn append_read_back_with_dense_versions() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    for (i, t) in ["Opened", "Deposited", "Withdrawn", "Deposited"].iter().enumerate() {
        let (status, body) = post(&gw, json!({"events": [ev(t, "acc-1", json!(i), json!({"n": i}))]})).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["receipts"][0]["version"], json!(i));
    }
    // Another key starts at 0 whatever the first key did.
    let (_, body) = post(&gw, json!({"events": [ev("Opened", "acc-2", json!("new"), json!({}))]})).await;
    assert_eq!(body["receipts"][0]["version"], 0);

    let events = key_events(&gw, "acc-1").await;
    let versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, vec![0, 1, 2, 3]);
    assert_eq!(events[2]["type"], "Withdrawn");
    assert_eq!(events[2]["data"], json!({"n": 2}));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "ordered by seq: {seqs:?}");
    // Stamped metadata: a fresh unit of work is its own correlation, with no causation.
    assert_eq!(events[0]["correlation"], events[0]["id"]);
    assert!(events[0]["causation"].is_null());
    assert!(events[0]["time"].as_str().unwrap().ends_with('Z'));

    let (_, head) = get(&gw, "/v1/keys/acc-1").await;
    assert_eq!(head["current_version"], 3);
    assert_eq!(head["next_version"], 4);
    let (_, empty) = get(&gw, "/v1/keys/nobody").await;
    assert!(empty["current_version"].is_null());
    assert_eq!(empty["next_version"], 0);
}

/// Every query reads through an ephemeral consumer that nats-server keeps for 30 s after its
/// last pull, and nats-server 2.15 caps a stream at 1,000 consumers unless the stream sets its
/// own limit: without the gateway's, the 1,001st query within 30 s was refused (503).
#[tokio::test]
async fn more_queries_in_30_s_than_the_servers_default_consumer_limit_are_all_answered() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    let (status, body) = post(&gw, json!({"events": [ev("Opened", "q-1", json!("new"), json!({}))]})).await;
    assert_eq!(status, 201, "{body}");
    let started = std::time::Instant::now();
    let answers: Vec<(u16, Value)> = futures::stream::iter(0..1_100)
        .map(|_| get(&gw, "/v1/keys/q-1/events?limit=10"))
        .buffer_unordered(16)
        .collect()
        .await;
    let refused: Vec<&(u16, Value)> = answers.iter().filter(|(status, _)| *status != 200).collect();
    assert!(refused.is_empty(), "{} of 1,100 queries refused, the first: {:?}", refused.len(), refused.first());
    assert!(started.elapsed() < Duration::from_secs(30), "the queries took {:?}: the readers of the first had expired, the limit was not tested", started.elapsed());
    assert_eq!(answers[0].1["events"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn conflict_reports_current_version_and_stores_nothing() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    post(&gw, json!({"events": [ev("Opened", "acc-9", json!("new"), json!({}))]})).await;
    post(&gw, json!({"events": [ev("Deposited", "acc-9", json!(1), json!({}))]})).await;
    let before = stream_count(&nats).await;

    // A second "new" on the same key must conflict (the check's filter is in stored form).
    let (status, body) = post(&gw, json!({"events": [ev("Opened", "acc-9", json!("new"), json!({}))]})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["receipts"][0]["status"], "conflict");
    assert_eq!(body["receipts"][0]["current_version"], 1);
    assert_eq!(body["receipts"][0]["next_version"], 2);

    // A stale expectation, also across event types of the same key.
    let (status, body) = post(&gw, json!({"events": [ev("Withdrawn", "acc-9", json!(1), json!({}))]})).await;
    assert_eq!(status, 409);
    assert_eq!(body["receipts"][0]["current_version"], 1);
    assert_eq!(stream_count(&nats).await, before, "a conflict writes nothing");

    // A batch with one stale expectation writes none of its events.
    let (status, body) = post(
        &gw,
        json!({"events": [
            ev("Opened", "acc-10", json!("new"), json!({})),
            ev("Deposited", "acc-9", json!(0), json!({})),
        ]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["receipts"][0]["status"], "aborted");
    assert_eq!(body["receipts"][1]["status"], "conflict");
    assert_eq!(stream_count(&nats).await, before, "a refused batch writes nothing");
    assert!(key_events(&gw, "acc-10").await.is_empty());
}

#[tokio::test]
async fn retries_with_the_same_id_are_absorbed() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    let one = json!({"events": [{"id": "evt-1", "type": "Opened", "key": "acc-1", "expect": "new", "data": {"a": 1}}]});
    let (s1, first) = post(&gw, one.clone()).await;
    let (s2, again) = post(&gw, one.clone()).await;
    assert_eq!((s1, s2), (201, 201), "{first} {again}");
    assert_eq!(again["receipts"][0]["seq"], first["receipts"][0]["seq"]);
    assert_eq!(again["receipts"][0]["version"], 0);
    assert_eq!(again["receipts"][0]["duplicate"], true);

    // "any" appends are absorbed by JetStream's dedup window.
    let any = json!({"events": [{"id": "evt-2", "type": "Deposited", "key": "acc-1", "expect": "any", "data": {}}]});
    let (_, a) = post(&gw, any.clone()).await;
    let (_, b) = post(&gw, any).await;
    assert_eq!(a["receipts"][0]["seq"], b["receipts"][0]["seq"]);
    assert_eq!(b["receipts"][0]["duplicate"], true);

    // A whole batch retried.
    let batch = json!({"events": [
        {"id": "b-1", "type": "Opened", "key": "acc-7", "expect": "new", "data": {}},
        {"id": "b-2", "type": "Deposited", "key": "acc-7", "expect": 1, "data": {}},
        {"id": "b-3", "type": "Opened", "key": "acc-8", "expect": "new", "data": {}},
    ]});
    let (s, first) = post(&gw, batch.clone()).await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = post(&gw, batch).await;
    assert_eq!(s, 201, "{again}");
    for i in 0..3 {
        assert_eq!(again["receipts"][i]["seq"], first["receipts"][i]["seq"]);
        assert_eq!(again["receipts"][i]["duplicate"], true);
    }
    // A retry that arrives after its key moved on (a handler re-run after a crash) is still
    // recognised, through the correlation index, instead of being reported as a conflict.
    let late = json!({"events": [{"id": "late-1", "type": "Deposited", "key": "acc-7", "expect": 2, "correlation": "work-9", "data": {}}]});
    let (_, original) = post(&gw, late.clone()).await;
    post(&gw, json!({"events": [ev("Deposited", "acc-7", json!(3), json!({}))]})).await;
    let (s, again) = post(&gw, late).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again["receipts"][0]["seq"], original["receipts"][0]["seq"]);
    assert_eq!(again["receipts"][0]["duplicate"], true);
    // A different event expecting the same version is still a conflict.
    let (s, _) = post(&gw, json!({"events": [{"id": "late-2", "type": "Deposited", "key": "acc-7", "expect": 2, "correlation": "work-9", "data": {}}]})).await;
    assert_eq!(s, 409);
    assert_eq!(stream_count(&nats).await, 7);
}

/// Appends to `key` with explicit versions from `tasks` writers until `per_task` wins each;
/// returns every stored (version, seq).
async fn race(gateways: Vec<String>, key: &str, tasks: usize, per_task: usize) -> Vec<(u64, u64)> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let base = gateways[t % gateways.len()].clone();
        let key = key.to_string();
        handles.push(tokio::spawn(async move {
            let client = http();
            let mut wins = Vec::new();
            let mut next = 0u64;
            while wins.len() < per_task {
                let body = json!({"events": [{"type": "Bumped", "key": key, "expect": next, "data": {"task": t}}]});
                let r = client.post(format!("{base}/v1/events")).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                let reply: Value = r.json().await.unwrap();
                let receipt = &reply["receipts"][0];
                match status {
                    201 => {
                        wins.push((receipt["version"].as_u64().unwrap(), receipt["seq"].as_u64().unwrap()));
                        next += 1;
                    }
                    409 => next = receipt["next_version"].as_u64().unwrap(),
                    other => panic!("unexpected {other}: {reply}"),
                }
            }
            wins
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all
}

fn assert_one_winner_per_version(wins: &[(u64, u64)], expected: usize) {
    let versions: BTreeMap<u64, u64> = wins.iter().copied().collect();
    assert_eq!(versions.len(), wins.len(), "two writers won the same version: {wins:?}");
    assert_eq!(versions.keys().copied().collect::<Vec<_>>(), (0..expected as u64).collect::<Vec<_>>());
    let seqs: Vec<u64> = versions.values().copied().collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "versions follow stream order");
}

#[tokio::test]
async fn racing_writers_on_one_key_get_one_winner_per_version() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    let wins = race(vec![gw.base.clone()], "hot", 32, 3).await;
    assert_one_winner_per_version(&wins, 96);
    let stored = key_events(&gw, "hot").await;
    assert_eq!(stored.len(), 96, "nothing lost, nothing extra");
}

#[tokio::test]
async fn two_gateway_processes_racing_cannot_both_win() {
    let nats = nats().await.unwrap();
    let a = gateway(&nats, &[]).await;
    let b = gateway(&nats, &[]).await;
    let wins = race(vec![a.base.clone(), b.base.clone()], "hot", 16, 4).await;
    assert_one_winner_per_version(&wins, 64);
    // Both gateways' version caches were warm and stale half of the time; JetStream decided.
    assert_eq!(key_events(&b, "hot").await.len(), 64);
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[("SEQUENT_MAX_DATA_BYTES", "1024"), ("SEQUENT_MAX_BODY_BYTES", "65536")]).await;
    post(&gw, json!({"events": [ev("Opened", "acc-1", json!("new"), json!({}))]})).await;
    let before = stream_count(&nats).await;
    let url = format!("{}/v1/events", gw.base);
    let raw = |body: &'static str| {
        let url = url.clone();
        async move {
            let r = http().post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let cases: Vec<(u16, &str, (u16, String))> = vec![
        (400, "not an append request", raw("{not json").await),
        (400, "missing field `type`", raw(r#"{"events":[{"key":"k","expect":0,"data":{}}]}"#).await),
        (400, "missing field `expect`", raw(r#"{"events":[{"type":"T","key":"k","data":{}}]}"#).await),
        (400, "key", raw(r#"{"events":[{"type":"T","key":"a.b","expect":0,"data":{}}]}"#).await),
        (400, "key", raw(r#"{"events":[{"type":"T","key":"a b","expect":0,"data":{}}]}"#).await),
        (400, "key", raw(r#"{"events":[{"type":"T","key":"ev.*.>","expect":0,"data":{}}]}"#).await),
        (400, "type", raw(r#"{"events":[{"type":"T>","key":"k","expect":0,"data":{}}]}"#).await),
        (400, "unknown expect word", raw(r#"{"events":[{"type":"T","key":"k","expect":"soon","data":{}}]}"#).await),
        (400, "JSON object", raw(r#"{"events":[{"type":"T","key":"k","expect":0,"data":"x"}]}"#).await),
        (400, "at least one event", raw(r#"{"events":[]}"#).await),
    ];
    for (want, says, (status, body)) in &cases {
        assert_eq!(status, want, "{body}");
        assert!(body.contains(says), "error {body:?} should mention {says:?}");
    }
    // Oversized data, oversized body, wrong content type.
    let big = json!({"events": [ev("T", "k", json!(0), json!({"x": "y".repeat(2000)}))]});
    let (status, body) = post(&gw, big).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("limit is 1024"), "{body}");
    let huge = format!(r#"{{"events":[{{"type":"T","key":"k","expect":0,"data":{{"x":"{}"}}}}]}}"#, "y".repeat(70_000));
    let r = http().post(&url).header("content-type", "application/json").body(huge).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let r = http().post(&url).header("content-type", "text/plain").body(r#"{"events":[]}"#).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Batch: one bad event refuses the whole batch.
    let (status, body) = post(
        &gw,
        json!({"events": [ev("T", "good", json!(0), json!({})), ev("T", "bad key", json!(0), json!({}))]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["receipts"][0]["index"], 1);
    assert_eq!(stream_count(&nats).await, before, "bad input wrote nothing");
}

#[tokio::test]
async fn queries_page_by_cursor_in_stream_order() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    for i in 0..25 {
        let key = format!("acc-{}", i % 3);
        let t = if i % 2 == 0 { "Deposited" } else { "Withdrawn" };
        post(&gw, json!({"events": [{"type": t, "key": key, "expect": "any", "correlation": format!("work-{}", i % 4), "data": {"i": i}}]})).await;
    }
    // Page through all Deposited events with the cursor.
    let mut seen = Vec::new();
    let mut from = 1u64;
    loop {
        let (status, page) = get(&gw, &format!("/v1/events?type=Deposited&from_seq={from}&limit=5")).await;
        assert_eq!(status, 200);
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["data"]["i"].as_u64().unwrap()));
        match page["next_from_seq"].as_u64() {
            Some(n) => from = n,
            None => break,
        }
    }
    assert_eq!(seen, (0..25).filter(|i| i % 2 == 0).collect::<Vec<_>>());
    let acc1: Vec<u64> = key_events(&gw, "acc-1").await.iter().map(|e| e["data"]["i"].as_u64().unwrap()).collect();
    assert_eq!(acc1, (0..25).filter(|i| i % 3 == 1).collect::<Vec<_>>());
    let (_, work) = get(&gw, "/v1/correlations/work-2/events").await;
    let work: Vec<u64> = work["events"].as_array().unwrap().iter().map(|e| e["data"]["i"].as_u64().unwrap()).collect();
    assert_eq!(work, (0..25).filter(|i| i % 4 == 2).collect::<Vec<_>>());
    let (status, _) = get(&gw, "/v1/events?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = get(&gw, "/v1/keys/a.b/events").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn live_feed_switches_from_history_to_live_without_gap_or_duplicate() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    for i in 0..200 {
        post(&gw, json!({"events": [{"type": "Tick", "key": format!("k{}", i % 7), "expect": "any", "data": {"i": i}}]})).await;
    }
    // Writers keep appending while the socket replays history and switches to live.
    let writer_base = gw.base.clone();
    let writer = tokio::spawn(async move {
        let client = http();
        for i in 200..600 {
            let body = json!({"events": [{"type": "Tick", "key": format!("k{}", i % 7), "expect": "any", "data": {"i": i}}]});
            let r = client.post(format!("{writer_base}/v1/events")).json(&body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 201);
        }
    });
    let url = format!("{}/v1/live?types=Tick&from_seq=1", gw.base.replace("http", "ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut seqs = Vec::new();
    let mut values = HashSet::new();
    let mut caught_up = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while values.len() < 600 {
        let msg = tokio::time::timeout_at(deadline, socket.next()).await.expect("all 600 events arrive").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        match v["kind"].as_str() {
            Some("caught_up") => caught_up = true,
            Some("event") => {
                seqs.push(v["event"]["seq"].as_u64().unwrap());
                assert!(values.insert(v["event"]["data"]["i"].as_u64().unwrap()), "duplicate {v}");
            }
            other => panic!("unexpected message kind {other:?}"),
        }
    }
    writer.await.unwrap();
    assert!(caught_up, "the feed says where history ended");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no gap: every Tick seq in order");
    socket.close(None).await.ok();
}

#[tokio::test]
async fn tokens_guard_the_http_api() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[("SEQUENT_API_TOKENS", TOKENS)]).await;
    let url = format!("{}/v1/events", gw.base);
    let body = json!({"events": [ev("Opened", "acc-1", json!("new"), json!({}))]});
    let r = http().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http().post(&url).bearer_auth("forged-token-0000000").json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http().post(&url).bearer_auth("bi-token-0123456789").json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = http().post(&url).bearer_auth("ops-token-0123456789").json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = http().get(format!("{}/v1/keys/acc-1/events", gw.base)).bearer_auth("bi-token-0123456789").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http().get(format!("{}/v1/keys/acc-1/events", gw.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unauthorized", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn services_append_over_nats_within_their_policy() {
    let nats = nats().await.unwrap();
    let dir = tempfile_dir();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, r#"{"test": ["Pinged"]}"#).unwrap();
    let gw = gateway(&nats, &[("SEQUENT_POLICY", policy.to_str().unwrap())]).await;
    let client = nats.service("test").await.unwrap();
    let ask = |events: Value| {
        let client = client.clone();
        async move {
            let body = serde_json::to_vec(&json!({"events": events, "instance": "test-1"})).unwrap();
            let reply = client.request("sequent.append.test", body.into()).await.unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let ok = ask(json!([ev("Pinged", "p-1", json!("new"), json!({}))])).await;
    assert_eq!(ok["receipts"][0]["status"], "stored", "{ok}");
    let refused = ask(json!([ev("Ponged", "p-1", json!(1), json!({}))])).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
    let events = key_events(&gw, "p-1").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["producer"], json!({"service": "test", "instance": "test-1"}));
    // The service user cannot bypass the gateway and publish events itself.
    let direct = client.request("ev.p-1.Pinged", "{}".into()).await;
    assert!(direct.is_err(), "a service must not publish to the event subjects");
    assert_eq!(key_events(&gw, "p-1").await.len(), 1);
}

#[tokio::test]
async fn stored_partition_matches_the_client_side_hash() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    let js = async_nats::jetstream::new(nats.admin().await.unwrap());
    let stream = js.get_stream("EVENTS").await.unwrap();
    for key in ["acc-1", "acc-42", "user:alice", "tr-0190a"] {
        post(&gw, json!({"events": [ev("Opened", key, json!("new"), json!({}))]})).await;
        let msg = stream.get_last_raw_message_by_subject(&format!("ev.*.{key}.*")).await.unwrap();
        let p = sequent_protocol::subjects::partition_of(key, 16);
        assert_eq!(msg.subject.as_str(), format!("ev.{p}.{key}.Opened"));
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let nats = nats().await.unwrap();
    let gw = gateway(&nats, &[]).await;
    post(&gw, json!({"events": [ev("Opened", "acc-1", json!("new"), json!({}))]})).await;
    post(&gw, json!({"events": [ev("Opened", "acc-1", json!("new"), json!({}))]})).await;
    let (status, health) = get(&gw, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["last_seq"], 1);
    let (status, ready) = get(&gw, "/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    // Metrics: on their own listener (--metrics-listen), per service (`http`: the REST API).
    let text = http().get(format!("{}/metrics", gw.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("sequent_appends_total{service=\"http\",outcome=\"stored\"} 1"), "{text}");
    assert!(text.contains("sequent_appends_total{service=\"http\",outcome=\"conflict\"} 1"), "{text}");
    assert!(text.contains("sequent_append_conflicts_total{service=\"http\"} 1"), "{text}");
    assert!(text.contains("sequent_append_seconds"), "{text}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sequent-test-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    sequent_protocol::envelope::new_event_id()
}

/// The same contract on a 3-node cluster with the stream at 3 replicas, where JetStream answers
/// a retried publish differently (duplicate ack instead of a wrong-sequence error) and checks
/// expectations before the Raft proposal.
#[tokio::test]
async fn replicated_stream_keeps_the_contract() {
    let cluster = nats_cluster().await.unwrap();
    let a = gateway_at(&cluster.url(), &[("SEQUENT_REPLICAS", "3")]).await;
    let b = gateway_at(&cluster.url(), &[("SEQUENT_REPLICAS", "3")]).await;
    let one = json!({"events": [{"id": "r3-1", "type": "Opened", "key": "acc-1", "expect": "new", "data": {}}]});
    let (s1, first) = post(&a, one.clone()).await;
    let (s2, again) = post(&b, one).await;
    assert_eq!((s1, s2), (201, 201), "{first} {again}");
    assert_eq!(again["receipts"][0]["seq"], first["receipts"][0]["seq"]);
    assert_eq!(again["receipts"][0]["duplicate"], true);
    let (status, body) = post(&b, json!({"events": [ev("Opened", "acc-1", json!("new"), json!({}))]})).await;
    assert_eq!(status, 409, "{body}");
    let wins = race(vec![a.base.clone(), b.base.clone()], "hot", 8, 4).await;
    assert_one_winner_per_version(&wins, 32);
    assert_eq!(count_with(cluster.admin().await.unwrap()).await, 33);
}

// --- the correlation indexer --------------------------------------------------------------

/// The indexer's consumer as the admin sees it: its ack floor and ack policy.
async fn indexer_state(admin: &async_nats::Client) -> (u64, consumer::AckPolicy) {
    let stream = async_nats::jetstream::new(admin.clone()).get_stream_no_info("EVENTS").await.unwrap();
    match stream.consumer_info("sequent-indexer").await {
        Ok(info) => (info.ack_floor.stream_sequence, info.config.ack_policy),
        Err(_) => (0, consumer::AckPolicy::None),
    }
}

/// Waits until the indexer's ack floor reaches `seq` (its policy batched acks).
async fn wait_floor(admin: &async_nats::Client, seq: u64, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (floor, policy) = indexer_state(admin).await;
        if floor >= seq && policy == consumer::AckPolicy::All {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the indexer's ack floor is {floor} ({policy:?}), not {seq}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every entry of the correlation index: (subject, indexed sequence), in index order.
async fn index_entries(admin: &async_nats::Client) -> Vec<(String, u64)> {
    let js = async_nats::jetstream::new(admin.clone());
    let mut ix = js.get_stream("EVENTS_IX").await.unwrap();
    let total = ix.info().await.unwrap().state.messages as usize;
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    let reader = ix.create_consumer(consumer::pull::OrderedConfig::default()).await.unwrap();
    let mut messages = reader.messages().await.unwrap();
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.unwrap().unwrap().unwrap();
        out.push((m.subject.to_string(), std::str::from_utf8(&m.payload).unwrap().parse().unwrap()));
    }
    out
}

/// Every event `1..=last` is in the index exactly once, under its correlation.
async fn assert_indexed_exactly_once(admin: &async_nats::Client, last: u64) {
    let stream = async_nats::jetstream::new(admin.clone()).get_stream_no_info("EVENTS").await.unwrap();
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for (subject, seq) in index_entries(admin).await {
        *count.entry(seq).or_default() += 1;
        let event: Value = serde_json::from_slice(&stream.get_raw_message(seq).await.unwrap().payload).unwrap();
        assert_eq!(subject, format!("ix.c.{}", event["correlation"].as_str().unwrap()), "entry of seq {seq}");
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !count.contains_key(s)).collect();
    assert!(twice.is_empty() && missing.is_empty(), "indexed twice: {twice:?}; not indexed: {missing:?} (of 1..={last})");
    assert_eq!(count.keys().next_back().copied(), Some(last), "nothing beyond the stream is indexed");
}

/// Appends batches of 5 events, each batch its own unit of work `<name>-<n>`, through `base`
/// until `stop` or until the gateway is gone; returns how many posts were stored.
async fn append_until(name: &'static str, base: String, stop: Arc<AtomicBool>) -> usize {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let events: Vec<Value> = (0..5)
            .map(|i| json!({"type": "Ticked", "key": format!("k-{i}"), "expect": "any", "correlation": format!("{name}-{n}"), "data": {"n": n}}))
            .collect();
        let Ok(r) = http().post(format!("{base}/v1/events")).json(&json!({"events": events})).send().await else { break };
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        n += 1;
    }
    n
}

/// Waits until the index reaches `at`; returns the stream's last sequence then.
async fn indexed_past(nats: &NatsServer, admin: &async_nats::Client, at: u64) -> u64 {
    wait_floor(admin, at, Duration::from_secs(30)).await;
    let last = stream_count(nats).await;
    eprintln!("killing the pinned gateway with the index at {} of {last}", indexer_state(admin).await.0);
    last
}

/// Two gateways share the indexer (one pinned, one on standby). The pinned one is killed in
/// the middle of a steady stream of appends, restarted, then the other is killed: every event
/// is still indexed, exactly once.
#[tokio::test]
async fn indexer_survives_gateway_kills_without_loss_or_duplicates() {
    let nats = nats().await.unwrap();
    let admin = nats.admin().await.unwrap();
    let mut a = gateway(&nats, &[]).await;
    post(&a, json!({"events": [ev("Opened", "first", json!("new"), json!({}))]})).await;
    wait_floor(&admin, 1, Duration::from_secs(10)).await; // a is pinned: it received events
    let mut b = gateway(&nats, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appender = tokio::spawn(append_until("via-b", b.base.clone(), stop.clone()));
    let before_a = indexed_past(&nats, &admin, 300).await;
    a._child.kill9().await.unwrap();
    // b takes over once a's pin lapses, and indexes what a held unacked.
    wait_floor(&admin, before_a + 100, Duration::from_secs(30)).await;
    let a2 = gateway(&nats, &[]).await;
    let before_b = indexed_past(&nats, &admin, before_a + 300).await;
    b._child.kill9().await.unwrap();
    // The appends through b stop with it: go on through a2.
    assert!(appender.await.unwrap() > 0);
    let appender = tokio::spawn(append_until("via-a2", a2.base.clone(), stop.clone()));
    wait_floor(&admin, before_b + 100, Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    assert!(appender.await.unwrap() > 0);
    let last = stream_count(&nats).await;
    wait_floor(&admin, last, Duration::from_secs(30)).await;
    assert_indexed_exactly_once(&admin, last).await;
    // And the trace of a unit of work written while gateways died is whole.
    let (_, work) = get(&a2, "/v1/correlations/via-b-3/events").await;
    assert_eq!(work["events"].as_array().unwrap().len(), 5, "{work}");
}

/// An older gateway's indexer consumer (`AckExplicit`, acked out of order, behind the stream) is
/// replaced on upgrade by one starting after its ack floor: the events it had not indexed are
/// indexed, those it had are not indexed again.
#[tokio::test]
async fn indexer_upgrade_replaces_the_old_consumer_without_loss_or_duplicates() {
    let nats = nats().await.unwrap();
    let admin = nats.admin().await.unwrap();
    let js = async_nats::jetstream::new(admin.clone());
    // The streams as a gateway makes them, then the old indexer's consumer in place of the new.
    let mut first = gateway(&nats, &[]).await;
    wait_floor(&admin, 0, Duration::from_secs(10)).await; // its indexer made its consumer
    first._child.kill9().await.unwrap();
    let events = js.get_stream("EVENTS").await.unwrap();
    events.delete_consumer("sequent-indexer").await.unwrap();
    let old = consumer::pull::Config {
        durable_name: Some("sequent-indexer".into()),
        description: Some("bus-gateway: correlation index".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: 20_000,
        ack_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let old = events.create_consumer(old).await.unwrap();
    // 50 events stored by the old gateways, as they store them.
    for i in 0..50u64 {
        let event = sequent_protocol::Event {
            seq: 0,
            id: format!("old-{i}"),
            event_type: "Ticked".into(),
            key: format!("k-{}", i % 3),
            version: i / 3,
            correlation: format!("work-{}", i / 5),
            causation: None,
            producer: sequent_protocol::Producer { service: "http".into(), instance: None },
            time: "2026-01-01T00:00:00.000000Z".into(),
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
        };
        let subject = sequent_protocol::subjects::publish_subject(&event.key, &event.event_type);
        js.publish(subject, event.to_stored().into()).await.unwrap().await.unwrap();
    }
    // The old indexer indexed and acked 1..=20 and 22..=25 (acks out of order), held 21 and
    // 26..=30 unacked when it stopped, and never got to 31..=50.
    let mut batch = old.fetch().max_messages(30).messages().await.unwrap();
    let mut held = Vec::new();
    while let Some(msg) = batch.next().await {
        let msg = msg.unwrap();
        let seq = msg.info().unwrap().stream_sequence;
        if seq == 21 || seq > 25 {
            held.push(msg);
            continue;
        }
        let correlation = serde_json::from_slice::<Value>(&msg.payload).unwrap()["correlation"].as_str().unwrap().to_string();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("ix-{seq}").as_str());
        js.publish_with_headers(format!("ix.c.{correlation}"), headers, seq.to_string().into()).await.unwrap().await.unwrap();
        msg.double_ack().await.unwrap();
    }
    assert_eq!(held.len(), 6);
    assert_eq!(indexer_state(&admin).await, (20, consumer::AckPolicy::Explicit));

    let gw = gateway(&nats, &[]).await;
    wait_floor(&admin, 50, Duration::from_secs(30)).await;
    assert_indexed_exactly_once(&admin, 50).await;
    let (_, work) = get(&gw, "/v1/correlations/work-4/events").await; // seqs 21..=25
    let ids: Vec<&str> = work["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["old-20", "old-21", "old-22", "old-23", "old-24"]);
    // New appends are indexed by the new consumer too.
    let (s, body) = post(&gw, json!({"events": [{"type": "Ticked", "key": "k-9", "expect": "any", "correlation": "work-new", "data": {}}]})).await;
    assert_eq!(s, 201, "{body}");
    wait_floor(&admin, 51, Duration::from_secs(10)).await;
    assert_indexed_exactly_once(&admin, 51).await;
}
