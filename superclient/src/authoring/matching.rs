//! How `superclient test`'s assertions compare values (JSON, as scripts' values are stored and
//! sent):
//!
//! - numbers compare by value (`1` equals `1.0`: Lua has both, JSON does not tell them apart);
//! - an empty table is both an empty object and an empty array (Lua cannot tell them apart);
//! - [`equal`] wants the same value; [`contains`] wants every field the expectation names to
//!   match (recursively), and ignores the others: `expect_sent("Paid", "acc-1", {amount = 5})`
//!   does not have to repeat every field of the event.

use serde_json::Value;

fn empty(v: &Value) -> bool {
    matches!(v, Value::Array(a) if a.is_empty()) || matches!(v, Value::Object(o) if o.is_empty())
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

/// Whether `actual` is `expected`.
pub fn equal(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (a, b) if empty(a) && empty(b) => true,
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y)),
        (Value::Object(a), Value::Object(b)) => a.len() == b.len() && b.iter().all(|(k, v)| a.get(k).is_some_and(|x| equal(x, v))),
        (a, b) => a == b,
    }
}

/// Whether `actual` has every field of `expected` (objects, recursively; anything else must be
/// equal).
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(b)) => b.iter().all(|(k, v)| a.get(k).is_some_and(|x| contains(x, v))),
        (Value::Object(_), e) if empty(e) => true,
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| contains(x, y)),
        (a, b) => equal(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(equal(&json!(1), &json!(1.0)));
        assert!(!equal(&json!(1), &json!(1.5)));
        assert!(equal(&json!({"a": [1, 2]}), &json!({"a": [1.0, 2]})));
    }

    #[test]
    fn empty_tables_are_objects_and_arrays() {
        assert!(equal(&json!({}), &json!([])));
        assert!(contains(&json!({"a": 1}), &json!([])));
        assert!(!equal(&json!({"a": 1}), &json!({})));
    }

    #[test]
    fn contains_ignores_fields_not_named() {
        let sent = json!({"amount": 5, "note": "x", "nested": {"a": 1, "b": 2}});
        assert!(contains(&sent, &json!({"amount": 5})));
        assert!(contains(&sent, &json!({"nested": {"b": 2}})));
        assert!(!contains(&sent, &json!({"amount": 6})));
        assert!(!contains(&sent, &json!({"missing": null})));
        assert!(!equal(&sent, &json!({"amount": 5})));
    }
}
