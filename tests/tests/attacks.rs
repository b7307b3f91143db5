//! Attacks over HTTP on the gateway and on the bank's bfaf (issue 7): bad and stolen tokens,
//! other customers' accounts, injection-looking keys, ids and paths, malformed and oversized
//! bodies, slow clients and connection floods; HTTPS and NATS over TLS; secrets kept out of
//! the logs. Each attack checks its status and that nothing changed (the stream's last
//! sequence, the balances), and prints an `ATTACK:` line.

mod bank_common;

use bank_common::*;
use base64::Engine as _;
use hmac::Mac as _;
use sequent_tests::{binary, free_port, Child, TempDir};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// superclient's public development token key (used while the bfaf listens on loopback and
/// SEQUENT_TOKEN_SECRET is not set): lets the test sign an expired token.
const DEV_TOKEN_SECRET: &str = "sequent-DEVELOPMENT-ONLY-token-secret-do-not-use-in-production";
const OPS: &str = "ops-token-0123456789";
const BI: &str = "bi-token-0123456789";

/// A token as `crypto.token` makes it: base64url(json).base64url(hmac_sha256(payload)).
fn sign_token(secret: &str, claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    format!("{payload}.{}", b64.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// One raw HTTP/1.1 exchange (`Connection: close`), so that paths reach the server exactly
/// as written (a URL library would resolve `../`). Returns the status and the body.
async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut out)).await.expect("an answer within 30 s");
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    last_seq: u64,
    balances: Vec<Value>,
}

/// The bank under attack: what may not change, and the lines of the report.
struct Target<'a> {
    bank: &'a Bank,
    api: Api,
    owners: Vec<(String, String)>,
    lines: Vec<String>,
}

impl Target<'_> {
    async fn snapshot(&self) -> Snapshot {
        let mut balances = Vec::new();
        for (token, account) in &self.owners {
            let (s, v) = self.api.get(&format!("/api/accounts/{account}"), token).await;
            assert_eq!(s, 200, "{v}");
            balances.push(v["balance_cents"].clone());
        }
        Snapshot { last_seq: self.bank.last_seq().await, balances }
    }

    /// Asserts the status is one of `allowed` and that nothing changed since `before`.
    async fn check(&mut self, name: &str, sent: &str, status: u16, allowed: &[u16], before: &Snapshot) {
        assert!(allowed.contains(&status), "{name}: {sent} answered {status}, expected one of {allowed:?}");
        assert_eq!(&self.snapshot().await, before, "{name}: {sent} changed something");
        let sent: String = sent.chars().take(160).collect();
        self.lines.push(format!("ATTACK: {name}: {sent} -> {status}, changed: nothing"));
    }

    fn report(&self) {
        for line in &self.lines {
            println!("{line}");
        }
    }
}

fn short(s: &str) -> String {
    if s.len() > 60 {
        format!("{}... ({} bytes)", &s[..40], s.len())
    } else {
        format!("{s:?}")
    }
}

/// Strings that look like path traversal, SQL, Lua, NATS wildcards, NUL, very long, odd Unicode.
fn nasty() -> Vec<String> {
    vec![
        "../../etc/passwd".into(),
        "..%2f..%2fetc%2fpasswd".into(),
        "%2e%2e".into(),
        "acc-1' OR '1'='1".into(),
        "acc-1\"; os.exit(1) --".into(),
        "]]..os.execute('id')..[[".into(),
        "ev.>".into(),
        "*".into(),
        "acc-1\0".into(),
        "a".repeat(5000),
        "acc-\u{202e}1\u{200b}".into(),
        "💣".into(),
    ]
}

/// Percent-encodes everything but unreserved characters (for raw paths).
fn pct(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~%".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn guarded_gateway(bank: &Bank, extra: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let mut env: Vec<(String, String)> = vec![
        ("NATS_URL".into(), bank.nats.url()),
        ("SEQUENT_GATEWAY_LISTEN".into(), format!("127.0.0.1:{port}")),
        ("SEQUENT_API_TOKENS".into(), format!("ops:{OPS}:write,bi:{BI}:read")),
        ("SEQUENT_MAX_BODY_BYTES".into(), "65536".into()),
        ("RUST_LOG".into(), "warn,bus_gateway=info".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut child = Child::spawn("gateway-guarded", binary("bus-gateway"), &[] as &[&str], &env).unwrap();
    child.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.unwrap();
    (child, format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn attacks_on_the_gateway_and_the_bfaf() {
    let _serial = serial().await;
    let bank = Bank::start(
        &[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)],
        &[("bfaf", &["--header-read-timeout", "2s", "--body-limit", "1048576"])],
    )
    .await;
    let (_gw, gw) = guarded_gateway(&bank, &[("SEQUENT_HEADER_READ_TIMEOUT", "2s")]).await;
    let api = bank.api();
    let bfaf = api.base.trim_start_matches("http://").to_string();
    let alice = api.customer("alice").await;
    let bob = api.customer("bob").await;
    let a = api.open_account(&alice).await;
    let b = api.open_account(&bob).await;
    api.deposit(&alice, &a, 1_000).await;
    api.deposit(&bob, &b, 500).await;
    bank.wait_settled(Duration::from_secs(30)).await;
    let mut t = Target { bank: &bank, api: api.clone(), owners: vec![(alice.clone(), a.clone()), (bob.clone(), b.clone())], lines: Vec::new() };

    // ---- tokens (bfaf)
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, signature) = alice.split_once('.').unwrap();
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    let as_bob = {
        claims["sub"] = json!("bob");
        format!("{}.{signature}", b64.encode(claims.to_string()))
    };
    let forged = format!("{payload}.{}", b64.encode([7u8; 32]));
    let other_key = sign_token("an-attacker's-own-key-of-at-least-32-bytes", &json!({ "sub": "alice", "role": "customer", "exp": now() + 3600 }));
    let expired = sign_token(DEV_TOKEN_SECRET, &json!({ "sub": "alice", "role": "customer", "username": "alice", "iss": "users", "jti": "0123456789abcdef0123456789abcdef", "exp": now() - 60 }));
    // The same signer with a future expiry is accepted: the refusal below is the expiry's.
    let fresh = sign_token(DEV_TOKEN_SECRET, &json!({ "sub": "alice", "role": "customer", "username": "alice", "iss": "users", "jti": "0123456789abcdef0123456789abcdef", "exp": now() + 60 }));
    assert_eq!(api.get(&format!("/api/accounts/{a}"), &fresh).await.0, 200, "the test signs tokens like the users service");
    let deposit = json!({ "amount_cents": 100 });
    for (name, token) in [
        ("missing token", None),
        ("garbage token", Some("garbage")),
        ("forged signature", Some(forged.as_str())),
        ("token signed with another key", Some(other_key.as_str())),
        ("tampered payload (sub changed to bob)", Some(as_bob.as_str())),
        ("expired token", Some(expired.as_str())),
    ] {
        for (method, path, body) in [
            ("GET", format!("/api/accounts/{a}"), None),
            ("POST", format!("/api/accounts/{a}/deposits"), Some(deposit.clone())),
            ("POST", format!("/api/accounts/{b}/withdrawals"), Some(deposit.clone())),
            ("POST", "/api/transfers".to_string(), Some(json!({ "from_account": b, "to_account": a, "amount_cents": 100 }))),
        ] {
            let before = t.snapshot().await;
            let (s, _) = api.call(method, &path, token, body, &[]).await;
            t.check(name, &format!("bfaf {method} {path}"), s, &[401], &before).await;
        }
    }
    // An operator's token is refused for customers' calls and vice versa.
    let before = t.snapshot().await;
    let (s, _) = bank.explorer().get("/api/admin/services", &alice).await;
    t.check("customer token on the operators' API", "explorer GET /api/admin/services with alice's token", s, &[401], &before).await;

    // ---- another customer's accounts
    for (method, path, body) in [
        ("GET", format!("/api/accounts/{b}"), None),
        ("GET", format!("/api/accounts/{b}/statement"), None),
        ("POST", format!("/api/accounts/{b}/deposits"), Some(deposit.clone())),
        ("POST", format!("/api/accounts/{b}/withdrawals"), Some(deposit.clone())),
        ("POST", "/api/transfers".to_string(), Some(json!({ "from_account": b, "to_account": a, "amount_cents": 100 }))),
        ("GET", format!("/api/transfers?account={b}"), None),
    ] {
        let before = t.snapshot().await;
        let (s, _) = api.call(method, &path, Some(&alice), body, &[]).await;
        t.check("another user's account", &format!("bfaf {method} {path} as alice"), s, &[404], &before).await;
    }

    // ---- injection-looking ids in paths and bodies (bfaf)
    for id in nasty() {
        for (method, path, body) in [
            ("GET", format!("/api/accounts/{}", pct(&id)), String::new()),
            ("GET", format!("/api/accounts/{}/statement", pct(&id)), String::new()),
            ("POST", format!("/api/accounts/{}/deposits", pct(&id)), r#"{"amount_cents":100}"#.to_string()),
            ("GET", format!("/api/transfers/{}", pct(&id)), String::new()),
        ] {
            let before = t.snapshot().await;
            let (s, _) = raw(&bfaf, &request(method, &path, Some(&alice), &body)).await;
            t.check("injection in a path segment", &format!("bfaf {method} {}", short(&path)), s, &[400, 404], &before).await;
        }
        let before = t.snapshot().await;
        let body = json!({ "from_account": id, "to_account": a, "amount_cents": 100 });
        let (s, _) = api.call("POST", "/api/transfers", Some(&alice), Some(body), &[]).await;
        t.check("injection in from_account", &format!("bfaf POST /api/transfers from {}", short(&id)), s, &[400, 404], &before).await;
    }
    // Unencoded traversal, raw NUL and spaces in the request line.
    for path in ["/api/accounts/../accounts", "/api/../api/accounts/x/../../accounts", "/api/accounts/a\0b", "/api/accounts/a b"] {
        let before = t.snapshot().await;
        let (s, _) = raw(&bfaf, &request("GET", path, Some(&alice), "")).await;
        // The router does not resolve dot segments: these name no route or no account.
        t.check("raw path traversal", &format!("bfaf GET {path:?}"), s, &[400, 404, 405], &before).await;
    }
    // A transfer to an injection-looking account fails as "unknown account" and moves nothing.
    for to in ["ev.>", "*", "../acc-1", "acc-1' OR '1'='1"] {
        let before = t.snapshot().await;
        let (s, v) = api.post("/api/transfers", &alice, json!({ "from_account": a, "to_account": to, "amount_cents": 100 })).await;
        assert!(s == 202 || s == 400, "transfer to {to:?}: {s} {v}");
        if s == 202 {
            let done = api.finished_transfer(&alice, v["transfer_id"].as_str().unwrap()).await;
            assert_eq!((done["status"].as_str(), done["reason"].as_str()), (Some("failed"), Some("unknown account")), "{done}");
        }
        bank.wait_settled(Duration::from_secs(30)).await;
        let after = t.snapshot().await;
        assert_eq!(after.balances, before.balances, "a transfer to {to:?} moved money");
        t.lines.push(if s == 202 {
            format!("ATTACK: injection in to_account: bfaf POST /api/transfers to {to:?} -> 202 then failed (unknown account), changed: no balance (the failed transfer is recorded)")
        } else {
            format!("ATTACK: injection in to_account: bfaf POST /api/transfers to {to:?} -> 400, changed: nothing")
        });
    }
    // Idempotency keys that look like injections: the deposit happens once, the key is inert.
    for key in ["ev.>", "../../x", "' OR 1=1 --", "*"] {
        let (s1, v1) = api.call("POST", &format!("/api/accounts/{a}/deposits"), Some(&alice), Some(json!({ "amount_cents": 1 })), &[("idempotency-key", key)]).await;
        let before = t.snapshot().await;
        let (s2, v2) = api.call("POST", &format!("/api/accounts/{a}/deposits"), Some(&alice), Some(json!({ "amount_cents": 1 })), &[("idempotency-key", key)]).await;
        assert_eq!((s1, s2), (201, 201), "{v1} {v2}");
        assert_eq!(v1["version"], v2["version"], "a retry with key {key:?} was applied twice");
        t.check("injection in Idempotency-Key (retry)", &format!("bfaf deposit retried with Idempotency-Key {key:?}"), s2, &[201], &before).await;
    }

    // ---- malformed JSON, wrong types, odd amounts (bfaf)
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(r#"{{"amount_cents":1,"x":{}1{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    for body in [
        r#"{"amount_cents":"#.to_string(),
        "[1,2,3]".to_string(),
        "null".to_string(),
        r#"{"amount_cents":99999999999999999999999999}"#.to_string(),
        r#"{"amount_cents":1e400}"#.to_string(),
        r#"{"amount_cents":-100}"#.to_string(),
        r#"{"amount_cents":0.5}"#.to_string(),
        r#"{"amount_cents":{"$gt":0}}"#.to_string(),
        r#"{"amount_cents":true}"#.to_string(),
        r#"{"amount_cents":[100]}"#.to_string(),
        r#"{"amount_cents":9223372036854775807}"#.to_string(),
        r#"{"amount_cents":-9223372036854775808}"#.to_string(),
        "{\"amount_cents\":\"100\u{0}\"}".to_string(),
        deep.clone(),
        deep_object.clone(),
    ] {
        let before = t.snapshot().await;
        let (s, _) = raw(&bfaf, &request("POST", &format!("/api/accounts/{a}/deposits"), Some(&alice), &body)).await;
        t.check("malformed body", &format!("bfaf deposit {}", short(&body)), s, &[400], &before).await;
    }
    // ---- oversized bodies (bfaf limit 1 MiB), also when chunked
    let big = format!(r#"{{"amount_cents":1,"pad":"{}"}}"#, "x".repeat(2 << 20));
    let before = t.snapshot().await;
    let (s, _) = raw(&bfaf, &request("POST", &format!("/api/accounts/{a}/deposits"), Some(&alice), &big)).await;
    t.check("oversized body", "bfaf deposit of 2 MiB (Content-Length)", s, &[413], &before).await;
    let chunked = format!(
        "POST /api/accounts/{a}/deposits HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {alice}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let before = t.snapshot().await;
    let (s, _) = raw(&bfaf, chunked.as_bytes()).await;
    t.check("oversized body", "bfaf deposit of 2 MiB (chunked, no length)", s, &[413], &before).await;

    // ---- the gateway (API tokens; body limit 64 KiB)
    let ev = |key: &str| json!({ "events": [{ "type": "Deposited", "key": key, "expect": "any", "data": {} }] }).to_string();
    for (name, token, status) in [("missing token", None, 401), ("unknown token", Some("ops-token-0123456780"), 401), ("read-only token appends", Some(BI), 403)] {
        let before = t.snapshot().await;
        let (s, _) = raw(&gw, &request("POST", "/v1/events", token, &ev("acc-x"))).await;
        t.check(name, "gateway POST /v1/events", s, &[status], &before).await;
    }
    let before = t.snapshot().await;
    let (s, _) = raw(&gw, &request("POST", &format!("/v1/events?token={OPS}"), None, &ev("acc-x"))).await;
    t.check("token in the query string", "gateway POST /v1/events?token=<ops>", s, &[401], &before).await;
    for key in nasty() {
        let before = t.snapshot().await;
        let (s, _) = raw(&gw, &request("POST", "/v1/events", Some(OPS), &ev(&key))).await;
        t.check("injection in an event key", &format!("gateway append with key {}", short(&key)), s, &[400], &before).await;
        let before = t.snapshot().await;
        let (s, _) = raw(&gw, &request("GET", &format!("/v1/keys/{}/events", pct(&key)), Some(OPS), "")).await;
        t.check("injection in a path segment", &format!("gateway GET /v1/keys/{}/events", short(&key)), s, &[400, 404], &before).await;
    }
    for (field, value) in [("type", "Deposited'; DROP TABLE events; --"), ("id", "../../x"), ("correlation", "ev.>"), ("causation", "*")] {
        let mut e = json!({ "type": "Deposited", "key": "acc-x", "expect": "any", "data": {} });
        e[field] = json!(value);
        let before = t.snapshot().await;
        let (s, _) = raw(&gw, &request("POST", "/v1/events", Some(OPS), &json!({ "events": [e] }).to_string())).await;
        t.check("injection in an event field", &format!("gateway append with {field} {value:?}"), s, &[400], &before).await;
    }
    for body in [
        r#"{"events":[{"type":"T","key":"k","expect":-1,"data":{}}]}"#.to_string(),
        r#"{"events":[{"type":"T","key":"k","expect":1.5,"data":{}}]}"#.to_string(),
        r#"{"events":[{"type":"T","key":"k","expect":1e30,"data":{}}]}"#.to_string(),
        r#"{"events":[{"type":"T","key":"k","expect":"0","data":{}}]}"#.to_string(),
        r#"{"events":{"type":"T"}}"#.to_string(),
        r#"{"events":[{"type":"T","key":"k","expect":0,"data":{"x":1}"#.to_string(),
        format!(r#"{{"events":[{{"type":"T","key":"k","expect":0,"data":{{"x":{}1{}}}}}]}}"#, "[".repeat(20_000), "]".repeat(20_000)),
    ] {
        let before = t.snapshot().await;
        let (s, _) = raw(&gw, &request("POST", "/v1/events", Some(OPS), &body)).await;
        t.check("malformed body", &format!("gateway append {}", short(&body)), s, &[400], &before).await;
    }
    let before = t.snapshot().await;
    let (s, _) = raw(&gw, &request("POST", "/v1/events", Some(OPS), &format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000)))).await;
    t.check("oversized body", "gateway append of 100 kB (limit 64 KiB)", s, &[413], &before).await;

    // ---- slow clients: slowloris connections are closed after the header-read timeout (2 s)
    // while other clients are served at once.
    for (server, addr, health) in [("gateway", gw.as_str(), "/health"), ("bfaf", bfaf.as_str(), "/health")] {
        let before = t.snapshot().await;
        let started = Instant::now();
        let slow: Vec<_> = (0..20).map(|_| tokio::spawn(slowloris(addr.to_string()))).collect();
        // Served while the slow clients hold their connections.
        for _ in 0..5 {
            let asked = Instant::now();
            let (s, _) = raw(addr, &request("GET", health, None, "")).await;
            assert_eq!(s, 200, "{server}: a normal client is served during a slowloris");
            assert!(asked.elapsed() < Duration::from_secs(2), "{server}: a normal request took {:?}", asked.elapsed());
        }
        let mut lasted = Vec::new();
        for task in slow {
            lasted.push(task.await.unwrap());
        }
        let longest = lasted.iter().max().unwrap();
        assert!(*longest < Duration::from_secs(8), "{server}: a slowloris connection lasted {longest:?} (timeout 2 s)");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(t.snapshot().await, before);
        t.lines.push(format!(
            "ATTACK: slowloris: {server}: 20 connections sending a request head one byte per 500 ms -> closed by the server after at most {:.1} s (header-read timeout 2 s), other clients served at once (200), changed: nothing",
            longest.as_secs_f64()
        ));
    }

    // ---- connection floods: 800 idle connections, normal requests still served
    for (server, addr) in [("gateway", gw.as_str()), ("bfaf", bfaf.as_str())] {
        let before = t.snapshot().await;
        let mut idle = Vec::new();
        for _ in 0..800 {
            idle.push(TcpStream::connect(addr).await.expect("the server accepts the flood"));
        }
        let asked = Instant::now();
        let path = if server == "bfaf" { format!("/api/accounts/{a}") } else { "/v1/keys/acc-x".to_string() };
        let token = if server == "bfaf" { alice.as_str() } else { OPS };
        let (s, _) = raw(addr, &request("GET", &path, Some(token), "")).await;
        assert_eq!(s, 200, "{server}: served during a flood");
        let served = asked.elapsed();
        assert!(served < Duration::from_secs(3), "{server}: took {served:?} during the flood");
        // The idle connections are closed by the header-read timeout.
        let mut closed = 0;
        for mut c in idle {
            let mut buf = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 800, "{server}: every idle connection is closed by the server");
        assert_eq!(t.snapshot().await, before);
        t.lines.push(format!(
            "ATTACK: connection flood: {server}: 800 idle TCP connections, then GET {path} -> 200 in {:.2} s, the 800 closed by the header-read timeout, changed: nothing",
            served.as_secs_f64()
        ));
    }

    // ---- another service's NATS credentials (bfaf) against the accounts service's partition
    // consumers, while a deposit produces events for them: nothing is delivered to the intruder
    // (its NATS user may not pull from another service's durables), and the deposit goes through.
    let bfaf_user = sequent_tests::service("bfaf");
    let intruder = sequent_tests::connect(&bank.nats.url(), &bfaf_user.0, &bfaf_user.1).await.unwrap();
    let js = async_nats::jetstream::new(intruder);
    let events = js.get_stream_no_info("EVENTS").await.unwrap();
    let pulls = (0..16).map(|p| {
        let events = events.clone();
        async move {
            let Ok(consumer) = events.get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!("accounts-p{p:02}")).await else { return 0 };
            let Ok(mut batch) = consumer.fetch().max_messages(10).expires(Duration::from_secs(2)).messages().await else { return 0 };
            let mut got = 0;
            while let Some(Ok(_)) = futures::StreamExt::next(&mut batch).await {
                got += 1;
            }
            got
        }
    });
    let deposit_during = async {
        let (s, v) = api.post(&format!("/api/accounts/{a}/deposits"), &alice, json!({ "amount_cents": 5 })).await;
        assert_eq!(s, 201, "{v}");
    };
    let (stolen, ()) = tokio::join!(futures::future::join_all(pulls), deposit_during);
    assert_eq!(stolen.iter().sum::<usize>(), 0, "another service pulled events of accounts' consumers: {stolen:?}");
    bank.wait_settled(Duration::from_secs(30)).await;
    t.lines.push("ATTACK: another service's consumers: the bfaf's NATS user pulls from accounts-p00..p15 during a deposit -> refused by NATS permissions, 0 events delivered, the deposit served (201) and handled, changed: only the deposit".into());

    t.report();
}

/// Sends a request head one byte every 500 ms until the server closes the connection;
/// returns how long the connection lasted (at most 30 s).
async fn slowloris(addr: String) -> Duration {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(&addr).await.expect("connect");
    let head = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: {}", "a".repeat(1000));
    let mut buf = [0u8; 256];
    for byte in head.bytes() {
        if tcp.write_all(&[byte]).await.is_err() {
            return started.elapsed();
        }
        // Pacing the byte stream (not waiting for a condition); a close ends the read at once.
        match tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
            Ok(Ok(_) | Err(_)) => return started.elapsed(),
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// TLS: HTTPS on the gateway and the superclient, NATS over TLS with --nats-ca.

struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "sequent test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = TempDir::new("pki").unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_params: params, ca_key }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by the CA: (cert, key) paths.
    fn server(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k) = (self.dir.path().join(format!("{name}.pem")), self.dir.path().join(format!("{name}-key.pem")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.to_string_lossy().to_string(), k.to_string_lossy().to_string())
    }

    fn ca_path(&self) -> String {
        self.dir.path().join("ca.pem").to_string_lossy().to_string()
    }

    /// GET `path` over HTTPS, trusting only this CA: (status, body).
    async fn get(&self, addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?;
        tls.write_all(&request("GET", path, None, "")).await?;
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await; // a close without close_notify is fine here
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, text))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_and_nats_over_tls() {
    let _serial = serial().await;
    let pki = Pki::new();
    let (nats_cert, nats_key) = pki.server("nats");
    let nats = sequent_tests::nats_with_tls(&nats_cert, &nats_key).await.expect("a nats-server requiring TLS");
    let mut lines = Vec::new();

    // Without the CA the gateway cannot connect (it does not trust the server): no silent
    // fallback to plain text.
    let (cert, key) = pki.server("gateway");
    let port = free_port();
    let base_env = |ca: Option<&str>| {
        let mut env = vec![
            ("NATS_URL".to_string(), nats.url.clone()),
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{port}")),
            ("SEQUENT_TLS_CERT".to_string(), cert.clone()),
            ("SEQUENT_TLS_KEY".to_string(), key.clone()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ];
        if let Some(ca) = ca {
            env.push(("SEQUENT_NATS_CA".to_string(), ca.to_string()));
        }
        env
    };
    let mut untrusting = Child::spawn("gateway-no-ca", binary("bus-gateway"), &[] as &[&str], &base_env(None)).unwrap();
    // Its connection attempts fail (the server's certificate is not trusted); it never gets
    // ready (after 30 s it gives up and exits).
    untrusting.wait_for_line("client error", Duration::from_secs(30)).await.expect("the TLS connection fails");
    let out = untrusting.output().join("\n");
    assert!(!out.contains("bus-gateway ready"), "{out}");
    drop(untrusting);
    lines.push("ATTACK: NATS without the CA: gateway connecting to a TLS-only nats-server without --nats-ca -> connection refused by the client (untrusted certificate), not ready, changed: nothing".to_string());

    let mut gw = Child::spawn("gateway-tls", binary("bus-gateway"), &[] as &[&str], &base_env(Some(&pki.ca_path()))).unwrap();
    gw.wait_for_line("bus-gateway ready", Duration::from_secs(60)).await.expect("the gateway connects over TLS with --nats-ca");
    let addr = format!("127.0.0.1:{port}");
    let (s, body) = pki.get(&addr, "/health").await.expect("HTTPS");
    assert_eq!(s, 200, "{body}");
    // An append over HTTPS is stored through the TLS connection to NATS.
    let admin = async_nats::ConnectOptions::with_user_and_password(sequent_tests::ADMIN.0.into(), sequent_tests::ADMIN.1.into())
        .add_root_certificates(pki.ca_path().into())
        .require_tls(true)
        .connect(nats.url.as_str())
        .await
        .expect("the admin connects over TLS");
    let js = async_nats::jetstream::new(admin);
    let before = js.get_stream("EVENTS").await.unwrap().info().await.unwrap().state.last_sequence;
    let (s, body) = pki_post(&pki, &addr, "/v1/events", r#"{"events":[{"type":"Pinged","key":"k-1","expect":"new","data":{}}]}"#).await;
    assert_eq!(s, 201, "{body}");
    let after = js.get_stream("EVENTS").await.unwrap().info().await.unwrap().state.last_sequence;
    assert_eq!(after, before + 1);
    // Plain HTTP on the HTTPS port gets no answer.
    let (s, _) = raw(&addr, &request("GET", "/health", None, "")).await;
    assert_eq!(s, 0, "plain HTTP is not served on the TLS port");
    lines.push("ATTACK: plain HTTP on the HTTPS port: gateway GET /health without TLS -> no HTTP answer, changed: nothing".to_string());

    // The superclient serves HTTPS too (and reaches NATS over TLS).
    let redis = sequent_tests::redis().await.unwrap();
    let (cert, key) = pki.server("superclient");
    let script = sequent_tests::repo_root().join("tests/lua/superclient_http.lua");
    let env = vec![
        ("NATS_URL".to_string(), nats.url.clone()),
        ("REDIS_URL".to_string(), redis.url.clone()),
        ("SEQUENT_NATS_CA".to_string(), pki.ca_path()),
        ("RUST_LOG".to_string(), "info".to_string()),
    ];
    let mut sc = Child::spawn("superclient-tls", binary("superclient"), &[script.to_str().unwrap(), "--tls-cert", &cert, "--tls-key", &key], &env).unwrap();
    let line = sc.wait_for_line("http listening on", Duration::from_secs(60)).await.unwrap();
    let sc_addr = line.rsplit("http listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
    sc.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    let (s, body) = pki.get(&sc_addr, "/health").await.expect("HTTPS on the superclient");
    assert_eq!(s, 200, "{body}");
    let (s, _) = raw(&sc_addr, &request("GET", "/health", None, "")).await;
    assert_eq!(s, 0);
    // A client that does not trust the CA cannot talk to it.
    let stranger = Pki::new();
    assert!(stranger.get(&sc_addr, "/health").await.is_err(), "a certificate of another CA is refused by the client");
    for line in lines {
        println!("{line}");
    }
}

async fn pki_post(pki: &Pki, addr: &str, path: &str, body: &str) -> (u16, String) {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(&request("POST", path, None, body)).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).to_string();
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

// ---------------------------------------------------------------------------------------------
// Secrets never reach the logs.

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_logs() {
    let _serial = serial().await;
    let nats = sequent_tests::nats().await.unwrap();
    let redis = sequent_tests::redis().await.unwrap();
    // Both binaries connect as `admin` so that the password is none of their defaults (which
    // --help shows); the server only knows its development passwords.
    const NATS_SECRET: &str = "admin-dev";
    const API_SECRET: &str = "api-secret-Zq81xv0Lw2";
    const TOKEN_SECRET: &str = "token-secret-Hk27-0123456789abcdefghijklmnop";
    const PEPPER: &str = "pepper-Qz81-0123456789abcdefghijklmnopqrstu";
    const SC_PASSWORD: &str = NATS_SECRET;
    const URL_SECRET: &str = "url-secret-Pw93kd";
    let port = free_port();
    let gw_env = |url: &str| {
        vec![
            ("NATS_URL".to_string(), url.to_string()),
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{port}")),
            ("SEQUENT_GATEWAY_NATS_USER".to_string(), "admin".to_string()),
            ("SEQUENT_GATEWAY_NATS_PASSWORD".to_string(), NATS_SECRET.to_string()),
            ("SEQUENT_API_TOKENS".to_string(), format!("ops:{API_SECRET}:write")),
            ("RUST_LOG".to_string(), "trace".to_string()),
        ]
    };
    let mut outputs = Vec::new();
    // --help of both binaries with the secrets in the environment.
    let sc_secrets = [("SEQUENT_NATS_PASSWORD", SC_PASSWORD), ("SEQUENT_TOKEN_SECRET", TOKEN_SECRET), ("SEQUENT_PASSWORD_PEPPER", PEPPER)];
    let sc_secrets: Vec<(String, String)> = sc_secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    for (bin, env) in [("bus-gateway", gw_env(&nats.url)), ("superclient", sc_secrets.clone())] {
        let out = tokio::process::Command::new(binary(bin)).arg("--help").envs(env).output().await.unwrap();
        outputs.push((format!("{bin} --help"), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))));
    }
    // A gateway at trace level serving requests with the API token; and one that cannot connect.
    let mut gw = Child::spawn("gateway-trace", binary("bus-gateway"), &[] as &[&str], &gw_env(&nats.url)).unwrap();
    gw.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let r = http.post(format!("{base}/v1/events")).bearer_auth(API_SECRET).json(&json!({ "events": [{ "type": "Pinged", "key": "k", "expect": "new", "data": {} }] })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = http.get(format!("{base}/v1/keys/k/events")).bearer_auth(format!("{API_SECRET}x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The superclient at trace level with a token secret and a pepper, hashing a password and
    // issuing and checking a token.
    let script = sequent_tests::repo_root().join("tests/lua/superclient_http.lua");
    let mut sc_env = vec![
        ("NATS_URL".to_string(), nats.url.clone()),
        ("REDIS_URL".to_string(), redis.url.clone()),
        ("SEQUENT_NATS_USER".to_string(), "admin".to_string()),
        ("RUST_LOG".to_string(), "trace".to_string()),
    ];
    sc_env.extend(sc_secrets);
    let mut sc = Child::spawn("superclient-trace", binary("superclient"), &[script.to_str().unwrap()], &sc_env).unwrap();
    let line = sc.wait_for_line("http listening on", Duration::from_secs(60)).await.unwrap();
    let sc_addr = line.rsplit("http listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
    sc.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    let r = http.post(format!("http://{sc_addr}/token/alice")).json(&json!({ "password": "pw1" })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    outputs.push(("gateway at trace level".into(), gw.output().join("\n")));
    outputs.push(("superclient at trace level".into(), sc.output().join("\n")));
    drop(gw);
    // Connection failures: a gateway and a superclient pointed at a closed port.
    // Credentials inside URLs too (async-nats prints server URLs in its debug lines).
    let dead_port = free_port();
    let dead = format!("nats://127.0.0.1:{dead_port}");
    let dead_with_password = format!("nats://admin:{URL_SECRET}@127.0.0.1:{dead_port}");
    let with = |env: &[(String, String)], name: &str, value: &str| {
        let mut env = env.to_vec();
        env.retain(|(k, _)| k != name);
        env.push((name.to_string(), value.to_string()));
        env
    };
    let sc_args = vec![script.to_str().unwrap().to_string()];
    for (name, bin, args, env, needle) in [
        ("gateway, NATS down", "bus-gateway", vec![], gw_env(&dead), "client error"),
        ("gateway, NATS down, password in NATS_URL", "bus-gateway", vec![], gw_env(&dead_with_password), "client error"),
        ("superclient, NATS down", "superclient", sc_args.clone(), with(&sc_env, "NATS_URL", &dead), "client error"),
        ("superclient, NATS down, password in NATS_URL", "superclient", sc_args.clone(), with(&sc_env, "NATS_URL", &dead_with_password), "client error"),
        ("superclient, Redis down, password in REDIS_URL", "superclient", sc_args.clone(), with(&sc_env, "REDIS_URL", &format!("redis://:{URL_SECRET}@127.0.0.1:{dead_port}/")), "Redis is not reachable"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = Child::spawn(name, binary(bin), &args, &env).unwrap();
        // Waits until it has reported the failure (it keeps retrying or exits).
        c.wait_for_line(needle, Duration::from_secs(40)).await.unwrap();
        outputs.push((name.to_string(), c.output().join("\n")));
    }
    let mut lines = Vec::new();
    for (name, text) in &outputs {
        assert!(!text.is_empty(), "{name} printed something");
        for secret in [NATS_SECRET, API_SECRET, TOKEN_SECRET, PEPPER, SC_PASSWORD, URL_SECRET] {
            assert!(!text.contains(secret), "{name} printed the secret {secret:?}:\n{text}");
        }
        lines.push(format!("ATTACK: secrets in logs: {name} with the passwords, API token and token secret in env (trace level) -> none printed ({} lines checked), changed: nothing", text.lines().count()));
    }
    for line in lines {
        println!("{line}");
    }
}
