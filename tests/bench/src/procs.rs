//! Servers the benchmarks start, and their CPU time and peak memory read from /proc.

use anyhow::Context;
use serde::Serialize;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Default)]
pub struct Proc {
    pub name: String,
    pub url: String,
    /// A superclient's HTTP address per service it hosts (`http://addr`).
    pub urls: std::collections::HashMap<String, String>,
    /// How many services a superclient hosts (each logs "superclient ready").
    hosts: usize,
    /// A superclient's metrics listener (`http://addr`, its --metrics-listen).
    pub metrics: String,
    /// nats-server's monitoring URL, for message counts.
    pub monitor: Option<String>,
    /// None: this benchmark process itself (measured like the others).
    child: Option<Child>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Proc {
    /// A fresh nats-server with the repository's users, on a free port.
    pub async fn nats() -> anyhow::Result<Proc> {
        let port = free_port();
        let monitor_port = free_port();
        let dir = std::env::temp_dir().join(format!("sequent-bench-{port}"));
        std::fs::create_dir_all(&dir)?;
        // Includes are relative to the including file: the test users are copied.
        std::fs::copy("nats/test-users.conf", dir.join("test-users.conf")).context("copying nats/test-users.conf (run from the repository root)")?;
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor_port}\nmax_payload: 2MB\njetstream {{ store_dir: \"{}\" }}\ninclude \"test-users.conf\"\n",
                dir.join("js").display()
            ),
        )?;
        let log = std::fs::File::create(log_path("nats-server")?)?;
        let child = Command::new(find_bin("nats-server"))
            .args(["-c", conf.to_str().unwrap()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (is it on PATH?)")?;
        wait_port(port).await?;
        Ok(Proc {
            name: "nats-server".into(),
            url: format!("nats://127.0.0.1:{port}"),
            monitor: Some(format!("http://127.0.0.1:{monitor_port}")),
            child: Some(child),
            _dir: Some(TempDir(dir)),
            ..Default::default()
        })
    }

    /// A fresh redis-server (from PATH) on a free port, without persistence.
    pub async fn redis() -> anyhow::Result<Proc> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sequent-bench-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(find_bin("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (is it on PATH? apt-get install redis-server)")?;
        wait_port(port).await?;
        Ok(Proc { name: "redis-server".into(), url: format!("redis://127.0.0.1:{port}/"), child: Some(child), _dir: Some(TempDir(dir)), ..Default::default() })
    }

    /// This benchmark process (its client side: readers, HTTP clients), measured like the others.
    pub fn this(name: &str) -> Proc {
        Proc { name: name.into(), ..Default::default() }
    }

    /// A superclient running `scripts` (several: cohosted in one process), its log in
    /// target/bench-logs/NAME.log; [`Proc::ready`] waits until it is ready.
    pub async fn superclient(bin: &Path, name: &str, scripts: &[String], extra: &[String], env: &[(&str, &str)]) -> anyhow::Result<Proc> {
        let log = log_path(name)?;
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(scripts)
            .args(["--instance", name])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", log_filter("warn,superclient=info"))
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release -p superclient)", bin.display()))?;
        Ok(Proc { name: name.into(), hosts: scripts.len(), child: Some(child), ..Default::default() })
    }

    /// Waits until this superclient logged "superclient ready" for each service it hosts (or
    /// fails with its log's end); its `urls` are then their HTTP addresses.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let log = log_path(&self.name)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.matches("superclient ready").count() >= self.hosts.max(1) {
                for line in text.lines().filter(|l| l.contains("http listening on ")) {
                    let field = |name: &str| line.split(&format!(" {name}=")).nth(1).and_then(|r| r.split_whitespace().next()).map(|v| v.trim_matches('"').to_string());
                    if let (Some(service), Some(addr)) = (field("service"), field("addr")) {
                        self.urls.insert(service, format!("http://{addr}"));
                        if self.url.is_empty() {
                            self.url = format!("http://{addr}");
                        }
                    }
                }
                if let Some(addr) = text.lines().find_map(|l| l.split("metrics listening on ").nth(1)).and_then(|r| r.split_whitespace().next()) {
                    self.metrics = format!("http://{addr}");
                }
                return Ok(());
            }
            let exited = self.child.as_mut().map(|c| c.try_wait()).transpose()?.flatten();
            if exited.is_some() || Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                anyhow::bail!("{} was not ready ({exited:?}); the end of {}:\n{}", self.name, log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn gateway(bin: &Path, nats_url: &str, policy: Option<&Path>) -> anyhow::Result<Proc> {
        let port = free_port();
        let mut cmd = Command::new(bin);
        if let Some(policy) = policy {
            cmd.env("SEQUENT_POLICY", policy);
        }
        let log = std::fs::File::create(log_path("bus-gateway")?)?;
        let child = cmd
            .env("NATS_URL", nats_url)
            .env("SEQUENT_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", log_filter("warn"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release -p bus-gateway)", bin.display()))?;
        wait_port(port).await?;
        Ok(Proc { name: "bus-gateway".into(), url: format!("http://127.0.0.1:{port}"), child: Some(child), ..Default::default() })
    }

    fn pid(&self) -> Option<u32> {
        match &self.child {
            Some(c) => c.id(),
            None => Some(std::process::id()),
        }
    }
}

/// A server binary: the project's venv first (./sequent.sh installs nats-server there), then PATH.
pub fn find_bin(name: &str) -> std::path::PathBuf {
    let venv = Path::new(".sequent/venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        name.into()
    }
}

/// The children's log filter: `default`, or SEQUENT_BENCH_LOG when set (e.g.
/// `warn,superclient=info,superclient::delivery=debug,bus_gateway=debug` to see a stall's cause).
fn log_filter(default: &str) -> String {
    std::env::var("SEQUENT_BENCH_LOG").unwrap_or_else(|_| default.to_string())
}

pub fn log_path(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = Path::new("target/bench-logs");
    std::fs::create_dir_all(dir)?;
    Ok(dir.join(format!("{name}.log")))
}

/// Runs a command to its end and returns its standard output, its exit status, and its CPU
/// time and peak memory from wait4(2) (a child that has exited has no /proc entry to read).
pub async fn run_measured(name: &str, mut cmd: std::process::Command) -> anyhow::Result<(String, Usage)> {
    use std::io::Read;
    let log = log_path(name)?;
    cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&log)?);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        child.stdout.take().expect("piped").read_to_string(&mut out)?;
        let (mut status, mut ru) = (0i32, unsafe { std::mem::zeroed::<libc::rusage>() });
        // SAFETY: waits for our own child; status and ru are valid out-pointers.
        let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
        anyhow::ensure!(pid > 0, "wait4 failed: {}", std::io::Error::last_os_error());
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let usage = Usage { name: name.clone(), cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime), peak_mib: ru.ru_maxrss as f64 / 1024.0 };
        anyhow::ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{name} failed (status {status}); its log: {}", log.display());
        Ok((out, usage))
    })
    .await?
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listened on port {port} within 30 s (see target/bench-logs/)");
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
