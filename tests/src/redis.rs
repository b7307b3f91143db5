//! Redis for tests: a fresh server (docker or process), or a private database of the shared
//! server named in `REDIS_URL`.

use crate::{backend, docker, find_server, Backend, Child, TempDir};
use anyhow::Context;
use std::time::Duration;

/// Databases 1..=15 of a shared server are handed out; 0 keeps the leases.
const SHARED_DBS: std::ops::RangeInclusive<u32> = 1..=15;
/// A lease outlives any sane test, and frees itself if the test process died.
const LEASE_SECONDS: u64 = 1800;

/// A Redis for one test, stopped (or its shared database released) when dropped.
pub struct RedisServer {
    /// `redis://127.0.0.1:<port>` or, with `REDIS_URL`, `<REDIS_URL>/<db>`.
    pub url: String,
    _handle: Handle,
}

#[allow(clippy::large_enum_variant)] // one per test: size does not matter
enum Handle {
    // The fields are only held: dropping them stops the server or frees the database.
    Docker(#[allow(dead_code)] docker::Container),
    Process { child: Child, port: String, dir: TempDir },
    Shared(#[allow(dead_code)] Lease),
}

impl RedisServer {
    /// A multiplexed async connection to this test's database.
    pub async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url.as_str()).with_context(|| format!("bad Redis URL {}", self.url))?;
        client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to {}", self.url))
    }
}

/// A fresh Redis; with `REDIS_URL` set, an empty database of that server that no other test
/// (in this or another process) uses at the same time.
pub async fn redis() -> anyhow::Result<RedisServer> {
    if let Ok(base) = std::env::var("REDIS_URL") {
        return shared(&base).await;
    }
    match backend()? {
        Backend::Docker => {
            let container = docker::redis().await?;
            Ok(RedisServer { url: format!("redis://127.0.0.1:{}", container.port), _handle: Handle::Docker(container) })
        }
        Backend::Process => {
            // Redis cannot pick its own port, so a port chosen in advance may be taken by the
            // time it binds: then it exits, and another port is tried.
            let mut last_error = None;
            for _ in 0..5 {
                let dir = TempDir::new("redis")?;
                let port = crate::free_port().to_string();
                let data = dir.path().to_string_lossy().to_string();
                let mut child = spawn_process(&port, &data)?;
                match child.wait_for_line("Ready to accept connections", Duration::from_secs(30)).await {
                    Ok(_) => {
                        let url = format!("redis://127.0.0.1:{port}");
                        return Ok(RedisServer { url, _handle: Handle::Process { child, port, dir } });
                    }
                    Err(e) if child.output().iter().any(|l| l.contains("Address already in use")) => last_error = Some(e),
                    Err(e) => return Err(e),
                }
            }
            Err(last_error.expect("tried at least once")).context("no free port for redis-server after 5 tries")
        }
    }
}

/// redis-server without persistence: a restart comes back empty.
fn spawn_process(port: &str, dir: &str) -> anyhow::Result<Child> {
    let args = ["--port", port, "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
    Child::spawn("redis", find_server("redis-server")?, &args, &[])
}

impl RedisServer {
    /// Loses every key under the clients' feet, and says how. A process is killed with SIGKILL
    /// and started again on its port, without persistence: it comes back empty and every
    /// connection breaks. A container would come back on another host port, so there (and on a
    /// shared `REDIS_URL` server) the data is flushed instead and the clients' connections are
    /// closed (only this database's keys on a shared server).
    pub async fn lose_everything(&mut self) -> anyhow::Result<&'static str> {
        match &mut self._handle {
            Handle::Process { child, port, dir } => {
                child.kill9().await?;
                let mut restarted = spawn_process(port, &dir.path().to_string_lossy())?;
                restarted.wait_for_line("Ready to accept connections", Duration::from_secs(30)).await?;
                *child = restarted;
                Ok("redis-server killed with SIGKILL and restarted empty")
            }
            Handle::Docker(_) => {
                let mut con = self.connection().await?;
                redis::cmd("FLUSHALL").query_async::<()>(&mut con).await?;
                redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").arg("SKIPME").arg("yes").query_async::<()>(&mut con).await?;
                Ok("FLUSHALL and every client connection closed")
            }
            Handle::Shared(_) => {
                redis::cmd("FLUSHDB").query_async::<()>(&mut self.connection().await?).await?;
                Ok("FLUSHDB of the leased database")
            }
        }
    }
}

/// A database of a shared server, leased through a key in its database 0.
struct Lease {
    base: String,
    key: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Drop cannot await: a short blocking connection is fine at the end of a test.
        if let Ok(mut con) = redis::Client::open(self.base.as_str()).and_then(|c| c.get_connection()) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&self.key).query(&mut con);
        }
    }
}

async fn shared(base: &str) -> anyhow::Result<RedisServer> {
    let base = strip_db(base);
    let client = redis::Client::open(format!("{base}/0")).with_context(|| format!("bad REDIS_URL {base}"))?;
    let mut con = client.get_multiplexed_async_connection().await.with_context(|| format!("connecting to REDIS_URL {base}"))?;
    let owner = format!("pid {} at {:?}", std::process::id(), std::time::SystemTime::now());
    // Poll for a free database: when 15 tests hold one, wait for one of them to finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (db, key) = loop {
        if let Some(leased) = try_lease(&mut con, &owner).await? {
            break leased;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no free database on REDIS_URL {base} within 120 s: 15 tests already hold one"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let lease = Lease { base: format!("{base}/0"), key };
    let url = format!("{base}/{db}");
    let server = RedisServer { url, _handle: Handle::Shared(lease) };
    // Whatever a previous test left behind goes.
    redis::cmd("FLUSHDB").query_async::<()>(&mut server.connection().await?).await.context("flushing the leased database")?;
    Ok(server)
}

/// Takes the first free database of 1..=15: the lease key is set only if absent.
async fn try_lease(con: &mut redis::aio::MultiplexedConnection, owner: &str) -> anyhow::Result<Option<(u32, String)>> {
    for db in SHARED_DBS {
        let key = format!("sequent-tests:lease:db{db}");
        let set: Option<String> = redis::cmd("SET").arg(&key).arg(owner).arg("NX").arg("EX").arg(LEASE_SECONDS).query_async(con).await?;
        if set.is_some() {
            return Ok(Some((db, key)));
        }
    }
    Ok(None)
}

/// `redis://host:port/3` → `redis://host:port`.
fn strip_db(url: &str) -> String {
    let url = url.trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _db)) => format!("{scheme}://{authority}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_the_database() {
        assert_eq!(super::strip_db("redis://127.0.0.1:6379/3"), "redis://127.0.0.1:6379");
        assert_eq!(super::strip_db("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379");
        assert_eq!(super::strip_db("redis://:pw@h:1"), "redis://:pw@h:1");
    }
}
