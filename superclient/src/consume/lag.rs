//! Gauges sampled every few seconds for the partitions this instance owns:
//!
//! - `sequent_consumer_lag{service, partition}`: events of the partition's durable consumer not
//!   yet handled (`num_pending`, not delivered yet, plus `num_ack_pending`, delivered and not
//!   acked), asked of JetStream only for partitions whose worker has events in hand (one that
//!   waits on its pull with an empty hand has nothing pending: 0). A partition this instance
//!   stopped owning is reported as 0 from here on, so that `sum by (service, partition)` over
//!   all instances is the owner's value;
//! - `sequent_parked_keys{service}`: parked keys in the partitions this instance owns (summed
//!   over the instances, every parked key counts once).
//!
//! Labels are bounded: services, and partitions (16 by default); never keys.

use super::partition;
use crate::runtime::Service;
use sequent_protocol::subjects;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often the gauges are sampled (one consumer-info request per owned partition in work).
pub const EVERY: Duration = Duration::from_secs(2);

/// Samples until the task is dropped.
pub async fn sample(svc: Arc<Service>) {
    let mut reported: BTreeSet<u32> = BTreeSet::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let owned: BTreeSet<u32> = svc.owned.read().iter().copied().collect();
        let gauge = |p: &u32, lag: f64| metrics::gauge!("sequent_consumer_lag", "service" => svc.name.clone(), "partition" => p.to_string()).set(lag);
        for p in reported.difference(&owned) {
            gauge(p, 0.0);
        }
        reported = owned.clone();
        // A worker waiting on its pull with an empty hand has been given everything: 0 without
        // a consumer-info request (most partitions, most of the time).
        let waiting = svc.waiting.read().clone();
        let (idle, busy): (Vec<u32>, Vec<u32>) = owned.iter().partition(|p| waiting.contains(p));
        for p in &idle {
            gauge(p, 0.0);
        }
        if let (false, Ok(stream)) = (busy.is_empty(), svc.events_stream().await) {
            for p in &busy {
                match stream.consumer_info(subjects::consumer_name(&svc.name, *p)).await {
                    Ok(info) => gauge(p, (info.num_pending + info.num_ack_pending as u64) as f64),
                    Err(e) => tracing::debug!(partition = p, error = %e, "consumer info for the lag gauge failed"),
                }
            }
        }
        match partition::parked_keys(&svc, &svc.active_ns()).await {
            Ok(keys) => {
                let mine = keys.iter().filter(|k| owned.contains(&subjects::partition_of(k, svc.partitions))).count();
                metrics::gauge!("sequent_parked_keys", "service" => svc.name.clone()).set(mine as f64);
            }
            Err(e) => tracing::debug!(error = %e, "reading the parked keys for the gauge failed"),
        }
    }
}
