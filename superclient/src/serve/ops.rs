//! What operators and orchestrators probe: `/health` (liveness: the process answers) and
//! `/ready` (readiness: NATS connected, Redis answering, an active state namespace, and, for a
//! service that consumes events, a member of its service with its partitions assigned) on the
//! service's own listener; `/metrics` (Prometheus text) on the process's metrics listener
//! (`--metrics-listen`), apart from the routes, which may be public.

use crate::runtime::Service;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sequent_protocol::Problem;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one readiness check (a Redis PING, a GET) may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub async fn health(State(svc): State<Arc<Service>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "service": svc.name,
        "instance": svc.instance,
        "namespace": svc.active_ns(),
        "partitions": *svc.owned.read(),
    }))
    .into_response()
}

/// What `/ready` found, check by check (the input of [`assess`]).
#[derive(Debug, Clone)]
pub struct Observed {
    pub stopping: bool,
    /// Ok, or why NATS is not usable.
    pub nats: Result<(), String>,
    /// Ok, or why Redis is not usable.
    pub redis: Result<(), String>,
    /// The active namespace in Redis (None: there is none), or why it could not be read.
    pub namespace: Result<Option<String>, String>,
    /// The service consumes events (it has partitions to own).
    pub consumes: bool,
    /// This instance is among the live members its partition assignment last saw.
    pub member: bool,
    pub owned: Vec<u32>,
}

/// Ready (the details) or not (the problem naming every failed check).
pub fn assess(o: &Observed) -> Result<Value, Problem> {
    let mut checks: BTreeMap<&str, Value> = BTreeMap::new();
    let mut failed: Vec<String> = Vec::new();
    let mut check = |name: &'static str, result: Result<Value, String>| match result {
        Ok(detail) => {
            checks.insert(name, json!({"ok": true, "detail": detail}));
        }
        Err(why) => {
            failed.push(format!("{name}: {why}"));
            checks.insert(name, json!({"ok": false, "detail": why}));
        }
    };
    check("stopping", if o.stopping { Err("the instance is stopping (SIGTERM/SIGINT): it finishes its work and hands its partitions over".into()) } else { Ok(json!(false)) });
    check("nats", o.nats.clone().map(|()| json!("connected")));
    check("redis", o.redis.clone().map(|()| json!("answering")));
    check(
        "state",
        match &o.namespace {
            Ok(Some(ns)) => Ok(json!({ "namespace": ns })),
            Ok(None) => Err("no active state namespace: Redis lost the state or it is being rebuilt from the stream".into()),
            Err(e) => Err(format!("the active namespace cannot be read: {e}")),
        },
    );
    check(
        "partitions",
        match (o.consumes, o.member) {
            (false, _) => Ok(json!("the service consumes no events")),
            (true, true) => Ok(json!({ "owned": o.owned })),
            (true, false) => Err("not yet a live member of the service: no partitions assigned yet".into()),
        },
    );
    if failed.is_empty() {
        Ok(json!({ "checks": checks }))
    } else {
        Err(Problem::new(503, sequent_protocol::problem::codes::NOT_READY, format!("not ready: {}", failed.join("; "))).with("checks", &checks))
    }
}

/// Looks at NATS, Redis and the state, each check bounded by [`CHECK_TIMEOUT`].
pub async fn observe(svc: &Service) -> Observed {
    let state = svc.client.connection_state();
    let nats = if state == async_nats::connection::State::Connected { Ok(()) } else { Err(format!("NATS is not connected ({state})")) };
    let mut con = svc.store.con.clone();
    let redis = match tokio::time::timeout(CHECK_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut con)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("Redis does not answer: {e}")),
        Err(_) => Err(format!("Redis did not answer a PING within {CHECK_TIMEOUT:?}")),
    };
    let namespace = if redis.is_ok() {
        match tokio::time::timeout(CHECK_TIMEOUT, svc.store.active()).await {
            Ok(Ok(ns)) => Ok(ns),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    } else {
        Err("Redis is not answering".to_string())
    };
    Observed {
        stopping: svc.stopping.load(Ordering::SeqCst),
        nats,
        redis,
        namespace,
        consumes: svc.partitions > 0,
        member: svc.live.read().contains(&svc.instance),
        owned: svc.owned.read().clone(),
    }
}

pub async fn ready(State(svc): State<Arc<Service>>) -> Response {
    let started = Instant::now();
    let observed = observe(&svc).await;
    let checked_in_ms = started.elapsed().as_millis() as u64;
    match assess(&observed) {
        Ok(mut details) => {
            details["status"] = json!("ready");
            details["service"] = json!(svc.name);
            details["instance"] = json!(svc.instance);
            details["namespace"] = json!(observed.namespace.ok().flatten());
            details["partitions"] = json!(observed.owned);
            details["checked_in_ms"] = json!(checked_in_ms);
            axum::Json(details).into_response()
        }
        Err(problem) => super::answers::problem(
            problem.with("service", &svc.name).with_instance(svc.instance.clone()).with("checked_in_ms", checked_in_ms),
        ),
    }
}

/// The process's metrics listener: `/metrics` of every service it runs (labelled `service`).
pub fn metrics_router(metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<PrometheusHandle>| async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response() }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Observed {
        Observed {
            stopping: false,
            nats: Ok(()),
            redis: Ok(()),
            namespace: Ok(Some("svc@3".into())),
            consumes: true,
            member: true,
            owned: vec![1, 4],
        }
    }

    fn failed(o: &Observed) -> Vec<String> {
        let p = assess(o).expect_err("not ready");
        assert_eq!((p.status, p.code.as_str()), (503, "not_ready"));
        let checks = p.extensions["checks"].as_object().unwrap();
        checks.iter().filter(|(_, c)| c["ok"] == false).map(|(name, _)| name.clone()).collect()
    }

    #[test]
    fn ready_when_every_check_passes() {
        let details = assess(&ok()).unwrap();
        assert_eq!(details["checks"]["partitions"]["detail"]["owned"], json!([1, 4]));
        // A service that consumes nothing needs no partitions.
        assert!(assess(&Observed { consumes: false, member: false, owned: vec![], ..ok() }).is_ok());
        // A live member that owns none (more instances than partitions) is ready.
        assert!(assess(&Observed { owned: vec![], ..ok() }).is_ok());
    }

    #[test]
    fn each_failure_is_named() {
        assert_eq!(failed(&Observed { stopping: true, ..ok() }), ["stopping"]);
        assert_eq!(failed(&Observed { nats: Err("NATS is not connected (disconnected)".into()), ..ok() }), ["nats"]);
        assert_eq!(failed(&Observed { redis: Err("timeout".into()), namespace: Err("Redis is not answering".into()), ..ok() }), ["redis", "state"]);
        assert_eq!(failed(&Observed { namespace: Ok(None), ..ok() }), ["state"]);
        assert_eq!(failed(&Observed { member: false, owned: vec![], ..ok() }), ["partitions"]);
        let p = assess(&Observed { namespace: Ok(None), ..ok() }).unwrap_err();
        assert!(p.detail.contains("no active state namespace"), "{}", p.detail);
    }
}
