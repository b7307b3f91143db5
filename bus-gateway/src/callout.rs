//! Answers nats-server's auth callout: a connecting principal is admitted when the registry
//! knows it and its secret matches, with the permissions its kind and declaration give it
//! (`sequent_auth::permissions`); anyone else is refused. When a principal is removed or
//! registered anew, its open connections are closed (the system account's KICK), so it
//! reconnects under the new entry or not at all.

use crate::registry::Registry;
use crate::App;
use futures::StreamExt;
use sequent_auth::{callout, KeyPair, Layout, Permissions};
use sequent_protocol::subjects::GATEWAY_QUEUE_GROUP;
use std::sync::Arc;
use std::time::Duration;

/// What answering callouts needs.
pub struct Callout {
    /// The issuer named in the server's `auth_callout` block (an account nkey).
    pub issuer: KeyPair,
    /// The account admitted principals are bound to.
    pub account: String,
    /// A system-account connection, to close a removed principal's connections.
    pub sys: Option<async_nats::Client>,
}

impl Callout {
    /// From `--callout-seed`, `--nats-account` and `--sys-nats`.
    pub async fn from_config(seed: &str, config: &crate::Config) -> anyhow::Result<Callout> {
        let issuer = KeyPair::from_seed(seed.trim())
            .map_err(|e| anyhow::anyhow!("--callout-seed (SEQUENT_CALLOUT_SEED) is not an nkey seed: {e}"))?;
        anyhow::ensure!(
            issuer.public_key().starts_with('A'),
            "--callout-seed (SEQUENT_CALLOUT_SEED) must be an account seed (SA...), the one whose public key is the auth_callout issuer"
        );
        let sys = match &config.sys_nats {
            None => None,
            Some(creds) => {
                let (user, password) = creds.split_once(':').ok_or_else(|| anyhow::anyhow!("--sys-nats (SEQUENT_SYS_NATS_CREDENTIALS) should be user:password"))?;
                let (servers, _) = sequent_net::nats_servers(&config.nats_url)?;
                let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                    .name("bus-gateway (system account)")
                    .connect(servers)
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to NATS as the system user {user:?} (--sys-nats): {e}"))?;
                Some(client)
            }
        };
        Ok(Callout { issuer, account: config.nats_account.clone(), sys })
    }
}

pub async fn serve(app: Arc<App>, callout: Arc<Callout>) -> anyhow::Result<()> {
    let mut requests = app
        .client
        .queue_subscribe(callout::SUBJECT, GATEWAY_QUEUE_GROUP.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", callout::SUBJECT))?;
    if let Some(registry) = app.registry.clone() {
        tokio::spawn(close_changed(registry, callout.clone()));
    }
    tracing::info!(account = callout.account, issuer = callout.issuer.public_key(), "answering NATS auth callout");
    while let Some(request) = requests.next().await {
        let (app, callout) = (app.clone(), callout.clone());
        tokio::spawn(async move {
            let Some(reply_to) = request.reply.clone() else { return };
            let token = String::from_utf8_lossy(&request.payload);
            let request = match callout::parse_request(&token) {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = %e, "ignoring an auth callout request that does not verify"),
            };
            let answer = decide(&app, &callout, &request).await;
            match answer {
                Ok(jwt) => {
                    if let Err(e) = app.client.publish(reply_to, jwt.into()).await {
                        tracing::warn!(error = %e, "could not answer an auth callout");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not sign an auth callout answer"),
            }
        });
    }
    anyhow::bail!("the NATS subscription to {} ended", callout::SUBJECT)
}

async fn decide(app: &App, callout: &Callout, request: &callout::Request) -> Result<String, sequent_auth::jwt::JwtError> {
    let Some(registry) = &app.registry else { return callout::refuse(request, "no registry", &callout.issuer) };
    let principal = match registry.fetch(&request.user).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(user = request.user, error = %e, "registry unreadable: refusing a connection");
            return callout::refuse(request, "the registry is unavailable", &callout.issuer);
        }
    };
    match principal {
        Some(p) if p.accepts(&request.password) => {
            metrics::counter!("sequent_callout_total", "outcome" => "admitted").increment(1);
            tracing::debug!(user = request.user, host = request.host, "admitted");
            let layout = Layout::new(&app.config.stream, app.config.partitions);
            callout::admit(request, &p.name, &callout.account, &Permissions::of(&p, &layout), &callout.issuer)
        }
        Some(_) => {
            metrics::counter!("sequent_callout_total", "outcome" => "bad_secret").increment(1);
            tracing::warn!(user = request.user, host = request.host, "refused: wrong secret");
            callout::refuse(request, "wrong secret", &callout.issuer)
        }
        None => {
            metrics::counter!("sequent_callout_total", "outcome" => "unknown").increment(1);
            tracing::warn!(user = request.user, host = request.host, "refused: not registered (superclient register)");
            callout::refuse(request, "not a registered principal", &callout.issuer)
        }
    }
}

/// Closes the connections of principals whose entry changed or went away.
async fn close_changed(registry: Registry, callout: Arc<Callout>) {
    let Some(sys) = callout.sys.clone() else {
        tracing::warn!("no system-account credentials: removed principals keep their open NATS connections until they reconnect");
        return;
    };
    let mut changes = registry.changes();
    loop {
        let name = match changes.recv().await {
            Ok((name, true)) => name,
            Ok((_, false)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        match close_connections(&sys, &callout.account, &name).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(name, connections = n, "closed the connections of a changed principal"),
            Err(e) => tracing::warn!(name, error = %e, "could not close the connections of a changed principal"),
        }
    }
}

/// Asks every server for `user`'s connections in `account` and closes them. Returns how many.
pub async fn close_connections(sys: &async_nats::Client, account: &str, user: &str) -> anyhow::Result<usize> {
    let inbox = sys.new_inbox();
    let mut replies = sys.subscribe(inbox.clone()).await?;
    let query = serde_json::json!({ "user": user, "acc": account, "limit": 1024 });
    sys.publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, query.to_string().into()).await?;
    sys.flush().await?;
    let mut closed = 0;
    // Every server answers; wait a moment for all of them.
    while let Ok(Some(reply)) = tokio::time::timeout(Duration::from_millis(500), replies.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap_or_default();
        let Some(server) = v["server"]["id"].as_str() else { continue };
        for c in v["data"]["connections"].as_array().into_iter().flatten() {
            let kick = serde_json::json!({ "cid": c["cid"] });
            sys.request(format!("$SYS.REQ.SERVER.{server}.KICK"), kick.to_string().into()).await?;
            closed += 1;
        }
    }
    Ok(closed)
}
