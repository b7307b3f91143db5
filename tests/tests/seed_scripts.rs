//! The talk's scripts as they were written (tests/lua/seed/, typos fixed only) on a real stack:
//! the account fragments create accounts behind a `__`-prefixed counter (mapped, not refused)
//! and serve them; Nectar earns points on spends over 100, pays cashback on spends over 25 with
//! enough points, and its receipt listener, which tests `status == "inconsistent"`, resends a
//! conflicting send; a route's send gets its receipt too (tests/lua/seed/deposit_route.lua).

mod superclient_common;

use serde_json::json;
use std::time::Duration;
use superclient_common::*;

/// A script's service type that has no NATS user of its own runs as the operator (until
/// services get their credentials from their declaration).
const AS_OPERATOR: &[&str] = &["--nats-user", "admin", "--nats-password", "admin-dev"];

async fn key_events(stack: &Stack, key: &str) -> Vec<serde_json::Value> {
    let (_, body) = get_json(&format!("{}/v1/keys/{key}/events", stack.gateway_http)).await;
    body["events"].as_array().cloned().unwrap_or_default()
}

async fn balance(stack: &Stack, b: f64) {
    let what = format!("a nectar balance of {b}");
    sequent_tests::wait_until(&what, Duration::from_secs(30), || async {
        stack.dump("nectar").await.get("nectar-1").and_then(|v| v["balance"].as_f64()) == Some(b)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_talks_scripts_run_as_written() {
    let _serial = serial().await;
    let stack = stack().await;
    let account = stack.instance("seed/account.lua", "account-a", AS_OPERATOR).await;
    let _nectar = stack.instance("seed/nectar.lua", "nectar-a", &[]).await;

    // The original set `__account_id` while loading; here it is set once, as a deployment
    // would. The script's `__` key is mapped into its namespace, not refused.
    let ns = stack.active_ns("account").await.unwrap();
    let mut con = stack.redis_con().await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:~__account_id")).arg(r#"{"id":0}"#).query_async(&mut con).await.unwrap();
    for n in 1..=2 {
        let r = stack.append("users", "AccountCreationRequest", &format!("creation-{n}"), json!({ "request_id": n, "username": "ada" })).await;
        assert!(r.all_stored(), "{r:?}");
    }
    sequent_tests::wait_until("accounts 1 and 2 to exist", Duration::from_secs(30), || async {
        get_json(&format!("{}/account/2", account.http)).await.0 == 200
    })
    .await
    .unwrap();
    assert_eq!(get_json(&format!("{}/account/1", account.http)).await, (200, json!({ "id": 1, "balance": 0 })));
    let (status, body) = get_json(&format!("{}/account/9", account.http)).await;
    assert_eq!((status, &body["error"]), (404, &json!("could not find account with id: 9")));
    assert_eq!(stack.dump("account").await.get("__account_id"), Some(&json!({ "id": 2 })));
    // The two requests are handled concurrently (their keys are in different partitions), so
    // either may get id 1: each id once, each request once.
    let mut requests = Vec::new();
    for id in 1..=2 {
        let created = key_events(&stack, &format!("acc-{id}")).await;
        assert_eq!(created[0]["type"], "AccountCreated", "{created:?}");
        assert_eq!(created[0]["data"]["acc_id"], json!(id), "{created:?}");
        requests.push(created[0]["data"]["request_id"].as_i64().unwrap());
    }
    requests.sort();
    assert_eq!(requests, vec![1, 2], "each request made one account");

    // Nectar: a spend of 200 earns 20 points.
    let spend = |n: u32, amount: u32| json!({ "transaction_id": n, "from_account_id": 1, "to_account_id": 2, "amount": amount });
    let r = stack.append("account", "AcceptedTransaction", "trans-1", spend(1, 200)).await;
    assert!(r.all_stored(), "{r:?}");
    balance(&stack, 20.0).await;

    // Someone else appends to nectar-1: nectar's next NectarCredit (sent with `false`, the
    // version after the last one it knows) is inconsistent; its receipt listener resends it.
    let r = stack.append("operator", "NectarAdjusted", "nectar-1", json!({ "amount": 1 })).await;
    assert!(r.all_stored(), "{r:?}");
    let r = stack.append("account", "AcceptedTransaction", "trans-2", spend(2, 150)).await;
    assert!(r.all_stored(), "{r:?}");
    balance(&stack, 35.0).await;

    // A spend of 30 with 35 points: 30 points spent, 3 of cashback.
    let r = stack.append("account", "AcceptedTransaction", "trans-3", spend(3, 30)).await;
    assert!(r.all_stored(), "{r:?}");
    balance(&stack, 5.0).await;
    let types: Vec<String> = key_events(&stack, "nectar-1").await.iter().map(|e| e["type"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(types, ["NectarCredit", "NectarAdjusted", "NectarCredit", "NectarDebit"]);
    let credits = key_events(&stack, "acc-1").await;
    let cashback = credits.iter().find(|e| e["type"] == "ConfirmedCredit").unwrap_or_else(|| panic!("no cashback in {credits:?}"));
    assert_eq!(cashback["data"]["amount"].as_f64(), Some(3.0), "{cashback}");
    assert_eq!(cashback["producer"]["service"], "nectar");
    assert!(cashback["data"]["note"].as_str().unwrap_or_default().starts_with("Nectar cashback! Spent 30 points, 5"), "{cashback}");
}

#[tokio::test]
async fn receipts_reach_listeners_for_sends_from_routes() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("seed/deposit_route.lua", "deposit-a", &[]).await;
    let post = |amount: u32| {
        let url = format!("{}/deposit/1", inst.http);
        async move { reqwest::Client::new().post(url).json(&json!({ "amount": amount })).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post(5).await, 201);
    let r = stack.append("account", "ConfirmedDebit", "acc-1", json!({ "amount": 1 })).await;
    assert!(r.all_stored(), "{r:?}");
    assert_eq!(post(7).await, 201);
    let (_, body) = get_json(&format!("{}/receipts", inst.http)).await;
    assert_eq!(body["receipts"], json!(["success", "inconsistent", "success"]));
    let amounts: Vec<serde_json::Value> = key_events(&stack, "acc-1").await.iter().map(|e| e["data"]["amount"].clone()).collect();
    assert_eq!(amounts, [json!(5), json!(1), json!(7)]);
}
