//! A principal's tail of the event stream: an ephemeral consumer the gateways make for it
//! (`sequent.tail.<principal>`), pulled through the gateways' relay
//! (`sequent.pull.<principal>.<stream>.<consumer>`), read in stream order without gaps.
//!
//! Ordered-consumer semantics with our own loop: each message's position comes from its reply
//! subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`);
//! a gap in the consumer sequence, a deleted consumer or a silent one makes the tail ask for a
//! new consumer starting right after the last message it returned.

use async_nats::Subscriber;
use bytes::Bytes;
use futures::StreamExt;
use sequent_protocol::subjects::{self, AckMeta};
use sequent_protocol::{TailReply, TailRequest, TailStart, TailStream};
use std::time::Duration;

/// Messages asked for by one pull request; the next goes out when half have arrived.
const BATCH: u64 = 1024;
/// How long one pull request waits on the server for messages (a live tail idles that long).
const EXPIRES: Duration = Duration::from_secs(20);

/// One message of a tail.
#[derive(Debug, Clone)]
pub struct TailMessage {
    pub seq: u64,
    /// The subject it is stored under.
    pub subject: String,
    pub payload: Bytes,
    /// Matching messages after this one when it was delivered.
    pub pending: u64,
}

pub struct Tail {
    client: async_nats::Client,
    principal: String,
    request: TailRequest,
    consumer: String,
    /// Messages the consumer had when it was made.
    pub pending_at_open: u64,
    sub: Subscriber,
    inbox: String,
    requested: u64,
    received: u64,
    last_cseq: u64,
    last_seq: Option<u64>,
}

impl Tail {
    /// Asks the gateways for a tail and starts pulling it.
    pub async fn open(client: async_nats::Client, principal: &str, request: TailRequest) -> Result<Tail, String> {
        let inbox = client.new_inbox();
        let sub = client.subscribe(inbox.clone()).await.map_err(|e| format!("subscribing to the tail's inbox: {e}"))?;
        let mut tail = Tail {
            client,
            principal: principal.to_string(),
            request,
            consumer: String::new(),
            pending_at_open: 0,
            sub,
            inbox,
            requested: 0,
            received: 0,
            last_cseq: 0,
            last_seq: None,
        };
        tail.make().await?;
        Ok(tail)
    }

    /// The consumer's name (for logs).
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    async fn make(&mut self) -> Result<(), String> {
        let mut request = self.request.clone();
        if let Some(last) = self.last_seq {
            request.start = TailStart::Seq { seq: last + 1 };
        }
        let body = serde_json::to_vec(&request).expect("tail requests serialise");
        let answer = tokio::time::timeout(Duration::from_secs(10), self.client.request(subjects::tail_subject(&self.principal), body.into()))
            .await
            .map_err(|_| "no gateway answered the tail request within 10 s: is a bus-gateway running?".to_string())?
            .map_err(|e| format!("asking the gateways for a tail: {e} (is a bus-gateway running?)"))?;
        let reply: TailReply = serde_json::from_slice(&answer.payload).map_err(|e| format!("not a tail reply: {e}"))?;
        if let Some(e) = reply.error {
            return Err(format!("the gateway refused the tail: {}", e.message));
        }
        self.consumer = reply.consumer;
        self.pending_at_open = reply.pending;
        self.requested = 0;
        self.received = 0;
        self.last_cseq = 0;
        self.pull().await
    }

    async fn pull(&mut self) -> Result<(), String> {
        let subject = subjects::pull_subject(&self.principal, self.request.stream.token(), &self.consumer);
        let body = format!(r#"{{"batch":{BATCH},"expires":{}}}"#, EXPIRES.as_nanos());
        self.client.publish_with_reply(subject, self.inbox.clone(), body.into()).await.map_err(|e| format!("pulling the tail: {e}"))?;
        self.requested += BATCH;
        Ok(())
    }

    /// The next message; waits for one (a live tail waits as long as it takes).
    pub async fn next(&mut self) -> Result<TailMessage, String> {
        let mut silent = 0;
        loop {
            let msg = match tokio::time::timeout(EXPIRES + Duration::from_secs(5), self.sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err("the tail's subscription ended".into()),
                Err(_) => {
                    // Not even the pull's expiry came back: the consumer or the relay is gone.
                    silent += 1;
                    tracing::debug!(consumer = self.consumer, silent, "tail silent; asking for a new one");
                    self.make().await?;
                    continue;
                }
            };
            let Some(reply) = msg.reply.as_deref() else {
                match msg.status.map(|s| s.as_u16()) {
                    // The pull expired, or nothing was there: pull again.
                    Some(408) | Some(404) => {
                        self.requested = self.received;
                        self.pull().await?;
                    }
                    Some(409) => {
                        let why = msg.description.clone().unwrap_or_default().to_lowercase();
                        if why.contains("deleted") {
                            self.make().await?;
                        }
                    }
                    _ => {}
                }
                continue;
            };
            let Some(meta) = AckMeta::parse(reply) else { continue };
            if self.last_cseq != 0 && meta.consumer_seq != self.last_cseq + 1 {
                tracing::debug!(consumer = self.consumer, "gap in the tail; asking for a new one");
                self.make().await?;
                continue;
            }
            self.last_cseq = meta.consumer_seq;
            self.received += 1;
            self.last_seq = Some(meta.stream_seq);
            if self.requested - self.received <= BATCH / 2 {
                self.pull().await?;
            }
            return Ok(TailMessage { seq: meta.stream_seq, subject: msg.subject.to_string(), payload: msg.payload, pending: meta.pending });
        }
    }
}

/// A tail of the event stream with `filters`, from `start`.
pub fn events(filters: Vec<String>, start: TailStart) -> TailRequest {
    TailRequest { stream: TailStream::Events, filter_subjects: filters, start }
}
