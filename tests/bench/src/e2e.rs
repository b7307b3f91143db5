//! `e2e`: money transfers through the bank as the UI makes them: `POST /api/transfers` on a
//! bfaf, then the outcome as the UI sees it, a `transfer` message with status completed or
//! failed on the customer's live socket (`/api/live`). Latency is request to that message.
//!
//! Two loads: open loop at a fixed offered rate (each transfer's clock starts at its scheduled
//! time, so queueing counts), and closed loop (N clients, each waiting for its transfer's
//! outcome before the next: saturation).
//!
//! Baseline: the floor of a transfer's latency in this design, the four consistency-checked
//! appends a transfer's saga stores, through the same gateway (NATS request/reply, as the
//! services append), one after the other: TransferRequested (expect new), the debit and the
//! credit on the two accounts (each expecting the account's next version, serialised per
//! account as the accounts service's version checks serialise them), TransferCompleted (expect
//! 1). No HTTP, Lua, Redis, delivery hop or projection: what remains is the cost of storing.

use crate::counters::{per_item, Probe};
use crate::procs::{Proc, Usage};
use crate::report::Row;
use crate::Bins;
use anyhow::{bail, Context};
use futures::{Future, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

#[derive(Clone, Copy)]
pub enum Mode {
    /// Transfers offered at this rate per second, whatever the system does with them.
    Open(f64),
    /// This many clients, each with one transfer in flight.
    Closed(usize),
    /// No load for this many seconds: what the idle bank costs (a row's items are seconds).
    Idle(u64),
}

impl Mode {
    fn case(&self, instances: usize, cohost: bool) -> String {
        let hosts = if cohost { "cohosted" } else { "inst" };
        match self {
            Mode::Open(r) => format!("open {r:.0}/s, {instances} {hosts}"),
            Mode::Closed(c) => format!("closed {c} cl, {instances} {hosts}"),
            Mode::Idle(s) => format!("idle {s} s, {instances} {hosts}"),
        }
    }
}

pub struct Opts {
    pub transfers: usize,
    pub modes: Vec<Mode>,
    pub customers: usize,
    pub instances: usize,
    pub nectar: bool,
    /// Each instance of the bank is one process hosting every service (`superclient a.lua b.lua`).
    pub cohost: bool,
    pub baseline: bool,
    /// Fail on any failed operation (the smoke test) instead of counting them in the rows.
    pub strict: bool,
}

const SERVICES: [&str; 5] = ["users", "accounts", "transfers", "nectar", "bfaf"];
const BASELINE_TYPES: [&str; 4] = ["BenchTransferRequested", "BenchDebited", "BenchCredited", "BenchTransferCompleted"];

/// The bank: servers, the gateway with the services' policy, every service `instances` times.
struct Bank {
    servers: Vec<Proc>,
    services: Vec<Proc>,
    bfafs: Vec<String>,
    _policy: PolicyFile,
}

struct PolicyFile(std::path::PathBuf);
impl Drop for PolicyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn start_bank(bins: &Bins, instances: usize, nectar: bool, cohost: bool) -> anyhow::Result<Bank> {
    let nats = Proc::nats().await?;
    let redis = Proc::redis().await?;
    // services/policy.json, plus the baseline's writer.
    let mut policy: serde_json::Map<String, Value> = serde_json::from_str(&std::fs::read_to_string("services/policy.json")?)?;
    policy.insert("bench".into(), json!(BASELINE_TYPES));
    let policy_path = std::env::temp_dir().join(format!("sequent-bench-policy-{}.json", std::process::id()));
    std::fs::write(&policy_path, serde_json::to_vec(&policy)?)?;
    let gateway = Proc::gateway(&bins.gateway, &nats.url, Some(&policy_path)).await?;
    let env = [("NATS_URL", nats.url.as_str()), ("REDIS_URL", redis.url.as_str()), ("SEQUENT_GATEWAY_URL", gateway.url.as_str())];
    let scripts: Vec<&str> = SERVICES.iter().copied().filter(|s| nectar || *s != "nectar").collect();
    // One process per service instance, or (cohosted) one process per bank instance.
    let groups: Vec<Vec<&str>> = if cohost { vec![scripts] } else { scripts.into_iter().map(|s| vec![s]).collect() };
    let mut services = Vec::new();
    for group in &groups {
        for i in 1..=instances.max(1) {
            let name = if cohost { format!("bank-{i}") } else { format!("{}-{i}", group[0]) };
            let paths: Vec<String> = group.iter().map(|s| format!("services/{s}.lua")).collect();
            services.push(Proc::superclient(&bins.superclient, &name, &paths, &[], &env).await?);
        }
    }
    let mut bfafs = Vec::new();
    for s in services.iter_mut() {
        s.ready().await?;
        if let Some(url) = s.urls.get("bfaf") {
            bfafs.push(url.clone());
        }
    }
    Ok(Bank { servers: vec![nats, redis, gateway], services, bfafs, _policy: PolicyFile(policy_path) })
}

struct Customer {
    bfaf: String,
    token: String,
    accounts: [String; 2],
}

async fn call(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> anyhow::Result<(u16, Value)> {
    let mut req = http.post(&url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Signs up and logs in customer `i`, opens two accounts with 10,000.00 in each.
async fn customer(http: &reqwest::Client, bfaf: &str, i: usize) -> anyhow::Result<Customer> {
    let who = json!({"username": format!("bench{i}"), "password": "bench password, long enough"});
    let (s, v) = call(http, format!("{bfaf}/api/users"), None, who.clone()).await?;
    anyhow::ensure!(s == 201, "sign-up: {s} {v}");
    let (s, v) = call(http, format!("{bfaf}/api/sessions"), None, who).await?;
    anyhow::ensure!(s == 200, "log-in: {s} {v}");
    let token = v["token"].as_str().context("a token")?.to_string();
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let (s, v) = call(http, format!("{bfaf}/api/accounts"), Some(&token), json!({})).await?;
        anyhow::ensure!(s == 201, "opening an account: {s} {v}");
        let id = v["account_id"].as_str().context("an account id")?.to_string();
        let (s, v) = call(http, format!("{bfaf}/api/accounts/{id}/deposits"), Some(&token), json!({"amount_cents": 1_000_000})).await?;
        anyhow::ensure!(s == 201, "deposit: {s} {v}");
        accounts.push(id);
    }
    Ok(Customer { bfaf: bfaf.into(), token, accounts: [accounts[0].clone(), accounts[1].clone()] })
}

/// Transfer outcomes as the live sockets deliver them, matched with the requests waiting for them
/// (a message may arrive before the request's HTTP answer).
#[derive(Default)]
struct Outcomes(Mutex<Pending>);

#[derive(Default)]
struct Pending {
    /// Arrived before anyone waited for them.
    arrived: HashMap<String, Outcome>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
}

/// When the outcome arrived, and whether it was `completed`.
type Outcome = (Instant, bool);

impl Outcomes {
    fn arrived(&self, id: String, completed: bool) {
        let now = Instant::now();
        let mut g = self.0.lock().unwrap();
        match g.waiting.remove(&id) {
            Some(tx) => drop(tx.send((now, completed))),
            None => drop(g.arrived.insert(id, (now, completed))),
        }
    }

    async fn wait(&self, id: &str) -> anyhow::Result<Outcome> {
        let rx = {
            let mut g = self.0.lock().unwrap();
            if let Some(done) = g.arrived.remove(id) {
                return Ok(done);
            }
            let (tx, rx) = oneshot::channel();
            g.waiting.insert(id.to_string(), tx);
            rx
        };
        tokio::time::timeout(Duration::from_secs(60), rx).await.with_context(|| format!("no outcome of {id} on the live socket within 60 s"))?.context("socket gone")
    }
}

async fn listen(c: &Customer, outcomes: Arc<Outcomes>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let url = format!("{}/api/live?token={}", c.bfaf.replacen("http", "ws", 1), c.token);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.context("opening /api/live")?;
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(_))) => {}
        _ => bail!("the live socket did not say hello"),
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            let Ok(text) = msg.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
            if v["kind"] == "transfer" && v["status"] != "pending" {
                outcomes.arrived(v["transfer_id"].as_str().unwrap_or_default().to_string(), v["status"] == "completed");
            }
        }
    }))
}

/// Runs `n` operations under `mode`; `op(i)` returns when operation `i` is complete. Returns the
/// seconds from the first start to the last completion, each successful operation's latency
/// (open loop: from its scheduled start), and the errors (an overloaded bank answers 503/504:
/// counted and reported, not fatal).
async fn drive<F, Fut>(n: usize, mode: Mode, op: F) -> anyhow::Result<(f64, Vec<Duration>, Vec<String>)>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(n);
    let mut errors = Vec::new();
    match mode {
        Mode::Idle(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        Mode::Open(rate) => {
            let mut tasks = Vec::with_capacity(n);
            for i in 0..n {
                let at = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.into()).await;
                let op = op.clone();
                tasks.push(tokio::spawn(async move { op(i).await.map(|_| at.elapsed()) }));
            }
            for t in tasks {
                match t.await? {
                    Ok(l) => latencies.push(l),
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
        Mode::Closed(clients) => {
            let tasks: Vec<_> = (0..clients.max(1))
                .map(|c| {
                    let op = op.clone();
                    tokio::spawn(async move {
                        let (mut lat, mut errors) = (Vec::new(), Vec::new());
                        for i in (c..n).step_by(clients.max(1)) {
                            let t = Instant::now();
                            match op(i).await {
                                Ok(()) => lat.push(t.elapsed()),
                                Err(e) => errors.push(format!("{e:#}")),
                            }
                        }
                        (lat, errors)
                    })
                })
                .collect();
            for t in tasks {
                let (l, e) = t.await?;
                latencies.extend(l);
                errors.extend(e);
            }
        }
    }
    Ok((started.elapsed().as_secs_f64(), latencies, errors))
}

/// The row's case, with the errors when there were any (the first one is printed).
fn case(mode: &Mode, o: &Opts, errors: &[String]) -> String {
    if let Some(first) = errors.first() {
        eprintln!("  {} operations failed; the first: {first}", errors.len());
        return format!("{}, {} ERR", mode.case(o.instances, o.cohost), errors.len());
    }
    mode.case(o.instances, o.cohost)
}

pub async fn run(bins: &Bins, o: &Opts) -> anyhow::Result<Vec<Row>> {
    eprintln!("e2e: starting the bank ({} instances of each service)", o.instances);
    let bank = start_bank(bins, o.instances, o.nectar, o.cohost).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(256).build()?;
    eprintln!("e2e: {} customers sign up, open and fund two accounts each", o.customers);
    let customers: Vec<Customer> = futures::stream::iter(0..o.customers.max(1))
        .map(|i| {
            let (http, bfaf) = (http.clone(), bank.bfafs[i % bank.bfafs.len()].clone());
            async move { customer(&http, &bfaf, i).await }
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let outcomes = Arc::new(Outcomes::default());
    let mut sockets = Vec::new();
    for c in &customers {
        sockets.push(listen(c, outcomes.clone()).await?);
    }
    let customers = Arc::new(customers);
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traces: Arc<Mutex<Vec<Trace>>> = Default::default();

    // Transfer i: customer i % C, between its two accounts, direction alternating, 1-100 cents
    // (under nectar's thresholds; balances stay far above zero).
    let transfer = {
        let (http, customers, outcomes, failed, traces) = (http.clone(), customers.clone(), outcomes.clone(), failed.clone(), traces.clone());
        move |i: usize| {
            let (http, customers, outcomes, failed, traces) = (http.clone(), customers.clone(), outcomes.clone(), failed.clone(), traces.clone());
            async move {
                let (sent, sent_wall) = (Instant::now(), SystemTime::now());
                let c = &customers[i % customers.len()];
                let dir = (i / customers.len()) % 2;
                let body = json!({"from_account": c.accounts[dir], "to_account": c.accounts[1 - dir], "amount_cents": 1 + i % 100});
                let (s, v) = call(&http, format!("{}/api/transfers", c.bfaf), Some(&c.token), body).await?;
                anyhow::ensure!(s == 202, "POST /api/transfers: {s} {v}");
                let id = v["transfer_id"].as_str().context("a transfer id")?;
                let accepted = sent.elapsed();
                let (arrived, completed) = outcomes.wait(id).await?;
                if !completed {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let latency = arrived.saturating_duration_since(sent);
                traces.lock().unwrap().push(Trace { id: id.to_string(), sent: sent_wall, accepted, latency });
                Ok(())
            }
        }
    };
    // Warm-up: one transfer per customer (connections, Lua states, partitions settled).
    let (_, _, errors) = drive(customers.len(), Mode::Closed(customers.len()), transfer.clone()).await?;
    anyhow::ensure!(errors.is_empty(), "warm-up transfers failed: {errors:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let me = Proc::this("sequent-bench (client)");
    let probe = Probe {
        nats_monitor: bank.servers[0].monitor.clone(),
        redis_url: Some(bank.servers[1].url.clone()),
        metrics: bank.services.iter().map(|s| format!("{}/metrics", s.metrics)).collect(),
    };
    let mut all: Vec<&Proc> = bank.servers.iter().collect();
    all.extend(bank.services.iter());
    all.push(&me);
    let mut rows = Vec::new();
    let mut failures = 0;
    for mode in &o.modes {
        let before = Usage::sample(&all);
        let counted = probe.sample(&http).await;
        traces.lock().unwrap().clear();
        let (secs, lat, errors) = drive(o.transfers, *mode, transfer.clone()).await?;
        failures += errors.len();
        if let Mode::Idle(s) = mode {
            // Per second of no load: CPU µs and counts.
            let counts = per_item(&counted, &probe.sample(&http).await, *s as usize);
            rows.push(Row::new("e2e", "bank idle (per second)", case(mode, o, &errors), *s as usize, secs, None, Usage::since(&before, &all)).with_counts(counts));
            continue;
        }
        let counts = per_item(&counted, &probe.sample(&http).await, lat.len());
        rows.push(
            Row::new("e2e", "bank: POST /api/transfers → live", case(mode, o, &errors), lat.len(), secs, Some(lat), Usage::since(&before, &all))
                .with_counts(counts),
        );
        eprintln!("e2e {}: {:.0} transfers/s, p99 {:.1} ms", mode.case(o.instances, o.cohost), rows.last().unwrap().per_s, rows.last().unwrap().p99_ms.unwrap_or(0.0));
        let slowest = std::mem::take(&mut *traces.lock().unwrap());
        print_slowest(&http, &bank.servers[2].url, slowest, 5).await;
    }
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        // Counted as completions (the UI shows them as outcomes), but none should fail here.
        eprintln!("  WARNING: {failed} transfers ended `failed`; they should all complete (see target/bench-logs/)");
        anyhow::ensure!(!o.strict, "{failed} transfers failed");
    }

    if o.baseline {
        let client = crate::load::admin(&bank.servers[0].url).await?;
        let accounts: Arc<Vec<tokio::sync::Mutex<u64>>> = Arc::new((0..customers.len() * 2).map(|_| tokio::sync::Mutex::new(0)).collect());
        let procs = [&bank.servers[0], &bank.servers[2], &me];
        for (run, mode) in o.modes.iter().enumerate().filter(|(_, m)| !matches!(m, Mode::Idle(_))) {
            let chain = {
                let (client, accounts, c) = (client.clone(), accounts.clone(), customers.len());
                move |i: usize| {
                    let (client, accounts) = (client.clone(), accounts.clone());
                    async move { baseline_chain(&client, &accounts, run, i, c).await }
                }
            };
            let before = Usage::sample(&procs);
            let counted = probe.sample(&http).await;
            let (secs, lat, errors) = drive(o.transfers, *mode, chain).await?;
            failures += errors.len();
            let counts = per_item(&counted, &probe.sample(&http).await, lat.len());
            rows.push(
                Row::new("e2e", "baseline: 4 appends in sequence", case(mode, o, &errors), lat.len(), secs, Some(lat), Usage::since(&before, &procs))
                    .with_counts(counts),
            );
        }
    }
    for s in sockets {
        s.abort();
    }
    anyhow::ensure!(!o.strict || failures == 0, "{failures} operations failed");
    Ok(rows)
}

/// One transfer as the client saw it: sent at (wall clock), answered 202 after, outcome on
/// the live socket after.
struct Trace {
    id: String,
    sent: SystemTime,
    accepted: Duration,
    latency: Duration,
}

/// Prints where the `n` slowest transfers spent their time: the gaps between their events'
/// store times (the gateway's `time`, read back by correlation) and from the last one to the
/// outcome on the live socket. Tells which hop stalls (a handler, delivery, the live feed).
async fn print_slowest(http: &reqwest::Client, gateway: &str, mut traces: Vec<Trace>, n: usize) {
    traces.sort_by_key(|t| std::cmp::Reverse(t.latency));
    let ms = |d: f64| format!("{:.0}", d * 1000.0);
    for t in traces.iter().take(n) {
        let sent = t.sent.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let url = format!("{gateway}/v1/correlations/{}/events", t.id);
        let events = match http.get(&url).send().await {
            Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let mut line = format!("  slow {} {} ms (202 after {} ms):", t.id, ms(t.latency.as_secs_f64()), ms(t.accepted.as_secs_f64()));
        let mut at = sent;
        for e in events["events"].as_array().into_iter().flatten() {
            let Some(time) = e["time"].as_str().and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()) else { continue };
            let time = time.unix_timestamp_nanos() as f64 / 1e9;
            line += &format!(" +{} {}", ms(time - at), e["type"].as_str().unwrap_or("?"));
            at = time;
        }
        line += &format!(" +{} live", ms(sent + t.latency.as_secs_f64() - at));
        eprintln!("{line}");
    }
}

async fn append(client: &async_nats::Client, event_type: &str, key: &str, expect: u64, correlation: &str, data: &Value) -> anyhow::Result<()> {
    let body = json!({"events": [{"type": event_type, "key": key, "expect": expect, "correlation": correlation, "data": data}]});
    let reply = client.request(sequent_protocol::subjects::append_subject("bench"), serde_json::to_vec(&body)?.into()).await?;
    let reply: sequent_protocol::AppendReply = serde_json::from_slice(&reply.payload)?;
    anyhow::ensure!(reply.all_stored(), "baseline append refused: {reply:?}");
    Ok(())
}

/// The four appends of transfer `i` (same account pairing as the bank's transfer `i`).
async fn baseline_chain(client: &async_nats::Client, accounts: &[tokio::sync::Mutex<u64>], run: usize, i: usize, customers: usize) -> anyhow::Result<()> {
    let c = i % customers;
    let dir = (i / customers) % 2;
    let (from, to) = (2 * c + dir, 2 * c + 1 - dir);
    let tr = format!("bl{run}-tr-{i}");
    let data = json!({"transfer_id": tr, "from_account": format!("bl-acc-{from}"), "to_account": format!("bl-acc-{to}"), "amount_cents": 1 + i % 100, "balance_cents": 1_000_000});
    append(client, BASELINE_TYPES[0], &tr, 0, &tr, &data).await?;
    for (k, t) in [(from, BASELINE_TYPES[1]), (to, BASELINE_TYPES[2])] {
        let mut version = accounts[k].lock().await;
        append(client, t, &format!("bl-acc-{k}"), *version, &tr, &data).await?;
        *version += 1;
    }
    append(client, BASELINE_TYPES[3], &tr, 1, &tr, &data).await
}
