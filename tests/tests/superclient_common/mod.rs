//! Shared pieces of the superclient tests: a stack of real servers (nats-server, Redis,
//! bus-gateway) and real superclient processes.
#![allow(dead_code)]

use futures::StreamExt;
use sequent_protocol::AppendReply;
use sequent_tests::{binary, free_port, nats, redis, repo_root, wait_until, Child, NatsServer, RedisServer, TempDir};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The heavy tests run one at a time: two cores are shared by several processes each.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub struct Stack {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub gateway: Child,
    pub gateway_http: String,
    pub admin: async_nats::Client,
    /// On a stack with the auth callout ([`stack_with_callout`]).
    pub callout: Option<Callout>,
}

/// What a stack with the auth callout adds: the account seed its gateways answer with, and the
/// registered services' credentials.
pub struct Callout {
    pub seed: String,
    pub credentials: TempDir,
}

pub async fn stack() -> Stack {
    stack_with(&[]).await
}

/// [`stack`] with more environment for the gateway (e.g. `SEQUENT_PARTITIONS`).
pub async fn stack_with(gateway_env: &[(&str, &str)]) -> Stack {
    stack_on(nats().await.expect("nats-server starts"), gateway_env).await
}

/// [`stack_with`] on a nats-server of the caller's (e.g. `nats_process`, to restart it).
pub async fn stack_on(nats: NatsServer, gateway_env: &[(&str, &str)]) -> Stack {
    let env: Vec<(String, String)> = gateway_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    start(nats, env, None).await
}

/// A stack made as a deployment is: nats-server with the auth callout (nats/callout.conf), a
/// gateway answering it, and the services of `scripts` registered (`superclient register`),
/// so their instances connect with their own credentials and the permissions the gateway gives
/// them (`sequent_auth::Permissions::of` for its --stream and --partitions).
pub async fn stack_with_callout(scripts: &[&str]) -> Stack {
    let account = sequent_auth::KeyPair::new_account();
    let callout = Callout { seed: account.seed().unwrap(), credentials: TempDir::new("credentials").unwrap() };
    let nats = sequent_tests::nats_with_callout(&account.public_key()).await.expect("nats-server starts");
    let mut args = vec!["register".to_string(), "--credentials-dir".into(), callout.credentials.path().to_string_lossy().to_string()];
    args.extend(scripts.iter().map(|s| script(s).to_string_lossy().to_string()));
    let stack = start(nats, callout.gateway_env(), Some(callout)).await;
    // The registry bucket is the gateway's: registered once it runs.
    let out = tokio::process::Command::new(binary("superclient"))
        .args(&args)
        .env("NATS_URL", &stack.nats.url)
        .env("SEQUENT_ADMIN_NATS_CREDENTIALS", format!("{}:{}", sequent_tests::ADMIN.0, sequent_tests::ADMIN.1))
        .output()
        .await
        .expect("superclient register runs");
    assert!(out.status.success(), "register: {}", String::from_utf8_lossy(&out.stderr));
    stack
}

/// Redis and a gateway (with `gateway_env`) beside `nats`.
async fn start(nats: NatsServer, gateway_env: Vec<(String, String)>, callout: Option<Callout>) -> Stack {
    let redis = redis().await.expect("redis starts");
    let port = free_port();
    let mut env = vec![
        ("NATS_URL".to_string(), nats.url.clone()),
        ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{port}")),
        ("RUST_LOG".to_string(), "warn,bus_gateway=info".to_string()),
    ];
    env.extend(gateway_env);
    let mut gateway = Child::spawn("gateway", binary("bus-gateway"), &[] as &[&str], &env).expect("bus-gateway starts");
    gateway.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.expect("bus-gateway gets ready");
    let admin = nats.admin().await.expect("admin connects");
    Stack { nats, redis, gateway, gateway_http: format!("http://127.0.0.1:{port}"), admin, callout }
}

impl Callout {
    /// The environment of a gateway answering the callout.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            ("SEQUENT_CALLOUT_SEED".to_string(), self.seed.clone()),
            ("SEQUENT_SYS_NATS_CREDENTIALS".to_string(), format!("{}:{}", sequent_tests::SYS.0, sequent_tests::SYS.1)),
        ]
    }
}

pub fn script(name: &str) -> PathBuf {
    let p = repo_root().join("tests/lua").join(name);
    if p.exists() {
        p
    } else {
        repo_root().join("services/examples").join(name)
    }
}

pub struct Instance {
    pub name: String,
    pub child: Child,
    pub http: String,
    /// `http://addr` of the process's metrics listener (`--metrics-listen`).
    pub metrics: String,
}

impl Instance {
    /// Fails if this process ever ran two workers of one partition at once: its log has a
    /// worker "taking partition" P before the previous worker of P logged "released partition".
    pub fn assert_one_worker_per_partition(&self) {
        let mut running = std::collections::BTreeSet::new();
        for line in self.child.output() {
            let number = |marker: &str| line.split(marker).nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|p| p.parse::<u32>().ok());
            if let Some(p) = number("taking partition partition=") {
                assert!(running.insert(p), "{}: a second worker took partition {p} while the first still ran: {line}", self.name);
            } else if let Some(p) = number("released partition partition=") {
                running.remove(&p);
            }
        }
    }
}

impl Stack {
    pub fn superclient_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NATS_URL".into(), self.nats.url.clone()),
            ("REDIS_URL".into(), self.redis.url.clone()),
            ("RUST_LOG".into(), "info,async_nats=warn,lua=warn".into()),
        ];
        if let Some(c) = &self.callout {
            env.push(("SEQUENT_CREDENTIALS_DIR".into(), c.credentials.path().to_string_lossy().to_string()));
        }
        env
    }

    /// Starts `superclient SCRIPT --instance NAME ARGS...` and waits until it serves.
    pub async fn instance(&self, script_name: &str, name: &str, args: &[&str]) -> Instance {
        let script = script(script_name);
        let script = script.to_string_lossy().to_string();
        let mut all = vec![script.as_str(), "--instance", name];
        all.extend_from_slice(args);
        let mut child = Child::spawn(name, binary("superclient"), &all, &self.superclient_env()).expect("superclient starts");
        let line = child.wait_for_line("metrics listening on", Duration::from_secs(60)).await.expect("superclient serves metrics");
        let metrics = line.rsplit("metrics listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
        let line = child.wait_for_line("http listening on", Duration::from_secs(60)).await.expect("superclient serves");
        let addr = line.rsplit("http listening on ").next().unwrap().split_whitespace().next().unwrap().to_string();
        child.wait_for_line("superclient ready", Duration::from_secs(30)).await.expect("superclient ready");
        Instance { name: name.to_string(), child, http: format!("http://{addr}"), metrics: format!("http://{metrics}") }
    }

    /// Runs a superclient subcommand to completion; returns (success, stdout+stderr).
    pub async fn command(&self, args: &[&str]) -> (bool, String) {
        let out = tokio::process::Command::new(binary("superclient"))
            .args(args)
            .envs(self.superclient_env())
            .output()
            .await
            .expect("superclient runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("[superclient {}] {text}", args.join(" "));
        (out.status.success(), text)
    }

    pub async fn redis_con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }

    pub async fn active_ns(&self, service: &str) -> Option<String> {
        redis::cmd("GET").arg(format!("sequent:{{{service}}}:active")).query_async(&mut self.redis_con().await).await.unwrap()
    }

    /// Appends one event as the service `as_service` (through the gateway, over NATS).
    pub async fn append(&self, as_service: &str, event_type: &str, key: &str, data: serde_json::Value) -> AppendReply {
        append_with(&self.admin, as_service, event_type, key, data).await
    }

    /// Appends many events with `concurrency` requests in flight; panics if one is not stored.
    pub async fn append_many(&self, as_service: &str, events: Vec<(String, String, serde_json::Value)>, concurrency: usize) {
        let admin = self.admin.clone();
        let as_service = as_service.to_string();
        futures::stream::iter(events)
            .map(|(t, k, d)| {
                let (admin, svc) = (admin.clone(), as_service.clone());
                async move {
                    let reply = append_with(&admin, &svc, &t, &k, d).await;
                    assert!(reply.all_stored(), "append of {t} to {k} failed: {reply:?}");
                }
            })
            .buffer_unordered(concurrency)
            .collect::<Vec<_>>()
            .await;
    }

    /// Integer value of a key of the service's active namespace.
    pub async fn get_int(&self, service: &str, key: &str) -> Option<i64> {
        let ns = self.active_ns(service).await?;
        let v: Option<String> = redis::cmd("GET").arg(format!("{ns}:{key}")).query_async(&mut self.redis_con().await).await.unwrap();
        v.map(|v| v.parse().unwrap())
    }

    /// The script's state of a service (`superclient dump`), as JSON.
    pub async fn dump(&self, service: &str) -> BTreeMap<String, serde_json::Value> {
        let (ok, text) = self.command(&["dump", service]).await;
        assert!(ok, "dump failed: {text}");
        let start = text.find('{').expect("dump prints JSON");
        let end = text.rfind('}').expect("dump prints JSON");
        serde_json::from_str(&text[start..=end]).expect("dump is JSON")
    }

    /// Waits until `count:<key>` equals the expected count for every key.
    pub async fn wait_counts(&self, service: &str, expected: &BTreeMap<String, i64>, timeout: Duration) {
        let what = format!("{} per-key counters of {service} to reach their event counts", expected.len());
        let done = wait_until(&what, timeout, || async {
            let Some(ns) = self.active_ns(service).await else { return false };
            let keys: Vec<String> = expected.keys().map(|k| format!("{ns}:count:{k}")).collect();
            let vals: Vec<Option<i64>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.redis_con().await).await.unwrap();
            vals.iter().zip(expected.values()).all(|(v, e)| v.unwrap_or(0) >= *e)
        })
        .await;
        if let Err(e) = done {
            panic!("{e}; short of their counts (key, counted, expected): {:?}", self.short_counts(service, expected).await);
        }
    }

    /// The keys whose counter is below the expected count: (key, counted, expected).
    async fn short_counts(&self, service: &str, expected: &BTreeMap<String, i64>) -> Vec<(String, Option<i64>, i64)> {
        let mut short = Vec::new();
        for (key, e) in expected {
            let v = self.get_int(service, &format!("count:{key}")).await;
            if v.unwrap_or(0) < *e {
                short.push((key.clone(), v, *e));
            }
        }
        short
    }
}

pub async fn append_with(client: &async_nats::Client, as_service: &str, event_type: &str, key: &str, data: serde_json::Value) -> AppendReply {
    let body = serde_json::json!({ "events": [{ "type": event_type, "key": key, "expect": "any", "data": data }] });
    for attempt in 0..20 {
        match client.request(format!("sequent.append.{as_service}"), body.to_string().into()).await {
            Ok(msg) => return serde_json::from_slice(&msg.payload).expect("append replies are JSON"),
            Err(e) if attempt < 19 => {
                eprintln!("append retry: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
    unreachable!()
}

/// One key in each of partitions `0..n` (of 16): `<prefix>-<p>-<i>`, the first such that lands
/// in partition `p`.
pub fn one_key_per_partition(prefix: &str, n: u32) -> Vec<String> {
    (0..n).map(|p| (0..).map(|i| format!("{prefix}-{p}-{i}")).find(|k| sequent_protocol::subjects::partition_of(k, 16) == p).unwrap()).collect()
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// Partitions an instance reports owning on /health.
pub async fn owned(inst: &Instance) -> Vec<u64> {
    let (_, h) = get_json(&format!("{}/health", inst.http)).await;
    h["partitions"].as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).collect()).unwrap_or_default()
}

/// Waits until the instances own all 16 partitions between them, each exactly once.
pub async fn wait_balanced(instances: &[&Instance], timeout: Duration) {
    wait_until("the partitions to be spread over the instances, each owned once", timeout, || async {
        let mut all = Vec::new();
        for i in instances {
            let mine = owned(i).await;
            if mine.is_empty() {
                return false;
            }
            all.extend(mine);
        }
        all.sort();
        all == (0..16).collect::<Vec<u64>>()
    })
    .await
    .unwrap();
}

/// The `seqs:<key>` list of the active namespace, as numbers.
pub async fn seqs(stack: &Stack, service: &str, key: &str) -> Vec<u64> {
    let ns = stack.active_ns(service).await.unwrap();
    let v: Vec<String> = redis::cmd("LRANGE").arg(format!("{ns}:seqs:{key}")).arg(0).arg(-1).query_async(&mut stack.redis_con().await).await.unwrap();
    v.iter().map(|s| s.parse().unwrap()).collect()
}

pub async fn smembers(stack: &Stack, service: &str, key: &str) -> Vec<String> {
    let ns = stack.active_ns(service).await.unwrap();
    let v: Vec<String> = redis::cmd("SMEMBERS").arg(format!("{ns}:{key}")).query_async(&mut stack.redis_con().await).await.unwrap();
    let mut v: Vec<String> = v.iter().map(|m| serde_json::from_str(m).unwrap_or_else(|_| m.clone())).collect();
    v.sort();
    v
}

/// Every key's applied sequences must be strictly increasing (stream order, no repeats).
pub fn assert_ordered(key: &str, seqs: &[u64]) {
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "events of {key} applied out of order or twice: {seqs:?}");
}
