//! All-types listeners (`bus:add_event_listener("*", fn)`, tests/lua/all_types.lua): every
//! event type reaches the listener, with the delivery of any listener: in order per key, once
//! in effect (its sends once each), a failing key parked while others flow; a type's own
//! listener wins over it; a rebuild replays every type through it.

mod superclient_common;

use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use superclient_common::*;

#[tokio::test]
async fn an_all_types_listener_gets_every_type_in_order_once_and_parks() {
    let _serial = serial().await;
    let stack = stack().await;
    let _inst = stack.instance("all_types.lua", "all-a", &["--max-attempts", "2", "--retry-delay", "100ms"]).await;
    let ns = stack.active_ns("test").await.unwrap();
    let mut con = stack.redis_con().await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:bad-1")).arg("true").query_async(&mut con).await.unwrap();

    // Types the service never named, over several keys, interleaved.
    let types = ["Opened", "Deposited", "Renamed", "Closed"];
    let mut expected = BTreeMap::new();
    for round in 0..5 {
        for k in 0..6 {
            let key = format!("k-{k}");
            let t = types[(round + k) % types.len()];
            let r = stack.append("test", t, &key, json!({ "round": round })).await;
            assert!(r.all_stored(), "{r:?}");
            *expected.entry(key).or_insert(0) += 1;
        }
        let r = stack.append("test", "Opened", "bad-1", json!({ "round": round })).await;
        assert!(r.all_stored(), "{r:?}");
    }
    let r = stack.append("test", "Special", "k-0", json!({})).await;
    assert!(r.all_stored(), "{r:?}");
    stack.wait_counts("test", &expected, Duration::from_secs(60)).await;

    for k in expected.keys() {
        assert_ordered(k, &seqs(&stack, "test", k).await);
    }
    assert_eq!(stack.get_int("test", "special:k-0").await, Some(1), "the type's own listener ran");
    assert_eq!(stack.get_int("test", "count:k-0").await, Some(5), "... and the * listener did not run for it");

    // Each audited event was forwarded once (derived ids: redeliveries are absorbed), and the
    // forwarded events came back to the * listener too.
    let audit_expected: BTreeMap<String, i64> = expected.iter().map(|(k, n)| (format!("audit-{k}"), *n)).collect();
    stack.wait_counts("test", &audit_expected, Duration::from_secs(60)).await;
    for (k, n) in &audit_expected {
        let (_, events) = get_json(&format!("{}/v1/keys/{k}/events", stack.gateway_http)).await;
        assert_eq!(events["events"].as_array().map(Vec::len), Some(*n as usize), "{k}: {events}");
    }

    // The failing key is parked with its later events held; the others flowed.
    sequent_tests::wait_until("bad-1 to be parked with its events held", Duration::from_secs(60), || async {
        let mut con = stack.redis_con().await;
        let parked: Vec<String> = redis::cmd("SMEMBERS").arg(format!("{ns}:__parked")).query_async(&mut con).await.unwrap();
        let held: usize = redis::cmd("LLEN").arg(format!("{ns}:__held:bad-1")).query_async(&mut con).await.unwrap();
        parked.contains(&"bad-1".to_string()) && held == 5
    })
    .await
    .unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{ns}:fail:bad-1")).query_async(&mut con).await.unwrap();
    let (ok, out) = stack.command(&["parked", "release", "test", "bad-1"]).await;
    assert!(ok, "{out}");
    sequent_tests::wait_until("bad-1's events, released, in order", Duration::from_secs(60), || async {
        stack.get_int("test", "count:bad-1").await == Some(5)
    })
    .await
    .unwrap();
    assert_ordered("bad-1", &seqs(&stack, "test", "bad-1").await);

    // A rebuild replays every type through the * listener: the same counts.
    let live = stack.dump("test").await;
    let script = script("all_types.lua").to_string_lossy().to_string();
    let (ok, out) = stack.command(&["rebuild", &script]).await;
    assert!(ok, "{out}");
    let rebuilt = stack.dump("test").await;
    for (key, value) in &live {
        if key.starts_with("count:") || key == "types" {
            assert_eq!(rebuilt.get(key), Some(value), "{key} after the rebuild");
        }
    }
}
