//! `superclient register` and `unregister`: an operator adds a principal to a running
//! deployment, or removes one, with one command. A service is registered from its script (its
//! `bus:register` declaration is what the gateways enforce); a reader (an analyst) by name.
//! The registry is a key-value bucket only operators and gateways may write; the gateways
//! admit principals through the NATS auth callout from it, so nothing else is edited and
//! nothing restarts. Removing (or registering anew) closes the principal's connections.

use crate::cli::Conn;
use crate::script::{Limits, Pool, Secrets, Shared};
use anyhow::Context as _;
use sequent_auth::principal::REGISTRY_BUCKET;
use sequent_auth::{Credential, Kind, Principal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the operator asked for.
pub enum Subject<'a> {
    Scripts(&'a [PathBuf]),
    Reader(&'a str),
}

/// Registers each script's service (or the reader), writing each credential to
/// `<dir>/<name>.json` (owner-only). A credential already there is kept, so running instances
/// reconnect with it under the new entry.
pub async fn register(subject: Subject<'_>, conn: &Conn, dir: &Path) -> anyhow::Result<()> {
    let mut entries = Vec::new();
    match subject {
        Subject::Scripts(scripts) => {
            anyhow::ensure!(!scripts.is_empty(), "give the scripts of the services to register, or --reader NAME");
            for script in scripts {
                let declaration = declaration_of(script)?;
                entries.push((declaration.service.clone(), Kind::Service, Some(declaration)));
            }
        }
        Subject::Reader(name) => entries.push((name.to_string(), Kind::Reader, None)),
    }
    let registry = open_registry(conn).await?;
    for (name, kind, declaration) in entries {
        sequent_auth::principal::validate_name(&name).map_err(|e| anyhow::anyhow!(e))?;
        let path = dir.join(format!("{name}.json"));
        let credential = match Credential::read(&path) {
            Ok(c) if c.name == name => c,
            _ => Credential::generate(&name),
        };
        let principal = Principal::new(&name, kind, &credential.secret, declaration);
        principal.validate().map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        credential.write(&path).with_context(|| format!("writing the credential {}", path.display()))?;
        let value = serde_json::to_vec(&principal).expect("principals serialise");
        registry.put(&name, value.into()).await.map_err(|e| anyhow::anyhow!("registering {name} in {REGISTRY_BUCKET}: {e}"))?;
        println!("registered {kind} {name}; its credential is in {}", path.display());
    }
    Ok(())
}

/// Removes a principal: the gateways refuse it from now on and close its connections.
pub async fn unregister(name: &str, conn: &Conn) -> anyhow::Result<()> {
    let registry = open_registry(conn).await?;
    if registry.get(name).await.map_err(|e| anyhow::anyhow!("reading {REGISTRY_BUCKET}: {e}"))?.is_none() {
        anyhow::bail!("{name:?} is not registered");
    }
    registry.delete(name).await.map_err(|e| anyhow::anyhow!("removing {name} from {REGISTRY_BUCKET}: {e}"))?;
    println!("unregistered {name}: its connections are closed and refused from now on");
    Ok(())
}

/// The declaration of a script, read by loading it (no server involved).
pub fn declaration_of(script: &Path) -> anyhow::Result<sequent_protocol::Declaration> {
    let source = std::fs::read_to_string(script).with_context(|| format!("reading {}", script.display()))?;
    let secrets = Secrets::from_env(true)?;
    let shared = Arc::new(Shared::new("register".into(), script, secrets, false, std::time::Duration::from_secs(5), Arc::default()));
    let limits = Limits { memory_bytes: 64 << 20, instructions: 50_000_000, timeout: std::time::Duration::from_secs(5) };
    let (_, spec) = Pool::new(source, shared, limits, 1).with_context(|| format!("loading {}", script.display()))?;
    Ok(spec.declaration)
}

/// The registry bucket, as an operator (the NATS admin user of --nats-user/--nats-password or
/// SEQUENT_ADMIN_NATS_CREDENTIALS `user:password`).
async fn open_registry(conn: &Conn) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    let (servers, in_url) = sequent_net::nats_servers(&conn.nats_url)?;
    let from_env = std::env::var("SEQUENT_ADMIN_NATS_CREDENTIALS").ok().and_then(|c| c.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
    let (user, password) = in_url
        .or_else(|| conn.nats_user.clone().zip(conn.nats_password.clone()))
        .or(from_env)
        .context("registering needs an operator's NATS credentials: --nats-user admin --nats-password ... or SEQUENT_ADMIN_NATS_CREDENTIALS=admin:...")?;
    let client = async_nats::ConnectOptions::with_user_and_password(user.clone(), password)
        .name("superclient register")
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {} as {user}", sequent_net::redact_url(&conn.nats_url)))?;
    let js = async_nats::jetstream::new(client);
    js.get_key_value(REGISTRY_BUCKET).await.map_err(|e| {
        anyhow::anyhow!("the registry bucket {REGISTRY_BUCKET} is not there ({e}): start a bus-gateway with --callout-seed first (it makes the bucket)")
    })
}
