//! The event store on JetStream: stream setup, version-checked appends, reads.
//!
//! Every event of key K is stored under `ev.<p>.K.<type>`. An append reads K's last event (its
//! stream sequence S and version V), then publishes with `Nats-Expected-Last-Subject-Sequence: S`
//! over the filter `ev.*.K.*`. JetStream refuses the write if anything else was stored for K
//! since, so versions stay dense and two gateways cannot both win. The version cache only saves
//! the read; a stale entry just costs a refused publish and a fresh read.

use crate::config::Config;
use crate::jsapi::PublishOutcome;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use lru::LruCache;
use parking_lot::Mutex;
use sequent_protocol::envelope::{new_event_id, EventHead};
use sequent_protocol::subjects;
use sequent_protocol::{AppendReply, ErrorCode, Event, Expect, NewEvent, Producer, Receipt};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};
use thiserror::Error;

use sequent_protocol::subjects::INDEX_STREAM_SUFFIX as INDEX_SUFFIX;
/// Attempts for one append (or index write) when the key keeps moving ("any") or the server is
/// briefly away.
pub(crate) const MAX_ATTEMPTS: u32 = 12;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the event store did not answer: {0}. The outcome is unknown; retry with the same event ids")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    fn reply(&self) -> AppendReply {
        let code = match self {
            StoreError::Unavailable(_) => ErrorCode::Unavailable,
            StoreError::Internal(_) => ErrorCode::Internal,
        };
        AppendReply::error(code, self.to_string())
    }
}

/// The last event of a key, as far as the version chain is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub version: u64,
    pub id: String,
}

/// The gateways' durable consumer keeping the correlation index.
pub const INDEXER: &str = "sequent-indexer";

pub struct Store {
    client: async_nats::Client,
    pub js: jetstream::Context,
    pub events: stream::Stream,
    pub index: stream::Stream,
    pub stream_name: String,
    pub index_name: String,
    timeout: Duration,
    cache: Mutex<LruCache<String, Head>>,
    /// Atomic batches this gateway may have open at once.
    batch_slots: tokio::sync::Semaphore,
}

/// An event ready to be written: ids, time and version chain filled in.
struct Prepared {
    event: Event,
    expect: Expect,
    /// The client chose the id, so this may be a retry of an event already stored.
    client_id: bool,
}

impl Store {
    /// Creates the streams, or brings their settings up to date, idempotently.
    pub async fn open(client: async_nats::Client, config: &Config) -> anyhow::Result<Store> {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.nats_timeout);
        let events = ensure_stream(&js, events_stream_config(config)).await?;
        let transform = events.cached_info().config.subject_transform.clone();
        let want = subjects::stream_transform_destination(config.partitions);
        if transform.as_ref().map(|t| t.destination.as_str()) != Some(want.as_str()) {
            anyhow::bail!(
                "stream {} partitions its keys as {:?}, but this gateway was started with --partitions {}; \
                 partitions are fixed when the stream is created: start with the stream's value",
                config.stream,
                transform.map(|t| t.destination),
                config.partitions
            );
        }
        unfinished_copy(events.cached_info())?;
        let index = ensure_stream(&js, index_stream_config(config)).await?;
        let cache = NonZeroUsize::new(config.version_cache.max(1)).expect("max(1) is non-zero");
        Ok(Store {
            client,
            js,
            events,
            index,
            stream_name: config.stream.clone(),
            index_name: format!("{}{INDEX_SUFFIX}", config.stream),
            timeout: config.nats_timeout,
            cache: Mutex::new(LruCache::new(cache)),
            batch_slots: tokio::sync::Semaphore::new(config.max_open_batches.max(1)),
        })
    }

    /// The key's last event, read from the stream leader (never a possibly stale replica).
    pub async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self.events.get_last_raw_message_by_subject(&subjects::key_filter(key)).await {
            Ok(msg) => {
                let head: EventHead = serde_json::from_slice(&msg.payload)
                    .map_err(|e| StoreError::Internal(format!("stored event at seq {} is unreadable: {e}", msg.sequence)))?;
                Ok(Some(Head { seq: msg.sequence, version: head.version, id: head.id }))
            }
            Err(e) if matches!(e.kind(), K::NoMessageFound) => Ok(None),
            Err(e) => Err(StoreError::Unavailable(format!("reading the last event of {key}: {e}"))),
        }
    }

    /// One stored event by stream sequence.
    pub async fn get(&self, seq: u64) -> Result<Option<Event>, StoreError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self.events.get_raw_message(seq).await {
            Ok(msg) => Event::from_stored(&msg.payload, msg.sequence)
                .map(Some)
                .map_err(|e| StoreError::Internal(format!("stored event at seq {seq} is unreadable: {e}"))),
            Err(e) if matches!(e.kind(), K::NoMessageFound) => Ok(None),
            Err(e) => Err(StoreError::Unavailable(format!("reading seq {seq}: {e}"))),
        }
    }

    fn cached(&self, key: &str) -> Option<Head> {
        self.cache.lock().get(key).cloned()
    }

    fn remember(&self, key: &str, head: Head) {
        self.cache.lock().put(key.to_string(), head);
    }

    fn forget(&self, key: &str) {
        self.cache.lock().pop(key);
    }

    /// Appends the events of one request: one event directly, several as an atomic batch.
    pub async fn append(&self, events: Vec<NewEvent>, producer: Producer) -> AppendReply {
        let time = now_rfc3339();
        let prepared: Vec<Prepared> = events
            .into_iter()
            .map(|e| {
                let client_id = e.id.is_some();
                let id = e.id.unwrap_or_else(new_event_id);
                let correlation = e.correlation.unwrap_or_else(|| id.clone());
                Prepared {
                    client_id,
                    expect: e.expect,
                    event: Event {
                        seq: 0,
                        id,
                        event_type: e.event_type,
                        key: e.key,
                        version: 0,
                        correlation,
                        causation: e.causation,
                        producer: producer.clone(),
                        time: time.clone(),
                        data: e.data,
                    },
                }
            })
            .collect();
        let result = if prepared.len() == 1 {
            let p = prepared.into_iter().next().expect("len is 1");
            self.append_one(p).await.map(|r| vec![r])
        } else {
            self.append_batch(prepared).await
        };
        match result {
            Ok(receipts) => AppendReply { receipts, error: None },
            Err(e) => e.reply(),
        }
    }

    async fn append_one(&self, mut p: Prepared) -> Result<Receipt, StoreError> {
        let key = p.event.key.clone();
        // Where the version chain is believed to stand, and whether that belief came from the
        // stream leader just now (only then may it be reported as a conflict).
        let mut head = self.cached(&key);
        let mut fresh = false;
        if head.is_none() && p.expect != Expect::Version(0) {
            head = self.head(&key).await?;
            fresh = true;
        }
        for attempt in 0..MAX_ATTEMPTS {
            // A retry of an append that did land finds its own event on top of the key.
            if let Some(h) = head.as_ref().filter(|h| fresh && h.id == p.event.id) {
                return Ok(stored(&p.event, h.seq, h.version, true));
            }
            let (expected_seq, version) = head.as_ref().map_or((0, 0), |h| (h.seq, h.version + 1));
            if let Expect::Version(want) = p.expect {
                if want != version {
                    if fresh {
                        if let Some(original) = self.find_stored(&p, head.as_ref()).await? {
                            return Ok(stored(&original, original.seq, original.version, true));
                        }
                        return Ok(conflict(&p.event, want, head.as_ref()));
                    }
                    head = self.head(&key).await?;
                    fresh = true;
                    continue;
                }
            }
            p.event.version = version;
            let payload = Bytes::from(p.event.to_stored());
            let headers = publish_headers(&p.event, Some(expected_seq), None);
            let subject = subjects::publish_subject(&key, &p.event.event_type);
            match self.publish(subject, headers, payload).await {
                PublishOutcome::Stored { seq, duplicate: false, .. } => {
                    self.remember(&key, Head { seq, version, id: p.event.id.clone() });
                    return Ok(stored(&p.event, seq, version, false));
                }
                PublishOutcome::Stored { seq, duplicate: true, .. } => {
                    let original = self.get(seq).await?.ok_or_else(|| {
                        StoreError::Internal(format!("the stream reported event {} stored at seq {seq}, which is missing", p.event.id))
                    })?;
                    return Ok(stored(&original, seq, original.version, true));
                }
                PublishOutcome::Conflict => {
                    self.forget(&key);
                    if attempt > 1 {
                        // Several writers keep racing on this key: spread them out.
                        backoff(attempt - 2).await;
                    }
                    head = self.head(&key).await?;
                    fresh = true;
                }
                PublishOutcome::Retry(why) => {
                    tracing::debug!(key, attempt, why, "retrying append");
                    backoff(attempt).await;
                }
                PublishOutcome::Refused(why) => return Err(StoreError::Internal(why)),
            }
        }
        match p.expect {
            // Only the stream leader's answer, read just now, proves a conflict. Otherwise the
            // attempts ran out on timeouts or on writes still in flight (10164, e.g. across a
            // leader change, possibly our own earlier attempt): the outcome is unknown, and a
            // conflict would make the caller give up on an event that may not be stored.
            Expect::Version(want) if fresh && head.as_ref().map_or(0, |h| h.version + 1) != want => Ok(conflict(&p.event, want, head.as_ref())),
            Expect::Version(_) => Err(StoreError::Unavailable(format!(
                "key {key}: the store kept refusing or not answering for {MAX_ATTEMPTS} attempts; retry with the same event id"
            ))),
            Expect::Any => Err(StoreError::Unavailable(format!(
                "key {key} kept changing or the store kept refusing for {MAX_ATTEMPTS} attempts"
            ))),
        }
    }

    /// Appends several events atomically with JetStream's batch publish (ADR-50): all are
    /// stored, contiguously, or none is. Each key's first event in the batch carries the key's
    /// expectation; JetStream checks them all at commit time.
    async fn append_batch(&self, mut batch: Vec<Prepared>) -> Result<Vec<Receipt>, StoreError> {
        let mut fresh = false;
        let mut heads: std::collections::HashMap<String, Option<Head>> = std::collections::HashMap::new();
        for p in &batch {
            if !heads.contains_key(&p.event.key) {
                let cached = self.cached(&p.event.key);
                heads.insert(p.event.key.clone(), cached);
            }
        }
        for attempt in 0..MAX_ATTEMPTS {
            if fresh || heads.values().any(Option::is_none) {
                for (key, head) in heads.iter_mut() {
                    if fresh || head.is_none() {
                        *head = self.head(key).await?;
                    }
                }
                fresh = true;
            }
            // A retry of a batch that did land finds each key's last batch event on top.
            if fresh && batch_already_stored(&batch, &heads) {
                return self.stored_batch_receipts(&batch, &heads).await;
            }
            // Chain versions through the batch and check the expectations.
            let mut next: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
            let mut first_of_key = Vec::with_capacity(batch.len());
            let mut conflict_at = None;
            for (i, p) in batch.iter().enumerate() {
                let key = p.event.key.as_str();
                let is_first = !next.contains_key(key);
                let version = *next
                    .entry(key)
                    .or_insert_with(|| heads[key].as_ref().map_or(0, |h| h.version + 1));
                if matches!(p.expect, Expect::Version(want) if want != version) && conflict_at.is_none() {
                    conflict_at = Some(i);
                }
                next.insert(key, version + 1);
                first_of_key.push((is_first, version));
            }
            if let Some(i) = conflict_at {
                if !fresh {
                    fresh = true;
                    continue;
                }
                if let Some(receipts) = self.find_stored_batch(&batch, &heads).await? {
                    return Ok(receipts);
                }
                return Ok(batch_conflict(&batch, i, &heads));
            }
            for (p, (_, version)) in batch.iter_mut().zip(&first_of_key) {
                p.event.version = *version;
            }
            match self.publish_batch(&batch, &first_of_key, &heads).await {
                PublishOutcome::Stored { seq: last_seq, duplicate: _, count } => {
                    if count != 0 && count != batch.len() as u64 {
                        return Err(StoreError::Internal(format!(
                            "the stream committed {count} of {} batch events",
                            batch.len()
                        )));
                    }
                    let first_seq = last_seq + 1 - batch.len() as u64;
                    let receipts = batch
                        .iter()
                        .enumerate()
                        .map(|(i, p)| stored(&p.event, first_seq + i as u64, p.event.version, false))
                        .collect::<Vec<_>>();
                    for (i, p) in batch.iter().enumerate() {
                        self.remember(
                            &p.event.key,
                            Head { seq: first_seq + i as u64, version: p.event.version, id: p.event.id.clone() },
                        );
                    }
                    return Ok(receipts);
                }
                PublishOutcome::Conflict => {
                    for key in heads.keys() {
                        self.forget(key);
                    }
                    fresh = true;
                }
                PublishOutcome::Retry(why) => {
                    tracing::debug!(attempt, why, "retrying batch");
                    fresh = true;
                    backoff(attempt).await;
                }
                PublishOutcome::Refused(why) => return Err(StoreError::Internal(why)),
            }
        }
        Err(StoreError::Unavailable(format!("the batch could not be committed in {MAX_ATTEMPTS} attempts")))
    }

    async fn publish_batch(
        &self,
        batch: &[Prepared],
        first_of_key: &[(bool, u64)],
        heads: &std::collections::HashMap<String, Option<Head>>,
    ) -> PublishOutcome {
        let batch_id = new_event_id().replace('-', "");
        let n = batch.len();
        // JetStream takes at most 50 open batches per stream and answers 429 beyond: queue here
        // rather than make hundreds of writers retry against the server.
        let _slot = self.batch_slots.acquire().await.expect("the semaphore is never closed");
        for (i, (p, (is_first, _))) in batch.iter().zip(first_of_key).enumerate() {
            let expected = is_first.then(|| heads[&p.event.key].as_ref().map_or(0, |h| h.seq));
            let mut headers = publish_headers(&p.event, expected, Some((&batch_id, i + 1)));
            let subject = subjects::publish_subject(&p.event.key, &p.event.event_type);
            let payload = Bytes::from(p.event.to_stored());
            if i + 1 == n {
                // Only the commit is a request: an error on an earlier message (a refused
                // header, a stale expectation) fails the commit, whose reply names it. Waiting
                // for the first message's empty reply would cost a second round trip.
                headers.insert("Nats-Batch-Commit", "1");
                return self.publish(subject, headers, payload).await;
            }
            if let Err(e) = self.client.publish_with_headers(subject, headers, payload).await {
                return PublishOutcome::Retry(format!("sending batch message: {e}"));
            }
        }
        unreachable!("the loop returns at the last message")
    }

    async fn stored_batch_receipts(
        &self,
        batch: &[Prepared],
        heads: &std::collections::HashMap<String, Option<Head>>,
    ) -> Result<Vec<Receipt>, StoreError> {
        // The batch was stored contiguously, so its last event's seq fixes all the others.
        let last_key = &batch.last().expect("batches are not empty").event.key;
        let last_seq = heads[last_key].as_ref().expect("checked by batch_already_stored").seq;
        let first_seq = last_seq + 1 - batch.len() as u64;
        let mut receipts = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let original = self
                .get(first_seq + i as u64)
                .await?
                .filter(|e| e.id == p.event.id)
                .ok_or_else(|| StoreError::Internal(format!("batch event {} is not where the batch was stored", p.event.id)))?;
            receipts.push(stored(&original, original.seq, original.version, true));
        }
        Ok(receipts)
    }

    /// Creates (or keeps) the durable pull consumer `config` describes, acked in batches
    /// (`AckAll`), replacing it where JetStream cannot change it in place:
    /// - one acking each message (made by an older gateway: JetStream refuses to change an ack
    ///   policy) is replaced by one starting right after its ack floor, so whatever it had not
    ///   acked is delivered again and nothing is skipped;
    /// - one moving its state between file and memory is replaced likewise, as is one that does
    ///   not exist but has a `resume` point (its ack floor recorded before it was lost); their
    ///   metadata says where the stream ended then ([`subjects::MADE_AGAIN_BELOW`]).
    pub async fn ack_all_consumer(&self, mut config: pull::Config, resume: Option<u64>) -> Result<PullConsumer, StoreError> {
        let name = config.durable_name.clone().unwrap_or_default();
        let existing = match self.events.consumer_info(&name).await {
            Ok(existing) => Some(existing),
            Err(e) if sequent_net::consumers::missing(&e) => None,
            Err(e) => return Err(StoreError::Unavailable(format!("reading consumer {name}: {e}"))),
        };
        // Where a consumer made in place of another one starts (after that one's ack floor).
        let mut made_again = match &existing {
            None => resume,
            Some(_) => None,
        };
        if let Some(existing) = existing {
            if existing.config.ack_policy != AckPolicy::All {
                let floor = existing.ack_floor.stream_sequence;
                if existing.delivered.stream_sequence > 0 {
                    config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: floor + 1 };
                }
                tracing::warn!(consumer = name, ack_floor = floor, "migrating a consumer to batched acks: replacing it with one that starts after its ack floor");
                if let Err(e) = self.events.delete_consumer(&name).await {
                    tracing::debug!(consumer = name, error = %e, "deleting the old consumer failed (another gateway migrated it?)");
                }
            } else if existing.config.memory_storage != config.memory_storage {
                // JetStream cannot move a consumer's state between file and memory in place.
                tracing::warn!(consumer = name, memory = config.memory_storage, "moving a consumer's state between file and memory: replacing it with one that starts after its ack floor");
                if sequent_net::consumers::has_run(&existing) {
                    made_again = Some(existing.ack_floor.stream_sequence);
                }
                if let Err(e) = self.events.delete_consumer(&name).await {
                    tracing::debug!(consumer = name, error = %e, "deleting the old consumer failed (another gateway replaced it?)");
                }
            } else {
                // The start position of an existing consumer cannot change; keep it as it is.
                config.deliver_policy = existing.config.deliver_policy;
            }
        }
        if let Some(floor) = made_again {
            let end = self.js.get_stream(&self.stream_name).await.map(|s| s.cached_info().state.last_sequence).map_err(|e| StoreError::Unavailable(format!("reading stream {}: {e}", self.stream_name)))?;
            tracing::warn!(consumer = name, after = floor, stream_end = end, "making a consumer again after its ack floor (the events up to the stream's end count as redelivered)");
            config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: floor + 1 };
            config.metadata.insert(subjects::MADE_AGAIN_BELOW.to_string(), end.to_string());
        }
        self.events.create_consumer(config).await.map_err(|e| StoreError::Unavailable(format!("creating consumer {name}: {e}")))
    }

    /// Waits until the index covers stream sequence `upto`, or the timeout passes.
    pub async fn wait_indexed(&self, upto: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let floor = match self.events.get_consumer::<async_nats::jetstream::consumer::pull::Config>(INDEXER).await {
                Ok(mut c) => c.info().await.map(|i| i.ack_floor.stream_sequence).unwrap_or(0),
                Err(_) => 0,
            };
            if floor >= upto || Instant::now() > deadline {
                if floor < upto {
                    tracing::warn!(floor, upto, "correlation index is behind; answering with what is indexed");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Looks for `event` (by id) among the stored events of its correlation: a retry whose key
    /// has moved on since the original landed would otherwise look like a conflict. Units of
    /// work are small, so this reads a handful of events, and only on the conflict path.
    async fn find_stored(&self, p: &Prepared, head: Option<&Head>) -> Result<Option<Event>, StoreError> {
        let (Some(head), true) = (head, p.client_id) else { return Ok(None) };
        let event = &p.event;
        self.wait_indexed(head.seq, Duration::from_secs(2)).await;
        let filter = subjects::correlation_index_subject(&event.correlation);
        let (entries, _) = self.scan(&self.index, vec![filter], 1, usize::MAX).await?;
        for entry in entries.iter().rev() {
            let Some(seq) = std::str::from_utf8(&entry.payload).ok().and_then(|s| s.parse::<u64>().ok()) else { continue };
            if let Some(found) = self.get(seq).await?.filter(|e| e.id == event.id && e.key == event.key) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The original receipts of a batch retried after its keys moved on, if all of it is stored.
    async fn find_stored_batch(
        &self,
        batch: &[Prepared],
        heads: &std::collections::HashMap<String, Option<Head>>,
    ) -> Result<Option<Vec<Receipt>>, StoreError> {
        let mut receipts = Vec::with_capacity(batch.len());
        for p in batch {
            match self.find_stored(p, heads[&p.event.key].as_ref()).await? {
                Some(original) => receipts.push(stored(&original, original.seq, original.version, true)),
                None => return Ok(None),
            }
        }
        Ok(Some(receipts))
    }

    /// Publishes one message as a request and classifies the reply; transport trouble is
    /// `Retry` because the same ids make the retry safe.
    async fn publish(&self, subject: String, headers: HeaderMap, payload: Bytes) -> PublishOutcome {
        let started = Instant::now();
        let request = async_nats::Request::new().headers(headers).payload(payload).timeout(Some(self.timeout));
        let outcome = match self.client.send_request(subject, request).await {
            Ok(reply) => PublishOutcome::from_reply(&reply.payload),
            Err(e) => PublishOutcome::Retry(e.to_string()),
        };
        metrics::histogram!("sequent_jetstream_publish_seconds").record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Reads stored events matching `filters` from `from_seq` on, at most `limit` of them,
    /// in stream order. Returns the events and the sequence to continue from (None at the end).
    pub async fn scan(
        &self,
        stream: &stream::Stream,
        filters: Vec<String>,
        from_seq: u64,
        limit: usize,
    ) -> Result<(Vec<jetstream::Message>, Option<u64>), StoreError> {
        let consumer = stream
            .create_consumer(ordered_config(filters, from_seq))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening a reader: {e}")))?;
        let mut remaining = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        if remaining == 0 || limit == 0 {
            return Ok((out, None));
        }
        let mut messages = consumer.messages().await.map_err(|e| StoreError::Unavailable(format!("reading: {e}")))?;
        while out.len() < limit && remaining > 0 {
            let msg = tokio::time::timeout(self.timeout, messages.next())
                .await
                .map_err(|_| StoreError::Unavailable("the stream stopped delivering".into()))?
                .ok_or_else(|| StoreError::Unavailable("the reader closed".into()))?
                .map_err(|e| StoreError::Unavailable(format!("reading: {e}")))?;
            remaining = msg.info().map(|i| i.pending).unwrap_or(0);
            out.push(msg);
        }
        let next = (remaining > 0).then(|| out.last().and_then(|m| m.info().ok()).map(|i| i.stream_sequence + 1)).flatten();
        Ok((out, next))
    }

    /// The stream's last sequence (0 when empty).
    pub async fn last_seq(&self) -> Result<u64, StoreError> {
        let mut s = self.events.clone();
        s.info()
            .await
            .map(|i| i.state.last_sequence)
            .map_err(|e| StoreError::Unavailable(format!("stream info: {e}")))
    }
}

/// Refuses a stream that is a copy still short of its end (`--repartition-from` stopped or
/// still running): an append would take a sequence the copy needs.
fn unfinished_copy(info: &stream::Info) -> anyhow::Result<()> {
    let meta = &info.config.metadata;
    let to = meta.get(subjects::META_COPIED_TO).and_then(|v| v.parse::<u64>().ok());
    match (meta.get(subjects::META_COPIED_FROM), to) {
        (Some(from), Some(to)) if info.state.last_sequence < to => anyhow::bail!(
            "stream {} is an unfinished copy of {from} (up to sequence {} of {to}): run bus-gateway --repartition-from {from} \
             again to finish it before serving",
            info.config.name,
            info.state.last_sequence
        ),
        _ => Ok(()),
    }
}

/// How many consumers a stream of ours may have. nats-server 2.15 caps every stream at 1,000
/// unless the stream sets its own limit (and reads 0 or -1 as "use the default"), while a
/// deployment needs services x partitions durable consumers plus every open reader: each
/// query, live feed and gap read is an ordered (ephemeral) consumer that the server keeps for
/// 30 s after its last pull (async-nats' inactive threshold for them), so 34 queries a second
/// were enough to be refused.
pub const MAX_CONSUMERS: i32 = 100_000;

/// Settings of the events stream. Retention by limits with no limits: events are kept forever.
pub(crate) fn events_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: config.stream.clone(),
        description: Some("Sequent events: ev.<partition>.<key>.<type>".into()),
        subjects: vec![subjects::STREAM_INPUT.into()],
        subject_transform: Some(stream::SubjectTransform {
            source: subjects::STREAM_INPUT.into(),
            destination: subjects::stream_transform_destination(config.partitions),
        }),
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.dedup_window,
        // Room for the largest data object plus the envelope around it.
        max_message_size: i32::try_from(config.max_data_bytes + 16 * 1024).unwrap_or(i32::MAX),
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        max_consumers: MAX_CONSUMERS,
        ..Default::default()
    }
}

/// The correlation index: `ix.c.<correlation>` → stream sequences of that unit of work.
fn index_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: format!("{}{INDEX_SUFFIX}", config.stream),
        description: Some("Sequent correlation index: ix.c.<correlation> holds event sequences".into()),
        subjects: vec![subjects::INDEX_INPUT.into()],
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.dedup_window,
        allow_direct: true,
        max_consumers: MAX_CONSUMERS,
        // As the server stores "no limit" (0 would read as a change at every start).
        max_message_size: -1,
        ..Default::default()
    }
}

pub(crate) async fn ensure_stream(js: &jetstream::Context, mut want: stream::Config) -> anyhow::Result<stream::Stream> {
    match js.get_stream(&want.name).await {
        Ok(mut existing) => {
            let have = existing.info().await?.config.clone();
            // Only settings we own are compared; the server fills in the rest.
            let drifted = have.duplicate_window != want.duplicate_window
                || have.num_replicas != want.num_replicas
                || have.max_message_size != want.max_message_size
                || have.allow_direct != want.allow_direct
                || have.allow_atomic_publish != want.allow_atomic_publish
                || have.subjects != want.subjects;
            let limit_differs = have.max_consumers != want.max_consumers;
            if (drifted || limit_differs) && have.subject_transform == want.subject_transform {
                // Metadata set by others (a repartition's record) stays.
                for (k, v) in have.metadata {
                    want.metadata.entry(k).or_insert(v);
                }
                match js.update_stream(&want).await {
                    Ok(_) => tracing::info!(stream = want.name, max_consumers = want.max_consumers, "updated the stream's settings"),
                    Err(e) if drifted => return Err(e.into()),
                    // Only the consumer limit differed (a stream made before it was set): the
                    // rest works without it.
                    Err(e) => tracing::warn!(stream = want.name, error = %e, "could not raise the stream's consumer limit: readers past the server's default (1,000 on nats-server 2.15) are refused"),
                }
            }
            Ok(js.get_stream(&want.name).await?)
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            tracing::info!(stream = want.name, "creating stream");
            Ok(js.create_stream(want).await?)
        }
        Err(e) => Err(anyhow::anyhow!("looking up stream {}: {e}", want.name)),
    }
}

pub fn ordered_config(filters: Vec<String>, from_seq: u64) -> jetstream::consumer::pull::OrderedConfig {
    use jetstream::consumer::DeliverPolicy;
    jetstream::consumer::pull::OrderedConfig {
        filter_subjects: filters,
        deliver_policy: if from_seq <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence { start_sequence: from_seq }
        },
        ..Default::default()
    }
}

fn publish_headers(event: &Event, expected_seq: Option<u64>, batch: Option<(&str, usize)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", event.id.as_str());
    if let Some(seq) = expected_seq {
        h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
        h.insert("Nats-Expected-Last-Subject-Sequence-Subject", subjects::key_filter(&event.key).as_str());
    }
    if let Some((id, n)) = batch {
        h.insert("Nats-Batch-Id", id);
        h.insert("Nats-Batch-Sequence", n.to_string().as_str());
    }
    h
}

fn stored(event: &Event, seq: u64, version: u64, duplicate: bool) -> Receipt {
    Receipt::Stored { id: event.id.clone(), key: event.key.clone(), seq, version, duplicate }
}

fn conflict(event: &Event, expected: u64, head: Option<&Head>) -> Receipt {
    Receipt::Conflict {
        id: event.id.clone(),
        key: event.key.clone(),
        expected,
        current_version: head.map(|h| h.version),
        next_version: head.map_or(0, |h| h.version + 1),
    }
}

/// The receipts of a batch refused because event `at` expected another version: that event
/// gets the conflict, the others are aborted.
fn batch_conflict(batch: &[Prepared], at: usize, heads: &std::collections::HashMap<String, Option<Head>>) -> Vec<Receipt> {
    batch
        .iter()
        .enumerate()
        .map(|(i, p)| match (i == at, p.expect) {
            (true, Expect::Version(want)) => {
                // Versions taken by earlier events of the same key in this batch count too.
                let before = batch[..i].iter().filter(|q| q.event.key == p.event.key).count() as u64;
                let head = heads[&p.event.key].as_ref();
                let current = head.map(|h| h.version + before).or(before.checked_sub(1));
                Receipt::Conflict {
                    id: p.event.id.clone(),
                    key: p.event.key.clone(),
                    expected: want,
                    current_version: current,
                    next_version: current.map_or(0, |v| v + 1),
                }
            }
            _ => Receipt::Aborted { id: p.event.id.clone(), key: p.event.key.clone() },
        })
        .collect()
}

fn batch_already_stored(batch: &[Prepared], heads: &std::collections::HashMap<String, Option<Head>>) -> bool {
    let mut last_id_of_key: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for p in batch {
        last_id_of_key.insert(&p.event.key, &p.event.id);
    }
    last_id_of_key
        .iter()
        .all(|(key, id)| heads.get(*key).and_then(|h| h.as_ref()).is_some_and(|h| h.id == *id))
}

/// Exponential back-off from 1 ms, with jitter so racing writers do not retry in lockstep.
pub(crate) async fn backoff(attempt: u32) {
    let max_us = 1000u64 << attempt.min(8);
    let jitter = u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos());
    tokio::time::sleep(Duration::from_micros(max_us / 2 + jitter % (max_us / 2))).await;
}

/// UTC now as RFC 3339 with microseconds.
pub fn now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc().format(&format).expect("UTC timestamps always format")
}
