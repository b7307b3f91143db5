//! RFC 9457 problem details: the one shape of every HTTP error body of Sequent (the gateway,
//! the superclient's built-in answers, the bank's services), sent as
//! `Content-Type: application/problem+json`:
//!
//! ```json
//! {"type": "urn:sequent:problem:insufficient-funds", "title": "Insufficient funds",
//!  "status": 422, "detail": "Not enough money in this account.",
//!  "code": "insufficient funds", "balance_cents": 100}
//! ```
//!
//! - `code` (an extension member) is the machine-readable reason clients match on; `type` is
//!   derived from it ([`type_uri`]) and `title` too ([`title`]), so both are the same for every
//!   occurrence of a code, as RFC 9457 asks.
//! - `status` repeats the HTTP status; `detail` says what was wrong and what to do, for a person.
//! - `instance` (optional) names this occurrence, e.g. `urn:uuid:<error id>` when the cause was
//!   logged under that id.
//! - Further extension members carry data about the problem (`balance_cents`, `receipts`, ...).
//!
//! The NATS append protocol keeps its own `{"error": {"code", "message"}}` ([`crate::ErrorBody`]):
//! it is a wire format between services and the gateway, not HTTP.

use crate::wire::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Every problem type URI starts with this; the rest is the code's slug.
pub const TYPE_PREFIX: &str = "urn:sequent:problem:";

/// The codes of the HTTP servers' own answers (the gateway's, the superclient's built-ins),
/// beside [`ErrorCode::code`]'s. The bank's services have codes of their own ("insufficient
/// funds", ...), documented in their OpenAPI document.
pub mod codes {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const CONFLICT: &str = "conflict";
    pub const TOO_LARGE: &str = "too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UPGRADE_REQUIRED: &str = "upgrade_required";
    pub const TOO_MANY_REQUESTS: &str = "too_many_requests";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const UNAVAILABLE: &str = "unavailable";
    /// `/ready` of the gateway and the superclient: a dependency or the process is not ready.
    pub const NOT_READY: &str = "not_ready";
    pub const INTERNAL: &str = "internal";
}

/// The members RFC 9457 defines and `code`: extensions must not take these names.
const RESERVED: [&str; 6] = ["type", "title", "status", "detail", "instance", "code"];

/// An RFC 9457 problem details object with Sequent's `code` extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The problem type: `urn:sequent:problem:<slug of code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type (the same for every occurrence of a code).
    pub title: String,
    /// The HTTP status code of the answer.
    pub status: u16,
    /// What went wrong this time and what to do about it, for a person.
    pub detail: String,
    /// Identifies this occurrence (e.g. `urn:uuid:<error id>` of a logged failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The machine-readable reason ("insufficient funds", "bad_request", ...).
    pub code: String,
    /// Extension members: more data about this problem.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with its type and title derived from `code`.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: type_uri(code),
            title: title(code),
            status,
            detail: detail.into(),
            instance: None,
            code: code.to_string(),
            extensions: Map::new(),
        }
    }

    /// Adds an extension member. Panics on a reserved name (a programming error).
    pub fn with(mut self, name: &str, value: impl Serialize) -> Problem {
        assert!(!RESERVED.contains(&name), "{name:?} is a member of every problem, not an extension");
        self.extensions.insert(name.to_string(), serde_json::to_value(value).expect("an extension serialises"));
        self
    }

    /// Names this occurrence (`instance`).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Problem {
        self.instance = Some(instance.into());
        self
    }

    /// A problem of the NATS wire's [`ErrorCode`], with its HTTP status.
    pub fn from_error_code(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem::new(code.http_status(), code.code(), detail)
    }

    /// The JSON text of the body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a problem serialises")
    }
}

impl ErrorCode {
    /// The code as it appears on the wire and in problems (`bad_request`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => codes::BAD_REQUEST,
            ErrorCode::NotFound => codes::NOT_FOUND,
            ErrorCode::TooLarge => codes::TOO_LARGE,
            ErrorCode::Unauthorized => codes::UNAUTHORIZED,
            ErrorCode::Forbidden => codes::FORBIDDEN,
            ErrorCode::Unavailable => codes::UNAVAILABLE,
            ErrorCode::Internal => codes::INTERNAL,
        }
    }

    /// The HTTP status of a request refused with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// `urn:sequent:problem:` + the code in lower case, each run of other characters than ASCII
/// letters and digits turned into one `-`: "insufficient funds" → `...:insufficient-funds`,
/// "bad_request" → `...:bad-request`.
pub fn type_uri(code: &str) -> String {
    let mut slug = String::with_capacity(code.len());
    for c in code.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    if slug.is_empty() {
        slug.push_str("unknown");
    }
    format!("{TYPE_PREFIX}{slug}")
}

/// The code with `_` and `-` as spaces and its first letter upper case: "bad_request" → "Bad
/// request", "insufficient funds" → "Insufficient funds".
pub fn title(code: &str) -> String {
    let spaced: String = code.chars().map(|c| if c == '_' || c == '-' { ' ' } else { c }).collect();
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_the_rfc_members_the_code_and_extensions_flat() {
        let p = Problem::new(422, "insufficient funds", "Not enough money in this account.").with("balance_cents", 100);
        let v: Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v,
            json!({
                "type": "urn:sequent:problem:insufficient-funds", "title": "Insufficient funds", "status": 422,
                "detail": "Not enough money in this account.", "code": "insufficient funds", "balance_cents": 100
            })
        );
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        let with_instance = Problem::new(500, codes::INTERNAL, "internal error").with_instance("urn:uuid:0194");
        assert_eq!(serde_json::to_value(&with_instance).unwrap()["instance"], "urn:uuid:0194");
    }

    #[test]
    fn type_and_title_come_from_the_code() {
        assert_eq!(type_uri("bad_request"), "urn:sequent:problem:bad-request");
        assert_eq!(type_uri("Balance limit exceeded"), "urn:sequent:problem:balance-limit-exceeded");
        assert_eq!(type_uri("--"), "urn:sequent:problem:unknown");
        assert_eq!(title("bad_request"), "Bad request");
        assert_eq!(title("username taken"), "Username taken");
        assert_eq!(title(""), "Error");
    }

    #[test]
    fn wire_codes_map_to_statuses() {
        let p = Problem::from_error_code(ErrorCode::Unavailable, "JetStream did not answer");
        assert_eq!((p.status, p.code.as_str(), p.title.as_str()), (503, "unavailable", "Unavailable"));
        // The wire spelling and the problem code are the same.
        assert_eq!(serde_json::to_value(ErrorCode::TooLarge).unwrap(), json!(ErrorCode::TooLarge.code()));
    }

    #[test]
    #[should_panic(expected = "not an extension")]
    fn reserved_names_are_not_extensions() {
        let _ = Problem::new(400, codes::BAD_REQUEST, "x").with("status", 1);
    }
}
