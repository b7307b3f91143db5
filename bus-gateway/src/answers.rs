//! The gateway's error answers: RFC 9457 problems (`application/problem+json`), shared by the
//! REST API and the live feed.

use crate::auth::Denied;
use crate::openapi::PROBLEM;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sequent_protocol::{ErrorCode, Problem};

/// A problem as an answer: its status, `Content-Type: application/problem+json`.
pub fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM))], p.to_json()).into_response()
}

/// A problem of the wire's error codes (`bad_request`, `unavailable`, ...).
pub fn error(code: ErrorCode, detail: impl Into<String>) -> Response {
    problem(Problem::from_error_code(code, detail))
}

pub fn bad(detail: impl Into<String>) -> Response {
    error(ErrorCode::BadRequest, detail)
}

pub fn denied(d: Denied) -> Response {
    match d {
        Denied::Unauthenticated => {
            let mut r = error(ErrorCode::Unauthorized, "missing or unknown API token: send Authorization: Bearer <token>");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Denied::Forbidden(why) => error(ErrorCode::Forbidden, why),
    }
}
