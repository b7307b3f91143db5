//! Batches of a partition's events (superclient/src/consume): a failing event in the middle of
//! a batch, `meta.redelivered`, and handler state shared by many keys under concurrency and a
//! kill -9 (serializable state).

mod superclient_common;

use futures::StreamExt;
use sequent_tests::wait_until;
use std::collections::BTreeMap;
use std::time::Duration;
use superclient_common::*;

const COUNTER: &str = "superclient_counter.lua";

async fn redis_get(stack: &Stack, key: &str) -> Option<String> {
    let ns = stack.active_ns("test").await?;
    redis::cmd("GET").arg(format!("{ns}:{key}")).query_async(&mut stack.redis_con().await).await.unwrap()
}

async fn redelivered(stack: &Stack) -> BTreeMap<u64, bool> {
    let ns = stack.active_ns("test").await.unwrap();
    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(format!("{ns}:redelivered")).query_async(&mut stack.redis_con().await).await.unwrap();
    h.into_iter().map(|(k, v)| (k.parse().unwrap(), v == "true")).collect()
}

/// Appends `(type, key)` events in this order; returns their sequences.
async fn append_in_order(stack: &Stack, events: &[(&str, &str)]) -> Vec<u64> {
    let mut seqs = Vec::new();
    for (t, k) in events {
        let r = stack.append("test", t, k, serde_json::json!({})).await;
        assert!(r.all_stored(), "{r:?}");
        match &r.receipts[0] {
            sequent_protocol::Receipt::Stored { seq, .. } => seqs.push(*seq),
            other => panic!("{other:?}"),
        }
    }
    seqs
}

/// Appends `(type, key)` events in this order while `inst` is frozen, so that each partition's
/// events reach it as one batch. Returns when it was let run again.
async fn append_as_batches(stack: &Stack, inst: &Instance, events: &[(&str, &str)]) -> std::time::Instant {
    inst.child.pause().unwrap();
    append_in_order(stack, events).await;
    let resumed = std::time::Instant::now();
    inst.child.resume().unwrap();
    resumed
}

/// The partition's events arrive together (the instance is frozen while they are appended):
/// one batch. The failing event's predecessors commit, it is retried then parked with its key
/// held, and the events after it on other keys go on, in order.
#[tokio::test]
async fn a_failing_event_in_the_middle_of_a_batch() {
    let _serial = serial().await;
    let stack = stack().await;
    // Keys of one partition, so that their events share a batch.
    let keys: Vec<String> = (0..).map(|i| format!("bk-{i}")).filter(|k| sequent_protocol::subjects::partition_of(k, 16) == 5).take(3).collect();
    let (k1, k2, k3) = (keys[0].as_str(), keys[1].as_str(), keys[2].as_str());
    let inst = stack.instance(COUNTER, "batch-a", &["--max-attempts", "3", "--retry-delay", "50ms"]).await;
    let ns = stack.active_ns("test").await.unwrap();
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:{k2}")).arg("true").query_async(&mut stack.redis_con().await).await.unwrap();
    inst.child.pause().unwrap();
    let seqs = append_in_order(
        &stack,
        &[("Counted", k1), ("Counted", k3), ("Counted", k2), ("Counted", k1), ("Counted", k3), ("Counted", k2), ("Counted", k1)],
    )
    .await;
    inst.child.resume().unwrap();
    let expected: BTreeMap<String, i64> = [(k1.to_string(), 3), (k3.to_string(), 2)].into();
    stack.wait_counts("test", &expected, Duration::from_secs(30)).await;
    // The failing key: nothing applied, parked at its first event, its second held behind it.
    assert_eq!(redis_get(&stack, &format!("count:{k2}")).await, None);
    let (ok, out) = stack.command(&["parked", "list", "test"]).await;
    assert!(ok && out.contains(k2), "{out}");
    let held: Vec<String> = redis::cmd("LRANGE").arg(format!("{ns}:__held:{k2}")).arg(0).arg(-1).query_async(&mut stack.redis_con().await).await.unwrap();
    assert_eq!(held, vec![seqs[2].to_string(), seqs[5].to_string()]);
    let record: String = redis::cmd("GET").arg(format!("{ns}:__parked:{k2}")).query_async(&mut stack.redis_con().await).await.unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["attempts"], 3, "retried, then parked: {record}");
    // The others, in stream order, each once.
    assert_eq!(seqs_of(&stack, k1).await, vec![seqs[0], seqs[3], seqs[6]]);
    assert_eq!(seqs_of(&stack, k3).await, vec![seqs[1], seqs[4]]);
    // And they did arrive as a batch: a commit applied more than one event.
    let text = reqwest::get(format!("{}/metrics", inst.metrics)).await.unwrap().text().await.unwrap();
    let line = |name: &str| text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).unwrap_or(0.0);
    assert!(line("sequent_batch_events_sum") > line("sequent_batch_events_count"), "no batch held more than one event:\n{text}");
}

async fn seqs_of(stack: &Stack, key: &str) -> Vec<u64> {
    seqs(stack, "test", key).await
}

/// `meta.redelivered` is true when the event may have been handled before: after a failed
/// attempt, and for what the consumer had delivered to an instance that vanished; false for
/// what was never handled anywhere.
#[tokio::test]
async fn redelivered_is_known() {
    let _serial = serial().await;
    let stack = stack().await;
    let a = stack.instance(COUNTER, "rd-a", &["--retry-delay", "50ms", "--max-attempts", "20"]).await;
    let ns = stack.active_ns("test").await.unwrap();
    // A first delivery that fails once: its retry is redelivered; a fresh event is not.
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:rd-1")).arg("true").query_async(&mut stack.redis_con().await).await.unwrap();
    let failing = append_in_order(&stack, &[("Counted", "rd-1")]).await[0];
    let mut child = a.child;
    child.wait_for_line("handler failed; retrying", Duration::from_secs(10)).await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{ns}:fail:rd-1")).query_async(&mut stack.redis_con().await).await.unwrap();
    let fresh = append_in_order(&stack, &[("Counted", "rd-2")]).await[0];
    stack.wait_counts("test", &[("rd-1".to_string(), 1), ("rd-2".to_string(), 1)].into(), Duration::from_secs(20)).await;
    let seen = redelivered(&stack).await;
    assert_eq!(seen.get(&failing), Some(&true), "{seen:?}");
    assert_eq!(seen.get(&fresh), Some(&false), "{seen:?}");

    // The instance freezes with deliveries in hand; another takes its partitions over.
    child.pause().unwrap();
    let held = append_in_order(&stack, &(0..40).map(|_| ("Counted", "rd-3")).collect::<Vec<_>>()).await;
    let stream = async_nats::jetstream::new(stack.admin.clone()).get_stream("EVENTS").await.unwrap();
    let p = sequent_protocol::subjects::partition_of("rd-3", 16);
    let consumer = sequent_protocol::subjects::consumer_name("test", p);
    let delivered = stream.consumer_info(&consumer).await.unwrap().delivered.stream_sequence;
    let b = stack.instance(COUNTER, "rd-b", &[]).await;
    stack.wait_counts("test", &[("rd-3".to_string(), 40)].into(), Duration::from_secs(60)).await;
    let after = append_in_order(&stack, &[("Counted", "rd-3")]).await[0];
    stack.wait_counts("test", &[("rd-3".to_string(), 41)].into(), Duration::from_secs(20)).await;
    let seen = redelivered(&stack).await;
    for seq in &held {
        assert_eq!(seen.get(seq), Some(&(*seq <= delivered)), "seq {seq} (delivered to the frozen instance up to {delivered}): {seen:?}");
    }
    assert!(held.iter().any(|s| *s <= delivered), "the frozen instance had received some events ({delivered})");
    assert_eq!(seen.get(&after), Some(&false));
    assert_ordered("rd-3", &seqs_of(&stack, "rd-3").await);
    child.kill9().await.unwrap();
    drop(b);
}

/// A counter shared by every key, read and written back by each handler: under three
/// instances, a kill -9 and concurrent keys, it counts every event exactly once.
#[tokio::test]
async fn a_shared_read_modify_write_counter_counts_every_event_once() {
    let _serial = serial().await;
    let stack = stack().await;
    let script = "superclient_shared_counter.lua";
    let a = stack.instance(script, "sh-a", &[]).await;
    let b = stack.instance(script, "sh-b", &[]).await;
    let mut c = stack.instance(script, "sh-c", &[]).await;
    wait_balanced(&[&a, &b, &c], Duration::from_secs(30)).await;
    let keys = 40;
    let events: Vec<(String, String, serde_json::Value)> = (0..400).map(|i| ("Counted".to_string(), format!("sh-{}", i % keys), serde_json::json!({}))).collect();
    let admin = stack.admin.clone();
    let producer = tokio::spawn(async move {
        futures::stream::iter(events)
            .map(|(t, k, d)| {
                let admin = admin.clone();
                async move { assert!(append_with(&admin, "test", &t, &k, d).await.all_stored()) }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    });
    wait_until("the shared counter to move", Duration::from_secs(60), || async { redis_get(&stack, "shared").await.is_some_and(|v| v.parse::<i64>().unwrap() >= 100) })
        .await
        .unwrap();
    c.child.kill9().await.unwrap();
    producer.await.unwrap();
    let expected: BTreeMap<String, i64> = (0..keys).map(|i| (format!("sh-{i}"), 10)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;
    assert_eq!(redis_get(&stack, "shared").await.as_deref(), Some("400"), "every event counted once by the shared counter");
    drop((a, b));
}

/// Batches that meet two locked keys in opposite orders (each handler reads, writes and sends on
/// its type's tally): each holds the lock the other needs next. A batch holding locks does not
/// wait for another one; it commits what it has and leaves the rest to its next batch, so no
/// handler waits for a lock until it expires.
#[tokio::test]
async fn batches_that_lock_shared_keys_in_opposite_orders_do_not_wait_for_each_other() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("superclient_crossed_locks.lua", "crossed-a", &[]).await;
    // One key in each of 8 partitions, each partition's events one batch: Left then Right in
    // even partitions, Right then Left in odd ones.
    let keys = one_key_per_partition("x", 8);
    let mut events = Vec::new();
    for round in 0..5 {
        for (p, key) in keys.iter().enumerate() {
            let first = if (p + round) % 2 == 0 { ["Left", "Right"] } else { ["Right", "Left"] };
            events.extend(first.map(|t| (t, key.as_str())));
        }
    }
    append_as_batches(&stack, &inst, &events).await;
    let expected: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 10)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    let ns = stack.active_ns("test").await.unwrap();
    let tally: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(format!("{ns}:tally")).query_async(&mut stack.redis_con().await).await.unwrap();
    assert_eq!(tally, [("Left".to_string(), 40), ("Right".to_string(), 40)].into());
    let waited: Vec<String> = inst.child.output().into_iter().filter(|l| l.contains("stayed locked")).collect();
    assert!(waited.is_empty(), "a handler waited for a lock until it expired: {waited:?}");
}

/// Batches that each hold a lock (a key they read and sent on) on the key the other's commit
/// writes without reading it (tests/lua/superclient_blind_crossed.lua): write skew between
/// calls that have sent, which no order serializes. They wait for each other until the locks
/// expire (10 s; superclient/README.md, "Serializable state", says why they do not give up
/// sooner), then every event is applied, once, and the one that ran again on a changed read
/// after sending says so.
#[tokio::test]
async fn batches_whose_commits_write_what_the_other_locked_go_through_once_the_locks_expire() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("superclient_blind_crossed.lua", "blind-a", &[]).await;
    // One key in each of 8 partitions, each partition's events one batch: Left only in even
    // partitions, Right in odd ones.
    let keys = one_key_per_partition("b", 8);
    let events: Vec<(&str, &str)> =
        (0..3).flat_map(|_| keys.iter().enumerate().map(|(p, key)| (if p % 2 == 0 { "Left" } else { "Right" }, key.as_str()))).collect();
    let resumed = append_as_batches(&stack, &inst, &events).await;
    let expected: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;
    let took = resumed.elapsed();
    assert!(took < Duration::from_secs(45), "the batches took {took:?}: the cycle outlived the locks' expiry");
    // The batch that went second ran again on a read that changed after its sends left: its
    // sends were duplicates of what it sent before, with other data. That is said loudly.
    let reported = inst.child.output().iter().any(|l| l.contains("sent other data under an id already stored"));
    assert!(reported || took < Duration::from_secs(5), "the batches waited {took:?} for the locks to expire, and no re-run that decided otherwise was reported");
}
