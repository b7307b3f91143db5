//! Poison events: a handler that keeps failing for one key is retried, then the event is parked
//! and the key's later events are held while other keys (even of the same partition) flow; a
//! runaway handler is stopped by the instruction budget and parked the same way; release
//! processes the held events in order.

mod superclient_common;

use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use superclient_common::*;

#[tokio::test]
async fn a_failing_key_is_parked_others_flow_and_release_replays_in_order() {
    let _serial = serial().await;
    let stack = stack().await;
    let inst = stack.instance("superclient_counter.lua", "poison-a", &["--max-attempts", "3", "--retry-delay", "100ms"]).await;
    let ns = stack.active_ns("test").await.unwrap();
    let mut con = stack.redis_con().await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:bad-1")).arg("true").query_async(&mut con).await.unwrap();

    // A good key in the same partition as the bad one must keep flowing.
    let bad_p = sequent_protocol::subjects::partition_of("bad-1", 16);
    let neighbour = (0..).map(|i| format!("good-n{i}")).find(|k| sequent_protocol::subjects::partition_of(k, 16) == bad_p).unwrap();
    let mut expected = BTreeMap::new();
    let mut evs = Vec::new();
    for round in 0..10 {
        if round < 4 {
            evs.push(("Counted".to_string(), "bad-1".to_string(), json!({ "n": round })));
        }
        for k in (0..8).map(|i| format!("good-{i}")).chain([neighbour.clone()]) {
            evs.push(("Counted".to_string(), k.clone(), json!({ "n": round })));
            *expected.entry(k).or_insert(0) += 1;
        }
    }
    // A runaway handler on another key.
    evs.push(("Counted".to_string(), "spin-1".to_string(), json!({ "spin": true })));
    for (t, k, d) in evs {
        let r = stack.append("test", &t, &k, d).await;
        assert!(r.all_stored(), "{r:?}");
    }
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;

    // bad-1: parked with its 3 later events held; spin-1 parked by the budget.
    let parked_set = format!("{ns}:__parked");
    sequent_tests::wait_until("bad-1 and spin-1 to be parked with bad-1's events held", Duration::from_secs(60), || async {
        let mut con = stack.redis_con().await;
        let parked: Vec<String> = redis::cmd("SMEMBERS").arg(&parked_set).query_async(&mut con).await.unwrap();
        let held: usize = redis::cmd("LLEN").arg(format!("{ns}:__held:bad-1")).query_async(&mut con).await.unwrap();
        parked.contains(&"bad-1".to_string()) && parked.contains(&"spin-1".to_string()) && held == 4
    })
    .await
    .unwrap();
    assert_eq!(stack.get_int("test", "count:bad-1").await, None, "nothing of bad-1 was applied");
    let (ok, list) = stack.command(&["parked", "list", "test"]).await;
    assert!(ok, "{list}");
    assert!(list.contains("bad-1") && list.contains("is switched to fail"), "{list}");
    assert!(list.contains("spin-1") && list.contains("Lua instructions"), "{list}");

    // The instance survived the runaway handler and still serves.
    let (status, _) = get_json(&format!("{}/health", inst.http)).await;
    assert_eq!(status, 200);

    // Release while the key still fails: it stays parked, with its events.
    let (ok, out) = stack.command(&["parked", "release", "test", "bad-1"]).await;
    assert!(!ok && out.contains("still parked"), "{out}");

    // More events of bad-1 arrive while it is parked: held too.
    for n in 4..6 {
        assert!(stack.append("test", "Counted", "bad-1", json!({ "n": n })).await.all_stored());
    }
    sequent_tests::wait_until("the new bad-1 events to be held", Duration::from_secs(30), || async {
        let held: usize = redis::cmd("LLEN").arg(format!("{ns}:__held:bad-1")).query_async(&mut stack.redis_con().await).await.unwrap();
        held == 6
    })
    .await
    .unwrap();

    // Fix the cause, release: all six are applied, in stream order, once.
    let _: () = redis::cmd("DEL").arg(format!("{ns}:fail:bad-1")).query_async(&mut con).await.unwrap();
    let (ok, out) = stack.command(&["parked", "release", "test", "bad-1"]).await;
    assert!(ok && out.contains("released"), "{out}");
    assert_eq!(stack.get_int("test", "count:bad-1").await, Some(6));
    let s = seqs(&stack, "test", "bad-1").await;
    assert_eq!(s.len(), 6);
    assert_ordered("bad-1", &s);

    // The key flows live again.
    assert!(stack.append("test", "Counted", "bad-1", json!({ "n": 6 })).await.all_stored());
    sequent_tests::wait_until("bad-1 to flow live again", Duration::from_secs(30), || async {
        stack.get_int("test", "count:bad-1").await == Some(7)
    })
    .await
    .unwrap();
    let (_, list) = stack.command(&["parked", "list", "test"]).await;
    assert!(!list.contains("bad-1") && list.contains("spin-1"), "{list}");
    for (key, n) in &expected {
        assert_eq!(stack.get_int("test", &format!("count:{key}")).await, Some(*n), "{key}");
    }
}
