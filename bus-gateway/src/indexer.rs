//! Keeps the correlation index: for every stored event, `ix.c.<correlation>` gets its stream
//! sequence. A durable consumer shared by all gateways does the work; index writes carry a
//! message id derived from the sequence, so redeliveries add nothing.

use crate::App;
use async_nats::jetstream::consumer::{pull, AckPolicy};
use futures::StreamExt;
use sequent_protocol::subjects;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use crate::store::INDEXER as CONSUMER;
const CONCURRENCY: usize = 256;

#[derive(Deserialize)]
struct Correlated {
    correlation: String,
}

pub async fn run(app: Arc<App>) -> anyhow::Result<()> {
    loop {
        if let Err(e) = index(&app).await {
            tracing::warn!(error = %e, "correlation indexer stopped; restarting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn index(app: &App) -> anyhow::Result<()> {
    let consumer = app
        .store
        .events
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                description: Some("bus-gateway: correlation index".into()),
                ack_policy: AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await?;
    let messages = consumer.stream().max_messages_per_batch(1000).messages().await?;
    messages
        .for_each_concurrent(CONCURRENCY, |msg| async move {
            let Ok(msg) = msg else { return };
            let Ok(info) = msg.info() else { return };
            let seq = info.stream_sequence;
            let Ok(c) = serde_json::from_slice::<Correlated>(&msg.payload) else {
                tracing::error!(seq, "event without a readable correlation; not indexed");
                let _ = msg.ack().await;
                return;
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("ix-{seq}").as_str());
            let subject = subjects::correlation_index_subject(&c.correlation);
            let stored = match app.store.js.publish_with_headers(subject, headers, seq.to_string().into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if stored {
                let _ = msg.ack().await;
            }
        })
        .await;
    anyhow::bail!("the indexer's message stream ended")
}

