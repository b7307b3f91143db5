//! Fresh nats-servers for tests: one node (docker or process) or a 3-node cluster (processes).
//! Each runs the repository's `nats/test-users.conf` (the deployment's accounts, with a static
//! user per test principal holding the permissions the auth callout would give it: see
//! `sequent_auth::test_users`) under a generated server config.

use crate::{backend, connect, docker, find_server, Backend, Child, TempDir, ADMIN};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running nats-server with JetStream and the repository's users, stopped when dropped.
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`
    pub url: String,
    handle: Handle,
}

#[allow(clippy::large_enum_variant)] // a few per test: size does not matter
enum Handle {
    Docker(docker::Container),
    Process { child: Child, _dir: TempDir },
}

/// A fresh single-node nats-server (backend: see [`crate::backend`]).
pub async fn nats() -> anyhow::Result<NatsServer> {
    crate::development_mode();
    match backend()? {
        Backend::Docker => {
            let mut files = vec![users_config()?];
            files.push(("test-server.conf".into(), server_config("0.0.0.0:4222", "/data/jetstream", "").into_bytes()));
            let container = docker::nats(files, "test-server.conf").await?;
            Ok(NatsServer { url: format!("nats://127.0.0.1:{}", container.port), handle: Handle::Docker(container) })
        }
        Backend::Process => nats_process().await,
    }
}

/// A fresh single-node nats-server as a process whatever the backend: one that
/// [`NatsServer::restart`] can restart on its port with its data.
pub async fn nats_process() -> anyhow::Result<NatsServer> {
    let dir = TempDir::new("nats")?;
    write_configs(dir.path())?;
    // Port -1: the server picks a free port itself and logs it, so there is no race with other
    // tests over a port chosen in advance.
    let (child, address) = start_process(dir.path(), "127.0.0.1:-1").await?;
    Ok(NatsServer { url: format!("nats://{address}"), handle: Handle::Process { child, _dir: dir } })
}

/// Starts a nats-server process listening on `listen`, its store in `dir`; its address.
async fn start_process(dir: &Path, listen: &str) -> anyhow::Result<(Child, String)> {
    let store = dir.join("jetstream");
    let config = dir.join("test-server.conf");
    std::fs::write(&config, server_config(listen, &store.to_string_lossy(), ""))?;
    let mut child = spawn_server("nats", &config)?;
    let address = ready(&mut child).await?;
    Ok((child, address))
}

/// Waits until a nats-server process is ready; the address it listens on.
async fn ready(child: &mut Child) -> anyhow::Result<String> {
    let line = child.wait_for_line("Listening for client connections on", START_TIMEOUT).await?;
    let address = line.rsplit(' ').next().unwrap_or_default().to_string();
    child.wait_for_line("Server is ready", START_TIMEOUT).await?;
    Ok(address)
}

/// A fresh single-node nats-server (always a process) that requires TLS from its clients,
/// with this certificate and key (PEM files). Its `url` is `tls://127.0.0.1:<port>`.
pub async fn nats_with_tls(cert: &str, key: &str) -> anyhow::Result<NatsServer> {
    let dir = TempDir::new("nats-tls")?;
    write_configs(dir.path())?;
    let store = dir.path().join("jetstream");
    let config = dir.path().join("test-server.conf");
    let tls = format!("tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  timeout: 5\n}}\n");
    std::fs::write(&config, server_config("127.0.0.1:-1", &store.to_string_lossy(), &tls))?;
    let mut child = spawn_server("nats-tls", &config)?;
    let address = ready(&mut child).await?;
    Ok(NatsServer { url: format!("tls://{address}"), handle: Handle::Process { child, _dir: dir } })
}

/// A fresh single-node nats-server (always a process) configured as a deployment is
/// (`nats/callout.conf`): only admin, gateway and sys are users, with their development
/// passwords; every other connection is decided by the auth callout of a gateway started with
/// the account seed whose public key is `issuer` (`--callout-seed`).
pub async fn nats_with_callout(issuer: &str) -> anyhow::Result<NatsServer> {
    crate::development_mode();
    let dir = TempDir::new("nats-callout")?;
    let callout = crate::repo_root().join("nats").join(CALLOUT_FILE);
    std::fs::copy(&callout, dir.path().join(CALLOUT_FILE)).with_context(|| format!("copying {}", callout.display()))?;
    let store = dir.path().join("jetstream");
    let config = dir.path().join("test-server.conf");
    std::fs::write(&config, server_config_with("127.0.0.1:-1", &store.to_string_lossy(), "", CALLOUT_FILE))?;
    let env: Vec<(String, String)> = [
        ("SEQUENT_NATS_ADMIN_PASSWORD", ADMIN.1),
        ("SEQUENT_NATS_GATEWAY_PASSWORD", crate::GATEWAY.1),
        ("SEQUENT_NATS_SYS_PASSWORD", crate::SYS.1),
        ("SEQUENT_CALLOUT_ISSUER", issuer),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut child = Child::spawn("nats-callout", find_server("nats-server")?, &["-c", &config.to_string_lossy()], &env)?;
    let address = ready(&mut child).await?;
    Ok(NatsServer { url: format!("nats://{address}"), handle: Handle::Process { child, _dir: dir } })
}

impl NatsServer {
    pub async fn connect(&self, user: &str, password: &str) -> anyhow::Result<async_nats::Client> {
        connect(&self.url, user, password).await
    }

    /// Connected as `admin` (may do everything).
    pub async fn admin(&self) -> anyhow::Result<async_nats::Client> {
        self.connect(ADMIN.0, ADMIN.1).await
    }

    /// Connected as the user of service type `name` (`<name>` / `<name>-dev`).
    pub async fn service(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let (user, password) = crate::service(name);
        self.connect(&user, &password).await
    }

    pub fn backend(&self) -> Backend {
        match self.handle {
            Handle::Docker(_) => Backend::Docker,
            Handle::Process { .. } => Backend::Process,
        }
    }

    /// SIGKILL the server and wait until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        match &mut self.handle {
            Handle::Docker(c) => c.kill9().await,
            Handle::Process { child, .. } => child.kill9().await,
        }
    }

    /// SIGKILL the server, then start it again on the same port with the same data (a crash
    /// and restart: what it kept only in memory is gone). Servers from [`nats_process`] only.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let Handle::Process { child, _dir: dir } = &mut self.handle else { anyhow::bail!("only a process server restarts (nats_process)") };
        child.kill9().await?;
        let listen = self.url.trim_start_matches("nats://").to_string();
        let (started, _) = start_process(dir.path(), &listen).await?;
        *child = started;
        Ok(())
    }

    /// Freeze the server (SIGSTOP, or the cgroup freezer in docker): connections stay open
    /// but nothing answers.
    pub async fn pause(&self) -> anyhow::Result<()> {
        match &self.handle {
            Handle::Docker(c) => c.pause().await,
            Handle::Process { child, .. } => child.pause(),
        }
    }

    /// Undo [`NatsServer::pause`].
    pub async fn resume(&self) -> anyhow::Result<()> {
        match &self.handle {
            Handle::Docker(c) => c.resume().await,
            Handle::Process { child, .. } => child.resume(),
        }
    }
}

/// A 3-node JetStream cluster on 127.0.0.1, as processes whatever the backend (the nodes must
/// reach each other's route ports, which is simplest on the host). Nodes keep their ports and
/// data across [`NatsCluster::kill9`] and [`NatsCluster::restart`].
pub struct NatsCluster {
    /// Client URL of each node.
    pub urls: Vec<String>,
    nodes: Vec<Option<Child>>,
    dir: TempDir,
}

/// A fresh 3-node cluster, returned once JetStream answers through every node (a metadata
/// leader is elected).
pub async fn nats_cluster() -> anyhow::Result<NatsCluster> {
    let dir = TempDir::new("nats-cluster")?;
    write_configs(dir.path())?;
    // Routes must be known before any node starts, so these ports are picked in advance.
    let client_ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
    let route_ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
    let routes = route_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>().join(", ");
    for i in 0..3 {
        let store = dir.path().join(format!("n{}", i + 1));
        let cluster = format!(
            "server_name: n{n}\ncluster {{\n  name: sequent-test\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            n = i + 1,
            route = route_ports[i]
        );
        let config = server_config(&format!("127.0.0.1:{}", client_ports[i]), &store.to_string_lossy(), &cluster);
        std::fs::write(dir.path().join(format!("n{}.conf", i + 1)), config)?;
    }
    let mut cluster = NatsCluster {
        urls: client_ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect(),
        nodes: vec![None, None, None],
        dir,
    };
    // Start all three before waiting: a node alone never gets a JetStream quorum.
    for i in 0..3 {
        cluster.nodes[i] = Some(spawn_server(&format!("n{}", i + 1), &cluster.config(i))?);
    }
    for i in 0..3 {
        cluster.wait_ready(i).await?;
    }
    Ok(cluster)
}

impl NatsCluster {
    /// All client URLs, comma separated (what async-nats and the binaries' `NATS_URL` take).
    pub fn url(&self) -> String {
        self.urls.join(",")
    }

    pub async fn connect(&self, user: &str, password: &str) -> anyhow::Result<async_nats::Client> {
        connect(&self.url(), user, password).await
    }

    pub async fn admin(&self) -> anyhow::Result<async_nats::Client> {
        self.connect(ADMIN.0, ADMIN.1).await
    }

    /// SIGKILL node `i` (0, 1 or 2) and wait until it is gone.
    pub async fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        match self.nodes[i].as_mut() {
            Some(child) => child.kill9().await,
            None => Ok(()),
        }
    }

    /// Starts node `i` again (killing it first if it runs) with the same ports and data, and
    /// waits until JetStream answers through it.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i).await?;
        self.nodes[i] = None;
        self.nodes[i] = Some(spawn_server(&format!("n{}", i + 1), &self.config(i))?);
        self.wait_ready(i).await
    }

    /// SIGSTOP node `i`: it keeps its connections but stops answering.
    pub fn pause(&self, i: usize) -> anyhow::Result<()> {
        self.node(i)?.pause()
    }

    pub fn resume(&self, i: usize) -> anyhow::Result<()> {
        self.node(i)?.resume()
    }

    /// The process of node `i`, e.g. to wait for one of its log lines.
    pub fn node(&self, i: usize) -> anyhow::Result<&Child> {
        self.nodes[i].as_ref().with_context(|| format!("node n{} is not running", i + 1))
    }

    fn config(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("n{}.conf", i + 1))
    }

    async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let name = format!("n{}", i + 1);
        let child = self.nodes[i].as_mut().expect("started");
        child.wait_for_line("Server is ready", START_TIMEOUT).await?;
        // Ready to accept clients is not ready for JetStream: account info needs a metadata
        // leader, which the cluster elects a few seconds after the nodes meet.
        let admin = connect(&self.urls[i], ADMIN.0, ADMIN.1).await?;
        let js = async_nats::jetstream::new(admin);
        crate::wait_until(&format!("JetStream to answer through {name}"), START_TIMEOUT, || async {
            js.query_account().await.map(|_| ())
        })
        .await
    }
}

/// nats-server config: JetStream under `store_dir`, the test users, `extra` lines.
fn server_config(listen: &str, store_dir: &str, extra: &str) -> String {
    server_config_with(listen, store_dir, extra, USERS_FILE)
}

/// [`server_config`] with the users of `users_file` (in the same directory).
fn server_config_with(listen: &str, store_dir: &str, extra: &str, users_file: &str) -> String {
    format!(
        "# Generated by the sequent-tests harness.\n\
         listen: \"{listen}\"\n\
         max_payload: 2MB\n\
         jetstream {{\n  store_dir: \"{store_dir}\"\n}}\n\
         {extra}\
         include \"{users_file}\"\n"
    )
}

/// The test users, generated from the permissions rules (`sequent_auth::test_users`).
const USERS_FILE: &str = "test-users.conf";
/// A deployment's accounts and auth callout.
const CALLOUT_FILE: &str = "callout.conf";

fn users_config() -> anyhow::Result<(String, Vec<u8>)> {
    let path = crate::repo_root().join("nats").join(USERS_FILE);
    let content = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok((USERS_FILE.to_string(), content))
}

fn write_configs(dir: &Path) -> anyhow::Result<()> {
    let (name, content) = users_config()?;
    std::fs::write(dir.join(&name), content).with_context(|| format!("writing {name}"))
}

fn spawn_server(name: &str, config: &Path) -> anyhow::Result<Child> {
    Child::spawn(name, find_server("nats-server")?, &["-c", &config.to_string_lossy()], &[])
}
