//! What readers (explorers, live feeds) must not see of events: the union of the `sensitive`
//! fields of every service declaration, as `{"EventType": ["field", ...], "*": [...]}` (`*`
//! names fields hidden in events of every type). Built from whatever declarations a deployment
//! knows, so a service nobody else has heard of is covered by its own declaration alone.

use crate::Declaration;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What a hidden field's value becomes.
pub const REDACTED: &str = "[redacted]";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redaction(pub BTreeMap<String, BTreeSet<String>>);

impl Redaction {
    /// The union of the declarations' sensitive fields.
    pub fn of<'a>(declarations: impl IntoIterator<Item = &'a Declaration>) -> Redaction {
        let mut rules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for d in declarations {
            for (event_type, fields) in &d.sensitive {
                rules.entry(event_type.clone()).or_default().extend(fields.iter().cloned());
            }
        }
        Redaction(rules)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Replaces the hidden fields of an event (`{"type", "data", ...}`) by [`REDACTED`].
    pub fn apply(&self, event: &mut serde_json::Value) {
        let event_type = event.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string();
        let Some(data) = event.get_mut("data").and_then(|d| d.as_object_mut()) else { return };
        for field in self.0.get(&event_type).into_iter().chain(self.0.get("*")).flatten() {
            if let Some(value) = data.get_mut(field) {
                *value = serde_json::Value::String(REDACTED.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declaring(service: &str, sensitive: &[(&str, &[&str])]) -> Declaration {
        Declaration {
            service: service.into(),
            sensitive: sensitive.iter().map(|(t, f)| (t.to_string(), f.iter().map(|x| x.to_string()).collect())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn hides_the_declared_fields_of_their_type_and_of_every_type() {
        let r = Redaction::of(&[declaring("users", &[("UserRegistered", &["password_hash"])]), declaring("x", &[("*", &["pin"])])]);
        let mut e = json!({"type": "UserRegistered", "data": {"username": "a", "password_hash": "h", "pin": 1}});
        r.apply(&mut e);
        assert_eq!(e["data"], json!({"username": "a", "password_hash": REDACTED, "pin": REDACTED}));
        let mut other = json!({"type": "AccountOpened", "data": {"password_hash": "kept", "pin": 2}});
        r.apply(&mut other);
        assert_eq!(other["data"], json!({"password_hash": "kept", "pin": REDACTED}));
    }

    #[test]
    fn reads_and_writes_as_a_map_of_lists() {
        let r: Redaction = serde_json::from_str(r#"{"A":["x","y"]}"#).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"A":["x","y"]}"#);
        assert!(!r.is_empty() && Redaction::default().is_empty());
    }
}
