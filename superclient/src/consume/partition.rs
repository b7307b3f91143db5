//! A partition as its worker sees it: the checkpoint and parked keys it loaded from the active
//! namespace, and the channels operator releases reach its worker by.

use crate::runtime::Service;
use crate::state;
use sequent_protocol::subjects;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Routes operator release requests to the worker owning the key's partition.
pub type ReleaseRoutes = Arc<parking_lot::Mutex<HashMap<u32, mpsc::Sender<String>>>>;

/// What a worker remembers about its partition in the active namespace.
pub struct PartitionState {
    pub partition: u32,
    /// The active namespace of the partition's state ([`Service::active_ns_of`]).
    pub ns: String,
    /// Checkpoint: the last applied stream sequence.
    pub applied: u64,
    /// Parked keys of this partition.
    pub parked: HashSet<String>,
}

impl PartitionState {
    pub async fn load(svc: &Service, partition: u32) -> PartitionState {
        let mut delay = Duration::from_millis(100);
        loop {
            let ns = svc.active_ns_of(partition);
            let loaded = async {
                let applied = svc.store.applied(&ns, partition).await?;
                let parked = parked_keys(svc, &ns).await?;
                Ok::<_, redis::RedisError>((applied, parked))
            }
            .await;
            match loaded {
                Ok((applied, parked)) => {
                    let parked = parked.into_iter().filter(|k| subjects::partition_of(k, svc.partitions) == partition).collect();
                    return PartitionState { partition, ns, applied, parked };
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "reading the partition's checkpoint failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reloads after a rebuild swapped the namespace. True when the new checkpoint is behind the
    /// one this worker had: the state was rebuilt from the stream after Redis lost it, up to the
    /// consumer's ack floor, so what was committed to the lost state and not acked yet is not in
    /// it, and must be delivered again (see `consume::worker`).
    pub async fn refresh_if_moved(&mut self, svc: &Service) -> bool {
        if svc.active_ns_of(self.partition) == self.ns {
            return false;
        }
        let before = self.applied;
        *self = PartitionState::load(svc, self.partition).await;
        self.applied < before
    }
}

pub async fn parked_keys(svc: &Service, ns: &str) -> redis::RedisResult<Vec<String>> {
    redis::cmd("SMEMBERS").arg(state::parked_set_key(ns)).query_async(&mut svc.store.con.clone()).await
}
