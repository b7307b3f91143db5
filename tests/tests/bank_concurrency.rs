//! The bank under concurrent traffic and faults: 10 accounts, 8 clients issuing 500 random
//! transfers, deposits and withdrawals through two bfaf instances, two instances of every
//! service, and one instance of each service killed with SIGKILL half-way. At the end every
//! transfer completed or failed, no balance is or ever was negative, money is conserved, and
//! each account's statement matches its events one for one.

mod bank_common;

use bank_common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OPS: usize = 500;
const CLIENTS: usize = 8;

/// splitmix64: a small deterministic generator (the run is reproducible from its seed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
enum Op {
    Deposit { account: usize, cents: i64 },
    Withdraw { account: usize, cents: i64 },
    Transfer { from: usize, to: String, cents: i64 },
}

#[derive(Default)]
struct Tally {
    deposited: i64,
    withdrawn: i64,
    refused_withdrawals: usize,
    transfers: Vec<(String, usize)>,
    retries: usize,
}

/// Sends one request, retrying with the same Idempotency-Key on the other bfaf instance when
/// the connection fails or the bank answers 502/503/504: the outcome is then definite.
#[allow(clippy::too_many_arguments)]
async fn perform(apis: &[Api], first: usize, method: &str, path: &str, token: &str, body: Value, key: &str, retries: &AtomicUsize) -> (u16, Value) {
    for attempt in 0..60 {
        let api = &apis[(first + attempt) % apis.len()];
        match api.try_call(method, path, Some(token), Some(body.clone()), &[("idempotency-key", key)]).await {
            Ok((s, v)) if ![502, 503, 504].contains(&s) => return (s, v),
            Ok((s, v)) => eprintln!("retrying {method} {path} after {s} {v}"),
            // Mostly the dead bfaf instance: connection refused.
            Err(_) => {}
        }
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 % 8 + 1))).await;
    }
    panic!("{method} {path} never got a definite answer");
}

#[tokio::test]
async fn concurrent_traffic_survives_kill_9_of_one_instance_per_service() {
    let _serial = serial().await;
    let started = Instant::now();
    let mut bank = Bank::start(&[("users", 2), ("accounts", 2), ("transfers", 2), ("nectar", 2), ("bfaf", 2)], &[]).await;
    eprintln!("STACK: 10 superclients up after {:.1} s", started.elapsed().as_secs_f64());
    let apis: Vec<Api> = bank.of("bfaf").iter().map(|i| Api::new(&i.url)).collect();

    // 5 customers with 2 accounts each, 500.00 in every account.
    let mut tokens = Vec::new();
    let mut accounts: Vec<(String, usize)> = Vec::new();
    let mut tally = Tally::default();
    for u in 0..5 {
        let token = apis[u % 2].customer(&format!("cust{u}")).await;
        for _ in 0..2 {
            let id = apis[u % 2].open_account(&token).await;
            apis[u % 2].deposit(&token, &id, 50_000).await;
            tally.deposited += 50_000;
            accounts.push((id, u));
        }
        tokens.push(token);
    }

    let mut rng = Rng(0x5eed_0000_0000_0004);
    let plan: VecDeque<(usize, Op)> = (0..OPS)
        .map(|i| {
            let account = rng.below(accounts.len() as u64) as usize;
            let op = match rng.below(10) {
                0..=2 => Op::Deposit { account, cents: 1 + rng.below(30_000) as i64 },
                3..=5 => Op::Withdraw { account, cents: 1 + rng.below(40_000) as i64 },
                _ => {
                    let to = match rng.below(20) {
                        0 => "acc-0badc0de".to_string(),
                        1 => accounts[account].0.clone(),
                        _ => accounts[rng.below(accounts.len() as u64) as usize].0.clone(),
                    };
                    Op::Transfer { from: account, to, cents: 1 + rng.below(25_000) as i64 }
                }
            };
            (i, op)
        })
        .collect();

    // Half-way, one instance of every service dies.
    let victims: Vec<Instance> = {
        let (dead, alive): (Vec<Instance>, Vec<Instance>) = bank.instances.drain(..).partition(|i| i.name.ends_with("-2"));
        bank.instances = alive;
        dead
    };
    let done = Arc::new(AtomicUsize::new(0));
    let killed_at = Arc::new(Mutex::new(None::<usize>));
    let killer = {
        let done = done.clone();
        let killed_at = killed_at.clone();
        tokio::spawn(async move {
            let mut victims = victims;
            while done.load(Ordering::SeqCst) < OPS / 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            *killed_at.lock().unwrap() = Some(done.load(Ordering::SeqCst));
            for v in victims.iter_mut() {
                v.child.kill9().await.unwrap();
            }
            eprintln!("KILLED with SIGKILL: {:?}", victims.iter().map(|v| v.name.clone()).collect::<Vec<_>>());
            victims
        })
    };

    let queue = Arc::new(Mutex::new(plan));
    let tally = Arc::new(Mutex::new(tally));
    let retries = Arc::new(AtomicUsize::new(0));
    let traffic_started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (queue, tally, retries, done) = (queue.clone(), tally.clone(), retries.clone(), done.clone());
        let (apis, accounts, tokens) = (apis.clone(), accounts.clone(), tokens.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let Some((i, op)) = queue.lock().unwrap().pop_front() else { break };
                let key = format!("op-{i}");
                match op {
                    Op::Deposit { account, cents } => {
                        let (id, owner) = &accounts[account];
                        let (s, v) = perform(&apis, i, "POST", &format!("/api/accounts/{id}/deposits"), &tokens[*owner], json!({ "amount_cents": cents }), &key, &retries).await;
                        assert_eq!(s, 201, "deposit {i}: {v}");
                        tally.lock().unwrap().deposited += cents;
                    }
                    Op::Withdraw { account, cents } => {
                        let (id, owner) = &accounts[account];
                        let (s, v) = perform(&apis, i, "POST", &format!("/api/accounts/{id}/withdrawals"), &tokens[*owner], json!({ "amount_cents": cents }), &key, &retries).await;
                        match s {
                            201 => tally.lock().unwrap().withdrawn += cents,
                            422 => {
                                assert_eq!(v["error"], "insufficient funds", "{v}");
                                assert!(v["balance_cents"].as_i64().unwrap() < cents, "refused although the balance sufficed: {v}");
                                tally.lock().unwrap().refused_withdrawals += 1;
                            }
                            _ => panic!("withdrawal {i}: {s} {v}"),
                        }
                    }
                    Op::Transfer { from, to, cents } => {
                        let (id, owner) = &accounts[from];
                        let (s, v) = perform(&apis, i, "POST", "/api/transfers", &tokens[*owner], json!({ "from_account": id, "to_account": to, "amount_cents": cents }), &key, &retries).await;
                        assert_eq!(s, 202, "transfer {i}: {v}");
                        tally.lock().unwrap().transfers.push((v["transfer_id"].as_str().unwrap().to_string(), *owner));
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let traffic = traffic_started.elapsed();
    let victims = killer.await.unwrap();
    let killed_at = killed_at.lock().unwrap().expect("the victims were killed");
    let mut tally = std::mem::take(&mut *tally.lock().unwrap());
    tally.retries = retries.load(Ordering::Relaxed);
    eprintln!(
        "TRAFFIC: {OPS} operations by {CLIENTS} clients in {:.1} s ({:.0}/s); killed after {killed_at}; {} retries; {} transfers, {} withdrawals refused",
        traffic.as_secs_f64(),
        OPS as f64 / traffic.as_secs_f64(),
        tally.retries,
        tally.transfers.len(),
        tally.refused_withdrawals
    );
    assert!((OPS / 2..OPS).contains(&killed_at), "the kill happened during the traffic");

    // Every saga ends, every service catches up (the survivors took the victims' partitions).
    let settle = Instant::now();
    bank.wait_settled(Duration::from_secs(120)).await;
    eprintln!("SETTLED after {:.1} s", settle.elapsed().as_secs_f64());
    let api = &apis[0];

    // The survivors own every partition; the victims are seen as gone.
    let admin = api.admin_token().await;
    sequent_tests::wait_until("operators to see the victims gone and the survivors owning every partition", Duration::from_secs(30), || async {
        let (_, services) = api.get("/api/admin/services", &admin).await;
        for s in services.as_array().unwrap() {
            let mut owned: Vec<u64> = Vec::new();
            for i in s["instances"].as_array().unwrap() {
                let name = i["instance"].as_str().unwrap();
                if i["live"].as_bool() != Some(!name.ends_with("-2")) {
                    return Err(format!("{s}"));
                }
                owned.extend(i["partitions"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()));
            }
            owned.sort();
            // The bfaf consumes no events: it has no partitions.
            let want: Vec<u64> = if s["service"] == "bfaf" { Vec::new() } else { (0..16).collect() };
            if owned != want {
                return Err(format!("{s}"));
            }
        }
        Ok(true)
    })
    .await
    .unwrap();

    // Every transfer completed or failed with a reason; its events tell the same story.
    let mut completed = 0;
    for (id, owner) in &tally.transfers {
        let (s, t) = api.get(&format!("/api/transfers/{id}"), &tokens[*owner]).await;
        assert_eq!(s, 200, "{t}");
        let events = bank.correlation_events(id).await;
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "{id}: no event twice");
        for e in &events[1..] {
            assert!(ids.contains(e["causation"].as_str().unwrap_or("")), "{id}: {e} is not caused by an event of the transfer");
        }
        let count = |t: &str, reason: Option<&str>| events.iter().filter(|e| e["type"] == t && reason.is_none_or(|r| e["data"]["reason"] == r)).count();
        match t["status"].as_str() {
            Some("completed") => {
                completed += 1;
                assert_eq!(
                    (count("AccountDebited", Some("transfer")), count("AccountCredited", Some("transfer")), count("TransferCompleted", None), count("TransferFailed", None)),
                    (1, 1, 1, 0),
                    "{id}: {types:?}"
                );
            }
            Some("failed") => {
                let reason = t["reason"].as_str().unwrap_or_default();
                assert!(["insufficient funds", "unknown account", "same account"].contains(&reason), "{id}: {t}");
                assert_eq!((count("TransferFailed", None), count("TransferCompleted", None)), (1, 0), "{id}: {types:?}");
                assert_eq!(count("AccountDebited", None), count("AccountCredited", Some("refund")), "{id}: a debit is reversed: {types:?}");
            }
            other => panic!("{id} is still {other:?}: {types:?}"),
        }
    }
    eprintln!("TRANSFERS: {completed} completed, {} failed", tally.transfers.len() - completed);
    assert!(completed > 50, "most transfers went through");

    // Money is conserved: balances = deposits - withdrawals (+ the loyalty cashback, money
    // nectar adds by its rules); no statement ever went below zero; statements = events.
    let mut total = 0;
    let mut cashback = 0;
    for (id, owner) in &accounts {
        let (_, a) = api.get(&format!("/api/accounts/{id}"), &tokens[*owner]).await;
        let balance = a["balance_cents"].as_i64().unwrap();
        assert!(balance >= 0, "{a}");
        total += balance;
        let statement = api.statement(&tokens[*owner], id).await;
        assert_statement_matches_events(id, &statement, &bank.key_events(id).await);
        assert_eq!(statement.first().map_or(0, |e| e["balance_cents"].as_i64().unwrap()), balance);
        cashback += statement.iter().filter(|e| e["kind"] == "cashback").map(|e| e["amount_cents"].as_i64().unwrap()).sum::<i64>();
    }
    eprintln!("MONEY: deposited {}, withdrawn {}, cashback {cashback}, balances {total}", tally.deposited, tally.withdrawn);
    assert_eq!(total, tally.deposited - tally.withdrawn + cashback, "money is conserved");
    // The store agrees with what the clients were told, request by request.
    let sum = |events: &[Value], reason: &str| -> i64 {
        events.iter().filter(|e| e["data"]["reason"] == reason).map(|e| e["data"]["amount_cents"].as_i64().unwrap()).sum()
    };
    let credits = bank.events_of_type("AccountCredited").await;
    let debits = bank.events_of_type("AccountDebited").await;
    assert_eq!(sum(&credits, "deposit"), tally.deposited, "each deposit stored once");
    assert_eq!(sum(&debits, "withdrawal"), tally.withdrawn, "each withdrawal stored once");
    assert_eq!(sum(&credits, "cashback"), cashback);

    // Loyalty points: each nectar key's chain of points is continuous and never negative.
    let mut points_keys = BTreeMap::new();
    for e in bank.events_of_type("NectarCredit").await.into_iter().chain(bank.events_of_type("NectarDebit").await) {
        points_keys.entry(e["key"].as_str().unwrap().to_string()).or_insert_with(Vec::new).push(e);
    }
    for (key, mut events) in points_keys {
        events.sort_by_key(|e| e["version"].as_u64());
        let mut points = 0;
        for (v, e) in events.iter().enumerate() {
            assert_eq!(e["version"].as_u64(), Some(v as u64), "{key}: {e}");
            points += if e["type"] == "NectarCredit" { 1 } else { -1 } * e["data"]["points"].as_i64().unwrap();
            assert_eq!(e["data"]["points_balance"].as_i64(), Some(points), "{key}: {e}");
            assert!(points >= 0, "{key}: {e}");
        }
    }
    drop(victims);
    eprintln!("TOTAL: {:.1} s", started.elapsed().as_secs_f64());
}
