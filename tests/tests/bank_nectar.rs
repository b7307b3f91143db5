//! Nectar, the loyalty service, added to a running bank: nothing else changes (no event is
//! written for the past, no other service's state moves), then its points and cashback follow
//! the rules on new transfers, and its rebuild gives the same points; added while transfers
//! flow, it rewards each transfer after it joined once and none before.

mod bank_common;

use bank_common::*;
use futures::StreamExt;
use sequent_tests::wait_until;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn points(url: &str, account: &str) -> i64 {
    let v: Value = reqwest::get(format!("{url}/points/{account}")).await.unwrap().json().await.unwrap();
    v["points"].as_i64().unwrap()
}

#[tokio::test]
async fn nectar_joins_a_running_bank_without_changing_anything_else() {
    let _serial = serial().await;
    let mut bank = Bank::start(&[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)], &[]).await;
    let api = bank.api();
    let token = api.customer("shopper").await;
    let a1 = api.open_account(&token).await;
    let a2 = api.open_account(&token).await;
    api.deposit(&token, &a1, 1_000_000).await;
    let send = |cents: i64| {
        let (api, token, a1, a2) = (api.clone(), token.clone(), a1.clone(), a2.clone());
        async move {
            let (s, v) = api.post("/api/transfers", &token, json!({ "from_account": a1, "to_account": a2, "amount_cents": cents })).await;
            assert_eq!(s, 202, "{v}");
            let id = v["transfer_id"].as_str().unwrap().to_string();
            let t = api.finished_transfer(&token, &id).await;
            assert_eq!(t["status"], "completed", "{t}");
            id
        }
    };
    // Before nectar exists: big spends that would have earned points.
    for cents in [50_000, 20_000] {
        send(cents).await;
    }
    bank.wait_settled(Duration::from_secs(30)).await;
    let seq = bank.last_seq().await;
    let dumps: Vec<_> = futures::future::join_all(["users", "accounts", "transfers"].map(|s| bank.dump(s))).await;
    let statement = api.statement(&token, &a1).await;

    // Two nectar instances join; the others are not touched (not restarted, not reconfigured).
    let pids: Vec<u32> = bank.instances.iter().map(|i| i.child.pid()).collect();
    bank.add("nectar", "nectar-1", &[]).await;
    bank.add("nectar", "nectar-2", &[]).await;
    bank.wait_owned("nectar").await;
    let nectar = bank.of("nectar")[0].url.clone();
    bank.wait_settled(Duration::from_secs(30)).await;
    assert_eq!(bank.last_seq().await, seq, "nectar wrote nothing about the past");
    let after: Vec<_> = futures::future::join_all(["users", "accounts", "transfers"].map(|s| bank.dump(s))).await;
    assert_eq!(after, dumps, "no other service's state changed");
    assert_eq!(api.statement(&token, &a1).await, statement);
    assert_eq!(points(&nectar, &a1).await, 0, "transfers before nectar earn nothing");
    assert_eq!(bank.instances.iter().filter(|i| i.service != "nectar").map(|i| i.child.pid()).collect::<Vec<_>>(), pids);

    // The rules, on new transfers (points are the sender's; 1 point per cent spent):
    let mut expected_points = 0;
    // over $100 earns 10% as points; the points before it do not cover it: no cashback.
    for _ in 0..3 {
        send(20_000).await;
        expected_points += 2_000;
    }
    bank.wait_settled(Duration::from_secs(30)).await;
    assert_eq!(points(&nectar, &a1).await, expected_points);
    assert_eq!(points(&nectar, &a2).await, 0, "the receiver earns nothing");
    // over $25 with enough points: spends `amount` points for 10% cashback (and earns nothing:
    // not over $100).
    let (_, before) = api.get(&format!("/api/accounts/{a1}"), &token).await;
    let cashback_transfer = send(5_000).await;
    bank.wait_settled(Duration::from_secs(30)).await;
    expected_points -= 5_000;
    assert_eq!(points(&nectar, &a1).await, expected_points);
    let (_, now) = api.get(&format!("/api/accounts/{a1}"), &token).await;
    assert_eq!(now["balance_cents"].as_i64().unwrap(), before["balance_cents"].as_i64().unwrap() - 5_000 + 500, "{now}");
    let entry = &api.statement(&token, &a1).await[0];
    assert_eq!((entry["kind"].as_str(), entry["amount_cents"].as_i64()), (Some("cashback"), Some(500)), "{entry}");
    assert_eq!(entry["transfer_id"], json!(cashback_transfer));
    // The cashback belongs to the transfer's unit of work, caused by its completion.
    let events = bank.correlation_events(&cashback_transfer).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["TransferRequested", "AccountDebited", "AccountCredited", "TransferCompleted", "NectarDebit", "AccountCredited"], "{events:?}");
    assert_eq!(events[4]["causation"], events[3]["id"]);
    assert_eq!(events[5]["causation"], events[3]["id"]);
    assert_eq!(events[5]["producer"]["service"], "nectar");
    // $25 or less: nothing; over $25 without enough points: nothing; over $100: points.
    send(2_500).await;
    send(3_000).await;
    send(15_000).await;
    expected_points += 1_500;
    bank.wait_settled(Duration::from_secs(30)).await;
    assert_eq!(points(&nectar, &a1).await, expected_points);
    assert_eq!(bank.events_of_type("NectarDebit").await.len(), 1);
    assert_eq!(bank.events_of_type("NectarCredit").await.len(), 4);
    let statement = api.statement(&token, &a1).await;
    assert_statement_matches_events(&a1, &statement, &bank.key_events(&a1).await);
    assert_eq!(statement.iter().filter(|e| e["kind"] == "cashback").count(), 1);

    // Nectar's rebuild gives the same points.
    let live = bank.dump("nectar").await;
    let (ok, out) = bank.superclient(&["rebuild", &script("nectar")]).await;
    assert!(ok, "{out}");
    assert_eq!(bank.dump("nectar").await, live);
}

/// The points nectar's rules earn on each completed transfer it handled live: 10% of an amount
/// over $100. (What it spends depends on the points the sender holds when nectar handles the
/// transfer: an account's transfers are in different partitions, so while a partition lags, a
/// later transfer can be handled before an earlier one's points arrive. The spending rule is
/// checked in order by `nectar_joins_a_running_bank_without_changing_anything_else`.)
fn points_earned(completed: &[&Value]) -> BTreeMap<String, i64> {
    completed
        .iter()
        .filter(|t| t["data"]["amount_cents"].as_i64().unwrap() > 10_000)
        .map(|t| (t["data"]["transfer_id"].as_str().unwrap().to_string(), t["data"]["amount_cents"].as_i64().unwrap() / 10))
        .collect()
}

/// The bank runs without nectar while customers send money; nectar is registered and two
/// instances start while the transfers go on. It rewards exactly the transfers completed after
/// it joined (at the stream position where its state was built), each once, by its rules
/// (points, spending, cashback); earlier ones earn nothing. The bfaf answers "not running"
/// before and the points after, and pushes them live to the customers' sockets.
#[tokio::test]
async fn nectar_joins_while_transfers_flow_and_rewards_each_later_transfer_once() {
    let _serial = serial().await;
    let mut bank = Bank::start(&[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)], &[]).await;
    let api = bank.api();
    let ws_base = api.base.replace("http://", "ws://");
    let mut customers = Vec::new();
    for name in ["ann", "ben", "cat"] {
        let token = api.customer(name).await;
        let (a, b) = (api.open_account(&token).await, api.open_account(&token).await);
        api.deposit(&token, &a, 10_000_000).await;
        api.deposit(&token, &b, 10_000_000).await;
        customers.push((token, a, b));
    }
    let accounts: Vec<String> = customers.iter().flat_map(|(_, a, b)| [a.clone(), b.clone()]).collect();

    // Without nectar the bfaf says so, at once.
    let (s, v) = api.get("/api/points", &customers[0].0).await;
    assert_eq!((s, v["available"].as_bool()), (200, Some(false)), "{v}");

    // Each customer's live socket keeps the points messages it receives.
    let pushed = Arc::new(Mutex::new(Vec::<Value>::new()));
    for (token, _, _) in &customers {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws_base}/api/live?token={token}")).await.expect("the socket opens");
        let pushed = pushed.clone();
        tokio::spawn(async move {
            while let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = socket.next().await {
                let m: Value = serde_json::from_str(&t).unwrap();
                if m["kind"] == "points" {
                    pushed.lock().unwrap().push(m);
                }
            }
        });
    }

    // Each customer sends money between their two accounts, one transfer after the other, with
    // amounts that earn (over $100), spend once enough points were earned (over $25), or neither.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let flows: Vec<_> = customers
        .iter()
        .cloned()
        .map(|(token, a, b)| {
            let (api, stop, done) = (api.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
                    let cents = [20_000, 15_000, 3_000, 50_000, 2_000, 12_000, 9_000][i % 7];
                    let (s, v) = api.post("/api/transfers", &token, json!({ "from_account": from, "to_account": to, "amount_cents": cents })).await;
                    assert_eq!(s, 202, "{v}");
                    let t = api.finished_transfer(&token, v["transfer_id"].as_str().unwrap()).await;
                    assert_eq!(t["status"], "completed", "{t}");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_done = |n: usize| {
        let done = done.clone();
        async move {
            let what = format!("{n} transfers completed");
            wait_until(&what, Duration::from_secs(120), || async { done.load(Ordering::SeqCst) >= n }).await.unwrap();
        }
    };
    wait_done(9).await;

    // Nectar joins: registered with the running bank (the test servers' static users stand for
    // the registration), two instances started while the transfers go on.
    let joined_at = bank.last_seq().await;
    let before = done.load(Ordering::SeqCst);
    bank.add("nectar", "nectar-1", &[]).await;
    bank.add("nectar", "nectar-2", &[]).await;
    let ready_at = bank.last_seq().await;
    let during = done.load(Ordering::SeqCst) - before;
    bank.wait_owned("nectar").await;
    // 36 more: one customer at least sends 12 after nectar joined, enough to earn and then spend
    // points whatever the amount it starts with (at most 11 are needed).
    wait_done(done.load(Ordering::SeqCst) + 36).await;
    stop.store(true, Ordering::SeqCst);
    for f in flows {
        f.await.unwrap();
    }
    bank.wait_settled(Duration::from_secs(60)).await;

    // Which transfers nectar rewarded: none completed before it was added; from one stream
    // position on (where its state was built, between the add and its being ready), all.
    let completed = bank.events_of_type("TransferCompleted").await;
    let credits = bank.events_of_type("NectarCredit").await;
    let debits = bank.events_of_type("NectarDebit").await;
    let rewarded: BTreeSet<&str> = credits.iter().chain(&debits).map(|e| e["data"]["transfer_id"].as_str().unwrap()).collect();
    let is_rewarded = |t: &&Value| rewarded.contains(t["data"]["transfer_id"].as_str().unwrap());
    let first = completed.iter().filter(is_rewarded).map(|t| t["seq"].as_u64().unwrap()).min().expect("nectar rewarded transfers");
    assert!(first > joined_at, "a transfer completed before nectar was added (seq <= {joined_at}) was rewarded at seq {first}");
    let live: Vec<&Value> = completed.iter().filter(|t| t["seq"].as_u64().unwrap() >= first).collect();
    let unrewarded: Vec<&&Value> = live.iter().filter(|t| t["data"]["amount_cents"].as_i64().unwrap() > 10_000 && !is_rewarded(t)).collect();
    assert!(unrewarded.is_empty(), "transfers over $100 after nectar joined earned nothing: {unrewarded:?}");
    assert!(completed.iter().any(|t| t["seq"].as_u64().unwrap() > ready_at), "no transfer completed after nectar was ready");
    assert!(during > 0, "no transfer completed while nectar started: it did not join a bank at work");
    eprintln!(
        "nectar joined at seq {joined_at}, ready at {ready_at}, built up to < {first}; {during} transfers completed while it started, {} in all, {} handled by nectar",
        completed.len(),
        live.len()
    );

    // Each rewarded as the rules say, once: one NectarCredit per earning transfer; at most one
    // NectarDebit per transfer, of a live transfer over $25, spending its amount, each with one
    // cashback credit of 10% of it.
    let by_transfer = |events: &[Value]| -> BTreeMap<String, Vec<i64>> {
        let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for e in events {
            let amount = e["data"]["points"].as_i64().or(e["data"]["amount_cents"].as_i64()).unwrap();
            m.entry(e["data"]["transfer_id"].as_str().unwrap().to_string()).or_default().push(amount);
        }
        m
    };
    let once = |m: &BTreeMap<String, i64>| -> BTreeMap<String, Vec<i64>> { m.iter().map(|(k, v)| (k.clone(), vec![*v])).collect() };
    assert_eq!(by_transfer(&credits), once(&points_earned(&live)), "points earned, per transfer");
    let amounts: BTreeMap<&str, i64> = live.iter().map(|t| (t["data"]["transfer_id"].as_str().unwrap(), t["data"]["amount_cents"].as_i64().unwrap())).collect();
    let spent: BTreeMap<String, i64> = by_transfer(&debits)
        .into_iter()
        .map(|(id, points)| {
            let amount = amounts.get(id.as_str()).copied();
            assert!(amount.is_some_and(|a| a > 2_500), "points spent on {id}, not a live transfer over $25");
            assert_eq!(points, vec![amount.unwrap()], "points spent on {id}: once, its amount");
            (id, amount.unwrap())
        })
        .collect();
    assert!(!spent.is_empty(), "no transfer spent points: the test did not exercise the cashback");
    let mut cashbacks = Vec::new();
    for a in &accounts {
        cashbacks.extend(bank.key_events(a).await.into_iter().filter(|e| e["data"]["reason"] == "cashback"));
    }
    let cashback: BTreeMap<String, i64> = spent.iter().map(|(k, v)| (k.clone(), v / 10)).collect();
    assert_eq!(by_transfer(&cashbacks), once(&cashback), "cashback credited, per transfer");
    // Each nectar key's balance chain is intact (no event applied twice or lost), and points
    // are spent only where the balance before covered them.
    let mut points_of: BTreeMap<String, i64> = BTreeMap::new();
    for a in &accounts {
        let mut points = 0;
        for e in bank.key_events(&format!("nectar-{a}")).await {
            let change = e["data"]["points"].as_i64().unwrap();
            if e["type"] == "NectarDebit" {
                assert!(points >= change, "spent {change} points holding {points}: {e}");
            }
            points += if e["type"] == "NectarCredit" { 1 } else { -1 } * change;
            assert_eq!(e["data"]["points_balance"].as_i64(), Some(points), "{e}");
        }
        if points != 0 {
            points_of.insert(a.clone(), points);
        }
    }

    // The bank shows them: every customer's points over the API, and the last live message of
    // each account that has points says its points.
    for (token, a, b) in &customers {
        let (s, v) = api.get("/api/points", token).await;
        assert_eq!((s, v["available"].as_bool()), (200, Some(true)), "{v}");
        for p in v["accounts"].as_array().unwrap() {
            let id = p["account_id"].as_str().unwrap();
            assert!(id == a || id == b, "{v}");
            assert_eq!(p["points"].as_i64(), Some(points_of.get(id).copied().unwrap_or(0)), "{id}: {v}");
        }
        assert_eq!(v["accounts"].as_array().unwrap().len(), 2, "{v}");
        let statement = api.statement(token, a).await;
        assert_statement_matches_events(a, &statement, &bank.key_events(a).await);
    }
    let last_pushed = |a: &str| pushed.lock().unwrap().iter().rev().find(|m| m["account_id"] == a).and_then(|m| m["points"].as_i64());
    wait_until("the last points pushed to be each account's points", Duration::from_secs(10), || async {
        points_of.iter().all(|(a, p)| last_pushed(a) == Some(*p))
    })
    .await
    .unwrap();

    // Rebuilt from the stream, nectar's state is the same.
    let live_state = bank.dump("nectar").await;
    let (ok, out) = bank.superclient(&["rebuild", &script("nectar")]).await;
    assert!(ok, "{out}");
    assert_eq!(bank.dump("nectar").await, live_state);
}
