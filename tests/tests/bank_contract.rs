//! The bank's OpenAPI document (services/openapi/bank.json, served by the bfaf at
//! /api/openapi/bank.json) and the platform explorer's (superclient/platform/openapi/explorer.json,
//! served by the explorer at /api/openapi/explorer.json) against the real bank and explorer: real
//! servers, the gateway and superclient processes running services/*.lua and the explorer. Every operation the UI uses is called, successes and
//! errors, and every answer (status, content type, body) and live message is checked against
//! the document; every error is an RFC 9457 problem. Answers that cannot be provoked here are
//! listed with the reason.

mod bank_common;
mod openapi_common;

use bank_common::*;
use futures::{SinkExt, StreamExt};
use openapi_common::{read, Answer, Contract};
use sequent_tests::{repo_root, wait_until};
use serde_json::{json, Value};
use std::time::Duration;

const MAX: i64 = 100_000_000_000;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket; checks the upgrade's status against the document.
async fn ws(c: &Contract, template: &str, url: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens");
    c.check("GET", template, &Answer { status: response.status().as_u16(), content_type: String::new(), headers: Default::default(), body: Value::Null });
    socket
}

/// The next text message, or the close code.
async fn next(sock: &mut Socket) -> Result<Value, u16> {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sock.next()).await.expect("a message within 10 s") {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map_or(1005, |f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => return Err(1006),
        }
    }
}

struct Client<'a> {
    c: &'a Contract,
    http: reqwest::Client,
    base: String,
}

impl Client<'_> {
    /// `method path` (an instance of `template`) with an optional token and JSON body; the answer
    /// checked against the document. A body meant to be valid is checked as a request too.
    async fn call(&self, method: &str, template: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        self.c.send(method, template, r).await
    }

    async fn valid(&self, method: &str, template: &str, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.c.check_request(method, template, &body);
        self.call(method, template, path, token, Some(body)).await
    }

    async fn with_headers(&self, method: &str, template: &str, path: &str, token: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(token).json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.c.send(method, template, r).await
    }
}

fn code(a: &Answer) -> (u16, Option<&str>) {
    (a.status, a.body["code"].as_str())
}

#[tokio::test]
async fn the_bank_answers_as_its_openapi_document_says() {
    let _serial = serial().await;
    // Without nectar: it joins the running bank further down (GET /api/points, both answers).
    let mut bank = Bank::start(
        &[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)],
        &[("accounts", &["--max-attempts", "2", "--retry-delay", "50ms"])],
    )
    .await;
    let base = bank.api().base;
    let http = reqwest::Client::new();

    // ---- the document: the repository's file, served by the bfaf, with a page to read it
    let file: Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join("services/openapi/bank.json")).unwrap()).unwrap();
    let served = read(http.get(format!("{base}/api/openapi/bank.json"))).await;
    assert_eq!(served.status, 200);
    assert!(served.content_type.starts_with("application/json"), "{}", served.content_type);
    assert_eq!(served.body, file, "the bfaf serves services/openapi/bank.json");
    let page = read(http.get(format!("{base}/api/openapi/"))).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.as_str().unwrap().contains("bank.json"));
    let c = Contract::new("bank", file);
    let api = Client { c: &c, http: http.clone(), base: base.clone() };

    // ---- sign-up and log-in
    let a = api.valid("POST", "/api/users", "/api/users", None, json!({ "username": "Alice.B", "password": "correct horse" })).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a = api.valid("POST", "/api/users", "/api/users", None, json!({ "username": "alice.b", "password": "another one" })).await;
    assert_eq!(code(&a), (409, Some("username taken")), "{}", a.body);
    for body in [
        json!({ "username": "al", "password": "correct horse" }),
        json!({ "username": "bob", "password": "short" }),
        json!({ "username": "bob" }),
        json!({ "username": 42, "password": "correct horse" }),
        json!("bob"),
    ] {
        let a = api.call("POST", "/api/users", "/api/users", None, Some(body.clone())).await;
        assert_eq!(code(&a), (400, Some("invalid request")), "{body}: {}", a.body);
        assert!(!a.body["detail"].as_str().unwrap().is_empty());
    }
    let a = api.valid("POST", "/api/sessions", "/api/sessions", None, json!({ "username": "ALICE.B", "password": "correct horse" })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let alice = a.body["token"].as_str().unwrap().to_string();
    let a = api.valid("POST", "/api/sessions", "/api/sessions", None, json!({ "username": "alice.b", "password": "wrong horse" })).await;
    assert_eq!(code(&a), (401, Some("invalid credentials")));
    let a = api.call("POST", "/api/sessions", "/api/sessions", None, Some(json!({ "username": "alice.b" }))).await;
    assert_eq!(a.status, 400);
    let bob = bank.api().customer("bob").await;

    // ---- every customer call wants a valid token
    for (method, template, path) in [
        ("GET", "/api/accounts", "/api/accounts"),
        ("POST", "/api/accounts", "/api/accounts"),
        ("GET", "/api/accounts/{id}", "/api/accounts/acc-1"),
        ("GET", "/api/accounts/{id}/statement", "/api/accounts/acc-1/statement"),
        ("POST", "/api/accounts/{id}/deposits", "/api/accounts/acc-1/deposits"),
        ("POST", "/api/accounts/{id}/withdrawals", "/api/accounts/acc-1/withdrawals"),
        ("POST", "/api/transfers", "/api/transfers"),
        ("GET", "/api/transfers/{id}", "/api/transfers/tr-1"),
        ("GET", "/api/transfers", "/api/transfers?account=acc-1"),
        ("GET", "/api/points", "/api/points"),
    ] {
        let body = (method == "POST").then(|| json!({ "amount_cents": 1 }));
        for token in [None, Some("garbage")] {
            let a = api.call(method, template, path, token, body.clone()).await;
            assert_eq!(code(&a), (401, Some("unauthorized")), "{method} {path}: {}", a.body);
        }
    }

    // ---- accounts
    let a = api.call("GET", "/api/accounts", "/api/accounts", Some(&alice), None).await;
    assert_eq!((a.status, a.body.clone()), (200, json!([])));
    let a = api.valid("POST", "/api/accounts", "/api/accounts", Some(&alice), json!({})).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let a1 = a.body["account_id"].as_str().unwrap().to_string();
    let a = api.c.send("POST", "/api/accounts", http.post(format!("{base}/api/accounts")).bearer_auth(&alice)).await;
    assert_eq!(a.status, 201, "an empty body is fine: {}", a.body);
    let a2 = a.body["account_id"].as_str().unwrap().to_string();
    let a = api.call("GET", "/api/accounts", "/api/accounts", Some(&alice), None).await;
    assert_eq!(a.body.as_array().unwrap().len(), 2);
    let b1 = bank.api().open_account(&bob).await;

    // Live updates from here on, every message checked.
    let ws_base = base.replace("http://", "ws://");
    let mut bad = ws(&c, "/api/live", &format!("{ws_base}/api/live?token=nope")).await;
    assert_eq!(next(&mut bad).await, Err(4401));
    let mut live = ws(&c, "/api/live", &format!("{ws_base}/api/live?token={alice}")).await;
    let hello = next(&mut live).await.unwrap();
    c.check_schema("LiveMessage", &hello);
    assert_eq!(hello["kind"], "hello");

    let a = api.call("GET", "/api/accounts/{id}", &format!("/api/accounts/{a1}"), Some(&alice), None).await;
    assert_eq!((a.status, a.body["balance_cents"].as_i64()), (200, Some(0)));
    for path in [format!("/api/accounts/{b1}"), "/api/accounts/acc-0000".to_string()] {
        let a = api.call("GET", "/api/accounts/{id}", &path, Some(&alice), None).await;
        assert_eq!(code(&a), (404, Some("not found")), "{path}");
    }

    // ---- money
    let deposits = "/api/accounts/{id}/deposits";
    let withdrawals = "/api/accounts/{id}/withdrawals";
    let a = api.valid("POST", deposits, &format!("/api/accounts/{a1}/deposits"), Some(&alice), json!({ "amount_cents": 10_000 })).await;
    assert_eq!((a.status, a.body["balance_cents"].as_i64()), (201, Some(10_000)), "{}", a.body);
    for amount in [json!(0), json!(-5), json!(1.5), json!("100"), json!(MAX + 1)] {
        for (template, kind) in [(deposits, "deposits"), (withdrawals, "withdrawals")] {
            let a = api.call("POST", template, &format!("/api/accounts/{a1}/{kind}"), Some(&alice), Some(json!({ "amount_cents": amount }))).await;
            assert_eq!(code(&a), (400, Some("invalid amount")), "{kind} of {amount}: {}", a.body);
        }
    }
    for (template, kind) in [(deposits, "deposits"), (withdrawals, "withdrawals")] {
        let a = api.valid("POST", template, &format!("/api/accounts/{b1}/{kind}"), Some(&alice), json!({ "amount_cents": 1 })).await;
        assert_eq!(code(&a), (404, Some("not found")), "{kind} into another's account");
    }
    let a = api.valid("POST", withdrawals, &format!("/api/accounts/{a1}/withdrawals"), Some(&alice), json!({ "amount_cents": 10_001 })).await;
    assert_eq!((code(&a), a.body["balance_cents"].as_i64()), ((422, Some("insufficient funds")), Some(10_000)), "{}", a.body);
    let a = api.valid("POST", withdrawals, &format!("/api/accounts/{a1}/withdrawals"), Some(&alice), json!({ "amount_cents": 1_000 })).await;
    assert_eq!((a.status, a.body["balance_cents"].as_i64()), (201, Some(9_000)));
    let a = api.valid("POST", deposits, &format!("/api/accounts/{a2}/deposits"), Some(&alice), json!({ "amount_cents": MAX })).await;
    assert_eq!(a.status, 201);
    let a = api.valid("POST", deposits, &format!("/api/accounts/{a2}/deposits"), Some(&alice), json!({ "amount_cents": 1 })).await;
    assert_eq!(code(&a), (422, Some("balance limit exceeded")), "{}", a.body);

    // ---- statements
    let statement = "/api/accounts/{id}/statement";
    let a = api.call("GET", statement, &format!("/api/accounts/{a1}/statement?limit=1"), Some(&alice), None).await;
    assert_eq!((a.status, a.body["entries"][0]["kind"].as_str()), (200, Some("withdrawal")), "{}", a.body);
    let cursor = a.body["next_cursor"].as_str().unwrap().to_string();
    let a = api.call("GET", statement, &format!("/api/accounts/{a1}/statement?cursor={cursor}"), Some(&alice), None).await;
    assert_eq!((a.status, a.body["next_cursor"].clone()), (200, Value::Null));
    for q in ["limit=0", "limit=abc", "cursor=99"] {
        let a = api.call("GET", statement, &format!("/api/accounts/{a1}/statement?{q}"), Some(&alice), None).await;
        assert_eq!(a.status, 400, "{q}: {}", a.body);
    }
    let a = api.call("GET", statement, &format!("/api/accounts/{b1}/statement"), Some(&alice), None).await;
    assert_eq!(a.status, 404);

    // ---- transfers
    let t = api.valid("POST", "/api/transfers", "/api/transfers", Some(&alice), json!({ "from_account": a1, "to_account": b1, "amount_cents": 250 })).await;
    assert_eq!((t.status, t.body["status"].as_str()), (202, Some("pending")), "{}", t.body);
    let t_ok = t.body["transfer_id"].as_str().unwrap().to_string();
    let done = bank.api().finished_transfer(&alice, &t_ok).await;
    assert_eq!(done["status"], "completed");
    let a = api.call("GET", "/api/transfers/{id}", &format!("/api/transfers/{t_ok}"), Some(&alice), None).await;
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("completed")));
    let t = api.valid("POST", "/api/transfers", "/api/transfers", Some(&alice), json!({ "from_account": a1, "to_account": "acc-00000000", "amount_cents": 5 })).await;
    let t_failed = t.body["transfer_id"].as_str().unwrap().to_string();
    bank.api().finished_transfer(&alice, &t_failed).await;
    let a = api.call("GET", "/api/transfers/{id}", &format!("/api/transfers/{t_failed}"), Some(&alice), None).await;
    assert_eq!((a.body["status"].as_str(), a.body["reason"].as_str()), (Some("failed"), Some("unknown account")), "{}", a.body);
    for body in [
        json!({ "from_account": a1, "to_account": b1, "amount_cents": 0 }),
        json!({ "from_account": a1, "amount_cents": 5 }),
        json!({ "from_account": a1, "to_account": "not an account", "amount_cents": 5 }),
    ] {
        let a = api.call("POST", "/api/transfers", "/api/transfers", Some(&alice), Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
    }
    let a = api.valid("POST", "/api/transfers", "/api/transfers", Some(&alice), json!({ "from_account": b1, "to_account": a1, "amount_cents": 5 })).await;
    assert_eq!(code(&a), (404, Some("not found")), "from another's account: {}", a.body);
    // The same Idempotency-Key for another transfer.
    let key = [("idempotency-key", "tr-key-1")];
    let a = api.with_headers("POST", "/api/transfers", "/api/transfers", &alice, json!({ "from_account": a1, "to_account": b1, "amount_cents": 7 }), &key).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let a = api.with_headers("POST", "/api/transfers", "/api/transfers", &alice, json!({ "from_account": a1, "to_account": b1, "amount_cents": 8 }), &key).await;
    assert_eq!(code(&a), (409, Some("conflict")), "{}", a.body);
    let a = api.call("GET", "/api/transfers/{id}", "/api/transfers/tr-unknown", Some(&alice), None).await;
    assert_eq!(a.status, 404);
    let a = api.call("GET", "/api/transfers", &format!("/api/transfers?account={a1}"), Some(&alice), None).await;
    assert_eq!((a.status, a.body.as_array().map(Vec::len)), (200, Some(3)), "{}", a.body);
    let a = api.call("GET", "/api/transfers", "/api/transfers", Some(&alice), None).await;
    assert_eq!(a.status, 400);
    let a = api.call("GET", "/api/transfers", &format!("/api/transfers?account={b1}"), Some(&alice), None).await;
    assert_eq!(a.status, 404);

    // ---- nectar's points: not running, then added to the running bank
    let a = api.call("GET", "/api/points", "/api/points", Some(&alice), None).await;
    assert_eq!((a.status, a.body["available"].as_bool()), (200, Some(false)), "{}", a.body);
    bank.add("nectar", "nectar-1", &[]).await;
    api.valid("POST", deposits, &format!("/api/accounts/{a1}/deposits"), Some(&alice), json!({ "amount_cents": 20_000 })).await;
    let t = api.valid("POST", "/api/transfers", "/api/transfers", Some(&alice), json!({ "from_account": a1, "to_account": b1, "amount_cents": 15_000 })).await;
    bank.api().finished_transfer(&alice, t.body["transfer_id"].as_str().unwrap()).await;
    wait_until("nectar's points of the transfer over $100", Duration::from_secs(30), || async {
        let a = api.call("GET", "/api/points", "/api/points", Some(&alice), None).await;
        a.body["accounts"].as_array().is_some_and(|l| l.iter().any(|p| p["account_id"] == a1 && p["points"] == 1_500))
    })
    .await
    .unwrap();

    // Every live message so far matches the document; all kinds came.
    let mut kinds = std::collections::BTreeSet::new();
    while kinds.len() < 4 {
        let m = next(&mut live).await.unwrap();
        c.check_schema("LiveMessage", &m);
        kinds.insert(m["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["account", "points", "statement_entry", "transfer"]);
    live.close(None).await.ok();

    // ---- where the operators' explorer is (the platform's, not the bank's)
    let a = api.call("GET", "/api/explorer", "/api/explorer", None, None).await;
    assert_eq!(a.body["url"].as_str(), Some(format!("{}/explorer", bank.explorer_url.clone().unwrap())).as_deref(), "{}", a.body);

    // ---- log-out: the token is refused from then on
    let a = api.valid("POST", "/api/sessions", "/api/sessions", None, json!({ "username": "alice.b", "password": "correct horse" })).await;
    let session = a.body["token"].as_str().unwrap().to_string();
    let a = api.call("DELETE", "/api/sessions", "/api/sessions", Some(&session), None).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let a = api.call("DELETE", "/api/sessions", "/api/sessions", Some(&session), None).await;
    assert_eq!(code(&a), (401, Some("unauthorized")), "{}", a.body);
    let a = api.call("GET", "/api/accounts", "/api/accounts", Some(&session), None).await;
    assert_eq!(a.status, 401, "{}", a.body);

    // ---- failed log-ins (last: the name stays locked for the window)
    for _ in 0..5 {
        let a = api.valid("POST", "/api/sessions", "/api/sessions", None, json!({ "username": "bob", "password": "wrong horse" })).await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let a = api.valid("POST", "/api/sessions", "/api/sessions", None, json!({ "username": "bob", "password": "wrong horse" })).await;
    assert_eq!(code(&a), (429, Some("too many attempts")), "{}", a.body);
    let after: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(Some(after), a.body["retry_after"].as_u64(), "{}", a.body);
    let a = api.valid("POST", "/api/users", "/api/users", None, json!({ "username": "carol", "password": "12345678" })).await;
    assert_eq!(code(&a), (400, Some("weak password")), "{}", a.body);

    // ---- operators: the platform's explorer and its own document
    let explorer = bank.explorer_url.clone().unwrap();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join("superclient/platform/openapi/explorer.json")).unwrap()).unwrap();
    let served = read(http.get(format!("{explorer}/api/openapi/explorer.json"))).await;
    assert_eq!((served.status, &served.body), (200, &file), "the explorer serves superclient/platform/openapi/explorer.json");
    let e = Contract::new("explorer", file);
    let ops = Client { c: &e, http: http.clone(), base: explorer.clone() };
    let ops_ws = explorer.replace("http://", "ws://");
    let a = ops.valid("POST", "/api/admin/sessions", "/api/admin/sessions", None, json!({ "username": ADMIN_USER, "password": "wrong" })).await;
    assert_eq!(code(&a), (401, Some("invalid credentials")));
    let a = ops.call("POST", "/api/admin/sessions", "/api/admin/sessions", None, Some(json!({ "username": ADMIN_USER }))).await;
    assert_eq!(a.status, 400);
    let a = ops.valid("POST", "/api/admin/sessions", "/api/admin/sessions", None, json!({ "username": ADMIN_USER, "password": ADMIN_PASSWORD })).await;
    assert_eq!(a.status, 200);
    let admin = a.body["token"].as_str().unwrap().to_string();
    for (method, template, path) in [
        ("GET", "/api/admin/events", "/api/admin/events"),
        ("GET", "/api/admin/keys/{key}/events", "/api/admin/keys/acc-1/events"),
        ("GET", "/api/admin/correlations/{id}/events", "/api/admin/correlations/x/events"),
        ("GET", "/api/admin/services", "/api/admin/services"),
        ("GET", "/api/admin/parked", "/api/admin/parked"),
        ("POST", "/api/admin/parked/{service}/{key}/release", "/api/admin/parked/accounts/acc-1/release"),
        ("POST", "/api/admin/services/{service}/rebuild", "/api/admin/services/accounts/rebuild"),
        ("GET", "/api/admin/services/{service}/rebuild", "/api/admin/services/accounts/rebuild"),
    ] {
        for token in [None, Some(alice.as_str())] {
            let a = ops.call(method, template, path, token, None).await;
            assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
        }
    }
    let a = ops.call("GET", "/api/admin/events", "/api/admin/events?type=UserRegistered&limit=1", Some(&admin), None).await;
    assert_eq!((a.status, a.body["events"][0]["data"]["password_hash"].as_str()), (200, Some("[redacted]")), "{}", a.body);
    let a = ops.call("GET", "/api/admin/events", "/api/admin/events?type=Bad.Type", Some(&admin), None).await;
    assert_eq!(code(&a), (400, Some("bad_request")), "the gateway's problem, passed on: {}", a.body);
    let a = ops.call("GET", "/api/admin/keys/{key}/events", &format!("/api/admin/keys/{a1}/events"), Some(&admin), None).await;
    assert_eq!(a.status, 200);
    let a = ops.call("GET", "/api/admin/keys/{key}/events", "/api/admin/keys/a.b/events", Some(&admin), None).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = ops.call("GET", "/api/admin/correlations/{id}/events", &format!("/api/admin/correlations/{t_ok}/events"), Some(&admin), None).await;
    assert_eq!((a.status, a.body["events"].as_array().map(Vec::len)), (200, Some(4)), "{}", a.body);
    let a = ops.call("GET", "/api/admin/correlations/{id}/events", "/api/admin/correlations/a%20b/events", Some(&admin), None).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = ops.call("GET", "/api/admin/services", "/api/admin/services", Some(&admin), None).await;
    assert_eq!(a.status, 200);
    // A poison event parks a key: the list and its release.
    let poison = json!({ "events": [{ "type": "AccountCredited", "key": "acc-deadbeef", "expect": "any",
        "data": { "account_id": "acc-deadbeef", "amount_cents": 5, "balance_cents": 5, "reason": "deposit" } }] });
    assert_eq!(http.post(format!("{}/v1/events", bank.gateway_http)).json(&poison).send().await.unwrap().status(), 201);
    wait_until("acc-deadbeef to be parked", Duration::from_secs(30), || async {
        let a = ops.call("GET", "/api/admin/parked", "/api/admin/parked", Some(&admin), None).await;
        a.body.as_array().is_some_and(|l| !l.is_empty())
    })
    .await
    .unwrap();
    let release = "/api/admin/parked/{service}/{key}/release";
    let a = ops.call("POST", release, "/api/admin/parked/accounts/acc-deadbeef/release", Some(&admin), None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let a = ops.call("POST", release, "/api/admin/parked/accounts/acc-other/release", Some(&admin), None).await;
    assert_eq!(code(&a), (404, Some("not found")));
    // The operators' tail: bare events.
    let mut bad = ws(&e, "/api/admin/live", &format!("{ops_ws}/api/admin/live?token={alice}")).await;
    assert_eq!(next(&mut bad).await, Err(4401));
    let mut tail = ws(&e, "/api/admin/live", &format!("{ops_ws}/api/admin/live?token={admin}&types=UserRegistered&from_seq=1")).await;
    for _ in 0..2 {
        let m = next(&mut tail).await.unwrap();
        e.check_schema("Event", &m);
        assert_eq!(m["data"]["password_hash"], "[redacted]");
    }
    tail.send(tokio_tungstenite::tungstenite::Message::Close(None)).await.ok();
    // A rebuild and its progress, to its end.
    let rebuild = "/api/admin/services/{service}/rebuild";
    let a = ops.call("GET", rebuild, "/api/admin/services/users/rebuild", Some(&admin), None).await;
    assert_eq!(code(&a), (404, Some("not found")));
    let a = ops.call("POST", rebuild, "/api/admin/services/nosuch/rebuild", Some(&admin), None).await;
    assert_eq!(code(&a), (404, Some("not found")));
    let a = ops.call("POST", rebuild, "/api/admin/services/users/rebuild", Some(&admin), None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let a = ops.call("POST", rebuild, "/api/admin/services/users/rebuild", Some(&admin), None).await;
    assert_eq!(code(&a), (409, Some("conflict")));
    wait_until("the users rebuild to finish", Duration::from_secs(60), || async {
        let a = ops.call("GET", rebuild, "/api/admin/services/users/rebuild", Some(&admin), None).await;
        a.body["status"] == "done"
    })
    .await
    .unwrap();
    let a = ops.call("GET", "/api/admin/services", "/api/admin/services", Some(&admin), None).await;
    assert!(a.body.as_array().unwrap().iter().any(|s| s["rebuild"]["status"] == "done"), "{}", a.body);

    e.assert_covered(&[
        ("* * 503", "needs a gateway or Redis that does not answer"),
        ("* * default", "the superclient's own answers (unknown path, 405, 413, 415, 500): checked by superclient_built_in_errors_are_problems"),
    ]);
    c.assert_covered(&[
        ("POST /api/users 429", "needs 20 failures from one address, which would lock this test out: tests/tests/insider.rs provokes it"),
        ("* * 503", "needs a service that does not answer"),
        ("* * 504", "needs a projection that does not catch up within 10 s"),
        ("* * default", "the superclient's own answers (unknown path, 405, 413, 415, 500): checked by superclient_built_in_errors_are_problems"),
    ]);
}

/// The answers the superclient gives by itself under /api (no route ran) are problems too.
#[tokio::test]
async fn superclient_built_in_errors_are_problems() {
    let _serial = serial().await;
    let bank = Bank::start(&[("users", 1), ("bfaf", 1)], &[]).await;
    let base = bank.api().base;
    let http = reqwest::Client::new();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join("services/openapi/bank.json")).unwrap()).unwrap();
    let c = Contract::new("bank", file);
    let cases = [
        read(http.get(format!("{base}/api/nope"))).await,
        read(http.delete(format!("{base}/api/accounts"))).await,
        read(http.post(format!("{base}/api/users")).header("content-type", "text/plain").body("x")).await,
        read(http.post(format!("{base}/api/users")).header("content-type", "application/json").body("{nope")).await,
        read(http.post(format!("{base}/api/users")).header("content-type", "application/json").body(format!("\"{}\"", "x".repeat(2 << 20)))).await,
    ];
    for (answer, status) in cases.iter().zip([404, 405, 415, 400, 413]) {
        assert_eq!(answer.status, status, "{}", answer.body);
        c.check_problem(answer);
    }
}
