//! Rebuilds operators ask for (`admin.rebuild`, the explorer's button): every running instance
//! of a service that has events to rebuild looks for a request of its service; the one that
//! takes it (`state::rebuilds::claim`) runs the rebuild and reports its progress to Redis until
//! it ends, where `admin.rebuild_status` reads it.

use super::rebuild;
use crate::runtime::Service;
use crate::state::rebuilds;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);
/// How often a running rebuild reports (well within `rebuilds::STALE_MS`).
const REPORT: Duration = Duration::from_millis(250);

pub async fn take_requests(svc: Arc<Service>) {
    if svc.spec.types().is_empty() {
        return;
    }
    loop {
        tokio::time::sleep(POLL).await;
        match rebuilds::claim(&svc.store, &svc.name, &svc.instance).await {
            Ok(true) => run(&svc).await,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cannot read the rebuild requests"),
        }
    }
}

async fn run(svc: &Service) {
    tracing::info!(service = svc.name, "rebuild requested by an operator: starting");
    let counters = svc.rebuild_progress.clone();
    let progress = |c: &[std::sync::atomic::AtomicU64; 2]| (c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed));
    counters[0].store(0, Ordering::Relaxed);
    counters[1].store(0, Ordering::Relaxed);
    let rebuilding = rebuild::rebuild(svc, "requested by an operator");
    tokio::pin!(rebuilding);
    let mut tick = tokio::time::interval(REPORT);
    let outcome = loop {
        tokio::select! {
            outcome = &mut rebuilding => break outcome,
            _ = tick.tick() => {
                let (done, expected) = progress(&counters);
                if let Err(e) = rebuilds::report(&svc.store, &svc.name, done, expected, &[]).await {
                    tracing::debug!(error = %e, "cannot report the rebuild's progress");
                }
            }
        }
    };
    let (done, expected) = progress(&counters);
    let end = match outcome {
        Ok(ns) => vec![("status", "done".to_string()), ("namespace", ns), ("finished_at", rebuilds::now_rfc3339())],
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "the requested rebuild failed; the state is unchanged");
            vec![("status", "failed".to_string()), ("error", format!("{e:#}")), ("finished_at", rebuilds::now_rfc3339())]
        }
    };
    // The end must reach Redis, or the request would look alive until it goes stale.
    for attempt in 1..=20 {
        match rebuilds::report(&svc.store, &svc.name, done, expected.max(done), &end).await {
            Ok(()) => break,
            Err(e) if attempt == 20 => tracing::error!(error = %e, "could not record the end of the rebuild"),
            Err(_) => tokio::time::sleep(REPORT).await,
        }
    }
}
