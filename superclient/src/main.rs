//! superclient: runs one Sequent service written in Lua. See `superclient --help`.

mod cli;
mod delivery;
mod directory;
mod gateway;
mod http;
mod lua;
mod membership;
mod notify;
mod parking;
mod rebuild;
mod runtime;
mod sockets;
mod state;
mod statics;

use anyhow::Context as _;
use clap::Parser;
use cli::{Cli, Command, Conn, ParkedAction, RunOpts};
use lua::{Limits, Pool, Shared};
use runtime::Service;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Run { run, .. } | Command::Rebuild { run, .. }) => run.log_format.clone(),
        _ => cli.run.log_format.clone(),
    };
    init_tracing(&log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            None => {
                let script = cli.script.context("give the service's Lua script: superclient SCRIPT.lua (see --help)")?;
                run(&script, cli.conn, cli.run).await
            }
            Some(Command::Run { script, conn, run: opts }) => run(&script, conn, opts).await,
            Some(Command::Rebuild { script, conn, run: opts }) => rebuild_command(&script, conn, opts).await,
            Some(Command::Parked { action: ParkedAction::List { service, redis } }) => parking::cli_list(&service, &redis).await,
            Some(Command::Parked { action: ParkedAction::Release { service, key, redis, wait } }) => {
                parking::cli_release(&service, key.as_deref(), &redis, wait).await
            }
            Some(Command::Dump { service, redis }) => {
                let store = state::Store::connect(&redis.redis_url, &service).await?;
                let ns = store.active().await?.with_context(|| format!("service {service:?} has no state in Redis"))?;
                println!("{}", serde_json::to_string_pretty(&store.dump(&ns).await?)?);
                Ok(())
            }
        }
    })
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Loads the script, connects to Redis and NATS, provisions the consumers: everything both
/// `run` and `rebuild` need.
async fn start(script: &Path, conn: &Conn, opts: &RunOpts) -> anyhow::Result<Arc<Service>> {
    let source = std::fs::read_to_string(script).with_context(|| format!("reading the script {}", script.display()))?;
    let instance = membership::sanitize_instance(&opts.instance.clone().unwrap_or_else(membership::default_instance));
    let shared = Arc::new(Shared::new(
        instance.clone(),
        script,
        lua::Secrets::from_env(opts.listen.ip().is_loopback())?,
        opts.admin_api,
        opts.member_timeout,
    ));
    let limits = Limits { memory_bytes: opts.lua_memory_mb.max(1) * 1024 * 1024, instructions: opts.lua_instructions.max(1_000) };
    let (pool, spec) = Pool::new(source.clone(), shared.clone(), limits, opts.lua_states)?;
    let serves = !spec.routes.is_empty() || !spec.websockets.is_empty();
    let (route_pool, _) = Pool::new(source.clone(), shared.clone(), limits, if serves { opts.lua_route_states } else { 1 })?;
    let (live_pool, _) = Pool::new(source, shared.clone(), limits, 1)?;
    let _ = shared.service.set(spec.service.clone());
    tracing::info!(service = spec.service, instance, types = ?spec.types(), routes = spec.routes.len(), receipts = ?spec.receipts, "script loaded");

    let store = state::Store::connect(&conn.redis.redis_url, &spec.service).await?;
    let _ = shared.redis.set(store.clone());

    // Credentials in the URL are taken out of it (async-nats logs server URLs at debug level).
    let (servers, in_url) = bus_gateway::nats_servers(&conn.nats_url)?;
    let user = in_url.as_ref().map(|(u, _)| u.clone()).or_else(|| conn.nats_user.clone()).unwrap_or_else(|| spec.service.clone());
    let password = in_url.map(|(_, p)| p).or_else(|| conn.nats_password.clone()).unwrap_or_else(|| format!("{user}-dev"));
    let mut options = async_nats::ConnectOptions::with_user_and_password(user.clone(), password)
        .name(format!("superclient {}/{instance}", spec.service))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(|event| async move { tracing::info!(%event, "NATS connection event") });
    if let Some(ca) = &conn.nats_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options
        // Several servers (a cluster) may be given, comma separated, like the gateway's.
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {} as {user}", bus_gateway::redact_url(&conn.nats_url)))?;
    Service::wait_connected(&client).await;
    let _ = shared.gateway.set(gateway::Gateway::new(client.clone(), &spec.service, &instance));

    let (stream_name, partitions) = if spec.types().is_empty() {
        ("EVENTS".to_string(), 0)
    } else {
        let reply = delivery::provision(&client, &spec.service, spec.types(), opts.ack_wait, opts.pin_timeout).await?;
        tracing::info!(stream = reply.stream, partitions = reply.partitions, "consumers provisioned");
        (reply.stream, reply.partitions)
    };
    let _ = shared.js.set((async_nats::jetstream::new(client.clone()), stream_name.clone()));
    Ok(Arc::new(Service::new(spec, instance, (pool, route_pool, live_pool), shared, store, client, stream_name, partitions, opts.clone())))
}

async fn run(script: &Path, conn: Conn, opts: RunOpts) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0])
        .expect("static buckets")
        .install_recorder()
        .context("installing the metrics recorder")?;
    let svc = start(script, &conn, &opts).await?;
    let ns = rebuild::ensure_namespace(&svc).await?;
    tracing::info!(ns, "state namespace ready");
    tokio::spawn(rebuild::watch(svc.clone()));

    // Routes are served only now: the script is loaded and its state exists.
    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tls = opts.http.tls(), "http listening on {addr}");
    let app = http::router(svc.clone(), metrics);
    let http_opts = opts.http.clone();
    let http_task = tokio::spawn(async move { bus_gateway::serve::serve(listener, app, &http_opts, std::future::pending()).await });
    if !svc.spec.routes.is_empty() || !svc.spec.websockets.is_empty() {
        tokio::spawn(notify::listen(conn.redis.redis_url.clone(), svc.name.clone(), svc.shared.commits.clone()));
    }
    if !svc.spec.live.is_empty() {
        tokio::spawn(sockets::live_feed(svc.clone()));
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    // Every instance heartbeats (operators see it, `http.call` finds it); only services that
    // consume events share partitions.
    let (live_tx, live_rx) = tokio::sync::watch::channel(Vec::new());
    tokio::spawn(membership::run(svc.clone(), live_tx, addr.to_string()));
    let delivery_task = if svc.partitions > 0 { Some(tokio::spawn(delivery::run(svc.clone(), live_rx, shutdown_rx))) } else { None };
    tracing::info!(service = svc.name, instance = svc.instance, %addr, "superclient ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = http_task => { r??; }
    }
    tracing::info!("stopping: finishing the events in hand and handing the partitions over");
    membership::leave(&svc).await;
    let _ = shutdown_tx.send(true);
    if let Some(task) = delivery_task {
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
    Ok(())
}

async fn rebuild_command(script: &Path, conn: Conn, opts: RunOpts) -> anyhow::Result<()> {
    let svc = start(script, &conn, &opts).await?;
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
