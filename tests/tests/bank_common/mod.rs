//! The bank of services/ on real servers: nats-server, Redis, the bus-gateway and superclient
//! processes running services/*.lua (and, with a bfaf, the platform's explorer), and a small
//! client of the bfaf's and the explorer's APIs.
#![allow(dead_code)]

mod checks;
mod load;

// Not every test file uses every piece.
#[allow(unused_imports)]
pub use checks::*;
#[allow(unused_imports)]
pub use load::*;

use sequent_tests::{binary, free_port, nats, nats_cluster, redis, repo_root, wait_until, Child, NatsCluster, NatsServer, RedisServer, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const ADMIN_USER: &str = "operator";
pub const ADMIN_PASSWORD: &str = "operator-password-for-tests";

/// The heavy tests of one binary run one at a time: two cores are shared by a dozen processes.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub struct Instance {
    pub service: String,
    pub name: String,
    pub child: Child,
    pub url: String,
    /// `http://addr` of its metrics listener.
    pub metrics: String,
}

/// One nats-server, or a 3-node cluster (the stream then has 3 replicas).
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    /// What the binaries' `NATS_URL` takes (comma separated for a cluster).
    pub fn url(&self) -> String {
        match self {
            Nats::Single(n) => n.url.clone(),
            Nats::Cluster(c) => c.url(),
        }
    }

    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Nats::Cluster(c) => c,
            Nats::Single(_) => panic!("the bank runs on a single nats-server"),
        }
    }

    pub fn single(&mut self) -> &mut NatsServer {
        match self {
            Nats::Single(n) => n,
            Nats::Cluster(_) => panic!("the bank runs on a cluster"),
        }
    }
}

/// How to start the bank (see [`Bank::start_with`]).
pub struct Setup<'a> {
    pub services: &'a [(&'a str, usize)],
    pub extra: &'a [(&'a str, &'a [&'a str])],
    /// A 3-node NATS cluster with 3 replicas instead of one server.
    pub cluster: bool,
    pub gateways: usize,
}

pub struct Gateway {
    pub child: Child,
    pub http: String,
}

pub struct Bank {
    pub nats: Nats,
    pub redis: RedisServer,
    /// The gateways; services reach them over NATS (a queue group), `gateway_http` is the first.
    pub gateways: Vec<Gateway>,
    pub gateway_http: String,
    pub instances: Vec<Instance>,
    /// A tiny stand-in for ui/dist (the real one is only there after `npm run build`).
    pub ui: TempDir,
    pub admin: async_nats::Client,
    /// The explorer's address, when the bank has a bfaf.
    pub explorer_url: Option<String>,
}

pub fn script(service: &str) -> String {
    if service == "explorer" {
        return repo_root().join("superclient/platform/explorer.lua").to_string_lossy().to_string();
    }
    repo_root().join("services").join(format!("{service}.lua")).to_string_lossy().to_string()
}

impl Bank {
    /// Servers, the gateway, and `n` instances of each of `services` (started in parallel).
    pub async fn start(services: &[(&str, usize)], extra: &[(&str, &[&str])]) -> Bank {
        Bank::start_with(Setup { services, extra, cluster: false, gateways: 1 }).await
    }

    pub async fn start_with(setup: Setup<'_>) -> Bank {
        let nats = if setup.cluster {
            Nats::Cluster(nats_cluster().await.expect("the nats cluster starts"))
        } else {
            Nats::Single(nats().await.expect("nats-server starts"))
        };
        let redis = redis().await.expect("redis starts");
        let mut gateways = Vec::new();
        for i in 1..=setup.gateways {
            gateways.push(Bank::spawn_gateway(&nats, setup.cluster, &format!("gateway-{i}"), free_port()).await);
        }
        let ui = TempDir::new("ui").unwrap();
        std::fs::create_dir_all(ui.path().join("assets")).unwrap();
        std::fs::write(ui.path().join("index.html"), "<!doctype html><title>Sequent Bank</title><div id=root></div>").unwrap();
        std::fs::write(ui.path().join("assets/app-1234.js"), "console.log('bank')").unwrap();
        let admin = sequent_tests::connect(&nats.url(), sequent_tests::ADMIN.0, sequent_tests::ADMIN.1).await.unwrap();
        let gateway_http = gateways[0].http.clone();
        let mut bank = Bank { nats, redis, gateways, gateway_http, instances: Vec::new(), ui, admin, explorer_url: None };
        // Operators use the platform's explorer beside the bank (the bfaf links to it). It picks
        // its own port, ready before the bfaf starts: a port picked here could be taken by
        // another process before the explorer binds it.
        if setup.services.iter().any(|(s, _)| *s == "bfaf") {
            let explorer = Bank::ready(bank.spawn("explorer", "explorer-1", &[])).await;
            bank.explorer_url = Some(explorer.url.clone());
            bank.instances.push(explorer);
        }
        let mut spawned = Vec::new();
        for (service, n) in setup.services {
            for i in 1..=*n {
                let args: Vec<&str> = setup.extra.iter().filter(|(s, _)| s == service).flat_map(|(_, a)| a.iter().copied()).collect();
                spawned.push(bank.spawn(service, &format!("{service}-{i}"), &args));
            }
        }
        for instance in spawned {
            let instance = Bank::ready(instance).await;
            bank.instances.push(instance);
        }
        bank
    }

    async fn spawn_gateway(nats: &Nats, cluster: bool, name: &str, port: u16) -> Gateway {
        let env = vec![
            ("NATS_URL".to_string(), nats.url()),
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{port}")),
            ("SEQUENT_REPLICAS".to_string(), if cluster { "3" } else { "1" }.to_string()),
            ("RUST_LOG".to_string(), "warn,bus_gateway=info".to_string()),
            // Each service may append only the event types it declares.
            ("SEQUENT_POLICY".to_string(), repo_root().join("services/policy.json").to_string_lossy().to_string()),
        ];
        let mut child = Child::spawn(name, binary("bus-gateway"), &[] as &[&str], &env).expect("bus-gateway starts");
        child.wait_for_line("bus-gateway ready", Duration::from_secs(60)).await.expect("bus-gateway gets ready");
        Gateway { child, http: format!("http://127.0.0.1:{port}") }
    }

    /// Starts gateway `i` again (it must have been killed) on its HTTP port.
    pub async fn restart_gateway(&mut self, i: usize) {
        let port: u16 = self.gateways[i].http.rsplit(':').next().unwrap().parse().unwrap();
        let cluster = matches!(self.nats, Nats::Cluster(_));
        self.gateways[i] = Bank::spawn_gateway(&self.nats, cluster, &format!("gateway-{}", i + 1), port).await;
    }

    /// SIGKILLs instance `name` and starts a new instance `new_name` of its service on the
    /// same HTTP address (clients of the bfaf know it by address).
    pub async fn replace_instance(&mut self, name: &str, new_name: &str) {
        let at = self.instances.iter().position(|i| i.name == name).expect("an instance of that name");
        let mut old = self.instances.remove(at);
        old.child.kill9().await.unwrap();
        let listen = old.url.trim_start_matches("http://").to_string();
        self.add(&old.service, new_name, &["--listen", &listen]).await;
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), self.nats.url()),
            ("REDIS_URL".into(), self.redis.url.clone()),
            ("RUST_LOG".into(), std::env::var("SEQUENT_TEST_LOG").unwrap_or_else(|_| "info,async_nats=warn,lua=warn".into())),
            ("SEQUENT_GATEWAY_URL".into(), self.gateway_http.clone()),
            ("SEQUENT_UI_DIR".into(), self.ui.path().to_string_lossy().to_string()),
        ]
    }

    fn spawn(&self, service: &str, name: &str, args: &[&str]) -> (String, String, Child) {
        let script = script(service);
        let mut all = vec![script.as_str(), "--instance", name];
        let mut env = self.env();
        if service == "explorer" {
            // Only the explorer knows the operators' credential and signs their sessions.
            all.push("--admin-api");
            env.extend([
                ("SEQUENT_ADMIN_USER".into(), ADMIN_USER.into()),
                ("SEQUENT_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
                ("SEQUENT_TOKEN_SECRET".into(), "the explorer's own session key, for tests only".into()),
            ]);
        }
        if let (true, Some(url)) = (service == "bfaf", &self.explorer_url) {
            env.push(("SEQUENT_EXPLORER_URL".into(), format!("{url}/explorer")));
        }
        all.extend_from_slice(args);
        let child = Child::spawn(name, binary("superclient"), &all, &env).expect("superclient starts");
        (service.to_string(), name.to_string(), child)
    }

    async fn ready((service, name, mut child): (String, String, Child)) -> Instance {
        let address = |line: String, after: &str| line.rsplit(after).next().unwrap().split_whitespace().next().unwrap().to_string();
        let metrics = address(child.wait_for_line("metrics listening on ", Duration::from_secs(90)).await.expect("superclient serves metrics"), "metrics listening on ");
        let addr = address(child.wait_for_line("http listening on ", Duration::from_secs(90)).await.expect("superclient serves"), "http listening on ");
        child.wait_for_line("superclient ready", Duration::from_secs(90)).await.expect("superclient ready");
        Instance { service, name, child, url: format!("http://{addr}"), metrics: format!("http://{metrics}") }
    }

    /// Starts one more instance and waits until it serves.
    pub async fn add(&mut self, service: &str, name: &str, args: &[&str]) -> &Instance {
        let spawned = self.spawn(service, name, args);
        let instance = Bank::ready(spawned).await;
        self.instances.push(instance);
        self.instances.last().unwrap()
    }

    /// Waits until the instances of `service` own all 16 partitions between them (membership
    /// has seen them), so that events stored from now on are theirs to handle.
    pub async fn wait_owned(&self, service: &str) {
        let urls: Vec<String> = self.of(service).iter().map(|i| i.url.clone()).collect();
        wait_until(&format!("{service} to own every partition"), Duration::from_secs(30), || {
            let urls = urls.clone();
            async move {
                let mut owned = std::collections::BTreeSet::new();
                for url in urls {
                    let health: Value = reqwest::get(format!("{url}/health")).await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
                    owned.extend(health["partitions"].as_array().into_iter().flatten().filter_map(|p| p.as_u64()));
                }
                Ok::<bool, String>(owned.len() == 16)
            }
        })
        .await
        .unwrap();
    }

    pub fn of(&self, service: &str) -> Vec<&Instance> {
        self.instances.iter().filter(|i| i.service == service).collect()
    }

    pub fn instance_mut(&mut self, name: &str) -> &mut Instance {
        self.instances.iter_mut().find(|i| i.name == name).expect("an instance of that name")
    }

    /// A client of the first bfaf instance.
    pub fn api(&self) -> Api {
        Api::new(&self.of("bfaf")[0].url)
    }

    /// A client of the explorer (operators' API under /api/admin).
    pub fn explorer(&self) -> Api {
        Api::new(&self.of("explorer")[0].url)
    }

    /// Runs a superclient subcommand to completion; returns (success, output).
    pub async fn superclient(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new(binary("superclient")).args(args).envs(self.env()).output().await.expect("superclient runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// A service's Redis state (`superclient dump`).
    pub async fn dump(&self, service: &str) -> BTreeMap<String, Value> {
        let (ok, text) = self.superclient(&["dump", service]).await;
        assert!(ok, "dump of {service} failed: {text}");
        let start = text.find('{').expect("dump prints JSON");
        let end = text.rfind('}').expect("dump prints JSON");
        serde_json::from_str(&text[start..=end]).expect("dump is JSON")
    }

    /// Events of a key from the gateway, oldest first.
    pub async fn key_events(&self, key: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            let url = format!("{}/v1/keys/{key}/events?from_seq={from}&limit=1000", self.gateway_http);
            let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_from_seq"].as_u64() {
                Some(n) => from = n,
                None => return out,
            }
        }
    }

    pub async fn correlation_events(&self, id: &str) -> Vec<Value> {
        let url = format!("{}/v1/correlations/{id}/events", self.gateway_http);
        let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let mut events = page["events"].as_array().cloned().unwrap_or_default();
        events.sort_by_key(|e| e["seq"].as_u64());
        events
    }

    /// Every event of a type (all pages).
    pub async fn events_of_type(&self, event_type: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            let url = format!("{}/v1/events?type={event_type}&from_seq={from}&limit=1000", self.gateway_http);
            let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_from_seq"].as_u64() {
                Some(n) => from = n,
                None => return out,
            }
        }
    }

    /// The stream's last sequence (0 when empty).
    pub async fn last_seq(&self) -> u64 {
        let js = async_nats::jetstream::new(self.admin.clone());
        let mut stream = js.get_stream("EVENTS").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    }

    /// Waits until every service type has handled every event (consumer lag 0, as operators
    /// see it through the explorer) and the stream stopped growing meanwhile.
    pub async fn wait_settled(&self, timeout: Duration) {
        let api = self.explorer();
        let token = api.admin_token().await;
        wait_until("every service to have handled every event", timeout, || async {
            let before = self.last_seq().await;
            let (s, services) = api.call("GET", "/api/admin/services", Some(&token), None, &[]).await;
            if s != 200 {
                return Err(format!("services: {s} {services}"));
            }
            // A service that joined moments ago may not be listed yet (the explorer reads the
            // membership bucket every second): its lag counts too.
            let listed: Vec<&str> = services.as_array().unwrap().iter().filter_map(|s| s["service"].as_str()).collect();
            if let Some(missing) = self.instances.iter().find(|i| !listed.contains(&i.service.as_str())) {
                return Err(format!("{} is not listed yet", missing.service));
            }
            let lagging: Vec<String> = services
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["consumer_lag"].as_u64() != Some(0))
                .map(|s| format!("{}: {}", s["service"], s["consumer_lag"]))
                .collect();
            if !lagging.is_empty() {
                return Err(format!("lagging: {lagging:?}"));
            }
            Ok(self.last_seq().await == before)
        })
        .await
        .unwrap();
    }
}

/// A client of the bfaf's API (or the explorer's: `admin_token` logs into it).
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        // Idle connections are dropped well before the servers close them (their header-read
        // timeout, 30 s): else a request can go out on a connection the server is closing.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_idle_timeout(Duration::from_secs(10)).build().unwrap();
        Api { http, base: base.to_string() }
    }

    /// `(status, JSON body)`; a transport failure is an `Err` (the test decides whether to retry).
    pub async fn try_call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>, headers: &[(&str, &str)]) -> Result<(u16, Value), String> {
        let mut req = self.http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>, headers: &[(&str, &str)]) -> (u16, Value) {
        self.try_call(method, path, token, body, headers).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(token), Some(body), &[]).await
    }

    /// Signs up and logs in; returns the token.
    pub async fn customer(&self, username: &str) -> String {
        let (s, v) = self.call("POST", "/api/users", None, Some(json!({ "username": username, "password": "password-of-" })), &[]).await;
        assert_eq!(s, 201, "sign-up of {username}: {v}");
        self.login(username).await
    }

    pub async fn login(&self, username: &str) -> String {
        let (s, v) = self.call("POST", "/api/sessions", None, Some(json!({ "username": username, "password": "password-of-" })), &[]).await;
        assert_eq!(s, 200, "log-in of {username}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn open_account(&self, token: &str) -> String {
        let (s, v) = self.post("/api/accounts", token, json!({})).await;
        assert_eq!(s, 201, "{v}");
        v["account_id"].as_str().unwrap().to_string()
    }

    pub async fn deposit(&self, token: &str, account: &str, cents: i64) -> Value {
        let (s, v) = self.post(&format!("/api/accounts/{account}/deposits"), token, json!({ "amount_cents": cents })).await;
        assert_eq!(s, 201, "{v}");
        v
    }

    pub async fn admin_token(&self) -> String {
        let (s, v) = self.call("POST", "/api/admin/sessions", None, Some(json!({ "username": ADMIN_USER, "password": ADMIN_PASSWORD })), &[]).await;
        assert_eq!(s, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Waits until the transfer ended; returns it.
    pub async fn finished_transfer(&self, token: &str, id: &str) -> Value {
        let out = std::sync::Mutex::new(Value::Null);
        wait_until(&format!("transfer {id} to end"), Duration::from_secs(30), || async {
            let (s, v) = self.get(&format!("/api/transfers/{id}"), token).await;
            let done = s == 200 && v["status"] != "pending";
            *out.lock().unwrap() = v;
            done
        })
        .await
        .unwrap();
        out.into_inner().unwrap()
    }

    /// The whole statement, newest first, following the cursors.
    pub async fn statement(&self, token: &str, account: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/accounts/{account}/statement?limit=100&cursor={c}"),
                None => format!("/api/accounts/{account}/statement?limit=100"),
            };
            let (s, v) = self.get(&path, token).await;
            assert_eq!(s, 200, "{v}");
            out.extend(v["entries"].as_array().unwrap().iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

/// Checks an account's statement (newest first) against its events in the store, one for one:
/// same ids, amounts, balances and order; each balance continues the previous one.
pub fn assert_statement_matches_events(account: &str, statement: &[Value], events: &[Value]) {
    let money: Vec<&Value> = events.iter().filter(|e| e["type"] == "AccountCredited" || e["type"] == "AccountDebited").collect();
    assert_eq!(events.first().map(|e| e["type"].clone()), Some(json!("AccountOpened")), "{account}: the first event opens it");
    assert_eq!(money.len() + 1, events.len(), "{account}: only money events follow the opening");
    assert_eq!(statement.len(), money.len(), "{account}: {} statement entries for {} money events", statement.len(), money.len());
    let mut balance = 0i64;
    for (entry, event) in statement.iter().rev().zip(&money) {
        let sign = if event["type"] == "AccountCredited" { 1 } else { -1 };
        let amount = sign * event["data"]["amount_cents"].as_i64().unwrap();
        assert_eq!(entry["entry_id"], event["id"], "{account}: entry {entry} vs event {event}");
        assert_eq!(entry["amount_cents"].as_i64(), Some(amount), "{account}: {entry} vs {event}");
        assert_eq!(entry["balance_cents"], event["data"]["balance_cents"], "{account}: {entry} vs {event}");
        assert_eq!(entry["version"], event["version"], "{account}: {entry} vs {event}");
        balance += amount;
        assert_eq!(event["data"]["balance_cents"].as_i64(), Some(balance), "{account}: the chain of balances breaks at {event}");
        assert!(balance >= 0, "{account}: negative balance at {event}");
    }
}
