//! One sandboxed Lua state running the service script, and its calls: each bounded by an
//! instruction budget and a limit on its running time (a hook that `pcall` cannot swallow), and
//! the state's memory limit.
//!
//! Time: a call may *run* (Lua code, the API's synchronous work, the C library) for at most
//! `Limits::timeout`. The clock runs while the engine polls the call; it stops while the call
//! waits for something outside (Redis, the gateway, `bus:wait`, `http.*`, a password hash on the
//! blocking pool): those waits are bounded by their own timeouts and cost no CPU. The hook checks
//! the clock every `HOOK_EVERY` instructions (`budget`); the C functions that could run long without
//! executing a Lua instruction (the pattern functions, `table.move`, ...) are replaced by bounded
//! versions that charge their steps to the same budget (`api::bounded`, `api::basics`).
//!
//! Fairness: a call that has run for `SLICE` (10 ms) without waiting yields to the async runtime (the
//! hook yields its Lua thread, the engine lets other tasks run and resumes it), so a long call
//! on one worker thread does not stall the requests and events queued behind it.

use super::budget::{Budget, MemoryLimit, HOOK_EVERY, WHY_INSTRUCTIONS, WHY_TIME};
use super::handlers::{Handlers, Slot};
use super::{api, Call, Limits, Mode, Shared, Spec};
use mlua::{FromLuaMulti, Function, HookTriggers, IntoLuaMulti, Lua, LuaOptions, StdLib, VmState};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;


/// How a call into Lua failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The script raised an error (or misused the API).
    #[error("{0}")]
    Script(String),
    /// The call ran out of instructions, time or memory. The state is replaced afterwards.
    #[error("{0}")]
    Resource(String),
    /// Redis or the gateway failed underneath: not the script's fault.
    #[error("{0}")]
    Infra(String),
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
        let budget = Arc::new(Budget::new(limits));
        let slot: Slot = Arc::new(Mutex::new(None));
        lua.set_app_data(slot.clone());
        lua.set_app_data(shared.clone());
        lua.set_app_data(Handlers { original_statuses: super::convert::speaks_original_statuses(source), ..Handlers::default() });
        lua.set_app_data(budget.clone());
        lua.set_app_data(MemoryLimit(limits.memory_bytes));
        let hook_budget = budget.clone();
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |lua, _debug| {
            let b = &hook_budget;
            let used = b.used.fetch_add(u64::from(HOOK_EVERY), Ordering::Relaxed) + u64::from(HOOK_EVERY);
            if !b.exceeded.load(Ordering::Relaxed) {
                if used > b.limit {
                    b.exceed(WHY_INSTRUCTIONS);
                } else if b.running_time() > b.timeout {
                    b.exceed(WHY_TIME);
                }
            }
            if b.exceeded.load(Ordering::Relaxed) {
                // An error can be caught by pcall; a yield cannot (the runtime then drops the
                // call). A yield is impossible inside some C functions (table.sort's
                // comparator), so alternate between the two.
                return if b.hits.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                    Err(mlua::Error::runtime(b.message()))
                } else {
                    Ok(VmState::Yield)
                };
            }
            // Let the other tasks of this worker thread run now and then. Only the call's own
            // thread yields (or a thread the API runs for it, such as bus:wait's condition, which
            // mlua reports as that thread): a coroutine of the script would see a yield it did
            // not make.
            if b.slice_over() && lua.current_thread().to_pointer() as usize == b.main_thread.load(Ordering::Relaxed) {
                b.yielded.store(true, Ordering::Relaxed);
                b.slice_start.store(b.now(), Ordering::Relaxed);
                return Ok(VmState::Yield);
            }
            Ok(VmState::Continue)
        })
        .map_err(|e| anyhow::anyhow!("installing the instruction hook: {e}"))?;
        api::install(&lua).map_err(|e| anyhow::anyhow!("installing the Lua API: {e}"))?;
        lua.set_memory_limit(limits.memory_bytes).map_err(|e| anyhow::anyhow!("setting the Lua memory limit: {e}"))?;

        *slot.lock() = Some(Call::new(Mode::Load, ""));
        budget.reset();
        let started = budget.start_running();
        let result = lua.load(source).set_name(format!("@{}", shared.script_name)).set_mode(mlua::chunk::ChunkMode::Text).exec();
        budget.stop_running(started);
        slot.lock().take();
        if budget.exceeded.load(Ordering::Relaxed) {
            anyhow::bail!("{}: {}", shared.script_name, budget.message());
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
                live_topics: h.live_topics.iter().map(|(t, topics)| (t.clone(), topics.clone())).collect(),
                websockets: h.websockets.iter().map(|(p, _)| p.clone()).collect(),
                statics: h.statics.clone(),
                original_statuses: h.original_statuses,
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

    /// The live listener of `event_type`: its own, else the `*` one.
    pub fn listener(&self, event_type: &str) -> Option<(Function, bool)> {
        let h = self.lua.app_data_ref::<Handlers>()?;
        h.listeners.get(event_type).or_else(|| h.listeners.get(super::ALL_TYPES)).cloned()
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

    /// Calls `f` with `args` under `call`, within the instruction budget and the time limit.
    /// Returns the call context back whatever happened, so the caller decides what to commit.
    pub async fn call<R: FromLuaMulti>(&self, f: &Function, args: impl IntoLuaMulti, call: Call) -> (Result<R, CallError>, Call) {
        *self.slot.lock() = Some(call);
        self.budget.reset();
        let result = self.run(f, args).await;
        let call = self.slot.lock().take().expect("the call context stays in place during a call");
        let exceeded = self.budget.exceeded.load(Ordering::Relaxed);
        let result = match result {
            Ok(r) if !exceeded => Ok(r),
            Ok(_) | Err(None) => Err(CallError::Resource(self.budget.message())),
            Err(Some(_)) if exceeded => Err(CallError::Resource(self.budget.message())),
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

    /// Runs the call on a thread of its own, timing each poll; `Err(None)` when the budget ran
    /// out while the call was suspended (the call is abandoned).
    async fn run<R: FromLuaMulti>(&self, f: &Function, args: impl IntoLuaMulti) -> Result<R, Option<mlua::Error>> {
        let thread = self.lua.create_thread(f.clone()).map_err(Some)?;
        self.budget.main_thread.store(thread.to_pointer() as usize, Ordering::Relaxed);
        let mut fut = pin!(thread.into_async::<R>(args).map_err(Some)?);
        let budget = &self.budget;
        loop {
            let step = std::future::poll_fn(|cx| {
                let started = budget.start_running();
                let polled = fut.as_mut().poll(cx);
                budget.stop_running(started);
                match polled {
                    Poll::Ready(r) => Poll::Ready(Some(r.map_err(Some))),
                    // The hook yielded because the budget ran out: abandon the call.
                    Poll::Pending if budget.exceeded.load(Ordering::Relaxed) => Poll::Ready(Some(Err(None))),
                    // The hook yielded to let other tasks run.
                    Poll::Pending if budget.yielded.swap(false, Ordering::Relaxed) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match step {
                Some(r) => return r,
                None => tokio::task::yield_now().await,
            }
        }
    }
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

