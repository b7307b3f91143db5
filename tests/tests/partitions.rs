//! The partition count is chosen when a deployment's stream is made (the gateway's
//! `--partitions`, default 16) and bounds how many instances of a service share its work. A
//! deployment made with more uses every one of them; a gateway started later with another
//! count is refused, since keys would change partition (SCALING.md: the limit and the way to a
//! larger count).

mod superclient_common;

use sequent_protocol::subjects::partition_of;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use sequent_tests::wait_until;
use superclient_common::*;

const PARTITIONS: u32 = 64;

#[tokio::test]
async fn a_deployment_made_with_64_partitions_uses_them_all_and_refuses_another_count() {
    let _serial = serial().await;
    let stack = stack_with(&[("SEQUENT_PARTITIONS", "64")]).await;
    let a = stack.instance("superclient_counter.lua", "wide-a", &[]).await;
    let b = stack.instance("superclient_counter.lua", "wide-b", &[]).await;
    wait_until("the two instances to own the 64 partitions between them, each once", Duration::from_secs(60), || async {
        let (mine, theirs) = (owned(&a).await, owned(&b).await);
        let mut all: Vec<u64> = mine.iter().chain(&theirs).copied().collect();
        all.sort();
        !mine.is_empty() && !theirs.is_empty() && all == (0..u64::from(PARTITIONS)).collect::<Vec<_>>()
    })
    .await
    .unwrap();

    // Keys chosen so that every partition gets some, three events each.
    let mut keys = Vec::new();
    let mut per_partition = BTreeMap::new();
    for i in 0.. {
        let key = format!("wide-{i}");
        *per_partition.entry(partition_of(&key, PARTITIONS)).or_insert(0) += 1;
        keys.push(key);
        if per_partition.len() == PARTITIONS as usize && per_partition.values().all(|n| *n >= 2) {
            break;
        }
    }
    let events = (0..3).flat_map(|n| keys.iter().map(move |k| ("Counted".to_string(), k.clone(), json!({ "n": n })))).collect();
    stack.append_many("test", events, 32).await;
    let expected: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;
    let ns = stack.active_ns("test").await.unwrap();
    let mut con = stack.redis_con().await;
    for p in 0..PARTITIONS {
        let applied: Option<u64> = redis::cmd("GET").arg(format!("{ns}:__applied:{p}")).query_async(&mut con).await.unwrap();
        assert!(applied.unwrap_or(0) > 0, "partition {p} has a checkpoint");
    }

    // Another count on the same stream: the gateway refuses to start and says why.
    let env = vec![
        ("NATS_URL".to_string(), stack.nats.url.clone()),
        ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{}", sequent_tests::free_port())),
        ("SEQUENT_PARTITIONS".to_string(), "128".to_string()),
        ("RUST_LOG".to_string(), "warn,bus_gateway=info".to_string()),
    ];
    let mut other = sequent_tests::Child::spawn("gateway-128", sequent_tests::binary("bus-gateway"), &[] as &[&str], &env).unwrap();
    other.wait_for_line("but this gateway was started with --partitions 128", Duration::from_secs(60)).await.expect("the mismatch is named");
    assert!(!other.wait().await.unwrap().success(), "the gateway with another count exits with an error");
}
