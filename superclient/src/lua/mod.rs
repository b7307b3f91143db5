//! The Lua runtime: sandboxed states that each load the service script, a small pool of them,
//! and calls bounded by an instruction budget and a memory limit.
//!
//! Every call (event handler, rebuild handler, receipt listener, HTTP route) runs with a
//! [`Call`]: the namespace it reads, the Redis writes it buffered, the events it sent. The Rust
//! side takes the `Call` back when the Lua function returns and commits it.

mod api;
mod crypto;
mod ext;

use crate::gateway::Gateway;
use crate::state::{Store, Writes};
use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, LuaOptions, StdLib, VmState};
use parking_lot::Mutex;
use sequent_protocol::NewEvent;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

pub use crypto::Secrets;
pub use api::{json_to_lua, lua_to_json, note_receipt, note_version as note_version_of, receipt_table};
pub use ext::{HubOp, StaticSpec};

/// What the runtime gives the API functions of every state.
pub struct Shared {
    pub service: OnceLock<String>,
    pub redis: OnceLock<Store>,
    pub gateway: OnceLock<Gateway>,
    /// The keys of `crypto.*` (token signing, password pepper).
    pub secrets: Secrets,
    /// This instance's name (`bus:instance()`).
    pub instance: String,
    pub script_name: String,
    /// The directory of the script: relative paths (`bus:serve_static`) start there.
    pub script_dir: std::path::PathBuf,
    /// JetStream and the events stream's name, for `bus:last_event` / `bus:events_after`.
    pub js: OnceLock<(async_nats::jetstream::Context, String)>,
    /// Bumped whenever any instance of this service commits (Redis pub/sub), for `bus:wait`.
    pub commits: tokio::sync::watch::Sender<u64>,
    /// Outbound HTTP (`http.request`, `http.call`).
    pub http: reqwest::Client,
    /// Live instances of every service type (membership bucket), for `http.call` and `admin.*`.
    pub directory: Arc<crate::directory::Directory>,
    /// WebSocket topics of this instance (`bus:push`, `bus:join`).
    pub hub: Arc<crate::sockets::Hub>,
    /// Whether `admin.*` is available (`--admin-api`).
    pub admin_api: bool,
}

impl Shared {
    pub fn new(instance: String, script: &std::path::Path, secrets: Secrets, admin_api: bool, member_timeout: std::time::Duration) -> Shared {
        let script_dir = script
            .parent()
            .map(|p| if p.as_os_str().is_empty() { std::path::Path::new(".") } else { p })
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        Shared {
            instance,
            service: OnceLock::new(),
            redis: OnceLock::new(),
            gateway: OnceLock::new(),
            secrets,
            script_name: script.file_name().map_or_else(|| script.display().to_string(), |n| n.to_string_lossy().into_owned()),
            script_dir,
            js: OnceLock::new(),
            commits: tokio::sync::watch::channel(0).0,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                // Below the servers' default --header-read-timeout (30 s), which closes idle
                // connections: a pooled connection is dropped here before the server drops it.
                .pool_idle_timeout(std::time::Duration::from_secs(20))
                .build()
                .expect("an HTTP client without TLS builds"),
            directory: Arc::new(crate::directory::Directory::new(member_timeout)),
            hub: Arc::new(crate::sockets::Hub::default()),
            admin_api,
        }
    }
}

/// Limits of each Lua state.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub instructions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The script's top level: only registration functions work.
    Load,
    /// A live event handler or its receipt listeners: sends are buffered and published when
    /// the handler succeeds, with ids derived from the handled event.
    Handler,
    /// A rebuild handler: sends are ignored (the events exist already).
    Rebuild,
    /// An HTTP route (or a WebSocket's connect handler): sends are published at once and
    /// return their receipt.
    Route,
    /// A live listener (`bus:add_live_listener`): runs on every instance for every event of its
    /// type, in stream order; it may read Redis and push to WebSockets, not send or write.
    Live,
}

/// The event a handler is running for.
#[derive(Debug, Clone)]
pub struct Handled {
    pub id: String,
    pub correlation: String,
}

/// The context of one call into Lua.
pub struct Call {
    pub mode: Mode,
    /// Namespace the call reads and writes (`<service>@<generation>`).
    pub ns: String,
    pub writes: Writes,
    pub sends: Vec<NewEvent>,
    pub handled: Option<Handled>,
    /// Sends made so far while handling this event (numbers the derived ids).
    pub sent: u32,
    /// Set when Redis or the gateway failed under the script: the failure is not the
    /// script's fault, so the event is retried rather than counted towards parking.
    pub infra_error: Option<String>,
    /// WebSocket pushes and joins, applied to this instance's hub when the call returns.
    pub hub_ops: Vec<HubOp>,
}

impl Call {
    pub fn new(mode: Mode, ns: &str) -> Call {
        Call {
            mode,
            ns: ns.to_string(),
            writes: Writes::default(),
            sends: Vec::new(),
            handled: None,
            sent: 0,
            infra_error: None,
            hub_ops: Vec::new(),
        }
    }
}

type Slot = Arc<Mutex<Option<Call>>>;

/// How a call into Lua failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The script raised an error (or misused the API).
    #[error("{0}")]
    Script(String),
    /// The call ran out of instructions or memory. The state is replaced afterwards.
    #[error("{0}")]
    Resource(String),
    /// Redis or the gateway failed underneath: not the script's fault.
    #[error("{0}")]
    Infra(String),
}

/// Instruction accounting of one state, reset before each call.
struct Budget {
    used: AtomicU64,
    limit: u64,
    exceeded: AtomicBool,
    hits: AtomicU64,
}

const HOOK_EVERY: u32 = 10_000;

/// What the script registered (the same in every state of the pool).
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub service: String,
    /// Live listeners; `true` when the script asked for it to be used in rebuilds too.
    pub listeners: BTreeMap<String, bool>,
    pub rebuild: BTreeSet<String>,
    pub receipts: BTreeSet<String>,
    /// (path pattern, method), in registration order.
    pub routes: Vec<(String, String)>,
    /// Listeners re-run at once on fresh state when one of their sends conflicts.
    pub rerun: BTreeSet<String>,
    /// Types of the live listeners (every instance, every event, not sticky).
    pub live: BTreeSet<String>,
    /// WebSocket path patterns, in registration order.
    pub websockets: Vec<String>,
    /// Static file trees.
    pub statics: Vec<StaticSpec>,
}

impl Spec {
    /// The event types the service consumes: listeners and rebuild handlers (as in the
    /// original, a rebuild handler's type is also delivered live so versions stay known).
    pub fn types(&self) -> Vec<String> {
        let mut t: BTreeSet<String> = self.listeners.keys().cloned().collect();
        t.extend(self.rebuild.iter().cloned());
        t.into_iter().collect()
    }
}

/// The functions a state's script registered, stored in the state's app data.
#[derive(Default)]
struct Handlers {
    service: Option<String>,
    listeners: HashMap<String, (Function, bool)>,
    rerun: std::collections::HashSet<String>,
    rebuild: HashMap<String, Function>,
    receipts: HashMap<String, Function>,
    routes: Vec<(String, String, Function)>,
    live: HashMap<String, Function>,
    websockets: Vec<(String, Function)>,
    statics: Vec<StaticSpec>,
}

pub struct Engine {
    lua: Lua,
    budget: Arc<Budget>,
    slot: Slot,
    memory_bytes: usize,
}

impl Engine {
    /// Creates a sandboxed state and runs the script in it.
    pub fn load(source: &str, shared: Arc<Shared>, limits: Limits) -> anyhow::Result<(Engine, Spec)> {
        let lua = Lua::new_with(
            StdLib::COROUTINE | StdLib::TABLE | StdLib::STRING | StdLib::UTF8 | StdLib::MATH | StdLib::OS,
            LuaOptions::new(),
        )
        .map_err(|e| anyhow::anyhow!("creating a Lua state: {e}"))?;
        let budget = Arc::new(Budget {
            used: AtomicU64::new(0),
            limit: limits.instructions,
            exceeded: AtomicBool::new(false),
            hits: AtomicU64::new(0),
        });
        let slot: Slot = Arc::new(Mutex::new(None));
        lua.set_app_data(slot.clone());
        lua.set_app_data(shared.clone());
        lua.set_app_data(Handlers::default());
        lua.set_app_data(budget.clone());
        let hook_budget = budget.clone();
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_lua, _debug| {
            let used = hook_budget.used.fetch_add(u64::from(HOOK_EVERY), Ordering::Relaxed) + u64::from(HOOK_EVERY);
            if used <= hook_budget.limit {
                return Ok(VmState::Continue);
            }
            hook_budget.exceeded.store(true, Ordering::Relaxed);
            // An error can be caught by pcall; a yield cannot (the runtime then drops the
            // call). A yield is impossible inside some C functions (table.sort's comparator),
            // so alternate between the two.
            if hook_budget.hits.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                Err(mlua::Error::runtime(budget_message(hook_budget.limit)))
            } else {
                Ok(VmState::Yield)
            }
        })
        .map_err(|e| anyhow::anyhow!("installing the instruction hook: {e}"))?;
        api::install(&lua).map_err(|e| anyhow::anyhow!("installing the Lua API: {e}"))?;
        lua.set_memory_limit(limits.memory_bytes).map_err(|e| anyhow::anyhow!("setting the Lua memory limit: {e}"))?;

        *slot.lock() = Some(Call::new(Mode::Load, ""));
        budget.reset();
        let result = lua.load(source).set_name(format!("@{}", shared.script_name)).set_mode(mlua::chunk::ChunkMode::Text).exec();
        slot.lock().take();
        if budget.exceeded.load(Ordering::Relaxed) {
            anyhow::bail!("{}: {}", shared.script_name, budget_message(limits.instructions));
        }
        result.map_err(|e| anyhow::anyhow!("{}", clean_error(&e)))?;

        let spec = {
            let h = lua.app_data_ref::<Handlers>().expect("handlers are installed");
            let service = h.service.clone().ok_or_else(|| {
                anyhow::anyhow!("{} never called bus:register(\"<service type>\"); every script must name its service type", shared.script_name)
            })?;
            Spec {
                service,
                listeners: h.listeners.iter().map(|(t, (_, r))| (t.clone(), *r)).collect(),
                rebuild: h.rebuild.keys().cloned().collect(),
                receipts: h.receipts.keys().cloned().collect(),
                routes: h.routes.iter().map(|(p, m, _)| (p.clone(), m.clone())).collect(),
                rerun: h.rerun.iter().cloned().collect(),
                live: h.live.keys().cloned().collect(),
                websockets: h.websockets.iter().map(|(p, _)| p.clone()).collect(),
                statics: h.statics.clone(),
            }
        };
        if spec.types().is_empty() && spec.routes.is_empty() && spec.live.is_empty() && spec.websockets.is_empty() && spec.statics.is_empty() {
            anyhow::bail!("{} registers no event listener, rebuild handler, route, live listener, WebSocket or static tree: there is nothing to run", shared.script_name);
        }
        Ok((Engine { lua, budget, slot, memory_bytes: limits.memory_bytes }, spec))
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn listener(&self, event_type: &str) -> Option<(Function, bool)> {
        self.lua.app_data_ref::<Handlers>()?.listeners.get(event_type).cloned()
    }
    pub fn rebuild_handler(&self, event_type: &str) -> Option<Function> {
        self.lua.app_data_ref::<Handlers>()?.rebuild.get(event_type).cloned()
    }
    pub fn receipt_listener(&self, event_type: &str) -> Option<Function> {
        self.lua.app_data_ref::<Handlers>()?.receipts.get(event_type).cloned()
    }
    pub fn route(&self, index: usize) -> Option<Function> {
        self.lua.app_data_ref::<Handlers>()?.routes.get(index).map(|(_, _, f)| f.clone())
    }
    pub fn live_listener(&self, event_type: &str) -> Option<Function> {
        self.lua.app_data_ref::<Handlers>()?.live.get(event_type).cloned()
    }
    pub fn websocket(&self, index: usize) -> Option<Function> {
        self.lua.app_data_ref::<Handlers>()?.websockets.get(index).map(|(_, f)| f.clone())
    }

    /// Calls `f` with `args` under `call`, within the instruction budget. Returns the call
    /// context back whatever happened, so the caller decides what to commit.
    pub async fn call<R: FromLuaMulti>(&self, f: &Function, args: impl IntoLuaMulti, call: Call) -> (Result<R, CallError>, Call) {
        *self.slot.lock() = Some(call);
        self.budget.reset();
        let result = {
            let mut fut = pin!(f.call_async::<R>(args));
            let budget = self.budget.clone();
            std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
                // The hook yielded because the budget ran out: abandon the call.
                Poll::Pending if budget.exceeded.load(Ordering::Relaxed) => Poll::Ready(Err(None)),
                Poll::Pending => Poll::Pending,
            })
            .await
        };
        let call = self.slot.lock().take().expect("the call context stays in place during a call");
        let exceeded = self.budget.exceeded.load(Ordering::Relaxed);
        let result = match result {
            Ok(r) if !exceeded => Ok(r),
            Ok(_) | Err(None) => Err(CallError::Resource(budget_message(self.budget.limit))),
            Err(Some(_)) if exceeded => Err(CallError::Resource(budget_message(self.budget.limit))),
            Err(Some(e)) => Err(match &call.infra_error {
                Some(infra) => CallError::Infra(infra.clone()),
                None if is_memory_error(&e) => CallError::Resource(format!(
                    "the Lua state ran out of memory (limit {} MiB): {}",
                    self.memory_bytes / (1024 * 1024),
                    clean_error(&e)
                )),
                None => CallError::Script(clean_error(&e)),
            }),
        };
        (result, call)
    }
}

impl Budget {
    fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        self.hits.store(0, Ordering::Relaxed);
    }
}

fn budget_message(limit: u64) -> String {
    format!("the call ran more than {limit} Lua instructions and was stopped (an endless loop?); raise --lua-instructions if the work is legitimate")
}

fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        other => other.to_string().contains("not enough memory"),
    }
}

/// A Lua error as one readable message with the script location and traceback.
pub fn clean_error(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, traceback } => {
            let tb = traceback.lines().filter(|l| !l.contains("[C]")).take(6).collect::<Vec<_>>().join(" | ");
            format!("{} ({tb})", clean_error(cause))
        }
        mlua::Error::ExternalError(e) => e.to_string(),
        other => other.to_string().replace('\n', " | "),
    }
}

/// The states of one service script. A handler or route borrows one for the time its Lua code
/// runs; partitions and requests therefore run in parallel up to the pool size.
pub struct Pool {
    source: String,
    shared: Arc<Shared>,
    limits: Limits,
    idle: Mutex<Vec<Engine>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    pub fn new(source: String, shared: Arc<Shared>, limits: Limits, size: usize) -> anyhow::Result<(Arc<Pool>, Spec)> {
        let size = size.max(1);
        let (first, spec) = Engine::load(&source, shared.clone(), limits)?;
        let mut idle = vec![first];
        for _ in 1..size {
            idle.push(Engine::load(&source, shared.clone(), limits)?.0);
        }
        let pool = Pool { source, shared, limits, idle: Mutex::new(idle), permits: tokio::sync::Semaphore::new(size) };
        Ok((Arc::new(pool), spec))
    }

    pub async fn get(self: &Arc<Self>) -> Lease {
        let permit = self.permits.acquire().await.expect("the pool semaphore is never closed");
        permit.forget();
        let engine = self.idle.lock().pop().expect("a permit means an idle engine");
        Lease { pool: self.clone(), engine: Some(engine) }
    }
}

pub struct Lease {
    pool: Arc<Pool>,
    engine: Option<Engine>,
}

impl std::ops::Deref for Lease {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine.as_ref().expect("present until drop")
    }
}

impl Lease {
    /// Replaces the state with a fresh one (after it ran out of memory or instructions, its
    /// globals may hold garbage the script cannot free).
    pub fn renew(&mut self) {
        match Engine::load(&self.pool.source, self.pool.shared.clone(), self.pool.limits) {
            Ok((engine, _)) => self.engine = Some(engine),
            Err(e) => tracing::error!(error = %e, "could not renew a Lua state; keeping the old one"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.pool.idle.lock().push(engine);
            self.pool.permits.add_permits(1);
        }
    }
}
