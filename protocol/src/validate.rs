//! What a well-formed key, type, id and event look like. Every rule names what was wrong so
//! the error can be shown to the user as it is.

use crate::envelope::NewEvent;
use thiserror::Error;

pub const MAX_KEY_LEN: usize = 128;
pub const MAX_TYPE_LEN: usize = 64;
pub const MAX_ID_LEN: usize = 128;
/// Deepest nesting of arrays and objects in `data`: deeper documents would be stored but fail
/// every reader (serde_json stops at 128 levels), so they are refused at the door.
pub const MAX_DATA_DEPTH: usize = 64;

/// Size limits enforced on appends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest `data` object, in bytes of JSON text.
    pub max_data_bytes: usize,
    /// Most events in one append.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_data_bytes: 256 * 1024, max_batch: 256 }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("{field} is empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} {value:?} contains {ch:?}; allowed are ASCII letters, digits and {allowed}")]
    BadChar { field: &'static str, value: String, ch: char, allowed: &'static str },
    #[error("type {0:?} must start with a letter")]
    TypeStart(String),
    #[error("data must be a JSON object (got {0})")]
    DataNotObject(&'static str),
    #[error("data nests arrays and objects deeper than {max} levels")]
    DataTooDeep { max: usize },
    #[error("data is {len} bytes; the limit is {max} bytes")]
    DataTooLarge { len: usize, max: usize },
    #[error("a batch holds {len} events; the limit is {max}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("a batch must hold at least one event")]
    EmptyBatch,
}

/// Punctuation allowed in keys and ids besides letters and digits: nothing that NATS treats
/// as a separator or wildcard (`.`, `*`, `>`), no whitespace, no path or quoting characters.
const KEY_PUNCT: &str = "-_:@+=~#!";
const TYPE_PUNCT: &str = "-_:";

fn check_token(field: &'static str, value: &str, max: usize, punct: &'static str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::Empty { field });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong { field, len: value.len(), max });
    }
    if let Some(ch) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || punct.contains(*c))) {
        return Err(ValidationError::BadChar { field, value: truncate(value), ch, allowed: punct });
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

pub fn validate_key(key: &str) -> Result<(), ValidationError> {
    check_token("key", key, MAX_KEY_LEN, KEY_PUNCT)
}

pub fn validate_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    check_token(field, id, MAX_ID_LEN, KEY_PUNCT)
}

pub fn validate_type(event_type: &str) -> Result<(), ValidationError> {
    check_token("type", event_type, MAX_TYPE_LEN, TYPE_PUNCT)?;
    if !event_type.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ValidationError::TypeStart(event_type.to_string()));
    }
    Ok(())
}

/// Checks one submitted event against the rules and the size limit.
pub fn validate_new_event(event: &NewEvent, limits: &Limits) -> Result<(), ValidationError> {
    validate_type(&event.event_type)?;
    validate_key(&event.key)?;
    if let Some(id) = &event.id {
        validate_id("id", id)?;
    }
    if let Some(c) = &event.correlation {
        validate_id("correlation", c)?;
    }
    if let Some(c) = &event.causation {
        validate_id("causation", c)?;
    }
    let data = event.data.get();
    if data.len() > limits.max_data_bytes {
        return Err(ValidationError::DataTooLarge { len: data.len(), max: limits.max_data_bytes });
    }
    if !data.trim_start().starts_with('{') {
        return Err(ValidationError::DataNotObject(json_kind(data)));
    }
    if json_depth(data) > MAX_DATA_DEPTH {
        return Err(ValidationError::DataTooDeep { max: MAX_DATA_DEPTH });
    }
    Ok(())
}

/// The deepest nesting of arrays and objects in a well-formed JSON text.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub fn validate_batch_len(len: usize, limits: &Limits) -> Result<(), ValidationError> {
    if len == 0 {
        return Err(ValidationError::EmptyBatch);
    }
    if len > limits.max_batch {
        return Err(ValidationError::BatchTooLarge { len, max: limits.max_batch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys() {
        assert!(validate_key("acc-42").is_ok());
        assert!(validate_key("user:alice@example").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a b", "a\tb", "ключ", "a/b", "a\"b", "$x'"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(validate_key(&"k".repeat(129)).is_err());
    }

    #[test]
    fn data_depth() {
        assert_eq!(json_depth(r#"{"a":[1,{"b":"[[[{{"}],"c":"\\\"["}"#), 3);
        let deep = |n: usize| format!("{{\"x\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert_eq!(json_depth(&deep(MAX_DATA_DEPTH - 1)), MAX_DATA_DEPTH);
        assert_eq!(json_depth(&deep(MAX_DATA_DEPTH)), MAX_DATA_DEPTH + 1);
    }

    #[test]
    fn types() {
        assert!(validate_type("AccountOpened").is_ok());
        assert!(validate_type("1Opened").is_err());
        assert!(validate_type("Opened!").is_err());
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = validate_key("a.b").unwrap_err().to_string();
        assert!(e.contains("key") && e.contains("'.'"), "{e}");
    }

    proptest! {
        #[test]
        fn accepted_keys_are_safe_subject_tokens(s in "\\PC{0,200}") {
            if validate_key(&s).is_ok() {
                prop_assert!(!s.is_empty() && s.len() <= MAX_KEY_LEN);
                prop_assert!(!s.contains(['.', '*', '>', ' ', '\t', '\r', '\n', '/']));
                prop_assert!(s.is_ascii());
            }
        }
    }
}
