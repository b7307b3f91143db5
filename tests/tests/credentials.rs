//! The credential model end to end, on a deployment like the dev stack's: nats-server with
//! nats/callout.conf (only admin, gateway and sys are users; every service and reader is a
//! registered principal admitted by the gateway's auth callout), one gateway, Redis.
//!
//! - A service added to the running deployment with one command (`superclient register`)
//!   receives every event of its types from the beginning while traffic runs; its appends
//!   outside its declaration are refused; nothing else was edited or restarted; unregistering
//!   it closes its connections and refuses new ones.
//! - With one service's credential or the analyst's: no consumer can be created or changed, no
//!   other service's consumer pulled, no append made as another service, no other principal's
//!   tail pulled, and the gateway's HTTP API wants a token and holds it to its declaration.

use sequent_tests::{binary, find_server, free_port, redis, wait_until, Child, TempDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Deployment {
    _dir: TempDir,
    nats_url: String,
    nats: Child,
    gateway: Child,
    gateway_http: String,
    redis_url: String,
    admin: (String, String),
    credentials: PathBuf,
    operator_token: String,
    /// The deployment's secret for internal routes (`SEQUENT_SERVICE_TOKEN`).
    service_token: String,
    _redis: sequent_tests::RedisServer,
}

fn secret() -> String {
    sequent_auth::Credential::generate("x").secret
}

/// A password nats-server can read from its environment: it parses a variable's value as a
/// config token, so one starting with a digit is taken for a number (and refused). A letter,
/// then letters and digits, as the dev stack makes them (src/secrets.rs).
fn nats_password() -> String {
    format!("n{}", secret().replace(['-', '_'], ""))
}

impl Deployment {
    async fn start() -> Deployment {
        let dir = TempDir::new("credentials").unwrap();
        let port = free_port();
        std::fs::copy(sequent_tests::repo_root().join("nats/callout.conf"), dir.path().join("callout.conf")).unwrap();
        let conf = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\ninclude \"callout.conf\"\n",
            dir.path().join("js").display()
        );
        std::fs::write(dir.path().join("nats.conf"), conf).unwrap();
        let account = sequent_auth::KeyPair::new_account();
        let (admin_pw, gateway_pw, sys_pw) = (nats_password(), nats_password(), nats_password());
        let nats_env = vec![
            ("SEQUENT_NATS_ADMIN_PASSWORD".to_string(), admin_pw.clone()),
            ("SEQUENT_NATS_GATEWAY_PASSWORD".to_string(), gateway_pw.clone()),
            ("SEQUENT_NATS_SYS_PASSWORD".to_string(), sys_pw.clone()),
            ("SEQUENT_CALLOUT_ISSUER".to_string(), account.public_key()),
        ];
        let conf_path = dir.path().join("nats.conf").to_string_lossy().to_string();
        let mut nats = Child::spawn("nats", find_server("nats-server").unwrap(), &["-c", &conf_path], &nats_env).unwrap();
        nats.wait_for_line("Server is ready", Duration::from_secs(30)).await.unwrap();
        let nats_url = format!("nats://127.0.0.1:{port}");
        let redis = redis().await.unwrap();
        let http_port = free_port();
        let operator_token = format!("ops-{}", secret());
        let gateway_env = vec![
            ("NATS_URL".to_string(), nats_url.clone()),
            ("SEQUENT_GATEWAY_NATS_PASSWORD".to_string(), gateway_pw),
            ("SEQUENT_CALLOUT_SEED".to_string(), account.seed().unwrap()),
            ("SEQUENT_SYS_NATS_CREDENTIALS".to_string(), format!("sys:{sys_pw}")),
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{http_port}")),
            ("SEQUENT_API_TOKENS".to_string(), format!("ops:{operator_token}:write")),
            ("RUST_LOG".to_string(), "info,async_nats=warn".to_string()),
        ];
        let mut gateway = Child::spawn("gateway", binary("bus-gateway"), &[] as &[&str], &gateway_env).unwrap();
        gateway.wait_for_line("bus-gateway ready", Duration::from_secs(60)).await.unwrap();
        let credentials = dir.path().join("credentials");
        Deployment {
            nats_url,
            nats,
            gateway,
            gateway_http: format!("http://127.0.0.1:{http_port}"),
            redis_url: redis.url.clone(),
            admin: ("admin".into(), admin_pw),
            credentials,
            operator_token,
            service_token: secret(),
            _redis: redis,
            _dir: dir,
        }
    }

    fn operator_env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".to_string(), self.nats_url.clone()),
            ("SEQUENT_ADMIN_NATS_CREDENTIALS".to_string(), format!("{}:{}", self.admin.0, self.admin.1)),
        ]
    }

    /// `superclient ARGS` as an operator, to its end: (success, output).
    async fn superclient(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new(binary("superclient"))
            .args(args)
            .envs(self.operator_env())
            .env("REDIS_URL", &self.redis_url)
            .output()
            .await
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    }

    async fn register(&self, what: &[&str]) {
        let dir = self.credentials.to_string_lossy().to_string();
        let mut args = vec!["register", "--credentials-dir", dir.as_str()];
        args.extend(what);
        let (ok, out) = self.superclient(&args).await;
        assert!(ok, "register {what:?}: {out}");
    }

    fn credential(&self, name: &str) -> sequent_auth::Credential {
        sequent_auth::Credential::read(&self.credentials.join(format!("{name}.json"))).unwrap()
    }

    /// An instance of `script`, as its registered principal.
    async fn instance(&self, script: &Path, name: &str) -> Child {
        let env = vec![
            ("NATS_URL".to_string(), self.nats_url.clone()),
            ("REDIS_URL".to_string(), self.redis_url.clone()),
            ("SEQUENT_CREDENTIALS_DIR".to_string(), self.credentials.to_string_lossy().to_string()),
            ("SEQUENT_SERVICE_TOKEN".to_string(), self.service_token.clone()),
            ("RUST_LOG".to_string(), "info,async_nats=warn".to_string()),
        ];
        let script = script.to_string_lossy().to_string();
        let mut child = Child::spawn(name, binary("superclient"), &[script.as_str(), "--instance", name], &env).unwrap();
        child.wait_for_line("owned partitions", Duration::from_secs(60)).await.unwrap();
        child
    }

    async fn append(&self, token: &str, events: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/events", self.gateway_http))
            .bearer_auth(token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn dump(&self, service: &str) -> Value {
        let out = tokio::process::Command::new(binary("superclient")).args(["dump", service, "--redis-url", &self.redis_url]).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A NATS connection as a registered principal, with its own inbox prefix.
    async fn connect_as(&self, name: &str) -> (async_nats::Client, sequent_tests::ServerErrors) {
        let c = self.credential(name);
        sequent_tests::connect_watching(&self.nats_url, &c.name, &c.secret).await.unwrap()
    }
}

fn counted(n: usize, from: usize) -> Value {
    Value::Array((from..from + n).map(|i| json!({ "type": "Counted", "key": format!("k-{}", i % 7), "expect": "any", "data": { "n": i } })).collect())
}

const AUDITOR: &str = r#"
-- Added to a running deployment by the test: audits every Counted event.
bus:register("auditor", { appends = { "Audited" } })
-- It joins with history: its state is built from every past event (rebuild), then it goes on live.
bus:add_event_listener("Counted", function(event_type, key, correlation, data, meta)
  redis:incr("seen")
end, { rebuild = true })
bus:add_route("/audit", "POST", function(method, path, params, body, query)
  bus:send("Audited", "audit-1", "any", nil, { seen = redis:get("seen") })
  return 200, { ok = true }
end)
bus:add_route("/forge", "POST", function(method, path, params, body, query)
  local ok, e = pcall(function() return bus:send("Counted", "k-0", "any", nil, { n = -1 }) end)
  return 200, { ok = ok, error = tostring(e) }
end)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_service_joins_and_leaves_a_running_deployment_and_insiders_gain_nothing() {
    let mut d = Deployment::start().await;
    let counter = sequent_tests::repo_root().join("tests/lua/superclient_counter.lua");
    d.register(&[counter.to_str().unwrap()]).await;
    d.register(&["--reader", "analyst"]).await;
    let mut test = d.instance(&counter, "test-1").await;

    // Traffic runs while the auditor is added.
    let (s, v) = d.append(&d.operator_token, counted(40, 0)).await;
    assert_eq!(s, 201, "{v}");
    let traffic = {
        let (url, token) = (d.gateway_http.clone(), d.operator_token.clone());
        tokio::spawn(async move {
            for batch in 0..20 {
                let r = reqwest::Client::new().post(format!("{url}/v1/events")).bearer_auth(&token).json(&json!({ "events": counted(5, 40 + batch * 5) })).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 201);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // ---- one command adds a service: no edit, no restart
    let dir = TempDir::new("auditor").unwrap();
    let auditor_script = dir.path().join("auditor.lua");
    std::fs::write(&auditor_script, AUDITOR).unwrap();
    d.register(&[auditor_script.to_str().unwrap()]).await;
    let mut auditor = d.instance(&auditor_script, "auditor-1").await;
    traffic.await.unwrap();
    // It saw every Counted event from the beginning, once.
    wait_until("the auditor to see all 140 events", Duration::from_secs(60), || async {
        let v = d.dump("auditor").await;
        if v["seen"] == json!(140) { Ok(true) } else { Err(format!("{v}")) }
    }).await.unwrap();
    let url = auditor.wait_for_line("http listening on", Duration::from_secs(1)).await.unwrap();
    let addr = url.rsplit("http listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
    // Its routes are internal (the default): only the deployment's services may call them.
    let r = reqwest::Client::new().post(format!("http://{addr}/audit")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401, "an internal route answered a caller without the deployment's token");
    eprintln!("ATTACK: anything on the host calls an internal route without the deployment's service token -> 401, nothing sent");
    let internal = |path: &str| {
        reqwest::Client::new().post(format!("http://{addr}{path}")).header(sequent_protocol::declaration::SERVICE_TOKEN_HEADER, &d.service_token).json(&json!({}))
    };
    let r = internal("/audit").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let audited = reqwest::get(format!("{}/v1/events?type=Audited", d.gateway_http)).await.unwrap().status().as_u16();
    assert_eq!(audited, 401, "reading the gateway wants a token");
    let analyst = d.credential("analyst").token();
    let r = reqwest::Client::new().get(format!("{}/v1/events?type=Audited", d.gateway_http)).bearer_auth(&analyst).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "the auditor's declared append went through: {v}");
    assert_eq!(v["events"][0]["producer"]["service"], "auditor");

    // Its appends outside its declaration are refused (over NATS, from its script) ...
    let v: Value = internal("/forge").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("did not declare"), "{v}");
    // ... and over HTTP with its token; a reader's token may not append at all.
    let (s, v) = d.append(&d.credential("auditor").token(), counted(1, 999)).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = d.append(&analyst, counted(1, 999)).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = d.append("nobody:wrong", counted(1, 999)).await;
    assert_eq!(s, 401, "{v}");
    eprintln!("ATTACK: appends outside the declaration (NATS and HTTP), by a reader, with no token -> refused, 403, 403, 401");

    // ---- with the auditor's NATS credential
    let (client, mut errors) = d.connect_as("auditor").await;
    let js = async_nats::jetstream::new(client.clone());
    let events = js.get_stream_no_info("EVENTS").await.unwrap();
    // No consumer of its choosing, by subject or by body.
    let made = tokio::time::timeout(
        Duration::from_secs(3),
        events.create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: Some("test-p00".into()), ..Default::default() }),
    )
    .await;
    assert!(!matches!(made, Ok(Ok(_))), "a service redefined another's consumer");
    errors.wait_for("Permissions Violation", Duration::from_secs(5)).await.unwrap();
    eprintln!("ATTACK: auditor creates/updates consumer test-p00 -> permissions violation, nothing changed");
    // No pull from another service's consumer, no append as another service.
    for subject in ["$JS.API.CONSUMER.MSG.NEXT.EVENTS.test-p00", "sequent.append.test", "$JS.API.CONSUMER.DELETE.EVENTS.test-p00"] {
        let r = tokio::time::timeout(Duration::from_secs(3), client.request(subject.to_string(), "{}".into())).await;
        assert!(!matches!(r, Ok(Ok(_))), "{subject} answered");
        errors.wait_for(subject, Duration::from_secs(5)).await.unwrap();
        eprintln!("ATTACK: auditor publishes to {subject} -> permissions violation");
    }
    // Another principal's inbox and the stream's subjects are not its to read.
    let _spy = client.subscribe("_INBOX_test.>").await.unwrap();
    errors.wait_for("_INBOX_test", Duration::from_secs(5)).await.unwrap();
    eprintln!("ATTACK: auditor subscribes to the test service's inbox -> permissions violation");

    // ---- tails: the analyst reads the stream through a tail the gateway makes, and nobody
    // else's tail can be pulled.
    let (reader, _) = d.connect_as("analyst").await;
    let mut tail = sequent_net::Tail::open(reader.clone(), "analyst", sequent_net::tail::events(vec!["ev.*.*.Counted".into()], sequent_protocol::TailStart::All)).await.unwrap();
    assert_eq!(tail.pending_at_open, 140);
    let first = tail.next().await.unwrap();
    assert_eq!(first.seq, 1);
    let stolen = sequent_protocol::subjects::pull_subject("auditor", "events", tail.consumer());
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    client.publish_with_reply(stolen.clone(), inbox, "{\"batch\":10}".into()).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut sub)).await.is_err(), "the auditor pulled the analyst's tail");
    d.gateway.wait_for_line("pull request refused", Duration::from_secs(5)).await.unwrap();
    eprintln!("ATTACK: auditor pulls the analyst's tail through the relay -> refused by the gateway");
    let analyst_js = async_nats::jetstream::new(reader.clone());
    let made = tokio::time::timeout(Duration::from_secs(3), analyst_js.get_stream_no_info("EVENTS").await.unwrap().create_consumer(async_nats::jetstream::consumer::pull::Config::default())).await;
    assert!(!matches!(made, Ok(Ok(_))), "the analyst made a consumer");
    eprintln!("ATTACK: analyst creates a consumer -> permissions violation");

    // ---- /v1/live: a read token, and no foreign page
    let r = reqwest::Client::new()
        .get(format!("{}/v1/live?token={analyst}", d.gateway_http))
        .header("origin", "https://evil.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    eprintln!("ATTACK: a page of another origin opens /v1/live with a read token -> 403");

    // ---- removing the auditor revokes it: its connections close and are refused
    let (ok, out) = d.superclient(&["unregister", "auditor"]).await;
    assert!(ok, "{out}");
    auditor.wait_for_line("NATS refused", Duration::from_secs(20)).await.unwrap();
    let again = sequent_tests::connect(&d.nats_url, "auditor", &d.credential("auditor").secret).await;
    assert!(again.is_err(), "an unregistered principal connected");
    let (s, _) = d.append(&d.credential("auditor").token(), counted(1, 1000)).await;
    assert_eq!(s, 401);
    eprintln!("ATTACK: the unregistered auditor reconnects and uses its token -> refused, 401");
    // The rest goes on: the test service still counts.
    let (s, v) = d.append(&d.operator_token, counted(7, 2000)).await;
    assert_eq!(s, 201, "{v}");
    wait_until("the test service to count on", Duration::from_secs(30), || async {
        let total = d.dump("test").await["total"]["events"].clone();
        total == json!(147)
    })
    .await
    .unwrap();
    test.signal(libc::SIGTERM).unwrap();
    let _ = test.wait().await;
    drop(d.nats.signal(libc::SIGTERM));
}

/// A service the explorer has never heard of: its script is registered only now, never run.
const ZOO: &str = r#"
bus:register("zoo", { appends = { "Fed" }, sensitive = { Fed = { "keeper_pin" } } })
bus:add_event_listener("Fed", function() end)
"#;

/// The platform's explorer hides what the registered declarations mark sensitive, whichever
/// service declares it: a service registered while the explorer runs is covered from then on,
/// in browse, key history, trace and the live tail, with no change to the explorer.
#[tokio::test(flavor = "multi_thread")]
async fn the_explorer_redacts_what_any_registered_declaration_marks_sensitive() {
    let d = Deployment::start().await;
    let explorer_script = sequent_tests::repo_root().join("superclient/platform/explorer.lua");
    d.register(&[explorer_script.to_str().unwrap()]).await;
    let ui = TempDir::new("explorer-ui").unwrap();
    std::fs::write(ui.path().join("explorer.html"), "<!doctype html><title>Sequent Explorer</title>").unwrap();
    let port = free_port();
    let env = vec![
        ("NATS_URL".to_string(), d.nats_url.clone()),
        ("REDIS_URL".to_string(), d.redis_url.clone()),
        ("SEQUENT_CREDENTIALS_DIR".to_string(), d.credentials.to_string_lossy().to_string()),
        ("SEQUENT_TOKEN_SECRET".to_string(), secret()),
        ("SEQUENT_GATEWAY_URL".to_string(), d.gateway_http.clone()),
        ("SEQUENT_GATEWAY_TOKEN".to_string(), d.credential("explorer").token()),
        ("SEQUENT_ADMIN_USER".to_string(), "ops".to_string()),
        ("SEQUENT_ADMIN_PASSWORD".to_string(), "a password for this test".to_string()),
        ("SEQUENT_UI_DIR".to_string(), ui.path().to_string_lossy().to_string()),
        ("RUST_LOG".to_string(), "info,async_nats=warn".to_string()),
    ];
    let listen = format!("127.0.0.1:{port}");
    let args = [explorer_script.to_str().unwrap(), "--instance", "explorer-1", "--admin-api", "--listen", &listen];
    let mut explorer = Child::spawn("explorer", binary("superclient"), &args, &env).unwrap();
    explorer.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let r = http.post(format!("{base}/api/admin/sessions")).json(&json!({ "username": "ops", "password": "a password for this test" })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let get = |path: String| {
        let (http, token, base) = (http.clone(), token.clone(), base.clone());
        async move {
            let r = http.get(format!("{base}{path}")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };

    // Before anyone declares it, the field is shown as stored.
    let fed = json!([{ "type": "Fed", "key": "lion-1", "expect": "any", "correlation": "feeding-1", "data": { "animal": "lion", "keeper_pin": "1234" } }]);
    let (s, v) = d.append(&d.operator_token, fed).await;
    assert_eq!(s, 201, "{v}");
    let v = get("/api/admin/events?type=Fed".into()).await;
    assert_eq!(v["events"][0]["data"]["keeper_pin"], "1234", "{v}");

    // The zoo registers (its script never runs): from now on nobody sees the pin.
    let dir = TempDir::new("zoo").unwrap();
    let zoo = dir.path().join("zoo.lua");
    std::fs::write(&zoo, ZOO).unwrap();
    d.register(&[zoo.to_str().unwrap()]).await;
    wait_until("the explorer to hide the zoo's keeper_pin", Duration::from_secs(10), || async {
        let v = get("/api/admin/events?type=Fed".into()).await;
        v["events"][0]["data"]["keeper_pin"] == "[redacted]"
    })
    .await
    .unwrap();
    for path in ["/api/admin/events?type=Fed", "/api/admin/keys/lion-1/events", "/api/admin/correlations/feeding-1/events"] {
        let v = get(path.into()).await;
        let e = &v["events"][0];
        assert_eq!((e["data"]["animal"].as_str(), e["data"]["keeper_pin"].as_str()), (Some("lion"), Some("[redacted]")), "{path}: {v}");
    }
    let ws = format!("ws://{listen}/api/admin/live?token={token}&types=Fed&from_seq=1");
    let (mut tail, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    use futures::StreamExt;
    let m = loop {
        match tokio::time::timeout(Duration::from_secs(10), tail.next()).await.expect("a tail message within 10 s") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => break serde_json::from_str::<Value>(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the tail ended: {other:?}"),
        }
    };
    assert_eq!((m["type"].as_str(), m["data"]["keeper_pin"].as_str(), m["data"]["animal"].as_str()), (Some("Fed"), Some("[redacted]"), Some("lion")), "{m}");
    // The gateway says which fields, for any reader to apply.
    let r = http.get(format!("{}/v1/sensitive", d.gateway_http)).bearer_auth(&d.operator_token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["sensitive"]["Fed"], json!(["keeper_pin"]));
    explorer.kill9().await.ok();
}
