//! Stored events read by direct gets (`sequent_net::direct`): a key's last event, its events
//! after a position (one request), one event by sequence.

use sequent_net::direct::{DirectReader, ReadError};
use sequent_protocol::{subjects, Event};

#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    /// The stream did not answer: retry later.
    #[error(transparent)]
    Unavailable(#[from] ReadError),
    /// A stored event cannot be parsed.
    #[error("the stored event at seq {seq} is unreadable: {reason}")]
    Unreadable { seq: u64, reason: String },
}

/// Reads events of the stream. Cheap to clone.
#[derive(Clone)]
pub struct EventReader {
    direct: DirectReader,
}

impl EventReader {
    pub fn new(client: async_nats::Client, stream: &str) -> EventReader {
        EventReader { direct: DirectReader::new(client, stream).covering(subjects::ALL_EVENTS) }
    }

    pub fn direct(&self) -> &DirectReader {
        &self.direct
    }

    fn parse(stored: sequent_net::Stored) -> Result<Event, ReadFailure> {
        Event::from_stored(&stored.payload, stored.seq).map_err(|e| ReadFailure::Unreadable { seq: stored.seq, reason: e.to_string() })
    }

    /// The key's last event, or None.
    pub async fn last(&self, key: &str) -> Result<Option<Event>, ReadFailure> {
        self.direct.last(&subjects::key_filter(key)).await?.map(Self::parse).transpose()
    }

    /// Up to `limit` of the key's events after stream position `seq`, oldest first: one request
    /// per [`sequent_net::direct::MAX_BATCH`] events.
    pub async fn after(&self, key: &str, seq: u64, limit: usize) -> Result<Vec<Event>, ReadFailure> {
        let filter = subjects::key_filter(key);
        let mut out = Vec::new();
        let mut from = seq + 1;
        while out.len() < limit {
            let (stored, end) = self.direct.batch(&filter, from, limit - out.len()).await?;
            let Some(last) = stored.last().map(|m| m.seq) else { break };
            for m in stored {
                out.push(Self::parse(m)?);
            }
            if end.pending == 0 {
                break;
            }
            from = last + 1;
        }
        Ok(out)
    }

    /// The event at `seq`, or None.
    pub async fn get(&self, seq: u64) -> Result<Option<Event>, ReadFailure> {
        self.direct.get(seq).await?.map(Self::parse).transpose()
    }
}
