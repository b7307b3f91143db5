//! Sticky per-key delivery across several real superclient processes: one instance per key at a
//! time, in order; kill -9 of an instance mid-stream loses and duplicates nothing; a later
//! instance takes its share; a nats-server crash and restart loses nothing and membership recovers.

mod superclient_common;

use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use superclient_common::*;

const SCRIPT: &str = "superclient_counter.lua";

fn events(keys: usize, per_key: usize, prefix: &str) -> (Vec<(String, String, serde_json::Value)>, BTreeMap<String, i64>) {
    let mut out = Vec::new();
    let mut expected = BTreeMap::new();
    for round in 0..per_key {
        for k in 0..keys {
            let key = format!("{prefix}-{k}");
            out.push(("Counted".to_string(), key.clone(), json!({ "n": round })));
            *expected.entry(key).or_insert(0) += 1;
        }
    }
    (out, expected)
}

#[tokio::test]
async fn each_key_is_handled_by_one_instance_in_order() {
    let _serial = serial().await;
    let stack = stack().await;
    let a = stack.instance(SCRIPT, "sticky-a", &[]).await;
    let b = stack.instance(SCRIPT, "sticky-b", &[]).await;
    let c = stack.instance(SCRIPT, "sticky-c", &[]).await;
    wait_balanced(&[&a, &b, &c], Duration::from_secs(30)).await;

    let (evs, expected) = events(60, 20, "st");
    stack.append_many("test", evs, 32).await;
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;

    let mut used = std::collections::BTreeSet::new();
    for (key, n) in &expected {
        let handlers = smembers(&stack, "test", &format!("instances:{key}")).await;
        assert_eq!(handlers.len(), 1, "key {key} was handled by {handlers:?}");
        used.insert(handlers[0].clone());
        let s = seqs(&stack, "test", key).await;
        assert_eq!(s.len() as i64, *n, "key {key}");
        assert_ordered(key, &s);
    }
    assert_eq!(used.len(), 3, "all three instances took keys: {used:?}");
}

#[tokio::test]
async fn kill_9_mid_stream_moves_keys_without_loss_or_duplicates() {
    let _serial = serial().await;
    let stack = stack().await;
    let a = stack.instance(SCRIPT, "kill-a", &[]).await;
    let b = stack.instance(SCRIPT, "kill-b", &[]).await;
    let mut c = stack.instance(SCRIPT, "kill-c", &[]).await;
    wait_balanced(&[&a, &b, &c], Duration::from_secs(30)).await;
    let victim_partitions = owned(&c).await;

    // 10,000 events over 200 keys, written while the victim dies.
    let (evs, expected) = events(200, 50, "kk");
    let producer = {
        let admin = stack.admin.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(evs)
                .map(|(t, k, d)| {
                    let admin = admin.clone();
                    async move {
                        let r = append_with(&admin, "test", &t, &k, d).await;
                        assert!(r.all_stored(), "{r:?}");
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
        })
    };
    // Kill the victim once it is busy (it has applied a good part of its keys' events).
    let victim_keys: Vec<String> = expected
        .keys()
        .filter(|k| victim_partitions.contains(&(sequent_protocol::subjects::partition_of(k, 16) as u64)))
        .cloned()
        .collect();
    assert!(!victim_keys.is_empty());
    sequent_tests::wait_until("the victim to have applied 1,000 events", Duration::from_secs(120), || async {
        let ns = stack.active_ns("test").await.unwrap();
        let keys: Vec<String> = victim_keys.iter().map(|k| format!("{ns}:count:{k}")).collect();
        let v: Vec<Option<i64>> = redis::cmd("MGET").arg(&keys).query_async(&mut stack.redis_con().await).await.unwrap();
        v.iter().map(|x| x.unwrap_or(0)).sum::<i64>() >= 1000
    })
    .await
    .unwrap();
    let ns = stack.active_ns("test").await.unwrap();
    let count_keys: Vec<String> = victim_keys.iter().map(|k| format!("{ns}:count:{k}")).collect();
    let snapshot = |v: Vec<Option<i64>>| v.iter().map(|x| x.unwrap_or(0)).sum::<i64>();
    c.child.kill9().await.unwrap();
    let killed_at = Instant::now();
    let at_kill = snapshot(redis::cmd("MGET").arg(&count_keys).query_async(&mut stack.redis_con().await).await.unwrap());
    // Failover: until the victim's keys flow again (applied by another instance).
    sequent_tests::wait_until("the victim's keys to flow again", Duration::from_secs(60), || async {
        snapshot(redis::cmd("MGET").arg(&count_keys).query_async(&mut stack.redis_con().await).await.unwrap()) > at_kill
    })
    .await
    .unwrap();
    let failover = killed_at.elapsed();
    eprintln!("FAILOVER: the killed instance's keys flowed again after {:.2} s", failover.as_secs_f64());
    assert!(failover < Duration::from_secs(15), "failover took {failover:?}");

    producer.await.unwrap();
    stack.wait_counts("test", &expected, Duration::from_secs(180)).await;
    // Exactly once: counters equal the event counts, and no sequence was applied twice.
    let total: i64 = expected.values().sum();
    assert_eq!(total, 10_000);
    for (key, n) in &expected {
        assert_eq!(stack.get_int("test", &format!("count:{key}")).await, Some(*n), "key {key}");
        let s = seqs(&stack, "test", key).await;
        assert_eq!(s.len() as i64, *n, "key {key}");
        assert_ordered(key, &s);
    }
    for key in &victim_keys {
        let handlers = smembers(&stack, "test", &format!("instances:{key}")).await;
        assert!(handlers.iter().any(|h| h != "kill-c") || handlers == vec!["kill-c".to_string()], "{key}: {handlers:?}");
    }
    drop((a, b));
}

#[tokio::test]
async fn an_instance_started_later_takes_a_share() {
    let _serial = serial().await;
    let stack = stack().await;
    let a = stack.instance(SCRIPT, "late-a", &[]).await;
    let b = stack.instance(SCRIPT, "late-b", &[]).await;
    wait_balanced(&[&a, &b], Duration::from_secs(30)).await;
    let (first, mut expected) = events(40, 10, "lt");
    stack.append_many("test", first, 32).await;
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;

    let c = stack.instance(SCRIPT, "late-c", &[]).await;
    wait_balanced(&[&a, &b, &c], Duration::from_secs(30)).await;
    let c_partitions = owned(&c).await;
    assert!(!c_partitions.is_empty() && c_partitions.len() < 16, "late-c owns {c_partitions:?}");

    let (second, more) = events(40, 10, "lt");
    for (k, n) in more {
        *expected.entry(k).or_insert(0) += n;
    }
    stack.append_many("test", second, 32).await;
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    let mut late_keys = 0;
    for (key, n) in &expected {
        assert_eq!(stack.get_int("test", &format!("count:{key}")).await, Some(*n), "key {key}");
        assert_ordered(key, &seqs(&stack, "test", key).await);
        if smembers(&stack, "test", &format!("instances:{key}")).await.contains(&"late-c".to_string()) {
            late_keys += 1;
            assert!(c_partitions.contains(&(sequent_protocol::subjects::partition_of(key, 16) as u64)));
        }
    }
    assert!(late_keys > 0, "the late instance handled no key");
}

/// An instance joins while the first one works through full hands (slow handlers, one event a
/// batch): each partition that moves is released after the batch being applied, with later
/// deliveries received and not handled, which JetStream would send again only after the ack
/// wait (two minutes here); the new owner takes them back as soon as the old one has unpinned.
#[tokio::test]
async fn a_joining_instance_takes_at_once_what_the_previous_owner_left_in_hand() {
    let _serial = serial().await;
    let stack = stack().await;
    let args = ["--batch", "1", "--ack-wait", "120s"];
    let a = stack.instance(SCRIPT, "hand-a", &args).await;
    let keys = one_key_per_partition("hand", 16);
    let events: Vec<(String, String, serde_json::Value)> =
        (0..3).flat_map(|_| keys.iter().map(|k| ("Counted".to_string(), k.clone(), serde_json::json!({ "busy_ms": 150 })))).collect();
    stack.append_many("test", events, 16).await;
    let b = stack.instance(SCRIPT, "hand-b", &args).await;
    let expected: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(40)).await;
    // Taken back when the previous owner unpinned, or when a newer event showed the gap.
    let taken = b.child.output().into_iter().filter(|l| l.contains("deliveries it did not handle") || l.contains("deliveries arrived out of the consumer's order")).count();
    assert!(taken > 0, "no partition moved with deliveries in the old owner's hand: the test did not exercise the hand-over");
    for key in &keys {
        assert_ordered(key, &seqs(&stack, "test", key).await);
    }
    drop(a);
}

/// nats-server crashes (kill -9) while the services work through a stream, and comes back
/// with its data: nothing is lost or applied twice, and the instances' membership works again
/// (its bucket lives in the server's memory and was lost with it): an instance started after
/// the restart takes a share of the partitions. Here with the consumers on disk
/// (`--consumer-storage file`).
#[tokio::test]
async fn a_nats_server_crash_and_restart_loses_nothing_and_membership_recovers() {
    crash_and_restart(&[("SEQUENT_CONSUMER_STORAGE", "file")]).await;
}

/// The same with the partition consumers kept in memory (`--consumer-storage memory`, the
/// default): the restart loses them. The instances have a gateway make them again and move each one to the
/// event after their checkpoint; the events after it count as redelivered.
#[tokio::test]
async fn consumers_in_memory_are_made_again_after_a_nats_server_crash_and_lose_nothing() {
    crash_and_restart(&[("SEQUENT_CONSUMER_STORAGE", "memory")]).await;
}

/// The worst case of consumers in memory: the service is stopped with events waiting for it,
/// nats-server restarts (the consumers are gone) and Redis loses the state too. The rebuild
/// stops at each consumer's ack floor, and the gateway made each consumer again after the floor
/// it had recorded (`bus-gateway/src/floors.rs`), so the waiting events are handled live and make
/// their sends. Made again from the start instead, the consumers would have let the rebuild
/// checkpoint them without sending anything.
#[tokio::test]
async fn consumers_in_memory_lost_with_the_state_resume_after_their_recorded_floors() {
    let _serial = serial().await;
    let mut stack = stack_on(sequent_tests::nats_process().await.expect("nats-server starts"), &[("SEQUENT_CONSUMER_STORAGE", "memory")]).await;
    let a = stack.instance(SCRIPT, "floors-a", &[]).await;
    let (handled, expected) = events(20, 5, "fl");
    stack.append_many("test", handled, 16).await;
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    // The gateway records the consumers' ack floors every 5 s.
    let js = async_nats::jetstream::new(stack.admin.clone());
    let stream = js.get_stream("EVENTS").await.unwrap();
    sequent_tests::wait_until("the gateway to record every partition's ack floor", Duration::from_secs(30), || async {
        let Ok(kv) = js.get_key_value("sequent_floors").await else { return false };
        for p in 0..16 {
            let name = sequent_protocol::subjects::consumer_name("test", p);
            let floor = stream.consumer_info(&name).await.map(|i| i.ack_floor.stream_sequence).unwrap_or(0);
            let recorded = kv.get(&name).await.ok().flatten().and_then(|v| String::from_utf8(v.to_vec()).ok()).and_then(|v| v.parse::<u64>().ok());
            if floor > 0 && recorded != Some(floor) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    drop(a);
    let pings: Vec<String> = (0..10).map(|k| format!("fl-{k}")).collect();
    for key in &pings {
        assert!(stack.append("test", "Ping", key, json!({ "n": 1 })).await.all_stored());
    }
    stack.nats.restart().await.expect("nats-server restarts");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut stack.redis_con().await).await.unwrap();

    let _b = stack.instance(SCRIPT, "floors-b", &[]).await;
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    sequent_tests::wait_until("every waiting Ping to be handled (its Pong's receipt listed)", Duration::from_secs(60), || async {
        let Some(ns) = stack.active_ns("test").await else { return false };
        let n: usize = redis::cmd("LLEN").arg(format!("{ns}:receipts")).query_async(&mut stack.redis_con().await).await.unwrap_or(0);
        n >= pings.len()
    })
    .await
    .unwrap();
    for (key, n) in &expected {
        assert_eq!(seqs(&stack, "test", key).await.len() as i64, *n, "{key}: applied once");
    }
}

async fn crash_and_restart(gateway_env: &[(&str, &str)]) {
    let _serial = serial().await;
    let mut stack = stack_on(sequent_tests::nats_process().await.expect("nats-server starts"), gateway_env).await;
    let a = stack.instance(SCRIPT, "restart-a", &[]).await;
    let b = stack.instance(SCRIPT, "restart-b", &[]).await;
    wait_balanced(&[&a, &b], Duration::from_secs(30)).await;
    let in_memory = gateway_env.contains(&("SEQUENT_CONSUMER_STORAGE", "memory"));
    let stream = async_nats::jetstream::new(stack.admin.clone()).get_stream("EVENTS").await.unwrap();
    let consumer = sequent_protocol::subjects::consumer_name("test", 0);
    assert_eq!(stream.consumer_info(&consumer).await.unwrap().config.memory_storage, in_memory);

    let (first, mut expected) = events(60, 100, "rs");
    stack.append_many("test", first, 32).await;
    sequent_tests::wait_until("the services to have applied 500 events", Duration::from_secs(60), || async { total_events(&stack).await.unwrap_or(0) >= 500 })
        .await
        .unwrap();
    stack.nats.restart().await.expect("nats-server restarts");
    if in_memory {
        // Lost with the restart; an instance has a gateway make it again.
        sequent_tests::wait_until("the lost consumers to be made again", Duration::from_secs(60), || async {
            stream.consumer_info(&consumer).await.is_ok_and(|i| i.config.memory_storage)
        })
        .await
        .unwrap();
    }

    let c = stack.instance(SCRIPT, "restart-c", &[]).await;
    wait_balanced(&[&a, &b, &c], Duration::from_secs(60)).await;
    let (second, more) = events(60, 20, "rs");
    for (k, n) in more {
        *expected.entry(k).or_default() += n;
    }
    stack.append_many("test", second, 32).await;
    stack.wait_counts("test", &expected, Duration::from_secs(180)).await;
    assert_eq!(total_events(&stack).await, Some(7_200), "each event was handled once");
    for (key, n) in &expected {
        let s = seqs(&stack, "test", key).await;
        assert_eq!(s.len() as i64, *n, "key {key}");
        assert_ordered(key, &s);
    }
    // The members bucket is lost with the server: membership changes around the restart must
    // never leave an instance with a new worker of a partition beside the one still finishing.
    for instance in [&a, &b, &c] {
        instance.assert_one_worker_per_partition();
    }
    drop((a, b, c));
}

/// The events the counter script handled (its `total` hash).
async fn total_events(stack: &Stack) -> Option<i64> {
    let ns = stack.active_ns("test").await?;
    redis::cmd("HGET").arg(format!("{ns}:total")).arg("events").query_async::<Option<i64>>(&mut stack.redis_con().await).await.ok()?
}
