//! `bus:wait(timeout_ms, fn)`, routes only: read-your-writes. Calls `fn` until it returns true
//! (then true) or the timeout passes (false). The script keys `fn` read are marked as watched
//! (`sequent:{<svc>}:watch`, or the key's partition's `sequent:{<svc>.<p>}:watch` with
//! partitioned state, beside the commits that write it); commits that write one of them
//! announce it on the service's channel and wake the waiter,
//! whichever instance committed. A one-second re-check covers an announcement lost while the
//! Redis subscription reconnects.
//!
//! Waiting ends the route's serializable section: it waits for other commits by design, so its
//! locks are released, and neither what it read before nor what the condition read is checked
//! at its commit or before its next send.

use super::{args, err, mode, offline, redis_store, shared, with_call, LResult};
use crate::script::Mode;
use crate::state::notify;
use mlua::{Function, Lua, MultiValue, Table, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn install(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set("wait", lua.create_async_function(wait)?)
}

async fn wait(lua: Lua, values: MultiValue) -> LResult<bool> {
    let result = wait_for(&lua, values).await;
    with_call(&lua, "bus:wait", |c| {
        c.watching = None;
        c.overlay.forget_reads();
        Ok(())
    })?;
    result
}

async fn wait_for(lua: &Lua, values: MultiValue) -> LResult<bool> {
    let lua = lua.clone();
    let (timeout_ms, condition): (u64, Function) = args(&lua, values, "bus:wait")?;
    if mode(&lua) != Some(Mode::Route) {
        return err(
            "bus:wait may only be used in routes: a waiting event handler would hold its whole partition \
             (decide from bus:last_event instead)",
        );
    }
    if offline(&lua).is_some() {
        // Under `superclient test` nothing commits while a route runs: one look decides.
        let ok: Value = condition.call_async(()).await?;
        return Ok(!matches!(ok, Value::Nil | Value::Boolean(false)));
    }
    let timeout = Duration::from_millis(timeout_ms.min(60_000));
    let deadline = tokio::time::Instant::now() + timeout;
    let deadline_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().saturating_add(timeout).as_millis() as u64;
    let store = redis_store(&lua)?;
    let mut woken = shared(&lua).woken.subscribe();
    end_serializable_section(&lua, &store).await?;
    let mut watched: Vec<String> = Vec::new();
    loop {
        // A rebuild may swap the state in while we wait: the condition's reads follow it (a
        // read that finds its namespace inactive moves the call to the active one, unless the
        // call has buffered writes; then its commit notices the swap).
        with_call(&lua, "bus:wait", |c| {
            c.watching = Some(Vec::new());
            Ok(())
        })?;
        let ok: Result<Value, mlua::Error> = condition.call_async(()).await;
        let keys = with_call(&lua, "bus:wait", |c| Ok(c.watching.take().unwrap_or_default()))?;
        let ok = ok?;
        if !matches!(ok, Value::Nil | Value::Boolean(false)) {
            let waited = timeout.saturating_sub(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if waited > Duration::from_secs(2) {
                tracing::warn!(waited = ?waited, "bus:wait: the condition took long to hold");
            }
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?timeout, keys = ?keys, "bus:wait: timed out");
            return Ok(false);
        }
        let new: Vec<String> = keys.iter().filter(|k| !watched.contains(k)).cloned().collect();
        if !new.is_empty() {
            if let Err(e) = store.watch(&new, deadline_ms).await {
                tracing::warn!(error = %e, "bus:wait: could not mark keys as watched; polling");
            }
            watched.extend(new);
            // A commit between the condition's read and the mark announced nothing: look again.
            continue;
        }
        let until = tokio::time::sleep_until(deadline);
        let recheck = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(until, recheck);
        loop {
            tokio::select! {
                w = woken.recv() => match w {
                    Ok(w) if !notify::concerns(&w, &watched) => continue,
                    _ => break,
                },
                _ = &mut recheck => break,
                _ = &mut until => break,
            }
        }
    }
}

/// Releases the locks the route took before its sends and forgets its reads so far.
async fn end_serializable_section(lua: &Lua, store: &crate::state::Store) -> LResult<()> {
    let (ns, owner, locked) = with_call(lua, "bus:wait", |c| {
        c.overlay.forget_reads();
        Ok((c.locks_namespace(), c.owner.clone(), std::mem::take(&mut c.locked)))
    })?;
    if let Some(owner) = owner {
        if let Err(e) = store.unlock(&ns, &owner, &locked).await {
            tracing::warn!(error = %e, "bus:wait: could not release the route's locks (they expire by themselves)");
        }
    }
    Ok(())
}
