//! The service's durable consumers are the gateway's to create (services may not create
//! consumers): a service asks for them over NATS.

use crate::cli::RunOpts;
use crate::runtime::Service;
use sequent_protocol::subjects;
use sequent_protocol::{ProvisionReply, ProvisionRequest};
use std::time::{Duration, Instant};

/// Asks a gateway for the service's consumers, retrying until one answers. A partition's worker
/// holds up to twice `--batch` events unacked.
pub async fn provision(client: &async_nats::Client, service: &str, types: Vec<String>, opts: &RunOpts) -> anyhow::Result<ProvisionReply> {
    let request = ProvisionRequest {
        types,
        ack_wait_ms: Some(opts.ack_wait.as_millis() as u64),
        pin_timeout_ms: Some(opts.pin_timeout.as_millis() as u64),
        max_ack_pending: Some((opts.batch.max(1) * 2) as i64),
    };
    let body = serde_json::to_vec(&request).expect("provision requests serialise");
    let subject = subjects::provision_subject(service);
    let mut delay = Duration::from_millis(200);
    loop {
        let req = async_nats::Request::new().payload(body.clone().into()).timeout(Some(Duration::from_secs(30)));
        match client.send_request(subject.clone(), req).await {
            Ok(msg) => {
                let reply: ProvisionReply = serde_json::from_slice(&msg.payload)
                    .map_err(|e| anyhow::anyhow!("unreadable provision reply: {e}"))?;
                match &reply.error {
                    None => return Ok(reply),
                    Some(e) if e.code == sequent_protocol::ErrorCode::Unavailable => {
                        tracing::warn!(error = e.message, "provisioning failed; retrying");
                    }
                    Some(e) => anyhow::bail!("the gateway refused to provision {service}: {}", e.message),
                }
            }
            Err(e) => tracing::warn!(error = %e, subject, "no gateway answered the provision request yet (is bus-gateway running?); retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A partition's consumer is gone: a nats-server that kept consumers in memory (the gateway's
/// default `--consumer-storage memory`) restarted, or someone deleted it. Asks a gateway to make the
/// service's consumers again, at most once a second per instance (every worker of the instance
/// finds its consumer gone at once); the workers then resume after their checkpoints.
pub async fn again(svc: &Service) {
    let mut last = svc.reprovisioned.lock().await;
    if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
        return;
    }
    tracing::warn!(service = svc.name, "a partition consumer is gone: asking a gateway to make the service's consumers again");
    match provision(&svc.client, &svc.name, svc.spec.types(), &svc.opts).await {
        Ok(_) => tracing::info!(service = svc.name, "consumers made again"),
        Err(e) => tracing::warn!(service = svc.name, error = %e, "making the consumers again failed"),
    }
    *last = Some(Instant::now());
}
