//! The dev stack's child processes and servers: starting them in process groups of their own,
//! finding their binaries, waiting until they listen or say they are ready, stopping them.

use anyhow::{bail, Context};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}


pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

pub fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub fn find_binary(name: &str, hint: &str) -> anyhow::Result<PathBuf> {
    let venv = Path::new(".sequent/venv/bin").join(name);
    if venv.exists() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} is not running and not on PATH: {hint}"))
}

/// The child gets a process group of its own, and SIGTERM should this process die (see `spawn`).
pub fn own_group(command: &mut Command) {
    command.process_group(0);
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts a child in a process group of its own: signals meant for this process (a Ctrl-C in
/// the terminal, a SIGTERM to its process group) do not reach it; this process stops it in
/// order. Should this process die without stopping it, the child gets SIGTERM
/// (PR_SET_PDEATHSIG; children are spawned from the main thread, which lives as long as the
/// process).
pub fn spawn(bin: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let mut command = Command::new(bin);
    own_group(&mut command);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}


pub async fn wait_for(addr: SocketAddr, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(addr) {
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} did not start listening on {addr} within 20 s; the end of {}:\n{}", log.display(), log_end(&text));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until a superclient logged that it is ready (or exited, or took too long).
pub async fn wait_ready(name: &str, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("superclient ready") {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited ({status}) before it was ready; the end of {}:\n{}", log.display(), log_end(&text));
        }
        if Instant::now() > deadline {
            bail!("{name} was not ready within 120 s; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last 15 lines of a process's log, without backtrace frames (with `RUST_BACKTRACE` set, an
/// error's frames would push its message out of view).
fn log_end(text: &str) -> String {
    let frame = |l: &str| {
        let t = l.trim_start();
        t.starts_with("at ") || t == "Stack backtrace:" || t.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let tail: Vec<&str> = text.lines().filter(|l| !frame(l)).rev().take(15).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The first port from `*next` on that is free now; `*next` moves past it.
pub fn next_free(next: &mut u16) -> u16 {
    while !free(*next) {
        *next += 1;
    }
    *next += 1;
    *next - 1
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_log_end_leaves_out_backtrace_frames() {
        let log = "starting\nError: the gateway refused the registration\n\nStack backtrace:\n   0: anyhow::msg\n             at ./src/procs.rs:104:13\n  12: main\n";
        assert_eq!(super::log_end(log), "starting\nError: the gateway refused the registration\n");
    }
}
