//! Where the services keep their state: the bank on a three-master Redis Cluster (every key of
//! a service in its one slot, the services spread over the masters), a service whose state is
//! partitioned spread over the three masters, and a deployment's state in the layout before
//! hash tags migrated when the new version starts, nothing lost.

mod bank_common;
mod superclient_common;

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

/// Waits (up to 20 s) until the two balances are `want`: a completed transfer has its credit
/// stored, and the accounts projection shows it moments later.
async fn assert_balances(api: &Api, (alice, a): (&str, &str), (bob, b): (&str, &str), want: (i64, i64)) {
    let settled = sequent_tests::wait_until("the balances to show every completed transfer", Duration::from_secs(20), || async {
        (balance(api, alice, a).await, balance(api, bob, b).await) == want
    })
    .await;
    assert!(settled.is_ok(), "balances {:?}, want {want:?}", (balance(api, alice, a).await, balance(api, bob, b).await));
}

async fn balance(api: &Api, token: &str, account: &str) -> i64 {
    let (s, v): (u16, Value) = api.get(&format!("/api/accounts/{account}"), token).await;
    assert_eq!(s, 200, "{v}");
    v["balance_cents"].as_i64().unwrap()
}

/// Whether a commit announcement naming `watched` arrives within 10 s.
async fn heard(announcements: &mut (impl futures::Stream<Item = redis::Msg> + Unpin), watched: &str) -> bool {
    let wait = async {
        while let Some(message) = announcements.next().await {
            let keys: String = message.get_payload().unwrap();
            if keys.split('\n').any(|k| k == watched) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bank_runs_on_a_redis_cluster_its_services_and_nectars_partitions_spread_over_the_masters() {
    let _serial = serial().await;
    let cluster = sequent_tests::redis_cluster().await.expect("a three-master Redis Cluster starts");
    let mut bank = Bank::start(&[], &[]).await;
    // The harness's single Redis stays unused: every instance gets the cluster's URL.
    bank.redis.url = cluster.url.clone();
    for service in BANK {
        bank.add(service, &format!("{service}-1"), &[]).await;
    }
    bank.add("accounts", "accounts-2", &[]).await;
    // nectar's state is partitioned: one slot per partition.
    bank.add("nectar", "nectar-1", &[]).await;
    for service in ["accounts", "transfers", "nectar"] {
        bank.wait_owned(service).await;
    }
    let api = bank.api();
    let (alice, bob, a, b) = traffic(&api, 5).await;
    assert_balances(&api, (&alice, &a), (&bob, &b), (950, 50)).await;

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
    let used: BTreeSet<usize> = masters_of.iter().filter(|(tag, _)| !tag.starts_with("nectar.")).flat_map(|(_, m)| m.iter().copied()).collect();
    assert_eq!(used.len(), 3, "the services spread over the three masters: {masters_of:?}");
    let nectar: Vec<_> = masters_of.iter().filter(|(tag, _)| tag.starts_with("nectar.")).collect();
    assert_eq!(nectar.len(), 16, "each of nectar's partitions has its own tag: {masters_of:?}");
    assert!(nectar.iter().all(|(_, m)| m.len() == 1), "each partition's keys are on one master: {nectar:?}");
    let nectar_masters: BTreeSet<usize> = nectar.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    assert_eq!(nectar_masters.len(), 3, "one service's partitions spread over the three masters: {nectar:?}");

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
    assert!(heard(&mut announcements, &watched).await, "the deposit's commit announces {watched} to a subscriber on another master");
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
    assert_balances(&api, (&alice, &a), (&bob, &b), (970, 30)).await;
    transfers(&api, &alice, &a, &b, 2).await;
    assert_balances(&api, (&alice, &a), (&bob, &b), (950, 50)).await;
    let statement = api.statement(&alice, &a).await;
    assert_eq!(statement.len(), 1 + 5, "one deposit and five debits: {statement:?}");
}

/// The active pointers of the test service on a cluster (the service's and its partitions'):
/// (key, namespace).
async fn pointers(cluster: &sequent_tests::RedisCluster) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for i in 0..cluster.nodes.len() {
        let mut con = redis::Client::open(cluster.nodes[i].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        for key in cluster.keys_of(i).await.unwrap().into_iter().filter(|k| k.starts_with("sequent:{test") && k.ends_with("}:active")) {
            let ns: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut con).await.unwrap();
            out.extend(ns.map(|ns| (key, ns)));
        }
    }
    out
}

/// `GET path` of an instance: (status, JSON).
async fn get(instance: &superclient_common::Instance, path: &str) -> (u16, Value) {
    superclient_common::get_json(&format!("{}{path}", instance.http)).await
}

async fn post(instance: &superclient_common::Instance, path: &str) -> u16 {
    reqwest::Client::new().post(format!("{}{path}", instance.http)).send().await.unwrap().status().as_u16()
}

/// A ledger (tests/lua/partitioned_ledger.lua, service `test`) declares `state = "partitioned"`: each partition's state is in its
/// own slot `{test.<p>}`, so one service spreads over the three masters. Two instances
/// share the partitions; every entry applies once; routes read one partition or several,
/// commit in one, and a commit writing two is refused; a rebuild (per-partition commits and
/// swaps) gives the same state, also under new entries; a lost partition pointer rebuilds
/// the whole state; `bus:wait` wakes on a partition's commit; a handler reaching another
/// partition's key parks it.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_service_spreads_over_the_masters_applies_each_event_once_and_rebuilds_the_same() {
    let _serial = serial().await;
    let cluster = sequent_tests::redis_cluster().await.expect("a three-master Redis Cluster starts");
    let mut stack = superclient_common::stack().await;
    stack.redis.url = cluster.url.clone();
    const SCRIPT: &str = "partitioned_ledger.lua";
    let mut one = stack.instance(SCRIPT, "ledger-1", &[]).await;
    let two = stack.instance(SCRIPT, "ledger-2", &[]).await;
    superclient_common::wait_balanced(&[&one, &two], Duration::from_secs(60)).await;

    let keys: Vec<String> = (0..48).map(|k| format!("acct-{k}")).collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let entries = |rounds: std::ops::Range<i64>, expected: &mut BTreeMap<String, i64>| {
        let mut out = Vec::new();
        for round in rounds {
            for key in &keys {
                out.push(("Entered".to_string(), key.clone(), json!({ "amount": round + 1 })));
                *expected.entry(key.clone()).or_default() += round + 1;
            }
        }
        out
    };
    stack.append_many("test", entries(0..8, &mut expected), 32).await;
    let exact = |expected: BTreeMap<String, i64>, rounds: usize| {
        let (one, two) = (&one, &two);
        async move {
            sequent_tests::wait_until("every key's balance to reach its entries", Duration::from_secs(90), || {
                let expected = expected.clone();
                async move {
                    for (key, want) in &expected {
                        let (status, v) = get(one, &format!("/balance/{key}")).await;
                        if status != 200 || v["balance"].as_i64() != Some(*want) {
                            return false;
                        }
                    }
                    true
                }
            })
            .await
            .unwrap();
            for (i, key) in expected.keys().enumerate() {
                let (status, v) = get(if i % 2 == 0 { one } else { two }, &format!("/balance/{key}")).await;
                assert_eq!(status, 200, "{v}");
                assert_eq!(v["balance"].as_i64(), Some(expected[key]), "{key}: lost or applied twice: {v}");
                let seqs: Vec<u64> = v["seqs"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
                assert_eq!(seqs.len(), rounds, "{key}: {v}");
                superclient_common::assert_ordered(key, &seqs);
                assert_eq!(v["entries"].as_u64(), Some(rounds as u64), "{key}: the event key itself is in its partition: {v}");
            }
        }
    };
    exact(expected.clone(), 8).await;

    // A route reading every partition (and writing nothing) works, on either instance.
    let total: i64 = expected.values().sum();
    let (status, v) = get(&two, &format!("/total?keys={}", keys.join(","))).await;
    assert_eq!((status, v["total"].as_i64(), v["keys"].as_u64()), (200, Some(total), Some(keys.len() as u64)), "{v}");

    // The service's keys, tagged by partition, are on all three masters.
    let mut masters: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..cluster.nodes.len() {
        for key in cluster.keys_of(i).await.unwrap() {
            if let Some(tag) = key.split('{').nth(1).and_then(|t| t.split('}').next()).filter(|t| t.starts_with("test.")) {
                assert_eq!(*masters.entry(tag.to_string()).or_insert(i), i, "{tag}'s keys are on one master");
            }
        }
    }
    let used: BTreeSet<usize> = masters.values().copied().collect();
    assert_eq!(masters.len(), 16, "every partition has state: {masters:?}");
    assert_eq!(used.len(), 3, "the partitions spread over the three masters: {masters:?}");

    // A rebuild while the instances run: per-partition commits and swaps, the same state.
    let before = stack.dump("test").await;
    assert_eq!(before.len(), 3 * keys.len(), "balance, seqs and the event key's hash per key: {:?}", before.keys().collect::<Vec<_>>());
    let script = superclient_common::script(SCRIPT).to_string_lossy().to_string();
    let (ok, out) = stack.command(&["rebuild", &script, "--instance", "ledger-rebuilder"]).await;
    assert!(ok && out.contains("rebuilt test into {test}@2"), "{out}");
    assert_eq!(stack.dump("test").await, before, "the rebuilt state differs from the live one");
    let swapped = pointers(&cluster).await;
    assert_eq!(swapped.len(), 17, "the service's pointer and each partition's: {swapped:?}");
    assert!(swapped.iter().all(|(_, ns)| ns.ends_with("@2")), "every pointer swapped: {swapped:?}");

    // A rebuild while entries keep coming (live commits frozen for the catch-up, partitions
    // swapped one by one): every entry applies once, in the old or the new state.
    let more = entries(8..10, &mut expected);
    let producer = {
        let admin = stack.admin.clone();
        tokio::spawn(async move {
            for (t, k, d) in more {
                assert!(superclient_common::append_with(&admin, "test", &t, &k, d).await.all_stored());
            }
        })
    };
    let (ok, out) = stack.command(&["rebuild", &script, "--instance", "ledger-rebuilder"]).await;
    assert!(ok && out.contains("rebuilt test into {test}@3"), "{out}");
    producer.await.unwrap();
    exact(expected.clone(), 10).await;

    // One partition's pointer lost (as with its shard): the others' are dropped too and the
    // whole state is rebuilt from the stream, the same.
    let lost = format!("sequent:{{test.{}}}:active", sequent_protocol::subjects::partition_of("acct-7", 16));
    for node in &cluster.nodes {
        let mut con = redis::Client::open(node.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&lost).query_async(&mut con).await;
    }
    sequent_tests::wait_until("the state to be rebuilt after a partition's pointer is lost", Duration::from_secs(60), || async {
        let p = pointers(&cluster).await;
        let generations: BTreeSet<&str> = p.iter().map(|(_, ns)| ns.rsplit('@').next().unwrap()).collect();
        p.len() == 17 && generations.len() == 1 && !generations.contains("3")
    })
    .await
    .unwrap();
    exact(expected.clone(), 10).await;
    let generation = pointers(&cluster).await.first().map(|(_, ns)| ns.rsplit('@').next().unwrap().to_string()).unwrap();

    let of = |k: &str| sequent_protocol::subjects::partition_of(k, 16);
    // `bus:wait` is woken by the commit of the key's partition: the commit script on that
    // partition's master announces the watched key on the service's channel (a waiting route
    // marked it in the partition's watch set), heard on another master.
    let key = "acct-5";
    let watch = format!("sequent:{{test.{}}}:watch", of(key));
    let pointer = format!("sequent:{{test.{}}}:active", of(key));
    let mut home = None;
    for i in 0..cluster.nodes.len() {
        if cluster.keys_of(i).await.unwrap().contains(&pointer) {
            home = Some(i);
        }
    }
    let home = home.expect("the partition has a pointer");
    let at_least = expected[key] + 1;
    let url = format!("{}/await/{key}/{at_least}", two.http);
    let waiting = tokio::spawn(async move { superclient_common::get_json(&url).await });
    let watched = format!("balance:{{{key}}}");
    let con = redis::Client::open(cluster.nodes[home].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    sequent_tests::wait_until("the waiting route to mark its key watched in the partition's slot", Duration::from_secs(20), || {
        let (mut con, watch, watched) = (con.clone(), watch.clone(), watched.clone());
        async move { redis::cmd("ZSCORE").arg(&watch).arg(&watched).query_async::<Option<f64>>(&mut con).await.unwrap().is_some() }
    })
    .await
    .unwrap();
    let mut pubsub = redis::Client::open(cluster.nodes[(home + 1) % cluster.nodes.len()].as_str()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe("sequent:{test}:commits").await.unwrap();
    let mut announcements = pubsub.on_message();
    stack.append_many("test", vec![("Entered".to_string(), key.to_string(), json!({ "amount": 1 }))], 1).await;
    *expected.get_mut(key).unwrap() += 1;
    assert!(heard(&mut announcements, &watched).await, "the commit announces {watched}");
    drop(announcements);
    let (status, v) = waiting.await.unwrap();
    assert_eq!((status, &v["reached"]), (200, &json!(true)), "{v}");

    // A route commits in one partition; one writing two is refused with the partitions named,
    // and writes nothing.
    assert_eq!(post(&one, "/audit/acct-1").await, 200);
    let other = keys.iter().find(|k| of(k) != of("acct-1")).unwrap();
    assert_eq!(post(&one, &format!("/copy/acct-1/{other}")).await, 500);
    let line = one.child.wait_for_line("two partitions", Duration::from_secs(10)).await.expect("the refusal is logged");
    assert!(line.contains(&format!("{{test.{}}}@{generation}", of("acct-1"))) && line.contains(&format!("{{test.{}}}@{generation}", of(other))), "{line}");
    let dump = stack.dump("test").await;
    assert!(dump.contains_key("audited:{acct-1}") && !dump.contains_key(&format!("audited:{{{other}}}")), "{:?}", dump.keys().collect::<Vec<_>>());

    // A handler reaching a key of another partition fails, naming both; the key parks.
    stack.append_many("test", vec![("Entered".to_string(), "acct-1".to_string(), json!({ "amount": 1, "reach": other }))], 1).await;
    let parked = sequent_tests::wait_until("the reaching event to park its key", Duration::from_secs(60), || async {
        let (_, out) = stack.command(&["parked", "list", "test"]).await;
        out.contains("acct-1 ")
    })
    .await;
    parked.unwrap();
    let (_, out) = stack.command(&["parked", "list", "test"]).await;
    assert!(out.contains(&format!("is in partition {}", of(other))) && out.contains(&format!("runs for partition {}", of("acct-1"))), "{out}");
    let (_, v) = get(&two, &format!("/balance/{other}")).await;
    assert_eq!(v["balance"].as_i64(), Some(expected[other.as_str()]), "the other partition's key is untouched: {v}");

    // An operator's release reaches the worker of the key's partition (its release set is in
    // that partition's slot); the event fails again and the key stays parked.
    let (ok, out) = stack.command(&["parked", "release", "test", "acct-1"]).await;
    assert!(!ok && out.contains("acct-1: still parked"), "{out}");

    // A rebuild replays that event in its partition too: it stops there, and the state stays.
    let (ok, out) = stack.command(&["rebuild", &script, "--instance", "ledger-rebuilder"]).await;
    assert!(!ok && out.contains("rebuild stopped at seq") && out.contains(&format!("runs for partition {}", of("acct-1"))), "{out}");
    let kept = pointers(&cluster).await;
    assert!(kept.len() == 17 && kept.iter().all(|(_, ns)| ns.ends_with(&format!("@{generation}"))), "{kept:?}");
}
