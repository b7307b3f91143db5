//! Reading the live stream: a NATS connection with a Tokio runtime inside, ordered consumers for
//! scans, the correlation index plus direct gets for units of work.

use crate::columns::{Collector, Flow};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::query::Query;
use crate::timefmt::to_us;
use crate::wire::{self, Frame, WireConn, WireError};
use arrow_array::RecordBatch;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectErrorKind, ConnectOptions};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use sequent_protocol::subjects::{self, AckMeta};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far before `since` a time-started scan begins: event times are stamped by the gateway,
/// the server's start time uses its own clock, and the two may differ a little.
pub const CLOCK_SKEW_US: i64 = 60_000_000;
/// How many events before the newest indexed one a correlation query also scans directly, to
/// find events the (asynchronous, concurrent) indexer has not indexed yet. The environment
/// variable PYREPORT_INDEX_SLACK overrides it (tests set 0 to make the index answer alone).
pub const INDEX_SLACK: u64 = 2048;
/// Concurrent direct gets when fetching the events of a correlation.
const DIRECT_GET_CONCURRENCY: usize = 64;

/// Messages asked for by one pull request; a new one goes out when half have arrived.
const PULL_BATCH: u64 = 4096;
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// Scans of at least this many sequences, without a limit, run in parallel ranges: with the
/// wire reader on 2 cores or more (nats-server is then the bottleneck, and a second consumer
/// lets it use the second core), with async-nats only on 4 cores or more (on 2 its extra
/// threads cost more than they bring: measured slower). The environment variable
/// PYREPORT_PARALLEL_MIN overrides it (tests use it to check the parallel path).
const PARALLEL_MIN: u64 = 100_000;

fn parallel_min(wire: bool) -> u64 {
    if let Some(n) = std::env::var("PYREPORT_PARALLEL_MIN").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 4 || (wire && cores >= 2) {
        PARALLEL_MIN
    } else {
        u64::MAX
    }
}

/// How many ranges a parallel scan reads at once: one per core, 2 to 4.
fn parallel_parts() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u64).clamp(2, 4)
}

enum ReadOutcome {
    Done,
    Gap { resume_after: u64 },
}

/// Called for every message read: (stream sequence, payload, stored at µs).
type OnMessage<'f> = dyn FnMut(u64, &[u8], i64) -> Result<Flow> + 'f;
/// What one range of a parallel scan produced: batches, messages to read, a warning.
type PartResult = (Vec<RecordBatch>, u64, Option<String>);

#[derive(Clone, Copy)]
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
    /// For a copy of another stream (`bus-gateway --repartition-from`): the last sequence
    /// copied, whose stored times are the copy's; else 0.
    pub copied_to: u64,
}

/// Where a scan bounded by `until` may stop: at a message stored after it (plus the clock
/// skew), since events are stored in time order. Not within a copy (`bus-gateway
/// --repartition-from`): all its messages were stored at the copy's time, later than their
/// events, so there the events' own times alone decide.
#[derive(Debug, Clone, Copy)]
struct Cut {
    at_us: Option<i64>,
    copied_to: u64,
}

impl Cut {
    fn new(until_us: Option<i64>, copied_to: u64) -> Cut {
        Cut { at_us: until_us.map(|u| u.saturating_add(CLOCK_SKEW_US)), copied_to }
    }

    fn passed(&self, seq: u64, stored_at_us: i64) -> bool {
        seq > self.copied_to && self.at_us.is_some_and(|c| stored_at_us > c)
    }
}

pub struct Live {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    events: Stream<()>,
    index: Stream<()>,
    pub url: String,
    pub user: Option<String>,
    password: Option<String>,
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
        let secret = password.clone();
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
        // Replies come under the principal's own inbox prefix, the only one its permissions
        // let it receive on.
        let options = match &user {
            Some(u) => options.custom_inbox_prefix(format!("_INBOX_{u}")),
            None => options,
        };
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
                 user is in nats/test-users.conf; the dev one is analyst / analyst-dev)"
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
        let _entered = rt.enter(); // the JetStream context spawns a task
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
            password: secret,
            stream_name: stream.to_string(),
            index_name: format!("{stream}_IX"),
            timeout,
            server_error,
        };
        let what = format!("reading the info of stream {stream:?}");
        let found = live.rt.block_on(live.guarded(&what, async { Ok::<_, String>(js.get_stream(stream).await) }))?;
        if let Err(e) = found {
            return Err(match e.kind() {
                GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => Error::StreamMissing(format!(
                    "stream {stream:?} does not exist on NATS at {url}. Start bus-gateway once (it creates the \
                     streams), or pass the right stream= name"
                )),
                _ => live.nats_error(&what, &e),
            });
        }
        Ok(live)
    }

    /// Who reads: the NATS user (a registered reader), or `pyreport` on a server without users.
    fn principal(&self) -> String {
        self.user.clone().unwrap_or_else(|| "pyreport".to_string())
    }

    /// Turns a NATS failure into an error that says what to check.
    fn nats_error(&self, what: &str, e: &dyn Display) -> Error {
        let text = e.to_string();
        let server = self.server_error.lock().expect("not poisoned").take();
        if let Some(server) = server.filter(|s| s.to_lowercase().contains("permission")) {
            return Error::Permission(format!(
                "NATS refused {what} for {}: {server}. Check that user's permissions in nats/test-users.conf \
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

    /// Runs one NATS request, failing fast when the server reports a permissions violation
    /// (the request itself would only time out).
    async fn guarded<T, E: Display>(&self, what: &str, request: impl std::future::Future<Output = std::result::Result<T, E>>) -> Result<T> {
        self.server_error.lock().expect("not poisoned").take();
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let seen = self.server_error.lock().expect("not poisoned").clone();
                if let Some(text) = seen.filter(|t| t.to_lowercase().contains("permission")) {
                    return text;
                }
            }
        };
        tokio::select! {
            result = request => result.map_err(|e| self.nats_error(what, &e)),
            text = watch => Err(self.nats_error(what, &text)),
        }
    }

    /// A connection of the minimal protocol reader (see `wire`), or None to use async-nats
    /// (TLS, URLs with credentials, PYREPORT_WIRE=0, or any trouble connecting).
    fn wire_connection(&self) -> Option<WireConn> {
        if !self.wire_enabled() {
            return None;
        }
        let address = wire::plain_address(&self.url)?;
        WireConn::connect(&address, self.user.as_deref(), self.password.as_deref(), self.timeout).ok()
    }

    fn wire_enabled(&self) -> bool {
        !std::env::var("PYREPORT_WIRE").is_ok_and(|v| v == "0") && wire::plain_address(&self.url).is_some()
    }

    /// The pull loop of `consume` over the minimal protocol reader: the scan thread reads the
    /// socket itself and parses each payload straight from the read buffer.
    #[allow(clippy::too_many_arguments)]
    fn consume_wire(
        &self,
        mut conn: WireConn,
        next_subject: &str,
        reading: &str,
        batch: u64,
        most: u64,
        upto: u64,
        progress: &mut Progress,
        f: &mut OnMessage<'_>,
    ) -> Result<ReadOutcome> {
        let wire_err = |e: WireError| match e {
            WireError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Error::Nats(format!(
                    "{reading}: no message for {:?} although the server said more were pending; is the server \
                     overloaded? Try again",
                    self.timeout.max(Duration::from_secs(10))
                ))
            }
            other => self.nats_error(reading, &other),
        };
        let inbox = self.client.new_inbox();
        let pull_body = format!(r#"{{"batch":{batch},"expires":{}}}"#, PULL_EXPIRES.as_nanos()).into_bytes();
        conn.set_timeout(self.timeout.max(Duration::from_secs(10))).map_err(|e| wire_err(e.into()))?;
        conn.subscribe(&inbox, 1).map_err(|e| wire_err(e.into()))?;
        conn.publish(next_subject, &inbox, &pull_body).map_err(|e| wire_err(e.into()))?;
        let mut requested = batch;
        let mut received = 0u64;
        let mut last_cseq = 0u64;
        let mut last_seq = 0u64;
        let outcome = loop {
            let mut pull_again = false;
            match conn.next_frame().map_err(wire_err)? {
                Frame::Status { code, description } => match code {
                    408 | 404 => {
                        requested = received;
                        pull_again = true;
                    }
                    409 if description.to_lowercase().contains("deleted") => {
                        return Err(Error::Nats(format!("{reading}: the server deleted the reader ({description}); try again")));
                    }
                    _ => {}
                },
                Frame::Msg { reply, payload } => {
                    let Some(meta) = reply.and_then(AckMeta::parse) else { continue };
                    if last_cseq != 0 && meta.consumer_seq != last_cseq + 1 {
                        break ReadOutcome::Gap { resume_after: last_seq };
                    }
                    last_cseq = meta.consumer_seq;
                    received += 1;
                    if meta.stream_seq > upto {
                        break ReadOutcome::Done;
                    }
                    last_seq = meta.stream_seq;
                    let flow = f(meta.stream_seq, payload, meta.published_ns.div_euclid(1000))?;
                    progress.tick()?;
                    if flow == Flow::Stop || meta.pending == 0 || meta.stream_seq == upto {
                        break ReadOutcome::Done;
                    }
                    pull_again = requested - received <= batch / 2 && requested < most;
                }
            }
            if pull_again {
                conn.publish(next_subject, &inbox, &pull_body).map_err(|e| wire_err(e.into()))?;
                requested += batch;
            }
        };
        conn.close();
        Ok(outcome)
    }

    pub fn summary(&self) -> Result<StreamSummary> {
        self.rt.block_on(self.summary_async())
    }

    async fn summary_async(&self) -> Result<StreamSummary> {
        let what = format!("reading the info of stream {:?}", self.stream_name);
        let info = self.guarded(&what, self.events.get_info()).await?;
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
            copied_to: info.config.metadata.get(sequent_protocol::subjects::META_COPIED_TO).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    /// Reads the messages of `stream` that match `filters` from `start` up to sequence `upto`
    /// (the stream's end when the read began), calling `f(seq, payload, stored_at_us)` for each.
    #[allow(clippy::too_many_arguments)]
    async fn read(
        &self,
        stream_name: &str,
        filters: Vec<String>,
        start: Start,
        upto: u64,
        progress: &mut Progress,
        f: &mut OnMessage<'_>,
    ) -> Result<()> {
        // Ordered-consumer semantics (stream order, no gaps) with our own loop: one ephemeral,
        // unacknowledged, in-memory pull consumer (see `consume`). On a gap the
        // consumer is re-created after the last sequence seen, as ordered consumers do.
        let mut next = match start {
            Start::Seq(s) => Some(s.max(1)),
            Start::All => Some(1),
            Start::Time(_) => None,
        };
        let mut first = true;
        for _attempt in 0..8 {
            let deliver_policy = match (next, &start) {
                (Some(1), _) => DeliverPolicy::All,
                (Some(s), _) => DeliverPolicy::ByStartSequence { start_sequence: s },
                (None, Start::Time(us)) => DeliverPolicy::ByStartTime { start_time: crate::timefmt::from_us(*us) },
                (None, _) => DeliverPolicy::All,
            };
            let outcome = self
                .consume(stream_name, filters.clone(), deliver_policy, upto, progress, first, f)
                .await?;
            first = false;
            match outcome {
                ReadOutcome::Done => return Ok(()),
                ReadOutcome::Gap { resume_after } => next = Some(resume_after + 1),
            }
        }
        Err(Error::Nats(format!(
            "reading stream {stream_name:?}: messages kept going missing (gaps in the consumer sequence); \
             is the client or the network overloaded? Try again"
        )))
    }

    /// Reads with one ephemeral pull consumer (unacknowledged, in memory) and our own pull
    /// loop: big pull requests, a new one sent when half of the last has arrived. The position
    /// of each message comes from its reply subject; a gap in the consumer sequence makes the
    /// caller re-create the consumer. (A push consumer was tried: with flow control it costs
    /// the client more and overruns it when parsing is slower than delivery.)
    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &self,
        stream_name: &str,
        filters: Vec<String>,
        deliver_policy: DeliverPolicy,
        upto: u64,
        progress: &mut Progress,
        count_total: bool,
        f: &mut OnMessage<'_>,
    ) -> Result<ReadOutcome> {
        // The gateways make the reader (nobody else creates consumers) and relay its pulls.
        let tail = sequent_protocol::TailRequest {
            stream: if stream_name == self.index_name { sequent_protocol::TailStream::Index } else { sequent_protocol::TailStream::Events },
            filter_subjects: filters,
            start: match deliver_policy {
                DeliverPolicy::ByStartSequence { start_sequence } => sequent_protocol::TailStart::Seq { seq: start_sequence },
                DeliverPolicy::ByStartTime { start_time } => sequent_protocol::TailStart::Time {
                    time: start_time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                },
                _ => sequent_protocol::TailStart::All,
            },
        };
        let principal = self.principal();
        let what = format!("asking the gateways for a reader of {stream_name:?}");
        let body = serde_json::to_vec(&tail).expect("tail requests serialise");
        let answer = self.guarded(&what, self.client.request(subjects::tail_subject(&principal), body.into())).await?;
        let reply: sequent_protocol::TailReply =
            serde_json::from_slice(&answer.payload).map_err(|e| Error::Nats(format!("{what}: not a tail reply: {e}")))?;
        if let Some(e) = reply.error {
            return Err(Error::Nats(format!("{what}: {}", e.message)));
        }
        let (total, name) = (reply.pending, reply.consumer);
        if total == 0 {
            return Ok(ReadOutcome::Done);
        }
        // The consumer counts to the end of the stream; this read stops at `upto`.
        let most = match deliver_policy {
            DeliverPolicy::ByStartSequence { start_sequence } => upto.saturating_sub(start_sequence) + 1,
            DeliverPolicy::All => upto,
            _ => total,
        };
        if count_total {
            progress.add_total(total.min(most));
        }
        let reading = format!("reading stream {stream_name:?}");
        let next_subject = subjects::pull_subject(&principal, tail.stream.token(), &name);
        let batch = PULL_BATCH.min(total.min(most).max(1));
        if let Some(conn) = self.wire_connection() {
            // The reader goes away by itself a minute after its last pull.
            return self.consume_wire(conn, &next_subject, &reading, batch, most, upto, progress, f);
        }
        let inbox = self.client.new_inbox();
        let mut sub = self.guarded(&reading, self.client.subscribe(inbox.clone())).await?;
        let pull = |batch: u64| {
            let body = format!(r#"{{"batch":{batch},"expires":{}}}"#, PULL_EXPIRES.as_nanos());
            let (client, subject, inbox) = (self.client.clone(), next_subject.clone(), inbox.clone());
            async move { client.publish_with_reply(subject, inbox, body.into()).await }
        };
        let mut requested = batch;
        let mut received = 0u64;
        let mut last_cseq = 0u64;
        let mut last_seq = 0u64;
        pull(batch).await.map_err(|e| self.nats_error(&reading, &e))?;
        let idle = self.timeout.max(Duration::from_secs(10));
        let outcome = 'outer: loop {
            let first = match tokio::time::timeout(idle, sub.next()).await {
                Err(_) => {
                    return Err(Error::Nats(format!(
                        "{reading}: no message for {idle:?} although the server said more were pending; \
                         is the server overloaded? Try again"
                    )))
                }
                Ok(None) => return Err(Error::Nats(format!("{reading}: the subscription closed"))),
                Ok(Some(m)) => m,
            };
            let mut item = Some(first);
            // Drain what is already buffered without a timer per message.
            while let Some(msg) = item.take() {
                let Some(reply) = msg.reply.as_deref() else {
                    // A status message: 408 = a pull request expired, 404 = nothing (yet).
                    match msg.status.map(|s| s.as_u16()) {
                        Some(408) | Some(404) => {
                            requested = received;
                            pull(batch).await.map_err(|e| self.nats_error(&reading, &e))?;
                            requested += batch;
                        }
                        Some(409) => {
                            let why = msg.description.clone().unwrap_or_default();
                            if why.to_lowercase().contains("deleted") {
                                return Err(Error::Nats(format!("{reading}: the server deleted the reader ({why}); try again")));
                            }
                        }
                        _ => {}
                    }
                    item = sub.next().now_or_never().flatten();
                    continue;
                };
                let Some(meta) = AckMeta::parse(reply) else {
                    return Err(Error::Nats(format!("{reading}: unexpected reply subject {reply:?}")));
                };
                if last_cseq != 0 && meta.consumer_seq != last_cseq + 1 {
                    break 'outer ReadOutcome::Gap { resume_after: last_seq };
                }
                last_cseq = meta.consumer_seq;
                received += 1;
                if meta.stream_seq > upto {
                    break 'outer ReadOutcome::Done;
                }
                last_seq = meta.stream_seq;
                let flow = f(meta.stream_seq, &msg.payload, meta.published_ns.div_euclid(1000))?;
                progress.tick()?;
                if flow == Flow::Stop || meta.pending == 0 || meta.stream_seq == upto {
                    break 'outer ReadOutcome::Done;
                }
                if requested - received <= batch / 2 && requested < most {
                    pull(batch).await.map_err(|e| self.nats_error(&reading, &e))?;
                    requested += batch;
                }
                item = sub.next().now_or_never().flatten();
            }
        };
        let _ = sub.unsubscribe().await;
        Ok(outcome)
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
            let summary = self.summary_async().await?;
            let (upto, cut) = (summary.last_seq, Cut::new(q.until_us, summary.copied_to));
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
                    let mut start = start;
                    if let Start::Seq(from) = match start { Start::All => Start::Seq(1), other => other } {
                        let from = from.max(1);
                        if q.limit.is_none() && upto >= from && upto - from + 1 >= parallel_min(self.wire_enabled()) {
                            return self.scan_parallel(q, from, upto, cut, progress, collector).await;
                        }
                        start = Start::Seq(from);
                    }
                    self.read(&self.stream_name, q.subject_filters(), start, upto, progress, &mut |seq, payload, stored_at| {
                        if cut.passed(seq, stored_at) {
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

    /// A scan of [from, upto] split into `parallel_parts()` sequence ranges read at the same
    /// time, each by its own consumer and parsed on its own thread; the batches are handed on
    /// in stream order afterwards. Used for big scans without a limit.
    async fn scan_parallel<F: FnMut(RecordBatch) -> Result<Flow>>(
        &self,
        q: &Query,
        from: u64,
        upto: u64,
        cut: Cut,
        progress: &mut Progress,
        mut collector: Collector<'_, F>,
    ) -> Result<Option<String>> {
        let parts = parallel_parts();
        let span = (upto - from + 1).div_ceil(parts);
        let ranges: Vec<(u64, u64)> =
            (0..parts).map(|i| (from + i * span, (from + (i + 1) * span - 1).min(upto))).filter(|(a, b)| a <= b).collect();
        let done = Arc::new(AtomicU64::new(0));
        let cancel = Arc::new(AtomicBool::new(false));
        let handle = self.rt.handle().clone();
        let filters = q.subject_filters();
        // Totals: what each range's consumer reports as pending, summed, for the progress bar.
        let results: Vec<Result<PartResult>> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let workers: Vec<_> = ranges
                    .iter()
                    .map(|&(a, b)| {
                        let (done, cancel, handle, filters) = (done.clone(), cancel.clone(), handle.clone(), filters.clone());
                        scope.spawn(move || {
                            let mut batches = Vec::new();
                            let mut part = Collector::new(q.row_filter(), None, |batch| {
                                batches.push(batch);
                                Ok(Flow::Continue)
                            });
                            let mut progress = Progress::worker(done, cancel.clone());
                            let result = handle.block_on(self.read(
                                &self.stream_name,
                                filters,
                                Start::Seq(a),
                                b,
                                &mut progress,
                                &mut |seq, payload, stored_at| {
                                    if cut.passed(seq, stored_at) {
                                        return Ok(Flow::Stop);
                                    }
                                    part.push(seq, payload)
                                },
                            ));
                            let total = progress.total;
                            let _ = progress.finish();
                            if result.is_err() {
                                cancel.store(true, Ordering::Relaxed);
                            }
                            let result = result.and_then(|_| part.finish());
                            let warning = part.skip_warning();
                            drop(part);
                            result.map(|_| (batches, total, warning))
                        })
                    })
                    .collect();
                let mut interrupted = None;
                while !workers.iter().all(|w| w.is_finished()) {
                    std::thread::sleep(Duration::from_millis(50));
                    if interrupted.is_none() {
                        if let Err(e) = progress.report_shared(done.load(Ordering::Relaxed), &cancel) {
                            interrupted = Some(e);
                        }
                    }
                }
                let mut out: Vec<_> = workers.into_iter().map(|w| w.join().expect("scan threads do not panic")).collect();
                if let Some(e) = interrupted {
                    out.insert(0, Err(e));
                }
                out
            })
        });
        let mut warning = None;
        let mut all = Vec::new();
        for r in results {
            let (batches, total, w) = r?;
            progress.add_total(total);
            warning = warning.or(w);
            all.push(batches);
        }
        progress.done = done.load(Ordering::Relaxed);
        for batch in all.into_iter().flatten() {
            if collector.forward(batch)? == Flow::Stop {
                break;
            }
        }
        collector.finish()?;
        progress.finish()?;
        Ok(warning)
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
                self.read(&self.index_name, filters, Start::All, ix_upto, &mut Progress::none(), &mut |_, payload, _| {
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
                let slack = std::env::var("PYREPORT_INDEX_SLACK").ok().and_then(|v| v.parse().ok()).unwrap_or(INDEX_SLACK);
                tail_from = newest.saturating_sub(slack).max(1);
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
            self.read(&self.stream_name, Vec::new(), Start::Seq(tail_from), upto, progress, &mut |seq, payload, _| {
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


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_stops_at_a_message_stored_after_until_but_not_within_a_copy() {
        let until = 1_000 * 1_000_000;
        let later = until + CLOCK_SKEW_US + 1;
        let plain = Cut::new(Some(until), 0);
        assert!(plain.passed(5, later) && !plain.passed(5, until + CLOCK_SKEW_US));
        // A copy up to sequence 10 was stored later than all its events.
        let copy = Cut::new(Some(until), 10);
        assert!(!copy.passed(10, later), "the copy's stored times say nothing of its events");
        assert!(copy.passed(11, later), "after the copy they do again");
        assert!(!Cut::new(None, 0).passed(5, later));
    }
}
