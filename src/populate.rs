//! `cargo run -- populate`: customers, accounts and traffic for a running bank, through the same
//! API and live feed the UI uses. Every step waits for its effect (read-your-writes answers,
//! and transfer outcomes pushed on the customers' live sockets), never for the clock.

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Args)]
pub struct PopulateArgs {
    /// The bank to fill (a bfaf).
    #[arg(long, env = "SEQUENT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Customers to create (or log in, when they exist with this password).
    #[arg(long, default_value_t = 4)]
    customers: usize,
    /// Accounts each customer opens.
    #[arg(long, default_value_t = 2)]
    accounts: usize,
    /// Random deposits, withdrawals and transfers.
    #[arg(long, default_value_t = 200)]
    operations: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Every customer's password.
    #[arg(long, default_value = "sequent-demo-pass")]
    password: String,
    /// Seed of the random traffic.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const NAMES: [&str; 12] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"];

struct Bank {
    http: reqwest::Client,
    url: String,
}

impl Bank {
    async fn call(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Transfer outcomes as the live sockets report them.
#[derive(Default)]
struct Outcomes {
    status: Mutex<HashMap<String, (String, Option<String>)>>,
    changed: Notify,
}

async fn listen(url: String, token: String, outcomes: Arc<Outcomes>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ws = format!("{}/api/live?token={token}", url.replacen("http", "ws", 1));
    let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.with_context(|| format!("opening {}/api/live", url))?;
    // The first message says the socket is subscribed.
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(_))) => {}
        _ => bail!("the live socket did not open"),
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(msg)) = socket.next().await {
            let Ok(text) = msg.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
            if v["kind"] == "transfer" && v["status"] != "pending" {
                let id = v["transfer_id"].as_str().unwrap_or_default().to_string();
                let reason = v["reason"].as_str().map(str::to_string);
                outcomes.status.lock().unwrap().insert(id, (v["status"].as_str().unwrap_or_default().to_string(), reason));
                outcomes.changed.notify_waiters();
            }
        }
    }))
}

pub async fn run(args: PopulateArgs) -> anyhow::Result<()> {
    let bank = Arc::new(Bank { http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?, url: args.url.trim_end_matches('/').to_string() });
    let customers = args.customers.clamp(1, 100);
    let per = args.accounts.clamp(1, 20);
    let total = (customers + customers * per * 2 + args.operations) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(120));

    // The bank answers?
    bar.set_message(format!("waiting for the bank at {}", bank.url));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match bank.call(reqwest::Method::GET, "/health", None, None).await {
            Ok((200, _)) => break,
            _ if tokio::time::Instant::now() > deadline => bail!("the bank at {} does not answer: is `cargo run` running?", bank.url),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    // Customers, each with a live socket.
    let outcomes = Arc::new(Outcomes::default());
    let mut people: Vec<(String, String)> = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..customers {
        let name = NAMES.get(i).map_or_else(|| format!("customer{i}"), |n| n.to_string());
        bar.set_message(format!("signing up {name}"));
        let body = json!({ "username": name, "password": args.password });
        let (s, v) = bank.call(reqwest::Method::POST, "/api/users", None, Some(body.clone())).await?;
        if s != 201 && s != 409 {
            bail!("signing up {name}: {s} {v}");
        }
        let (s, v) = bank.call(reqwest::Method::POST, "/api/sessions", None, Some(body)).await?;
        if s != 200 {
            bail!("{name} exists with another password ({s} {v}); use --password or other names");
        }
        let token = v["token"].as_str().context("a token")?.to_string();
        listeners.push(listen(bank.url.clone(), token.clone(), outcomes.clone()).await?);
        people.push((name, token));
        bar.inc(1);
    }

    // Accounts, 1,000.00 in each.
    let mut accounts: Vec<(String, usize)> = Vec::new();
    for (who, (name, token)) in people.iter().enumerate() {
        for _ in 0..per {
            bar.set_message(format!("opening an account for {name}"));
            let (s, v) = bank.call(reqwest::Method::POST, "/api/accounts", Some(token), Some(json!({}))).await?;
            if s != 201 {
                bail!("opening an account for {name}: {s} {v}");
            }
            let id = v["account_id"].as_str().context("an account id")?.to_string();
            bar.inc(1);
            let (s, v) = bank.call(reqwest::Method::POST, &format!("/api/accounts/{id}/deposits"), Some(token), Some(json!({ "amount_cents": 100_000 }))).await?;
            if s != 201 {
                bail!("depositing into {id}: {s} {v}");
            }
            bar.inc(1);
            accounts.push((id, who));
        }
    }

    // Traffic.
    bar.set_message("deposits, withdrawals and transfers");
    let mut rng = Rng(args.seed);
    let ops: Vec<(u64, usize, usize, i64)> = (0..args.operations)
        .map(|_| {
            let kind = rng.below(10);
            let from = rng.below(accounts.len() as u64) as usize;
            // Now and then to the same account (the bank refuses it), mostly to another one.
            let to = if accounts.len() == 1 || rng.below(20) == 0 {
                from
            } else {
                (from + 1 + rng.below(accounts.len() as u64 - 1) as usize) % accounts.len()
            };
            let cents = 100 + rng.below(if kind < 6 { 30_000 } else { 60_000 }) as i64;
            (kind, from, to, cents)
        })
        .collect();
    let transfers = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let results = futures::stream::iter(ops)
        .map(|(kind, from, to, cents)| {
            let (bank, people, accounts, transfers, refused, bar) = (bank.clone(), &people, &accounts, transfers.clone(), refused.clone(), bar.clone());
            async move {
                let (id, owner) = &accounts[from];
                let token = &people[*owner].1;
                let (path, body) = match kind {
                    0..=5 => ("/api/transfers".to_string(), json!({ "from_account": id, "to_account": accounts[to].0, "amount_cents": cents })),
                    6..=7 => (format!("/api/accounts/{id}/deposits"), json!({ "amount_cents": cents })),
                    _ => (format!("/api/accounts/{id}/withdrawals"), json!({ "amount_cents": cents })),
                };
                let (s, v) = bank.call(reqwest::Method::POST, &path, Some(token), Some(body)).await?;
                match s {
                    202 => transfers.lock().unwrap().push(v["transfer_id"].as_str().unwrap_or_default().to_string()),
                    201 => {}
                    422 => *refused.lock().unwrap() += 1,
                    _ => bail!("{path}: {s} {v}"),
                }
                bar.inc(1);
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r?;
    }

    // Every transfer's outcome arrives on a live socket.
    let transfers = transfers.lock().unwrap().clone();
    bar.set_length(total + transfers.len() as u64);
    bar.set_message("waiting for the transfers to complete");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let changed = outcomes.changed.notified();
        let done = {
            let status = outcomes.status.lock().unwrap();
            transfers.iter().filter(|t| status.contains_key(*t)).count()
        };
        bar.set_position(total + done as u64);
        if done == transfers.len() {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            bar.println(format!("{} transfers did not report an outcome within 60 s; check them in the explorer", transfers.len() - done));
            break;
        }
    }
    bar.finish_with_message("done");
    for l in listeners {
        l.abort();
    }

    // Summary.
    let status = outcomes.status.lock().unwrap().clone();
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for t in &transfers {
        let key = match status.get(t) {
            Some((s, Some(r))) => format!("{s} ({r})"),
            Some((s, None)) => s.clone(),
            None => "still pending".into(),
        };
        *by_outcome.entry(key).or_default() += 1;
    }
    println!();
    println!("The bank at {} now has:", bank.url);
    for (name, token) in &people {
        let (_, v) = bank.call(reqwest::Method::GET, "/api/accounts", Some(token), None).await?;
        let list: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(|x| format!("{} {}", x["account_id"].as_str().unwrap_or("?"), dollars(x["balance_cents"].as_i64().unwrap_or(0)))).collect())
            .unwrap_or_default();
        println!("  {name:<8} (password {}): {}", args.password, list.join(", "));
    }
    println!("  transfers: {}", by_outcome.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "));
    println!("  withdrawals refused for insufficient funds: {}", refused.lock().unwrap());
    println!("Log in at {} as any of them.", bank.url);
    Ok(())
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}
