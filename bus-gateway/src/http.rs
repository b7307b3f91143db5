//! The REST API: appends, queries, health and readiness, and its OpenAPI document, generated from
//! the handlers' annotations (`/v1/openapi.json`, browsable at `/v1/docs`).
//!
//! Every error answer is an RFC 9457 problem (`application/problem+json`, [`Problem`]): the
//! handlers build theirs, and the last layer ([`problems_only`]) turns any other error answer
//! (axum's extractor rejections, the router's 405, a body-limit refusal) into one.

use crate::answers::{bad, denied, error, problem};
use crate::auth::{bearer, Role};
use crate::live;
use crate::openapi::{ApiDoc, AppendProblem, Appended, EventPage, Events, Health, KeyHead, NotReady, Ready, Sensitive, PROBLEM};
use crate::App;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use sequent_protocol::envelope::event_json_with_seq;
use sequent_protocol::problem::codes;
use sequent_protocol::validate::{validate_id, validate_key, validate_type};
use sequent_protocol::{subjects, AppendReply, AppendRequest, ErrorCode, Problem, Producer, Receipt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub const SPEC_PATH: &str = "/v1/openapi.json";
pub const DOCS_PATH: &str = "/v1/docs";

pub fn router(app: Arc<App>) -> Router {
    let (routes, spec) = api();
    routes
        .merge(SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, spec))
        .fallback(|| async {
            problem(Problem::new(
                404,
                codes::NOT_FOUND,
                format!("no such endpoint: the API is under /v1, described at {SPEC_PATH} (browse it at {DOCS_PATH})"),
            ))
        })
        .layer(axum::middleware::map_response(problems_only))
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// The routes and the OpenAPI document made from the same handlers.
pub fn api() -> (Router<Arc<App>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(append, events_by_type))
        .routes(routes!(key_version))
        .routes(routes!(key_events))
        .routes(routes!(correlation_events))
        .routes(routes!(sensitive_fields))
        .routes(routes!(live::live))
        .routes(routes!(health))
        .routes(routes!(ready))
        .split_for_parts()
}

/// The code of an error status that reached [`problems_only`] without a problem body.
fn code_of(status: StatusCode) -> String {
    match status.as_u16() {
        400 => codes::BAD_REQUEST.into(),
        401 => codes::UNAUTHORIZED.into(),
        403 => codes::FORBIDDEN.into(),
        404 => codes::NOT_FOUND.into(),
        405 => codes::METHOD_NOT_ALLOWED.into(),
        409 => codes::CONFLICT.into(),
        413 => codes::TOO_LARGE.into(),
        415 => codes::UNSUPPORTED_MEDIA_TYPE.into(),
        426 => codes::UPGRADE_REQUIRED.into(),
        429 => codes::TOO_MANY_REQUESTS.into(),
        500 => codes::INTERNAL.into(),
        503 => codes::UNAVAILABLE.into(),
        _ => status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace([' ', '-'], "_"),
    }
}

/// The last layer: an error answer that is not a problem yet (axum's extractor rejections are
/// plain text, the router's 405 is empty, ...) becomes one, its text as `detail`; its other
/// headers (`Allow`, ...) stay.
async fn problems_only(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case(PROBLEM)));
    if is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let detail = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            format!("this method is not allowed here; allowed: {allowed} (see {SPEC_PATH})")
        }
        (true, _) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let p = Problem::new(status.as_u16(), &code_of(status), detail);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM));
    Response::from_parts(parts, Body::from(p.to_json()))
}

/// The answer to an append: 201 with the receipts, or a problem (with the receipts when
/// events were refused one by one).
fn append_answer(reply: AppendReply) -> Response {
    if let Some(e) = reply.error {
        return error(e.code, e.message);
    }
    let invalid: Vec<&str> = reply
        .receipts
        .iter()
        .filter_map(|r| match r {
            Receipt::Invalid { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if !invalid.is_empty() {
        let detail = format!("{}; nothing of the request was stored", invalid.join("; "));
        return problem(Problem::new(400, codes::BAD_REQUEST, detail).with("receipts", &reply.receipts));
    }
    let conflict = reply.receipts.iter().find_map(|r| match r {
        Receipt::Conflict { key, expected, current_version, next_version, .. } => Some(format!(
            "{key} is at version {} (the event expected {expected}); nothing of the request was stored: \
             decide again on fresh state and expect {next_version}",
            current_version.map_or("none".to_string(), |v| v.to_string()),
        )),
        _ => None,
    });
    if let Some(detail) = conflict {
        return problem(Problem::new(409, codes::CONFLICT, detail).with("receipts", &reply.receipts));
    }
    (StatusCode::CREATED, axum::Json(Appended { receipts: reply.receipts })).into_response()
}

/// Append events: all of them, atomically and in order, or none.
///
/// Each event names the version it expects for its key (`expect`); a key that moved meanwhile
/// refuses the whole request with 409 and the key's current version. A retry with the same
/// event ids stores nothing new and answers the original receipts (`duplicate: true`).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = AppendRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Every event is stored (or was already: `duplicate`)", body = Appended),
        (status = 400, description = "Not an append request, or invalid events (their receipts say why); nothing stored", body = AppendProblem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 403, description = "The token may only read", body = Problem, content_type = PROBLEM),
        (status = 409, description = "A key is not at the expected version (`conflict` receipt with its current version); nothing stored", body = AppendProblem, content_type = PROBLEM),
        (status = 413, description = "The body is larger than --max-body-bytes", body = Problem, content_type = PROBLEM),
        (status = 415, description = "The body is not sent as application/json", body = Problem, content_type = PROBLEM),
        (status = 500, description = "The store refused the append for another reason", body = Problem, content_type = PROBLEM),
        (status = 503, description = "JetStream did not answer: the outcome is unknown, retry with the same event ids", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn append(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let caller = match app.caller(bearer(&headers), Role::Write) {
        Ok(c) => c,
        Err(d) => return denied(d),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return problem(Problem::new(415, codes::UNSUPPORTED_MEDIA_TYPE, "send the events as Content-Type: application/json"));
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(ErrorCode::TooLarge, format!("the request body is larger than {} bytes", app.config.max_body_bytes))
        }
        Err(e) => return bad(e.body_text()),
    };
    if caller.service {
        let producer = Producer { service: caller.name.clone(), instance: None };
        return append_answer(app.append(&body, producer, Some(&caller.name)).await);
    }
    let producer = Producer { service: format!("api:{}", caller.name), instance: None };
    append_answer(app.append(&body, producer, None).await)
}

/// Where a page of events starts and how long it is.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// The first stream sequence to return (default 1); pass the previous page's `next_from_seq`.
    #[serde(default)]
    #[param(minimum = 1)]
    from_seq: Option<u64>,
    /// Most events in the page (default 100).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Which events: exact matches, absent = all.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Only events of this type.
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    /// Only events of this key.
    #[serde(default)]
    key: Option<String>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn read_access(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    app.caller(bearer(headers), Role::Read).map(|_| ()).map_err(denied)
}

/// `{"events": [...], "next_from_seq": n|null}` built from stored payloads without re-serialising.
async fn page(app: &App, filters: Vec<String>, page: &Page) -> Response {
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return bad(format!("limit must be between 1 and {MAX_PAGE}"));
    }
    match app.store.scan(&app.store.events, filters, page.from_seq.unwrap_or(1), limit).await {
        Ok((messages, next)) => {
            let mut out = String::from("{\"events\":[");
            for (i, m) in messages.iter().enumerate() {
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                match event_json_with_seq(&m.payload, seq) {
                    Ok(json) => {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&json);
                    }
                    Err(e) => tracing::error!(seq, error = %e, "skipping unreadable stored event"),
                }
            }
            out.push_str("],\"next_from_seq\":");
            out.push_str(&next.map_or("null".to_string(), |n| n.to_string()));
            out.push('}');
            ([(header::CONTENT_TYPE, "application/json")], out).into_response()
        }
        Err(e) => error(ErrorCode::Unavailable, e.to_string()),
    }
}

/// Events of a type and/or a key (or all), in stream order, a page at a time.
///
/// Follow `next_from_seq` (as `from_seq`) until it is null.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "queries",
    params(Filter, Page),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "A malformed type, key or limit", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 503, description = "JetStream did not answer", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn events_by_type(State(app): State<Arc<App>>, headers: HeaderMap, Query(f): Query<Filter>, Query(q): Query<Page>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    let filter = match (&f.event_type, &f.key) {
        (Some(t), _) if validate_type(t).is_err() => return bad(validate_type(t).unwrap_err().to_string()),
        (_, Some(k)) if validate_key(k).is_err() => return bad(validate_key(k).unwrap_err().to_string()),
        (Some(t), Some(k)) => subjects::key_type_filter(k, t),
        (Some(t), None) => subjects::type_filter(t),
        (None, Some(k)) => subjects::key_filter(k),
        (None, None) => subjects::ALL_EVENTS.to_string(),
    };
    page(&app, vec![filter], &q).await
}

/// The history of one key, in stream order (versions 0, 1, 2, ...), a page at a time.
#[utoipa::path(
    get,
    path = "/v1/keys/{key}/events",
    tag = "queries",
    params(("key" = String, Path, description = "The key"), Page),
    responses(
        (status = 200, description = "A page of the key's events", body = EventPage),
        (status = 400, description = "A malformed key or limit", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 503, description = "JetStream did not answer", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn key_events(State(app): State<Arc<App>>, headers: HeaderMap, Path(key): Path<String>, Query(q): Query<Page>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    if let Err(e) = validate_key(&key) {
        return bad(e.to_string());
    }
    page(&app, vec![subjects::key_filter(&key)], &q).await
}

/// Where a key's version chain stands: what the next append must expect.
#[utoipa::path(
    get,
    path = "/v1/keys/{key}",
    tag = "queries",
    params(("key" = String, Path, description = "The key")),
    responses(
        (status = 200, description = "The key's current and next version", body = KeyHead),
        (status = 400, description = "A malformed key", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 503, description = "JetStream did not answer", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn key_version(State(app): State<Arc<App>>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    if let Err(e) = validate_key(&key) {
        return bad(e.to_string());
    }
    match app.store.head(&key).await {
        Ok(head) => axum::Json(KeyHead {
            current_version: head.as_ref().map(|h| h.version),
            next_version: head.as_ref().map_or(0, |h| h.version + 1),
            last_seq: head.as_ref().map(|h| h.seq),
            last_event_id: head.as_ref().map(|h| h.id.clone()),
            key,
        })
        .into_response(),
        Err(e) => error(ErrorCode::Unavailable, e.to_string()),
    }
}

/// What readers must not see of events: the `sensitive` fields of every registered service's
/// declaration (without a registry: the `--policy` file's), for explorers and feeds to redact.
#[utoipa::path(
    get,
    path = "/v1/sensitive",
    tag = "queries",
    responses(
        (status = 200, description = "Event type → data fields to hide", body = Sensitive),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn sensitive_fields(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    let redaction = match &app.registry {
        Some(registry) => sequent_protocol::Redaction::of(registry.all().iter().filter_map(|p| p.declaration.as_ref())),
        None => app.policy.redaction().clone(),
    };
    axum::Json(Sensitive { sensitive: redaction.0.into_iter().map(|(t, f)| (t, f.into_iter().collect())).collect() }).into_response()
}

/// The events of one unit of work (a correlation id), in stream order.
#[utoipa::path(
    get,
    path = "/v1/correlations/{id}/events",
    tag = "queries",
    params(("id" = String, Path, description = "The correlation id")),
    responses(
        (status = 200, description = "The correlation's events (none for an unknown id)", body = Events),
        (status = 400, description = "A malformed id", body = Problem, content_type = PROBLEM),
        (status = 401, description = "No or an unknown API token", body = Problem, content_type = PROBLEM),
        (status = 503, description = "JetStream did not answer", body = Problem, content_type = PROBLEM),
    ),
    security((), ("api_token" = []))
)]
async fn correlation_events(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    if let Err(e) = validate_id("correlation", &id) {
        return bad(e.to_string());
    }
    match app.correlation_events(&id).await {
        Ok(events) => {
            let body = format!("{{\"events\":[{}]}}", events.join(","));
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => error(ErrorCode::Unavailable, e.to_string()),
    }
}

/// NATS is connected and the stream answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "NATS or the stream does not answer", body = Problem, content_type = PROBLEM),
    )
)]
async fn health(State(app): State<Arc<App>>) -> Response {
    let started = Instant::now();
    let connected = app.client.connection_state() == async_nats::connection::State::Connected;
    match (connected, app.store.last_seq().await) {
        (true, Ok(last_seq)) => axum::Json(Health {
            status: "ok".into(),
            stream: app.store.stream_name.clone(),
            last_seq,
            checked_in_ms: started.elapsed().as_millis() as u64,
        })
        .into_response(),
        (connected, result) => {
            let why = result.err().map_or("NATS is not connected".to_string(), |e| e.to_string());
            error(ErrorCode::Unavailable, format!("unhealthy: {why} (NATS connected: {connected})"))
        }
    }
}

/// Ready for traffic: NATS connected, the events and index streams answer, and the gateway is
/// not stopping. Load balancers and orchestrators probe this; `/health` says only whether the
/// process should be restarted.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: every check passed", body = Ready),
        (status = 503, description = "Not ready: the problem's `checks` name what failed (`nats`, `events_stream`, `index_stream`, `stopping`)", body = NotReady, content_type = PROBLEM),
    )
)]
async fn ready(State(app): State<Arc<App>>) -> Response {
    use std::collections::BTreeMap;
    let started = Instant::now();
    let limit = std::time::Duration::from_secs(2);
    let mut checks: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    let mut failed: Vec<String> = Vec::new();
    let mut check = |name: &'static str, result: Result<serde_json::Value, String>| match result {
        Ok(detail) => {
            checks.insert(name, serde_json::json!({"ok": true, "detail": detail}));
        }
        Err(why) => {
            failed.push(format!("{name}: {why}"));
            checks.insert(name, serde_json::json!({"ok": false, "detail": why}));
        }
    };
    let stopping = app.stopping.load(std::sync::atomic::Ordering::SeqCst);
    check("stopping", if stopping { Err("the gateway is stopping (SIGTERM/SIGINT)".into()) } else { Ok(serde_json::json!(false)) });
    let state = app.client.connection_state();
    let connected = state == async_nats::connection::State::Connected;
    check("nats", if connected { Ok(serde_json::json!("connected")) } else { Err(format!("NATS is not connected ({state})")) });
    let mut last_seq = 0;
    let mut streams = Vec::new();
    for (name, stream) in [("events_stream", &app.store.events), ("index_stream", &app.store.index)] {
        let mut stream = stream.clone();
        let result = match tokio::time::timeout(limit, stream.info()).await {
            Ok(Ok(info)) => {
                if name == "events_stream" {
                    last_seq = info.state.last_sequence;
                }
                streams.push(info.config.name.clone());
                Ok(serde_json::json!({"stream": info.config.name, "last_seq": info.state.last_sequence}))
            }
            Ok(Err(e)) => Err(format!("stream {}: {e}", stream.cached_info().config.name)),
            Err(_) => Err(format!("stream {} did not answer within {limit:?}", stream.cached_info().config.name)),
        };
        check(name, result);
    }
    let checked_in_ms = started.elapsed().as_millis() as u64;
    if failed.is_empty() {
        return axum::Json(Ready { status: "ready".into(), stream: app.store.stream_name.clone(), last_seq, streams, checked_in_ms }).into_response();
    }
    problem(
        Problem::new(503, codes::NOT_READY, format!("not ready: {}", failed.join("; ")))
            .with("checks", &checks)
            .with("checked_in_ms", checked_in_ms),
    )
}

/// The metrics listener (`--metrics-listen`): Prometheus text on `/metrics`, kept off the API.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(|State(app): State<Arc<App>>| async move {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
        }))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_error_answers_become_problems_and_keep_their_headers() {
        let plain = (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET,HEAD")]).into_response();
        let r = problems_only(plain).await;
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM);
        assert_eq!(r.headers()[header::ALLOW], "GET,HEAD");
        let body: serde_json::Value = serde_json::from_slice(&axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap()).unwrap();
        assert_eq!(body["code"], "method_not_allowed");
        assert_eq!(body["status"], 405);
        assert!(body["detail"].as_str().unwrap().contains("GET,HEAD"), "{body}");

        let text = (StatusCode::BAD_REQUEST, "Failed to deserialize query string").into_response();
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(problems_only(text).await.into_body(), 1 << 16).await.unwrap()).unwrap();
        assert_eq!((body["code"].as_str(), body["detail"].as_str()), (Some("bad_request"), Some("Failed to deserialize query string")));

        let ok = (StatusCode::CREATED, "fine").into_response();
        assert_eq!(problems_only(ok).await.headers().get(header::CONTENT_TYPE).unwrap(), "text/plain; charset=utf-8");
        assert_eq!(code_of(StatusCode::REQUEST_TIMEOUT), "request_timeout");
    }

    #[test]
    fn refused_appends_carry_their_receipts() {
        let conflict = AppendReply {
            receipts: vec![Receipt::Conflict { id: "e".into(), key: "acc-1".into(), expected: 1, current_version: Some(3), next_version: 4 }],
            error: None,
        };
        let r = append_answer(conflict);
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM);
        assert_eq!(append_answer(AppendReply::error(ErrorCode::Unavailable, "x")).status(), 503);
        let invalid = AppendReply { receipts: vec![Receipt::Invalid { index: 0, reason: "events[0]: bad".into() }], error: None };
        assert_eq!(append_answer(invalid).status(), 400);
    }
}
