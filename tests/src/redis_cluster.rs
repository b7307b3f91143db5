//! A three-master Redis Cluster on loopback, as plain redis-server processes (whatever the
//! backend), without persistence. The slots are split in three ranges as
//! `redis-cli --cluster create` would split them, and the nodes are introduced with CLUSTER
//! MEET; ready once every node says `cluster_state:ok`.

use crate::{find_server, free_port, wait_until, Child, TempDir};
use anyhow::Context;
use std::time::Duration;

pub struct RedisCluster {
    /// `redis+cluster://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c`: what the superclient takes.
    pub url: String,
    /// Each master's own `redis://` URL, in slot order (the first holds slots 0-5460).
    pub nodes: Vec<String>,
    _children: Vec<Child>,
    _dir: TempDir,
}

const SLOTS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

pub async fn redis_cluster() -> anyhow::Result<RedisCluster> {
    let dir = TempDir::new("redis-cluster")?;
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..SLOTS.len() {
        let (child, port) = spawn_node(&dir, i).await?;
        children.push(child);
        ports.push(port);
    }
    let nodes: Vec<String> = ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    for (node, (first, last)) in nodes.iter().zip(SLOTS) {
        let mut con = connect(node).await?;
        redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last).query_async::<()>(&mut con).await.context("CLUSTER ADDSLOTSRANGE")?;
    }
    let mut first = connect(&nodes[0]).await?;
    for port in &ports[1..] {
        redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(port).query_async::<()>(&mut first).await.context("CLUSTER MEET")?;
    }
    for node in &nodes {
        let con = connect(node).await?;
        wait_until(&format!("{node} says cluster_state:ok"), Duration::from_secs(30), || {
            let mut con = con.clone();
            async move {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut con).await.unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            }
        })
        .await?;
    }
    let url = format!("redis+cluster://{}", ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(","));
    Ok(RedisCluster { url, nodes, _children: children, _dir: dir })
}

impl RedisCluster {
    /// Every key of master `i` (a test cluster is small: KEYS is fine).
    pub async fn keys_of(&self, i: usize) -> anyhow::Result<Vec<String>> {
        Ok(redis::cmd("KEYS").arg("*").query_async(&mut connect(&self.nodes[i]).await?).await?)
    }
}

async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to {url}"))
}

/// A port chosen in advance may be taken by the time Redis binds it: then another is tried.
async fn spawn_node(dir: &TempDir, i: usize) -> anyhow::Result<(Child, u16)> {
    let mut last_error = None;
    for attempt in 0..5 {
        let port = free_port();
        let node_dir = dir.path().join(format!("node-{i}-{attempt}"));
        std::fs::create_dir_all(&node_dir)?;
        let node_dir = node_dir.to_string_lossy().to_string();
        let port_text = port.to_string();
        let args = [
            "--port", &port_text, "--bind", "127.0.0.1", "--dir", &node_dir, "--save", "", "--appendonly", "no",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
        ];
        let mut child = Child::spawn(&format!("redis-cluster-{i}"), find_server("redis-server")?, &args, &[])?;
        match child.wait_for_line("Ready to accept connections", Duration::from_secs(30)).await {
            Ok(_) => return Ok((child, port)),
            Err(e) if child.output().iter().any(|l| l.contains("Address already in use")) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.expect("tried at least once")).context("no free port for a cluster node after 5 tries")
}
