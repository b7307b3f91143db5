//! Tails: the only consumers a principal (a service's live feed, an analyst's scan, the
//! explorer) gets besides a service's own partition consumers. The gateway makes them, so no
//! principal ever chooses a consumer's configuration: an ephemeral, unacknowledged, in-memory
//! pull consumer of the events or of the correlation index, named `<principal>~<nonce>`.
//!
//! Pulls are relayed: the principal sends its pull request to
//! `sequent.pull.<principal>.<stream>.<consumer>` (the only pull subject its permissions open),
//! a gateway checks that the consumer is the principal's and that the reply goes to the
//! principal's own inbox, and forwards the request to the consumer with that reply subject; the
//! messages then go from the server straight to the principal. One relayed message per pull
//! request (thousands of events), so the relay costs nothing measurable.

use crate::App;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use sequent_protocol::subjects::{self, GATEWAY_QUEUE_GROUP, PULL_WILDCARD, TAIL_WILDCARD};
use sequent_protocol::{ErrorBody, ErrorCode, TailReply, TailRequest, TailStart, TailStream};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A tail nobody pulled for this long is deleted by the server.
const INACTIVE: Duration = Duration::from_secs(60);
/// The largest pull request relayed (messages, and how long it may wait).
const MAX_BATCH: u64 = 16_384;
const MAX_EXPIRES: Duration = Duration::from_secs(120);

pub async fn serve(app: Arc<App>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let opens = app
        .client
        .queue_subscribe(TAIL_WILDCARD, GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {TAIL_WILDCARD}: {e}"))?;
    let pulls = app
        .client
        .queue_subscribe(PULL_WILDCARD, GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {PULL_WILDCARD}: {e}"))?;
    let opening = crate::nats_api::drain_on_stop(&app, opens, stop.clone(), TAIL_WILDCARD, |app, request| async move {
        let Some(reply_to) = request.reply.clone() else { return };
        let principal = request.subject.rsplit('.').next().unwrap_or_default().to_string();
        let reply = match serde_json::from_slice::<TailRequest>(&request.payload) {
            Ok(req) => open(&app, &principal, req).await,
            Err(e) => failed(ErrorCode::BadRequest, format!("not a tail request: {e}")),
        };
        let body = serde_json::to_vec(&reply).expect("replies serialise");
        if let Err(e) = app.client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %e, "could not send a tail reply");
        }
    });
    let relaying = crate::nats_api::drain_on_stop(&app, pulls, stop, PULL_WILDCARD, |app, request| async move {
        if let Err(why) = relay(&app, &request).await {
            tracing::warn!(subject = %request.subject, why, "pull request refused");
        }
    });
    let (a, b) = tokio::join!(opening, relaying);
    a.and(b)
}

fn failed(code: ErrorCode, message: String) -> TailReply {
    TailReply { error: Some(ErrorBody { code, message }), ..Default::default() }
}

fn stream_name(app: &App, stream: TailStream) -> String {
    match stream {
        TailStream::Events => app.config.stream.clone(),
        TailStream::Index => format!("{}{}", app.config.stream, subjects::INDEX_STREAM_SUFFIX),
    }
}

async fn open(app: &App, principal: &str, req: TailRequest) -> TailReply {
    if let Err(e) = sequent_protocol::declaration::validate_service(principal) {
        return failed(ErrorCode::BadRequest, e);
    }
    if req.filter_subjects.len() > subjects::MAX_FILTERS {
        return failed(ErrorCode::BadRequest, format!("at most {} filters", subjects::MAX_FILTERS));
    }
    let deliver_policy = match &req.start {
        TailStart::All => DeliverPolicy::All,
        TailStart::New => DeliverPolicy::New,
        TailStart::Seq { seq } => DeliverPolicy::ByStartSequence { start_sequence: (*seq).max(1) },
        TailStart::Time { time } => match time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339) {
            Ok(t) => DeliverPolicy::ByStartTime { start_time: t },
            Err(e) => return failed(ErrorCode::BadRequest, format!("start time {time:?} is not RFC 3339: {e}")),
        },
    };
    let stream = stream_name(app, req.stream);
    let name = format!("{}{}", subjects::tail_consumer_prefix(principal), nonce());
    let config = pull::Config {
        name: Some(name.clone()),
        description: Some(format!("tail of {principal}")),
        filter_subjects: req.filter_subjects,
        deliver_policy,
        ack_policy: AckPolicy::None,
        memory_storage: true,
        num_replicas: 1,
        inactive_threshold: INACTIVE,
        ..Default::default()
    };
    let js = async_nats::jetstream::new(app.client.clone());
    let made = async {
        let s = js.get_stream_no_info(&stream).await.map_err(|e| e.to_string())?;
        let mut c = s.create_consumer(config).await.map_err(|e| e.to_string())?;
        c.info().await.map(|i| i.num_pending).map_err(|e| e.to_string())
    }
    .await;
    match made {
        Ok(pending) => {
            metrics::counter!("sequent_tails_opened_total", "principal" => principal.to_string()).increment(1);
            TailReply { consumer: name, pending, error: None }
        }
        Err(e) => failed(ErrorCode::BadRequest, format!("could not make the tail: {e}")),
    }
}

fn nonce() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

/// Forwards a pull request of `principal` to its tail, with its reply subject.
async fn relay(app: &App, request: &async_nats::Message) -> Result<(), String> {
    let mut tokens = request.subject.split('.').skip(2);
    let (Some(principal), Some(stream), Some(consumer), None) = (tokens.next(), tokens.next(), tokens.next(), tokens.next()) else {
        return Err("not sequent.pull.<principal>.<stream>.<consumer>".into());
    };
    let stream = TailStream::from_token(stream).ok_or("the stream is `events` or `index`")?;
    if !consumer.starts_with(&subjects::tail_consumer_prefix(principal)) {
        return Err(format!("consumer {consumer:?} is not a tail of {principal:?}"));
    }
    let reply = request.reply.as_deref().ok_or("a pull request needs a reply subject")?;
    if app.callout_enabled() && !reply.starts_with(&format!("{}.", sequent_auth::permissions::inbox_prefix(principal))) {
        return Err(format!("the reply subject {reply:?} is not {principal:?}'s inbox"));
    }
    let pull: serde_json::Value = serde_json::from_slice(&request.payload).map_err(|e| format!("not a pull request: {e}"))?;
    let batch = pull["batch"].as_u64().unwrap_or(1).clamp(1, MAX_BATCH);
    let expires = pull["expires"].as_u64().map(|ns| ns.min(MAX_EXPIRES.as_nanos() as u64));
    let mut body = serde_json::json!({ "batch": batch });
    if let Some(ns) = expires {
        body["expires"] = ns.into();
    }
    if let Some(hb) = pull["idle_heartbeat"].as_u64() {
        body["idle_heartbeat"] = hb.into();
    }
    let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}", stream_name(app, stream));
    app.client.publish_with_reply(subject, reply.to_string(), body.to_string().into()).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use sequent_protocol::subjects;

    #[test]
    fn a_tails_name_tells_whose_it_is() {
        let a = format!("{}{}", subjects::tail_consumer_prefix("ana"), "0011");
        assert!(a.starts_with(&subjects::tail_consumer_prefix("ana")));
        // `~` is in no principal's name: "ana" cannot claim a tail of "ana-lyst".
        let b = format!("{}{}", subjects::tail_consumer_prefix("ana-lyst"), "0011");
        assert!(!b.starts_with(&subjects::tail_consumer_prefix("ana")));
        assert!(sequent_protocol::declaration::validate_service("ana~x").is_err());
    }
}
