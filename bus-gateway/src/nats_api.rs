//! Appends from services over NATS request/reply. The request subject's last token names the
//! service; NATS permissions let each service user publish only to its own subject.
//!
//! Stopping: the subscription is drained (the server stops handing this gateway requests of the
//! queue group; those already on their way are still received), every request received is
//! finished and answered, within `--shutdown-timeout`.

use crate::App;
use futures::StreamExt;
use sequent_protocol::subjects::{APPEND_WILDCARD, GATEWAY_QUEUE_GROUP};
use sequent_protocol::Producer;
use std::sync::Arc;
use tokio::sync::watch;

pub async fn serve(app: Arc<App>, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let requests = app
        .client
        .queue_subscribe(APPEND_WILDCARD, GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {APPEND_WILDCARD}: {e}"))?;
    drain_on_stop(&app, requests, stop, APPEND_WILDCARD, |app, request| async move {
        let Some(reply_to) = request.reply.clone() else {
            tracing::warn!(subject = %request.subject, "append without a reply subject ignored");
            return;
        };
        let service = request.subject.rsplit('.').next().unwrap_or_default().to_string();
        let producer = Producer { service: service.clone(), instance: None };
        let reply = app.append(&request.payload, producer, Some(&service)).await;
        let body = serde_json::to_vec(&reply).expect("replies serialise");
        if let Err(e) = app.client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %e, "could not send an append reply");
        }
    })
    .await
}

/// Handles each request of `requests` in a task of its own until `stop`; then drains the
/// subscription and waits (at most `--shutdown-timeout`) until every request received was
/// handled. Shared by appends and provisioning.
pub async fn drain_on_stop<F, Fut>(
    app: &Arc<App>,
    mut requests: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
    subject: &str,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(Arc<App>, async_nats::Message) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let bound = app.config.http.shutdown_timeout;
    let mut tasks = tokio::task::JoinSet::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = sequent_net::serve::stopped(&mut stop), if deadline.is_none() => {
                // UNSUB then PING: what the server sent before the UNSUB still arrives, then
                // the subscription ends.
                if let Err(e) = requests.drain().await {
                    tracing::warn!(subject, error = %e, "could not drain the subscription");
                }
                deadline = Some(tokio::time::Instant::now() + bound);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                tracing::warn!(subject, "the subscription did not end within --shutdown-timeout after draining");
                break;
            }
            request = requests.next() => match request {
                Some(request) => {
                    tasks.spawn(handle(app.clone(), request));
                }
                None if deadline.is_some() => break,
                None => anyhow::bail!("the NATS subscription to {subject} ended"),
            },
        }
    }
    let in_hand = tasks.len();
    tracing::info!(subject, in_hand, "no new requests taken; finishing those in hand");
    let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + bound);
    let finished = tokio::time::timeout_at(until, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(subject, left = tasks.len(), "requests still in hand after --shutdown-timeout");
    }
    Ok(())
}
