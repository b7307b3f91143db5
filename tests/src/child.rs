//! A child process for tests: killed when dropped, its output kept (and echoed to the test's
//! stderr with a prefix, which the test runner shows only when the test fails) so that a test
//! waits for a line instead of sleeping.

use anyhow::{bail, Context};
use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

pub struct Child {
    name: String,
    pid: u32,
    process: tokio::process::Child,
    lines: Lines,
    /// Reader tasks still running (stdout, stderr): output is complete once both ended.
    open_streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl Child {
    /// Starts `program` with `args` and extra environment variables `env`. `name` prefixes its
    /// echoed output and names it in errors. Stdin is closed.
    pub fn spawn(name: &str, program: impl AsRef<OsStr>, args: &[&str], env: &[(String, String)]) -> anyhow::Result<Child> {
        let program = program.as_ref();
        // The harness's servers use the test users of nats/test-users.conf: the processes run in
        // development mode unless a test says otherwise (`SEQUENT_DEV=0`).
        let mut process = tokio::process::Command::new(program)
            .args(args)
            .env("SEQUENT_DEV", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.to_string_lossy()))?;
        let pid = process.id().expect("a process that was just spawned has a pid");
        let lines = Lines::new();
        let open_streams = Arc::new(std::sync::atomic::AtomicUsize::new(2));
        let stdout: Box<dyn AsyncRead + Send + Unpin> = Box::new(process.stdout.take().expect("piped"));
        let stderr: Box<dyn AsyncRead + Send + Unpin> = Box::new(process.stderr.take().expect("piped"));
        for reader in [stdout, stderr] {
            let (lines, open, name) = (lines.clone(), open_streams.clone(), name.to_string());
            tokio::spawn(async move {
                let mut reader = BufReader::new(reader).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("[{name}] {line}");
                    lines.push(line);
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                lines.poke();
            });
        }
        Ok(Child { name: name.to_string(), pid, process, lines, open_streams })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (still valid after the process exited, but then refers to nothing).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every line the process printed so far, stdout and stderr interleaved as read.
    pub fn output(&self) -> Vec<String> {
        self.lines.all()
    }

    /// Waits until the process has printed a line containing `needle` (at any time since it
    /// started) and returns that line. Fails early, with the end of its output, if the process
    /// exits first; fails after `timeout` otherwise.
    pub async fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.lines.subscribe();
        loop {
            if let Some(line) = self.lines.find(needle) {
                return Ok(line);
            }
            tokio::select! {
                _ = changed.changed() => {}
                status = self.process.wait() => {
                    let status = status.context("waiting for the process")?;
                    // Read what the process wrote before exiting, then look one last time.
                    self.drain(Duration::from_secs(2)).await;
                    if let Some(line) = self.lines.find(needle) {
                        return Ok(line);
                    }
                    bail!("{} exited ({status}) without printing {needle:?}; last lines:\n{}", self.name, self.lines.tail(20));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("{} did not print {needle:?} within {timeout:?}; last lines:\n{}", self.name, self.lines.tail(20));
                }
            }
        }
    }

    /// Waits (at most `limit`) until both output streams are read to their end.
    async fn drain(&self, limit: Duration) {
        let mut changed = self.lines.subscribe();
        let _ = tokio::time::timeout(limit, async {
            while self.open_streams.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Waits for the process to exit on its own.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self.process.wait().await.with_context(|| format!("waiting for {}", self.name))?;
        self.drain(Duration::from_secs(2)).await;
        Ok(status)
    }

    /// SIGKILL (no chance to clean up), and wait until the process is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.process.start_kill().ok(); // fails only when it already exited: fine
        self.process.wait().await.with_context(|| format!("waiting for {} to die", self.name))?;
        Ok(())
    }

    /// SIGSTOP: the process hangs, its sockets stay open (a frozen, not a crashed, peer).
    /// Returns once the kernel shows it stopped (a signal is delivered asynchronously: on a
    /// loaded machine the process could otherwise still answer a moment after the call).
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGSTOP)?;
        let stat = format!("/proc/{}/stat", self.pid());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            // The state is the first field after the command name's closing parenthesis.
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            if text.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 't'))) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        anyhow::bail!("{} did not stop within 5 s of SIGSTOP", self.name)
    }

    /// SIGCONT after [`Child::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// SIGTERM to the process group the child leads (started under `setsid`, as a service
    /// manager's `kill -TERM -- -PGID` does), then waits at most `within` for it to exit.
    pub async fn terminate_group(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let group = self.pid() as libc::pid_t;
        // SAFETY: kill(2) has no memory-safety preconditions; the group is the child's own.
        if unsafe { libc::kill(-group, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("SIGTERM to the process group of {} (does it lead one?)", self.name));
        }
        tokio::time::timeout(within, self.wait()).await.with_context(|| format!("{} did not stop within {within:?} of SIGTERM", self.name))?
    }

    /// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: libc::c_int) -> anyhow::Result<()> {
        // `id()` is None once tokio has reaped the process; until then the pid is still ours
        // (at worst a zombie), so the signal cannot hit an unrelated process.
        let pid = self.process.id().with_context(|| format!("{} has exited", self.name))?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("sending signal {sig} to {} (pid {pid})", self.name));
        }
        Ok(())
    }
}

/// The lines a child printed, shared between its reader tasks and waiters.
#[derive(Clone)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Lines {
    fn new() -> Lines {
        Lines { lines: Arc::default(), changed: Arc::new(watch::channel(0).0) }
    }

    fn push(&self, line: String) {
        self.lines.lock().expect("not poisoned").push(line);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Wakes waiters without a new line (a stream ended).
    fn poke(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn find(&self, needle: &str) -> Option<String> {
        self.lines.lock().expect("not poisoned").iter().find(|l| l.contains(needle)).cloned()
    }

    fn all(&self) -> Vec<String> {
        self.lines.lock().expect("not poisoned").clone()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().expect("not poisoned");
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
