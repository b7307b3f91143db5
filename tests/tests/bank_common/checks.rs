//! The bank's invariants after traffic and faults, checked against the stream itself (read
//! with an ordered consumer, not through the services): every acknowledged operation stored
//! exactly once, every transfer ended, no negative balance, money conserved, statements equal
//! to events, loyalty points continuous, and each service's checkpoints equal to the last
//! event of its types in each partition. Losses and doubles are counted before the detailed
//! assertions, so a report can say how many there were.

use super::{Api, Bank, Customers, Tally};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use sequent_protocol::subjects;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// One stored event: its payload plus where it is.
#[derive(Clone, Debug)]
pub struct Stored {
    pub seq: u64,
    pub partition: u32,
    pub event: Value,
}

/// Every event of the EVENTS stream, in order.
pub async fn stream_events(admin: &async_nats::Client) -> Vec<Stored> {
    let js = async_nats::jetstream::new(admin.clone());
    let stream = js.get_stream("EVENTS").await.expect("the EVENTS stream");
    let consumer = stream
        .create_consumer(OrderedConfig { filter_subject: "ev.>".into(), deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await
        .expect("an ordered consumer");
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.expect("messages");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next()).await.expect("the stream keeps answering").expect("open").expect("a message");
        let info = msg.info().expect("JetStream metadata");
        let (seq, pending) = (info.stream_sequence, info.pending);
        let (partition, _, _) = subjects::parse_stored_subject(&msg.subject).expect("a stored subject");
        out.push(Stored { seq, partition, event: serde_json::from_slice(&msg.payload).expect("a JSON event") });
        if pending == 0 {
            return out;
        }
    }
}

/// What the checks counted.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Acknowledged operations or their effects missing from the stream or a projection.
    pub lost: usize,
    /// Events stored twice, or applied twice to a projection.
    pub twice: usize,
    pub completed: usize,
    pub failed: usize,
    /// Events in the stream.
    pub events: usize,
    /// Checkpoints compared with the stream.
    pub checkpoints: usize,
}

/// Checks every invariant (panics on a violation, after counting losses and doubles).
pub async fn check_bank(bank: &Bank, api: &Api, c: &Customers, tally: &Tally) -> Verdict {
    let events = stream_events(&bank.admin).await;
    let mut v = Verdict { events: events.len(), ..Default::default() };
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut by_correlation: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<Value>> = HashMap::new();
    for s in &events {
        let e = &s.event;
        *ids.entry(e["id"].as_str().unwrap()).or_default() += 1;
        by_correlation.entry(e["correlation"].as_str().unwrap_or_default()).or_default().push(e);
        let mut with_seq = e.clone();
        with_seq["seq"] = s.seq.into();
        by_key.entry(e["key"].as_str().unwrap()).or_default().push(with_seq);
    }
    v.twice += ids.values().map(|n| n - 1).sum::<usize>();
    v.lost += tally.entries.iter().filter(|id| !ids.contains_key(id.as_str())).count();
    let requested = |t: &str| by_correlation.get(t).map_or(0, |es| es.iter().filter(|e| e["type"] == "TransferRequested").count());
    v.lost += tally.transfers.iter().filter(|(t, _)| requested(t) == 0).count();

    // Projections: a statement entry applied twice or missing, per account.
    let mut statements = Vec::new();
    for (id, owner) in &c.accounts {
        let statement = api.statement(&c.tokens[*owner], id).await;
        let entry_ids: Vec<&str> = statement.iter().map(|e| e["entry_id"].as_str().unwrap_or_default()).collect();
        let distinct: BTreeSet<&str> = entry_ids.iter().copied().collect();
        v.twice += entry_ids.len() - distinct.len();
        let money = by_key.get(id.as_str()).map_or(&[][..], |e| &e[..]);
        v.lost += money.iter().filter(|e| e["type"] == "AccountCredited" || e["type"] == "AccountDebited").filter(|e| !distinct.contains(e["id"].as_str().unwrap())).count();
        statements.push(statement);
    }
    eprintln!("CHECK: {} events in the stream, {} lost, {} twice", v.events, v.lost, v.twice);
    assert_eq!((v.lost, v.twice), (0, 0), "nothing lost, nothing doubled");

    // Every transfer completed or failed with a reason; its events tell the same story.
    for (id, owner) in &tally.transfers {
        let (s, t) = api.get(&format!("/api/transfers/{id}"), &c.tokens[*owner]).await;
        assert_eq!(s, 200, "{t}");
        let events = &by_correlation[id.as_str()];
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let own: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        for e in events.iter().filter(|e| e["type"] != "TransferRequested") {
            assert!(own.contains(e["causation"].as_str().unwrap_or("")), "{id}: {e} is not caused by an event of the transfer");
        }
        let count = |t: &str, reason: Option<&str>| events.iter().filter(|e| e["type"] == t && reason.is_none_or(|r| e["data"]["reason"] == r)).count();
        match t["status"].as_str() {
            Some("completed") => {
                v.completed += 1;
                assert_eq!(
                    (count("AccountDebited", Some("transfer")), count("AccountCredited", Some("transfer")), count("TransferCompleted", None), count("TransferFailed", None)),
                    (1, 1, 1, 0),
                    "{id}: {types:?}"
                );
            }
            Some("failed") => {
                v.failed += 1;
                let reason = t["reason"].as_str().unwrap_or_default();
                assert!(["insufficient funds", "unknown account", "same account"].contains(&reason), "{id}: {t}");
                assert_eq!((count("TransferFailed", None), count("TransferCompleted", None)), (1, 0), "{id}: {types:?}");
                assert_eq!(count("AccountDebited", None), count("AccountCredited", Some("refund")), "{id}: a debit is reversed: {types:?}");
            }
            other => panic!("{id} is still {other:?}: {types:?}"),
        }
    }

    // Money is conserved: balances = deposits - withdrawals (+ the loyalty cashback, money
    // nectar adds by its rules); no statement ever went below zero; statements = events.
    let mut total = 0;
    let mut cashback = 0;
    for ((id, owner), statement) in c.accounts.iter().zip(&statements) {
        let (s, a) = api.get(&format!("/api/accounts/{id}"), &c.tokens[*owner]).await;
        assert_eq!(s, 200, "{a}");
        let balance = a["balance_cents"].as_i64().unwrap();
        assert!(balance >= 0, "{a}");
        total += balance;
        super::assert_statement_matches_events(id, statement, &by_key[id.as_str()]);
        assert_eq!(statement.first().map_or(0, |e| e["balance_cents"].as_i64().unwrap()), balance);
        cashback += statement.iter().filter(|e| e["kind"] == "cashback").map(|e| e["amount_cents"].as_i64().unwrap()).sum::<i64>();
    }
    eprintln!("MONEY: deposited {}, withdrawn {}, cashback {cashback}, balances {total}", tally.deposited, tally.withdrawn);
    assert_eq!(total, tally.deposited - tally.withdrawn + cashback, "money is conserved");
    // The store agrees with what the clients were told, request by request.
    // (The customers' accounts only: a test may keep accounts of its own aside.)
    let ours: BTreeSet<&str> = c.accounts.iter().map(|(id, _)| id.as_str()).collect();
    let sum = |t: &str, reason: &str| -> i64 {
        events.iter().map(|s| &s.event).filter(|e| e["type"] == t && e["data"]["reason"] == reason && ours.contains(e["key"].as_str().unwrap())).map(|e| e["data"]["amount_cents"].as_i64().unwrap()).sum()
    };
    assert_eq!(sum("AccountCredited", "deposit"), tally.deposited, "each deposit stored once");
    assert_eq!(sum("AccountDebited", "withdrawal"), tally.withdrawn, "each withdrawal stored once");
    assert_eq!(sum("AccountCredited", "cashback"), cashback);

    // Loyalty points: each nectar key's chain of points is continuous and never negative.
    let mut points_keys: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in events.iter().map(|s| &s.event).filter(|e| e["type"] == "NectarCredit" || e["type"] == "NectarDebit") {
        points_keys.entry(e["key"].as_str().unwrap()).or_default().push(e);
    }
    for (key, events) in points_keys {
        let mut points = 0;
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e["version"].as_u64(), Some(n as u64), "{key}: {e}");
            points += if e["type"] == "NectarCredit" { 1 } else { -1 } * e["data"]["points"].as_i64().unwrap();
            assert_eq!(e["data"]["points_balance"].as_i64(), Some(points), "{key}: {e}");
            assert!(points >= 0, "{key}: {e}");
        }
    }

    v.checkpoints = check_checkpoints(bank, &events).await;
    v
}

/// Each consuming service's checkpoint `<active ns>:__applied:<p>` equals the sequence of the
/// last event of its types in partition `p` (after the bank settled). Returns how many
/// checkpoints were compared.
pub async fn check_checkpoints(bank: &Bank, events: &[Stored]) -> usize {
    let js = async_nats::jetstream::new(bank.admin.clone());
    let stream = js.get_stream("EVENTS").await.unwrap();
    let mut redis = bank.redis.connection().await.unwrap();
    let mut compared = 0;
    // The explorer consumes no events: it has no checkpoints.
    let mut services: Vec<&str> = bank.instances.iter().map(|i| i.service.as_str()).filter(|s| *s != "bfaf" && *s != "explorer").collect();
    services.sort();
    services.dedup();
    for service in services {
        let active: String = redis::cmd("GET").arg(format!("sequent:{{{service}}}:active")).query_async(&mut redis).await.unwrap();
        for p in 0..16u32 {
            // Partitioned state (nectar): each partition has its own pointer and checkpoint.
            let own: Option<String> = redis::cmd("GET").arg(format!("sequent:{{{service}.{p}}}:active")).query_async(&mut redis).await.unwrap();
            let active = own.unwrap_or_else(|| active.clone());
            let info = stream.consumer_info(subjects::consumer_name(service, p)).await.unwrap();
            // Filters are `ev.<p>.*.<type>`.
            let filters = if info.config.filter_subjects.is_empty() { vec![info.config.filter_subject.clone()] } else { info.config.filter_subjects.clone() };
            let types: BTreeSet<String> = filters.iter().map(|f| f.rsplit('.').next().unwrap().to_string()).collect();
            let want = events.iter().filter(|s| s.partition == p && types.contains(s.event["type"].as_str().unwrap())).map(|s| s.seq).max().unwrap_or(0);
            let have: Option<u64> = redis::cmd("GET").arg(format!("{active}:__applied:{p}")).query_async(&mut redis).await.unwrap();
            assert_eq!(have.unwrap_or(0), want, "{service} ({active}), partition {p}: the checkpoint is not the last event of its types");
            compared += 1;
        }
    }
    compared
}
