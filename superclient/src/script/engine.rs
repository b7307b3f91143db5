//! One sandboxed Lua state running the service script, and its calls: each bounded by an
//! instruction budget (a hook that `pcall` cannot swallow) and the state's memory limit.

use super::{api, Call, Limits, Mode, Shared, Spec, StaticSpec};
use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, LuaOptions, StdLib, VmState};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

pub(crate) type Slot = Arc<Mutex<Option<Call>>>;

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
pub(crate) struct Budget {
    pub(crate) used: AtomicU64,
    limit: u64,
    pub(crate) exceeded: AtomicBool,
    hits: AtomicU64,
}

const HOOK_EVERY: u32 = 10_000;

/// The functions a state's script registered, stored in the state's app data.
#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) service: Option<String>,
    pub(crate) declaration: sequent_protocol::Declaration,
    pub(crate) listeners: HashMap<String, (Function, bool)>,
    pub(crate) rerun: std::collections::HashSet<String>,
    pub(crate) rebuild: HashMap<String, Function>,
    pub(crate) receipts: HashMap<String, Function>,
    pub(crate) routes: Vec<(String, String, Function)>,
    pub(crate) live: HashMap<String, Function>,
    pub(crate) websockets: Vec<(String, Function)>,
    pub(crate) statics: Vec<StaticSpec>,
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
            let mut declaration = h.declaration.clone();
            let mut listens: std::collections::BTreeSet<String> = h.listeners.keys().cloned().collect();
            listens.extend(h.rebuild.keys().cloned());
            listens.extend(h.live.keys().cloned());
            declaration.listens = listens.into_iter().collect();
            Spec {
                declaration,
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
    pub(crate) fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        self.hits.store(0, Ordering::Relaxed);
    }

    pub(crate) fn message(&self) -> String {
        budget_message(self.limit)
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

