//! `bus-gateway --repartition-from OLD --stream NEW --partitions P2`: the offline way to a new
//! partition count (SCALING.md). A key's partition is `fnv1a(key) % P`, fixed in the stored
//! subjects, so a new count needs a new stream. This one-shot run:
//! 1. waits until every durable consumer of OLD (the services' partitions) has handled and
//!    acked everything (stop the gateways first, keep the services running);
//! 2. retires OLD: its input subjects (and its index's) are renamed, so no gateway can append
//!    to it any more; its partition count is kept in its metadata; then waits as in 1 again
//!    for appends made meanwhile. Each service's state then covers the whole of OLD;
//! 3. creates NEW with `--partitions`, recording in its metadata what it is a copy of and up
//!    to which sequence, and copies OLD into it in order, keeping every sequence (each copy is
//!    published with `Nats-Expected-Last-Sequence`), so checkpoints, held lists and the
//!    sequences in events stay true. A copy is the same event: key, type, payload and headers,
//!    the event id (`Nats-Msg-Id`) among them, bar the append's instructions (`carried`).
//!
//! Services started against NEW then move their checkpoints to that sequence in every new
//! partition (superclient `state::migrate::repartition`) instead of rebuilding: nothing is
//! applied twice or skipped, and state written only by routes (TTL keys) stays. A run that
//! stopped half-way (killed, or the connection lost) is run again: NEW then holds a start of
//! OLD (each copy expects the one before it), which it checks at NEW's last event, and it
//! copies the rest. Until the copy is complete no gateway serves NEW (`store::Store::open`).

use crate::config::Config;
use crate::store::{ensure_stream, events_stream_config, ordered_config, INDEXER};
use anyhow::{bail, Context};
use async_nats::jetstream::{self, stream};
use futures::{StreamExt, TryStreamExt};
use sequent_protocol::subjects::{self, INDEX_STREAM_SUFFIX, META_COPIED_FROM, META_COPIED_TO, META_PARTITIONS_BEFORE};
use std::collections::VecDeque;
use std::time::Duration;

/// Metadata of a retired stream: its partition count (its transform is gone). Not
/// `META_PARTITIONS_BEFORE`, which a copy carries and which may be copied again later.
const RETIRED_PARTITIONS: &str = "sequent.retired_partitions";

/// Copies published before their acks are awaited.
const WINDOW: usize = 256;

pub async fn run(client: async_nats::Client, config: &Config, from: &str) -> anyhow::Result<()> {
    let mut js = jetstream::new(client);
    js.set_timeout(config.nats_timeout);
    if from == config.stream {
        bail!("--repartition-from {from} names the stream itself; give the new stream another name (--stream)");
    }
    let mut old = js.get_stream(from).await.with_context(|| format!("looking up stream {from}"))?;
    let old_config = old.info().await?.config.clone();
    let before = partitions_of(&old_config)?;
    if before == config.partitions {
        bail!("stream {from} already has {before} partitions; nothing to do");
    }
    // Waited for before retiring too: a service that is down can still be started to handle
    // what is left while nothing has changed (its gateway refuses a retired stream).
    wait_drained(&js, from, config.repartition_wait).await?;
    retire(&js, old_config, before).await?;
    // Appends that came in before the retirement.
    wait_drained(&js, from, config.repartition_wait).await?;
    let last = old.info().await?.state.last_sequence;

    let mut want = events_stream_config(config);
    want.metadata.insert(META_COPIED_FROM.into(), from.to_string());
    want.metadata.insert(META_PARTITIONS_BEFORE.into(), before.to_string());
    want.metadata.insert(META_COPIED_TO.into(), last.to_string());
    if let Ok(mut existing) = js.get_stream(&config.stream).await {
        let have = existing.info().await?.config.clone();
        if have.metadata.get(META_COPIED_FROM).map(String::as_str) != Some(from) || have.metadata.get(META_COPIED_TO) != want.metadata.get(META_COPIED_TO) {
            bail!("stream {} exists and is not (the start of) a copy of {from} up to {last}; choose another name", config.stream);
        }
        let made = partitions_of(&have)?;
        if made != config.partitions {
            bail!("stream {} was made with {made} partitions, not {}: continue its copy with --partitions {made}", config.stream, config.partitions);
        }
    }
    let mut new = ensure_stream(&js, want).await?;
    let copied = copy(&js, from, &mut new, last, config.repartition_stop_at).await?;
    tracing::info!(from, to = config.stream, before, partitions = config.partitions, last, copied, "repartitioned: every event copied");
    println!("copied {copied} events of {from} (up to sequence {last}) into {} with {} partitions", config.stream, config.partitions);
    Ok(())
}

/// A stream's partition count: from its transform, or, once retired, from its metadata.
fn partitions_of(config: &stream::Config) -> anyhow::Result<u32> {
    if let Some(p) = config.metadata.get(RETIRED_PARTITIONS) {
        return p.parse().context("the retired stream's partition count");
    }
    let transform = config.subject_transform.as_ref().map(|t| t.destination.clone()).unwrap_or_default();
    (1..=65_536u32)
        .find(|p| subjects::stream_transform_destination(*p) == transform)
        .with_context(|| format!("stream {} has no partitioning transform ({transform:?})", config.name))
}

/// Renames OLD's input subjects and its index's, so appends stop (and NEW's index can take
/// `ix.>`), and keeps OLD's partition count in its metadata. Leaves alone what is retired
/// already, so a run stopped in between is completed by the next.
async fn retire(js: &jetstream::Context, mut config: stream::Config, before: u32) -> anyhow::Result<()> {
    let from = config.name.clone();
    if !config.metadata.contains_key(RETIRED_PARTITIONS) {
        config.subjects = vec![format!("retired.{from}")];
        config.subject_transform = None;
        config.metadata.insert(RETIRED_PARTITIONS.into(), before.to_string());
        js.update_stream(&config).await.with_context(|| format!("retiring stream {from}"))?;
        tracing::info!(stream = from, before, "retired: no more appends to it");
    }
    let index = format!("{from}{INDEX_STREAM_SUFFIX}");
    if let Ok(mut ix) = js.get_stream(&index).await {
        let mut ix_config = ix.info().await?.config.clone();
        let retired = vec![format!("retired.{index}")];
        if ix_config.subjects != retired {
            ix_config.subjects = retired;
            js.update_stream(&ix_config).await.with_context(|| format!("retiring stream {index}"))?;
        }
    }
    Ok(())
}

/// Waits until no durable consumer of OLD has events left to handle or to ack.
async fn wait_drained(js: &jetstream::Context, from: &str, wait: Duration) -> anyhow::Result<()> {
    let old = js.get_stream(from).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let infos: Vec<_> = old.consumers().try_collect().await.context("listing the consumers")?;
        let left: Vec<String> = infos
            .iter()
            .filter(|c| c.config.durable_name.is_some() && c.name != INDEXER)
            .filter(|c| c.num_pending > 0 || c.num_ack_pending > 0)
            .map(|c| format!("{} ({} unhandled, {} unacked)", c.name, c.num_pending, c.num_ack_pending))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "after {wait:?} these consumers of {from} still have events to handle: {}. \
                 Let the services run until they are handled (or release parked keys), then run this again",
                left.join(", ")
            );
        }
        tracing::info!(left = left.join(", "), "waiting for the services to handle what is left");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Copies OLD's events after NEW's last one, up to `last`, each at its own sequence and with
/// its headers (`carried`). What NEW holds already must be the start of OLD: its last event
/// is checked against OLD's (the sequences guard those before it, see below).
async fn copy(js: &jetstream::Context, from: &str, new: &mut stream::Stream, last: u64, stop_at: Option<u64>) -> anyhow::Result<u64> {
    let old = js.get_stream(from).await?;
    let have = new.info().await?.state.last_sequence;
    if have > 0 {
        same_event(&old, new, have.min(last)).await?;
    }
    let start = have + 1;
    if start > last {
        return Ok(0);
    }
    let reader = old.create_consumer(ordered_config(Vec::new(), start)).await.context("opening a reader")?;
    let mut messages = reader.messages().await.context("reading")?;
    let mut acks = VecDeque::new();
    let mut expect = start;
    while expect <= last {
        let msg = messages.next().await.context("the reader closed")?.context("reading")?;
        let seq = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        if seq != expect {
            bail!("stream {from} has no event at sequence {expect} (next is {seq}); a copy keeping sequences is impossible");
        }
        let (_, key, event_type) = subjects::parse_stored_subject(&msg.subject)
            .with_context(|| format!("sequence {seq} has subject {} (not ev.<p>.<key>.<type>)", msg.subject))?;
        // Each copy expects the one before it: nothing else can slip in between, and a copy
        // that failed stops the ones after it, so NEW is always a start of OLD.
        let mut headers = carried(msg.headers.as_ref());
        headers.insert("Nats-Expected-Last-Sequence", (seq - 1).to_string().as_str());
        let ack = js.publish_with_headers(subjects::publish_subject(key, event_type), headers, msg.payload.clone()).await?;
        acks.push_back((seq, ack));
        if acks.len() >= WINDOW {
            confirm(acks.pop_front(), from).await?;
        }
        if stop_at == Some(seq) {
            while let Some(next) = acks.pop_front() {
                confirm(Some(next), from).await?;
            }
            println!("stopped after sequence {seq} (--repartition-stop-at); run again without it to finish the copy");
            std::process::exit(STOPPED);
        }
        expect += 1;
    }
    while let Some(next) = acks.pop_front() {
        confirm(Some(next), from).await?;
    }
    Ok(last + 1 - start)
}

/// The exit status of a run stopped by `--repartition-stop-at`.
const STOPPED: i32 = 3;

/// The stored headers a copy carries: all but the append's instructions (the event id
/// `Nats-Msg-Id` among them), so the copy is the same event. Its time is the copy's (JetStream
/// sets it); the event's own `time` is in its payload, which is what readers use.
fn carried(headers: Option<&async_nats::HeaderMap>) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        if !subjects::is_append_instruction(name.as_ref()) {
            values.iter().for_each(|v| out.append(name.clone(), v.clone()));
        }
    }
    out
}

/// NEW's event at `seq` is OLD's: same key, type, payload and carried headers.
async fn same_event(old: &stream::Stream, new: &stream::Stream, seq: u64) -> anyhow::Result<()> {
    let (a, b) = (old.get_raw_message(seq).await?, new.get_raw_message(seq).await?);
    let event = |m: &jetstream::message::StreamMessage| {
        let (_, key, event_type) = subjects::parse_stored_subject(&m.subject).unwrap_or_default();
        (key.to_string(), event_type.to_string(), m.payload.clone(), carried(Some(&m.headers)))
    };
    if event(&a) != event(&b) {
        let (from, to) = (&old.cached_info().config.name, &new.cached_info().config.name);
        bail!(
            "stream {to} holds at sequence {seq} another event than {from} ({} rather than {}), so it is no start of a copy \
             of {from} and the copy cannot go on; delete it (nats stream rm {to}) and run again",
            b.subject,
            a.subject
        );
    }
    Ok(())
}

async fn confirm(next: Option<(u64, jetstream::context::PublishAckFuture)>, from: &str) -> anyhow::Result<()> {
    let Some((seq, ack)) = next else { return Ok(()) };
    let stored = ack.await.with_context(|| format!("copying sequence {seq}"))?;
    if stored.duplicate {
        bail!(
            "the copy of sequence {seq} was dropped as a duplicate of sequence {}: {from} holds its event id (Nats-Msg-Id) twice, \
             which the gateway never stores; the copy cannot keep every sequence",
            stored.sequence
        );
    }
    if stored.sequence != seq {
        bail!("the copy of sequence {seq} was stored at {}", stored.sequence);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streams_partition_count_comes_from_its_transform_or_once_retired_its_metadata() {
        let mut config = stream::Config {
            name: "EVENTS".into(),
            subject_transform: Some(stream::SubjectTransform {
                source: subjects::STREAM_INPUT.into(),
                destination: subjects::stream_transform_destination(16),
            }),
            ..Default::default()
        };
        assert_eq!(partitions_of(&config).unwrap(), 16);
        config.metadata.insert(META_PARTITIONS_BEFORE.into(), "8".into());
        assert_eq!(partitions_of(&config).unwrap(), 16, "a copy's record of the count before it is not its own count");
        config.subject_transform = None;
        assert!(partitions_of(&config).unwrap_err().to_string().contains("stream EVENTS has no partitioning transform"));
        config.metadata.insert(RETIRED_PARTITIONS.into(), "16".into());
        assert_eq!(partitions_of(&config).unwrap(), 16, "a retired stream keeps its count in its metadata");
    }

    #[test]
    fn a_copy_carries_the_events_headers_but_not_the_appends_instructions() {
        let mut stored = async_nats::HeaderMap::new();
        stored.insert("Nats-Msg-Id", "01-id");
        stored.insert("Nats-Expected-Last-Subject-Sequence", "7");
        stored.insert("Nats-Batch-Id", "b1");
        stored.insert("traceparent", "00-a");
        stored.append("traceparent", "00-b");
        let mut want = async_nats::HeaderMap::new();
        want.insert("Nats-Msg-Id", "01-id");
        want.insert("traceparent", "00-a");
        want.append("traceparent", "00-b");
        assert_eq!(carried(Some(&stored)), want);
        assert!(carried(None).is_empty());
    }
}
