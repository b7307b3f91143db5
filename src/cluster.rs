//! `--cluster`: three nats-servers on this machine (nats/cluster/n1..3.conf, with the auth
//! callout of nats/callout.conf), so that the gateways keep the stream in three replicas (R3)
//! and the bank goes on when one node dies.

use crate::procs::{answers, spawn, wait_for};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::process::Child;

pub const NODES: u16 = 3;

/// Client address of each node: node n<i> listens on the first node's port + i - 1.
pub fn client_addrs(first_port: u16) -> Vec<SocketAddr> {
    (0..NODES).map(|i| SocketAddr::from(([127, 0, 0, 1], first_port + i))).collect()
}

/// What clients' `NATS_URL` takes: every node, comma separated.
pub fn url(first_port: u16) -> String {
    client_addrs(first_port).iter().map(|a| format!("nats://{a}")).collect::<Vec<_>>().join(",")
}

/// Starts the three nodes (client ports from `client_port`, route ports from `route_port`, data
/// under `data_dir/cluster/n<i>`), unless the first one answers already, and waits until each
/// listens. Returns the started processes.
pub async fn start(bin: &Path, client_port: u16, route_port: u16, data_dir: &Path, env: &[(String, String)], logs: &Path) -> anyhow::Result<Vec<Child>> {
    let addrs = client_addrs(client_port);
    if answers(addrs[0]) {
        println!("using the NATS cluster already running on {} (it must run nats/cluster/n*.conf with the secrets of {})", url(client_port), data_dir.join("secrets").display());
        return Ok(Vec::new());
    }
    let routes = (0..NODES).map(|i| format!("nats-route://127.0.0.1:{}", route_port + i)).collect::<Vec<_>>().join(",");
    let mut nodes = Vec::new();
    // All three before waiting: a node alone never elects a JetStream leader.
    for i in 0..NODES {
        let n = i + 1;
        let store: PathBuf = data_dir.join("cluster").join(format!("n{n}"));
        std::fs::create_dir_all(&store)?;
        let (config, port, store) = (format!("nats/cluster/n{n}.conf"), (client_port + i).to_string(), store.to_string_lossy().to_string());
        let cluster = format!("nats://127.0.0.1:{}", route_port + i);
        let mut args = vec!["-c", &config, "-p", &port, "-sd", &store, "--cluster", &cluster, "--routes", &routes];
        if client_port != 4222 {
            // Another stack (a test's) may hold the configs' monitoring ports.
            args.extend(["-m", "0"]);
        }
        nodes.push(spawn(bin, &args, env, &logs.join(format!("nats-n{n}.log")))?);
    }
    for (i, addr) in addrs.iter().enumerate() {
        wait_for(*addr, &format!("nats-server n{}", i + 1), &logs.join(format!("nats-n{}.log", i + 1))).await?;
    }
    Ok(nodes)
}

/// Waits until JetStream answers through the gateways' connection: a cluster elects its
/// metadata leader a few seconds after the nodes meet, and the gateways need it to create the
/// stream.
pub async fn wait_jetstream(gateway: &bus_gateway::Config) -> anyhow::Result<()> {
    let client = bus_gateway::connect(gateway).await?;
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match js.query_account().await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => anyhow::bail!("the NATS cluster elected no JetStream leader within 60 s: {e}; see the nats-n*.log files"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}
