//! The service's durable consumers are the gateway's to create (services may not create
//! consumers): a service asks for them over NATS.

use sequent_protocol::subjects;
use sequent_protocol::{ProvisionReply, ProvisionRequest};
use std::time::Duration;

/// Asks a gateway for the service's consumers, retrying until one answers.
pub async fn provision(client: &async_nats::Client, service: &str, types: Vec<String>, ack_wait: Duration, pin_timeout: Duration, in_hand: usize) -> anyhow::Result<ProvisionReply> {
    let request = ProvisionRequest {
        types,
        ack_wait_ms: Some(ack_wait.as_millis() as u64),
        pin_timeout_ms: Some(pin_timeout.as_millis() as u64),
        max_ack_pending: Some(in_hand as i64),
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

