//! `redis`: the service's own state. Values are JSON (tables, numbers, strings, booleans).
//! Writes go to the call's overlay and commit when the call does; reads see them, merged with
//! what Redis holds (`state::overlay`). Every read from Redis carries the key's revision, which
//! the commit checks (serializable handler and route state).

use super::{args, err, infra, offline, read, redis_store, with_call, LResult};
use crate::script::convert::{lua_to_json_text, stored_to_lua};
use crate::script::Mode;
use crate::state::{self, StrView};
use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The longest expiry `redis:set(key, value, {ttl_ms = ...})` takes: a year.
const MAX_TTL_MS: i64 = 366 * 24 * 3600 * 1000;

pub fn install(lua: &Lua) -> LResult<()> {
    let r = lua.create_table()?;
    install_strings(lua, &r)?;
    install_hashes(lua, &r)?;
    install_lists_and_sets(lua, &r)?;
    lua.globals().raw_set("redis", r)
}

fn encode(value: &Value, what: &str) -> LResult<String> {
    if value.is_nil() {
        return err(format!("{what}: the value is nil (use redis:del to remove a key)"));
    }
    lua_to_json_text(value).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))
}

fn decode(lua: &Lua, s: &str) -> LResult<Value> {
    stored_to_lua(lua, s)
}

fn parse_int(s: &str, what: &str) -> LResult<i64> {
    s.trim().parse::<i64>().map_err(|_| mlua::Error::runtime(format!("{what}: the value {s:?} is not an integer")))
}

/// Resolves a script key to its full name in the call's namespace (its partition's, when the
/// state is partitioned: a handler reaching another partition's key fails here).
fn full_key(lua: &Lua, what: &str, key: &str) -> LResult<String> {
    state::check_user_key(key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    with_call(lua, what, |call| match call.mode {
        Mode::Load => err(format!("{what}: redis is not available while the script loads; use it in handlers and routes")),
        _ => call.key_namespace(key).map(|ns| state::script_key(&ns, key)).map_err(|e| mlua::Error::runtime(format!("{what}: {e}"))),
    })
}

/// Runs `f` on the call's overlay; its error (a type mix-up) becomes the script's.
fn overlay<R>(lua: &Lua, what: &str, f: impl FnOnce(&mut state::Overlay) -> Result<R, String>) -> LResult<R> {
    with_call(lua, what, |c| f(&mut c.overlay).map_err(|e| mlua::Error::runtime(format!("{what}: {e}"))))
}

fn field_name(v: Value, what: &str) -> LResult<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::Integer(n) => Ok(n.to_string()),
        other => err(format!("{what}: a field name must be a string or an integer, not a {}", other.type_name())),
    }
}

fn sequence(lua: &Lua, items: impl IntoIterator<Item = String>) -> LResult<Table> {
    let t = lua.create_table()?;
    for (i, v) in items.into_iter().enumerate() {
        t.raw_set(i + 1, decode(lua, &v)?)?;
    }
    t.set_metatable(Some(lua.array_metatable()))?;
    Ok(t)
}

/// `redis:get`: what the call's overlay decides is answered by a plain function, and only
/// the rest by the async one that reads Redis: a rebuild's reads are mostly of keys it wrote,
/// and an async call costs more than the lookup.
const GET: &str = r#"
local decided, stored = ...
return function(...)
  local known, value = decided(...)
  if known then return value end
  return stored(...)
end
"#;

fn install_strings(lua: &Lua, r: &Table) -> LResult<()> {
    let decided = lua.create_function(|lua, values: MultiValue| {
        let key: String = args(lua, values, "redis:get")?;
        full_key(lua, "redis:get", &key)?;
        match overlay(lua, "redis:get", |o| Ok(o.string(&key)))? {
            StrView::Local(v) => Ok((true, v.map_or(Ok(Value::Nil), |v| decode(lua, &v))?)),
            _ => Ok((false, Value::Nil)),
        }
    })?;
    let stored = lua.create_async_function(|lua, values: MultiValue| async move {
        let key: String = args(&lua, values, "redis:get")?;
        let full = full_key(&lua, "redis:get", &key)?;
        let view = overlay(&lua, "redis:get", |o| Ok(o.string(&key)))?;
        match view {
            StrView::Local(v) => v.map_or(Ok(Value::Nil), |v| decode(&lua, &v)),
            StrView::Over(d) => {
                let base: Option<String> = read(&lua, "redis:get", redis::cmd("GET").arg(&full), Some(state::Depends::Key(&key))).await?;
                let base = base.map(|b| parse_int(&b, "redis:get")).transpose()?.unwrap_or(0);
                Ok(Value::Integer(base + d))
            }
            StrView::Stored => {
                let v: Option<String> = read(&lua, "redis:get", redis::cmd("GET").arg(&full), Some(state::Depends::Key(&key))).await?;
                v.map_or(Ok(Value::Nil), |v| decode(&lua, &v))
            }
        }
    })?;
    let get: mlua::Function = lua.load(GET).set_name("=redis:get").call((decided, stored))?;
    r.raw_set("get", get)?;
    r.raw_set(
        "set",
        lua.create_function(|lua, values: MultiValue| {
            let (key, value, opts): (String, Value, Option<mlua::Table>) = args(lua, values, "redis:set")?;
            let full = full_key(lua, "redis:set", &key)?;
            let json = encode(&value, "redis:set")?;
            // {ttl_ms = n}: the key expires n ms after the commit (SET, then PEXPIRE in the same
            // commit script).
            let ttl = match &opts {
                None => None,
                Some(t) => {
                    for pair in t.pairs::<String, Value>() {
                        let (k, _) = pair?;
                        if k != "ttl_ms" {
                            return err(format!("redis:set({key:?}): unknown option {k:?}; the only option is ttl_ms"));
                        }
                    }
                    match t.get::<Option<i64>>("ttl_ms")? {
                        Some(ms) if (1..=MAX_TTL_MS).contains(&ms) => Some(ms),
                        Some(ms) => return err(format!("redis:set({key:?}): ttl_ms must be a whole number from 1 to {MAX_TTL_MS} (got {ms})")),
                        None => None,
                    }
                }
            };
            overlay(lua, "redis:set", |o| {
                o.set(&key, &full, json);
                if let Some(ms) = ttl {
                    o.push_op(vec!["PEXPIRE".into(), full.clone(), ms.to_string()]);
                }
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "del",
        lua.create_function(|lua, values: MultiValue| {
            let key: String = args(lua, values, "redis:del")?;
            let full = full_key(lua, "redis:del", &key)?;
            overlay(lua, "redis:del", |o| {
                o.del(&key, &full);
                Ok(())
            })
        })?,
    )?;
    r.raw_set(
        "exists",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:exists")?;
            let full = full_key(&lua, "redis:exists", &key)?;
            match overlay(&lua, "redis:exists", |o| Ok(o.exists(&key)))? {
                Some(known) => Ok(known),
                None => read::<bool>(&lua, "redis:exists", redis::cmd("EXISTS").arg(&full), Some(state::Depends::Key(&key))).await,
            }
        })?,
    )?;
    r.raw_set(
        "incr",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, by): (String, Option<i64>) = args(&lua, values, "redis:incr")?;
            let by = by.unwrap_or(1);
            let full = full_key(&lua, "redis:incr", &key)?;
            let view = overlay(&lua, "redis:incr", |o| {
                o.check_type(&key, "string")?;
                Ok(o.string(&key))
            })?;
            let base = match view {
                StrView::Local(_) => None,
                _ => {
                    let b: Option<String> = read(&lua, "redis:incr", redis::cmd("GET").arg(&full), Some(state::Depends::Key(&key))).await?;
                    Some(b.map(|b| parse_int(&b, "redis:incr")).transpose()?.unwrap_or(0))
                }
            };
            overlay(&lua, "redis:incr", |o| o.incr(&key, &full, by, base))
        })?,
    )?;
    r.raw_set(
        "keys",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let pattern: String = args(&lua, values, "redis:keys")?;
            // Partitioned state: a handler's partition, or a route's every partition.
            let namespaces = with_call(&lua, "redis:keys", |c| match c.mode {
                Mode::Load => err("redis:keys: redis is not available while the script loads"),
                _ => Ok(match c.partitions.filter(|_| state::namespace_partition(&c.ns).is_none()) {
                    Some(n) => (0..n).map(|p| state::partition_namespace(&c.ns, p)).collect(),
                    None => vec![c.ns.clone()],
                }),
            })?;
            const LIMIT: usize = 10_000;
            // Stored names of script keys: as they are, or escaped with `~` (state::script_key).
            let mut found = Vec::new();
            for ns in &namespaces {
                let prefix = format!("{ns}:");
                for stored_pattern in [pattern.clone(), format!("~{pattern}")] {
                    let glob = format!("{}{stored_pattern}", state::glob_escape(&prefix));
                    if let Some(offline) = offline(&lua) {
                        found.extend(offline.state.lock().scan(&glob));
                        continue;
                    }
                    match redis_store(&lua)?.scan(&glob, LIMIT + 1).await {
                        Ok(k) => found.extend(k),
                        Err(e) => return infra(&lua, "redis:keys", e),
                    }
                }
                // SCAN cannot join a transaction: look at the active namespace after it instead.
                read::<redis::Value>(&lua, "redis:keys", redis::cmd("EXISTS").arg(&prefix), None).await?;
                if found.len() > LIMIT {
                    return err(format!("redis:keys({pattern:?}) matches more than {LIMIT} keys; use a narrower pattern or a hash"));
                }
            }
            let mut keys: BTreeSet<String> = found
                .iter()
                .filter_map(|k| state::script_name(&k[state::namespace_of_stored(k).len() + 1..]))
                .filter(|k| state::glob_match(&pattern, k))
                .map(str::to_string)
                .collect();
            with_call(&lua, "redis:keys", |c| {
                for (k, live) in c.overlay.key_states() {
                    if !state::glob_match(&pattern, k) {
                        continue;
                    }
                    if live {
                        keys.insert(k.to_string());
                    } else {
                        keys.remove(k);
                    }
                }
                Ok(())
            })?;
            lua.create_sequence_from(keys)
        })?,
    )?;
    Ok(())
}

fn install_hashes(lua: &Lua, r: &Table) -> LResult<()> {
    r.raw_set(
        "hget",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, field): (String, Value) = args(&lua, values, "redis:hget")?;
            let field = field_name(field, "redis:hget")?;
            let full = full_key(&lua, "redis:hget", &key)?;
            match overlay(&lua, "redis:hget", |o| Ok(o.hash_field(&key, &field)))? {
                StrView::Local(v) => v.map_or(Ok(Value::Nil), |v| decode(&lua, &v)),
                StrView::Over(d) => {
                    let v: Option<String> = read(&lua, "redis:hget", redis::cmd("HGET").arg(&full).arg(&field), Some(state::Depends::Field(&key, &field))).await?;
                    Ok(Value::Integer(v.map(|v| parse_int(&v, "redis:hget")).transpose()?.unwrap_or(0) + d))
                }
                StrView::Stored => {
                    let v: Option<String> = read(&lua, "redis:hget", redis::cmd("HGET").arg(&full).arg(&field), Some(state::Depends::Field(&key, &field))).await?;
                    v.map_or(Ok(Value::Nil), |v| decode(&lua, &v))
                }
            }
        })?,
    )?;
    r.raw_set(
        "hset",
        lua.create_function(|lua, values: MultiValue| {
            let (key, field, value): (String, Value, Value) = args(lua, values, "redis:hset")?;
            let field = field_name(field, "redis:hset")?;
            let full = full_key(lua, "redis:hset", &key)?;
            let json = encode(&value, "redis:hset")?;
            overlay(lua, "redis:hset", |o| o.hset(&key, &full, &field, json))
        })?,
    )?;
    r.raw_set(
        "hdel",
        lua.create_function(|lua, values: MultiValue| {
            let (key, field): (String, Value) = args(lua, values, "redis:hdel")?;
            let field = field_name(field, "redis:hdel")?;
            let full = full_key(lua, "redis:hdel", &key)?;
            overlay(lua, "redis:hdel", |o| o.hdel(&key, &full, &field))
        })?,
    )?;
    r.raw_set(
        "hincr",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, field, by): (String, Value, Option<i64>) = args(&lua, values, "redis:hincr")?;
            let field = field_name(field, "redis:hincr")?;
            let by = by.unwrap_or(1);
            let full = full_key(&lua, "redis:hincr", &key)?;
            let view = overlay(&lua, "redis:hincr", |o| {
                o.check_type(&key, "hash")?;
                Ok(o.hash_field(&key, &field))
            })?;
            let base = match view {
                StrView::Local(_) => None,
                _ => {
                    let v: Option<String> = read(&lua, "redis:hincr", redis::cmd("HGET").arg(&full).arg(&field), Some(state::Depends::Field(&key, &field))).await?;
                    Some(v.map(|v| parse_int(&v, "redis:hincr")).transpose()?.unwrap_or(0))
                }
            };
            overlay(&lua, "redis:hincr", |o| o.hincr(&key, &full, &field, by, base))
        })?,
    )?;
    r.raw_set(
        "hgetall",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:hgetall")?;
            let full = full_key(&lua, "redis:hgetall", &key)?;
            let stored: BTreeMap<String, String> = if overlay(&lua, "redis:hgetall", |o| Ok(o.hash_needs_stored(&key)))? {
                read(&lua, "redis:hgetall", redis::cmd("HGETALL").arg(&full), Some(state::Depends::Key(&key))).await?
            } else {
                BTreeMap::new()
            };
            let map = overlay(&lua, "redis:hgetall", |o| o.hash_merged(&key, stored))?;
            let t = lua.create_table()?;
            for (f, v) in map {
                t.raw_set(f, decode(&lua, &v)?)?;
            }
            Ok(t)
        })?,
    )?;
    Ok(())
}

fn install_lists_and_sets(lua: &Lua, r: &Table) -> LResult<()> {
    r.raw_set(
        "rpush",
        lua.create_function(|lua, values: MultiValue| {
            let (key, value): (String, Value) = args(lua, values, "redis:rpush")?;
            let full = full_key(lua, "redis:rpush", &key)?;
            let json = encode(&value, "redis:rpush")?;
            overlay(lua, "redis:rpush", |o| o.rpush(&key, &full, json))
        })?,
    )?;
    r.raw_set(
        "lrange",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, start, stop): (String, Option<i64>, Option<i64>) = args(&lua, values, "redis:lrange")?;
            let (start, stop) = (start.unwrap_or(0), stop.unwrap_or(-1));
            let full = full_key(&lua, "redis:lrange", &key)?;
            let local = overlay(&lua, "redis:lrange", |o| Ok(o.list(&key).map(|(c, p)| (c, p.to_vec()))))?;
            let items: Vec<String> = match local {
                None => read(&lua, "redis:lrange", redis::cmd("LRANGE").arg(&full).arg(start).arg(stop), Some(state::Depends::Key(&key))).await?,
                Some((cleared, pushed)) => {
                    let mut all: Vec<String> = if cleared {
                        Vec::new()
                    } else {
                        read(&lua, "redis:lrange", redis::cmd("LRANGE").arg(&full).arg(0).arg(-1), Some(state::Depends::Key(&key))).await?
                    };
                    all.extend(pushed);
                    let n = all.len() as i64;
                    let norm = |i: i64| if i < 0 { (n + i).max(0) } else { i };
                    let (s, e) = (norm(start), norm(stop).min(n - 1));
                    if s > e || s >= n { Vec::new() } else { all[s as usize..=e as usize].to_vec() }
                }
            };
            sequence(&lua, items)
        })?,
    )?;
    r.raw_set(
        "llen",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:llen")?;
            let full = full_key(&lua, "redis:llen", &key)?;
            let (cleared, pushed) = overlay(&lua, "redis:llen", |o| Ok(o.list(&key).map_or((false, 0), |(c, p)| (c, p.len()))))?;
            let stored: usize = if cleared { 0 } else { read(&lua, "redis:llen", redis::cmd("LLEN").arg(&full), Some(state::Depends::Key(&key))).await? };
            Ok(stored + pushed)
        })?,
    )?;
    r.raw_set(
        "sadd",
        lua.create_function(|lua, values: MultiValue| {
            let (key, member): (String, Value) = args(lua, values, "redis:sadd")?;
            let full = full_key(lua, "redis:sadd", &key)?;
            let json = encode(&member, "redis:sadd")?;
            overlay(lua, "redis:sadd", |o| o.sadd(&key, &full, json))
        })?,
    )?;
    r.raw_set(
        "srem",
        lua.create_function(|lua, values: MultiValue| {
            let (key, member): (String, Value) = args(lua, values, "redis:srem")?;
            let full = full_key(lua, "redis:srem", &key)?;
            let json = encode(&member, "redis:srem")?;
            overlay(lua, "redis:srem", |o| o.srem(&key, &full, json))
        })?,
    )?;
    r.raw_set(
        "smembers",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "redis:smembers")?;
            let full = full_key(&lua, "redis:smembers", &key)?;
            let stored: BTreeSet<String> = if overlay(&lua, "redis:smembers", |o| Ok(o.set_needs_stored(&key)))? {
                read(&lua, "redis:smembers", redis::cmd("SMEMBERS").arg(&full), Some(state::Depends::Key(&key))).await?
            } else {
                BTreeSet::new()
            };
            let members = overlay(&lua, "redis:smembers", |o| Ok(o.set_merged(&key, stored)))?;
            sequence(&lua, members)
        })?,
    )?;
    r.raw_set(
        "sismember",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, member): (String, Value) = args(&lua, values, "redis:sismember")?;
            let full = full_key(&lua, "redis:sismember", &key)?;
            let json = encode(&member, "redis:sismember")?;
            match overlay(&lua, "redis:sismember", |o| Ok(o.sismember(&key, &json)))? {
                Some(known) => Ok(known),
                None => read::<bool>(&lua, "redis:sismember", redis::cmd("SISMEMBER").arg(&full).arg(&json), Some(state::Depends::Key(&key))).await,
            }
        })?,
    )?;
    Ok(())
}
