//! Appends from services over NATS request/reply. The request subject's last token names the
//! service; NATS permissions let each service user publish only to its own subject.

use crate::App;
use futures::StreamExt;
use sequent_protocol::subjects::{APPEND_WILDCARD, GATEWAY_QUEUE_GROUP};
use sequent_protocol::Producer;
use std::sync::Arc;

pub async fn serve(app: Arc<App>) -> anyhow::Result<()> {
    let mut requests = app
        .client
        .queue_subscribe(APPEND_WILDCARD, GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {APPEND_WILDCARD}: {e}"))?;
    while let Some(request) = requests.next().await {
        let app = app.clone();
        tokio::spawn(async move {
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
        });
    }
    anyhow::bail!("the NATS subscription to {APPEND_WILDCARD} ended")
}
