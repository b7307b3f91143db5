//! Appends go through the bus-gateway, over a NATS request on `sequent.append.<service>`.

use sequent_protocol::{subjects, AppendReply, AppendRequest, ErrorCode, NewEvent};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The outcome is unknown or the store is away: retry later with the same ids.
    #[error("{0}")]
    Unavailable(String),
    /// The gateway refused the request as such (forbidden type, malformed): retrying will not help.
    #[error("{0}")]
    Refused(String),
}

#[derive(Clone)]
pub struct Gateway {
    client: async_nats::Client,
    subject: String,
    instance: String,
    timeout: Duration,
}

impl Gateway {
    pub fn new(client: async_nats::Client, service: &str, instance: &str) -> Gateway {
        Gateway {
            client,
            subject: subjects::append_subject(service),
            instance: instance.to_string(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Appends the events as one atomic batch and returns the gateway's receipts.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<AppendReply, AppendError> {
        let body = serde_json::to_vec(&AppendRequest { events, instance: Some(self.instance.clone()) })
            .expect("append requests serialise");
        let request = async_nats::Request::new().payload(body.into()).timeout(Some(self.timeout));
        let reply = self.client.send_request(self.subject.clone(), request).await.map_err(|e| {
            use async_nats::RequestErrorKind as K;
            match e.kind() {
                K::NoResponders => AppendError::Unavailable(format!("no bus-gateway answers on {} (is one running?)", self.subject)),
                K::TimedOut => AppendError::Unavailable(format!("the bus-gateway did not answer on {} within {:?}", self.subject, self.timeout)),
                _ => AppendError::Unavailable(format!("append request on {}: {e}", self.subject)),
            }
        })?;
        let reply: AppendReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| AppendError::Unavailable(format!("unreadable reply from the bus-gateway: {e}")))?;
        match &reply.error {
            None => Ok(reply),
            Some(err) => match err.code {
                ErrorCode::Unavailable | ErrorCode::Internal => Err(AppendError::Unavailable(err.message.clone())),
                _ => Err(AppendError::Refused(format!("the bus-gateway refused the append ({:?}): {}", err.code, err.message))),
            },
        }
    }
}
