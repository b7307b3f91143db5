//! HTTP routes of a Lua service (params, query, JSON bodies, errors, limits) and the sandbox:
//! runaway loops, memory bombs and forbidden calls fail the call with a clear error while the
//! instance keeps serving.

mod superclient_common;

use serde_json::json;
use superclient_common::*;

async fn send(client: &reqwest::Client, method: reqwest::Method, url: &str, content_type: Option<&str>, body: Option<String>) -> (u16, serde_json::Value) {
    let mut req = client.request(method, url);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

#[tokio::test]
async fn routes_bodies_limits_and_sandbox() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("superclient_http.lua", "http-a", &["--body-limit", "1000"]).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", inst.http);
    use reqwest::Method;

    // Path and query parameters, a JSON body.
    let (s, v) = send(&c, Method::POST, &url("/echo/x%20y/2?q=1&r=two"), Some("application/json"), Some(r#"{"a":[1,2],"n":5}"#.into())).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["params"], json!({ "a": "x y", "b": "2" }));
    assert_eq!(v["query"], json!({ "q": "1", "r": "two" }));
    assert_eq!(v["body"], json!({ "a": [1, 2], "n": 5 }));
    assert_eq!(v["method"], "POST");
    // The more specific pattern wins.
    let (s, v) = send(&c, Method::POST, &url("/echo/fixed/3"), None, None).await;
    assert_eq!((s, v["fixed"].clone()), (200, json!(true)));

    // Bad bodies.
    let (s, v) = send(&c, Method::POST, &url("/echo/a/b"), Some("text/plain"), Some("hello".into())).await;
    assert_eq!(s, 415, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("Content-Type: application/json"), "{v}");
    let (s, v) = send(&c, Method::POST, &url("/echo/a/b"), Some("application/json"), Some("{bad".into())).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("not valid JSON"), "{v}");
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(2000));
    let (s, v) = send(&c, Method::POST, &url("/echo/a/b"), Some("application/json"), Some(big)).await;
    assert_eq!(s, 413, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("1000 bytes"), "{v}");
    let (s, _) = send(&c, Method::GET, &url("/nope"), None, None).await;
    assert_eq!(s, 404);
    let (s, v) = send(&c, Method::DELETE, &url("/ok"), None, None).await;
    assert_eq!(s, 405, "{v}");

    // Redis writes of a route commit, and a validation answer from the script.
    let (s, v) = send(&c, Method::PUT, &url("/items/7"), Some("application/json"), Some(r#"{"price_cents":250}"#.into())).await;
    assert_eq!((s, v["stored"].clone(), v["puts"].clone()), (200, json!({ "price_cents": 250 }), json!(1)), "{v}");
    let (s, v) = get_json(&url("/items/7")).await;
    assert_eq!((s, v), (200, json!({ "price_cents": 250 })));
    let (s, _) = send(&c, Method::PUT, &url("/items/8"), Some("application/json"), Some(r#"{"price":"x"}"#.into())).await;
    assert_eq!(s, 422);

    // A send from a route returns its receipt; a second "new" conflicts with the version.
    let (s, v) = send(&c, Method::POST, &url("/open/acc-1"), None, None).await;
    assert_eq!((s, v["status"].clone(), v["version"].clone()), (201, json!("ok"), json!(0)), "{v}");
    let (s, v) = send(&c, Method::POST, &url("/open/acc-1"), None, None).await;
    assert_eq!((s, v["current_version"].clone()), (409, json!(0)), "{v}");

    // Script errors: 500 with an error id, the cause in the log.
    for path in ["/boom", "/bad-return"] {
        let (s, v) = get_json(&url(path)).await;
        assert_eq!(s, 500, "{path}: {v}");
        assert!(v["detail"].as_str().unwrap().contains("error id") && v["instance"].as_str().is_some_and(|i| i.starts_with("urn:uuid:")), "{v}");
    }
    let mut child = inst.child;
    child.wait_for_line("this route always fails", std::time::Duration::from_secs(5)).await.unwrap();

    // Runaway loops (also one hiding behind pcall) and a memory bomb: stopped, 500, logged.
    for (path, cause) in [("/loop", "Lua instructions"), ("/sneaky-loop", "Lua instructions"), ("/bomb", "out of memory")] {
        let started = std::time::Instant::now();
        let (s, _) = get_json(&url(path)).await;
        assert_eq!(s, 500, "{path}");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{path} took {:?}", started.elapsed());
        child.wait_for_line(cause, std::time::Duration::from_secs(5)).await.unwrap();
        let (s, _) = get_json(&url("/ok")).await;
        assert_eq!(s, 200, "the instance keeps serving after {path}");
    }

    // Forbidden library calls fail with a clear error; what is allowed still works.
    let ns = stack.active_ns("example").await.expect("the service has a namespace");
    let checkpoint = format!("{ns}:__applied:0");
    let _: () = redis::cmd("SET").arg(&checkpoint).arg("123").query_async(&mut stack.redis_con().await).await.unwrap();
    let (s, v) = get_json(&url("/forbidden")).await;
    assert_eq!(s, 200, "{v}");
    for (name, needle) in [
        ("io.open", "global 'io'"),
        ("os.execute", "field 'execute'"),
        ("os.exit", "field 'exit'"),
        ("os.remove", "field 'remove'"),
        ("debug.getinfo", "global 'debug'"),
        ("dofile", "global 'dofile'"),
        ("loadfile", "global 'loadfile'"),
        ("require", "global 'require'"),
        ("string.dump", "field 'dump'"),
        ("load bytecode", "binary chunk"),
    ] {
        let got = v[name].as_str().unwrap_or("");
        assert!(got != "ALLOWED" && got.contains(needle), "{name}: {got}");
    }
    assert_eq!(v["load_text"], json!(2));
    // A script's `__applied:0` is its own key: it neither sees nor changes the checkpoint.
    assert_eq!(v["framework_key"], json!("nil"));
    let kept: String = redis::cmd("GET").arg(&checkpoint).query_async(&mut stack.redis_con().await).await.unwrap();
    assert_eq!(kept, "123");
    let mine: String = redis::cmd("GET").arg(format!("{ns}:~__applied:0")).query_async(&mut stack.redis_con().await).await.unwrap();
    assert_eq!(mine, "\"mine\"");
    assert_eq!(v["os_time"], json!("number"));

    // Password hashing (peppered; hashes made before the pepper still verify) and signed tokens.
    let (s, v) = send(&c, Method::POST, &url("/token/alice"), Some("application/json"), Some(r#"{"password":"pw1"}"#.into())).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({
            "verified": true, "wrong": false, "peppered": true, "without_pepper": false, "legacy": true, "legacy_wrong": false,
            "sub": "alice", "role": "customer", "tampered": "bad signature",
        })
    );

    // Built-ins.
    let (s, v) = get_json(&url("/health")).await;
    assert_eq!((s, v["service"].clone()), (200, json!("example")));
    let (s, v) = get_json(&url("/ready")).await;
    assert_eq!((s, v["status"].clone(), v["service"].clone()), (200, json!("ready"), json!("example")), "{v}");
    // Metrics: on the metrics listener, per route pattern; not on the routes' port.
    let metrics = reqwest::get(format!("{}/metrics", inst.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sequent_http_requests_total{service=\"example\",route=\"GET /items/{id}\""), "{metrics}");
    let (s, _) = get_json(&url("/metrics")).await;
    assert_eq!(s, 404);
}

/// Two requests whose routes send twice on shared keys, in opposite orders
/// (tests/lua/superclient_crossed_routes.lua): each holds, from its first send, the lock the
/// other needs for its second. They wait for each other until the locks expire
/// (superclient/README.md, "Serializable state"), then each answers, and what they locked is
/// free again.
#[tokio::test]
async fn routes_that_send_twice_on_keys_in_opposite_orders_answer_once_the_locks_expire() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("superclient_crossed_routes.lua", "routes-a", &[]).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", inst.http);
    let started = std::time::Instant::now();
    let (url_ab, url_ba) = (url("/cross/ab"), url("/cross/ba"));
    let ((ab, _), (ba, _)) =
        tokio::join!(send(&c, reqwest::Method::POST, &url_ab, None, None), send(&c, reqwest::Method::POST, &url_ba, None, None));
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(45), "the two requests took {took:?}: the cycle outlived the locks' expiry");
    for status in [ab, ba] {
        assert!(status == 200 || status == 503, "{status}");
    }
    // Whatever they locked is free again: each order goes through alone.
    let (s, v) = send(&c, reqwest::Method::POST, &url("/cross/ab"), None, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&c, reqwest::Method::POST, &url("/cross/ba"), None, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(started.elapsed() < took + std::time::Duration::from_secs(5), "the locks were not released");
}
