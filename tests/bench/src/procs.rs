//! Servers the benchmarks start, and their CPU time and peak memory read from /proc.

use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Proc {
    pub name: String,
    pub url: String,
    child: Child,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Proc {
    /// A fresh nats-server with the repository's users, on a free port.
    pub async fn nats() -> anyhow::Result<Proc> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sequent-bench-{port}"));
        std::fs::create_dir_all(&dir)?;
        let accounts = std::fs::canonicalize("nats/accounts.conf").context("run from the repository root (nats/accounts.conf)")?;
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 2MB\njetstream {{ store_dir: \"{}\" }}\ninclude \"{}\"\n",
                dir.join("js").display(),
                accounts.display()
            ),
        )?;
        let child = Command::new("nats-server")
            .args(["-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (is it on PATH?)")?;
        wait_port(port).await?;
        Ok(Proc { name: "nats-server".into(), url: format!("nats://127.0.0.1:{port}"), child, _dir: Some(TempDir(dir)) })
    }

    pub async fn gateway(bin: &Path, nats_url: &str) -> anyhow::Result<Proc> {
        let port = free_port();
        let child = Command::new(bin)
            .env("NATS_URL", nats_url)
            .env("SEQUENT_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release -p bus-gateway)", bin.display()))?;
        wait_port(port).await?;
        Ok(Proc { name: "bus-gateway".into(), url: format!("http://127.0.0.1:{port}"), child, _dir: None })
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listened on port {port} within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// CPU seconds used by a process during a run, and its peak resident memory.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub name: String,
    pub cpu_s: f64,
    pub peak_mib: f64,
}

impl Usage {
    pub fn sample(procs: &[&Proc]) -> Vec<Usage> {
        procs.iter().map(|p| Usage { name: p.name.clone(), cpu_s: cpu_seconds(p.pid()), peak_mib: peak_mib(p.pid()) }).collect()
    }

    pub fn since(before: &[Usage], procs: &[&Proc]) -> Vec<Usage> {
        Usage::sample(procs)
            .into_iter()
            .zip(before)
            .map(|(now, then)| Usage { cpu_s: now.cpu_s - then.cpu_s, ..now })
            .collect()
    }
}

fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok()) else { return 0.0 };
    // Fields after the command name (which may hold spaces): utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_mib(pid: Option<u32>) -> f64 {
    let Some(status) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok()) else { return 0.0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
