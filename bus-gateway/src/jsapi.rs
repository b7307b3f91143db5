//! Raw JetStream publish replies. The gateway publishes with plain NATS requests so that it
//! sees the server's exact error codes (async-nats folds some, e.g. 10164, into a generic kind).

use serde::Deserialize;

pub const WRONG_LAST_SEQUENCE: u64 = 10071;
/// Another conditional write to the same key is still being replicated (clustered streams).
pub const WRONG_LAST_SEQUENCE_IN_FLIGHT: u64 = 10164;
pub const DUPLICATE_IN_PROCESS: u64 = 10158;

#[derive(Debug, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub err_code: u64,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
pub struct PubAck {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub error: Option<ApiError>,
}

/// How a publish went, as far as the append logic cares.
#[derive(Debug)]
pub enum PublishOutcome {
    Stored { seq: u64, duplicate: bool, count: u64 },
    /// The key moved on (10071) or another write to it is in flight (10164).
    Conflict,
    /// Transient: retry with the same ids.
    Retry(String),
    /// The server refused the message for a reason retrying will not fix.
    Refused(String),
}

impl PublishOutcome {
    pub fn from_reply(payload: &[u8]) -> PublishOutcome {
        if payload.is_empty() {
            // Intermediate batch messages are acknowledged with an empty reply.
            return PublishOutcome::Stored { seq: 0, duplicate: false, count: 0 };
        }
        let ack: PubAck = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => return PublishOutcome::Refused(format!("unreadable JetStream reply: {e}")),
        };
        match ack.error {
            None => PublishOutcome::Stored { seq: ack.seq, duplicate: ack.duplicate, count: ack.count },
            Some(e) if e.err_code == WRONG_LAST_SEQUENCE || e.err_code == WRONG_LAST_SEQUENCE_IN_FLIGHT => {
                PublishOutcome::Conflict
            }
            Some(e) if e.err_code == DUPLICATE_IN_PROCESS || e.code == 503 || e.code == 429 => {
                PublishOutcome::Retry(format!("{} ({})", e.description, e.err_code))
            }
            Some(e) => PublishOutcome::Refused(format!("{} (JetStream error {})", e.description, e.err_code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_replies() {
        assert!(matches!(
            PublishOutcome::from_reply(br#"{"stream":"EVENTS","seq":7}"#),
            PublishOutcome::Stored { seq: 7, duplicate: false, .. }
        ));
        assert!(matches!(
            PublishOutcome::from_reply(br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}"#),
            PublishOutcome::Conflict
        ));
        assert!(matches!(
            PublishOutcome::from_reply(br#"{"error":{"code":400,"err_code":10164,"description":"wrong last sequence"}}"#),
            PublishOutcome::Conflict
        ));
        assert!(matches!(
            PublishOutcome::from_reply(br#"{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}"#),
            PublishOutcome::Refused(_)
        ));
    }
}
