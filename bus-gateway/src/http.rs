//! The REST API: appends, queries, health and metrics.

use crate::auth::{bearer, Denied, Role};
use crate::live;
use crate::App;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sequent_protocol::envelope::event_json_with_seq;
use sequent_protocol::validate::{validate_id, validate_key, validate_type};
use sequent_protocol::{subjects, AppendReply, ErrorCode, Producer, Receipt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/events", post(append).get(events_by_type))
        .route("/v1/keys/{key}", get(key_version))
        .route("/v1/keys/{key}/events", get(key_events))
        .route("/v1/correlations/{id}/events", get(correlation_events))
        .route("/v1/live", get(live::handler))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such endpoint: the API is under /v1 (see README)")
        })
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

/// A JSON error body `{"error": {"code", "message"}}` with its status.
pub fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    let body = AppendReply::error(code, message);
    (status, axum::Json(body)).into_response()
}

pub fn denied(d: Denied) -> Response {
    match d {
        Denied::Unauthenticated => error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or unknown API token: send Authorization: Bearer <token>",
        ),
        Denied::Forbidden(why) => error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why),
    }
}

fn status_of(reply: &AppendReply) -> StatusCode {
    if let Some(e) = &reply.error {
        return match e.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
    }
    if reply.receipts.iter().any(|r| matches!(r, Receipt::Invalid { .. })) {
        StatusCode::BAD_REQUEST
    } else if reply.receipts.iter().any(|r| matches!(r, Receipt::Conflict { .. })) {
        StatusCode::CONFLICT
    } else {
        StatusCode::CREATED
    }
}

async fn append(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let caller = match app.tokens.check(bearer(&headers), Role::Write) {
        Ok(c) => c,
        Err(d) => return denied(d),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadRequest, "send the events as Content-Type: application/json");
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                format!("the request body is larger than {} bytes", app.config.max_body_bytes),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, e.body_text()),
    };
    let producer = Producer { service: format!("api:{}", caller.name), instance: None };
    let reply = app.append(&body, producer, None).await;
    (status_of(&reply), axum::Json(reply)).into_response()
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn read_access(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    app.tokens.check(bearer(headers), Role::Read).map(|_| ()).map_err(denied)
}

pub fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
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
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string()),
    }
}

async fn events_by_type(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<Page>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    let filter = match (&q.event_type, &q.key) {
        (Some(t), _) if validate_type(t).is_err() => return bad(validate_type(t).unwrap_err().to_string()),
        (_, Some(k)) if validate_key(k).is_err() => return bad(validate_key(k).unwrap_err().to_string()),
        (Some(t), Some(k)) => subjects::key_type_filter(k, t),
        (Some(t), None) => subjects::type_filter(t),
        (None, Some(k)) => subjects::key_filter(k),
        (None, None) => subjects::ALL_EVENTS.to_string(),
    };
    page(&app, vec![filter], &q).await
}

async fn key_events(State(app): State<Arc<App>>, headers: HeaderMap, Path(key): Path<String>, Query(q): Query<Page>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    if let Err(e) = validate_key(&key) {
        return bad(e.to_string());
    }
    page(&app, vec![subjects::key_filter(&key)], &q).await
}

async fn key_version(State(app): State<Arc<App>>, headers: HeaderMap, Path(key): Path<String>) -> Response {
    if let Err(r) = read_access(&app, &headers) {
        return r;
    }
    if let Err(e) = validate_key(&key) {
        return bad(e.to_string());
    }
    match app.store.head(&key).await {
        Ok(head) => axum::Json(serde_json::json!({
            "key": key,
            "current_version": head.as_ref().map(|h| h.version),
            "next_version": head.as_ref().map_or(0, |h| h.version + 1),
            "last_seq": head.as_ref().map(|h| h.seq),
            "last_event_id": head.as_ref().map(|h| h.id.clone()),
        }))
        .into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string()),
    }
}

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
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string()),
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let started = Instant::now();
    let connected = app.client.connection_state() == async_nats::connection::State::Connected;
    match (connected, app.store.last_seq().await) {
        (true, Ok(last_seq)) => axum::Json(serde_json::json!({
            "status": "ok",
            "stream": app.store.stream_name,
            "last_seq": last_seq,
            "checked_in_ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        (_, result) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "unavailable",
                "nats_connected": connected,
                "error": result.err().map(|e| e.to_string()),
            })),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
