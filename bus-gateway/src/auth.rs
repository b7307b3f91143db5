//! Who may do what: API tokens for HTTP clients, and the per-service event-type policy for
//! appends arriving over NATS (where the request subject names the service, and NATS
//! permissions make sure each service can only use its own subject).

use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// A registered service (its token `<name>:<secret>`): its appends are held to its
    /// declaration, as over NATS.
    pub service: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one we do not know.
    Unauthenticated,
    /// A known token without the needed role.
    Forbidden(String),
}

/// HTTP API tokens. Empty means the API is open (dev on loopback).
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: HashMap<String, Caller>,
}

impl Tokens {
    /// Parses `name:token:role,...`.
    pub fn parse(spec: &str) -> anyhow::Result<Tokens> {
        let mut by_token = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = entry.split(':').collect();
            let [name, token, role] = parts[..] else {
                anyhow::bail!("API token entry {:?} should be name:token:role", entry.split(':').next().unwrap_or(""));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                other => anyhow::bail!("API token {name}: unknown role {other:?}, use read or write"),
            };
            if token.len() < 16 {
                anyhow::bail!("API token {name} is shorter than 16 characters");
            }
            by_token.insert(token.to_string(), Caller { name: name.to_string(), role, service: false });
        }
        Ok(Tokens { by_token })
    }

    pub fn is_open(&self) -> bool {
        self.by_token.is_empty()
    }

    /// Checks a bearer token (None when the request carried none) against the needed role.
    pub fn check(&self, token: Option<&str>, need: Role) -> Result<Caller, Denied> {
        if self.is_open() {
            return Ok(Caller { name: "api".into(), role: Role::Write, service: false });
        }
        let caller = token.and_then(|t| self.by_token.get(t)).ok_or(Denied::Unauthenticated)?;
        if caller.role < need {
            return Err(Denied::Forbidden(format!("token {:?} may only read", caller.name)));
        }
        Ok(caller.clone())
    }
}

/// Which event types each service may append, and which data fields of its events readers do
/// not see. None: any service, any type.
#[derive(Debug, Default)]
pub struct Policy {
    services: Option<HashMap<String, HashSet<String>>>,
    redaction: sequent_protocol::Redaction,
}

/// A service's entry in the policy file: its event types, or what a declaration would say.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Appends(HashSet<String>),
    Declared {
        appends: HashSet<String>,
        #[serde(default)]
        sensitive: std::collections::BTreeMap<String, Vec<String>>,
    },
}

impl Policy {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Policy> {
        let Some(path) = path else { return Ok(Policy::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the service policy {}: {e}", path.display()))?;
        let entries: HashMap<String, Entry> = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "the service policy {} is not {{\"service\": [\"Type\", ...]}} or {{\"service\": {{\"appends\": [...], \"sensitive\": {{\"Type\": [\"field\"]}}}}}}: {e}",
                path.display()
            )
        })?;
        let mut services = HashMap::new();
        let mut declarations = Vec::new();
        for (service, entry) in entries {
            let appends = match entry {
                Entry::Appends(a) => a,
                Entry::Declared { appends, sensitive } => {
                    declarations.push(sequent_protocol::Declaration { service: service.clone(), sensitive, ..Default::default() });
                    appends
                }
            };
            services.insert(service, appends);
        }
        Ok(Policy { services: Some(services), redaction: sequent_protocol::Redaction::of(&declarations) })
    }

    /// The fields readers must not see, as the policy file declares them.
    pub fn redaction(&self) -> &sequent_protocol::Redaction {
        &self.redaction
    }

    pub fn check(&self, service: &str, event_type: &str) -> Result<(), String> {
        let Some(services) = &self.services else { return Ok(()) };
        match services.get(service) {
            None => Err(format!("service {service:?} is not in the gateway's policy and may not append")),
            Some(types) if types.contains(event_type) => Ok(()),
            Some(_) => Err(format!("service {service:?} may not append events of type {event_type:?}")),
        }
    }
}

/// Whether a browser request comes from a page of another origin: its `Origin` names another
/// host than the request's `Host` (requests without `Origin` are not from a foreign page).
pub fn foreign_origin(headers: &axum::http::HeaderMap) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
    !authority.eq_ignore_ascii_case(host)
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_roles() {
        let t = Tokens::parse("ops:aaaaaaaaaaaaaaaa:write, bi:bbbbbbbbbbbbbbbb:read").unwrap();
        assert_eq!(t.check(Some("aaaaaaaaaaaaaaaa"), Role::Write).unwrap().name, "ops");
        assert!(matches!(t.check(Some("bbbbbbbbbbbbbbbb"), Role::Write), Err(Denied::Forbidden(_))));
        assert!(t.check(Some("bbbbbbbbbbbbbbbb"), Role::Read).is_ok());
        assert_eq!(t.check(None, Role::Read).unwrap_err(), Denied::Unauthenticated);
        assert_eq!(t.check(Some("nope"), Role::Read).unwrap_err(), Denied::Unauthenticated);
        assert!(Tokens::parse("x:short:read").is_err());
        assert!(Tokens::parse("x:cccccccccccccccc:admin").is_err());
        assert!(Tokens::parse("").unwrap().is_open());
    }

    #[test]
    fn foreign_origins() {
        let h = |origin: Option<&str>, host: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                h.insert(axum::http::header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        assert!(!foreign_origin(&h(None, "127.0.0.1:8081")));
        assert!(!foreign_origin(&h(Some("http://127.0.0.1:8081"), "127.0.0.1:8081")));
        assert!(foreign_origin(&h(Some("https://evil.example"), "127.0.0.1:8081")));
        assert!(foreign_origin(&h(Some("http://127.0.0.1:8082"), "127.0.0.1:8081")));
        assert!(foreign_origin(&h(Some("null"), "127.0.0.1:8081")));
    }

    #[test]
    fn policy() {
        let open = Policy::default();
        assert!(open.check("anything", "Any").is_ok());
        let p = Policy { services: Some(HashMap::from([("accounts".into(), HashSet::from(["Opened".into()]))])), ..Default::default() };
        assert!(p.check("accounts", "Opened").is_ok());
        assert!(p.check("accounts", "Closed").unwrap_err().contains("Closed"));
        assert!(p.check("users", "Opened").unwrap_err().contains("not in the gateway's policy"));
    }

    #[test]
    fn policy_entries_may_declare_sensitive_fields() {
        let dir = std::env::temp_dir().join(format!("sequent-policy-{}", std::process::id()));
        std::fs::write(&dir, r#"{"a": ["X"], "users": {"appends": ["U"], "sensitive": {"U": ["secret"]}}}"#).unwrap();
        let p = Policy::load(Some(&dir)).unwrap();
        std::fs::remove_file(&dir).ok();
        assert!(p.check("a", "X").is_ok() && p.check("users", "U").is_ok() && p.check("users", "X").is_err());
        assert_eq!(serde_json::to_string(p.redaction()).unwrap(), r#"{"U":["secret"]}"#);
    }
}
