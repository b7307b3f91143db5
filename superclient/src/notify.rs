//! Commit announcements: every commit of the service publishes on the Redis channel
//! `sequent:<svc>:commits` (in the commit script itself); each instance listens and bumps
//! `Shared::commits`, which wakes the routes waiting in `bus:wait` for a projection to catch up.

use futures::StreamExt;
use std::time::Duration;

pub async fn listen(redis_url: String, service: String, commits: tokio::sync::watch::Sender<u64>) {
    let channel = crate::state::commits_channel(&service);
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                // Anything committed while we were not subscribed: let waiters look again.
                commits.send_modify(|n| *n += 1);
                let mut messages = pubsub.into_on_message();
                while messages.next().await.is_some() {
                    commits.send_modify(|n| *n += 1);
                }
                tracing::warn!(channel, "the Redis subscription to commit announcements ended; resubscribing");
            }
            Err(e) => tracing::warn!(channel, error = %e, "cannot subscribe to commit announcements; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
