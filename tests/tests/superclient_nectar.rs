//! The Nectar loyalty service of the original talk, ported (services/examples/nectar.lua): it
//! earns points on big spends, spends them for cashback, resends on conflicts, and its rebuild
//! handlers give the same balances.

mod superclient_common;

use serde_json::json;
use std::time::Duration;
use superclient_common::*;

#[tokio::test]
async fn nectar_earns_spends_and_rebuilds() {
    let _serial = serial().await;
    let stack = stack().await;
    let script = script("nectar.lua").to_string_lossy().to_string();
    let inst = stack.instance("nectar.lua", "nectar-a", &[]).await;

    // Three spends of £200 earn 10% each: 3 × 2000 points.
    for (i, amount) in [20000, 20000, 20000].into_iter().enumerate() {
        let r = stack.append("transfers", "AcceptedTransaction", &format!("tx-{i}"), json!({ "from_account_id": 7, "amount": amount })).await;
        assert!(r.all_stored(), "{r:?}");
    }
    sequent_tests::wait_until("6000 nectar points", Duration::from_secs(30), || async {
        stack.dump("nectar").await.get("nectar-7") == Some(&json!({ "balance": 6000 }))
    })
    .await
    .unwrap();

    // Someone else wrote to nectar-7 (a type nectar does not consume, so it cannot know): the
    // next NectarDebit, which expects the version after the last one nectar saw, conflicts, and
    // the receipt listener resends it with the version the conflict reported (as the original).
    let r = stack.append("nectar", "NectarAdjusted", "nectar-7", json!({ "amount": 1 })).await;
    assert!(r.all_stored());
    // A spend of £50 (over £25) with enough points: a debit of 5000 and 500 cashback; plus a
    // £150 spend that earns 1500.
    for (i, amount, balance) in [(3, 5000, 6000 - 5000), (4, 15000, 6000 - 5000 + 1500)] {
        let r = stack.append("transfers", "AcceptedTransaction", &format!("tx-{i}"), json!({ "from_account_id": 7, "amount": amount })).await;
        assert!(r.all_stored(), "{r:?}");
        sequent_tests::wait_until("the balance after the spend", Duration::from_secs(30), || async {
            stack.dump("nectar").await.get("nectar-7") == Some(&json!({ "balance": balance }))
        })
        .await
        .unwrap();
    }

    let events = reqwest::get(format!("{}/v1/keys/acc-7/events", stack.gateway_http)).await.unwrap().json::<serde_json::Value>().await.unwrap();
    let cashback = &events["events"][0];
    assert_eq!(cashback["type"], "ConfirmedCredit", "{events}");
    assert_eq!(cashback["data"]["amount"], 500);
    assert_eq!(cashback["producer"]["service"], "nectar");
    let nectar = reqwest::get(format!("{}/v1/keys/nectar-7/events", stack.gateway_http)).await.unwrap().json::<serde_json::Value>().await.unwrap();
    let types: Vec<&str> = nectar["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["NectarCredit", "NectarCredit", "NectarCredit", "NectarAdjusted", "NectarDebit", "NectarCredit"], "{nectar}");
    // Emitted events carry the handled event's correlation and id as causation.
    let debit = &nectar["events"][4];
    assert_eq!(debit["causation"], debit["correlation"], "{debit}");

    let metrics = reqwest::get(format!("{}/metrics", inst.metrics)).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("sequent_send_conflicts_total") && !l.ends_with(" 0")), "no conflict was seen:\n{metrics}");

    // Rebuild through the rebuild handlers: the same balances.
    let live = stack.dump("nectar").await;
    let (ok, out) = stack.command(&["rebuild", &script]).await;
    assert!(ok, "{out}");
    assert_eq!(stack.dump("nectar").await, live);
}
