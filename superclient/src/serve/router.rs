//! The HTTP server: the script's routes, `/health` and `/ready` (`ops`). Prometheus metrics are
//! served on a listener of their own (`--metrics-listen`), not on the routes' port.
//!
//! A route handler is `fn(method, path, params, body, query, headers, peer)` (header names in
//! lower case; `peer` the client's IP address) and returns `(status, value)`:
//! a table is sent as JSON (an RFC 9457 problem, `type` `urn:sequent:problem:...` with a `code`,
//! as `application/problem+json`; a 429 or 503 problem with a whole-number `retry_after` member
//! also gets a `Retry-After` header), a string as text, nil as an empty body. The superclient's own
//! errors are problems too. Request bodies must be JSON
//! (`Content-Type: application/json`, else 415), well-formed (else 400) and within the body
//! limit (else 413). A Lua error gives a 500 whose body carries an error id; the cause is logged
//! with that id. Writes the route made to Redis commit after it returns, in one transaction.

use super::answers::{failed, json_error, percent_decode};
use crate::runtime::Service;
use crate::script::convert::{json_to_lua, lua_to_json};
use crate::script::routes::{self, Route};
use crate::script::{Call, CallError, Mode};
use crate::state::{self, Changes, Commit, Guard};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mlua::{MultiValue, Value};
use std::collections::HashMap;
use std::sync::Arc;

struct Http {
    svc: Arc<Service>,
    routes: Vec<Route>,
    websockets: Vec<Route>,
    /// `(method pattern)` of each route, by index: the `route` label of its metrics.
    labels: Vec<String>,
}

pub fn router(svc: Arc<Service>) -> Router {
    let routes = routes::table(svc.spec.routes.iter().map(|(p, m)| (p.as_str(), m.as_str())));
    let websockets = routes::table(svc.spec.websockets.iter().map(|p| (p.as_str(), "GET")));
    let labels = svc.spec.routes.iter().map(|(p, m)| format!("{m} {p}")).collect();
    let ops = Router::new()
        .route("/health", get(super::ops::health))
        .route("/ready", get(super::ops::ready))
        .with_state(svc.clone());
    let state = Arc::new(Http { svc, routes, websockets, labels });
    Router::new().fallback(dispatch).with_state(state).merge(ops)
}

/// The route pattern a request matched (never its path: label values stay bounded).
#[derive(Clone)]
struct RouteLabel(String);

async fn dispatch(State(h): State<Arc<Http>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let what = format!("{} {}", request.method(), request.uri().path());
    let mut response = dispatch_inner(&h, request).await;
    let seconds = started.elapsed().as_secs_f64();
    if seconds > 2.0 {
        tracing::warn!(request = what, status = response.status().as_u16(), seconds, "slow request");
    }
    let route = response.extensions_mut().remove::<RouteLabel>().map_or_else(|| "unmatched".to_string(), |l| l.0);
    let service = h.svc.name.clone();
    metrics::counter!("sequent_http_requests_total", "service" => service.clone(), "route" => route.clone(), "status" => response.status().as_u16().to_string()).increment(1);
    metrics::histogram!("sequent_route_seconds", "service" => service, "route" => route).record(seconds);
    response
}

fn header_list(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => out.push((name.as_str().to_string(), value)),
        }
    }
    out
}

/// Routes of a service declared `http = "internal"` answer only the deployment's services
/// (`http.call` sends the per-deployment token), whenever the deployment has one.
fn internal_only(h: &Http, headers: &axum::http::HeaderMap) -> Option<Response> {
    use sequent_protocol::declaration::{Exposure, SERVICE_TOKEN_HEADER};
    if h.svc.spec.declaration.http != Exposure::Internal {
        return None;
    }
    let token = h.svc.shared.service_token.as_deref()?;
    let given = headers.get(SERVICE_TOKEN_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    let same = given.len() == token.len() && given.iter().zip(token.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        return None;
    }
    Some(super::answers::problem(sequent_protocol::Problem::new(
        401,
        sequent_protocol::problem::codes::UNAUTHORIZED,
        format!("{} serves only the services of its deployment (http.call); it is declared http = \"internal\"", h.svc.name),
    )))
}

async fn dispatch_inner(h: &Http, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(refused) = internal_only(h, &parts.headers) {
        return refused;
    }
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let segments: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    if let Some((ws_index, params)) = h.websockets.iter().find_map(|r| r.matches(&segments).map(|p| (r.index, p))) {
        if parts.method == Method::GET {
            use axum::extract::FromRequestParts;
            let query: HashMap<String, String> =
                axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default();
            let headers = header_list(&parts.headers);
            return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                Ok(upgrade) => {
                    let svc = h.svc.clone();
                    let opening = super::sockets::Opening { index: ws_index, path: path.clone(), params, query, headers };
                    let mut r = upgrade.on_upgrade(move |socket| super::sockets::serve(svc, socket, opening));
                    r.extensions_mut().insert(RouteLabel(format!("WEBSOCKET {}", h.svc.spec.websockets.get(ws_index).map_or("?", String::as_str))));
                    r
                }
                Err(_) => json_error(StatusCode::UPGRADE_REQUIRED, format!("{path} is a WebSocket: connect with a WebSocket client")),
            };
        }
    }
    let mut allowed = Vec::new();
    let mut found = None;
    for route in &h.routes {
        if let Some(params) = route.matches(&segments) {
            if route.method == method || (parts.method == Method::HEAD && route.method == "GET") {
                found = Some((route.index, params));
                break;
            }
            allowed.push(route.method.clone());
        }
    }
    let Some((index, params)) = found else {
        if !allowed.is_empty() {
            let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}; allowed: {}", allowed.join(", ")));
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        if parts.method == Method::GET || parts.method == Method::HEAD {
            if let Some(mut r) = super::statics::serve(&h.svc.spec.statics, &path, parts.method == Method::HEAD).await {
                r.extensions_mut().insert(RouteLabel("static".into()));
                return r;
            }
        }
        return json_error(StatusCode::NOT_FOUND, format!("no route for {method} {path}"));
    };
    let headers = header_list(&parts.headers);
    let query: HashMap<String, String> = match axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri) {
        Ok(q) => q.0,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("bad query string: {e}")),
    };
    let limit = h.svc.opts.body_limit;
    let bytes = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(b) => b,
        Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than {limit} bytes")),
    };
    let body_json: Option<serde_json::Value> = if bytes.is_empty() {
        None
    } else {
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
        if !is_json {
            return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the request body must be JSON: send Content-Type: application/json");
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("the request body is not valid JSON: {e}")),
        }
    };
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
    let mut r = run_route(h, index, &method, &path, params, body_json, query, headers, peer).await;
    r.extensions_mut().insert(RouteLabel(h.labels.get(index).cloned().unwrap_or_else(|| "?".into())));
    r
}

#[allow(clippy::too_many_arguments)]
async fn run_route(
    h: &Http,
    index: usize,
    method: &str,
    path: &str,
    params: Vec<(String, String)>,
    body: Option<serde_json::Value>,
    query: HashMap<String, String>,
    headers: Vec<(String, String)>,
    peer: Option<String>,
) -> Response {
    let svc = &h.svc;
    for _ in 0..5 {
        // The cached active namespace: a read finds out atomically if it is not the active one
        // any more (a rebuild swapped it, Redis lost it) and follows or fails.
        let ns = svc.active_ns();
        let mut lease = svc.route_pool.get().await;
        let Some(f) = lease.route(index) else { return json_error(StatusCode::INTERNAL_SERVER_ERROR, "route vanished") };
        let lua_ref = lease.lua();
        let args = (|| -> mlua::Result<_> {
            let p = lua_ref.create_table()?;
            for (k, v) in &params {
                p.raw_set(k.as_str(), v.as_str())?;
            }
            let q = lua_ref.create_table()?;
            for (k, v) in &query {
                q.raw_set(k.as_str(), v.as_str())?;
            }
            let b = match &body {
                Some(b) => json_to_lua(lua_ref, b)?,
                None => Value::Nil,
            };
            let hd = lua_ref.create_table()?;
            for (k, v) in &headers {
                hd.raw_set(k.as_str(), v.as_str())?;
            }
            Ok((method.to_string(), path.to_string(), p, b, q, hd, peer.clone()))
        })();
        let args = match args {
            Ok(a) => a,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("the request cannot be passed to Lua: {e}")),
        };
        metrics::counter!("sequent_lua_calls_total", "kind" => "route").increment(1);
        let (result, mut call) = lease.call::<MultiValue>(&f, args, svc.call(Mode::Route, &ns)).await;
        let values = match result {
            Ok(v) => v,
            Err(e) => {
                if matches!(e, CallError::Resource(_)) {
                    lease.renew();
                }
                drop(lease);
                release_locks(svc, &call).await;
                // Its reads went stale before it sent anything (`call.rerun`), or a rebuild
                // swapped its state in while it read the old one: a route that has sent nothing
                // yet runs again on fresh state.
                if matches!(e, CallError::Infra(_)) && call.sent == 0 && call.sends.is_empty() {
                    let moved = matches!(svc.refresh_active().await, Ok(now) if now != call.ns);
                    if call.rerun || moved {
                        tracing::debug!(method, path, moved, "the state moved under the route; running it again");
                        continue;
                    }
                }
                return lua_failure(method, path, e);
            }
        };
        let response = build_response(&values, method, path);
        drop(lease);
        svc.hub.apply(std::mem::take(&mut call.hub_ops));
        if call.overlay.is_empty() {
            release_locks(svc, &call).await;
            return response;
        }
        if let Err(e) = call.commit_namespace(false) {
            release_locks(svc, &call).await;
            return lua_failure(method, path, CallError::Script(e));
        }
        // `bus:wait` may have moved the call to a state a rebuild swapped in meanwhile.
        let mut committed = commit_route(svc, &call).await;
        if let Ok(Commit::NamespaceMoved) = committed {
            // A swap while the commit waited (or raced it): notes of versions move along.
            if let Ok(now) = svc.refresh_active().await {
                if call.overlay.move_version_notes(state::generation_of(&now)) {
                    call.ns = state::regenerate(&call.ns, state::generation_of(&now));
                    committed = commit_route(svc, &call).await;
                }
            }
        }
        match committed {
            Ok(Commit::Applied | Commit::AlreadyApplied) => return response,
            Ok(moved) => {
                release_locks(svc, &call).await;
                let _ = svc.refresh_active().await;
                if call.sent > 0 || !call.sends.is_empty() {
                    return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("the service state moved under the request ({moved:?}); retry the request"));
                }
                continue;
            }
            Err(e) => {
                release_locks(svc, &call).await;
                let id = uuid::Uuid::now_v7();
                tracing::error!(error_id = %id, method, path, error = %e, "committing the route's Redis writes failed");
                return failed(StatusCode::SERVICE_UNAVAILABLE, id, "the state store failed; retry later");
            }
        }
    }
    json_error(StatusCode::SERVICE_UNAVAILABLE, "the service state kept moving; retry the request")
}

async fn commit_route(svc: &Service, call: &Call) -> redis::RedisResult<Commit> {
    let ns = call.commit_namespace(false).map_err(|e| redis::RedisError::from((redis::ErrorKind::Client, "refused", e)))?;
    svc.store
        .commit_waiting(&Changes {
            expected_active: Some(&ns),
            ns: &ns,
            guard: Guard::None,
            overlay: &call.overlay,
            owner: call.owner.as_deref(),
            locked: &call.locked,
        })
        .await
}

/// Releases the locks of a route that will not commit (its sends were decided on them).
async fn release_locks(svc: &Service, call: &Call) {
    if let Some(owner) = &call.owner {
        if let Err(e) = svc.store.unlock(&call.locks_namespace(), owner, &call.locked).await {
            tracing::warn!(error = %e, "could not release a route's locks (they expire by themselves)");
        }
    }
}

fn lua_failure(method: &str, path: &str, e: CallError) -> Response {
    let id = uuid::Uuid::now_v7();
    match e {
        CallError::Infra(m) => {
            tracing::warn!(error_id = %id, method, path, error = m, "route failed: infrastructure");
            failed(StatusCode::SERVICE_UNAVAILABLE, id, "a backing service is unavailable; retry later")
        }
        CallError::Script(m) | CallError::Resource(m) => {
            tracing::error!(error_id = %id, method, path, error = m, "route handler failed");
            failed(StatusCode::INTERNAL_SERVER_ERROR, id, "internal error")
        }
    }
}

fn build_response(values: &MultiValue, method: &str, path: &str) -> Response {
    let status = match values.front() {
        Some(Value::Integer(n)) => u16::try_from(*n).ok(),
        Some(Value::Number(n)) if n.fract() == 0.0 => Some(*n as u16),
        _ => None,
    };
    let Some(status) = status.and_then(|s| StatusCode::from_u16(s).ok()).filter(|s| (100..600).contains(&s.as_u16())) else {
        let id = uuid::Uuid::now_v7();
        tracing::error!(error_id = %id, method, path, "route handler must return (status, table|string|nil); got {:?}", values.front().map(|v| v.type_name()));
        return failed(StatusCode::INTERNAL_SERVER_ERROR, id, "internal error");
    };
    match values.get(1) {
        None | Some(Value::Nil) => status.into_response(),
        Some(Value::String(s)) => {
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], s.to_string_lossy()).into_response()
        }
        Some(v @ Value::Table(_)) => match lua_to_json(v) {
            // A problem (RFC 9457) is labelled as one.
            Ok(json) if status.as_u16() >= 400 && json["type"].as_str().is_some_and(|t| t.starts_with(sequent_protocol::problem::TYPE_PREFIX)) && json["code"].is_string() => {
                let mut r = (status, [(header::CONTENT_TYPE, sequent_protocol::problem::CONTENT_TYPE)], json.to_string()).into_response();
                if let (429 | 503, Some(after)) = (status.as_u16(), json["retry_after"].as_u64()) {
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
                }
                r
            }
            Ok(json) => (status, axum::Json(json)).into_response(),
            Err(e) => {
                let id = uuid::Uuid::now_v7();
                tracing::error!(error_id = %id, method, path, error = e, "route returned a table that is not JSON");
                failed(StatusCode::INTERNAL_SERVER_ERROR, id, "internal error")
            }
        },
        Some(other) => {
            let id = uuid::Uuid::now_v7();
            tracing::error!(error_id = %id, method, path, "route returned a {} as body; return a table, a string or nil", other.type_name());
            failed(StatusCode::INTERNAL_SERVER_ERROR, id, "internal error")
        }
    }
}
