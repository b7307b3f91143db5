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

/// The stack's superclient environment, connected as the unrestricted admin user: for the
/// operators' commands (`parked release`).
fn as_admin(stack: &Stack) -> Vec<(String, String)> {
    let url = stack.nats.url.replacen("nats://", &format!("nats://{}:{}@", sequent_tests::ADMIN.0, sequent_tests::ADMIN.1), 1);
    let mut env = stack.superclient_env();
    env.retain(|(k, _)| k != "NATS_URL");
    env.push(("NATS_URL".into(), url));
    env
}

/// Every event of `from` up to `last` is in `to` exactly once, at its own sequence: the same
/// key, type, payload and headers, bar the append's instructions (its expectations and batch
/// framing); its `Nats-Msg-Id` is the event's id. Each key is in its partition of
/// `partitions`. Returns how many of them had been appended in an atomic batch.
async fn assert_copied(js: &async_nats::jetstream::Context, from: &str, to: &str, last: u64, partitions: u32) -> usize {
    use sequent_protocol::subjects::{is_append_instruction, parse_stored_subject};
    let (old, mut new) = (js.get_stream(from).await.unwrap(), js.get_stream(to).await.unwrap());
    let state = new.info().await.unwrap().state.clone();
    assert_eq!((state.first_sequence, state.last_sequence, state.messages), (1, last, last), "{to} holds every event of {from} once");
    let event_headers = |h: &async_nats::HeaderMap| -> BTreeMap<String, Vec<String>> {
        h.iter()
            .filter(|(k, _)| !is_append_instruction(k.as_ref()))
            .map(|(k, v)| (k.to_string(), v.iter().map(|v| v.to_string()).collect()))
            .collect()
    };
    let mut batched = 0;
    for seq in 1..=last {
        let (a, b) = (old.get_raw_message(seq).await.unwrap(), new.get_raw_message(seq).await.unwrap());
        let (_, key, event_type) = parse_stored_subject(&b.subject).unwrap();
        assert_eq!(Some((key, event_type)), parse_stored_subject(&a.subject).map(|(_, k, t)| (k, t)), "sequence {seq}");
        assert!(b.subject.starts_with(&format!("ev.{}.", partition_of(key, partitions))), "{} is in its partition of {partitions}", b.subject);
        assert_eq!(a.payload, b.payload, "sequence {seq} holds the same event");
        assert_eq!(event_headers(&a.headers), event_headers(&b.headers), "sequence {seq} has the same headers");
        let id: serde_json::Value = serde_json::from_slice(&b.payload).unwrap();
        assert_eq!(b.headers.get("Nats-Msg-Id").map(|v| v.to_string()).as_deref(), id["id"].as_str(), "sequence {seq} keeps its event id");
        batched += usize::from(a.headers.get("Nats-Batch-Id").is_some());
    }
    batched
}

/// Appends `events` as the service `test` in one request: an atomic batch.
async fn append_batch(stack: &Stack, events: &[(String, String, serde_json::Value)]) {
    let events: Vec<_> = events.iter().map(|(t, k, d)| json!({ "type": t, "key": k, "expect": "any", "data": d })).collect();
    let reply = stack.admin.request("sequent.append.test", json!({ "events": events }).to_string().into()).await.unwrap();
    let reply: sequent_protocol::AppendReply = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply.all_stored(), "{reply:?}");
}

/// Every key's count and applied sequences are what was appended: none lost, none twice.
async fn check(stack: &Stack, expected: &BTreeMap<String, i64>, label: &str) {
    for (key, n) in expected {
        assert_eq!(stack.get_int("test", &format!("count:{key}")).await, Some(*n), "{label}: {key} lost or applied twice");
        let s = seqs(stack, "test", key).await;
        assert_eq!(s.len() as i64, *n, "{label}: {key}");
        assert_ordered(key, &s);
    }
}

/// How many events of the parked key `grow-bad` are held in namespace `ns`.
async fn held(stack: &Stack, ns: &str) -> usize {
    redis::cmd("LLEN").arg(format!("{ns}:__held:grow-bad")).query_async(&mut stack.redis_con().await).await.unwrap()
}

/// SIGTERM, and the process's end.
async fn stop(child: &mut sequent_tests::Child) {
    child.signal(libc::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("it stops on SIGTERM").unwrap();
}

/// Runs a superclient subcommand as the admin user; its output, which must end in success.
async fn superclient(stack: &Stack, args: &[&str]) -> String {
    let out = tokio::process::Command::new(sequent_tests::binary("superclient")).args(args).envs(as_admin(stack)).output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "superclient {args:?} failed: {text}");
    text
}

/// A gateway's environment for `stream` with `partitions`; on a stack with the auth callout it
/// answers it (the permissions it gives follow its stream and count).
fn gateway_env(stack: &Stack, stream: &str, partitions: u32) -> Vec<(String, String)> {
    let mut env = vec![
        ("NATS_URL".to_string(), stack.nats.url.clone()),
        ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{}", sequent_tests::free_port())),
        ("SEQUENT_STREAM".to_string(), stream.to_string()),
        ("SEQUENT_PARTITIONS".to_string(), partitions.to_string()),
        ("RUST_LOG".to_string(), "warn,bus_gateway=info".to_string()),
    ];
    env.extend(stack.callout.iter().flat_map(|c| c.gateway_env()));
    env
}

/// Runs `bus-gateway --repartition-from FROM` into `stream` with `partitions` until it says
/// `needle`; whether it then succeeds.
async fn repartition(stack: &Stack, from: &str, stream: &str, partitions: u32, needle: &str) -> bool {
    repartition_with(stack, from, stream, partitions, &[], needle).await
}

/// [`repartition`] with more arguments.
async fn repartition_with(stack: &Stack, from: &str, stream: &str, partitions: u32, args: &[&str], needle: &str) -> bool {
    let mut all = vec!["--repartition-from", from];
    all.extend_from_slice(args);
    let mut run = sequent_tests::Child::spawn("repartition", sequent_tests::binary("bus-gateway"), &all, &gateway_env(stack, stream, partitions)).unwrap();
    run.wait_for_line(needle, Duration::from_secs(120)).await.expect("the run says what it did");
    run.wait().await.unwrap().success()
}

/// Starts an instance of the counter service with its own credentials (the auth callout
/// admits it with what the gateway now serving gives it).
fn counter(stack: &Stack, name: &str) -> sequent_tests::Child {
    let script = superclient_common::script("superclient_counter.lua").to_string_lossy().to_string();
    sequent_tests::Child::spawn(name, sequent_tests::binary("superclient"), &[script.as_str(), "--instance", name], &stack.superclient_env()).unwrap()
}

#[tokio::test]
async fn the_partition_count_is_raised_by_copying_the_stream_and_moving_the_checkpoints_nothing_lost_or_repeated() {
    let _serial = serial().await;
    // As a deployment runs: the services connect with their own credentials, admitted by the
    // gateway's auth callout.
    let mut stack = stack_with_callout(&["superclient_counter.lua"]).await;
    let mut a = stack.instance("superclient_counter.lua", "grow-a", &["--max-attempts", "2", "--retry-delay", "50ms"]).await;
    // A key that fails: parked with its events held (by sequence) across the copy.
    let ns = stack.active_ns("test").await.unwrap();
    let mut con = stack.redis_con().await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:fail:grow-bad")).arg("true").query_async(&mut con).await.unwrap();
    for n in 0..2 {
        assert!(stack.append("test", "Counted", "grow-bad", json!({ "n": n })).await.all_stored());
    }
    let keys: Vec<String> = (0..48).map(|i| format!("grow-{i}")).collect();
    let counted = |rounds: std::ops::Range<i64>| -> Vec<(String, String, serde_json::Value)> {
        rounds.flat_map(|n| keys.iter().map(move |k| ("Counted".to_string(), k.clone(), json!({ "n": n })))).collect()
    };
    // The first round in atomic batches of 8, the others one by one.
    for batch in counted(0..1).chunks(8) {
        append_batch(&stack, batch).await;
    }
    stack.append_many("test", counted(1..3), 16).await;
    let mut expected: BTreeMap<String, i64> = keys.iter().map(|k| (k.clone(), 3)).collect();
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;
    wait_until("grow-bad to be parked with its 2 events held", Duration::from_secs(60), || async { held(&stack, &ns).await == 2 }).await.unwrap();
    // A route-only key (not derived from events): kept, since the state is not rebuilt.
    let _: () = redis::cmd("SET").arg(format!("{ns}:route-only")).arg("\"kept\"").query_async(&mut con).await.unwrap();

    // Events the service has not handled yet (it is paused) when the appends stop (the
    // gateway goes): the copy waits for them, gives up, and changes nothing.
    a.child.pause().unwrap();
    stack.append_many("test", counted(3..4), 16).await;
    expected.values_mut().for_each(|n| *n = 4);
    stop(&mut stack.gateway).await;
    let mut run = sequent_tests::Child::spawn(
        "repartition-early",
        sequent_tests::binary("bus-gateway"),
        &["--repartition-from", "EVENTS", "--repartition-wait", "1s"],
        &gateway_env(&stack, "EVENTS2", 32),
    )
    .unwrap();
    run.wait_for_line("these consumers of EVENTS still have events to handle: test-p", Duration::from_secs(60)).await.expect("the unhandled events are named");
    assert!(!run.wait().await.unwrap().success());
    let js = async_nats::jetstream::new(stack.admin.clone());
    assert!(js.get_stream("EVENTS2").await.is_err(), "nothing was made");
    assert_eq!(js.get_stream("EVENTS").await.unwrap().cached_info().config.subjects, ["ev.*.*"], "the old stream is as it was");
    a.child.resume().unwrap();
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;

    // The same count is refused and changes nothing.
    assert!(!repartition(&stack, "EVENTS", "EVENTS2", 16, "stream EVENTS already has 16 partitions").await);
    assert!(js.get_stream("EVENTS2").await.is_err(), "nothing was made");

    // A copy into 32 partitions interrupted half-way (the run ends where a killed one would
    // have stopped: the events up to there are stored, nothing else is done).
    let last = js.get_stream("EVENTS").await.unwrap().cached_info().state.last_sequence;
    let half = (last / 2).to_string();
    let stopped = format!("stopped after sequence {half}");
    assert!(!repartition_with(&stack, "EVENTS", "EVENTS2", 32, &["--repartition-stop-at", &half], &stopped).await);
    let old = js.get_stream("EVENTS").await.unwrap().cached_info().config.clone();
    assert_eq!(old.subjects, ["retired.EVENTS"], "the old stream takes no appends any more");
    assert_eq!(js.get_stream("EVENTS2").await.unwrap().cached_info().state.last_sequence, last / 2);
    // What the copy holds is not the old stream's: the run again names it and adds nothing.
    let intruder = js.publish("ev.intruder.Counted", "{}".into()).await.unwrap().await.unwrap();
    assert_eq!(intruder.sequence, last / 2 + 1, "an append on the copy's input subject lands in the copy");
    let refused = format!("stream EVENTS2 holds at sequence {} another event than EVENTS", last / 2 + 1);
    assert!(!repartition(&stack, "EVENTS", "EVENTS2", 32, &refused).await);
    assert_eq!(js.get_stream("EVENTS2").await.unwrap().cached_info().state.last_sequence, last / 2 + 1, "nothing added");
    js.delete_stream("EVENTS2").await.unwrap();
    assert!(!repartition_with(&stack, "EVENTS", "EVENTS2", 32, &["--repartition-stop-at", &half], &stopped).await);
    // No gateway serves the unfinished copy (an append would take a sequence it needs).
    let mut early = sequent_tests::Child::spawn("gateway-early", sequent_tests::binary("bus-gateway"), &[] as &[&str], &gateway_env(&stack, "EVENTS2", 32)).unwrap();
    early.wait_for_line(&format!("stream EVENTS2 is an unfinished copy of EVENTS (up to sequence {half} of {last})"), Duration::from_secs(30)).await.unwrap();
    assert!(!early.wait().await.unwrap().success());
    // Continuing it with another count is refused.
    assert!(!repartition(&stack, "EVENTS", "EVENTS2", 64, "stream EVENTS2 was made with 32 partitions, not 64").await);
    // A run stopped between retiring the old stream and its index (left so by hand here): the
    // next retires the index too, so the copy's index can take its subjects.
    let mut ix = js.get_stream("EVENTS_IX").await.unwrap().cached_info().config.clone();
    assert_eq!(ix.subjects, ["retired.EVENTS_IX"]);
    ix.subjects = vec!["ix.>".into()];
    js.update_stream(&ix).await.unwrap();
    // Run again, it finishes the copy: every event once, at its own sequence, the same event.
    let copied = format!("copied {} events of EVENTS (up to sequence {last}) into EVENTS2 with 32 partitions", last - last / 2);
    assert!(repartition(&stack, "EVENTS", "EVENTS2", 32, &copied).await);
    assert!(repartition(&stack, "EVENTS", "EVENTS2", 32, "copied 0 events").await, "a second run finds the copy done");
    assert!(assert_copied(&js, "EVENTS", "EVENTS2", last, 32).await >= 48, "the batches' events were copied too");
    assert_eq!(js.get_stream("EVENTS_IX").await.unwrap().cached_info().config.subjects, ["retired.EVENTS_IX"]);
    let mut copy = js.get_stream("EVENTS2").await.unwrap();

    // The service restarts against the copy, with its own credentials (the gateway on the copy
    // gives it the rights on EVENTS2's 32 partitions): its checkpoints move, its state stays.
    stop(&mut a.child).await;
    let mut gateway = sequent_tests::Child::spawn("gateway-32", sequent_tests::binary("bus-gateway"), &[] as &[&str], &gateway_env(&stack, "EVENTS2", 32)).unwrap();
    gateway.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.unwrap();
    let script = superclient_common::script("superclient_counter.lua").to_string_lossy().to_string();
    let mut b = counter(&stack, "grow-b");
    b.wait_for_line("checkpoints moved to the copy's end", Duration::from_secs(60)).await.expect("the checkpoints move");
    b.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    assert_eq!(stack.active_ns("test").await.as_deref(), Some(ns.as_str()), "not rebuilt");
    let recorded: Option<u32> = redis::cmd("GET").arg(format!("{ns}:__partitions")).query_async(&mut con).await.unwrap();
    assert_eq!(recorded, Some(32));
    for p in 0..32 {
        let applied: Option<u64> = redis::cmd("GET").arg(format!("{ns}:__applied:{p}")).query_async(&mut con).await.unwrap();
        assert!(applied.unwrap_or(0) >= last, "partition {p} starts after the copy's end");
    }

    // New events on the copy are applied once; the old ones not again. The parked key's new
    // event is held behind the others (its partition of 32 knows it is parked); released, all
    // three apply in order.
    stack.append_many("test", counted(4..6), 16).await;
    assert!(stack.append("test", "Counted", "grow-bad", json!({ "n": 2 })).await.all_stored());
    // Its own appends (a Pong for a Ping) go through the gateway on the copy.
    assert!(stack.append("test", "Ping", "grow-ping", json!({ "n": 1 })).await.all_stored());
    wait_until("the service's Pong to be stored", Duration::from_secs(60), || async {
        let receipts: Vec<String> = redis::cmd("LRANGE").arg(format!("{ns}:receipts")).arg(0).arg(-1).query_async(&mut stack.redis_con().await).await.unwrap();
        receipts.iter().any(|r| r.contains("\"ok\""))
    })
    .await
    .unwrap();
    expected.values_mut().for_each(|n| *n = 6);
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;
    wait_until("grow-bad's new event to be held too", Duration::from_secs(60), || async { held(&stack, &ns).await == 3 }).await.unwrap();
    let _: () = redis::cmd("DEL").arg(format!("{ns}:fail:grow-bad")).query_async(&mut con).await.unwrap();
    let out = superclient(&stack, &["parked", "release", "test", "grow-bad"]).await;
    assert!(out.contains("released"), "{out}");
    expected.insert("grow-bad".into(), 3);
    check(&stack, &expected, "after the copy").await;
    let kept: Option<String> = redis::cmd("GET").arg(format!("{ns}:route-only")).query_async(&mut con).await.unwrap();
    assert_eq!(kept.as_deref(), Some("\"kept\""));

    // A rebuild on the copy (with the service's own credentials: direct gets on EVENTS2)
    // matches the moved checkpoints (which are no events of their partitions) and gives the
    // same counts.
    let (ok, text) = stack.command(&["rebuild", &script, "--instance", "grow-rebuilder"]).await;
    assert!(ok, "{text}");
    assert_ne!(stack.active_ns("test").await.as_deref(), Some(ns.as_str()), "rebuilt: {text}");
    check(&stack, &expected, "after a rebuild").await;

    // A copy of the copy, 32 → 64: its record of the count before it is not its own count.
    stop(&mut gateway).await;
    let last = copy.info().await.unwrap().state.last_sequence;
    assert!(repartition(&stack, "EVENTS2", "EVENTS3", 64, &format!("copied {last} events of EVENTS2 (up to sequence {last}) into EVENTS3 with 64 partitions")).await);
    assert_copied(&js, "EVENTS2", "EVENTS3", last, 64).await;
    stop(&mut b).await;
    let mut gateway = sequent_tests::Child::spawn("gateway-64", sequent_tests::binary("bus-gateway"), &[] as &[&str], &gateway_env(&stack, "EVENTS3", 64)).unwrap();
    gateway.wait_for_line("bus-gateway ready", Duration::from_secs(30)).await.unwrap();
    let mut b = counter(&stack, "grow-b2");
    b.wait_for_line("checkpoints moved to the copy's end", Duration::from_secs(60)).await.expect("the checkpoints move again");
    b.wait_for_line("superclient ready", Duration::from_secs(60)).await.unwrap();
    stack.append_many("test", counted(6..7), 16).await;
    keys.iter().for_each(|k| *expected.get_mut(k).unwrap() = 7);
    stack.wait_counts("test", &expected, Duration::from_secs(120)).await;
    check(&stack, &expected, "after a second copy").await;

    // A state for a count the stream was not copied from is refused, and left as it was.
    let ns = stack.active_ns("test").await.unwrap();
    stop(&mut b).await;
    let _: () = redis::cmd("SET").arg(format!("{ns}:__partitions")).arg(8).query_async(&mut con).await.unwrap();
    let before: Vec<Option<u64>> = redis::cmd("MGET").arg((0..64).map(|p| format!("{ns}:__applied:{p}")).collect::<Vec<_>>()).query_async(&mut con).await.unwrap();
    let mut c = counter(&stack, "grow-c");
    c.wait_for_line("is for 8 partitions, but the stream has 64", Duration::from_secs(60)).await.expect("the mismatch is named");
    assert!(!c.wait().await.unwrap().success());
    let after: Vec<Option<u64>> = redis::cmd("MGET").arg((0..64).map(|p| format!("{ns}:__applied:{p}")).collect::<Vec<_>>()).query_async(&mut con).await.unwrap();
    assert_eq!(before, after, "the refused state is untouched");
}

/// The copy keeps every event id (`Nats-Msg-Id`), so the copy's duplicate window would drop
/// an id seen twice: a stream holding one twice (published outside the gateway, which never
/// stores an id twice) is refused with the two sequences named.
#[tokio::test]
async fn a_copy_of_a_stream_holding_an_event_id_twice_is_refused_and_names_it() {
    let _serial = serial().await;
    let nats = sequent_tests::nats().await.unwrap();
    let js = async_nats::jetstream::new(nats.admin().await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TWICE".into(),
        subjects: vec![sequent_protocol::subjects::STREAM_INPUT.into()],
        subject_transform: Some(async_nats::jetstream::stream::SubjectTransform {
            source: sequent_protocol::subjects::STREAM_INPUT.into(),
            destination: sequent_protocol::subjects::stream_transform_destination(4),
        }),
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let publish = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", "the-same-id");
        js.publish_with_headers("ev.k.Counted", headers, "{}".into()).await.unwrap().await.unwrap()
    };
    assert_eq!(publish().await.sequence, 1);
    // Stored again once the short duplicate window has passed.
    wait_until("the id to be stored a second time", Duration::from_secs(30), || async { !publish().await.duplicate }).await.unwrap();
    let env = vec![
        ("NATS_URL".to_string(), nats.url.clone()),
        ("SEQUENT_STREAM".to_string(), "TWICE2".to_string()),
        ("SEQUENT_PARTITIONS".to_string(), "8".to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ];
    let mut run = sequent_tests::Child::spawn("repartition", sequent_tests::binary("bus-gateway"), &["--repartition-from", "TWICE"], &env).unwrap();
    run.wait_for_line("the copy of sequence 2 was dropped as a duplicate of sequence 1", Duration::from_secs(60)).await.expect("the duplicate is named");
    assert!(!run.wait().await.unwrap().success());
    assert_eq!(js.get_stream("TWICE2").await.unwrap().cached_info().state.last_sequence, 1, "the copy stops before it");
}
