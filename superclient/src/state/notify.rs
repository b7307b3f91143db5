//! Commit announcements for `bus:wait`: a route waiting for a projection marks the script keys
//! its condition read as watched (`sequent:{<svc>}:watch`); a commit that writes a watched key
//! announces it on the Redis channel `sequent:{<svc>}:commits` (in the commit script itself, and
//! only then); each instance listens and wakes the waiters of those keys.

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The watched keys a commit wrote. An empty list wakes every waiter: after a reconnect an
/// announcement may have been missed.
pub type Woken = Arc<Vec<String>>;

/// Where announcements are fanned out to the waiters of this instance.
pub fn fanout() -> broadcast::Sender<Woken> {
    broadcast::channel(1024).0
}

/// Whether announcement `woken` concerns a waiter of `keys`.
pub fn concerns(woken: &Woken, keys: &[String]) -> bool {
    woken.is_empty() || woken.iter().any(|k| keys.contains(k))
}

pub async fn listen(redis_url: String, service: String, woken: broadcast::Sender<Woken>) {
    let channel = super::keys::commits_channel(&service);
    let target = super::connection::Target::parse(&redis_url).unwrap_or(super::connection::Target::Single(redis_url));
    for attempt in 0.. {
        let subscribed = async {
            // On a cluster, any node: a PUBLISH reaches the subscribers of every node.
            let client = redis::Client::open(target.pubsub_node(attempt))?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                // Anything committed while we were not subscribed: let every waiter look again.
                let _ = woken.send(Arc::new(Vec::new()));
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let keys: String = msg.get_payload().unwrap_or_default();
                    let keys: Vec<String> = keys.split('\n').filter(|k| !k.is_empty()).map(str::to_string).collect();
                    if !keys.is_empty() {
                        let _ = woken.send(Arc::new(keys));
                    }
                }
                tracing::warn!(channel, "the Redis subscription to commit announcements ended; resubscribing");
            }
            Err(e) => tracing::warn!(channel, error = %e, "cannot subscribe to commit announcements; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
