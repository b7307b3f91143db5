//! Rebuilding the accounts service from the stream gives the same balances and statements: at
//! rest (the rebuilt state is identical, key by key), and while deposits and transfers keep
//! coming (nothing lost, nothing applied twice).

mod bank_common;

use bank_common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn rebuilding_accounts_gives_the_same_balances_and_statements() {
    let _serial = serial().await;
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("PHASE {what} at {:.1} s", t0.elapsed().as_secs_f64());
    let bank = Bank::start(&[("users", 1), ("accounts", 2), ("transfers", 1), ("bfaf", 1)], &[]).await;
    phase("started");
    let api = bank.api();
    let mut owners = Vec::new();
    for u in 0..3 {
        let token = api.customer(&format!("saver{u}")).await;
        for _ in 0..2 {
            let id = api.open_account(&token).await;
            api.deposit(&token, &id, 10_000 * (u as i64 + 1)).await;
            owners.push((id, token.clone()));
        }
    }
    // Withdrawals (one refused), transfers of every outcome, a refund.
    let (a, ta) = owners[0].clone();
    let (b, _) = owners[2].clone();
    let (s, _) = api.post(&format!("/api/accounts/{a}/withdrawals"), &ta, json!({ "amount_cents": 1_234 })).await;
    assert_eq!(s, 201);
    let (s, _) = api.post(&format!("/api/accounts/{a}/withdrawals"), &ta, json!({ "amount_cents": 1_000_000 })).await;
    assert_eq!(s, 422);
    let (full, tf) = owners[5].clone();
    api.deposit(&tf, &full, 100_000_000_000 - 30_000).await;
    for (i, (from, token)) in owners.iter().enumerate() {
        for (to, cents) in [(&owners[(i + 1) % 6].0, 777), (&b, 500_000), (&full, 5), (&"acc-00".to_string(), 1)] {
            let (s, v) = api.post("/api/transfers", token, json!({ "from_account": from, "to_account": to, "amount_cents": cents })).await;
            assert_eq!(s, 202, "{v}");
            api.finished_transfer(token, v["transfer_id"].as_str().unwrap()).await;
        }
    }
    phase("traffic");
    bank.wait_settled(Duration::from_secs(60)).await;
    phase("settled");

    let before = bank.dump("accounts").await;
    let mut statements = Vec::new();
    for (id, token) in &owners {
        let statement = api.statement(token, id).await;
        assert_statement_matches_events(id, &statement, &bank.key_events(id).await);
        statements.push(statement);
    }
    let ns = || async { redis::cmd("GET").arg("sequent:{accounts}:active").query_async::<String>(&mut bank.redis.connection().await.unwrap()).await.unwrap() };
    let ns_before = ns().await;

    // At rest: the rebuilt state is the same, key by key.
    phase("snapshot");
    let (ok, out) = bank.superclient(&["rebuild", &script("accounts")]).await;
    assert!(ok, "{out}");
    phase("rebuilt at rest");
    assert_ne!(ns().await, ns_before, "a new namespace was swapped in");
    let after = bank.dump("accounts").await;
    assert_eq!(before.len(), after.len());
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} differs after the rebuild");
    }
    for ((id, token), statement) in owners.iter().zip(&statements) {
        assert_eq!(&api.statement(token, id).await, statement, "{id}");
    }

    // While deposits and transfers keep coming: the running instances keep applying to the old
    // state until the swap, then to the new one; nothing is lost or applied twice.
    let traffic = {
        let (api, owners) = (api.clone(), owners.clone());
        tokio::spawn(async move {
            let mut deposited = 0;
            for i in 0..40 {
                let (id, token) = &owners[i % 6];
                api.deposit(token, id, 100 + i as i64).await;
                deposited += 100 + i as i64;
                let (to, _) = &owners[(i + 3) % 6];
                let (s, _) = api.post("/api/transfers", token, json!({ "from_account": id, "to_account": to, "amount_cents": 3 })).await;
                assert_eq!(s, 202);
            }
            deposited
        })
    };
    let (ok, out) = bank.superclient(&["rebuild", &script("accounts")]).await;
    assert!(ok, "{out}");
    phase("rebuilt under traffic");
    let deposited = traffic.await.unwrap();
    phase("traffic done");
    bank.wait_settled(Duration::from_secs(60)).await;
    phase("settled again");
    let mut total_before = 0;
    let mut total_after = 0;
    for ((id, token), statement) in owners.iter().zip(&statements) {
        total_before += statement.first().unwrap()["balance_cents"].as_i64().unwrap();
        let now = api.statement(token, id).await;
        assert_statement_matches_events(id, &now, &bank.key_events(id).await);
        assert!(now.ends_with(statement), "{id}: the old entries are all still there, unchanged");
        let (_, a) = api.get(&format!("/api/accounts/{id}"), token).await;
        assert_eq!(a["balance_cents"], now[0]["balance_cents"]);
        total_after += a["balance_cents"].as_i64().unwrap();
    }
    // Transfers between these accounts move money around; deposits add exactly theirs.
    assert_eq!(total_after - total_before, deposited);
}

/// A rebuild must not run ahead of live delivery: an event the live instances have not handled
/// yet still has its sends to make (a debit, a credit), and a rebuild sends nothing. Here the
/// accounts instances are frozen (SIGSTOP) while transfers are requested, a rebuild runs and
/// swaps, and the instances are thawed: every transfer must still end, exactly once.
#[tokio::test]
async fn a_rebuild_leaves_to_live_delivery_what_it_has_not_handled() {
    let _serial = serial().await;
    let bank = Bank::start(&[("users", 1), ("accounts", 2), ("transfers", 1), ("bfaf", 1)], &[]).await;
    let api = bank.api();
    let token = api.customer("frozen").await;
    let mut accounts = Vec::new();
    for _ in 0..4 {
        let id = api.open_account(&token).await;
        api.deposit(&token, &id, 10_000).await;
        accounts.push(id);
    }
    bank.wait_settled(Duration::from_secs(60)).await;
    let accounts_instances: Vec<&Instance> = bank.instances.iter().filter(|i| i.service == "accounts").collect();
    for i in &accounts_instances {
        i.child.pause().unwrap();
    }
    // Straight to the transfers service: the bfaf checks the source account with accounts.
    let transfers_api = Api::new(&bank.of("transfers")[0].url);
    let mut transfers = Vec::new();
    for i in 0..12 {
        let (from, to) = (&accounts[i % 4], &accounts[(i + 1) % 4]);
        let body = json!({ "from_account": from, "to_account": to, "amount_cents": 100 + i as i64, "requested_by": "frozen" });
        let (s, v) = transfers_api.call("POST", "/transfers", None, Some(body), &[]).await;
        assert_eq!(s, 202, "{v}");
        transfers.push(v["transfer_id"].as_str().unwrap().to_string());
    }
    let (ok, out) = bank.superclient(&["rebuild", &script("accounts")]).await;
    for i in &accounts_instances {
        i.child.resume().unwrap();
    }
    assert!(ok, "{out}");
    for id in &transfers {
        let t = api.finished_transfer(&token, id).await;
        assert_eq!(t["status"], "completed", "{t}");
    }
    bank.wait_settled(Duration::from_secs(60)).await;
    let mut total = 0;
    for id in &accounts {
        let statement = api.statement(&token, id).await;
        assert_statement_matches_events(id, &statement, &bank.key_events(id).await);
        total += statement[0]["balance_cents"].as_i64().unwrap();
    }
    assert_eq!(total, 40_000, "transfers between these accounts conserve money");
}
