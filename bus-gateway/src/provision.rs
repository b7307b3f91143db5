//! Creates and updates the durable consumers of service types on request, so that services
//! need no stream-admin rights: one pull consumer per partition, pinned to one instance at a
//! time through a priority group, acked in batches (`AckAll`: an ack covers every earlier
//! event) with up to `max_ack_pending` events in hand.
//!
//! Migration: consumers made before batches (`AckExplicit`, one event in flight) cannot be
//! changed to `AckAll` in place (JetStream refuses to change an ack policy). Such a consumer is
//! replaced by one starting right after its ack floor: every event acked so far had its
//! effects committed, the next ones are delivered again, and the superclient skips those its
//! checkpoint already covers. Nothing is lost and nothing applied twice; instances still
//! pulling the old consumer fail their pulls and must be restarted with the new superclient.
//!
//! A consumer whose state moves between file and memory (`--consumer-storage`) is replaced by
//! one starting after its ack floor. A consumer kept in memory and lost with a nats-server
//! restart is made again after its recorded ack floor (`floors.rs`), or from the start if none
//! was recorded; the superclient moves a consumer behind its checkpoint to the event after it.

use crate::App;
use async_nats::jetstream::consumer::{pull, AckPolicy, PriorityPolicy};
use sequent_protocol::subjects::{self, MEMBERS_BUCKET, PIN_GROUP, PROVISION_WILDCARD};
use sequent_protocol::validate::{validate_id, validate_type};
use sequent_protocol::{ErrorBody, ErrorCode, ProvisionReply, ProvisionRequest};
use std::sync::Arc;
use std::time::Duration;

pub async fn serve(app: Arc<App>, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    ensure_members_bucket(&app).await?;
    tokio::spawn(keep_members_bucket(app.clone(), stop.clone()));
    if in_memory(&app) {
        tokio::spawn(crate::floors::keep(app.clone(), stop.clone()));
    }
    let requests = app
        .client
        .queue_subscribe(PROVISION_WILDCARD, subjects::GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {PROVISION_WILDCARD}: {e}"))?;
    crate::nats_api::drain_on_stop(&app, requests, stop, PROVISION_WILDCARD, |app, request| async move {
        let Some(reply_to) = request.reply.clone() else { return };
        let service = request.subject.rsplit('.').next().unwrap_or_default().to_string();
        let reply = match serde_json::from_slice::<ProvisionRequest>(&request.payload) {
            Ok(req) => provision(&app, &service, req).await,
            Err(e) => failed(ErrorCode::BadRequest, format!("not a provision request: {e}")),
        };
        let body = serde_json::to_vec(&reply).expect("replies serialise");
        if let Err(e) = app.client.publish(reply_to, body.into()).await {
            tracing::warn!(error = %e, "could not send a provision reply");
        }
    })
    .await
}

fn in_memory(app: &App) -> bool {
    app.config.consumer_storage == crate::config::ConsumerStorage::Memory
}

fn failed(code: ErrorCode, message: String) -> ProvisionReply {
    ProvisionReply {
        stream: String::new(),
        partitions: 0,
        consumers: Vec::new(),
        group: String::new(),
        members_bucket: String::new(),
        error: Some(ErrorBody { code, message }),
    }
}

async fn provision(app: &App, service: &str, req: ProvisionRequest) -> ProvisionReply {
    if let Err(e) = validate_id("service", service) {
        return failed(ErrorCode::BadRequest, e.to_string());
    }
    if req.types.is_empty() {
        return failed(ErrorCode::BadRequest, "a service must handle at least one event type".into());
    }
    // `*`: every event type (a service's `bus:add_event_listener("*", fn)`).
    let all_types = req.types.iter().any(|t| t == "*");
    for t in req.types.iter().filter(|t| *t != "*") {
        if let Err(e) = validate_type(t) {
            return failed(ErrorCode::BadRequest, e.to_string());
        }
    }
    let partitions = app.config.partitions;
    let mut consumers = Vec::with_capacity(partitions as usize);
    // Consumers lost with a nats-server restart are made again at their recorded floors.
    let floors = match in_memory(app) {
        true => crate::floors::recorded_floors(app).await,
        false => None,
    };
    for p in 0..partitions {
        let name = subjects::consumer_name(service, p);
        // JetStream refuses overlapping filters: `*` alone covers every type.
        let mut filters: Vec<String> = match all_types {
            true => vec![subjects::partition_type_filter(p, "*")],
            false => req.types.iter().map(|t| subjects::partition_type_filter(p, t)).collect(),
        };
        filters.sort();
        filters.dedup();
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("{service}: partition {p} of {partitions}")),
            filter_subjects: filters,
            ack_policy: AckPolicy::All,
            ack_wait: Duration::from_millis(req.ack_wait_ms.unwrap_or(30_000)),
            max_ack_pending: req.max_ack_pending.unwrap_or(128).clamp(1, 10_000),
            priority_policy: PriorityPolicy::PinnedClient,
            priority_groups: vec![PIN_GROUP.into()],
            priority_timeout: Duration::from_millis(req.pin_timeout_ms.unwrap_or(5_000)),
            memory_storage: in_memory(app),
            ..Default::default()
        };
        let resume = match &floors {
            Some(floors) => crate::floors::recorded(floors, &name).await,
            None => None,
        };
        if let Err(e) = app.store.ack_all_consumer(config, resume).await {
            return failed(ErrorCode::Unavailable, format!("creating consumer {name}: {e}"));
        }
        consumers.push(name);
    }
    tracing::info!(service, types = ?req.types, partitions, "provisioned consumers");
    ProvisionReply {
        stream: app.store.stream_name.clone(),
        partitions,
        consumers,
        group: PIN_GROUP.into(),
        members_bucket: MEMBERS_BUCKET.into(),
        error: None,
    }
}

/// The members bucket is kept in memory (heartbeats need no disk), so a nats-server that
/// restarts has lost it, and the instances' heartbeats fail until it is back: made again here
/// within seconds.
async fn keep_members_bucket(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = ensure_members_bucket(&app).await {
            tracing::debug!(error = %e, "the members bucket could not be checked; trying again");
        }
    }
}

async fn ensure_members_bucket(app: &App) -> anyhow::Result<()> {
    use async_nats::jetstream::kv;
    if app.store.js.get_key_value(MEMBERS_BUCKET).await.is_ok() {
        return Ok(());
    }
    app.store
        .js
        .create_key_value(kv::Config {
            bucket: MEMBERS_BUCKET.into(),
            description: "Sequent: live service instances (<service>.<instance>)".into(),
            history: 1,
            max_age: Duration::from_secs(60),
            storage: async_nats::jetstream::stream::StorageType::Memory,
            num_replicas: app.config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating KV bucket {MEMBERS_BUCKET}: {e}"))?;
    Ok(())
}
