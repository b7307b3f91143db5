//! The harness itself: servers start (with either backend), the test users' permissions
//! (a deployment's, from `sequent_auth::Permissions::of`) are the ones enforced, and the waiting helpers fail the way they should.

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use sequent_tests::{connect_watching, nats, nats_cluster, redis, service, wait_until, Child, NatsServer, ServerErrors, ADMIN, ANALYST, GATEWAY};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn smoke_nats_and_redis_with_the_repository_users() {
    let nats = nats().await.unwrap();
    let admin = nats.admin().await.unwrap();
    let account = jetstream::new(admin.clone()).query_account().await.expect("JetStream is enabled for the SEQUENT account");
    assert_eq!(account.streams, 0, "a fresh server");

    // Control: the admin may publish an event (else the checks below prove nothing).
    let admin_probe = User::connect(&nats, ADMIN).await;
    admin_probe.client.publish("ev.x.y", "{}".into()).await.unwrap();
    admin_probe.client.flush().await.unwrap();
    // Only the gateway writes events: the analyst and a service get a permissions violation.
    let mut analyst = User::connect(&nats, ANALYST).await;
    analyst.may_not("ev.x.y").await;
    let test = service("test");
    let mut test = User::connect(&nats, (&test.0, &test.1)).await;
    test.may_not("ev.x.y").await;
    assert!(admin_probe.errors.all().is_empty(), "admin got {:?}", admin_probe.errors.all());

    let redis = redis().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut redis.connection().await.unwrap()).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// One connection of one user, with the errors the server reports on it.
struct User {
    name: String,
    client: async_nats::Client,
    errors: ServerErrors,
}

impl User {
    async fn connect(nats: &NatsServer, (user, password): (&str, &str)) -> User {
        let (client, errors) = connect_watching(&nats.url, user, password).await.unwrap();
        User { name: user.to_string(), client, errors }
    }

    /// The user may publish to `subject`: a request there gets an answer (any answer, even a
    /// JetStream error; "no responders" counts too, it means the message was routed).
    async fn may(&self, subject: &str) {
        let payload = if subject.starts_with("$JS.API.DIRECT.GET") || subject.starts_with("$JS.API.STREAM.MSG.GET") {
            r#"{"seq":1}"#
        } else {
            ""
        };
        match tokio::time::timeout(T, self.client.request(subject.to_string(), payload.into())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            other => panic!("{} may publish to {subject}, but: {other:?}; server errors: {:?}", self.name, self.errors.all()),
        }
    }

    /// The server refuses a publish of this user to `subject` with a permissions violation.
    async fn may_not(&mut self, subject: &str) {
        self.client.publish(subject.to_string(), "{}".into()).await.unwrap();
        self.client.flush().await.unwrap();
        let needle = format!("Permissions Violation for Publish to \"{subject}\"");
        if let Err(e) = self.errors.wait_for(&needle, T).await {
            panic!("{} must not publish to {subject}: {e}", self.name);
        }
    }

    /// The server refuses this user's subscription to `subject` (in `queue`, if given).
    async fn may_not_subscribe(&mut self, subject: &str, queue: Option<&str>) {
        let _sub = match queue {
            Some(q) => self.client.queue_subscribe(subject.to_string(), q.to_string()).await.unwrap(),
            None => self.client.subscribe(subject.to_string()).await.unwrap(),
        };
        self.client.flush().await.unwrap();
        let needle = format!("Permissions Violation for Subscription to \"{subject}");
        if let Err(e) = self.errors.wait_for(&needle, T).await {
            panic!("{} must not subscribe to {subject} (queue {queue:?}): {e}", self.name);
        }
    }
}

/// The test users hold the permissions a deployment's auth callout gives (generated from
/// `sequent_auth::Permissions::of` into nats/test-users.conf), and a real server enforces them:
/// the gateway sets the stage with its own rights, as it does in production, then each user
/// tries what it should and should not be able to do.
#[tokio::test]
async fn permissions_of_every_user() {
    let nats = nats().await.unwrap();

    // --- gateway: creates the streams, the bucket and the services' consumers ---------------
    let gateway = User::connect(&nats, GATEWAY).await;
    let js = jetstream::new(gateway.client.clone());
    let events_config = stream::Config { name: "EVENTS".into(), subjects: vec!["ev.>".into()], allow_direct: true, ..Default::default() };
    js.create_stream(events_config).await.expect("gateway creates EVENTS");
    let index_config = stream::Config { name: "EVENTS_IX".into(), subjects: vec!["ix.>".into()], allow_direct: true, ..Default::default() };
    js.create_stream(index_config).await.expect("gateway creates EVENTS_IX");
    js.create_key_value(kv::Config { bucket: "sequent_members".into(), history: 1, ..Default::default() })
        .await
        .expect("gateway creates the membership bucket");
    let events = js.get_stream("EVENTS").await.expect("gateway reads EVENTS info");
    for name in ["test-p00", "accounts-p00", "sequent-indexer"] {
        let config = consumer::pull::Config { durable_name: Some(name.into()), ack_policy: consumer::AckPolicy::Explicit, ..Default::default() };
        events.create_consumer(config).await.unwrap_or_else(|e| panic!("gateway creates consumer {name}: {e}"));
    }
    js.publish("ev.acc-1.Opened", "{}".into()).await.unwrap().await.expect("gateway appends an event");
    js.publish("ix.c.corr-1", "1".into()).await.unwrap().await.expect("gateway writes the index");
    // Appends reach the gateway through its queue group, and it may answer them.
    let mut appends = gateway.client.queue_subscribe("sequent.append.*", "bus-gateway".into()).await.unwrap();
    let responder = gateway.client.clone();
    tokio::spawn(async move {
        while let Some(request) = appends.next().await {
            responder.publish(request.reply.unwrap(), "ok".into()).await.unwrap();
        }
    });
    gateway.client.flush().await.unwrap();
    let test_service = nats.service("test").await.unwrap();
    let reply = test_service.request("sequent.append.test", "{}".into()).await.expect("a service's append reaches the gateway");
    assert_eq!(&reply.payload[..], b"ok");

    // Nobody but the gateway (and the admin) creates, changes or deletes a consumer, in any form.
    let consumer_changes = [
        "$JS.API.CONSUMER.CREATE.EVENTS", // an ordered consumer, named by the server
        "$JS.API.CONSUMER.CREATE.EVENTS.mine",
        "$JS.API.CONSUMER.CREATE.EVENTS.accounts-p00",
        "$JS.API.CONSUMER.CREATE.EVENTS.accounts-p00.ev.0.acc-1.Opened",
        "$JS.API.CONSUMER.CREATE.EVENTS.test-p00",
        "$JS.API.CONSUMER.CREATE.EVENTS.sequent-indexer",
        "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.mine",
        "$JS.API.CONSUMER.DELETE.EVENTS.accounts-p00",
        "$JS.API.CONSUMER.DELETE.EVENTS.test-p00",
        "$JS.API.CONSUMER.CREATE.EVENTS_IX",
        "$JS.API.CONSUMER.CREATE.KV_sequent_members",
    ];
    let stream_changes = [
        "ev.x.y",
        "ix.c.x",
        "$JS.API.STREAM.CREATE.EVENTS",
        "$JS.API.STREAM.UPDATE.EVENTS",
        "$JS.API.STREAM.DELETE.EVENTS",
        "$JS.API.STREAM.PURGE.EVENTS",
        "$JS.API.STREAM.MSG.DELETE.EVENTS",
        "$JS.API.STREAM.DELETE.KV_sequent_members",
        "$KV.sequent_principals.test",
    ];

    // --- analyst: reads both streams by direct gets and its own tails, nothing else ---------
    let mut analyst = User::connect(&nats, ANALYST).await;
    for subject in [
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.EVENTS",
        "$JS.API.STREAM.INFO.EVENTS_IX",
        "$JS.API.DIRECT.GET.EVENTS",
        "$JS.API.DIRECT.GET.EVENTS_IX",
        "$JS.API.CONSUMER.INFO.EVENTS.test-p00",
        "sequent.tail.analyst",
    ] {
        analyst.may(subject).await;
    }
    for stream_name in ["EVENTS", "EVENTS_IX"] {
        let first = jetstream::new(analyst.client.clone()).get_stream_no_info(stream_name).await.unwrap().direct_get(1).await;
        assert!(first.is_ok(), "the analyst direct-gets from {stream_name}: {first:?}");
    }
    for subject in consumer_changes.iter().chain(&stream_changes).copied().chain([
        "sequent.append.test",
        "sequent.provision.test",
        "sequent.tail.test",
        "sequent.pull.test.events.test~1",
        "$KV.sequent_members.test.x",
        "$JS.API.STREAM.MSG.GET.EVENTS",
        // Pulling from a durable would take its events (and its pin).
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p00",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.sequent-indexer",
    ]) {
        analyst.may_not(subject).await;
    }
    analyst.may_not_subscribe("ev.>", None).await;
    analyst.may_not_subscribe("_INBOX.>", None).await;
    analyst.may_not_subscribe("_INBOX_test.>", None).await;

    // --- a service user (test): its own requests, consumers and member keys -----------------
    let mut test = User::connect(&nats, (&service("test").0, &service("test").1)).await;
    for subject in ["sequent.append.test", "sequent.provision.test", "sequent.tail.test", "$JS.API.STREAM.INFO.EVENTS", "$JS.API.DIRECT.GET.EVENTS"] {
        test.may(subject).await;
    }
    let js = jetstream::new(test.client.clone());
    let events = js.get_stream_no_info("EVENTS").await.unwrap();
    let mut own: consumer::PullConsumer = events.get_consumer("test-p00").await.expect("info on its own consumer");
    own.info().await.unwrap();
    let mut batch = own.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.expect("pull from its own consumer");
    let msg = batch.next().await.expect("one event").unwrap();
    msg.double_ack().await.expect("ack on its own consumer");
    let members = js.get_key_value("sequent_members").await.expect("the membership bucket");
    members.put("test.i-1", "alive".into()).await.expect("a heartbeat under its own name");
    assert_eq!(members.get("test.i-1").await.unwrap().as_deref(), Some(&b"alive"[..]), "read by direct get");
    for subject in consumer_changes.iter().chain(&stream_changes).copied().chain([
        "sequent.append.accounts",
        "sequent.provision.accounts",
        "sequent.tail.accounts",
        "$KV.sequent_members.accounts.i-1",
        "$JS.API.CONSUMER.UNPIN.EVENTS.accounts-p00",
        "$JS.ACK.EVENTS.accounts-p00.1.1.1.1.1.0",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.accounts-p00",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.sequent-indexer",
    ]) {
        test.may_not(subject).await;
    }
    test.may_not_subscribe("_INBOX.>", None).await;
    test.may_not_subscribe("sequent.append.*", Some("bus-gateway")).await;

    // --- every service user: its own append subject, no other, no events --------------------
    for name in sequent_auth::test_users::SERVICES {
        let (user, password) = service(name);
        let mut u = User::connect(&nats, (&user, &password)).await;
        u.may(&format!("sequent.append.{name}")).await;
        u.may_not(if *name == "users" { "sequent.append.accounts" } else { "sequent.append.users" }).await;
        u.may_not("ev.x.y").await;
    }
}

#[tokio::test]
async fn child_reports_lines_and_early_exit() {
    let mut child = Child::spawn("sh", "/bin/sh", &["-c", "echo hello; echo oops >&2; exit 3"], &[("GREETING".into(), "x".into())]).unwrap();
    assert_eq!(child.wait_for_line("oops", T).await.unwrap(), "oops");
    let err = child.wait_for_line("never printed", T).await.unwrap_err().to_string();
    assert!(err.contains("exited") && err.contains("hello"), "{err}");

    let mut sleeper = Child::spawn("sleeper", "/bin/sh", &["-c", "echo up; exec sleep 600"], &[]).unwrap();
    sleeper.wait_for_line("up", T).await.unwrap();
    let err = sleeper.wait_for_line("never", Duration::from_millis(100)).await.unwrap_err().to_string();
    assert!(err.contains("within"), "{err}");
    sleeper.pause().unwrap();
    sleeper.resume().unwrap();
    sleeper.kill9().await.unwrap();
    assert!(sleeper.signal(libc::SIGTERM).is_err(), "a reaped process is not signalled");
}


#[tokio::test]
async fn wait_until_names_what_it_waited_for() {
    let mut n = 0;
    wait_until("n to reach 3", T, || {
        n += 1;
        let now = n;
        async move { now >= 3 }
    })
    .await
    .unwrap();
    let err = wait_until("the impossible", Duration::from_millis(50), || async { Err::<(), _>("still broken") })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the impossible") && err.contains("still broken"), "{err}");
}

#[tokio::test]
async fn nats_server_survives_pause_and_kill9_is_final() {
    let mut nats = nats().await.unwrap();
    let admin = nats.admin().await.unwrap();
    nats.pause().await.unwrap();
    let frozen = tokio::time::timeout(Duration::from_millis(300), admin.request("x", "".into())).await;
    assert!(frozen.is_err(), "a paused server answers nothing");
    nats.resume().await.unwrap();
    wait_until("the resumed server to answer", T, || async { admin.flush().await }).await.unwrap();
    nats.kill9().await.unwrap();
    assert!(nats.admin().await.is_err(), "nothing listens after kill9");
}

#[tokio::test]
async fn cluster_of_three_keeps_a_replicated_stream_through_a_node_kill() {
    let mut cluster = nats_cluster().await.unwrap();
    let js = jetstream::new(cluster.admin().await.unwrap());
    let config = stream::Config { name: "R3".into(), subjects: vec!["r3.>".into()], num_replicas: 3, ..Default::default() };
    js.create_stream(config).await.unwrap();
    // Publishes until one is stored (a stream without a leader answers with an error).
    let publish_until_stored = |what: &'static str, subject: &'static str, payload: &'static str| {
        let js = js.clone();
        async move {
            wait_until(what, Duration::from_secs(30), || async {
                match js.publish(subject, payload.into()).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .unwrap();
        }
    };
    // A new R3 stream may answer its first publish "stream not found" until its leader is up.
    publish_until_stored("the first publish to the new R3 stream", "r3.a", "1").await;

    cluster.kill9(0).await.unwrap();
    // Publishes fail until the survivors elect a leader (if n1 led): retry until one lands.
    publish_until_stored("a publish to the R3 stream with n1 dead", "r3.b", "2").await;

    cluster.restart(0).await.unwrap();
    let n1 = jetstream::new(sequent_tests::connect(&cluster.urls[0], ADMIN.0, ADMIN.1).await.unwrap());
    wait_until("n1 to catch up as a current replica", Duration::from_secs(30), || async {
        let mut stream = n1.get_stream("R3").await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        let cluster = info.cluster.as_ref().ok_or("no cluster info")?;
        let n1_current = cluster.leader.as_deref() == Some("n1") || cluster.replicas.iter().any(|r| r.name == "n1" && r.current);
        Ok::<bool, String>(n1_current && info.state.messages >= 2)
    })
    .await
    .unwrap();
}
