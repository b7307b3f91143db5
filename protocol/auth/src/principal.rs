//! Principals (who may connect) as the registry keeps them, and the credential each one holds.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sequent_protocol::Declaration;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The key-value bucket of principals: key = principal name, value = [`Principal`] as JSON.
/// Only the gateways and operators may read or write it.
pub const REGISTRY_BUCKET: &str = "sequent_principals";

/// Names of the platform's own NATS users (in the server configuration, not the registry).
pub const RESERVED: &[&str] = &["gateway", "admin", "sys", "operator"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A service type (superclient script): its rights come from its declaration.
    Service,
    /// A reader (analyst, explorer): reads everything readers may see, writes nothing.
    Reader,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "service",
            Kind::Reader => "reader",
        })
    }
}

/// A registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    pub kind: Kind,
    /// SHA-256 of the secret, hex. Secrets are 256 random bits, so a fast hash is enough.
    pub secret_sha256: String,
    /// A service's declaration (its name is the principal's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declaration: Option<Declaration>,
    /// When it was registered (RFC 3339).
    #[serde(default)]
    pub registered: String,
}

impl Principal {
    pub fn new(name: &str, kind: Kind, secret: &str, declaration: Option<Declaration>) -> Principal {
        Principal {
            name: name.to_string(),
            kind,
            secret_sha256: hash(secret),
            declaration,
            registered: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }
    }

    /// Checks the entry: a valid, unreserved name; a service has its declaration, under its name.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.name)?;
        match (&self.kind, &self.declaration) {
            (Kind::Service, Some(d)) if d.service == self.name => d.validate(),
            (Kind::Service, Some(d)) => Err(format!("the declaration is for {:?}, not {:?}", d.service, self.name)),
            (Kind::Service, None) => Err(format!("service {:?} has no declaration", self.name)),
            (Kind::Reader, _) => Ok(()),
        }
    }

    /// Whether `secret` is this principal's (compared in constant time).
    pub fn accepts(&self, secret: &str) -> bool {
        let given = hash(secret);
        given.len() == self.secret_sha256.len() && given.bytes().zip(self.secret_sha256.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// A principal name: like a service type name, and none of the platform's own users.
pub fn validate_name(name: &str) -> Result<(), String> {
    sequent_protocol::declaration::validate_service(name)?;
    if RESERVED.contains(&name) {
        return Err(format!("{name:?} is reserved for the platform's own users"));
    }
    Ok(())
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a principal holds to connect: its name and secret. Kept in a file only its owner reads
/// (JSON: `{"name": ..., "secret": ...}`); the NATS user and password, and the gateway's
/// bearer token `<name>:<secret>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("name", &self.name).field("secret", &"(hidden)").finish()
    }
}

impl Credential {
    /// A new credential with a random 256-bit secret.
    pub fn generate(name: &str) -> Credential {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Credential { name: name.to_string(), secret: URL_SAFE_NO_PAD.encode(bytes) }
    }

    /// The bearer token of the gateway's HTTP API.
    pub fn token(&self) -> String {
        format!("{}:{}", self.name, self.secret)
    }

    /// Splits a bearer token into name and secret.
    pub fn from_token(token: &str) -> Option<Credential> {
        let (name, secret) = token.split_once(':')?;
        (!name.is_empty() && !secret.is_empty()).then(|| Credential { name: name.to_string(), secret: secret.to_string() })
    }

    pub fn read(path: &std::path::Path) -> Result<Credential, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading the credential {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("the credential {} is not {{\"name\": ..., \"secret\": ...}}: {e}", path.display()))
    }

    /// Writes the credential to `path`, readable by its owner only.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(path)?;
        file.write_all(serde_json::to_string_pretty(self).expect("a credential is JSON").as_bytes())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_accepts_its_secret_only() {
        let c = Credential::generate("nectar");
        let p = Principal::new("nectar", Kind::Reader, &c.secret, None);
        assert!(p.accepts(&c.secret));
        assert!(!p.accepts(&Credential::generate("nectar").secret));
        assert!(!p.accepts(""));
        assert!(!serde_json::to_string(&p).unwrap().contains(&c.secret));
        assert!(!format!("{c:?}").contains(&c.secret));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("nectar").is_ok());
        for bad in ["gateway", "admin", "sys", "Nectar", "a.b", "a*", "", "_INBOX"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let mut p = Principal::new("nectar", Kind::Service, "s", None);
        assert!(p.validate().is_err(), "a service needs its declaration");
        p.declaration = Some(Declaration { service: "other".into(), ..Default::default() });
        assert!(p.validate().is_err(), "under its own name");
        p.declaration = Some(Declaration { service: "nectar".into(), ..Default::default() });
        assert!(p.validate().is_ok());
    }

    #[test]
    fn tokens_split_at_the_first_colon() {
        let c = Credential::from_token("bfaf:abc:def").unwrap();
        assert_eq!((c.name.as_str(), c.secret.as_str()), ("bfaf", "abc:def"));
        assert!(Credential::from_token("bfaf").is_none() && Credential::from_token(":x").is_none());
    }

    #[test]
    fn a_written_credential_is_owner_only() {
        let dir = std::env::temp_dir().join(format!("sequent-auth-{}", std::process::id()));
        let path = dir.join("x.json");
        let c = Credential::generate("x");
        c.write(&path).unwrap();
        assert_eq!(Credential::read(&path).unwrap(), c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
