//! The instruction and time accounting of one Lua state (see `engine` for how calls are
//! bounded), and the state's memory limit, which the API functions that build large values in
//! Rust look at.

use super::Limits;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Instruction and time accounting of one state, reset before each call.
pub(crate) struct Budget {
    pub(crate) used: AtomicU64,
    pub(crate) limit: u64,
    pub(crate) timeout: Duration,
    pub(crate) exceeded: AtomicBool,
    /// What ran out: [`WHY_INSTRUCTIONS`] or [`WHY_TIME`].
    pub(crate) why: AtomicU8,
    pub(crate) hits: AtomicU64,
    pub(crate) epoch: Instant,
    /// Running time of the call's finished polls, in nanoseconds.
    pub(crate) spent: AtomicU64,
    /// When the running poll began (nanoseconds since `epoch`, plus one); 0 while none runs.
    pub(crate) running_since: AtomicU64,
    /// When the running slice began (nanoseconds since `epoch`): the poll's start or the last
    /// yield to the runtime.
    pub(crate) slice_start: AtomicU64,
    /// The call's own Lua thread (its pointer): the only one the hook yields to the runtime.
    pub(crate) main_thread: AtomicUsize,
    /// Set when the hook yielded to let other tasks run.
    pub(crate) yielded: AtomicBool,
}

pub(crate) const HOOK_EVERY: u32 = 10_000;
/// How long a call runs before it lets other tasks of its worker thread run.
pub(crate) const SLICE: Duration = Duration::from_millis(10);
pub(crate) const WHY_INSTRUCTIONS: u8 = 1;
pub(crate) const WHY_TIME: u8 = 2;

/// The memory limit of a state, for the API functions that build large values in Rust.
#[derive(Clone, Copy)]
pub(crate) struct MemoryLimit(pub(crate) usize);

impl Budget {
    pub(crate) fn new(limits: Limits) -> Budget {
        Budget {
            used: AtomicU64::new(0),
            limit: limits.instructions,
            timeout: limits.timeout,
            exceeded: AtomicBool::new(false),
            why: AtomicU8::new(0),
            hits: AtomicU64::new(0),
            epoch: Instant::now(),
            spent: AtomicU64::new(0),
            running_since: AtomicU64::new(0),
            slice_start: AtomicU64::new(0),
            main_thread: AtomicUsize::new(0),
            yielded: AtomicBool::new(false),
        }
    }

    pub(crate) fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        self.why.store(0, Ordering::Relaxed);
        self.hits.store(0, Ordering::Relaxed);
        self.spent.store(0, Ordering::Relaxed);
        self.running_since.store(0, Ordering::Relaxed);
        self.main_thread.store(0, Ordering::Relaxed);
        self.yielded.store(false, Ordering::Relaxed);
    }

    /// A whole instruction count again within the same call (a rebuild batch gives each event
    /// one, as if it were a call of its own); the call's running time keeps counting.
    pub(crate) fn fresh_instructions(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.hits.store(0, Ordering::Relaxed);
    }

    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Starts the clock; returns the start for [`Budget::stop_running`].
    pub(crate) fn start_running(&self) -> u64 {
        let now = self.now();
        self.running_since.store(now + 1, Ordering::Relaxed);
        self.slice_start.store(now, Ordering::Relaxed);
        now
    }

    pub(crate) fn stop_running(&self, started: u64) {
        self.spent.fetch_add(self.now().saturating_sub(started), Ordering::Relaxed);
        self.running_since.store(0, Ordering::Relaxed);
    }

    /// How long the call has run so far.
    pub(crate) fn running_time(&self) -> Duration {
        let since = self.running_since.load(Ordering::Relaxed);
        let running = if since == 0 { 0 } else { self.now().saturating_sub(since - 1) };
        Duration::from_nanos(self.spent.load(Ordering::Relaxed) + running)
    }

    pub(crate) fn slice_over(&self) -> bool {
        self.running_since.load(Ordering::Relaxed) != 0
            && self.now().saturating_sub(self.slice_start.load(Ordering::Relaxed)) > SLICE.as_nanos() as u64
    }

    pub(crate) fn exceed(&self, why: u8) {
        let _ = self.why.compare_exchange(0, why, Ordering::Relaxed, Ordering::Relaxed);
        self.exceeded.store(true, Ordering::Relaxed);
    }

    /// Charges `n` steps of work done outside the Lua VM (a pattern match, ...) as
    /// instructions, and looks at the clock: an error once the call is over its budget, which
    /// then stays spent (pcall cannot swallow it).
    pub(crate) fn charge(&self, n: u64) -> Result<(), String> {
        let used = self.used.fetch_add(n, Ordering::Relaxed) + n;
        if !self.exceeded.load(Ordering::Relaxed) {
            if used > self.limit {
                self.exceed(WHY_INSTRUCTIONS);
            } else if self.running_time() > self.timeout {
                self.exceed(WHY_TIME);
            }
        }
        if self.exceeded.load(Ordering::Relaxed) {
            return Err(self.message());
        }
        Ok(())
    }

    /// Why the call was stopped, in words.
    pub(crate) fn message(&self) -> String {
        match self.why.load(Ordering::Relaxed) {
            WHY_TIME => format!(
                "the call ran longer than {:?} (--lua-timeout) and was stopped (an endless loop, or too much work for one call?); waits for Redis, HTTP or bus:wait do not count",
                self.timeout
            ),
            _ => format!(
                "the call ran more than {} Lua instructions and was stopped (an endless loop?); raise --lua-instructions if the work is legitimate",
                self.limit
            ),
        }
    }
}

/// Runs `f`, which builds values of a bounded size in `lua` from Rust (a batch's handler
/// arguments), with the state's memory limit lifted: under a limit mlua makes every string push
/// and table set a protected call (a fifth of a rebuild's CPU), without one they are plain
/// stores. What `f` allocates still counts against the limit once it is back.
pub(crate) fn unlimited<R>(lua: &mlua::Lua, f: impl FnOnce() -> R) -> R {
    let limit = lua.app_data_ref::<MemoryLimit>().map(|l| l.0);
    if limit.is_some() {
        let _ = lua.set_memory_limit(0);
    }
    let out = f();
    if let Some(limit) = limit {
        let _ = lua.set_memory_limit(limit);
    }
    out
}
