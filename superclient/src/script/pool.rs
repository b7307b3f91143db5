//! Pools of Lua states of one script. A handler or route borrows a state for the time its Lua
//! code runs (network waits included); states are made on first need, up to the pool's size.

use super::{Engine, Limits, Shared, Spec};
use parking_lot::Mutex;
use std::sync::Arc;

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
    /// Loads the script once (to check it and learn what it registers); further states are
    /// loaded when first needed.
    pub fn new(source: String, shared: Arc<Shared>, limits: Limits, size: usize) -> anyhow::Result<(Arc<Pool>, Spec)> {
        let (first, spec) = Engine::load(&source, shared.clone(), limits)?;
        let pool = Pool { source, shared, limits, idle: Mutex::new(vec![first]), permits: tokio::sync::Semaphore::new(size.max(1)) };
        Ok((Arc::new(pool), spec))
    }

    pub async fn get(self: &Arc<Self>) -> Lease {
        let permit = self.permits.acquire().await.expect("the pool semaphore is never closed");
        permit.forget();
        let idle = self.idle.lock().pop();
        let engine = match idle {
            Some(engine) => engine,
            // The script loaded once already: a failure now is the machine's (out of memory).
            None => loop {
                match Engine::load(&self.source, self.shared.clone(), self.limits) {
                    Ok((engine, _)) => break engine,
                    Err(e) => {
                        tracing::error!(error = %e, "loading another Lua state failed; retrying in 1 s");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            },
        };
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
