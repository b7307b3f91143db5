//! Nectar, the loyalty service, added to a running bank: nothing else changes (no event is
//! written for the past, no other service's state moves), then its points and cashback follow
//! the rules on new transfers, and its rebuild gives the same points.

mod bank_common;

use bank_common::*;
use serde_json::{json, Value};
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
