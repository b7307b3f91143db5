//! `http.request` (to a URL) and `http.call` (to a live instance of a service type, found in
//! the membership bucket; in process when this process runs that service).

use super::{args, err, infra, shared, LResult};
use crate::script::convert::{json_to_lua, lua_to_json_text};
use mlua::{Lua, MultiValue, Table, Value};
use std::time::Duration;

/// A response from the network as a Lua table (see [`table`]).
async fn response_table(lua: &Lua, response: reqwest::Response) -> LResult<Table> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(|e| mlua::Error::runtime(format!("reading the response body: {e}")))?;
    table(lua, status, &headers, &bytes)
}

/// A response as a Lua table: `{status, body, headers}`; the body is decoded when it is JSON.
fn table(lua: &Lua, status: u16, header_map: &reqwest::header::HeaderMap, bytes: &[u8]) -> LResult<Table> {
    let headers = lua.create_table()?;
    for (name, value) in header_map {
        headers.raw_set(name.as_str(), value.to_str().unwrap_or_default())?;
    }
    let is_json = header_map
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    let body = if bytes.is_empty() {
        Value::Nil
    } else if is_json {
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => json_to_lua(lua, &v)?,
            Err(_) => Value::String(lua.create_string(bytes)?),
        }
    } else {
        Value::String(lua.create_string(bytes)?)
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
            lua_to_json_text(&body).map_err(|e| mlua::Error::runtime(format!("{what}: body: {e}")))?.into_bytes(),
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

pub fn install(lua: &Lua) -> LResult<()> {
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
            let mut o = outgoing(&method, body, opts.as_ref(), &what)?;
            if let Some(token) = &shared(&lua).service_token {
                o.headers.push((sequent_protocol::declaration::SERVICE_TOKEN_HEADER.to_string(), token.clone()));
            }
            // Retrying a request that may have reached the service is only safe when the
            // script says so (an idempotent request); one that never connected always is.
            let retry_sent = match &opts {
                Some(t) => t.get::<Option<bool>>("retry")?.unwrap_or(o.method == reqwest::Method::GET),
                None => o.method == reqwest::Method::GET,
            };
            let shared = shared(&lua);
            if let Some(router) = shared.local.get(&service) {
                return in_process(&lua, router, &path, &o, &what).await;
            }
            let Some(members) = shared.members.get() else { return infra(&lua, &what, "not connected to NATS yet") };
            shared.directory.ensure_started(members).await;
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
    // http.instances(service) → how many live instances of a service type there are: lets a
    // script tell "not running" (0) at once, where http.call would wait for one to appear.
    http.raw_set(
        "instances",
        lua.create_async_function(|lua, service: String| async move {
            let shared = shared(&lua);
            if shared.local.get(&service).is_some() {
                return Ok(1);
            }
            // Before this process reaches NATS it knows of no instance.
            let Some(members) = shared.members.get() else { return Ok(0) };
            shared.directory.ensure_started(members).await;
            Ok(shared.directory.live_count(&service))
        })?,
    )?;
    lua.globals().raw_set("http", http)
}


/// `http.call` to a service this process runs: its router, called in process.
async fn in_process(lua: &Lua, router: axum::Router, path: &str, o: &Outgoing, what: &str) -> LResult<(Value, Value)> {
    use tower::ServiceExt as _;
    let mut uri = path.to_string();
    if !o.query.is_empty() {
        let query: Vec<String> = o.query.iter().map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v))).collect();
        uri = format!("{uri}?{}", query.join("&"));
    }
    let mut request = axum::http::Request::builder().method(o.method.as_str()).uri(&uri);
    for (k, v) in &o.headers {
        request = request.header(k, v);
    }
    let body = match &o.body {
        Some((bytes, content_type)) => {
            request = request.header(axum::http::header::CONTENT_TYPE, *content_type);
            axum::body::Body::from(bytes.clone())
        }
        None => axum::body::Body::empty(),
    };
    let request = request.body(body).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?;
    let response = match tokio::time::timeout(o.timeout, router.oneshot(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(lua, format!("{what}: {e}")),
        Err(_) => return fail(lua, format!("{what}: no answer within {:?}", o.timeout)),
    };
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| mlua::Error::runtime(format!("{what}: reading the answer: {e}")))?;
    Ok((Value::Table(table(lua, parts.status.as_u16(), &parts.headers, &bytes)?), Value::Nil))
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
