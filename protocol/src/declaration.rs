//! What a service declares about itself, once, next to its script:
//!
//! ```lua
//! bus:register("users", {
//!   appends = { "UserRegistered" },                 -- the event types it may append
//!   sensitive = { UserRegistered = { "password_hash" } }, -- data readers never see
//!   env = { "SEQUENT_USERS_MIN_PASSWORD" },         -- what bus:env may read
//!   mints_tokens = true,                            -- crypto.token is its right
//!   http = "internal",                              -- "internal" (default), "public", "none"
//!   state = "partitioned",                          -- optional: one Redis Cluster slot per partition
//! })
//! ```
//!
//! The platform derives every right of the service from it: its NATS permissions, the gateway's
//! append policy, what readers see of its events, what its script may read and sign. The event
//! types it listens to come from the script's listeners and are added when the script loads.

use crate::validate::validate_type;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Who may call a service's HTTP routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Other services of the deployment, with the deployment's service credential.
    #[default]
    Internal,
    /// Anyone who reaches it (a backend-for-frontend: it authenticates its users itself).
    Public,
    /// No routes.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub service: String,
    /// Event types the service may append.
    #[serde(default)]
    pub appends: Vec<String>,
    /// Event types the service listens to (from the script's listeners; `*` for all).
    #[serde(default)]
    pub listens: Vec<String>,
    /// Environment variables its script may read with `bus:env`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Data fields of its events that readers (analysts, explorers, live feeds) never see: event
    /// type → field names; `*` as the type names fields of every type.
    #[serde(default)]
    pub sensitive: BTreeMap<String, Vec<String>>,
    /// Whether its script may sign tokens (`crypto.token`).
    #[serde(default)]
    pub mints_tokens: bool,
    #[serde(default)]
    pub http: Exposure,
    /// Where its state lives in a Redis Cluster (superclient/README.md, "Redis Cluster").
    #[serde(default, skip_serializing_if = "StateLayout::is_default")]
    pub state: StateLayout,
}

/// How a service's state is laid out over Redis Cluster slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateLayout {
    /// All of it in one slot (`{<svc>}`): a handler or route may use any key with any other.
    #[default]
    Service,
    /// One slot per partition (`{<svc>.<p>}`): a handler uses its partition's keys only, and
    /// the state spreads over the shards.
    Partitioned,
}

impl StateLayout {
    fn is_default(&self) -> bool {
        *self == StateLayout::Service
    }
}

/// The longest list a declaration may hold of anything.
const MAX_ITEMS: usize = 256;

/// Checks a service type name: 1 to 32 characters, a lowercase letter first, then lowercase
/// letters, digits, `-` or `_` (it becomes a NATS subject token and part of consumer names).
pub fn validate_service(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(format!(
            "{name:?} is not a service type: 1 to 32 characters, a lowercase letter first, then lowercase letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// The header through which `http.call` proves that a request comes from a service of the
/// deployment: it carries the per-deployment secret `SEQUENT_SERVICE_TOKEN`, which routes of
/// services declared `http = "internal"` require whenever it is set.
pub const SERVICE_TOKEN_HEADER: &str = "x-sequent-service-token";
/// The variable holding that secret.
pub const SERVICE_TOKEN_VAR: &str = "SEQUENT_SERVICE_TOKEN";

impl Declaration {
    /// Checks every name it holds; the first problem, in words.
    pub fn validate(&self) -> Result<(), String> {
        validate_service(&self.service)?;
        for (what, list) in [("appends", &self.appends), ("listens", &self.listens), ("env", &self.env)] {
            if list.len() > MAX_ITEMS {
                return Err(format!("{what} lists {} names; at most {MAX_ITEMS}", list.len()));
            }
        }
        for t in &self.appends {
            validate_type(t).map_err(|e| format!("appends: {e}"))?;
        }
        for t in self.listens.iter().filter(|t| *t != "*") {
            validate_type(t).map_err(|e| format!("listens: {e}"))?;
        }
        for name in &self.env {
            if !name.starts_with("SEQUENT_") || !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
                return Err(format!("env: {name:?} is not a SEQUENT_* variable name"));
            }
        }
        for (t, fields) in &self.sensitive {
            if t != "*" {
                validate_type(t).map_err(|e| format!("sensitive: {e}"))?;
            }
            if fields.iter().any(|f| f.is_empty() || f.len() > 128) {
                return Err(format!("sensitive.{t}: field names are 1 to 128 characters"));
            }
        }
        Ok(())
    }

    /// Whether the service may append events of `event_type`.
    pub fn may_append(&self, event_type: &str) -> bool {
        self.appends.iter().any(|t| t == event_type)
    }

    /// The data fields of `event_type` readers must not see.
    pub fn sensitive_fields(&self, event_type: &str) -> impl Iterator<Item = &str> {
        self.sensitive.get(event_type).into_iter().chain(self.sensitive.get("*")).flatten().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Declaration {
        Declaration {
            service: "users".into(),
            appends: vec!["UserRegistered".into()],
            sensitive: [("UserRegistered".to_string(), vec!["password_hash".to_string()])].into(),
            mints_tokens: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_declaration_passes_and_answers() {
        let d = users();
        assert_eq!(d.validate(), Ok(()));
        assert!(d.may_append("UserRegistered"));
        assert!(!d.may_append("AccountOpened"));
        assert_eq!(d.sensitive_fields("UserRegistered").collect::<Vec<_>>(), ["password_hash"]);
        assert_eq!(d.sensitive_fields("Other").count(), 0);
        assert_eq!(d.http, Exposure::Internal);
    }

    #[test]
    fn the_state_layout_is_optional_and_named() {
        let d: Declaration = serde_json::from_value(serde_json::json!({"service": "ledger", "state": "partitioned"})).unwrap();
        assert_eq!(d.state, StateLayout::Partitioned);
        assert!(serde_json::from_value::<Declaration>(serde_json::json!({"service": "ledger", "state": "sharded"})).is_err());
        let plain = users();
        assert_eq!(plain.state, StateLayout::Service);
        assert!(serde_json::to_value(&plain).unwrap().get("state").is_none(), "a declaration without it reads as before");
    }

    #[test]
    fn bad_names_are_refused_with_what_is_wrong() {
        let mut d = users();
        d.service = "Users".into();
        assert!(d.validate().unwrap_err().contains("not a service type"));
        let mut d = users();
        d.appends.push("bad type".into());
        assert!(d.validate().unwrap_err().starts_with("appends:"));
        let mut d = users();
        d.env.push("HOME".into());
        assert!(d.validate().unwrap_err().contains("SEQUENT_"));
    }

    #[test]
    fn reads_as_json_and_refuses_unknown_fields() {
        let d: Declaration = serde_json::from_str(r#"{"service":"bfaf","http":"public"}"#).unwrap();
        assert_eq!(d.http, Exposure::Public);
        assert!(serde_json::from_str::<Declaration>(r#"{"service":"x","apends":[]}"#).is_err());
    }
}
