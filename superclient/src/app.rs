//! The commands, wired: `run` (one instance of each script's service in this process),
//! `rebuild`, `dump`. Everything they use lives in the modules below this one.

use crate::cli::{Conn, RunOpts};
use crate::cohost::Cohosted;
use crate::consume::{lag, provision, rebuild, worker};
use crate::runtime::{Parts, Service};
use crate::script::{Limits, Pool, Secrets, Shared};
use crate::state::Store;
use crate::stream::{EventReader, Gateway};
use crate::{cluster, serve, state};
use anyhow::Context as _;
use sequent_net::DirectReader;
use sequent_protocol::subjects;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Loads the script, connects to Redis and NATS, provisions the consumers: everything both
/// `run` and `rebuild` need.
pub async fn start(script: &Path, conn: &Conn, opts: &RunOpts, cohosted: Arc<Cohosted>) -> anyhow::Result<Arc<Service>> {
    let source = std::fs::read_to_string(script).with_context(|| format!("reading the script {}", script.display()))?;
    let instance = cluster::membership::sanitize_instance(&opts.instance.clone().unwrap_or_else(cluster::membership::default_instance));
    let shared = Arc::new(Shared::new(
        instance.clone(),
        script,
        Secrets::from_env(sequent_net::dev_mode())?,
        opts.admin_api,
        opts.member_timeout,
        cohosted,
    ));
    let limits = Limits {
        memory_bytes: opts.lua_memory_mb.max(1) * 1024 * 1024,
        instructions: opts.lua_instructions.max(1_000),
        timeout: opts.lua_timeout.max(std::time::Duration::from_millis(10)),
    };
    let (pool, spec) = Pool::new(source.clone(), shared.clone(), limits, opts.lua_states)?;
    let serves = !spec.routes.is_empty() || !spec.websockets.is_empty();
    let (route_pool, _) = Pool::new(source.clone(), shared.clone(), limits, if serves { opts.lua_route_states } else { 1 })?;
    let (live_pool, _) = Pool::new(source, shared.clone(), limits, 1)?;
    let _ = shared.service.set(spec.service.clone());
    let internal_routes = spec.declaration.http == sequent_protocol::declaration::Exposure::Internal && !spec.routes.is_empty();
    if internal_routes && shared.service_token.is_none() && !sequent_net::dev_mode() {
        anyhow::bail!(
            "service {:?} serves internal routes but {} is not set (the deployment's secret that http.call sends and internal routes require); \
             SEQUENT_DEV=1 serves them without it",
            spec.service,
            sequent_protocol::declaration::SERVICE_TOKEN_VAR
        );
    }
    if spec.declaration.mints_tokens && std::env::var_os("SEQUENT_TOKEN_SECRET").is_none() && !sequent_net::dev_mode() {
        anyhow::bail!(
            "service {:?} mints tokens (bus:register(..., {{mints_tokens = true}})) but SEQUENT_TOKEN_SECRET is not set; \
             SEQUENT_DEV=1 uses the public development value",
            spec.service
        );
    }
    tracing::info!(service = spec.service, instance, types = ?spec.types(), routes = spec.routes.len(), receipts = ?spec.receipts, "script loaded");

    let store = Store::connect(&conn.redis.redis_url, &spec.service).await?;
    if let Some((old, new, n)) = state::migrate::migrate_legacy(&store).await.context("migrating the state to the hash-tagged key layout")? {
        tracing::info!(service = spec.service, old, new, keys = n, "migrated the state to the hash-tagged key layout");
    }

    // Credentials in the URL are taken out of it (async-nats logs server URLs at debug level).
    let (servers, in_url) = sequent_net::nats_servers(&conn.nats_url)?;
    let identity = conn.identity(&spec.service, in_url)?;
    let user = identity.user.clone();
    let inbox_prefix = identity.inbox_prefix();
    let refused_as = user.clone();
    let mut options = async_nats::ConnectOptions::with_user_and_password(user.clone(), identity.password)
        .name(format!("superclient {}/{instance}", spec.service))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let user = refused_as.clone();
            async move {
                let text = event.to_string();
                if text.to_lowercase().contains("authorization violation") || text.to_lowercase().contains("authentication") {
                    tracing::error!(%event, "NATS refused {user:?}: is the service registered (superclient register SCRIPT) and its credential current? Retrying");
                } else {
                    tracing::info!(%event, "NATS connection event");
                }
            }
        });
    options = options.custom_inbox_prefix(inbox_prefix);
    if let Some(ca) = &conn.nats_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        // Several servers (a cluster) may be given, comma separated, like the gateway's.
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {} as {user}", sequent_net::redact_url(&conn.nats_url)))?;
    Service::wait_connected(&client).await;
    let _ = shared.gateway.set(Gateway::new(client.clone(), &spec.service, &instance));

    let (stream_name, partitions) = if spec.types().is_empty() {
        ("EVENTS".to_string(), 0)
    } else {
        let reply = provision::provision(&client, &spec.service, spec.types(), &opts).await?;
        tracing::info!(stream = reply.stream, partitions = reply.partitions, "consumers provisioned");
        (reply.stream, reply.partitions)
    };
    let partitioned = spec.declaration.state == sequent_protocol::declaration::StateLayout::Partitioned;
    if partitioned && partitions == 0 {
        anyhow::bail!("service {:?} declares state = \"partitioned\" but handles no event types: its state has no partitions to spread over", spec.service);
    }
    let built = store.clone().detect_layout().await?.partitioned;
    if !partitioned && built.is_some() && store.active().await?.is_some() {
        anyhow::bail!(
            "the state of service {:?} was built partitioned (state = \"partitioned\"), which its script no longer declares; \
             delete its pointers (redis-cli DEL {} {}) so that it is rebuilt from the stream in one slot",
            spec.service,
            state::active_key(&spec.service),
            state::service_key(&spec.service, "partitioned")
        );
    }
    let store = store.with_partitions(partitioned.then_some(partitions));
    let _ = shared.redis.set(store.clone());
    if partitioned {
        // Its keys are laid out by partition: another partition count cannot take them over.
        if let Some(ns) = store.active().await? {
            let built: Option<u32> = redis::cmd("GET").arg(state::partitions_key(&ns)).query_async(&mut store.con.clone()).await?;
            if built.is_some_and(|b| b != partitions) {
                anyhow::bail!(
                    "the partitioned state {ns} was built for {} partitions, but the stream has {partitions}: a partitioned state cannot be repartitioned; \
                     delete its pointers (redis-cli DEL {}) so that it is rebuilt from the stream",
                    built.unwrap_or_default(),
                    state::active_key(&spec.service)
                );
            }
        }
    } else if partitions > 0 {
        let stream = partitioning(&client, &stream_name, partitions).await?;
        let (what, ns) = state::migrate::repartition(&store, stream).await.context("fitting the state's checkpoints to the stream's partitions")?;
        if what == "moved" {
            tracing::info!(ns, ?stream, "the stream is a copy with another partition count: checkpoints moved to the copy's end");
        }
    }
    let _ = shared.js.set((async_nats::jetstream::new(client.clone()), stream_name.clone()));
    let _ = shared.events.set(EventReader::new(client.clone(), &stream_name));
    let _ = shared.members.set(DirectReader::new(client.clone(), subjects::MEMBERS_STREAM));
    Ok(Arc::new(Service::new(Parts {
        principal: user,
        spec,
        instance,
        pools: (pool, route_pool, live_pool),
        shared,
        store,
        client,
        stream_name,
        partitions,
        opts: opts.clone(),
    })))
}

/// A service of this process, running.
struct Running {
    svc: Arc<Service>,
    delivery: Option<tokio::task::JoinHandle<()>>,
    membership: tokio::task::JoinHandle<()>,
    http: tokio::task::JoinHandle<()>,
}

/// `superclient SCRIPT...`: one instance of each script's service, until SIGTERM or SIGINT;
/// then it stops gracefully within `--shutdown-timeout`:
///
/// 1. `/ready` answers 503; the instance stops heartbeating and leaves the membership, so the
///    other instances take its partitions and `http.call` stops choosing it;
/// 2. at the same time, each partition worker finishes the batch in hand (handlers, sends,
///    commit, ack) and unpins its consumer, and the HTTP servers stop accepting connections and
///    answer the requests in flight (routes waiting in `bus:wait` included);
/// 3. then the process exits.
pub async fn run(scripts: &[PathBuf], conn: Conn, opts: RunOpts) -> anyhow::Result<()> {
    anyhow::ensure!(!scripts.is_empty(), "give the service's Lua script: superclient SCRIPT.lua (see --help)");
    anyhow::ensure!(
        scripts.len() == 1 || (conn.nats_user.is_none() && conn.nats_password.is_none()),
        "--nats-user/--nats-password name one service's NATS user: with several scripts each service connects as its own user"
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        .expect("static buckets")
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples pile up between scrapes; upkeep folds them into the buckets.
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    // One metrics listener for the process (every service it runs, labelled `service`).
    let metrics_listener = tokio::net::TcpListener::bind(opts.http.metrics_listen)
        .await
        .with_context(|| format!("listening on {} (--metrics-listen)", opts.http.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    tracing::info!(%metrics_addr, "metrics listening on {metrics_addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics_opts = sequent_net::serve::HttpOpts { tls_cert: None, tls_key: None, ..opts.http.clone() };
    let metrics_http = tokio::spawn({
        let (router, stop) = (serve::ops::metrics_router(metrics.clone()), stopped(stop_rx.clone()));
        async move { sequent_net::serve::serve(metrics_listener, router, &metrics_opts, stop).await }
    });

    let cohosted = Arc::new(Cohosted::default());
    let (http_done_tx, mut http_done) = tokio::sync::mpsc::channel::<anyhow::Result<()>>(scripts.len());
    let mut running = Vec::new();
    let mut side_tasks = Vec::new();
    for script in scripts {
        let svc = start(script, &conn, &opts, cohosted.clone()).await?;
        let ns = rebuild::ensure_namespace(&svc).await?;
        tracing::info!(service = svc.name, ns, "state namespace ready");
        side_tasks.push(tokio::spawn(rebuild::watch(svc.clone())));
        side_tasks.push(tokio::spawn(crate::consume::rebuild_requests::take_requests(svc.clone())));

        // Routes are served only now: the script is loaded and its state exists.
        let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listening on {}", opts.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(service = svc.name, %addr, tls = opts.http.tls(), "http listening on {addr}");
        let app = serve::router::router(svc.clone());
        cohosted.register(&svc.name, app.clone());
        let http_opts = opts.http.clone();
        let done = http_done_tx.clone();
        let stop = stopped(stop_rx.clone());
        let http = tokio::spawn(async move {
            let served = sequent_net::serve::serve(listener, app, &http_opts, stop).await;
            if served.is_err() {
                let _ = done.send(served).await;
            }
        });
        if !svc.spec.routes.is_empty() || !svc.spec.websockets.is_empty() {
            side_tasks.push(tokio::spawn(state::notify::listen(conn.redis.redis_url.clone(), svc.name.clone(), svc.shared.woken.clone())));
        }
        if !svc.spec.live.is_empty() {
            side_tasks.push(tokio::spawn(serve::sockets::live_feed(svc.clone())));
        }
        // Every instance heartbeats (operators see it, `http.call` finds it); only services that
        // consume events share partitions.
        let (live_tx, live_rx) = tokio::sync::watch::channel(Vec::new());
        let me = cluster::membership::Me { service: svc.name.clone(), instance: svc.instance.clone(), http: addr.to_string() };
        let members = svc.shared.members.get().expect("set by start").clone();
        let membership = tokio::spawn(cluster::membership::run(svc.js.clone(), members, me, opts.heartbeat, opts.member_timeout, live_tx, stop_rx.clone()));
        let delivery = (svc.partitions > 0).then(|| tokio::spawn(worker::run(svc.clone(), live_rx, stop_rx.clone())));
        if svc.partitions > 0 {
            side_tasks.push(tokio::spawn(lag::sample(svc.clone())));
        }
        tracing::info!(service = svc.name, instance = svc.instance, %addr, %metrics_addr, "superclient ready");
        running.push(Running { svc, delivery, membership, http });
    }

    tokio::select! {
        () = sequent_net::serve::stop_signal() => {}
        Some(r) = http_done.recv() => r?,
    }
    let bound = opts.http.shutdown_timeout;
    let started = std::time::Instant::now();
    tracing::info!(timeout = ?bound, "stopping: leaving the membership, finishing the events and requests in hand");
    for r in &running {
        r.svc.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let _ = stop_tx.send(true);
    // Each part keeps to --shutdown-timeout itself; the margin covers what it does after.
    let all = futures::future::join_all(running.into_iter().map(|r| async move {
        let _ = r.membership.await;
        if let Some(delivery) = r.delivery {
            let _ = delivery.await;
        }
        let _ = r.http.await;
    }));
    if tokio::time::timeout(bound + Duration::from_secs(2), all).await.is_err() {
        tracing::warn!("work still in hand after --shutdown-timeout {bound:?}; exiting anyway");
    }
    for task in side_tasks {
        task.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), metrics_http).await;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "superclient stopped");
    Ok(())
}

/// `superclient rebuild SCRIPT`.
pub async fn rebuild(script: &Path, conn: Conn, opts: RunOpts) -> anyhow::Result<()> {
    let svc = start(script, &conn, &opts, Arc::default()).await?;
    if svc.spec.types().is_empty() {
        anyhow::bail!("the script handles no event types: there is nothing to rebuild");
    }
    if let Some(ns) = svc.store.active().await? {
        svc.set_active(&ns);
    }
    let ns = rebuild::rebuild(&svc, "requested by `superclient rebuild`").await?;
    println!("rebuilt {} into {ns}", svc.name);
    Ok(())
}

/// `superclient dump SERVICE`.
pub async fn dump(service: &str, redis_url: &str) -> anyhow::Result<()> {
    let store = Store::connect(redis_url, service).await?.detect_layout().await?;
    let ns = store.active().await?.with_context(|| format!("service {service:?} has no state in Redis"))?;
    println!("{}", serde_json::to_string_pretty(&store.dump(&ns).await?)?);
    Ok(())
}

/// The stream's partitions, and what it is a copy of (`bus-gateway --repartition-from`).
async fn partitioning(client: &async_nats::Client, stream: &str, partitions: u32) -> anyhow::Result<state::migrate::Partitioning> {
    let info = async_nats::jetstream::new(client.clone()).get_stream(stream).await.with_context(|| format!("reading stream {stream}"))?;
    let meta = &info.cached_info().config.metadata;
    let number = |k: &str| meta.get(k).map(|v| v.parse::<u64>().with_context(|| format!("stream {stream}'s metadata {k}={v:?}"))).transpose();
    let copied = match (number(subjects::META_PARTITIONS_BEFORE)?, number(subjects::META_COPIED_TO)?) {
        (Some(before), Some(last)) if meta.contains_key(subjects::META_COPIED_FROM) => Some((u32::try_from(before)?, last)),
        _ => None,
    };
    Ok(state::migrate::Partitioning { partitions, copied })
}
