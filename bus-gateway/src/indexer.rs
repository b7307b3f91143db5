//! Keeps the correlation index: for every stored event, `ix.c.<correlation>` gets its stream
//! sequence, with the message id `ix-<seq>` so that writing an entry again adds nothing.
//!
//! One durable consumer serves all gateways, pinned to one of them at a time (priority group,
//! pinned-client policy; the others wait on standby and take over `PIN_TIMEOUT` after the
//! pinned one stops pulling). The pinned gateway takes what has arrived (waiting up to
//! `LINGER` after the first event, at most `MAX_BATCH`), writes the entries all at once and,
//! when the stream has acknowledged them all, acks the batch's last event only (`AckAll`):
//! about three NATS messages per event (its delivery, its entry and the entry's
//! acknowledgement) instead of four. Up to `MAX_WRITING` batches are written at once; they are
//! acked in order. (One atomic batch per batch of entries would save the entries'
//! acknowledgements too, but each atomic batch took nats-server 2.15.1 20 ms or more and cost
//! it more CPU than the messages saved, see BENCHMARKS.md.)
//!
//! An `AckAll` ack covers every earlier event, including any delivered to another gateway (a
//! pin that moved while that one still held events, which JetStream does not rule out). So a
//! gateway acks only past sequences it has indexed itself or that were acked already: when its
//! deliveries leave a gap above what it knows is indexed, it re-reads the ack floor and
//! indexes the rest of the gap from the stream. Two gateways indexing the same events write
//! the same message ids, which the index stream absorbs within its duplicate window.

use crate::store::{backoff, Store, INDEXER as CONSUMER, MAX_ATTEMPTS};
use crate::App;
use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy};
use async_nats::jetstream::Message;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use sequent_protocol::subjects::{self, PIN_GROUP};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Events indexed (and acked) as one batch.
const MAX_BATCH: usize = 500;
/// How long the first event of a batch waits for others: the index lags by about this much,
/// and each batch costs one ack whatever its size.
const LINGER: Duration = Duration::from_millis(20);
/// A standby gateway takes over this long after the pinned one stopped pulling.
const PIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches being written at once (the next one gathers while the previous are answered).
const MAX_WRITING: usize = 4;
/// Pull requests expire well within `PIN_TIMEOUT`, so a live gateway keeps its pin.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct Correlated<'a> {
    #[serde(borrow)]
    correlation: std::borrow::Cow<'a, str>,
}

/// Indexes until `stop`, then finishes the batch in hand and hands the pin over.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut restarted = false;
    loop {
        match index(&app.store, restarted, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "correlation indexer stopped; restarting"),
        }
        restarted = true;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stopped(&mut stop) => return Ok(()),
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("bus-gateway: correlation index".into()),
        ack_policy: AckPolicy::All,
        max_ack_pending: 20_000,
        ack_wait: Duration::from_secs(30),
        priority_policy: PriorityPolicy::PinnedClient,
        priority_groups: vec![PIN_GROUP.into()],
        priority_timeout: PIN_TIMEOUT,
        ..Default::default()
    }
}

async fn index(store: &Store, restarted: bool, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    let consumer = store.ack_all_consumer(consumer_config(), None).await?;
    if restarted {
        // Our previous pull stream may hold the pin: the new one would wait `PIN_TIMEOUT`.
        let _ = store.events.unpin_consumer(CONSUMER, PIN_GROUP).await;
    }
    let mut upto = consumer.cached_info().ack_floor.stream_sequence;
    let mut messages = consumer
        .stream()
        .group(PIN_GROUP)
        .max_messages_per_batch(1000)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_EXPIRES / 3)
        .messages()
        .await?;
    let mut pinned = false;
    // Batches being written, oldest first. Each is acked once written, in order, so that an
    // ack (covering everything before it) never runs ahead of an unwritten batch.
    let mut writing = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            Some(written) = writing.next() => ack(written?).await?,
            m = messages.next(), if writing.len() < MAX_WRITING => {
                pinned = true;
                let mut batch = vec![m.ok_or_else(|| anyhow::anyhow!("the indexer's message stream ended"))??];
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, messages.next()).await {
                        Ok(Some(msg)) => batch.push(msg?),
                        Ok(None) => anyhow::bail!("the indexer's message stream ended"),
                        Err(_) => break,
                    }
                }
                let (entries, last, now_upto) = prepare(store, batch, upto).await?;
                upto = now_upto;
                writing.push_back(async move { write(store, &entries).await.map(|()| last) });
            }
            () = stopped(stop) => {
                while let Some(written) = writing.next().await {
                    ack(written?).await?;
                }
                // Let a standby gateway take over now rather than after `PIN_TIMEOUT`.
                if pinned {
                    let _ = store.events.unpin_consumer(CONSUMER, PIN_GROUP).await;
                }
                return Ok(());
            }
        }
    }
}

/// AckAll: acking the batch's last delivery covers every earlier event, all indexed by now.
async fn ack(last: Option<Message>) -> anyhow::Result<()> {
    match last {
        Some(m) => m.ack().await.map_err(|e| anyhow::anyhow!("acking the index batch: {e}")),
        None => Ok(()),
    }
}

/// The entries of the delivered events above `upto` (everything up to `upto` is indexed or
/// being written), with gaps filled from the stream; the delivery to ack once they are
/// written (none if all were redeliveries); and the new `upto`.
async fn prepare(store: &Store, batch: Vec<Message>, mut upto: u64) -> anyhow::Result<(Vec<Entry>, Option<Message>, u64)> {
    let mut delivered: BTreeMap<u64, Message> = BTreeMap::new();
    for msg in batch {
        let seq = msg.info().map_err(|e| anyhow::anyhow!("a delivery without metadata: {e}"))?.stream_sequence;
        delivered.insert(seq, msg);
    }
    let last = delivered.keys().next_back().copied().unwrap_or(0);
    if last <= upto {
        return Ok((Vec::new(), None, upto)); // redeliveries of what is indexed already
    }
    let contiguous = delivered.range(upto + 1..).count() as u64 == last - upto;
    let mut entries = Vec::new();
    if contiguous {
        entries.extend(delivered.range(upto + 1..).filter_map(|(seq, m)| entry(*seq, &m.payload)));
    } else {
        // Some of these events went to another gateway (or to our previous pull stream): what is
        // acked is indexed; the rest we index before acking past it.
        upto = upto.max(indexer_floor(store).await?);
        if last > upto {
            tracing::info!(from = upto + 1, to = last, "indexer: a gap in the deliveries; indexing it from the stream");
            let (events, _) = store.scan(&store.events, vec![], upto + 1, (last - upto) as usize).await?;
            entries.extend(events.iter().filter_map(|m| entry(m.info().ok()?.stream_sequence, &m.payload)));
        }
    }
    let ack = (last > upto).then(|| delivered.remove(&last)).flatten();
    Ok((entries, ack, upto.max(last)))
}

/// The consumer's ack floor: every event up to it is indexed.
async fn indexer_floor(store: &Store) -> anyhow::Result<u64> {
    Ok(store.events.consumer_info(CONSUMER).await?.ack_floor.stream_sequence)
}

/// An index entry: subject, headers (the message id), payload.
type Entry = (String, HeaderMap, Bytes);

/// The index entry of the event stored at `seq`.
fn entry(seq: u64, payload: &[u8]) -> Option<Entry> {
    let Ok(c) = serde_json::from_slice::<Correlated>(payload) else {
        tracing::error!(seq, "event without a readable correlation; not indexed");
        return None;
    };
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("ix-{seq}").as_str());
    Some((subjects::correlation_index_subject(&c.correlation), headers, seq.to_string().into()))
}

/// Writes entries, all at once, each acknowledged by the stream. Its message id makes writing
/// an entry again (a retry, a redelivery, a gap filled by two gateways) add nothing.
async fn write(store: &Store, entries: &[Entry]) -> anyhow::Result<()> {
    futures::future::try_join_all(entries.iter().map(|e| write_one(store, e))).await.map(drop)
}

async fn write_one(store: &Store, (subject, headers, payload): &Entry) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        let stored = match store.js.publish_with_headers(subject.clone(), headers.clone(), payload.clone()).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return Ok(()),
            Err(why) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, why, subject, "retrying an index write");
                backoff(attempt).await;
                attempt += 1;
            }
            Err(why) => anyhow::bail!("writing the index entry on {subject}: {why}"),
        }
    }
}
