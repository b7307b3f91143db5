//! One running service: its script pools, connections and settings, shared by the partition
//! workers (`consume`), the HTTP server (`serve`) and the operator commands.

use crate::cli::RunOpts;
use crate::error::Failure;
use crate::script::{Pool, Shared, Spec};
use crate::state::{self, Store};
use crate::stream::EventReader;
use async_nats::jetstream;
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

pub struct Service {
    pub name: String,
    /// Who this service is to NATS and the gateways (its registered name; the NATS user).
    pub principal: String,
    pub instance: String,
    pub spec: Spec,
    /// Lua states for event handlers and receipt listeners: one per owned partition at most,
    /// so no partition waits for a state another holds across a network wait.
    pub pool: Arc<Pool>,
    /// Lua states for routes and WebSocket connect functions (they may wait: `bus:wait`,
    /// `http.call`), kept apart so waiting requests never starve event handling.
    pub route_pool: Arc<Pool>,
    /// One Lua state for the live listeners (in stream order).
    pub live_pool: Arc<Pool>,
    pub shared: Arc<Shared>,
    /// This instance's WebSockets and their topics.
    pub hub: Arc<crate::hub::Hub>,
    pub store: Store,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub events: EventReader,
    pub stream_name: String,
    pub partitions: u32,
    pub opts: RunOpts,
    /// The active namespace as last seen; refreshed when a commit finds it moved. A watch, so
    /// that idle partition workers learn of a swap (see `consume::worker`).
    active: tokio::sync::watch::Sender<String>,
    /// Partitions this instance consumes now (for /health).
    pub owned: RwLock<Vec<u32>>,
    /// Owned partitions whose worker waits on its pull with nothing in hand: their consumer has
    /// nothing undelivered or unacked, so the lag gauge needs no consumer info for them.
    pub waiting: RwLock<std::collections::HashSet<u32>>,
    /// The live instances of the service as this instance's partition assignment last saw
    /// them; it owns partitions only once it is among them (for /ready).
    pub live: RwLock<Vec<String>>,
    /// Set on SIGTERM/SIGINT: /ready answers 503 while the instance drains.
    pub stopping: std::sync::atomic::AtomicBool,
    /// The running rebuild's events replayed and expected, for whoever reports them.
    pub rebuild_progress: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// When the consumers were last asked for again (`consume::provision::again`).
    pub reprovisioned: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// What [`Service::new`] puts together.
pub struct Parts {
    pub spec: Spec,
    pub principal: String,
    pub instance: String,
    pub pools: (Arc<Pool>, Arc<Pool>, Arc<Pool>),
    pub shared: Arc<Shared>,
    pub store: Store,
    pub client: async_nats::Client,
    pub stream_name: String,
    pub partitions: u32,
    pub opts: RunOpts,
}

impl Service {
    pub fn new(p: Parts) -> Service {
        Service {
            name: p.spec.service.clone(),
            principal: p.principal,
            instance: p.instance,
            spec: p.spec,
            pool: p.pools.0,
            route_pool: p.pools.1,
            live_pool: p.pools.2,
            shared: p.shared,
            hub: Arc::new(crate::hub::Hub::default()),
            store: p.store,
            js: jetstream::new(p.client.clone()),
            events: EventReader::new(p.client.clone(), &p.stream_name),
            client: p.client,
            stream_name: p.stream_name,
            partitions: p.partitions,
            opts: p.opts,
            active: tokio::sync::watch::Sender::new(String::new()),
            owned: RwLock::new(Vec::new()),
            waiting: RwLock::default(),
            live: RwLock::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            rebuild_progress: Arc::default(),
            reprovisioned: tokio::sync::Mutex::new(None),
        }
    }

    pub fn active_ns(&self) -> String {
        self.active.borrow().clone()
    }

    /// Wakes whoever waits on it when the active namespace changes.
    pub fn active_changes(&self) -> tokio::sync::watch::Receiver<String> {
        self.active.subscribe()
    }

    /// The active namespace of partition `p`'s state: the service's, or with partitioned state
    /// its partition's.
    pub fn active_ns_of(&self, p: u32) -> String {
        self.store.partition_ns(&self.active_ns(), p)
    }

    /// A call of this service (its state partitioned or not).
    pub fn call(&self, mode: crate::script::Mode, ns: &str) -> crate::script::Call {
        crate::script::Call::new(mode, ns).partitioned(self.store.partitioned)
    }

    pub fn set_active(&self, ns: &str) {
        self.active.send_if_modified(|active| {
            let moved = active != ns;
            if moved {
                *active = ns.to_string();
            }
            moved
        });
    }

    /// Re-reads the active namespace of the slot of namespace `ns` (a partition's pointer moves
    /// before the service's, so a partition's worker follows its own) and returns it.
    pub async fn refresh_active_of(&self, ns: &str) -> Result<String, Failure> {
        let Some(p) = state::namespace_partition(ns) else { return self.refresh_active().await };
        match self.store.pointer(ns).await {
            Ok(Some(now)) => {
                // The service's too, for the next batches (it moves right after the partitions).
                let _ = self.refresh_active().await;
                Ok(now)
            }
            Ok(None) => Err(Failure::infra(format!("partition {p} of the service {} has no active namespace in Redis (was its shard flushed?)", self.name))),
            Err(e) => Err(Failure::infra("reading the active namespace").with_source(e)),
        }
    }

    /// Re-reads the active namespace from Redis.
    pub async fn refresh_active(&self) -> Result<String, Failure> {
        match self.store.active().await {
            Ok(Some(ns)) => {
                self.set_active(&ns);
                Ok(ns)
            }
            Ok(None) => Err(Failure::infra(format!("the service {} has no active namespace in Redis (was it flushed?)", self.name))),
            Err(e) => Err(Failure::infra("reading the active namespace").with_source(e)),
        }
    }

    pub async fn events_stream(&self) -> Result<jetstream::stream::Stream<()>, Failure> {
        self.js
            .get_stream_no_info(&self.stream_name)
            .await
            .map_err(|e| Failure::infra(format!("opening stream {}", self.stream_name)).with_source(e))
    }

    /// Waits for NATS (used before anything that needs it); never gives up.
    pub async fn wait_connected(client: &async_nats::Client) {
        let started = std::time::Instant::now();
        let mut logged = false;
        while client.connection_state() != async_nats::connection::State::Connected {
            if !logged && started.elapsed() > Duration::from_secs(2) {
                tracing::warn!("waiting for the NATS connection (is nats-server running? are the credentials right?)");
                logged = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
