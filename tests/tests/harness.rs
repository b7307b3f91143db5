//! The harness itself: servers start, and the users and permissions are those of nats/.

use sequent_tests::{nats, redis, ANALYST};
use std::time::Duration;

#[tokio::test]
async fn nats_and_redis_start_with_the_repository_users() {
    let nats = nats().await.unwrap();
    let admin = nats.admin().await.unwrap();
    let js = async_nats::jetstream::new(admin.clone());
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["ev.*.*".into()],
            ..Default::default()
        })
        .await
        .expect("JetStream is enabled for the Sequent account");
    // Control: the admin may publish an event directly.
    let ack = admin.request("ev.x.y", "{}".into()).await.unwrap();
    assert!(String::from_utf8_lossy(&ack.payload).contains("\"seq\":1"));

    // Least privilege: the analyst and a service user may not (only the gateway writes events).
    for (user, password) in [ANALYST, ("test", "test-dev")] {
        let client = nats.connect(user, password).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), client.request("ev.x.y", "{}".into())).await;
        assert!(!matches!(reply, Ok(Ok(_))), "{user} must not be able to publish events");
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "nothing but the admin's event was stored");

    let redis = redis().await.unwrap();
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}
