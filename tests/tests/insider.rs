//! Issue 13, "nothing trusted by default, proven against an insider": each attack runs against
//! the real bank (nats-server, Redis, the gateway and superclient processes running
//! services/*.lua) and checks the refusal and that nothing changed (the stream's last sequence,
//! the balances), printing an `ATTACK:` line (RELIABILITY.md's rows are made from them).
//!
//! - log-in abuse: failed log-ins limited per user name and per client address (429 with
//!   Retry-After, also for the right password), the same answer and about the same time for an
//!   unknown name and a wrong password, common passwords refused, log-out revokes the token
//!   (also after the bfaf is restarted and rebuilt);
//! - scripts overreaching: `bus:env` of undeclared variables and of the superclient's secrets,
//!   `crypto.token` without the right, tokens minted by another service, a transfer to
//!   `user:<someone>`, the accounts routes called without or with another owner, a transfer
//!   from someone else's account straight at the transfers service;
//! - credential material: password hashes in the stream are sealed (no Argon2 string readable),
//!   another service cannot open them, a rebuild restores log-in, older peppered hashes still
//!   verify.
//!
//! The Lua sandbox's C-function and pattern bombs are in superclient_sandbox.rs.

mod bank_common;

use bank_common::*;
use futures::{SinkExt, StreamExt};
use sequent_tests::{binary, wait_until, Child};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The failure window the users service runs with here (seconds): short, so that the test can
/// see a lock end.
// Long enough that 25 log-ins (each an Argon2 hash) fit in one window on a loaded 2-core CI machine.
const WINDOW_S: u64 = 12;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.expect("the WebSocket opens").0
}

/// The next text message within `within`, the close code, or None when nothing came.
async fn next_within(sock: &mut Socket, within: Duration) -> Option<Result<Value, u16>> {
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, sock.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(Ok(serde_json::from_str(&t).unwrap())),
            Ok(Some(Ok(Message::Close(frame)))) => return Some(Err(frame.map_or(1005, |f| u16::from(f.code)))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return Some(Err(1006)),
        }
    }
}

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn attack(&mut self, line: String) {
        eprintln!("ATTACK: {line}");
        self.lines.push(format!("ATTACK: {line}"));
    }
}

/// What must not change: the stream's last sequence and the balances of the accounts.
async fn snapshot(bank: &Bank, api: &Api, owners: &[(String, String)]) -> (u64, Vec<Value>) {
    let mut balances = Vec::new();
    for (token, account) in owners {
        let (s, v) = api.get(&format!("/api/accounts/{account}"), token).await;
        assert_eq!(s, 200, "{v}");
        balances.push(v["balance_cents"].clone());
    }
    (bank.last_seq().await, balances)
}

/// A superclient running one of the insider scripts of tests/lua with the bank's environment.
async fn insider(bank: &Bank, script: &str, name: &str, extra: &[(&str, &str)]) -> (Child, String) {
    let path = sequent_tests::repo_root().join("tests/lua").join(script);
    let path = path.to_string_lossy().to_string();
    let mut env = bank.env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut child = Child::spawn(name, binary("superclient"), &[path.as_str(), "--instance", name], &env).unwrap();
    let line = child.wait_for_line("http listening on", Duration::from_secs(60)).await.unwrap();
    let addr = line.rsplit("http listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
    child.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    (child, format!("http://{addr}"))
}

async fn http_json(method: &str, url: &str, body: Option<Value>) -> (u16, Value, reqwest::header::HeaderMap) {
    let client = reqwest::Client::new();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
}

async fn login(api: &Api, username: &str, password: &str) -> (u16, Value, Option<String>) {
    let r = api
        .http
        .post(format!("{}/api/sessions", api.base))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body, retry)
}

/// Waits until the users service's failure windows of this test client have ended (a log-in
/// with the right password succeeds again).
async fn wait_unlocked(api: &Api, username: &str, password: &str) -> String {
    let token = std::sync::Mutex::new(String::new());
    wait_until("the failure window to end", Duration::from_secs(WINDOW_S * 5), || async {
        let (s, v, _) = login(api, username, password).await;
        if s == 200 {
            *token.lock().unwrap() = v["token"].as_str().unwrap().to_string();
        }
        s == 200
    })
    .await
    .unwrap();
    token.into_inner().unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insider_and_a_customer_gain_nothing() {
    let _serial = serial().await;
    // The users service reads these (it declares them); the window is short for the test.
    std::env::set_var("SEQUENT_USERS_FAILURE_WINDOW_S", WINDOW_S.to_string());
    std::env::set_var("SEQUENT_USERS_MAX_FAILURES", "5");
    std::env::set_var("SEQUENT_USERS_MAX_CLIENT_FAILURES", "20");
    // What an insider would love to read: the bfaf's and the gateway's secrets, in every
    // superclient's environment.
    std::env::set_var("SEQUENT_GATEWAY_TOKEN", "gateway-token-an-insider-must-not-read");
    let mut bank = Bank::start(&[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)], &[]).await;
    let api = bank.api();
    let mut r = Report { lines: Vec::new() };
    let alice = api.customer("alice").await;
    let bob = api.customer("bob").await;
    let a = api.open_account(&alice).await;
    let b = api.open_account(&bob).await;
    api.deposit(&alice, &a, 10_000).await;
    api.deposit(&bob, &b, 5_000).await;
    bank.wait_settled(Duration::from_secs(30)).await;
    let owners = vec![(alice.clone(), a.clone()), (bob.clone(), b.clone())];
    let accounts_url = bank.of("accounts")[0].url.clone();
    let transfers_url = bank.of("transfers")[0].url.clone();
    let ws_base = api.base.replacen("http", "ws", 1);

    // ---- credential material: sealed in the stream, unreadable by other services
    let registered = bank.events_of_type("UserRegistered").await;
    assert_eq!(registered.len(), 2, "{registered:?}");
    for e in &registered {
        let hash = e["data"]["password_hash"].as_str().unwrap();
        assert!(hash.starts_with("sealed:v1:") && !hash.contains("argon2"), "a readable hash in the stream: {e}");
    }
    r.attack(format!(
        "credential material: UserRegistered as any reader of the stream gets it (gateway query) -> password_hash is sealed:v1:... ({} events, no Argon2 string), changed: nothing",
        registered.len()
    ));
    let (mut example, example_url) = insider(&bank, "insider.lua", "insider-1", &[("SEQUENT_INSIDER_NOTE", "note")]).await;
    let alice_hash = registered.iter().find(|e| e["key"] == "user-alice").unwrap()["data"]["password_hash"].clone();
    let (s, v, _) = http_json("POST", &format!("{example_url}/open"), Some(json!({ "sealed": alice_hash, "context": "user-alice" }))).await;
    assert_eq!((s, v["opened"].as_bool()), (200, Some(false)), "another service opened users' sealed hash: {v}");
    r.attack("credential material: another service's script calls crypto.open on alice's sealed hash -> cannot be opened (another service's key), changed: nothing".into());

    // ---- bus:env: only what the script declares; the superclient's secrets never
    let before = snapshot(&bank, &api, &owners).await;
    for name in ["SEQUENT_ADMIN_PASSWORD", "SEQUENT_GATEWAY_TOKEN", "SEQUENT_TOKEN_SECRET", "SEQUENT_PASSWORD_PEPPER", "SEQUENT_USERS_SEAL_KEY", "SEQUENT_NATS_PASSWORD"] {
        let (s, v, _) = http_json("GET", &format!("{example_url}/env/{name}"), None).await;
        assert_eq!(s, 500, "{name}: {v}");
        let line = example.wait_for_line(&format!("path=\"/env/{name}\""), Duration::from_secs(5)).await.unwrap();
        assert!(line.contains("did not declare") || line.contains("belongs to the superclient") || line.contains("seal keys belong"), "{line}");
        assert!(!line.contains(ADMIN_PASSWORD) && !line.contains("gateway-token-an-insider"), "{line}");
        r.attack(format!("script overreach: an undeclaring script calls bus:env({name:?}) -> 500 (error: not declared / the superclient's), changed: nothing"));
    }
    let (s, v, _) = http_json("GET", &format!("{example_url}/env/SEQUENT_INSIDER_NOTE"), None).await;
    assert_eq!((s, v["value"].as_str()), (200, Some("note")), "a declared variable is readable: {v}");
    let path = sequent_tests::repo_root().join("tests/lua/insider_secret.lua");
    let out = tokio::process::Command::new(binary("superclient")).arg(&path).envs(bank.env()).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("SEQUENT_TOKEN_SECRET") && text.contains("belongs to the superclient"), "{text}");
    r.attack("script overreach: a script declaring env = {\"SEQUENT_TOKEN_SECRET\"} -> refused at load, the superclient exits, changed: nothing".into());

    // ---- minting tokens: a right of the services that declare it, and tokens name their issuer
    let (s, _, _) = http_json("GET", &format!("{example_url}/mint"), None).await;
    assert_eq!(s, 500);
    let line = example.wait_for_line("path=\"/mint\"", Duration::from_secs(5)).await.unwrap();
    assert!(line.contains("does not mint tokens"), "{line}");
    r.attack("script overreach: crypto.token(..., {role = \"admin\"}) in a service without mints_tokens -> 500 (does not mint tokens), changed: nothing".into());
    let (_minter, minter_url) = insider(&bank, "insider_minter.lua", "insider-2", &[]).await;
    let (s, v, _) = http_json("GET", &format!("{minter_url}/mint/operator/operator:operator"), None).await;
    assert_eq!(s, 200, "{v}");
    let forged_admin = v["token"].as_str().unwrap().to_string();
    let (s, v, _) = http_json("GET", &format!("{minter_url}/mint/customer/bob"), None).await;
    assert_eq!(s, 200, "{v}");
    let forged_bob = v["token"].as_str().unwrap().to_string();
    let (s, _) = bank.explorer().get("/api/admin/services", &forged_admin).await;
    assert_eq!(s, 401, "the explorer took another service's operator token");
    r.attack("script overreach: a service that may mint tokens mints {role = \"operator\"} -> explorer GET /api/admin/services 401 (issuer is not the explorer), changed: nothing".into());
    let before_b = snapshot(&bank, &api, &owners).await;
    let (s, _) = api.post(&format!("/api/accounts/{b}/withdrawals"), &forged_bob, json!({ "amount_cents": 100 })).await;
    assert_eq!(s, 401, "the bfaf took another service's customer token");
    assert_eq!(snapshot(&bank, &api, &owners).await, before_b);
    r.attack("script overreach: the same service mints {role = \"customer\", sub = \"bob\"} -> bfaf withdrawal from bob's account 401 (issuer is not users), changed: nothing".into());
    assert_eq!(snapshot(&bank, &api, &owners).await, before, "the script attacks changed something");

    // ---- bank destinations are account ids: user:<name> is never reachable
    let mut bob_live = ws(&format!("{ws_base}/api/live?token={bob}")).await;
    assert_eq!(next_within(&mut bob_live, Duration::from_secs(10)).await.unwrap().unwrap()["kind"], "hello");
    let before = snapshot(&bank, &api, &owners).await;
    for to in ["user:bob", "user:alice", "bob", "acc-", "ACC-1234", "acc-12g4"] {
        let (s, v) = api.post("/api/transfers", &alice, json!({ "from_account": a, "to_account": to, "amount_cents": 100 })).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("invalid account")), "to {to}: {v}");
        let (s, v, _) = http_json(
            "POST",
            &format!("{transfers_url}/transfers"),
            Some(json!({ "from_account": a, "to_account": to, "amount_cents": 100, "requested_by": "alice" })),
        )
        .await;
        assert_eq!(s, 400, "transfers route, to {to}: {v}");
        assert_eq!(snapshot(&bank, &api, &owners).await, before);
        r.attack(format!("bank destination: POST /api/transfers to {to:?} (bfaf) and POST /transfers (transfers, from the host) -> 400, 400, changed: nothing"));
    }
    // An insider with the transfers service's identity appends a transfer "to" user:bob: it fails,
    // and nothing reaches bob's live feed (the next message he gets is his own deposit's).
    let reply = bank_append(&bank, "transfers", "TransferRequested", "tr-insider1", json!({
        "transfer_id": "tr-insider1", "from_account": a, "to_account": "user:bob", "amount_cents": 100, "requested_by": "alice",
    }))
    .await;
    assert!(reply.all_stored(), "{reply:?}");
    wait_until("the injected transfer to fail", Duration::from_secs(30), || async {
        let events = bank.key_events("tr-insider1").await;
        events.iter().any(|e| e["type"] == "TransferFailed" && e["data"]["reason"] == "unknown account")
    })
    .await
    .unwrap();
    api.deposit(&bob, &b, 1).await;
    let m = next_within(&mut bob_live, Duration::from_secs(10)).await.expect("bob's deposit reaches his feed").unwrap();
    assert_eq!((m["kind"].as_str(), m["account_id"].as_str()), (Some("account"), Some(b.as_str())), "bob's feed got something else first: {m}");
    bank.wait_settled(Duration::from_secs(30)).await;
    let after = snapshot(&bank, &api, &owners).await;
    assert_eq!(after.1[0], before.1[0], "alice's balance moved");
    r.attack("bank destination: TransferRequested to \"user:bob\" appended with the transfers service's identity -> failed (unknown account); bob's live feed got nothing of it; changed: no balance (the failed transfer is recorded)".into());

    // ---- every accounts operation checks its owner (anything on the host can call the routes)
    let before = snapshot(&bank, &api, &owners).await;
    for (method, path, body, want) in [
        ("GET", format!("/accounts/{b}"), None, 400),
        ("GET", format!("/accounts/{b}/statement"), None, 400),
        ("GET", format!("/accounts?ids={b}"), None, 400),
        ("POST", format!("/accounts/{b}/withdrawals"), Some(json!({ "amount_cents": 100 })), 400),
        ("POST", format!("/accounts/{b}/deposits"), Some(json!({ "amount_cents": 100 })), 400),
        ("GET", format!("/accounts/{b}?owner=alice"), None, 404),
        ("GET", format!("/accounts/{b}/statement?owner=alice"), None, 404),
        ("POST", format!("/accounts/{b}/withdrawals"), Some(json!({ "amount_cents": 100, "owner": "alice" })), 404),
    ] {
        let (s, v, _) = http_json(method, &format!("{accounts_url}{path}"), body).await;
        assert_eq!(s, want, "{method} {path}: {v}");
        assert_eq!(snapshot(&bank, &api, &owners).await, before, "{method} {path} changed something");
        r.attack(format!("owner check: accounts {method} {path} from the host{} -> {s}, changed: nothing", if want == 400 { " without an owner" } else { " as alice" }));
    }
    let (s, v, _) = http_json("GET", &format!("{accounts_url}/accounts?ids={b}&owner=alice"), None).await;
    assert_eq!((s, v.as_array().map(|a| a.len())), (200, Some(0)), "{v}");
    // Straight at the transfers route: from bob's account, requested by someone else.
    let (s, v, _) = http_json(
        "POST",
        &format!("{transfers_url}/transfers"),
        Some(json!({ "from_account": b, "to_account": a, "amount_cents": 100, "requested_by": "alice" })),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let id = v["transfer_id"].as_str().unwrap().to_string();
    wait_until("the transfer from someone else's account to fail", Duration::from_secs(30), || async {
        let (_, t, _) = http_json("GET", &format!("{transfers_url}/transfers/{id}"), None).await;
        t["status"] == "failed" && t["reason"] == "unknown account"
    })
    .await
    .unwrap();
    bank.wait_settled(Duration::from_secs(30)).await;
    assert_eq!(snapshot(&bank, &api, &owners).await.1, before.1, "money moved");
    r.attack("owner check: POST /transfers from bob's account with requested_by alice, straight at the transfers service -> 202 then failed (unknown account), changed: no balance".into());

    // ---- log-out revokes the token, also after a restart and a rebuild of the bfaf
    let session = api.login("alice").await;
    let (s, _) = api.get("/api/accounts", &session).await;
    assert_eq!(s, 200);
    let (s, v) = api.call("DELETE", "/api/sessions", Some(&session), None, &[]).await;
    assert_eq!(s, 204, "{v}");
    let before = snapshot(&bank, &api, &owners).await;
    let (s, _) = api.get("/api/accounts", &session).await;
    assert_eq!(s, 401, "a token is refused after log-out");
    let (s, _) = api.post(&format!("/api/accounts/{a}/withdrawals"), &session, json!({ "amount_cents": 100 })).await;
    assert_eq!(s, 401);
    let mut sock = ws(&format!("{ws_base}/api/live?token={session}")).await;
    assert_eq!(next_within(&mut sock, Duration::from_secs(10)).await, Some(Err(4401)), "the live feed refuses it");
    let (s, _) = api.get("/api/accounts", &alice).await;
    assert_eq!(s, 200, "alice's other session goes on");
    assert_eq!(snapshot(&bank, &api, &owners).await, before);
    r.attack("log-out: a token used after DELETE /api/sessions (read, withdraw, live feed) -> 401, 401, close 4401; another session of the user still works; changed: nothing".into());
    let (s, _) = api.call("DELETE", "/api/sessions", Some(&session), None, &[]).await;
    assert_eq!(s, 401, "a second log-out of an ended session");
    // A restart (kill -9) of the bfaf, then a rebuild of its state from the stream.
    let old = bank.of("bfaf")[0].name.clone();
    bank.replace_instance(&old, "bfaf-2").await;
    let (s, _) = api.get("/api/accounts", &session).await;
    assert_eq!(s, 401, "refused after the bfaf's restart");
    let (ok, out) = bank.superclient(&["rebuild", &script("bfaf")]).await;
    assert!(ok, "{out}");
    let (s, _) = api.get("/api/accounts", &session).await;
    assert_eq!(s, 401, "refused after the bfaf's rebuild");
    let (s, _) = api.get("/api/accounts", &alice).await;
    assert_eq!(s, 200);
    r.attack("log-out: the ended token after kill -9 and restart of the bfaf, then after `superclient rebuild services/bfaf.lua` -> 401, 401, changed: nothing".into());

    // ---- a rebuild of users restores log-in from the sealed hashes; older hashes still verify
    let (ok, out) = bank.superclient(&["rebuild", &script("users")]).await;
    assert!(ok, "{out}");
    api.login("alice").await;
    let (s, v, _) = http_json("POST", &format!("{example_url}/hash"), Some(json!({ "password": "an old password" }))).await;
    assert_eq!(s, 200, "{v}");
    let peppered = v["hash"].as_str().unwrap().to_string();
    assert!(peppered.starts_with("peppered:"), "{peppered}");
    let reply = bank_append(&bank, "users", "UserRegistered", "user-oldtimer", json!({ "username": "oldtimer", "password_hash": peppered })).await;
    assert!(reply.all_stored(), "{reply:?}");
    wait_until("the old user to log in", Duration::from_secs(30), || async { login(&api, "oldtimer", "an old password").await.0 == 200 }).await.unwrap();
    r.attack("credential material: users rebuilt from the stream (sealed hashes) -> alice logs in; a UserRegistered of before the seal (peppered hash) -> still logs in".into());

    // ---- common passwords are refused
    let before = snapshot(&bank, &api, &owners).await;
    for (name, password) in [("carol", "12345678"), ("carol", "password123"), ("carol", "Password1"), ("carol", "qwertyuiop"), ("carol", "carol2024!"), ("carol", "zzzzzzzz"), ("carol", "abcdefghij"), ("carol", "98765432")] {
        let (s, v) = api.call("POST", "/api/users", None, Some(json!({ "username": name, "password": password })), &[]).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("weak password")), "{password}: {v}");
        assert_eq!(snapshot(&bank, &api, &owners).await, before);
        r.attack(format!("log-in abuse: sign-up with the password {password:?} -> 400 (weak password), changed: nothing"));
    }

    // ---- an unknown name and a wrong password: the same answer, about the same time
    let (mut unknown, mut wrong) = (Vec::new(), Vec::new());
    for i in 0..4 {
        let started = Instant::now();
        let (s1, v1, _) = login(&api, &format!("nobody{i}"), "a wrong password").await;
        unknown.push(started.elapsed());
        let started = Instant::now();
        let (s2, v2, _) = login(&api, "bob", "a wrong password").await;
        wrong.push(started.elapsed());
        assert_eq!((s1, s2), (401, 401));
        assert_eq!(v1, v2, "the answers tell an unknown name from a wrong password");
    }
    let (mu, mw) = (median(unknown), median(wrong));
    assert!(mu * 2 >= mw && mw * 2 >= mu, "the time tells: unknown name {mu:?}, wrong password {mw:?}");
    r.attack(format!(
        "log-in abuse: log-in as an unknown name vs. a known name with a wrong password (4 each) -> 401 with the same body; median {:.0} ms vs {:.0} ms",
        mu.as_secs_f64() * 1000.0,
        mw.as_secs_f64() * 1000.0
    ));
    // (8 failures of this client so far; bob's name has 4)
    let bob_token = wait_unlocked(&api, "bob", "password-of-").await;
    drop(bob_token);

    // ---- 30 wrong passwords in a row for one name
    let before = snapshot(&bank, &api, &owners).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..30 {
        let (s, v, retry) = login(&api, "alice", &format!("wrong password {i}")).await;
        statuses.push(s);
        if s == 429 {
            assert_eq!(v["code"], "too many attempts", "{v}");
            let after: u64 = retry.as_deref().expect("429 has Retry-After").parse().unwrap();
            assert!((1..=WINDOW_S).contains(&after), "Retry-After {after}");
            retry_after = Some(after);
        }
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let (s, _, _) = login(&api, "alice", "password-of-").await;
    assert_eq!(s, 429, "the right password during the lock is refused too (it would tell)");
    assert_eq!(snapshot(&bank, &api, &owners).await, before);
    r.attack(format!(
        "log-in abuse: 30 wrong passwords in a row for alice -> 5 × 401 then 25 × 429 (Retry-After {}), the right password then 429 too; changed: nothing",
        retry_after.unwrap()
    ));
    wait_unlocked(&api, "alice", "password-of-").await;
    r.attack(format!("log-in abuse: the right password after the {WINDOW_S} s window -> 200"));

    // ---- many names from one address: the client's limit
    let mut statuses = Vec::new();
    for i in 0..25 {
        let (s, _, _) = login(&api, &format!("guess{i}"), "a wrong password").await;
        statuses.push(s);
    }
    assert_eq!(&statuses[..20], &[401; 20], "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    // Probing names by signing up counts against the same limit.
    let (s, v) = api.call("POST", "/api/users", None, Some(json!({ "username": "newcomer", "password": "a good long password" })), &[]).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(snapshot(&bank, &api, &owners).await, before);
    r.attack("log-in abuse: one address tries 25 user names -> 20 × 401 then 429, and a sign-up from it 429 until the window ends; changed: nothing".into());
    wait_unlocked(&api, "alice", "password-of-").await;
    let mut statuses = Vec::new();
    for _ in 0..21 {
        let (s, _) = api.call("POST", "/api/users", None, Some(json!({ "username": "alice", "password": "a good long password" })), &[]).await;
        statuses.push(s);
    }
    assert_eq!(&statuses[..20], &[409; 20], "{statuses:?}");
    assert_eq!(statuses[20], 429, "{statuses:?}");
    assert_eq!(snapshot(&bank, &api, &owners).await, before);
    r.attack("log-in abuse: one address probes a taken name by signing up 21 times -> 20 × 409 then 429 (probing names costs what guessing passwords does); changed: nothing".into());

    for line in &r.lines {
        println!("{line}");
    }
}

/// Appends one event as `service` (the admin NATS user speaks for it over the gateway's
/// request subject, as that service's own credentials would).
async fn bank_append(bank: &Bank, service: &str, event_type: &str, key: &str, data: Value) -> sequent_protocol::AppendReply {
    let body = json!({ "events": [{ "type": event_type, "key": key, "expect": "any", "data": data }] });
    let msg = bank.admin.request(format!("sequent.append.{service}"), body.to_string().into()).await.unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

#[allow(dead_code)]
async fn close(mut sock: Socket) {
    sock.send(tokio_tungstenite::tungstenite::Message::Close(None)).await.ok();
}
