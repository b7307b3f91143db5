//! The globals a service script sees, one file per table: `bus` (registration, [`send`],
//! [`stream`] reads, [`wait`]), `redis`, `http`, `crypto`, `admin`, the web functions of `bus`
//! ([`web`]), and `json`, `log`, `HTTP_*` with the sandboxed standard library ([`basics`]).
//!
//! Functions may be called with a colon (`bus:send(...)`, the original's style) or a dot.

mod admin;
mod basics;
mod bounded;
mod bus;
pub mod crypto;
mod http;
mod pattern;
mod redis;
mod send;
mod stream;
mod wait;
mod web;

use super::handlers::Slot;
use super::{Call, Mode, Shared};
use crate::state::{self, Store};
use mlua::{FromLuaMulti, Lua, MultiValue, Value};
use std::sync::Arc;

pub use send::{note_receipt, note_version};
pub use web::StaticSpec;

type LResult<T> = mlua::Result<T>;

pub fn install(lua: &Lua) -> LResult<()> {
    basics::install(lua)?;
    bus::install(lua)?;
    redis::install(lua)?;
    crypto::install(lua)?;
    http::install(lua)?;
    admin::install(lua)?;
    let (mut modules, kept) = (std::collections::HashMap::new(), lua.create_table()?);
    for pair in lua.globals().pairs::<String, Value>() {
        if let (name, Value::Table(t)) = pair? {
            modules.insert(name, t.to_pointer() as usize);
            kept.raw_push(t)?;
        }
    }
    // Kept alive with the state, so that no other table ever takes their addresses.
    lua.set_named_registry_value("sequent_modules", kept)?;
    lua.set_app_data(Modules(modules));
    Ok(())
}

/// The addresses of the global tables as installed, by name: [`args`] knows a colon call by
/// them without a lookup in the globals (a Lua string made and a protected call, on every API
/// call).
struct Modules(std::collections::HashMap<String, usize>);

fn err<T>(msg: impl Into<String>) -> LResult<T> {
    Err(mlua::Error::runtime(msg.into()))
}

/// Drops the module table passed by a colon call, then parses the arguments.
fn args<A: FromLuaMulti>(lua: &Lua, mut values: MultiValue, what: &str) -> LResult<A> {
    if let Some(Value::Table(t)) = values.front() {
        // Only the module itself (`bus:send(...)`), never a table argument (`json.array(t)`).
        let module = what.split(['.', ':']).next().unwrap_or_default();
        let is_module = lua.app_data_ref::<Modules>().is_some_and(|m| m.0.get(module) == Some(&(t.to_pointer() as usize)));
        if is_module {
            values.pop_front();
        }
    }
    A::from_lua_multi(values, lua).map_err(|e| mlua::Error::runtime(format!("{what}: bad arguments: {e}")))
}

fn slot(lua: &Lua) -> Slot {
    lua.app_data_ref::<Slot>().expect("the call slot is installed").clone()
}

fn shared(lua: &Lua) -> Arc<Shared> {
    lua.app_data_ref::<Arc<Shared>>().expect("shared state is installed").clone()
}

/// Runs `f` on the current call context.
fn with_call<R>(lua: &Lua, what: &str, f: impl FnOnce(&mut Call) -> LResult<R>) -> LResult<R> {
    let slot = slot(lua);
    let mut guard = slot.lock();
    match guard.as_mut() {
        Some(call) => f(call),
        None => err(format!("{what} is only available while the script runs")),
    }
}

fn mode(lua: &Lua) -> Option<Mode> {
    slot(lua).lock().as_ref().map(|c| c.mode)
}

/// Records an infrastructure failure on the call (so it is retried, not parked) and returns
/// the Lua error for it.
fn infra<T>(lua: &Lua, what: &str, e: impl std::fmt::Display) -> LResult<T> {
    let msg = format!("{what}: {e}");
    if let Some(call) = slot(lua).lock().as_mut() {
        call.infra_error = Some(msg.clone());
    }
    err(msg)
}

fn registering(lua: &Lua, what: &str) -> LResult<()> {
    if mode(lua) != Some(Mode::Load) {
        return err(format!("{what} may only be called at the top level of the script, while it loads"));
    }
    Ok(())
}

fn check_reads_allowed(lua: &Lua, what: &str) -> LResult<()> {
    match mode(lua) {
        Some(Mode::Load) | None => err(format!("{what} is only available in handlers and routes, not while the script loads")),
        _ => Ok(()),
    }
}

/// The in-memory state and stream, when the script runs under `superclient test`.
fn offline(lua: &Lua) -> Option<Arc<super::Offline>> {
    shared(lua).offline.get().cloned()
}

fn redis_store(lua: &Lua) -> LResult<Store> {
    shared(lua).redis.get().cloned().ok_or_else(|| mlua::Error::runtime("redis is not connected yet"))
}

/// Moves a route's call to the active namespace if a rebuild swapped one in and the call has
/// written nothing but notes of versions (the rebuilt state holds the same events; the call's
/// own writes would pin it to the state they were decided on). `read`: the namespace a read
/// found inactive, whose own pointer says where its slot's state is now (a partition of
/// partitioned state swaps before the service's pointer moves); else the service's pointer
/// is followed. Returns the namespace to read now (`read`'s, moved).
async fn follow_swap(lua: &Lua, what: &str, store: &Store, read: Option<&str>) -> LResult<Option<String>> {
    let pointer = match read {
        Some(ns) => store.pointer(ns).await,
        None => store.active().await,
    };
    let Ok(Some(active)) = pointer else { return Ok(None) };
    let generation = state::generation_of(&active);
    with_call(lua, what, |c| {
        let moved = c.mode == Mode::Route && state::generation_of(&c.ns) != generation && c.overlay.move_version_notes(generation);
        if moved {
            c.ns = state::regenerate(&c.ns, generation);
        }
        Ok(moved.then_some(active))
    })
}

/// `cmd`, a read of one key (its first argument, as every read here is), with that key moved
/// from namespace `from` to namespace `to`.
fn retarget(cmd: &::redis::Cmd, from: &str, to: &str) -> ::redis::Cmd {
    let (from, to) = (format!("{from}:"), format!("{to}:"));
    let mut out = ::redis::Cmd::new();
    for (i, arg) in cmd.args_iter().enumerate() {
        if let ::redis::Arg::Simple(bytes) = arg {
            match bytes.strip_prefix(from.as_bytes()).filter(|_| i == 1) {
                Some(rest) => out.arg([to.as_bytes(), rest].concat()),
                None => out.arg(bytes),
            };
        }
    }
    out
}

/// Reads Redis for the call: from the active namespace, atomically with a look at it (Redis may
/// have lost the state, a rebuild may have swapped another in), and with the revision of script
/// key `key` when the call's reads are checked at commit (then noted in its overlay). A rebuild
/// reads a namespace that is not active yet.
async fn read<T: ::redis::FromRedisValue>(lua: &Lua, what: &str, cmd: &::redis::Cmd, depends: Option<state::Depends<'_>>) -> LResult<T> {
    if let Some(offline) = offline(lua) {
        let value = offline.state.lock().read(cmd);
        return match value {
            Ok(v) => ::redis::from_redis_value(v).map_err(|e| mlua::Error::runtime(format!("{what}: {e}"))),
            Err(e) if e.starts_with("WRONGTYPE") => err(format!("{what}: the key holds another type of value ({e})")),
            Err(e) => err(format!("{what}: {e}")),
        };
    }
    let store = redis_store(lua)?;
    let mode = with_call(lua, what, |c| Ok(c.mode))?;
    // The namespace of the key read (the call's, or the key's partition's).
    let ns = match cmd.args_iter().nth(1) {
        Some(::redis::Arg::Simple(key)) => state::namespace_of_stored(&String::from_utf8_lossy(key)).to_string(),
        _ => with_call(lua, what, |c| Ok(c.ns.clone()))?,
    };
    let not_active = |ns: &str| format!("the state {ns} is not the active one (Redis lost it, or a rebuild is running or swapped another in); retry");
    let depends = depends.filter(|_| mode.serializable());
    let revisions = depends.map(|d| d.revisions()).unwrap_or_default();
    let read = match mode {
        Mode::Rebuild => cmd.query_async(&mut store.con.clone()).await.map(|v| (v, Vec::new())),
        _ => match store.read(&ns, cmd, &revisions).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => match follow_swap(lua, what, &store, Some(&ns)).await? {
                Some(active) => {
                    // Reads of the old state say nothing of the new one.
                    with_call(lua, what, |c| {
                        c.overlay.forget_reads();
                        Ok(())
                    })?;
                    match store.read(&active, &retarget(cmd, &ns, &active), &revisions).await {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => return infra(lua, what, not_active(&active)),
                        Err(e) => Err(e),
                    }
                }
                None => return infra(lua, what, not_active(&ns)),
            },
            Err(e) => Err(e),
        },
    };
    match read {
        Ok((value, values)) => {
            if let Some(depends) = depends {
                with_call(lua, what, |c| {
                    for (name, revision) in revisions.iter().zip(values) {
                        c.overlay.note_read(name, revision);
                    }
                    if let Some(t) = type_read(cmd) {
                        c.overlay.note_type(depends.key(), t);
                    }
                    if let Some(watching) = c.watching.as_mut() {
                        watching.push(depends.key().to_string());
                    }
                    Ok(())
                })?;
            }
            Ok(value)
        }
        Err(e) if e.code() == Some("WRONGTYPE") => err(format!("{what}: the key holds another type of value ({e})")),
        Err(e) => infra(lua, what, e),
    }
}

/// The Redis type a read command proves its key has (or that there is no such key) by not
/// failing: a command of one type fails with WRONGTYPE on a key of another.
fn type_read(cmd: &::redis::Cmd) -> Option<&'static str> {
    let name = match cmd.args_iter().next() {
        Some(::redis::Arg::Simple(b)) => b,
        _ => return None,
    };
    match name {
        b"GET" => Some("string"),
        b"HGET" | b"HGETALL" => Some("hash"),
        b"LRANGE" | b"LLEN" => Some("list"),
        b"SMEMBERS" | b"SISMEMBER" => Some("set"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{retarget, type_read};

    #[test]
    fn reads_that_prove_a_type() {
        assert_eq!(type_read(::redis::cmd("HGET").arg("k").arg("f")), Some("hash"));
        assert_eq!(type_read(::redis::cmd("GET").arg("k")), Some("string"));
        assert_eq!(type_read(::redis::cmd("EXISTS").arg("k")), None, "EXISTS takes any type");
    }

    #[test]
    fn retarget_moves_the_key_and_nothing_else() {
        let mut cmd = ::redis::cmd("HGET");
        cmd.arg("accounts@2:ops:acc-1").arg("accounts@2:a-field-not-a-key");
        let moved = retarget(&cmd, "accounts@2", "accounts@3");
        let args: Vec<Vec<u8>> = moved.args_iter().filter_map(|a| if let ::redis::Arg::Simple(b) = a { Some(b.to_vec()) } else { None }).collect();
        assert_eq!(args, vec![b"HGET".to_vec(), b"accounts@3:ops:acc-1".to_vec(), b"accounts@2:a-field-not-a-key".to_vec()]);
        let mut other = ::redis::cmd("GET");
        other.arg("users@2:x");
        let unchanged = retarget(&other, "accounts@2", "accounts@3");
        assert_eq!(unchanged.args_iter().count(), 2);
        assert!(unchanged.args_iter().any(|a| matches!(a, ::redis::Arg::Simple(b) if b == b"users@2:x")));
    }
}
