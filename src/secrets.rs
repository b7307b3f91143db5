//! The dev stack's secrets: random values made once per checkout, kept in
//! `.sequent/secrets/stack.json` (the directory owner-only, the file 0600, `.sequent` is not
//! in git), and handed to the processes that need them in their environment. Nothing secret
//! has a value written in the repository.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
pub struct StackSecrets {
    /// NATS passwords of the fixed users (nats/callout.conf).
    pub nats_admin: String,
    pub nats_gateway: String,
    pub nats_sys: String,
    /// The account nkey seed the gateways sign auth callout answers with.
    pub callout_seed: String,
    /// Signing key of the bank's session tokens and the pepper of its password hashes.
    pub token_secret: String,
    pub password_pepper: String,
    /// The explorer's operator password (user `admin`).
    pub admin_password: String,
    /// Signing key of the explorer's operator sessions: its own, so that no bank service can
    /// make one.
    #[serde(default)]
    pub explorer_token_secret: String,
    /// The secret `http.call` sends and internal routes require (`SEQUENT_SERVICE_TOKEN`).
    #[serde(default)]
    pub service_token: String,
    /// Seal keys, per service (`SEQUENT_<SERVICE>_SEAL_KEY`).
    #[serde(default)]
    pub seal_keys: BTreeMap<String, String>,
}

fn random() -> String {
    sequent_auth::Credential::generate("x").secret
}

/// A password nats-server reads from its environment: it parses the value like a config value,
/// so one starting with a digit or `-` is taken for a number and refused ("Expected a digit").
/// A letter, then letters and digits.
fn nats_password() -> String {
    format!("n{}", random().replace(['-', '_'], ""))
}

fn nats_readable(password: &str) -> bool {
    password.starts_with(|c: char| c.is_ascii_alphabetic()) && password.chars().all(|c| c.is_ascii_alphanumeric())
}

impl StackSecrets {
    /// The checkout's secrets, made on first use.
    pub fn load_or_create(dir: &Path, services: &[String]) -> anyhow::Result<StackSecrets> {
        let path = dir.join("stack.json");
        let mut secrets = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is damaged: remove it to make new secrets", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StackSecrets {
                nats_admin: nats_password(),
                nats_gateway: nats_password(),
                nats_sys: nats_password(),
                callout_seed: sequent_auth::KeyPair::new_account().seed().context("making the callout key")?,
                token_secret: random(),
                password_pepper: random(),
                admin_password: random(),
                explorer_token_secret: random(),
                service_token: random(),
                seal_keys: BTreeMap::new(),
            },
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // Older checkouts may hold one nats-server cannot read: it never served anyone.
        for password in [&mut secrets.nats_admin, &mut secrets.nats_gateway, &mut secrets.nats_sys] {
            if !nats_readable(password) {
                *password = nats_password();
            }
        }
        if secrets.service_token.is_empty() {
            secrets.service_token = random();
        }
        if secrets.explorer_token_secret.is_empty() {
            secrets.explorer_token_secret = random();
        }
        for s in services {
            secrets.seal_keys.entry(s.clone()).or_insert_with(random);
        }
        secrets.save(&path)?;
        Ok(secrets)
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_private(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// The public key nats-server names as the callout issuer.
    pub fn callout_issuer(&self) -> anyhow::Result<String> {
        Ok(sequent_auth::KeyPair::from_seed(&self.callout_seed).context("the callout seed")?.public_key())
    }

    /// What nats-server reads from its environment (nats/callout.conf).
    pub fn nats_env(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(vec![
            ("SEQUENT_NATS_ADMIN_PASSWORD".into(), self.nats_admin.clone()),
            ("SEQUENT_NATS_GATEWAY_PASSWORD".into(), self.nats_gateway.clone()),
            ("SEQUENT_NATS_SYS_PASSWORD".into(), self.nats_sys.clone()),
            ("SEQUENT_CALLOUT_ISSUER".into(), self.callout_issuer()?),
        ])
    }

    /// What every service process gets: the bank's signing secrets, the seal keys, where the
    /// credentials are (the explorer's password goes to the explorer only: `admin_password`).
    pub fn service_env(&self, credentials: &Path) -> Vec<(String, String)> {
        let mut env = vec![
            ("SEQUENT_TOKEN_SECRET".to_string(), self.token_secret.clone()),
            ("SEQUENT_PASSWORD_PEPPER".to_string(), self.password_pepper.clone()),
            ("SEQUENT_CREDENTIALS_DIR".to_string(), credentials.to_string_lossy().to_string()),
            ("SEQUENT_SERVICE_TOKEN".to_string(), self.service_token.clone()),
        ];
        for (service, key) in &self.seal_keys {
            env.push((format!("SEQUENT_{}_SEAL_KEY", service.to_uppercase().replace('-', "_")), key.clone()));
        }
        env
    }

    /// A deployment's environment files, one per kind of process (deploy/README.md), owner-only;
    /// `credentials` is where the services' registered credentials are on their hosts.
    pub fn write_env_files(&self, dir: &Path, credentials: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let gateway = vec![
            ("SEQUENT_GATEWAY_NATS_PASSWORD".to_string(), self.nats_gateway.clone()),
            ("SEQUENT_CALLOUT_SEED".to_string(), self.callout_seed.clone()),
            ("SEQUENT_SYS_NATS_CREDENTIALS".to_string(), format!("sys:{}", self.nats_sys)),
        ];
        let operator = vec![("SEQUENT_ADMIN_NATS_CREDENTIALS".to_string(), format!("admin:{}", self.nats_admin))];
        let services = self.service_env(credentials);
        let explorer = self.explorer_env(credentials);
        let mut written = Vec::new();
        for (name, vars) in [
            ("nats.env", self.nats_env()?),
            ("gateway.env", gateway),
            ("services.env", services),
            ("explorer.env", explorer),
            ("operator.env", operator),
        ] {
            let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            let path = dir.join(name);
            write_private(&path, text.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }

    /// What the platform's explorer gets instead of the bank's secrets: its operator credential and
    /// its own session key (no bank service can sign its tokens). Its gateway token
    /// (`SEQUENT_GATEWAY_TOKEN`, `explorer:<secret>`) comes from its registered credential.
    pub fn explorer_env(&self, credentials: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self.service_env(credentials).into_iter().filter(|(k, _)| k != "SEQUENT_TOKEN_SECRET").collect();
        env.push(("SEQUENT_TOKEN_SECRET".into(), self.explorer_token_secret.clone()));
        env.push(("SEQUENT_ADMIN_USER".into(), std::env::var("SEQUENT_ADMIN_USER").unwrap_or_else(|_| "admin".into())));
        env.push(("SEQUENT_ADMIN_PASSWORD".into(), self.admin_password()));
        env
    }

    /// The explorer's operator password (SEQUENT_ADMIN_PASSWORD overrides the generated one).
    pub fn admin_password(&self) -> String {
        std::env::var("SEQUENT_ADMIN_PASSWORD").unwrap_or_else(|_| self.admin_password.clone())
    }
}

/// Writes `path` (0600, in an owner-only directory) in one step: a reader never sees half of it.
fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().context("a secrets file has a directory")?;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Where the services' credentials are kept.
pub fn credentials_dir(secrets_dir: &Path) -> PathBuf {
    secrets_dir.join("credentials")
}
