//! The registry of principals (who may connect, and as what): a key-value bucket only gateways
//! and operators can touch. Each gateway keeps a copy, updated by a watch, for the append policy
//! and HTTP tokens; auth callout reads the bucket itself, so a principal removed a moment ago is
//! never admitted by a gateway whose copy lags.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use parking_lot::RwLock;
use sequent_auth::principal::REGISTRY_BUCKET;
use sequent_auth::{Kind, Principal};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// A change of the registry: the principal's name, and whether it replaced or removed an entry
/// (then connections made under the old entry must go).
pub type Change = (String, bool);

#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
    known: Arc<RwLock<HashMap<String, Principal>>>,
    changes: broadcast::Sender<Change>,
}

impl Registry {
    /// Opens the bucket (making it if needed) and loads every entry; then keeps the copy current.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Registry> {
        let kv = match js.get_key_value(REGISTRY_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: REGISTRY_BUCKET.into(),
                    description: "Sequent: registered principals (services, readers)".into(),
                    history: 8,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("creating KV bucket {REGISTRY_BUCKET}: {e}"))?,
        };
        let (changes, _) = broadcast::channel(256);
        let registry = Registry { kv, known: Default::default(), changes };
        let mut watch = registry.kv.watch_with_history(">").await.map_err(|e| anyhow::anyhow!("watching {REGISTRY_BUCKET}: {e}"))?;
        // The watch first delivers every current entry, then changes; `delta == 0` marks the
        // last of the current ones.
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
        let copy = registry.clone();
        tokio::spawn(async move {
            let mut loaded = Some(loaded_tx);
            if copy.kv.status().await.is_ok_and(|s| s.values() == 0) {
                let _ = loaded.take().map(|tx| tx.send(()));
            }
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(entry) => {
                        copy.apply(&entry);
                        if entry.delta == 0 {
                            let _ = loaded.take().map(|tx| tx.send(()));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "registry watch error"),
                }
            }
            tracing::error!("the registry watch ended: registrations made from now on are not seen by this gateway");
        });
        if tokio::time::timeout(Duration::from_secs(10), loaded_rx).await.is_err() {
            anyhow::bail!("loading the registry {REGISTRY_BUCKET} took longer than 10 s");
        }
        Ok(registry)
    }

    fn apply(&self, entry: &kv::Entry) {
        let name = entry.key.clone();
        let principal = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Principal>(&entry.value) {
                Ok(p) if p.name == name && p.validate().is_ok() => Some(p),
                Ok(_) | Err(_) => {
                    tracing::error!(name, "ignoring an invalid registry entry (registered by hand?)");
                    None
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let previous = match &principal {
            Some(p) => {
                tracing::info!(name, kind = %p.kind, "principal registered");
                self.known.write().insert(name.clone(), p.clone())
            }
            None => {
                let previous = self.known.write().remove(&name);
                if previous.is_some() {
                    tracing::info!(name, "principal removed");
                }
                previous
            }
        };
        // A first registration changes no one's connections.
        let replaced = previous.is_some_and(|old| Some(&old) != principal.as_ref());
        let _ = self.changes.send((name, replaced));
    }

    /// This gateway's copy of a principal's entry.
    pub fn get(&self, name: &str) -> Option<Principal> {
        self.known.read().get(name).cloned()
    }

    pub fn all(&self) -> Vec<Principal> {
        let mut all: Vec<Principal> = self.known.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The entry as the bucket holds it now (for decisions that must not lag).
    pub async fn fetch(&self, name: &str) -> anyhow::Result<Option<Principal>> {
        let Some(value) = self.kv.get(name).await.map_err(|e| anyhow::anyhow!("reading {REGISTRY_BUCKET}: {e}"))? else { return Ok(None) };
        let p: Principal = serde_json::from_slice(&value).map_err(|e| anyhow::anyhow!("registry entry {name}: {e}"))?;
        Ok((p.name == name && p.validate().is_ok()).then_some(p))
    }

    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// May `service` append events of `event_type`? Its registered declaration says.
    pub fn may_append(&self, service: &str, event_type: &str) -> Result<(), String> {
        match self.known.read().get(service) {
            None => Err(format!("{service:?} is not a registered service (superclient register) and may not append")),
            Some(p) if p.kind != Kind::Service => Err(format!("{service:?} is a {} and may not append", p.kind)),
            Some(p) if p.declaration.as_ref().is_some_and(|d| d.appends.iter().any(|t| t == event_type)) => Ok(()),
            Some(_) => Err(format!("service {service:?} did not declare that it appends {event_type:?} (bus:register(..., {{appends = ...}}))")),
        }
    }
}
