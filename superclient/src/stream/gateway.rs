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

/// Requests per append before the outcome is reported unknown (each waits `timeout`).
const ATTEMPTS: u32 = 2;

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
            timeout: Duration::from_secs(3),
        }
    }

    /// Appends the events as one atomic batch and returns the gateway's receipts.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<AppendReply, AppendError> {
        let body = serde_json::to_vec(&AppendRequest { events, instance: Some(self.instance.clone()) })
            .expect("append requests serialise");
        // A gateway killed while it held the request never answers: ask again, and the queue
        // group hands the same events (same ids, so stored at most once) to a live gateway,
        // instead of waiting out one long timeout.
        let mut attempt = 1;
        let reply = loop {
            let request = async_nats::Request::new().payload(body.clone().into()).timeout(Some(self.timeout));
            match self.client.send_request(self.subject.clone(), request).await {
                Ok(reply) => break reply,
                Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut && attempt < ATTEMPTS => attempt += 1,
                Err(e) => {
                    use async_nats::RequestErrorKind as K;
                    return Err(match e.kind() {
                        K::NoResponders => AppendError::Unavailable(format!("no bus-gateway answers on {} (is one running?)", self.subject)),
                        K::TimedOut => AppendError::Unavailable(format!(
                            "the bus-gateway did not answer on {} within {:?}, {ATTEMPTS} times",
                            self.subject, self.timeout
                        )),
                        _ => AppendError::Unavailable(format!("append request on {}: {e}", self.subject)),
                    });
                }
            }
        };
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
