//! Reading the live stream: a NATS connection with a Tokio runtime inside, ordered consumers for
//! scans, the correlation index plus direct gets for units of work.

use crate::columns::{Collector, Flow};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::query::Query;
use crate::timefmt::to_us;
use arrow_array::RecordBatch;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectErrorKind, ConnectOptions};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use sequent_protocol::subjects;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far before `since` a time-started scan begins: event times are stamped by the gateway,
/// the server's start time uses its own clock, and the two may differ a little.
pub const CLOCK_SKEW_US: i64 = 60_000_000;
/// How many events before the newest indexed one a correlation query also scans directly, to
/// find events the (asynchronous, concurrent) indexer has not indexed yet.
pub const INDEX_SLACK: u64 = 2048;
/// Concurrent direct gets when fetching the events of a correlation.
const DIRECT_GET_CONCURRENCY: usize = 64;

enum Start {
    All,
    Seq(u64),
    Time(i64),
}

/// What the events stream says about itself.
pub struct StreamSummary {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_time_us: i64,
    pub last_time_us: i64,
    pub created_us: i64,
    pub replicas: usize,
}

pub struct Live {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    events: Stream<()>,
    index: Stream<()>,
    pub url: String,
    pub user: Option<String>,
    pub stream_name: String,
    pub index_name: String,
    timeout: Duration,
    server_error: Arc<Mutex<Option<String>>>,
}

impl Live {
    pub fn connect(url: &str, user: Option<String>, password: Option<String>, stream: &str, timeout: Duration) -> Result<Live> {
        if stream.is_empty() || stream.contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace()) {
            return Err(Error::BadArgument(format!("stream {stream:?} is not a JetStream stream name")));
        }
        let options = match (&user, &password) {
            (Some(u), Some(p)) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
            (None, None) => ConnectOptions::new(),
            (Some(_), None) => {
                return Err(Error::BadArgument("user given without password: pass both, or neither".into()));
            }
            (None, Some(_)) => {
                return Err(Error::BadArgument("password given without user: pass both, or neither".into()));
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pyreport-nats")
            .enable_all()
            .build()
            .map_err(|e| Error::Nats(format!("could not start the I/O runtime: {e}")))?;
        let server_error: Arc<Mutex<Option<String>>> = Arc::default();
        let recorder = server_error.clone();
        let options = options
            .name("pyreport")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .event_callback(move |event| {
                let recorder = recorder.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        *recorder.lock().expect("not poisoned") = Some(e.to_string());
                    }
                }
            });
        let who = user.as_deref().map_or("(no user)".to_string(), |u| format!("user {u:?}"));
        let client = rt.block_on(options.connect(url)).map_err(|e| match e.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => Error::Auth(format!(
                "NATS at {url} refused {who}: {e}. Check the user name and password (the read-only analyst \
                 user is in nats/accounts.conf; the dev one is analyst / analyst-dev)"
            )),
            ConnectErrorKind::ServerParse => {
                Error::BadArgument(format!("url {url:?} is not a NATS address like nats://127.0.0.1:4222: {e}"))
            }
            ConnectErrorKind::Tls => Error::Connection(format!("TLS with NATS at {url} failed: {e}. Check the URL scheme and certificates")),
            _ => Error::Connection(format!(
                "could not connect to NATS at {url}: {e}. Is nats-server running and listening there? \
                 Check the host and port (the dev server is started with `nats-server -c nats/dev.conf`)"
            )),
        })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        let no_info = |name: String| {
            js.get_stream_no_info(&name)
                .now_or_never()
                .expect("makes no request")
                .map_err(|e| Error::BadArgument(format!("stream {name:?} is not a JetStream stream name: {e}")))
        };
        let live = Live {
            events: no_info(stream.to_string())?,
            index: no_info(format!("{stream}_IX"))?,
            rt,
            client,
            url: url.to_string(),
            user,
            stream_name: stream.to_string(),
            index_name: format!("{stream}_IX"),
            timeout,
            server_error,
        };
        live.rt.block_on(js.get_stream(stream)).map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => Error::StreamMissing(format!(
                "stream {stream:?} does not exist on NATS at {url}. Start bus-gateway once (it creates the \
                 streams), or pass the right stream= name"
            )),
            _ => live.nats_error(&format!("reading the info of stream {stream:?}"), &e),
        })?;
        Ok(live)
    }

    /// Turns a NATS failure into an error that says what to check.
    fn nats_error(&self, what: &str, e: &dyn Display) -> Error {
        let text = e.to_string();
        let server = self.server_error.lock().expect("not poisoned").take();
        if let Some(server) = server.filter(|s| s.to_lowercase().contains("permission")) {
            return Error::Permission(format!(
                "NATS refused {what} for {}: {server}. Check that user's permissions in nats/accounts.conf \
                 (the analyst needs $JS.API.INFO, stream info, direct get and ordered consumers on {} and {}, \
                 and _INBOX.>)",
                self.user.as_deref().map_or("this connection".into(), |u| format!("user {u:?}")),
                self.stream_name,
                self.index_name
            ));
        }
        if text.contains("no responders") {
            return Error::Nats(format!(
                "{what}: JetStream did not answer (no responders) on NATS at {}: is JetStream enabled for this \
                 account? ({text})",
                self.url
            ));
        }
        if text.to_lowercase().contains("timed out") || text.contains("timeout") {
            return Error::Nats(format!(
                "{what}: no answer from NATS at {} within {:?} ({text}). Is the server overloaded or the \
                 JetStream domain different? A request refused for permissions also looks like this",
                self.url, self.timeout
            ));
        }
        Error::Nats(format!("{what} on NATS at {}: {text}", self.url))
    }

    pub fn summary(&self) -> Result<StreamSummary> {
        self.rt.block_on(self.summary_async())
    }

    async fn summary_async(&self) -> Result<StreamSummary> {
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| self.nats_error(&format!("reading the info of stream {:?}", self.stream_name), &e))?;
        Ok(StreamSummary {
            name: info.config.name.clone(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            first_time_us: to_us(info.state.first_timestamp),
            last_time_us: to_us(info.state.last_timestamp),
            created_us: to_us(info.created),
            replicas: info.config.num_replicas,
        })
    }

    /// Reads the messages of `stream` that match `filters` from `start` up to sequence `upto`
    /// (the stream's end when the read began), calling `f(seq, payload, stored_at_us)` for each.
    async fn read(
        &self,
        stream: &Stream<()>,
        stream_name: &str,
        filters: Vec<String>,
        start: Start,
        upto: u64,
        progress: &mut Progress,
        f: &mut dyn FnMut(u64, &[u8], i64) -> Result<Flow>,
    ) -> Result<()> {
        let deliver_policy = match start {
            Start::All | Start::Seq(0 | 1) => DeliverPolicy::All,
            Start::Seq(s) => DeliverPolicy::ByStartSequence { start_sequence: s },
            Start::Time(us) => DeliverPolicy::ByStartTime { start_time: crate::timefmt::from_us(us) },
        };
        let config = OrderedConfig { filter_subjects: filters, deliver_policy, ..Default::default() };
        let what = format!("opening an ordered consumer on {stream_name:?}");
        let consumer = stream.create_consumer(config).await.map_err(|e| self.nats_error(&what, &e))?;
        let total = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        if total == 0 {
            let _ = stream.delete_consumer(&name).await;
            return Ok(());
        }
        progress.add_total(total);
        let mut messages = consumer.messages().await.map_err(|e| self.nats_error(&what, &e))?;
        let idle = self.timeout.max(Duration::from_secs(10));
        let reading = format!("reading stream {stream_name:?}");
        'outer: loop {
            let first = match tokio::time::timeout(idle, messages.next()).await {
                Err(_) => {
                    return Err(Error::Nats(format!(
                        "{reading}: no message for {idle:?} although the server said more were pending; \
                         is the server overloaded? Try again"
                    )))
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            let mut item = Some(first);
            // Drain what is already buffered without a timer per message.
            while let Some(result) = item.take() {
                let msg = result.map_err(|e| self.nats_error(&reading, &e))?;
                let info = msg.info().map_err(|e| self.nats_error(&reading, &e))?;
                let seq = info.stream_sequence;
                let pending = info.pending;
                if seq > upto {
                    break 'outer;
                }
                let published = to_us(info.published);
                let flow = f(seq, &msg.payload, published)?;
                progress.tick()?;
                if flow == Flow::Stop || pending == 0 || seq == upto {
                    break 'outer;
                }
                item = messages.next().now_or_never().flatten();
            }
        }
        drop(messages);
        let _ = stream.delete_consumer(&name).await;
        Ok(())
    }

    /// Runs a query, handing batches of matching events to `sink`. Returns a warning to show,
    /// if some messages were not Sequent events.
    pub fn scan(
        &self,
        q: &Query,
        progress: &mut Progress,
        sink: impl FnMut(RecordBatch) -> Result<Flow>,
    ) -> Result<Option<String>> {
        self.rt.block_on(async {
            let mut collector = Collector::new(q.row_filter(), q.limit, sink);
            let upto = self.summary_async().await?.last_seq;
            if !q.matches_nothing() && upto > 0 {
                if let Some(correlations) = &q.correlations {
                    self.scan_correlations(correlations, upto, progress, &mut |seq, payload| collector.push(seq, payload))
                        .await?;
                } else {
                    let start = match (q.from_seq, q.since_us) {
                        (Some(s), _) => Start::Seq(s),
                        (None, Some(t)) => Start::Time(t.saturating_sub(CLOCK_SKEW_US)),
                        (None, None) => Start::All,
                    };
                    let cut = q.until_us.map(|u| u.saturating_add(CLOCK_SKEW_US));
                    self.read(&self.events, &self.stream_name, q.subject_filters(), start, upto, progress, &mut |seq, payload, stored_at| {
                        if cut.is_some_and(|c| stored_at > c) {
                            return Ok(Flow::Stop);
                        }
                        collector.push(seq, payload)
                    })
                    .await?;
                }
            }
            collector.finish()?;
            progress.finish()?;
            Ok(collector.skip_warning())
        })
    }

    /// Events of some correlations: their sequences from the index stream, fetched with direct
    /// gets, plus a direct scan of the newest events the indexer may not have reached.
    async fn scan_correlations(
        &self,
        correlations: &[String],
        upto: u64,
        progress: &mut Progress,
        push: &mut dyn FnMut(u64, &[u8]) -> Result<Flow>,
    ) -> Result<()> {
        let index_info = match self.index.get_info().await {
            Ok(info) => Some(info),
            Err(e) => {
                let text = e.to_string();
                if text.contains("not found") {
                    None
                } else {
                    return Err(self.nats_error(&format!("reading the info of the index stream {:?}", self.index_name), &e));
                }
            }
        };
        let mut seqs = BTreeSet::new();
        let mut tail_from = 1;
        if let Some(info) = index_info {
            let ix_upto = info.state.last_sequence;
            if ix_upto > 0 {
                let filters = correlations.iter().map(|c| subjects::correlation_index_subject(c)).collect();
                self.read(&self.index, &self.index_name, filters, Start::All, ix_upto, &mut Progress::none(), &mut |_, payload, _| {
                    if let Some(seq) = std::str::from_utf8(payload).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                        if seq <= upto {
                            seqs.insert(seq);
                        }
                    }
                    Ok(Flow::Continue)
                })
                .await?;
                let newest = match self.index.direct_get(ix_upto).await {
                    Ok(m) => std::str::from_utf8(&m.payload).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0),
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => 0,
                    Err(e) => return Err(self.nats_error(&format!("reading the index stream {:?}", self.index_name), &e)),
                };
                tail_from = newest.saturating_sub(INDEX_SLACK).max(1);
            }
        }
        // The tail: events the index may not cover yet (everything, without an index stream).
        let mut tail: Vec<(u64, Bytes)> = Vec::new();
        if tail_from <= upto {
            let wanted: HashSet<&str> = correlations.iter().map(String::as_str).collect();
            #[derive(Deserialize)]
            struct Correlated<'a> {
                #[serde(borrow)]
                correlation: Cow<'a, str>,
            }
            self.read(&self.events, &self.stream_name, Vec::new(), Start::Seq(tail_from), upto, progress, &mut |seq, payload, _| {
                if let Ok(c) = serde_json::from_slice::<Correlated>(payload) {
                    if wanted.contains(c.correlation.as_ref()) {
                        tail.push((seq, Bytes::copy_from_slice(payload)));
                    }
                }
                Ok(Flow::Continue)
            })
            .await?;
        }
        let indexed: Vec<u64> = seqs.into_iter().filter(|s| *s < tail_from).collect();
        let events = &self.events;
        let fetched: Vec<Option<(u64, Bytes)>> = futures::stream::iter(indexed)
            .map(|seq| async move {
                match events.direct_get(seq).await {
                    Ok(m) => Ok(Some((seq, m.payload))),
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(DIRECT_GET_CONCURRENCY)
            .try_collect()
            .await
            .map_err(|e| self.nats_error(&format!("direct get from stream {:?}", self.stream_name), &e))?;
        for (seq, payload) in fetched.into_iter().flatten().chain(tail) {
            if push(seq, &payload)? == Flow::Stop {
                break;
            }
        }
        Ok(())
    }

    /// Convenience for scans that need no query: everything from `from_seq` up to the end.
    pub fn scan_all_from(
        &self,
        from_seq: u64,
        progress: &mut Progress,
        sink: impl FnMut(RecordBatch) -> Result<Flow>,
    ) -> Result<Option<String>> {
        let q = Query { from_seq: Some(from_seq), ..Default::default() };
        self.scan(&q, progress, sink)
    }

    pub fn close(&self) {
        let client = self.client.clone();
        let _ = self.rt.block_on(async move { tokio::time::timeout(Duration::from_secs(2), client.drain()).await });
    }
}

