//! bus-gateway: the stateless front door of the event store. Any number of instances may run;
//! services reach them over NATS request/reply (a queue group), HTTP clients over REST.

mod answers;
pub mod auth;
mod callout;
pub mod config;
mod floors;
mod http;
mod indexer;
mod jsapi;
mod live;
mod nats_api;
mod openapi;
mod provision;
mod repartition;
pub mod registry;
pub mod store;
mod tails;

use anyhow::Context as _;
use sequent_net::{nats_servers, redact_url};
use auth::{Policy, Tokens};
pub use config::Config;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sequent_protocol::wire::parse_append;
use sequent_protocol::{AppendReply, ErrorCode, Limits, Producer, Receipt};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Store;

pub struct App {
    pub config: Config,
    pub client: async_nats::Client,
    pub store: Store,
    pub tokens: Tokens,
    pub policy: Policy,
    /// The registered principals, when the gateway answers the auth callout (`--callout-seed`):
    /// then it is the append policy and the source of HTTP tokens.
    pub registry: Option<registry::Registry>,
    pub limits: Limits,
    pub metrics: PrometheusHandle,
    /// Set when the gateway is stopping: `/ready` answers 503, no new work is taken.
    pub stopping: AtomicBool,
}

impl App {
    /// Whether principals connect through this deployment's auth callout (and the registry).
    pub fn callout_enabled(&self) -> bool {
        self.registry.is_some()
    }

    /// Who a bearer token is: an operator's API token (`--api-tokens`), or a registered
    /// principal's `<name>:<secret>` (a service writes, as itself; a reader reads). With a
    /// registry the API is never open.
    pub fn caller(&self, token: Option<&str>, need: auth::Role) -> Result<auth::Caller, auth::Denied> {
        if let Some(registry) = &self.registry {
            if let Some((name, secret)) = token.and_then(|t| t.split_once(':')) {
                if let Some(p) = registry.get(name).filter(|p| p.accepts(secret)) {
                    let service = p.kind == sequent_auth::Kind::Service;
                    let role = if service { auth::Role::Write } else { auth::Role::Read };
                    if role < need {
                        return Err(auth::Denied::Forbidden(format!("{name:?} is a reader and may only read")));
                    }
                    return Ok(auth::Caller { name: name.to_string(), role, service });
                }
            }
            if self.tokens.is_open() {
                return Err(auth::Denied::Unauthenticated);
            }
        }
        self.tokens.check(token, need)
    }

    /// May `service` append `event_type`? The registry says when there is one, else the
    /// `--policy` file.
    fn may_append(&self, service: &str, event_type: &str) -> Result<(), String> {
        match &self.registry {
            Some(registry) => registry.may_append(service, event_type),
            None => self.policy.check(service, event_type),
        }
    }

    /// Parses, authorizes and stores one append request. `service` is set for appends from a
    /// service over NATS; its declared types are checked against the policy.
    pub async fn append(&self, body: &[u8], producer: Producer, service: Option<&str>) -> AppendReply {
        let started = Instant::now();
        let reply = match parse_append(body, &self.limits) {
            Err(reply) => reply,
            Ok(request) => {
                let refused: Vec<String> = match service {
                    Some(service) => request
                        .events
                        .iter()
                        .enumerate()
                        .filter_map(|(i, e)| self.may_append(service, &e.event_type).err().map(|r| format!("events[{i}]: {r}")))
                        .collect(),
                    None => Vec::new(),
                };
                if !refused.is_empty() {
                    let reason = refused.join("; ");
                    AppendReply::error(ErrorCode::Forbidden, reason)
                } else {
                    let producer = Producer { instance: request.instance.or(producer.instance), ..producer };
                    self.store.append(request.events, producer).await
                }
            }
        };
        record_append_metrics(&reply, started, service.unwrap_or("http"));
        reply
    }

    /// The events of one unit of work, as JSON objects in stream order. Waits (briefly) for the
    /// correlation index to cover everything stored when the query arrived.
    pub async fn correlation_events(&self, correlation: &str) -> Result<Vec<String>, store::StoreError> {
        let upto = self.store.last_seq().await?;
        self.store.wait_indexed(upto, std::time::Duration::from_secs(3)).await;
        let filter = sequent_protocol::subjects::correlation_index_subject(correlation);
        let (entries, _) = self.store.scan(&self.store.index, vec![filter], 1, usize::MAX).await?;
        let mut seqs: Vec<u64> =
            entries.iter().filter_map(|m| std::str::from_utf8(&m.payload).ok()?.parse().ok()).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(event) = self.store.get(seq).await? {
                out.push(serde_json::to_string(&event).expect("events serialise"));
            }
        }
        Ok(out)
    }
}

/// The gateway's OpenAPI document (what `/v1/openapi.json` serves), as JSON text.
pub fn openapi_json() -> String {
    http::api().1.to_pretty_json().expect("the OpenAPI document serialises")
}

/// Per service (the NATS subject's service, or `http` for the REST API): what the appends
/// came to, how long they took, and how many events conflicted.
fn record_append_metrics(reply: &AppendReply, started: Instant, service: &str) {
    let outcome = match (&reply.error, reply.receipts.first()) {
        (Some(_), _) => "error",
        (None, _) if reply.all_stored() => "stored",
        (None, _) if reply.receipts.iter().any(|r| matches!(r, Receipt::Conflict { .. })) => "conflict",
        _ => "invalid",
    };
    let service = service.to_string();
    metrics::counter!("sequent_appends_total", "service" => service.clone(), "outcome" => outcome).increment(1);
    let events = reply.receipts.iter().filter(|r| r.is_stored()).count() as u64;
    metrics::counter!("sequent_events_stored_total", "service" => service.clone()).increment(events);
    let conflicts = reply.receipts.iter().filter(|r| matches!(r, Receipt::Conflict { .. })).count() as u64;
    metrics::counter!("sequent_append_conflicts_total", "service" => service.clone()).increment(conflicts);
    metrics::histogram!("sequent_append_seconds", "service" => service).record(started.elapsed().as_secs_f64());
}

fn install_metrics() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        .expect("static buckets are valid")
        .build_recorder();
    let handle = recorder.handle();
    // A second gateway in the same process (tests) keeps the first recorder.
    if metrics::set_global_recorder(recorder).is_ok() {
        // Histogram samples pile up between scrapes; upkeep folds them into the buckets.
        let upkeep = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                upkeep.run_upkeep();
            }
        });
    }
    handle
}

/// Connects to NATS, sets up the streams, and serves until SIGTERM or SIGINT; then stops
/// gracefully (see [`run_until`]).
pub async fn run(config: Config) -> anyhow::Result<()> {
    run_until(config, sequent_net::serve::stop_signal()).await
}

/// Like [`run`], until `stop` completes. Then, within `--shutdown-timeout`: `/ready` answers
/// 503; the NATS subscriptions (appends, provisioning) are drained, so the queue group hands new
/// requests to the other gateways, and every request received is finished and answered (a
/// JetStream publish in flight gets its answer to the caller); the HTTP server stops accepting
/// and answers the requests in flight; the answers are flushed to NATS; then it returns.
pub async fn run_until(config: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    if let Some(from) = &config.repartition_from {
        return repartition::run(connect(&config).await?, &config, from).await;
    }
    let tokens = Tokens::parse(&config.api_tokens)?;
    let policy = Policy::load(config.policy.as_deref())?;
    // Without tokens and without the registry (--callout-seed) nothing would check the callers:
    // only development mode serves such an API, and only on loopback.
    if tokens.is_open() && config.callout_seed.is_none() {
        let why = if !sequent_net::dev_mode() {
            Some("outside development mode (SEQUENT_DEV=1)")
        } else if !config.listen.ip().is_loopback() {
            Some("on an address other than loopback")
        } else {
            None
        };
        if let Some(why) = why {
            anyhow::bail!(
                "refusing to serve an open HTTP API on {} {why}: set SEQUENT_API_TOKENS (name:token:role,...), or --callout-seed \
                 (SEQUENT_CALLOUT_SEED) so that the registry's principals authenticate",
                config.listen
            );
        }
        tracing::warn!("no API tokens configured: the HTTP API on {} is open to local clients (development mode)", config.listen);
    }
    let client = connect(&config).await?;
    let store = Store::open(client.clone(), &config).await.context("setting up the event streams")?;
    let callout = match &config.callout_seed {
        None => None,
        Some(seed) => Some(Arc::new(callout::Callout::from_config(seed, &config).await?)),
    };
    let registry = match callout {
        None => None,
        Some(_) => Some(registry::Registry::open(&async_nats::jetstream::new(client.clone()), config.replicas).await?),
    };
    let limits = Limits { max_data_bytes: config.max_data_bytes, max_batch: config.max_batch };
    let app = Arc::new(App {
        config: config.clone(),
        client: client.clone(),
        store,
        tokens,
        policy,
        registry,
        limits,
        metrics: install_metrics(),
        stopping: AtomicBool::new(false),
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(config.http.metrics_listen)
        .await
        .with_context(|| format!("listening on {} (--metrics-listen)", config.http.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    tracing::info!(%metrics_addr, "metrics listening on {metrics_addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut nats = tokio::spawn(nats_api::serve(app.clone(), stop_rx.clone()));
    let mut index = tokio::spawn(indexer::run(app.clone(), stop_rx.clone()));
    let mut provisioning = tokio::spawn(provision::serve(app.clone(), stop_rx.clone()));
    let mut tailing = tokio::spawn(tails::serve(app.clone(), stop_rx.clone()));
    // Answering the callout goes on while the gateway drains: other principals' connections
    // keep being admitted until it has gone.
    let answering = callout.map(|c| tokio::spawn(callout::serve(app.clone(), c)));
    let http_opts = config.http.clone();
    let router = http::router(app.clone());
    let mut http = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { sequent_net::serve::serve(listener, router, &http_opts, stop).await }
    });
    let metrics_opts = sequent_net::serve::HttpOpts { tls_cert: None, tls_key: None, ..config.http.clone() };
    let metrics_router = http::metrics_router(app.clone());
    let metrics_http = tokio::spawn({
        let stop = stopped(stop_rx.clone());
        async move { sequent_net::serve::serve(metrics_listener, metrics_router, &metrics_opts, stop).await }
    });
    tracing::info!(listen = %config.listen, stream = config.stream, tls = config.http.tls(), %metrics_addr, "bus-gateway ready");
    tokio::select! {
        () = stop => {}
        r = &mut http => return ended("the HTTP server", r),
        r = &mut nats => return ended("the NATS API", r),
        r = &mut index => return ended("the correlation indexer", r),
        r = &mut provisioning => return ended("consumer provisioning", r),
        r = &mut tailing => return ended("tails", r),
    }

    let started = Instant::now();
    tracing::info!(timeout = ?config.http.shutdown_timeout, "bus-gateway stopping: draining the NATS subscriptions and the HTTP server");
    app.stopping.store(true, Ordering::SeqCst);
    let _ = stop_tx.send(true);
    // Each part keeps to --shutdown-timeout itself; the margin covers what it does after.
    let bound = config.http.shutdown_timeout + Duration::from_secs(2);
    let drained = tokio::time::timeout(bound, async {
        let (h, n, p, t, i) = tokio::join!(http, nats, provisioning, tailing, index);
        let flat = |r: Result<anyhow::Result<()>, tokio::task::JoinError>| r.map_err(anyhow::Error::from).and_then(|r| r);
        for (what, r) in [("HTTP server", flat(h)), ("NATS appends", flat(n)), ("provisioning", flat(p)), ("tails", flat(t)), ("the correlation indexer", flat(i))] {
            if let Err(e) = r {
                tracing::warn!(error = format!("{e:#}"), "{what} did not stop cleanly");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("bus-gateway: work still in hand after --shutdown-timeout; exiting anyway");
    }
    if let Some(a) = answering {
        a.abort();
    }
    // The answers are published: make sure they left before the connection goes.
    if tokio::time::timeout(Duration::from_secs(2), client.flush()).await.map_or(true, |r| r.is_err()) {
        tracing::warn!("flushing the NATS connection failed: the last answers may not have reached their callers");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), metrics_http).await;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "bus-gateway stopped");
    Ok(())
}

/// A task of the gateway ended before it was asked to stop: its error, or that it ended.
fn ended(what: &str, r: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    r.with_context(|| format!("{what} task"))?.with_context(|| what.to_string())?;
    anyhow::bail!("{what} stopped unexpectedly")
}

pub async fn connect(config: &Config) -> anyhow::Result<async_nats::Client> {
    let (servers, in_url) = nats_servers(&config.nats_url)?;
    let (user, password) = match in_url {
        Some(credentials) => credentials,
        None => {
            let password = match (&config.nats_password, sequent_net::dev_mode()) {
                (Some(p), _) => p.clone(),
                (None, true) => "gateway-dev".to_string(),
                (None, false) => anyhow::bail!(
                    "SEQUENT_GATEWAY_NATS_PASSWORD (--nats-password) is not set: the gateway's NATS password is required \
                     (SEQUENT_DEV=1 uses the test users' gateway-dev)"
                ),
            };
            (config.nats_user.clone(), password)
        }
    };
    let mut options = async_nats::ConnectOptions::with_user_and_password(user.clone(), password)
        .name("bus-gateway")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move { tracing::info!(%event, "NATS connection event") });
    if let Some(ca) = &config.nats_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let url = redact_url(&config.nats_url);
    let client = options
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {url} as {user} (is nats-server running? are the credentials right?)"))?;
    // retry_on_initial_connect returns at once; wait for the first connection so errors surface.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() > deadline {
            anyhow::bail!("could not connect to NATS at {url} within 30 s: is nats-server running there?");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(client)
}

#[cfg(test)]
mod openapi_tests {
    /// The document describes every route of the router (they are registered together) as
    /// OpenAPI 3.1, and every error answer as a problem.
    #[test]
    fn the_document_is_openapi_3_1_with_problems_for_errors() {
        let doc: serde_json::Value = serde_json::from_str(&super::openapi_json()).unwrap();
        if std::env::var_os("PRINT_OPENAPI").is_some() {
            println!("{}", super::openapi_json());
        }
        assert_eq!(doc["openapi"], "3.1.0");
        let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
        for p in ["/v1/events", "/v1/keys/{key}", "/v1/keys/{key}/events", "/v1/correlations/{id}/events", "/v1/live", "/health", "/ready"] {
            assert!(paths.contains(&p), "{p} in {paths:?}");
        }
        // Metrics have a listener of their own (--metrics-listen), not on the API.
        assert!(!paths.contains(&"/metrics"), "{paths:?}");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let content = response["content"].as_object().unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
                        assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{method} {path} {status}");
                    }
                }
            }
        }
    }
}
