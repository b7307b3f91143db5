//! The services' partition consumers' ack floors, kept on disk when the consumers keep their
//! state in memory (`--consumer-storage memory`), so that a consumer lost with a nats-server
//! restart is made again where it was, not at the stream's start.
//!
//! Why it matters: a consumer's ack floor is the last event whose effects and sends were
//! completed, and the rebuild after Redis lost a service's state replays each partition only up
//! to it (superclient/README.md). A consumer made again knowing nothing would let that rebuild
//! run to the stream's end, checkpointing events never handled, whose sends would then never be
//! made. Made again at its recorded floor (behind the real one by up to [`EVERY`]), it delivers
//! the events after it again, which the superclient marks as redelivered: it learns from the
//! consumer's metadata ([`subjects::MADE_AGAIN_BELOW`]) that every event before the stream's
//! end then may have been handled.

use crate::App;
use async_nats::jetstream::kv;
use futures::StreamExt;
use sequent_protocol::subjects;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The file-stored bucket: consumer name → its ack floor (a stream sequence).
pub const BUCKET: &str = "sequent_floors";
/// How often the floors are recorded.
pub const EVERY: Duration = Duration::from_secs(5);

/// Records the floors every [`EVERY`] until `stop`, when consumers are kept in memory.
pub async fn keep(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut recorded: HashMap<String, u64> = HashMap::new();
    // Looked up (or made) once, again after a failure.
    let mut kv: Option<kv::Store> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => return,
        }
        let pass = async {
            let store = match &kv {
                Some(store) => store.clone(),
                None => kv.insert(bucket(&app).await?).clone(),
            };
            record(&app, &store, &mut recorded).await
        };
        if let Err(e) = pass.await {
            kv = None;
            tracing::debug!(error = %e, "recording the consumers' ack floors failed; trying again");
        }
    }
}

async fn bucket(app: &App) -> anyhow::Result<kv::Store> {
    if let Ok(kv) = app.store.js.get_key_value(BUCKET).await {
        return Ok(kv);
    }
    app.store
        .js
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            description: "Sequent: the services' partition consumers' ack floors (consumers kept in memory)".into(),
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: app.config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating KV bucket {BUCKET}: {e}"))
}

/// One pass: every partition consumer's floor that moved since the last pass (one paged
/// consumer list, a write per moved floor).
async fn record(app: &App, kv: &kv::Store, recorded: &mut HashMap<String, u64>) -> anyhow::Result<()> {
    let mut consumers = app.store.events.consumers();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| anyhow::anyhow!("listing consumers: {e}"))?;
        // A floor of 0 is recorded too: a consumer made again knows then it is not new.
        let floor = info.ack_floor.stream_sequence;
        if subjects::partition_of_consumer(&info.name).is_none() || recorded.get(&info.name) == Some(&floor) {
            continue;
        }
        kv.put(&info.name, floor.to_string().into()).await.map_err(|e| anyhow::anyhow!("recording {}'s floor: {e}", info.name))?;
        recorded.insert(info.name.clone(), floor);
    }
    Ok(())
}

/// The bucket of recorded floors, if it exists yet.
pub async fn recorded_floors(app: &App) -> Option<kv::Store> {
    app.store.js.get_key_value(BUCKET).await.ok()
}

/// The recorded floor of consumer `name`, if any.
pub async fn recorded(floors: &kv::Store, name: &str) -> Option<u64> {
    let value = floors.get(name).await.ok()??;
    std::str::from_utf8(&value).ok()?.parse().ok()
}
