//! The workspace binaries the stack runs (superclient, bus-gateway), found next to this one.
//! Under `cargo run` they are built first, all in one `cargo build --workspace --bins`: the
//! same build `./sequent.sh test` makes, with the same dependency features (see
//! protocol/workspace-hack), so neither the demo nor the tests compile anything twice.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::Instant;

/// Builds every binary of the workspace (when run by cargo and `build`), saying what it does
/// and how long it took: a first build compiles every dependency and takes minutes.
pub fn build(build: bool) -> anyhow::Result<()> {
    let Some(cargo) = std::env::var_os("CARGO").filter(|_| build) else {
        return Ok(());
    };
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--workspace", "--bins"]);
    // What `cargo run` tells its binary about the package: some build scripts (ring's) track
    // these, and would be rebuilt every time the environment flips.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_") || k.starts_with("CARGO_CRATE_") || k.starts_with("CARGO_BIN_") || k == "CARGO_PRIMARY_PACKAGE" {
            command.env_remove(k);
        }
    }
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    println!("building the workspace's binaries (cargo build --workspace --bins: superclient, bus-gateway, sequent-bench)...");
    println!("  the first build compiles every dependency (minutes on a small machine; the tests reuse it); later ones take seconds");
    let started = Instant::now();
    let status = command.status().context("running cargo build --workspace --bins")?;
    if !status.success() {
        bail!("cargo build --workspace --bins failed");
    }
    println!("built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Workspace binary `name`, next to this binary (same profile).
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let path = exe.parent().context("the binary has a directory")?.join(name);
    if !path.is_file() {
        bail!("{} does not exist: build it with `cargo build --workspace --bins` (same profile as this binary)", path.display());
    }
    Ok(path)
}
