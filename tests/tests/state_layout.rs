//! Where the services keep their state: the bank on a three-master Redis Cluster (every key of
//! a service in its one slot, the services spread over the masters), and a deployment's state
//! in the layout before hash tags migrated when the new version starts, nothing lost.

mod bank_common;

use bank_common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BANK: [&str; 4] = ["users", "accounts", "transfers", "bfaf"];

/// Customers alice and bob with one account each, 1,000 cents deposited on alice's, then
/// `n` transfers of 10 cents from alice to bob, each waited for. Returns the tokens and accounts.
async fn traffic(api: &Api, n: usize) -> (String, String, String, String) {
    let (alice, bob) = (api.customer("alice").await, api.customer("bob").await);
    let (a, b) = (api.open_account(&alice).await, api.open_account(&bob).await);
    api.deposit(&alice, &a, 1_000).await;
    transfers(api, &alice, &a, &b, n).await;
    (alice, bob, a, b)
}

async fn transfers(api: &Api, token: &str, from: &str, to: &str, n: usize) {
    for _ in 0..n {
        let (s, v) = api.post("/api/transfers", token, json!({ "from_account": from, "to_account": to, "amount_cents": 10 })).await;
        assert_eq!(s, 202, "{v}");
        let t = api.finished_transfer(token, v["transfer_id"].as_str().unwrap()).await;
        assert_eq!(t["status"], "completed", "{t}");
    }
}

async fn balance(api: &Api, token: &str, account: &str) -> i64 {
    let (s, v): (u16, Value) = api.get(&format!("/api/accounts/{account}"), token).await;
    assert_eq!(s, 200, "{v}");
    v["balance_cents"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bank_runs_on_a_redis_cluster_each_service_in_one_slot_spread_over_the_masters() {
    let _serial = serial().await;
    let cluster = sequent_tests::redis_cluster().await.expect("a three-master Redis Cluster starts");
    let mut bank = Bank::start(&[], &[]).await;
    // The harness's single Redis stays unused: every instance gets the cluster's URL.
    bank.redis.url = cluster.url.clone();
    for service in BANK {
        bank.add(service, &format!("{service}-1"), &[]).await;
    }
    bank.add("accounts", "accounts-2", &[]).await;
    for service in ["accounts", "transfers"] {
        bank.wait_owned(service).await;
    }
    let api = bank.api();
    let (alice, bob, a, b) = traffic(&api, 5).await;
    assert_eq!((balance(&api, &alice, &a).await, balance(&api, &bob, &b).await), (950, 50));

    // Every key of a service is on one master, in its tag's slot; the bank's services use all three.
    let mut masters_of: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut keys = 0;
    for i in 0..cluster.nodes.len() {
        for key in cluster.keys_of(i).await.unwrap() {
            let tag = key.split('{').nth(1).and_then(|t| t.split('}').next()).unwrap_or_else(|| panic!("{key} has no hash tag"));
            masters_of.entry(tag.to_string()).or_default().insert(i);
            keys += 1;
        }
    }
    eprintln!("{keys} keys; masters per service: {masters_of:?}");
    for service in BANK {
        assert_eq!(masters_of.get(service).map(BTreeSet::len), Some(1), "{service}'s keys are on one master: {masters_of:?}");
    }
    let used: BTreeSet<usize> = masters_of.values().flatten().copied().collect();
    assert_eq!(used.len(), 3, "the services spread over the three masters: {masters_of:?}");

    // `bus:wait` (read-your-writes answers) is woken by the commits that write a watched key:
    // the commit script on accounts' master announces it, and a subscriber on another master
    // hears it (pub/sub spans the cluster). The account's key is marked watched first, as a
    // waiting route would, so the deposit's commit announces it whenever it runs.
    let mut home = None;
    for i in 0..cluster.nodes.len() {
        if cluster.keys_of(i).await.unwrap().iter().any(|k| k == "sequent:{accounts}:active") {
            home = Some(i);
        }
    }
    let home = home.expect("accounts has an active namespace");
    let mut con = redis::Client::open(cluster.nodes[home].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let watched = format!("account:{a}");
    redis::cmd("ZADD").arg("sequent:{accounts}:watch").arg(u64::MAX / 2).arg(&watched).query_async::<()>(&mut con).await.unwrap();
    let other = (home + 1) % cluster.nodes.len();
    let mut pubsub = redis::Client::open(cluster.nodes[other].as_str()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe("sequent:{accounts}:commits").await.unwrap();
    let mut announcements = pubsub.on_message();
    assert_eq!(api.deposit(&alice, &a, 100).await["balance_cents"], 1_050);
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = announcements.next().await {
            let keys: String = message.get_payload().unwrap();
            if keys.split('\n').any(|k| k == watched) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(heard, Ok(true)), "the deposit's commit announces {watched} to a subscriber on another master");
    drop(announcements);

    // The dump works through the cluster too (SCAN on the service's node).
    let dump = bank.dump("accounts").await;
    assert!(dump.keys().any(|k| k.contains(&a)), "the dump shows alice's account: {:?}", dump.keys().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn state_in_the_layout_before_hash_tags_is_migrated_at_start_nothing_lost() {
    let _serial = serial().await;
    let mut bank = Bank::start(&[("users", 1), ("accounts", 1), ("transfers", 1), ("bfaf", 1)], &[]).await;
    bank.wait_owned("accounts").await;
    let api = bank.api();
    let (alice, bob, a, b) = traffic(&api, 3).await;

    // Stop every instance (an upgrade stops the old version first), then put the state back
    // into the old layout: the same keys without the `{<svc>}` tag.
    for mut instance in std::mem::take(&mut bank.instances) {
        instance.child.kill9().await.unwrap();
    }
    let mut con = bank.redis.connection().await.unwrap();
    let mut generations = BTreeMap::new();
    for service in BANK {
        let ns: String = redis::cmd("GET").arg(format!("sequent:{{{service}}}:active")).query_async(&mut con).await.unwrap();
        let old_ns = ns.replace(&format!("{{{service}}}"), service);
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{ns}:*")).query_async(&mut con).await.unwrap();
        assert!(!keys.is_empty() || service == "bfaf", "{service} has state (the bfaf keeps none)");
        for key in keys {
            let old = format!("{old_ns}{}", &key[ns.len()..]);
            redis::cmd("RENAME").arg(&key).arg(old).query_async::<()>(&mut con).await.unwrap();
        }
        for what in ["generation", "watch"] {
            let _: redis::RedisResult<()> =
                redis::cmd("RENAME").arg(format!("sequent:{{{service}}}:{what}")).arg(format!("sequent:{service}:{what}")).query_async(&mut con).await;
        }
        redis::cmd("DEL").arg(format!("sequent:{{{service}}}:active")).query_async::<()>(&mut con).await.unwrap();
        redis::cmd("SET").arg(format!("sequent:{service}:active")).arg(&old_ns).query_async::<()>(&mut con).await.unwrap();
        generations.insert(service, ns);
    }
    // (The platform's explorer beside the bank keeps its own keys, tagged: not the bank's.)
    let mut tagged: Vec<String> = redis::cmd("KEYS").arg("*{*}*").query_async(&mut con).await.unwrap();
    tagged.retain(|k| BANK.iter().any(|service| k.contains(&format!("{{{service}}}"))));
    assert_eq!(tagged, Vec::<String>::new(), "only the old layout is left");

    // The new version starts: the state is migrated (same generation, not rebuilt) and serves on.
    for service in BANK {
        bank.add(service, &format!("{service}-2"), &[]).await;
    }
    for instance in &bank.instances {
        let migrated = instance.child.output().iter().any(|l| l.contains("migrated the state to the hash-tagged key layout"));
        assert!(migrated, "{} migrated its service's state", instance.name);
    }
    for (service, ns) in &generations {
        let now: String = redis::cmd("GET").arg(format!("sequent:{{{service}}}:active")).query_async(&mut con).await.unwrap();
        assert_eq!(&now, ns, "{service} kept its namespace: migrated, not rebuilt");
    }
    let old: Vec<String> = redis::cmd("KEYS").arg("*").query_async::<Vec<String>>(&mut con).await.unwrap().into_iter().filter(|k| !k.contains('{')).collect();
    assert_eq!(old, Vec::<String>::new(), "nothing is left in the old layout");
    bank.wait_owned("accounts").await;
    let api = bank.api(); // the new bfaf's address
    // The old tokens still work (users' and bfaf's state came along), balances are intact,
    // and new transfers apply on top of the migrated state exactly once.
    assert_eq!((balance(&api, &alice, &a).await, balance(&api, &bob, &b).await), (970, 30));
    transfers(&api, &alice, &a, &b, 2).await;
    assert_eq!((balance(&api, &alice, &a).await, balance(&api, &bob, &b).await), (950, 50));
    let statement = api.statement(&alice, &a).await;
    assert_eq!(statement.len(), 1 + 5, "one deposit and five debits: {statement:?}");
}
