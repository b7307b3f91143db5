//! `cargo run -- --cluster`: the bank on three NATS nodes (the stream in three replicas) with
//! two gateways and two instances of every service. The bank's smoke (sign-up, accounts,
//! deposits, transfers, balances) runs through its API; then the stream's leader node is
//! killed with SIGKILL, and transfers still complete.

mod bank_common;

use bank_common::{perform, Api};
use sequent_tests::{binary, free_port, wait_until, Child, TempDir};
use serde_json::{json, Value};
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// The first of `n` consecutive ports that are free now.
fn free_ports(n: u16) -> u16 {
    loop {
        let first = free_port();
        if first < u16::MAX - n && (1..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return first;
        }
    }
}

/// The stack started with `--cluster` on free ports; retried on other ports when a port found
/// free was taken before a server bound it.
async fn start() -> (Child, TempDir, String) {
    let stack_bin = binary("sequent").to_string_lossy().to_string();
    for attempt in 1.. {
        let data = TempDir::new("cluster-stack").unwrap();
        let env = vec![
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{}", free_port())),
            ("SEQUENT_EXPLORER_PORT".to_string(), free_port().to_string()),
            ("SEQUENT_NO_BUILD".to_string(), "1".to_string()),
            ("RUST_LOG".to_string(), "info,async_nats=warn".to_string()),
        ];
        let (nats, routes, redis, http) = (free_ports(3).to_string(), free_ports(3).to_string(), free_port().to_string(), free_port().to_string());
        let data_dir = data.path().to_string_lossy().to_string();
        // setsid: the stack leads a process group, as under ./sequent.sh or a service manager.
        let args = [
            stack_bin.as_str(),
            "--cluster",
            "--nats-port",
            &nats,
            "--route-port",
            &routes,
            "--redis-port",
            &redis,
            "--http-port",
            &http,
            "--data-dir",
            &data_dir,
        ];
        let mut stack = Child::spawn("sequent", "setsid", &args, &env).unwrap();
        // The last line of what it prints once everything runs.
        match stack.wait_for_line("Ctrl-C stops everything.", Duration::from_secs(300)).await {
            Ok(_) => return (stack, data, format!("http://127.0.0.1:{http}")),
            Err(e) if attempt < 3 && e.to_string().contains("did not start listening") => {
                eprintln!("the stack's servers did not start (attempt {attempt}): {e}; again on other ports");
            }
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

/// The pid of the stack's nats-server whose data is in `store` (found in /proc).
fn node_pid(store: &std::path::Path) -> u32 {
    let store = store.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        if args.first().is_some_and(|a| a.ends_with("nats-server")) && args.iter().any(|a| *a == store) {
            return pid;
        }
    }
    panic!("no nats-server runs with its data in {store}");
}

/// A transfer through the bank, asked again with its Idempotency-Key while the bank says it is
/// busy (a NATS leader election), then followed until it ends; returns how it ended.
async fn transfer(apis: &[Api], token: &str, from: &str, to: &str, cents: i64, key: &str) -> Value {
    let retries = AtomicUsize::new(0);
    let body = json!({ "from_account": from, "to_account": to, "amount_cents": cents });
    let (s, v) = perform(apis, 0, "POST", "/api/transfers", token, body, key, &retries).await;
    assert_eq!(s, 202, "{v}");
    let id = v["transfer_id"].as_str().unwrap().to_string();
    let ended = std::sync::Mutex::new(Value::Null);
    wait_until(&format!("transfer {id} to end"), Duration::from_secs(120), || async {
        let (s, v) = apis[0].try_call("GET", &format!("/api/transfers/{id}"), Some(token), None, &[]).await?;
        let done = s == 200 && v["status"] != "pending";
        *ended.lock().unwrap() = v;
        Ok::<bool, String>(done)
    })
    .await
    .unwrap();
    ended.into_inner().unwrap()
}

async fn balance(api: &Api, token: &str, account: &str) -> i64 {
    let (s, v) = api.get(&format!("/api/accounts/{account}"), token).await;
    assert_eq!(s, 200, "{v}");
    v["balance_cents"].as_i64().unwrap()
}

#[tokio::test]
async fn the_cluster_stack_runs_the_bank_and_survives_losing_the_streams_leader_node() {
    let (mut stack, data, http) = start().await;
    let out = stack.output().join("\n");
    assert!(out.contains("Second gateway:") && out.contains("NATS cluster:"), "two gateways, three nodes:\n{out}");
    for label in ["Gateway API:", "Second gateway:"] {
        let line = out.lines().find(|l| l.contains(label)).unwrap();
        let gateway = line.split_whitespace().nth(2).unwrap();
        let ready = reqwest::get(format!("{gateway}/ready")).await.unwrap();
        assert_eq!(ready.status(), 200, "{label} {gateway} is ready");
    }
    let api = Api::new(&http);
    let apis = [api.clone()];

    // The bank's smoke: customers, accounts, a deposit, a transfer, the balances.
    let (alice, bob) = (api.customer("alice").await, api.customer("bob").await);
    let (a1, b1) = (api.open_account(&alice).await, api.open_account(&bob).await);
    api.deposit(&alice, &a1, 10_000).await;
    let t = transfer(&apis, &alice, &a1, &b1, 2_500, "before-the-kill").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!((balance(&api, &alice, &a1).await, balance(&api, &bob, &b1).await), (7_500, 2_500));

    // The stream is replicated on all three nodes; kill its leader.
    let secrets: Value = serde_json::from_str(&std::fs::read_to_string(data.path().join("secrets/stack.json")).unwrap()).unwrap();
    let line = out.lines().find(|l| l.contains("NATS cluster:")).unwrap();
    let url = line.split_whitespace().nth(2).unwrap().to_string();
    let admin = sequent_tests::connect(&url, "admin", secrets["nats_admin"].as_str().unwrap()).await.unwrap();
    let js = async_nats::jetstream::new(admin);
    let info = js.get_stream("EVENTS").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3, "the stream has three replicas");
    let cluster = info.cluster.clone().expect("a clustered stream");
    let leader = cluster.leader.clone().expect("the stream has a leader");
    assert_eq!(cluster.replicas.len(), 2, "two followers beside the leader: {cluster:?}");
    let pid = node_pid(&data.path().join("cluster").join(&leader));
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is the stack's nats-server.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    eprintln!("killed node {leader} (pid {pid}), the stream's leader");

    // Transfers still complete, through the two nodes left.
    let t = transfer(&apis, &alice, &a1, &b1, 1_000, "after-the-kill-1").await;
    assert_eq!(t["status"], "completed", "{t}");
    let t = transfer(&apis, &bob, &b1, &a1, 500, "after-the-kill-2").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!((balance(&api, &alice, &a1).await, balance(&api, &bob, &b1).await), (7_000, 3_000));
    wait_until("another node to lead the stream", Duration::from_secs(60), || async {
        let mut stream = js.get_stream("EVENTS").await.map_err(|e| e.to_string())?;
        let info = stream.info().await.map_err(|e| e.to_string())?;
        Ok::<bool, String>(info.cluster.as_ref().and_then(|c| c.leader.as_ref()).is_some_and(|l| *l != leader))
    })
    .await
    .unwrap();

    // SIGTERM to the whole group stops it (the killed node is gone already).
    let status = stack.terminate_group(Duration::from_secs(90)).await.unwrap();
    assert!(status.success(), "the stack exited with {status}");
}
