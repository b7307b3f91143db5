//! The gateway's OpenAPI document (generated from its code, served at /v1/openapi.json) against
//! a real gateway on a real nats-server: every documented operation is called, successes and
//! errors, and each answer is checked against the document (status, content type, body); every
//! error is an RFC 9457 problem (`application/problem+json`). Answers that cannot be provoked
//! here are listed with the reason.

mod openapi_common;

use futures::StreamExt;
use openapi_common::{read, Contract};
use sequent_tests::{binary, free_port, nats, wait_until, Child};
use serde_json::{json, Value};
use std::time::Duration;

const WRITE: &str = "ops-token-0123456789";
const READ: &str = "bi-token-0123456789";

async fn gateway(nats_url: &str) -> (Child, String) {
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("NATS_URL".into(), nats_url.to_string()),
        ("SEQUENT_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("SEQUENT_API_TOKENS".into(), format!("ops:{WRITE}:write,bi:{READ}:read")),
        ("SEQUENT_MAX_BODY_BYTES".into(), "4096".into()),
        ("RUST_LOG".into(), "warn,bus_gateway=info".into()),
    ];
    let mut child = Child::spawn("gateway", binary("bus-gateway"), &[] as &[&str], &env).expect("spawn bus-gateway");
    child.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.expect("gateway starts");
    (child, format!("http://127.0.0.1:{port}"))
}

fn event(t: &str, key: &str, expect: Value) -> Value {
    json!({"type": t, "key": key, "expect": expect, "correlation": "work-1", "data": {"amount_cents": 5}})
}

#[tokio::test]
async fn the_gateway_answers_as_its_openapi_document_says() {
    let mut nats = nats().await.unwrap();
    let (_gateway, base) = gateway(&nats.url).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{base}{path}");

    // ---- the document: OpenAPI 3.1, served without a token, browsable (assets in the binary)
    let spec = read(http.get(url("/v1/openapi.json"))).await;
    assert_eq!(spec.status, 200);
    assert!(spec.content_type.starts_with("application/json"), "{}", spec.content_type);
    let c = Contract::new("bus-gateway", spec.body);
    assert_eq!(c.spec()["info"]["title"], "Sequent bus-gateway");
    let documented: Vec<&String> = c.spec()["paths"].as_object().unwrap().keys().collect();
    for path in ["/v1/events", "/v1/keys/{key}", "/v1/keys/{key}/events", "/v1/correlations/{id}/events", "/v1/sensitive", "/v1/live", "/health", "/ready"] {
        assert!(documented.iter().any(|p| *p == path), "{path} is documented: {documented:?}");
    }
    let docs = read(http.get(url("/v1/docs/"))).await;
    assert_eq!(docs.status, 200, "{}", docs.body);
    assert!(docs.content_type.starts_with("text/html"));
    assert!(docs.body.as_str().unwrap().to_lowercase().contains("swagger"), "{}", docs.body);
    let init = read(http.get(url("/v1/docs/swagger-initializer.js"))).await;
    assert_eq!(init.status, 200);
    assert!(init.body.as_str().unwrap().contains("/v1/openapi.json"), "the page reads the gateway's document: {}", init.body);
    let css = read(http.get(url("/v1/docs/swagger-ui.css"))).await;
    assert_eq!(css.status, 200, "the page's assets are in the binary");

    // ---- appends
    let post = |body: Value, token: Option<&str>| {
        c.check_request("POST", "/v1/events", &body);
        let mut r = http.post(url("/v1/events")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    let first = json!({"events": [{"id": "e-1", "type": "Opened", "key": "acc-1", "expect": "new", "correlation": "work-1", "data": {}}]});
    let a = c.send("POST", "/v1/events", post(first.clone(), Some(WRITE))).await;
    assert_eq!((a.status, a.body["receipts"][0]["duplicate"].as_bool()), (201, Some(false)), "{}", a.body);
    let a = c.send("POST", "/v1/events", post(first, Some(WRITE))).await;
    assert_eq!((a.status, a.body["receipts"][0]["duplicate"].as_bool()), (201, Some(true)), "a retry: {}", a.body);
    let batch = json!({"events": [event("Deposited", "acc-1", json!(1)), event("Deposited", "acc-1", json!(2)), event("Opened", "acc-2", json!("any"))]});
    let a = c.send("POST", "/v1/events", post(batch, Some(WRITE))).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // A conflict: a problem carrying the receipts.
    let a = c.send("POST", "/v1/events", post(json!({"events": [event("Opened", "acc-3", json!("new")), event("Deposited", "acc-1", json!(1))]}), Some(WRITE))).await;
    assert_eq!((a.status, a.body["code"].as_str()), (409, Some("conflict")), "{}", a.body);
    assert_eq!(a.body["receipts"][1]["current_version"], 2, "{}", a.body);
    assert_eq!(a.body["receipts"][0]["status"], "aborted");
    assert!(a.body["detail"].as_str().unwrap().contains("expect 3"), "{}", a.body);
    // Invalid events: receipts with the reason; not an append request at all: no receipts.
    let bad = json!({"events": [event("Opened", "a.b", json!(0))]});
    let a = c.send("POST", "/v1/events", http.post(url("/v1/events")).bearer_auth(WRITE).json(&bad)).await;
    assert_eq!((a.status, a.body["code"].as_str(), a.body["receipts"][0]["status"].as_str()), (400, Some("bad_request"), Some("invalid")), "{}", a.body);
    let a = c.send("POST", "/v1/events", http.post(url("/v1/events")).bearer_auth(WRITE).header("content-type", "application/json").body("{nope")).await;
    assert!(a.status == 400 && a.body.get("receipts").is_none(), "{}", a.body);
    assert!(a.body["detail"].as_str().unwrap().contains("not an append request"), "{}", a.body);
    let a = c.send("POST", "/v1/events", http.post(url("/v1/events")).bearer_auth(WRITE).header("content-type", "text/plain").body("{}")).await;
    assert_eq!((a.status, a.body["code"].as_str()), (415, Some("unsupported_media_type")));
    let huge = json!({"events": [{"type": "T", "key": "k", "expect": 0, "data": {"x": "y".repeat(5000)}}]});
    let a = c.send("POST", "/v1/events", http.post(url("/v1/events")).bearer_auth(WRITE).json(&huge)).await;
    assert_eq!((a.status, a.body["code"].as_str()), (413, Some("too_large")), "{}", a.body);
    let a = c.send("POST", "/v1/events", http.post(url("/v1/events")).json(&json!({"events": []}))).await;
    assert_eq!((a.status, a.body["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(a.headers.get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
    let a = c.send("POST", "/v1/events", post(json!({"events": [event("Opened", "acc-9", json!("new"))]}), Some(READ))).await;
    assert_eq!((a.status, a.body["code"].as_str()), (403, Some("forbidden")));

    // ---- queries
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    let a = c.send("GET", "/v1/events", get("/v1/events?type=Deposited&limit=1", Some(READ))).await;
    assert_eq!((a.status, a.body["events"].as_array().map(Vec::len)), (200, Some(1)), "{}", a.body);
    let next = a.body["next_from_seq"].as_u64().expect("a next page");
    let a = c.send("GET", "/v1/events", get(&format!("/v1/events?key=acc-1&type=Deposited&from_seq={next}"), Some(READ))).await;
    assert_eq!((a.status, a.body["next_from_seq"].clone()), (200, Value::Null), "{}", a.body);
    let a = c.send("GET", "/v1/events", get("/v1/events", Some(READ))).await;
    assert_eq!(a.body["events"].as_array().unwrap().len(), 4, "{}", a.body);
    for q in ["type=Bad.Type", "key=a*b", "limit=0", "limit=abc", "from_seq=-1"] {
        let a = c.send("GET", "/v1/events", get(&format!("/v1/events?{q}"), Some(READ))).await;
        assert_eq!((a.status, a.body["code"].as_str()), (400, Some("bad_request")), "{q}: {}", a.body);
    }
    let a = c.send("GET", "/v1/events", get("/v1/events", None)).await;
    assert_eq!(a.status, 401);

    let a = c.send("GET", "/v1/keys/{key}", get("/v1/keys/acc-1", Some(READ))).await;
    assert_eq!((a.status, a.body["current_version"].as_u64(), a.body["next_version"].as_u64()), (200, Some(2), Some(3)), "{}", a.body);
    let a = c.send("GET", "/v1/keys/{key}", get("/v1/keys/nobody", Some(READ))).await;
    assert_eq!((a.status, a.body["current_version"].clone(), a.body["next_version"].as_u64()), (200, Value::Null, Some(0)));
    let a = c.send("GET", "/v1/keys/{key}", get("/v1/keys/a.b", Some(READ))).await;
    assert_eq!(a.status, 400);
    let a = c.send("GET", "/v1/keys/{key}", get("/v1/keys/acc-1", None)).await;
    assert_eq!(a.status, 401);

    // No policy, no registry: nothing is declared sensitive.
    let a = c.send("GET", "/v1/sensitive", get("/v1/sensitive", Some(READ))).await;
    assert_eq!((a.status, &a.body["sensitive"]), (200, &json!({})), "{}", a.body);
    let a = c.send("GET", "/v1/sensitive", get("/v1/sensitive", None)).await;
    assert_eq!(a.status, 401);

    let a = c.send("GET", "/v1/keys/{key}/events", get("/v1/keys/acc-1/events?limit=2", Some(READ))).await;
    assert_eq!((a.status, a.body["next_from_seq"].is_u64()), (200, true), "{}", a.body);
    let a = c.send("GET", "/v1/keys/{key}/events", get("/v1/keys/a.b/events", Some(READ))).await;
    assert_eq!(a.status, 400);
    let a = c.send("GET", "/v1/keys/{key}/events", get("/v1/keys/acc-1/events?limit=5000", Some(READ))).await;
    assert_eq!(a.status, 400);
    let a = c.send("GET", "/v1/keys/{key}/events", get("/v1/keys/acc-1/events", None)).await;
    assert_eq!(a.status, 401);

    let a = c.send("GET", "/v1/correlations/{id}/events", get("/v1/correlations/work-1/events", Some(READ))).await;
    assert_eq!((a.status, a.body["events"].as_array().map(Vec::len)), (200, Some(4)), "{}", a.body);
    let a = c.send("GET", "/v1/correlations/{id}/events", get("/v1/correlations/a%20b/events", Some(READ))).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = c.send("GET", "/v1/correlations/{id}/events", get("/v1/correlations/work-1/events", None)).await;
    assert_eq!(a.status, 401);

    // ---- the live feed: its messages too
    let ws = url("/v1/live").replace("http://", "ws://");
    let (mut socket, response) = tokio_tungstenite::connect_async(format!("{ws}?token={READ}&types=Deposited&from_seq=1")).await.unwrap();
    c.check("GET", "/v1/live", &openapi_common::Answer {
        status: response.status().as_u16(),
        content_type: String::new(),
        headers: Default::default(),
        body: Value::Null,
    });
    let mut kinds = Vec::new();
    while !kinds.contains(&"caught_up".to_string()) {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a live message").unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        c.check_schema("LiveMessage", &v);
        kinds.push(v["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds, ["event", "event", "caught_up"]);
    socket.close(None).await.ok();
    let a = c.send("GET", "/v1/live", get("/v1/live", Some(READ))).await;
    assert_eq!(a.status, 400, "not a WebSocket request: {}", a.body);
    let upgrade = |token: Option<&str>, q: &str| {
        get(&format!("/v1/live?{q}"), token)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let a = c.send("GET", "/v1/live", upgrade(None, "")).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = c.send("GET", "/v1/live", upgrade(Some(READ), "types=a.b")).await;
    assert_eq!(a.status, 400, "{}", a.body);
    // A page of another origin may not open it, token or not.
    let a = c.send("GET", "/v1/live", upgrade(Some(READ), "").header("origin", "https://elsewhere.example")).await;
    assert_eq!(a.status, 403, "{}", a.body);

    // ---- operations
    let a = c.send("GET", "/health", get("/health", None)).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ok")));
    let a = c.send("GET", "/ready", get("/ready", None)).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("ready")), "{}", a.body);
    // Metrics are not part of the API: they have a listener of their own (--metrics-listen).
    let a = read(get("/metrics", None)).await;
    assert_eq!(a.status, 404, "{}", a.body);

    // ---- what no operation describes is a problem too: unknown paths, wrong methods
    let a = read(get("/v2/nothing", Some(READ))).await;
    c.check_problem(&a);
    assert_eq!(a.status, 404);
    assert!(a.body["detail"].as_str().unwrap().contains("/v1/openapi.json"), "{}", a.body);
    let a = read(http.delete(url("/v1/events")).bearer_auth(WRITE)).await;
    c.check_problem(&a);
    assert_eq!((a.status, a.body["code"].as_str()), (405, Some("method_not_allowed")));
    assert!(a.headers.get("allow").is_some(), "405 keeps its Allow header");

    // ---- NATS gone: the health check says so, as a problem
    nats.kill9().await.unwrap();
    wait_until("the gateway's health to fail without NATS", Duration::from_secs(30), || async {
        let a = read(get("/health", None)).await;
        if a.status == 503 {
            c.check("GET", "/health", &a);
        }
        a.status == 503
    })
    .await
    .unwrap();
    // ... and so does readiness, naming the check that failed.
    let a = c.send("GET", "/ready", get("/ready", None)).await;
    assert_eq!((a.status, a.body["code"].as_str()), (503, Some("not_ready")), "{}", a.body);
    assert_eq!(a.body["checks"]["nats"]["ok"], false, "{}", a.body);

    c.assert_covered(&[
        ("* * 503", "needs JetStream not answering a request the gateway already accepted (the health check covers 503 above)"),
        ("POST /v1/events 500", "needs the store to refuse an append for an unexpected reason"),
        ("GET /v1/live 426", "needs a connection hyper cannot upgrade; HTTP/1.1 clients always can"),
    ]);
}

/// The checker itself: what a document does not say is refused (so the test above can fail).
#[test]
fn the_checker_refuses_what_the_document_does_not_say() {
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/thing": {"get": {"responses": {
            "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
            "404": {"description": "no", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        }}}},
        "components": {"schemas": {
            "Thing": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            "Problem": {"type": "object", "properties": {"status": {"type": "integer"}, "code": {"type": "string"}}, "required": ["status", "code"]}
        }}
    });
    let answer = |status: u16, content_type: &str, body: Value| openapi_common::Answer {
        status,
        content_type: content_type.into(),
        headers: Default::default(),
        body,
    };
    let refuses = |status: u16, content_type: &str, body: Value| {
        let c = Contract::new("t", doc.clone());
        let a = answer(status, content_type, body);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.check("GET", "/thing", &a))).is_err()
    };
    let c = Contract::new("t", doc.clone());
    c.check("GET", "/thing", &answer(200, "application/json", json!({"n": 1})));
    assert!(refuses(200, "application/json", json!({"n": "1"})), "a wrong type");
    assert!(refuses(200, "application/json", json!({})), "a missing field");
    assert!(refuses(200, "application/json", json!({"n": 1, "extra": true})), "a field the document does not name");
    assert!(refuses(200, "text/plain", json!({"n": 1})), "a content type it does not list");
    assert!(refuses(500, "application/json", json!({"n": 1})), "a status it does not document");
    assert!(refuses(404, "application/json", json!({"status": 404, "code": "x"})), "an error that is not a problem");
    let covered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.assert_covered(&[])));
    assert!(covered.is_err(), "the 404 was never seen");
    c.assert_covered(&[("GET /thing 404", "not provoked here")]);
}
