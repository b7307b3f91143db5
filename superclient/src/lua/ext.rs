//! The API extensions a backend-for-frontend and its neighbours need:
//!
//! - `bus:last_event(key)`, `bus:events_after(key, seq[, limit])`: a key's events read from the
//!   stream itself (the authority), for decisions that must not trust a projection that lags;
//! - `bus:wait(timeout_ms, fn)`: read-your-writes in routes, woken by the service's commits;
//! - `bus:env(name)`: `SEQUENT_*` settings (never the secrets of the superclient itself);
//! - `bus:serve_static`, `bus:add_websocket`, `bus:add_live_listener`, `bus:push`, `bus:join`:
//!   the UI's files and its live updates (see `crate::sockets`);
//! - `http.request`, `http.call`: outbound HTTP, to a URL or to a service type by name;
//! - `admin.services/parked/release` (with `--admin-api`): what operators see;
//! - `crypto.random_hex/uuid/sha256_hex`.

use super::api::{args, err, infra, json_to_lua, lua_to_json, mode, registering, shared, with_call};
use super::{Handlers, Mode};
use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value};
use sequent_protocol::subjects;
use sequent_protocol::validate::{validate_key, validate_type};
use sequent_protocol::Event;
use std::path::PathBuf;
use std::time::Duration;

type LResult<T> = mlua::Result<T>;

/// A tree of static files served for GET/HEAD requests no route matched.
#[derive(Debug, Clone)]
pub struct StaticSpec {
    /// URL prefix, e.g. `/`.
    pub prefix: String,
    pub dir: PathBuf,
    /// File (relative to `dir`) answered for paths that name no file: single-page apps.
    pub fallback: Option<String>,
    /// URL prefixes never served from the tree (e.g. `/api/`): they get the JSON 404.
    pub exclude: Vec<String>,
}

/// What a call asked of this instance's WebSockets.
#[derive(Debug, Clone)]
pub enum HubOp {
    /// Send `message` (JSON text) once to every socket subscribed to one of `topics`.
    Push { topics: Vec<String>, message: String },
    /// Sockets subscribed to `topic` also subscribe to `new_topic`.
    Join { topic: String, new_topic: String },
}

/// An event as the Lua table scripts see from `bus:last_event` and `bus:events_after`.
pub fn event_table(lua: &Lua, event: &Event) -> LResult<Table> {
    let data: serde_json::Value = serde_json::from_str(event.data.get()).map_err(mlua::Error::external)?;
    let t = lua.create_table()?;
    t.raw_set("id", event.id.as_str())?;
    t.raw_set("type", event.event_type.as_str())?;
    t.raw_set("key", event.key.as_str())?;
    t.raw_set("version", event.version)?;
    t.raw_set("seq", event.seq)?;
    t.raw_set("time", event.time.as_str())?;
    t.raw_set("correlation", event.correlation.as_str())?;
    t.raw_set("causation", event.causation.as_deref())?;
    t.raw_set("producer", event.producer.service.as_str())?;
    t.raw_set("data", json_to_lua(lua, &data)?)?;
    Ok(t)
}

pub fn install(lua: &Lua) -> LResult<()> {
    let bus: Table = lua.globals().get("bus")?;
    install_store_reads(lua, &bus)?;
    install_wait_env(lua, &bus)?;
    install_web(lua, &bus)?;
    install_http(lua)?;
    install_admin(lua)?;
    install_crypto(lua)?;
    Ok(())
}

async fn stream_of(lua: &Lua, what: &str) -> LResult<async_nats::jetstream::stream::Stream<()>> {
    let shared = shared(lua);
    let Some((js, name)) = shared.js.get() else { return infra(lua, what, "not connected to NATS yet") };
    // `get_stream_no_info` makes no request: it only names the stream.
    js.get_stream_no_info(name).await.map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))
}

fn check_reads_allowed(lua: &Lua, what: &str) -> LResult<()> {
    match mode(lua) {
        Some(Mode::Load) | None => err(format!("{what} is only available in handlers and routes, not while the script loads")),
        _ => Ok(()),
    }
}

fn install_store_reads(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set(
        "last_event",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let key: String = args(&lua, values, "bus:last_event")?;
            let what = format!("bus:last_event({key})");
            check_reads_allowed(&lua, &what)?;
            validate_key(&key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
            let stream = stream_of(&lua, &what).await?;
            use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
            match stream.get_last_raw_message_by_subject(&subjects::key_filter(&key)).await {
                Ok(msg) => {
                    let event = Event::from_stored(&msg.payload, msg.sequence)
                        .map_err(|e| mlua::Error::runtime(format!("{what}: the stored event at seq {} is unreadable: {e}", msg.sequence)))?;
                    Ok(Value::Table(event_table(&lua, &event)?))
                }
                Err(e) if matches!(e.kind(), K::NoMessageFound) => Ok(Value::Nil),
                Err(e) => infra(&lua, &what, e),
            }
        })?,
    )?;
    bus.raw_set(
        "events_after",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (key, after, limit): (String, u64, Option<usize>) = args(&lua, values, "bus:events_after")?;
            let what = format!("bus:events_after({key}, {after})");
            check_reads_allowed(&lua, &what)?;
            validate_key(&key).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
            let limit = limit.unwrap_or(1000).clamp(1, 10_000);
            let stream = stream_of(&lua, &what).await?;
            let filter = subjects::key_filter(&key);
            let out = lua.create_table()?;
            let mut next = after + 1;
            use async_nats::jetstream::stream::RawMessageErrorKind as K;
            while out.raw_len() < limit {
                match stream.raw_message_builder().sequence(next).next_by_subject(filter.clone()).send().await {
                    Ok(msg) => {
                        let event = Event::from_stored(&msg.payload, msg.sequence)
                            .map_err(|e| mlua::Error::runtime(format!("{what}: the stored event at seq {} is unreadable: {e}", msg.sequence)))?;
                        out.raw_push(event_table(&lua, &event)?)?;
                        next = msg.sequence + 1;
                    }
                    Err(e) if matches!(e.kind(), K::NoMessageFound) => break,
                    Err(e) => return infra(&lua, &what, e),
                }
            }
            out.set_metatable(Some(lua.array_metatable()))?;
            Ok(out)
        })?,
    )?;
    Ok(())
}

fn install_wait_env(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set(
        "wait",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (timeout_ms, condition): (u64, Function) = args(&lua, values, "bus:wait")?;
            if mode(&lua) != Some(Mode::Route) {
                return err(
                    "bus:wait may only be used in routes: a waiting event handler would hold its whole partition \
                     (decide from bus:last_event instead)",
                );
            }
            let timeout = Duration::from_millis(timeout_ms.min(60_000));
            let mut commits = shared(&lua).commits.subscribe();
            let deadline = tokio::time::Instant::now() + timeout;
            let store = shared(&lua).redis.get().cloned();
            loop {
                // Mark what we have seen before looking, so a commit in between wakes us.
                commits.borrow_and_update();
                // A rebuild may swap the state in while we wait: read the active one (a call
                // with buffered writes keeps its namespace; its commit will notice the swap).
                if let Some(store) = &store {
                    super::api::follow_swap(&lua, "bus:wait", store).await?;
                }
                let ok: Value = condition.call_async(()).await?;
                let waited = timeout.saturating_sub(deadline.saturating_duration_since(tokio::time::Instant::now()));
                if !matches!(ok, Value::Nil | Value::Boolean(false)) {
                    if waited > Duration::from_secs(2) {
                        let ns = with_call(&lua, "bus:wait", |c| Ok(c.ns.clone()))?;
                        tracing::warn!(ns, waited = ?waited, "bus:wait: the condition took long to hold");
                    }
                    return Ok(true);
                }
                if tokio::time::Instant::now() >= deadline {
                    let ns = with_call(&lua, "bus:wait", |c| Ok(c.ns.clone()))?;
                    tracing::warn!(ns, ?timeout, "bus:wait: timed out");
                    return Ok(false);
                }
                // Woken by a commit of any instance of this service; the short re-check covers a
                // notification lost while Redis pub/sub reconnects.
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
        })?,
    )?;
    bus.raw_set(
        "env",
        lua.create_function(|lua, values: MultiValue| {
            let name: String = args(lua, values, "bus:env")?;
            if !name.starts_with("SEQUENT_") {
                return err(format!("bus:env({name:?}): only SEQUENT_* variables may be read"));
            }
            if ["SEQUENT_TOKEN_SECRET", "SEQUENT_PASSWORD_PEPPER", "SEQUENT_NATS_PASSWORD"].contains(&name.as_str()) {
                return err(format!("bus:env({name:?}): this secret belongs to the superclient, not to scripts"));
            }
            Ok(std::env::var(&name).ok())
        })?,
    )?;
    Ok(())
}

fn string_list(v: Value, what: &str) -> LResult<Vec<String>> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.to_str()?.to_string()]),
        Value::Table(t) => {
            let mut out = Vec::new();
            for item in t.sequence_values::<String>() {
                out.push(item.map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?);
            }
            Ok(out)
        }
        other => err(format!("{what}: expected a string or a list of strings, got a {}", other.type_name())),
    }
}

fn install_web(lua: &Lua, bus: &Table) -> LResult<()> {
    bus.raw_set(
        "serve_static",
        lua.create_function(|lua, values: MultiValue| {
            let (prefix, dir, opts): (String, String, Option<Table>) = args(lua, values, "bus:serve_static")?;
            registering(lua, "bus:serve_static")?;
            if !prefix.starts_with('/') {
                return err(format!("bus:serve_static({prefix:?}): the prefix must start with '/'"));
            }
            let mut path = PathBuf::from(&dir);
            if path.is_relative() {
                path = shared(lua).script_dir.join(path);
            }
            let (fallback, exclude) = match opts {
                Some(t) => (t.get::<Option<String>>("fallback")?, string_list(t.get("exclude")?, "bus:serve_static exclude")?),
                None => (None, Vec::new()),
            };
            if !path.is_dir() {
                tracing::warn!(dir = %path.display(), "bus:serve_static: the directory does not exist (yet); requests get a 404 until it does");
            }
            let spec = StaticSpec { prefix, dir: path, fallback, exclude };
            lua.app_data_mut::<Handlers>().expect("installed").statics.push(spec);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_websocket",
        lua.create_function(|lua, values: MultiValue| {
            let (path, f): (String, Function) = args(lua, values, "bus:add_websocket")?;
            registering(lua, "bus:add_websocket")?;
            crate::http::check_pattern(&path).map_err(|e| mlua::Error::runtime(format!("bus:add_websocket: {e}")))?;
            let mut h = lua.app_data_mut::<Handlers>().expect("installed");
            if h.websockets.iter().any(|(p, _)| *p == path) {
                return err(format!("bus:add_websocket: {path} is registered twice"));
            }
            h.websockets.push((path, f));
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "add_live_listener",
        lua.create_function(|lua, values: MultiValue| {
            let (event_type, f): (String, Function) = args(lua, values, "bus:add_live_listener")?;
            registering(lua, "bus:add_live_listener")?;
            validate_type(&event_type).map_err(|e| mlua::Error::runtime(format!("bus:add_live_listener: {e}")))?;
            lua.app_data_mut::<Handlers>().expect("installed").live.insert(event_type, f);
            Ok(())
        })?,
    )?;
    bus.raw_set(
        "push",
        lua.create_function(|lua, values: MultiValue| {
            let (topics, message): (Value, Value) = args(lua, values, "bus:push")?;
            let topics = string_list(topics, "bus:push topics")?;
            let message = match &message {
                Value::Table(_) => lua_to_json(&message).map_err(|e| mlua::Error::runtime(format!("bus:push: {e}")))?.to_string(),
                Value::String(s) => s.to_str()?.to_string(),
                other => return err(format!("bus:push: the message must be a table (sent as JSON) or a string, not a {}", other.type_name())),
            };
            with_call(lua, "bus:push", |c| match c.mode {
                Mode::Load => err("bus:push: nothing to push to while the script loads"),
                Mode::Rebuild => Ok(()),
                _ => {
                    c.hub_ops.push(HubOp::Push { topics, message });
                    Ok(())
                }
            })
        })?,
    )?;
    bus.raw_set(
        "join",
        lua.create_function(|lua, values: MultiValue| {
            let (topic, new_topic): (String, String) = args(lua, values, "bus:join")?;
            with_call(lua, "bus:join", |c| match c.mode {
                Mode::Load => err("bus:join: nothing to join while the script loads"),
                Mode::Rebuild => Ok(()),
                _ => {
                    c.hub_ops.push(HubOp::Join { topic, new_topic });
                    Ok(())
                }
            })
        })?,
    )?;
    Ok(())
}

/// A response as a Lua table: `{status, body, headers}`; the body is decoded when it is JSON.
async fn response_table(lua: &Lua, response: reqwest::Response) -> LResult<Table> {
    let status = response.status().as_u16();
    let headers = lua.create_table()?;
    for (name, value) in response.headers() {
        headers.raw_set(name.as_str(), value.to_str().unwrap_or_default())?;
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    let bytes = response.bytes().await.map_err(|e| mlua::Error::runtime(format!("reading the response body: {e}")))?;
    let body = if bytes.is_empty() {
        Value::Nil
    } else if is_json {
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => json_to_lua(lua, &v)?,
            Err(_) => Value::String(lua.create_string(&bytes)?),
        }
    } else {
        Value::String(lua.create_string(&bytes)?)
    };
    let t = lua.create_table()?;
    t.raw_set("status", status)?;
    t.raw_set("body", body)?;
    t.raw_set("headers", headers)?;
    Ok(t)
}

struct Outgoing {
    method: reqwest::Method,
    body: Option<(Vec<u8>, &'static str)>,
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    timeout: Duration,
}

fn outgoing(method: &str, body: Value, opts: Option<&Table>, what: &str) -> LResult<Outgoing> {
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("{what}: unknown method {method:?}")))?;
    let body = match &body {
        Value::Nil => None,
        Value::String(s) => Some((s.as_bytes().to_vec(), "text/plain; charset=utf-8")),
        Value::Table(_) => Some((
            lua_to_json(&body).map_err(|e| mlua::Error::runtime(format!("{what}: body: {e}")))?.to_string().into_bytes(),
            "application/json",
        )),
        other => return err(format!("{what}: the body must be a table (sent as JSON), a string or nil, not a {}", other.type_name())),
    };
    let mut headers = Vec::new();
    let mut query = Vec::new();
    let mut timeout = Duration::from_secs(10);
    if let Some(t) = opts {
        if let Some(h) = t.get::<Option<Table>>("headers")? {
            for pair in h.pairs::<String, String>() {
                headers.push(pair?);
            }
        }
        if let Some(q) = t.get::<Option<Table>>("query")? {
            for pair in q.pairs::<String, Value>() {
                let (k, v) = pair?;
                let v = match v {
                    Value::String(s) => s.to_str()?.to_string(),
                    Value::Integer(n) => n.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Boolean(b) => b.to_string(),
                    other => return err(format!("{what}: query value {k:?} is a {}", other.type_name())),
                };
                query.push((k, v));
            }
        }
        if let Some(ms) = t.get::<Option<u64>>("timeout_ms")? {
            timeout = Duration::from_millis(ms.clamp(1, 120_000));
        }
    }
    Ok(Outgoing { method, body, headers, query, timeout })
}

fn build(client: &reqwest::Client, url: &str, o: &Outgoing) -> reqwest::RequestBuilder {
    let mut req = client.request(o.method.clone(), url).timeout(o.timeout);
    if !o.query.is_empty() {
        req = req.query(&o.query);
    }
    for (k, v) in &o.headers {
        req = req.header(k, v);
    }
    if let Some((bytes, content_type)) = &o.body {
        req = req.header(reqwest::header::CONTENT_TYPE, *content_type).body(bytes.clone());
    }
    req
}

fn fail(lua: &Lua, message: String) -> LResult<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(message)?)))
}

fn install_http(lua: &Lua) -> LResult<()> {
    let http = lua.create_table()?;
    // http.request{method=, url=, body=, headers=, query=, timeout_ms=} → response | nil, error
    http.raw_set(
        "request",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let opts: Table = args(&lua, values, "http.request")?;
            let url: String = opts.get::<Option<String>>("url")?.ok_or_else(|| mlua::Error::runtime("http.request: url is required"))?;
            let method: String = opts.get::<Option<String>>("method")?.unwrap_or_else(|| "GET".into());
            let o = outgoing(&method, opts.get("body")?, Some(&opts), "http.request")?;
            let client = shared(&lua).http.clone();
            match build(&client, &url, &o).send().await {
                Ok(response) => Ok((Value::Table(response_table(&lua, response).await?), Value::Nil)),
                Err(e) => fail(&lua, format!("{method} {url}: {e}")),
            }
        })?,
    )?;
    // http.call(service, method, path[, body[, opts]]) → response | nil, error
    http.raw_set(
        "call",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service, method, path, body, opts): (String, String, String, Value, Option<Table>) = args(&lua, values, "http.call")?;
            let what = format!("http.call({service}, {method} {path})");
            if !path.starts_with('/') {
                return err(format!("{what}: the path must start with '/'"));
            }
            let o = outgoing(&method, body, opts.as_ref(), &what)?;
            // Retrying a request that may have reached the service is only safe when the
            // script says so (an idempotent request); one that never connected always is.
            let retry_sent = match &opts {
                Some(t) => t.get::<Option<bool>>("retry")?.unwrap_or(o.method == reqwest::Method::GET),
                None => o.method == reqwest::Method::GET,
            };
            let shared = shared(&lua);
            let Some((js, _)) = shared.js.get() else { return infra(&lua, &what, "not connected to NATS yet") };
            shared.directory.ensure_started(js).await;
            let deadline = tokio::time::Instant::now() + o.timeout.max(Duration::from_secs(3));
            let mut last_error: String;
            let mut tried_sent = 0;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                match shared.directory.pick(&service) {
                    Some(addr) => {
                        let url = format!("http://{addr}{path}");
                        match build(&shared.http, &url, &o).send().await {
                            Ok(response) => return Ok((Value::Table(response_table(&lua, response).await?), Value::Nil)),
                            Err(e) => {
                                let unsent = e.is_connect();
                                last_error = format!("{addr}: {e}");
                                tracing::debug!(service, addr, error = %e, unsent, "http.call attempt failed");
                                if unsent {
                                    shared.directory.suspect(&service, &addr);
                                } else if !retry_sent || tried_sent >= 2 {
                                    return fail(&lua, format!("{what}: {last_error}"));
                                } else {
                                    tried_sent += 1;
                                    shared.directory.suspect(&service, &addr);
                                }
                            }
                        }
                    }
                    None => last_error = format!("no live instance of {service} in the membership bucket"),
                }
                if tokio::time::Instant::now() >= deadline {
                    return fail(&lua, format!("{what}: {last_error}"));
                }
                tokio::time::sleep(Duration::from_millis((20 * u64::from(attempt)).min(250))).await;
            }
        })?,
    )?;
    lua.globals().raw_set("http", http)
}

fn require_admin(lua: &Lua, what: &str) -> LResult<std::sync::Arc<super::Shared>> {
    let shared = shared(lua);
    if !shared.admin_api {
        return err(format!("{what}: the admin API is off; start the superclient with --admin-api (SEQUENT_ADMIN_API=1)"));
    }
    check_reads_allowed(lua, what)?;
    Ok(shared)
}

fn install_admin(lua: &Lua) -> LResult<()> {
    let admin = lua.create_table()?;
    admin.raw_set(
        "services",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.services")?;
            let Some((js, stream)) = shared.js.get() else { return infra(&lua, "admin.services", "not connected to NATS yet") };
            shared.directory.ensure_started(js).await;
            match shared.directory.services(js, stream).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.services", e),
            }
        })?,
    )?;
    admin.raw_set(
        "parked",
        lua.create_async_function(|lua, _: MultiValue| async move {
            let shared = require_admin(&lua, "admin.parked")?;
            let Some((js, _)) = shared.js.get() else { return infra(&lua, "admin.parked", "not connected to NATS yet") };
            shared.directory.ensure_started(js).await;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.parked", "redis is not connected yet") };
            match crate::directory::parked(store, &shared.directory.service_names()).await {
                Ok(v) => json_to_lua(&lua, &v),
                Err(e) => infra(&lua, "admin.parked", e),
            }
        })?,
    )?;
    admin.raw_set(
        "release",
        lua.create_async_function(|lua, values: MultiValue| async move {
            let (service, key): (String, String) = args(&lua, values, "admin.release")?;
            let shared = require_admin(&lua, "admin.release")?;
            let Some(store) = shared.redis.get() else { return infra(&lua, "admin.release", "redis is not connected yet") };
            match crate::directory::release(store, &service, &key).await {
                Ok(found) => Ok(found),
                Err(e) => infra(&lua, "admin.release", e),
            }
        })?,
    )?;
    lua.globals().raw_set("admin", admin)
}

fn install_crypto(lua: &Lua) -> LResult<()> {
    let crypto: Table = lua.globals().get("crypto")?;
    crypto.raw_set(
        "random_hex",
        lua.create_function(|lua, values: MultiValue| {
            let n: Option<usize> = args(lua, values, "crypto.random_hex")?;
            let n = n.unwrap_or(16);
            if n == 0 || n > 256 {
                return err("crypto.random_hex(n): n is a number of bytes between 1 and 256");
            }
            let mut bytes = vec![0u8; n];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            Ok(hex(&bytes))
        })?,
    )?;
    crypto.raw_set("uuid", lua.create_function(|_, _: MultiValue| Ok(uuid::Uuid::now_v7().to_string()))?)?;
    crypto.raw_set(
        "sha256_hex",
        lua.create_function(|lua, values: MultiValue| {
            let s: mlua::LuaString = args(lua, values, "crypto.sha256_hex")?;
            use sha2::Digest;
            Ok(hex(&sha2::Sha256::digest(s.as_bytes())))
        })?,
    )?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
