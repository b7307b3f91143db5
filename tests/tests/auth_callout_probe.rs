//! Probe: nats-server auth callout in server-config mode with the sequent-auth answers.
use sequent_auth::{callout, KeyPair, Layout, Permissions, Principal, Kind};
use futures::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn probe() {
    let issuer = KeyPair::new_account();
    let dir = std::env::temp_dir().join(format!("probe-callout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = sequent_tests::free_port();
    let conf = format!(r#"
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
accounts {{
  SEQUENT {{
    jetstream: enabled
    users: [
      {{ user: admin, password: $SEQ_ADMIN_PW }}
      {{ user: gateway, password: $SEQ_GATEWAY_PW }}
    ]
  }}
  SYS {{ users: [ {{ user: sys, password: $SEQ_SYS_PW }} ] }}
}}
system_account: SYS
authorization {{
  auth_callout {{
    issuer: {issuer}
    account: SEQUENT
    auth_users: [ admin, gateway, sys ]
  }}
}}
"#, store = dir.join("js").display(), issuer = issuer.public_key());
    let path = dir.join("n.conf");
    std::fs::write(&path, conf).unwrap();
    let mut child = sequent_tests::Child::spawn("nats", sequent_tests::find_server("nats-server").unwrap(), &["-c", &path.to_string_lossy()], &[("SEQ_ADMIN_PW".into(), "a".into()), ("SEQ_GATEWAY_PW".into(), "g".into()), ("SEQ_SYS_PW".into(), "s".into())]).unwrap();
    child.wait_for_line("Server is ready", Duration::from_secs(20)).await.unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let gw = sequent_tests::connect(&url, "gateway", "g").await.unwrap();
    let mut requests = gw.subscribe(callout::SUBJECT).await.unwrap();
    let secret = "s3cret";
    let principal = Principal::new("nectar", Kind::Service, secret, None);
    let layout = Layout::new("EVENTS", 16);
    let gw2 = gw.clone();
    let issuer2 = KeyPair::from_seed(&issuer.seed().unwrap()).unwrap();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            let token = String::from_utf8_lossy(&m.payload).to_string();
            let req = callout::parse_request(&token);
            eprintln!("REQUEST {req:?}");
            let Ok(req) = req else { continue };
            let answer = if req.user == "nectar" && principal.accepts(&req.password) {
                callout::admit(&req, "nectar", "SEQUENT", &Permissions::of(&principal, &layout), &issuer2).unwrap()
            } else {
                callout::refuse(&req, "unknown", &issuer2).unwrap()
            };
            gw2.publish(m.reply.unwrap(), answer.into()).await.unwrap();
        }
    });
    let ok = async_nats::ConnectOptions::with_user_and_password("nectar".into(), secret.into()).custom_inbox_prefix("_INBOX_nectar").connect(&url).await;
    eprintln!("nectar connect: {:?}", ok.as_ref().map(|_| "ok").map_err(|e| e.to_string()));
    let bad = async_nats::ConnectOptions::with_user_and_password("nectar".into(), "wrong".into()).retry_on_initial_connect().connection_timeout(Duration::from_secs(2)).connect(&url).await;
    eprintln!("bad connect: {:?}", bad.as_ref().map(|_| "ok").map_err(|e| e.to_string()));
    let c = ok.unwrap();
    let admin = sequent_tests::connect(&url, "admin", "a").await.unwrap();
    let js = async_nats::jetstream::new(admin);
    js.create_stream(async_nats::jetstream::stream::Config { name: "EVENTS".into(), subjects: vec!["ev.>".into()], allow_direct: true, ..Default::default() }).await.unwrap();
    js.publish("ev.1.k.T", "x".into()).await.unwrap().await.unwrap();
    let cjs = async_nats::jetstream::new(c.clone());
    let s = cjs.get_stream_no_info("EVENTS").await;
    let direct = s.unwrap().direct_get(1).await;
    eprintln!("direct get: {:?}", direct.map(|m| m.subject.to_string()).map_err(|e| e.to_string()));
    let create = cjs.get_stream_no_info("EVENTS").await.unwrap().create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: Some("x".into()), ..Default::default() }).await;
    eprintln!("create consumer: {:?}", create.map(|_| "created").map_err(|e| e.to_string()));
    let sub = c.subscribe("ev.>").await;
    c.flush().await.unwrap();
    eprintln!("sub ev.>: {:?}", sub.map(|_| "subscribed").map_err(|e| e.to_string()));
    let sys = sequent_tests::connect(&url, "sys", "s").await.unwrap();
    let inbox = sys.new_inbox();
    let mut replies = sys.subscribe(inbox.clone()).await.unwrap();
    sys.publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, r#"{"user":"nectar","acc":"SEQUENT"}"#.into()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), replies.next()).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    let server_id = v["server"]["id"].as_str().unwrap().to_string();
    let conns = v["data"]["connections"].as_array().cloned().unwrap_or_default();
    eprintln!("CONNZ {} conns: {:?}", conns.len(), conns.iter().map(|c| (c["cid"].clone(), c["authorized_user"].clone(), c["account"].clone())).collect::<Vec<_>>());
    for c in conns {
        let k = sys.request(format!("$SYS.REQ.SERVER.{server_id}.KICK"), serde_json::json!({"cid": c["cid"]}).to_string().into()).await.unwrap();
        eprintln!("KICK -> {}", String::from_utf8_lossy(&k.payload));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eprintln!("nectar state after kick: {:?}", c.connection_state());
    drop(child);
    panic!("probe done");
}
