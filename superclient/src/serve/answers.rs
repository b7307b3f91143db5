//! The superclient's own answers: RFC 9457 problems, and path segments decoded.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sequent_protocol::Problem;

/// An RFC 9457 problem answer (`sequent_protocol::problem`), the code derived from the status.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    use sequent_protocol::problem::codes;
    let code = match status {
        StatusCode::BAD_REQUEST => codes::BAD_REQUEST,
        StatusCode::NOT_FOUND => codes::NOT_FOUND,
        StatusCode::METHOD_NOT_ALLOWED => codes::METHOD_NOT_ALLOWED,
        StatusCode::PAYLOAD_TOO_LARGE => codes::TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => codes::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::UPGRADE_REQUIRED => codes::UPGRADE_REQUIRED,
        StatusCode::SERVICE_UNAVAILABLE => codes::UNAVAILABLE,
        _ => codes::INTERNAL,
    };
    problem(Problem::new(status.as_u16(), code, message))
}

/// A failure whose cause was logged under `id`: the detail and `instance` name it.
pub fn failed(status: StatusCode, id: uuid::Uuid, what: &str) -> Response {
    use sequent_protocol::problem::codes;
    let code = if status == StatusCode::SERVICE_UNAVAILABLE { codes::UNAVAILABLE } else { codes::INTERNAL };
    problem(Problem::new(status.as_u16(), code, format!("{what} (error id {id})")).with_instance(format!("urn:uuid:{id}")))
}

pub fn problem(p: Problem) -> Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, sequent_protocol::problem::CONTENT_TYPE)], p.to_json()).into_response()
}

/// A path segment with its %XX escapes decoded (invalid UTF-8 replaced).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
