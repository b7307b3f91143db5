//! The JetStream behaviours the partition workers rely on (superclient/src/consume/worker.rs),
//! checked against the real nats-server, so that an upgrade that changes one fails here first:
//!
//! - with `AckAll`, one ack covers every earlier delivery;
//! - deliveries carry consecutive consumer sequences; a RESET sets the ack floor's consumer
//!   sequence to 0, and the next deliveries are the first events not acked, numbered from 1;
//! - a RESET to a stream sequence below the ack floor (a worker going back to its checkpoint)
//!   delivers again from there, also on a filtered consumer;
//! - a NAK on an `AckAll` consumer delivers that event again, but only once the server has
//!   applied it, on its own time unless sent as a request (the workers do not NAK; a partition's
//!   next owner takes back what the previous one left in hand with a RESET);
//! - a batched direct get answers each message with `Nats-Num-Pending` (how many match after
//!   it), then an end-of-batch marker.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use sequent_net::DirectReader;
use std::time::Duration;

async fn setup() -> (sequent_tests::NatsServer, jetstream::Context, stream::Stream) {
    let nats = sequent_tests::nats().await.expect("nats-server starts");
    let js = jetstream::new(nats.admin().await.expect("admin connects"));
    let stream = js
        .create_stream(stream::Config { name: "SEM".into(), subjects: vec!["sem.>".into()], allow_direct: true, ..Default::default() })
        .await
        .expect("a stream");
    for i in 1..=10 {
        js.publish(format!("sem.{}", i % 3), format!("{i}").into()).await.unwrap().await.unwrap();
    }
    (nats, js, stream)
}

/// A durable consumer `name` that acks in batches, as the partition workers' are.
fn ack_all(name: &str) -> consumer::pull::Config {
    consumer::pull::Config { durable_name: Some(name.into()), ack_policy: consumer::AckPolicy::All, max_ack_pending: 100, ..Default::default() }
}

/// Fetches up to `n` deliveries (waiting 2 s at most).
async fn fetch(c: &consumer::Consumer<consumer::pull::Config>, n: usize) -> Vec<jetstream::Message> {
    let mut batch = c.fetch().max_messages(n).expires(Duration::from_secs(2)).messages().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.unwrap());
    }
    out
}

/// Fetches up to `n` deliveries: (stream sequence, consumer sequence) each.
async fn positions(c: &consumer::Consumer<consumer::pull::Config>, n: usize) -> Vec<(u64, u64)> {
    fetch(c, n).await.iter().map(|m| m.info().map(|i| (i.stream_sequence, i.consumer_sequence)).unwrap()).collect()
}

#[tokio::test]
async fn ack_all_and_reset_keep_deliveries_in_consumer_order() {
    let (_nats, _js, stream) = setup().await;
    let consumer = stream.create_consumer(ack_all("c")).await.unwrap();
    let got = fetch(&consumer, 6).await;
    let got_positions: Vec<(u64, u64)> = got.iter().map(|m| m.info().map(|i| (i.stream_sequence, i.consumer_sequence)).unwrap()).collect();
    assert_eq!(got_positions, (1..=6).map(|i| (i, i)).collect::<Vec<_>>(), "consecutive consumer sequences");
    // One ack of the third covers the first three.
    got[2].double_ack().await.unwrap();
    let mut c = stream.get_consumer::<consumer::pull::Config>("c").await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!((info.ack_floor.stream_sequence, info.ack_floor.consumer_sequence, info.num_ack_pending), (3, 3, 3));
    // Reset to the ack floor: the unacked deliveries come again, first; the consumer sequences
    // start over, right after the floor's (which the reset sets to 0).
    stream.reset_consumer("c", None).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!((info.ack_floor.stream_sequence, info.ack_floor.consumer_sequence), (3, 0));
    assert_eq!(positions(&c, 3).await, vec![(4, 1), (5, 2), (6, 3)]);
}

#[tokio::test]
async fn reset_to_a_sequence_below_the_ack_floor_delivers_again_from_it() {
    let (_nats, _js, stream) = setup().await;
    // sem.1 holds 1, 4, 7, 10.
    let consumer = stream.create_consumer(consumer::pull::Config { filter_subject: "sem.1".into(), ..ack_all("f") }).await.unwrap();
    fetch(&consumer, 4).await.last().expect("four deliveries").double_ack().await.unwrap();
    let mut c = stream.get_consumer::<consumer::pull::Config>("f").await.unwrap();
    assert_eq!(c.info().await.unwrap().ack_floor.stream_sequence, 10);
    // Back to the event after a checkpoint at 4 (between two of the consumer's events: 5).
    stream.reset_consumer("f", Some(5)).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!((info.ack_floor.stream_sequence, info.num_ack_pending), (4, 0), "{info:?}");
    assert_eq!(positions(&c, 4).await, vec![(7, 1), (10, 2)]);
}

#[tokio::test]
async fn batched_direct_gets_say_what_follows() {
    let (nats, _js, _stream) = setup().await;
    let reader = DirectReader::new(nats.admin().await.unwrap(), "SEM");
    let (batch, end) = reader.batch("sem.1", 1, 2).await.unwrap();
    // sem.1 holds 1, 4, 7, 10.
    assert_eq!(batch.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 4]);
    assert_eq!(batch.iter().map(|m| m.pending).collect::<Vec<_>>(), vec![Some(3), Some(2)]);
    assert_eq!(end.pending, 2);
    let (rest, end) = reader.batch("sem.1", 5, 100).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![7, 10]);
    assert_eq!(end.pending, 0);
    let (none, _) = reader.batch("sem.1", 11, 100).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(reader.last("sem.*").await.unwrap().map(|m| m.seq), Some(10));
    assert!(reader.get(99).await.unwrap().is_none());
    let all: Vec<u64> = reader.scan("sem.>", 1, None).map(|m| m.unwrap().seq).collect().await;
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    let lasts = reader.multi_last(&["sem.*".to_string()], 100).await.unwrap();
    assert_eq!(lasts.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![8, 9, 10]);

    // Without a subject filter (a reader told every message matches `sem.>`), a batch says
    // the same: what follows each message and the batch.
    let unfiltered = reader.clone().covering("sem.>");
    let (batch, end) = unfiltered.batch("sem.>", 8, 2).await.unwrap();
    assert_eq!(batch.iter().map(|m| (m.seq, m.pending)).collect::<Vec<_>>(), vec![(8, Some(2)), (9, Some(1))]);
    assert_eq!(end.pending, 1);
    let all: Vec<u64> = unfiltered.scan("sem.>", 1, None).map(|m| m.unwrap().seq).collect().await;
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_nak_on_an_ack_all_consumer_delivers_again_once_the_server_has_applied_it() {
    let (nats, _js, stream) = setup().await;
    let mut c = stream.create_consumer(consumer::pull::Config { ack_wait: Duration::from_secs(60), ..ack_all("n") }).await.unwrap();
    let got = fetch(&c, 3).await;
    assert_eq!(got.iter().map(|m| m.info().unwrap().stream_sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Acks and NAKs are sent as requests, and answered once the server has applied them: a
    // plain ack is only published, and the server applies it on its own time (a pull sent
    // right after may be served first, as if the NAK had not been sent).
    got[0].double_ack().await.unwrap();
    let client = nats.admin().await.unwrap();
    for m in &got[1..] {
        let reply = m.reply.clone().expect("a delivery has a reply subject");
        client.request(reply, "-NAK".into()).await.expect("the server answers a NAK sent as a request");
    }
    // The refused ones come again first, then the newer events.
    let next: Vec<u64> = positions(&c, 9).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(next, (2..=10).collect::<Vec<_>>());
    let info = c.info().await.unwrap();
    assert_eq!((info.ack_floor.stream_sequence, info.num_ack_pending), (1, 9), "{info:?}");
}
