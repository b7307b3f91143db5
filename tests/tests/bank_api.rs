//! The bank's API through the bfaf (ui/API-ASSUMPTIONS.md, issue 4), every endpoint and every
//! error case, on real servers and real superclient processes running services/*.lua.

mod bank_common;

use bank_common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;

const MAX: i64 = 100_000_000_000;

#[tokio::test]
async fn customers_accounts_money_and_errors() {
    let _serial = serial().await;
    let bank = Bank::start(&[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)], &[]).await;
    let api = bank.api();

    // ---- the UI's files, with the single-page fallback; /api never falls back
    let r = reqwest::get(format!("{}/", api.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(r.text().await.unwrap().contains("Sequent Bank"));
    let r = reqwest::get(format!("{}/accounts/acc-1?x=1", api.base)).await.unwrap();
    assert_eq!(r.status(), 200, "deep links answer index.html");
    assert!(r.text().await.unwrap().contains("Sequent Bank"));
    let r = reqwest::get(format!("{}/assets/app-1234.js", api.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let r = reqwest::get(format!("{}/assets/..%2f..%2fetc%2fpasswd", api.base)).await.unwrap();
    assert!(!r.text().await.unwrap().contains("root:"), "no escape from the UI directory");
    let (s, v) = api.call("GET", "/api/nope", None, None, &[]).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, _) = api.call("DELETE", "/api/accounts", None, None, &[]).await;
    assert_eq!(s, 405);
    // The gateway's policy (services/policy.json): a service appends only its own types.
    for (service, event_type) in [("bfaf", "AccountCredited"), ("users", "AccountCredited"), ("transfers", "AccountDebited")] {
        let body = json!({ "events": [{ "type": event_type, "key": "acc-1", "expect": "any", "data": {} }] });
        let reply = bank.admin.request(format!("sequent.append.{service}"), body.to_string().into()).await.unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert!(reply["error"]["message"].as_str().is_some_and(|m| m.contains("may not append")), "{service} {event_type}: {reply}");
    }

    // ---- sign-up
    let (s, v) = api.call("POST", "/api/users", None, Some(json!({ "username": "Alice.B", "password": "correct horse" })), &[]).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.call("POST", "/api/users", None, Some(json!({ "username": "alice.b", "password": "another one" })), &[]).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("username taken")), "names are unique, whatever the case: {v}");
    for (body, why) in [
        (json!({ "username": "al", "password": "correct horse" }), "too short a name"),
        (json!({ "username": "a".repeat(33), "password": "correct horse" }), "too long a name"),
        (json!({ "username": "al ice", "password": "correct horse" }), "a space"),
        (json!({ "username": "al*ce", "password": "correct horse" }), "a wildcard"),
        (json!({ "username": "bob", "password": "short" }), "too short a password"),
        (json!({ "username": "bob", "password": "x".repeat(129) }), "too long a password"),
        (json!({ "username": "bob" }), "no password"),
        (json!({ "password": "correct horse" }), "no name"),
        (json!({ "username": 42, "password": "correct horse" }), "a number"),
        (json!("bob"), "not an object"),
    ] {
        let (s, v) = api.call("POST", "/api/users", None, Some(body), &[]).await;
        assert_eq!(s, 400, "{why}: {v}");
        assert!(v["detail"].as_str().is_some_and(|m| !m.is_empty()), "{why}: a message for a person: {v}");
    }
    let r = api.http.post(format!("{}/api/users", api.base)).body("username=bob").header("content-type", "application/x-www-form-urlencoded").send().await.unwrap();
    assert_eq!(r.status(), 415);

    // ---- log-in
    let (s, v) = api.call("POST", "/api/sessions", None, Some(json!({ "username": "ALICE.B", "password": "correct horse" })), &[]).await;
    assert_eq!(s, 200, "{v}");
    let alice = v["token"].as_str().unwrap().to_string();
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    for body in [
        json!({ "username": "alice.b", "password": "wrong horse" }),
        json!({ "username": "nobody", "password": "correct horse" }),
    ] {
        let (s, v) = api.call("POST", "/api/sessions", None, Some(body), &[]).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("invalid credentials")), "{v}");
    }
    let (s, _) = api.call("POST", "/api/sessions", None, Some(json!({ "username": "alice.b" })), &[]).await;
    assert_eq!(s, 400);
    let bob = api.customer("bob").await;

    // ---- authentication on every customer call
    let forged = format!("{}x", &alice[..alice.len() - 1]);
    for token in [None, Some("garbage"), Some(forged.as_str())] {
        for (method, path) in [
            ("GET", "/api/accounts"),
            ("POST", "/api/accounts"),
            ("GET", "/api/accounts/acc-1"),
            ("GET", "/api/accounts/acc-1/statement"),
            ("POST", "/api/accounts/acc-1/deposits"),
            ("POST", "/api/accounts/acc-1/withdrawals"),
            ("POST", "/api/transfers"),
            ("GET", "/api/transfers/tr-1"),
            ("GET", "/api/transfers?account=acc-1"),
        ] {
            let (s, v) = api.call(method, path, token, Some(json!({ "amount_cents": 1 })), &[]).await;
            assert_eq!(s, 401, "{method} {path} with {token:?}: {v}");
        }
    }

    // ---- accounts
    let (s, v) = api.get("/api/accounts", &alice).await;
    assert_eq!((s, v.clone()), (200, json!([])), "{v}");
    let (s, v) = api.post("/api/accounts", &alice, json!({})).await;
    assert_eq!(s, 201, "{v}");
    let a1 = v["account_id"].as_str().unwrap().to_string();
    assert!(a1.starts_with("acc-"));
    assert_eq!((v["balance_cents"].as_i64(), v["version"].as_i64()), (Some(0), Some(0)));
    // Read-your-writes: listed at once, in opening order; an empty body is fine too.
    let r = api.http.post(format!("{}/api/accounts", api.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let a2 = r.json::<Value>().await.unwrap()["account_id"].as_str().unwrap().to_string();
    let (s, v) = api.get("/api/accounts", &alice).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|a| a["account_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    let (s, v) = api.get(&format!("/api/accounts/{a1}"), &alice).await;
    assert_eq!((s, v["account_id"].as_str(), v["balance_cents"].as_i64()), (200, Some(a1.as_str()), Some(0)), "{v}");
    let b1 = api.open_account(&bob).await;
    // Another user's account, or none: 404 (it does not reveal that the account exists).
    for path in [format!("/api/accounts/{b1}"), "/api/accounts/acc-0000".into(), format!("/api/accounts/{b1}/statement"), "/api/accounts/x/statement".into()] {
        let (s, v) = api.get(&path, &alice).await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    let (_, v) = api.get("/api/accounts", &bob).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "bob sees only his account: {v}");
    // The same Idempotency-Key opens one account only.
    let h = [("idempotency-key", "open-1")];
    let (s1, v1) = api.call("POST", "/api/accounts", Some(&bob), Some(json!({})), &h).await;
    let (s2, v2) = api.call("POST", "/api/accounts", Some(&bob), Some(json!({})), &h).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1["account_id"], v2["account_id"]);
    let (_, v) = api.get("/api/accounts", &bob).await;
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");

    // ---- deposits
    let (s, v) = api.post(&format!("/api/accounts/{a1}/deposits"), &alice, json!({ "amount_cents": 10_000 })).await;
    assert_eq!((s, v["balance_cents"].as_i64(), v["version"].as_i64()), (201, Some(10_000), Some(1)), "{v}");
    for amount in [json!(0), json!(-5), json!(1.5), json!("100"), json!(null), json!(MAX + 1), json!(1e3)] {
        let (s, v) = api.post(&format!("/api/accounts/{a1}/deposits"), &alice, json!({ "amount_cents": amount })).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("invalid amount")), "deposit of {amount}: {v}");
        let (s, v) = api.post(&format!("/api/accounts/{a1}/withdrawals"), &alice, json!({ "amount_cents": amount })).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("invalid amount")), "withdrawal of {amount}: {v}");
    }
    let (s, v) = api.post(&format!("/api/accounts/{a1}/deposits"), &alice, json!({})).await;
    assert_eq!(s, 400, "{v}");
    // Into someone else's account: refused (404), nothing written.
    let (s, v) = api.post(&format!("/api/accounts/{b1}/deposits"), &alice, json!({ "amount_cents": 100 })).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = api.post(&format!("/api/accounts/{b1}/withdrawals"), &alice, json!({ "amount_cents": 100 })).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = api.post("/api/accounts/acc-0000/deposits", &alice, json!({ "amount_cents": 100 })).await;
    assert_eq!(s, 404);
    assert_eq!(bank.key_events(&b1).await.len(), 1, "bob's account only holds its opening");
    // A retried deposit (same Idempotency-Key) is applied once and answers the same.
    let h = [("idempotency-key", "dep-42")];
    let (s1, v1) = api.call("POST", &format!("/api/accounts/{a1}/deposits"), Some(&alice), Some(json!({ "amount_cents": 500 })), &h).await;
    let (s2, v2) = api.call("POST", &format!("/api/accounts/{a1}/deposits"), Some(&alice), Some(json!({ "amount_cents": 500 })), &h).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!((v1["version"].clone(), v1["balance_cents"].clone()), (json!(2), json!(10_500)));
    assert_eq!(v1["version"], v2["version"], "{v1} vs {v2}");
    assert_eq!(v1["balance_cents"], v2["balance_cents"]);

    // ---- withdrawals: to exactly zero is fine, below zero is a 422 with the balance
    let (s, v) = api.post(&format!("/api/accounts/{a1}/withdrawals"), &alice, json!({ "amount_cents": 10_501 })).await;
    assert_eq!((s, v["code"].as_str(), v["balance_cents"].as_i64()), (422, Some("insufficient funds"), Some(10_500)), "{v}");
    assert_eq!((v["type"].as_str(), v["status"].as_u64()), (Some("urn:sequent:problem:insufficient-funds"), Some(422)), "a problem: {v}");
    assert!(v["detail"].is_string());
    let (s, v) = api.post(&format!("/api/accounts/{a1}/withdrawals"), &alice, json!({ "amount_cents": 10_500 })).await;
    assert_eq!((s, v["balance_cents"].as_i64(), v["version"].as_i64()), (201, Some(0), Some(3)), "{v}");
    let (s, v) = api.post(&format!("/api/accounts/{a1}/withdrawals"), &alice, json!({ "amount_cents": 1 })).await;
    assert_eq!(s, 422, "{v}");
    // Over the balance limit.
    let (s, v) = api.post(&format!("/api/accounts/{a2}/deposits"), &alice, json!({ "amount_cents": MAX })).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = api.post(&format!("/api/accounts/{a2}/deposits"), &alice, json!({ "amount_cents": 1 })).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("balance limit exceeded")), "{v}");

    // ---- statements: newest first, paged with an opaque cursor
    for cents in [100, 200, 300] {
        api.deposit(&alice, &a1, cents).await;
    }
    let (s, v) = api.get(&format!("/api/accounts/{a1}/statement?limit=2"), &alice).await;
    assert_eq!(s, 200, "{v}");
    let page1 = v["entries"].as_array().unwrap().clone();
    assert_eq!(page1.iter().map(|e| e["amount_cents"].as_i64().unwrap()).collect::<Vec<_>>(), [300, 200]);
    assert_eq!(page1[0]["kind"], "deposit");
    assert_eq!(page1[0]["balance_cents"], 600);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let (_, v) = api.get(&format!("/api/accounts/{a1}/statement?limit=2&cursor={cursor}"), &alice).await;
    let page2: Vec<i64> = v["entries"].as_array().unwrap().iter().map(|e| e["amount_cents"].as_i64().unwrap()).collect();
    assert_eq!(page2, [100, -10_500]);
    let full = api.statement(&alice, &a1).await;
    assert_eq!(full.iter().map(|e| e["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["deposit", "deposit", "deposit", "withdrawal", "deposit", "deposit"]);
    assert_statement_matches_events(&a1, &full, &bank.key_events(&a1).await);
    for q in ["limit=0", "limit=abc", "limit=501", "cursor=x", "cursor=99"] {
        let (s, v) = api.get(&format!("/api/accounts/{a1}/statement?{q}"), &alice).await;
        assert_eq!(s, 400, "{q}: {v}");
    }

    // ---- transfers: 202 then completed, or failed with the reason
    let (s, v) = api.post("/api/transfers", &alice, json!({ "from_account": a1, "to_account": b1, "amount_cents": 250 })).await;
    assert_eq!((s, v["status"].as_str()), (202, Some("pending")), "{v}");
    let t_ok = v["transfer_id"].as_str().unwrap().to_string();
    let t = api.finished_transfer(&alice, &t_ok).await;
    assert_eq!((t["status"].as_str(), t["from_account"].as_str(), t["to_account"].as_str(), t["amount_cents"].as_i64()), (Some("completed"), Some(a1.as_str()), Some(b1.as_str()), Some(250)), "{t}");
    assert!(t.get("reason").is_none_or(Value::is_null), "{t}");
    let (_, v) = api.get(&format!("/api/accounts/{b1}"), &bob).await;
    assert_eq!(v["balance_cents"], 250, "{v}");
    let (_, v) = api.get(&format!("/api/accounts/{a1}"), &alice).await;
    assert_eq!(v["balance_cents"], 350, "{v}");
    // The recipient sees it too; a stranger does not.
    let (s, _) = api.get(&format!("/api/transfers/{t_ok}"), &bob).await;
    assert_eq!(s, 200);
    let carol = api.customer("carol").await;
    let (s, _) = api.get(&format!("/api/transfers/{t_ok}"), &carol).await;
    assert_eq!(s, 404);
    let (s, _) = api.get("/api/transfers/tr-unknown", &alice).await;
    assert_eq!(s, 404);

    // Its events: one correlation (the transfer id), a complete causal chain.
    let events = bank.correlation_events(&t_ok).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted"], "{events:?}");
    assert!(events[0]["causation"].is_null());
    for w in events.windows(2) {
        assert_eq!(w[1]["causation"], w[0]["id"], "{w:?}");
        assert_eq!(w[1]["correlation"], json!(t_ok));
    }
    assert_eq!(events[1]["key"], json!(a1));
    assert_eq!(events[1]["data"]["transfer_id"], json!(t_ok));
    assert_eq!(events[2]["key"], json!(b1));

    let mut failed = Vec::new();
    for (to, amount, reason) in [
        (b1.clone(), 1_000_000, "insufficient funds"),
        ("acc-00000000".to_string(), 10, "unknown account"),
        ("not an account".to_string(), 10, "unknown account"),
        (a1.clone(), 10, "same account"),
    ] {
        let (s, v) = api.post("/api/transfers", &alice, json!({ "from_account": a1, "to_account": to.trim(), "amount_cents": amount })).await;
        if to.contains(' ') {
            assert_eq!(s, 400, "spaces cannot be in an account id: {v}");
            continue;
        }
        assert_eq!(s, 202, "{v}");
        let id = v["transfer_id"].as_str().unwrap().to_string();
        let t = api.finished_transfer(&alice, &id).await;
        assert_eq!((t["status"].as_str(), t["reason"].as_str()), (Some("failed"), Some(reason)), "{t}");
        let events = bank.correlation_events(&id).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["TransferRequested", "TransferFailed"], "{reason}: {events:?}");
        assert_eq!(events[1]["causation"], events[0]["id"]);
        failed.push(id);
    }
    // The destination refuses the credit (it would pass the balance limit): the debit is
    // reversed and the transfer fails with the reason.
    let (s, v) = api.post("/api/transfers", &alice, json!({ "from_account": a1, "to_account": a2, "amount_cents": 50 })).await;
    assert_eq!(s, 202, "{v}");
    let t_back = v["transfer_id"].as_str().unwrap().to_string();
    let t = api.finished_transfer(&alice, &t_back).await;
    assert_eq!((t["status"].as_str(), t["reason"].as_str()), (Some("failed"), Some("balance limit exceeded")), "{t}");
    let events = bank.correlation_events(&t_back).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["TransferRequested", "AccountDebited", "AccountCredited", "TransferFailed"], "{events:?}");
    assert_eq!((events[2]["key"].as_str(), events[2]["data"]["reason"].as_str()), (Some(a1.as_str()), Some("refund")));
    let kinds: Vec<String> = api.statement(&alice, &a1).await.iter().take(2).map(|e| e["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["transfer_refund", "transfer_out"]);
    let (_, v) = api.get(&format!("/api/accounts/{a1}"), &alice).await;
    assert_eq!(v["balance_cents"], 350, "the refund gave the money back: {v}");

    // Transfer errors answered at once.
    for (body, status) in [
        (json!({ "from_account": a1, "to_account": b1, "amount_cents": 0 }), 400),
        (json!({ "from_account": a1, "to_account": b1, "amount_cents": 2.5 }), 400),
        (json!({ "from_account": a1, "to_account": b1 }), 400),
        (json!({ "from_account": a1, "amount_cents": 5 }), 400),
        (json!({ "to_account": b1, "amount_cents": 5 }), 400),
        (json!({ "from_account": b1, "to_account": a1, "amount_cents": 5 }), 404),
        (json!({ "from_account": "acc-0000", "to_account": a1, "amount_cents": 5 }), 404),
    ] {
        let (s, v) = api.post("/api/transfers", &alice, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, v) = api.get(&format!("/api/transfers?account={a1}"), &alice).await;
    assert_eq!(s, 200, "{v}");
    let listed: Vec<&str> = v.as_array().unwrap().iter().map(|t| t["transfer_id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = vec![t_back.as_str()];
    expected.extend(failed.iter().rev().map(String::as_str));
    expected.push(t_ok.as_str());
    assert_eq!(listed, expected, "newest first");
    let (s, _) = api.get(&format!("/api/transfers?account={b1}"), &alice).await;
    assert_eq!(s, 404);
    let (s, _) = api.get("/api/transfers", &alice).await;
    assert_eq!(s, 400);
    let (_, v) = api.get(&format!("/api/transfers?account={b1}"), &bob).await;
    assert_eq!(v.as_array().unwrap().len(), 2, "bob sees the transfers to his account: {v}");
}

async fn ws(url: &str) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens").0
}

/// The next text message, or the close code.
async fn next(sock: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Result<Value, u16> {
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

#[tokio::test]
async fn live_updates_and_the_operators_explorer() {
    let _serial = serial().await;
    let bank = Bank::start(
        &[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)],
        &[("accounts", &["--max-attempts", "2", "--retry-delay", "50ms"])],
    )
    .await;
    let api = bank.api();
    let ws_base = api.base.replace("http://", "ws://");
    let dave = api.customer("dave").await;
    let erin = api.customer("erin").await;
    let d1 = api.open_account(&dave).await;
    let e1 = api.open_account(&erin).await;
    api.deposit(&erin, &e1, 1_000).await;

    // ---- customers' live updates
    let mut bad = ws(&format!("{ws_base}/api/live?token=nope")).await;
    assert_eq!(next(&mut bad).await, Err(4401));
    let mut bad = ws(&format!("{ws_base}/api/live")).await;
    assert_eq!(next(&mut bad).await, Err(4401));
    let mut live = ws(&format!("{ws_base}/api/live?token={dave}")).await;
    let mut other = ws(&format!("{ws_base}/api/live?token={erin}")).await;
    // The first message says the socket is subscribed.
    assert_eq!(next(&mut live).await.unwrap()["kind"], "hello");
    assert_eq!(next(&mut other).await.unwrap()["kind"], "hello");
    let (s, v) = api.post(&format!("/api/accounts/{d1}/deposits"), &dave, json!({ "amount_cents": 700 })).await;
    assert_eq!(s, 201, "{v}");
    let m = next(&mut live).await.unwrap();
    assert_eq!(m, json!({ "kind": "account", "account_id": d1, "balance_cents": 700, "version": 1 }));
    let m = next(&mut live).await.unwrap();
    assert_eq!((m["kind"].as_str(), m["entry"]["entry_id"].clone()), (Some("statement_entry"), v["entry"]["entry_id"].clone()), "{m}");
    assert_eq!(m["entry"]["amount_cents"], 700);
    // A new account joins the socket's topics at once.
    let d2 = api.open_account(&dave).await;
    let m = next(&mut live).await.unwrap();
    assert_eq!(m, json!({ "kind": "account", "account_id": d2, "balance_cents": 0, "version": 0 }));
    let (s, v) = api.post("/api/transfers", &dave, json!({ "from_account": d1, "to_account": d2, "amount_cents": 200 })).await;
    assert_eq!(s, 202, "{v}");
    let tid = v["transfer_id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &Value| m["kind"] == "transfer" && m["status"] == "completed") {
        seen.push(next(&mut live).await.unwrap());
    }
    let statuses: Vec<&str> = seen.iter().filter(|m| m["kind"] == "transfer").map(|m| m["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"pending"));
    assert!(seen.iter().all(|m| m["kind"] != "transfer" || m["transfer_id"] == json!(tid)));
    assert!(seen.iter().any(|m| m["kind"] == "account" && m["account_id"] == json!(d2) && m["balance_cents"] == 200), "{seen:?}");
    assert!(seen.iter().any(|m| m["kind"] == "account" && m["account_id"] == json!(d1) && m["balance_cents"] == 500), "{seen:?}");
    // Erin's socket got none of Dave's updates: her next message is about her own deposit.
    api.deposit(&erin, &e1, 5).await;
    let m = next(&mut other).await.unwrap();
    assert_eq!((m["account_id"].as_str(), m["balance_cents"].as_i64()), (Some(e1.as_str()), Some(1_005)), "{m}");
    live.close(None).await.ok();
    // With Dave's socket gone, no socket listens to his accounts: the bfaf skips the money
    // listener of his deposit (it declared its topics) instead of running it for nobody.
    let metric = |name: &'static str| {
        let url = format!("{}/metrics", bank.of("bfaf")[0].metrics);
        async move {
            let text = reqwest::get(url).await.unwrap().text().await.unwrap();
            text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>()
        }
    };
    let skips = || metric("sequent_live_listener_skips_total");
    sequent_tests::wait_until("the bfaf to drop Dave's socket", Duration::from_secs(10), || async { metric("sequent_websockets").await == 1.0 })
        .await
        .unwrap();
    let before = skips().await;
    api.deposit(&dave, &d2, 1).await;
    api.deposit(&erin, &e1, 1).await;
    loop {
        let m = next(&mut other).await.unwrap();
        assert_eq!(m["account_id"].as_str(), Some(e1.as_str()), "Erin gets only hers: {m}");
        if m["kind"] == "account" && m["balance_cents"] == 1_006 {
            break;
        }
    }
    assert!(skips().await > before, "Dave's deposit ran its live listener with no socket listening");

    // ---- operators: the platform's explorer, with its own log-in (the bank says where it is)
    let (s, v) = api.call("GET", "/api/explorer", None, None, &[]).await;
    assert_eq!((s, v["url"].as_str()), (200, Some(format!("{}/explorer", bank.explorer_url.clone().unwrap())).as_deref()), "{v}");
    let (s, _) = api.call("POST", "/api/admin/sessions", None, Some(json!({ "username": ADMIN_USER, "password": ADMIN_PASSWORD })), &[]).await;
    assert!(matches!(s, 404 | 405), "the bank has no operators' API any more: {s}");
    let bank_ws = ws_base.clone();
    let api = bank.explorer();
    let ws_base = api.base.replace("http://", "ws://");
    let (s, _) = api.call("POST", "/api/admin/sessions", None, Some(json!({ "username": ADMIN_USER, "password": "wrong" })), &[]).await;
    assert_eq!(s, 401);
    let (s, _) = api.call("POST", "/api/admin/sessions", None, Some(json!({ "username": "admin", "password": ADMIN_PASSWORD })), &[]).await;
    assert_eq!(s, 401);
    let admin = api.admin_token().await;
    for (method, path) in [
        ("GET", "/api/admin/events"),
        ("GET", "/api/admin/keys/acc-1/events"),
        ("GET", "/api/admin/correlations/x/events"),
        ("GET", "/api/admin/services"),
        ("GET", "/api/admin/parked"),
        ("POST", "/api/admin/parked/accounts/acc-1/release"),
        ("POST", "/api/admin/services/accounts/rebuild"),
        ("GET", "/api/admin/services/accounts/rebuild"),
    ] {
        for token in [None, Some(dave.as_str())] {
            let (s, v) = api.call(method, path, token, None, &[]).await;
            assert_eq!(s, 401, "{method} {path} as {token:?}: {v}");
        }
    }
    // A customer token does not open the admin socket, nor an admin token the customer's.
    let mut sock = ws(&format!("{ws_base}/api/admin/live?token={dave}")).await;
    assert_eq!(next(&mut sock).await, Err(4401));
    let mut sock = ws(&format!("{bank_ws}/api/live?token={admin}")).await;
    assert_eq!(next(&mut sock).await, Err(4401));

    let (s, v) = api.get("/api/admin/events?type=UserRegistered&limit=1", &admin).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"][0]["data"]["username"], "dave");
    assert_eq!(v["events"][0]["data"]["password_hash"], "[redacted]", "operators never see password hashes");
    // Readers of the stream itself (analysts) get the hash sealed under the users service's
    // key: nothing to guess offline.
    let stored = bank.key_events("user-dave").await;
    let hash = stored[0]["data"]["password_hash"].as_str().unwrap_or_default();
    assert!(hash.starts_with("sealed:v1:") && !hash.contains("argon2"), "{hash}");
    let next_from = v["next_from_seq"].as_u64().expect("more pages");
    let (_, v) = api.get(&format!("/api/admin/events?type=UserRegistered&from_seq={next_from}"), &admin).await;
    assert_eq!(v["events"][0]["data"]["username"], "erin");
    assert_eq!(v["next_from_seq"], Value::Null);
    let (s, v) = api.get("/api/admin/events?type=Bad.Type", &admin).await;
    assert_eq!(s, 400, "{v}");
    let (_, v) = api.get(&format!("/api/admin/events?key={d1}"), &admin).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 3, "{v}");
    let (_, v) = api.get(&format!("/api/admin/keys/{d1}/events"), &admin).await;
    let versions: Vec<u64> = v["events"].as_array().unwrap().iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [0, 1, 2]);
    let (_, v) = api.get(&format!("/api/admin/correlations/{tid}/events"), &admin).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 4, "{v}");

    let (s, v) = api.get("/api/admin/services", &admin).await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    for name in ["accounts", "bfaf", "transfers", "users"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let accounts = v.as_array().unwrap().iter().find(|s| s["service"] == "accounts").unwrap();
    assert_eq!(accounts["instances"][0]["instance"], "accounts-1");
    assert_eq!(accounts["instances"][0]["partitions"].as_array().unwrap().len(), 16);
    assert!(accounts["instances"][0]["last_seen"].as_str().unwrap().ends_with('Z'));
    assert!(accounts["consumer_lag"].is_u64());

    // A poison event (a credit to an account nobody opened) parks its key; operators see it
    // and may release it (it fails again and stays parked).
    let (s, _) = api.get("/api/admin/parked", &admin).await;
    assert_eq!(s, 200);
    let body = json!({ "events": [{ "type": "AccountCredited", "key": "acc-deadbeef", "expect": "any",
        "data": { "account_id": "acc-deadbeef", "amount_cents": 5, "balance_cents": 5, "reason": "deposit" } }] });
    let r = reqwest::Client::new().post(format!("{}/v1/events", bank.gateway_http)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let found = std::sync::Mutex::new(Value::Null);
    sequent_tests::wait_until("acc-deadbeef to be parked", Duration::from_secs(30), || async {
        let (_, v) = api.get("/api/admin/parked", &admin).await;
        *found.lock().unwrap() = v.clone();
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .await
    .unwrap();
    let parked = found.into_inner().unwrap();
    let p = &parked[0];
    assert_eq!((p["service"].as_str(), p["key"].as_str()), (Some("accounts"), Some("acc-deadbeef")), "{parked}");
    assert!(p["error"].as_str().unwrap().contains("never opened"), "{p}");
    assert!(p["seq"].is_u64() && p["event_id"].is_string() && p["parked_at"].is_string(), "{p}");
    let (s, v) = api.post("/api/admin/parked/accounts/acc-deadbeef/release", &admin, json!({})).await;
    assert_eq!(s, 202, "{v}");
    let (s, _) = api.post("/api/admin/parked/accounts/acc-other/release", &admin, json!({})).await;
    assert_eq!(s, 404);
    let (s, _) = api.post("/api/admin/parked/nosuch/acc-deadbeef/release", &admin, json!({})).await;
    assert_eq!(s, 404);

    // A rebuild from the explorer: one instance of the service runs it and reports progress
    // until the rebuilt state is swapped in.
    let (s, v) = api.get("/api/admin/services/transfers/rebuild", &admin).await;
    assert_eq!(s, 404, "no rebuild asked for yet: {v}");
    let finished = std::sync::Mutex::new(Value::Null);
    let rebuild_finished = || async {
        sequent_tests::wait_until("the requested rebuild to finish", Duration::from_secs(60), || async {
            let (_, v) = api.get("/api/admin/services/transfers/rebuild", &admin).await;
            *finished.lock().unwrap() = v.clone();
            matches!(v["status"].as_str(), Some("done" | "failed"))
        })
        .await
        .unwrap()
    };
    // One rebuild at a time: a second request while the first waits or runs is refused. A
    // small state's rebuild can be taken and finished between the two requests (the instances
    // look for requests every 500 ms): then the second one was a new rebuild; try again.
    let mut refused = false;
    for _ in 0..5 {
        let (s, v) = api.post("/api/admin/services/transfers/rebuild", &admin, json!({})).await;
        assert_eq!((s, v["status"].as_str()), (202, Some("requested")), "{v}");
        let (s, v) = api.post("/api/admin/services/transfers/rebuild", &admin, json!({})).await;
        if s == 409 {
            refused = true;
            break;
        }
        assert_eq!(s, 202, "{v}");
        rebuild_finished().await;
        eprintln!("the first rebuild was taken and finished before the second request; again");
    }
    assert!(refused, "a second rebuild was never refused while one was requested or running");
    rebuild_finished().await;
    let r = finished.into_inner().unwrap();
    assert_eq!(r["status"], "done", "{r}");
    assert!(r["done"].as_u64().unwrap() > 0 && r["done"] == r["expected"], "{r}");
    assert!(r["instance"].as_str().unwrap().starts_with("transfers-"), "{r}");
    let (_, v) = api.get("/api/admin/services", &admin).await;
    let transfers = v.as_array().unwrap().iter().find(|s| s["service"] == "transfers").unwrap();
    assert_eq!(transfers["rebuild"]["status"], "done", "{transfers}");
    let (s, _) = api.post("/api/admin/services/nosuch/rebuild", &admin, json!({})).await;
    assert_eq!(s, 404);
    let (s, v) = api.post("/api/admin/services/explorer/rebuild", &admin, json!({})).await;
    assert_eq!(s, 404, "the explorer consumes no events, so it has nothing to rebuild: {v}");
    // The rebuilt state answers as before.
    let (s, v) = bank.api().get(&format!("/api/transfers/{tid}"), &dave).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("completed")), "{v}");

    // The operators' event tail: from a sequence, filtered, password hashes redacted.
    let mut tail = ws(&format!("{ws_base}/api/admin/live?token={admin}&types=UserRegistered&from_seq=1")).await;
    let m = next(&mut tail).await.unwrap();
    assert_eq!((m["type"].as_str(), m["data"]["password_hash"].as_str()), (Some("UserRegistered"), Some("[redacted]")), "{m}");
    let mut tail = ws(&format!("{ws_base}/api/admin/live?token={admin}&keys={e1}")).await;
    // Registered once its consumer exists; then a new event of that key arrives.
    let mut got = None;
    for _ in 0..20 {
        bank.api().deposit(&erin, &e1, 1).await;
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), next(&mut tail)).await {
            got = Some(m);
            break;
        }
    }
    let m = got.expect("the tail delivers new events of the key");
    assert_eq!((m["key"].as_str(), m["type"].as_str()), (Some(e1.as_str()), Some("AccountCredited")), "{m}");
    tail.send(tokio_tungstenite::tungstenite::Message::Close(None)).await.ok();
}

/// Twenty debits race for one balance that covers ten of them, through two bfaf and two
/// accounts instances, as withdrawals and as transfers (whose debit a saga handler decides):
/// exactly ten pass, the account ends at exactly zero, never below.
#[tokio::test]
async fn racing_debits_never_overdraw() {
    let _serial = serial().await;
    let bank = Bank::start(&[("users", 1), ("accounts", 2), ("transfers", 2), ("bfaf", 2)], &[]).await;
    let apis: Vec<Api> = bank.of("bfaf").iter().map(|i| Api::new(&i.url)).collect();
    let token = apis[0].customer("racer").await;
    let source = apis[0].open_account(&token).await;
    let sink = apis[0].open_account(&token).await;
    apis[0].deposit(&token, &source, 1_000).await;

    let requests = (0..20).map(|i| {
        let (api, token, source, sink) = (apis[i % 2].clone(), token.clone(), source.clone(), sink.clone());
        async move {
            if i % 2 == 0 {
                let (s, v) = api.post(&format!("/api/accounts/{source}/withdrawals"), &token, json!({ "amount_cents": 100 })).await;
                match s {
                    201 => true,
                    422 => false,
                    _ => panic!("withdrawal: {s} {v}"),
                }
            } else {
                let (s, v) = api.post("/api/transfers", &token, json!({ "from_account": source, "to_account": sink, "amount_cents": 100 })).await;
                assert_eq!(s, 202, "{v}");
                let t = api.finished_transfer(&token, v["transfer_id"].as_str().unwrap()).await;
                match (t["status"].as_str(), t["reason"].as_str()) {
                    (Some("completed"), _) => true,
                    (Some("failed"), Some("insufficient funds")) => false,
                    other => panic!("transfer: {other:?} {t}"),
                }
            }
        }
    });
    let passed = futures::future::join_all(requests).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(passed, 10, "exactly as many debits as the balance covers");
    let (_, a) = apis[1].get(&format!("/api/accounts/{source}"), &token).await;
    assert_eq!(a["balance_cents"], 0, "{a}");
    let statement = apis[1].statement(&token, &source).await;
    assert_statement_matches_events(&source, &statement, &bank.key_events(&source).await);
    assert_eq!(statement.len(), 11);
}
