//! `cargo run` (the dev stack) stopped the way service managers, container runtimes and
//! `./sequent.sh` stop it: SIGTERM to its whole process group. Its children run in process
//! groups of their own, so the signal reaches only the stack, which stops the services first
//! (each finishes its work and logs "superclient stopped"), then the gateway, then the servers;
//! before, the group signal hit nats-server, Redis and the services at once.

use sequent_tests::{binary, free_port, Child, TempDir};
use std::time::Duration;

#[tokio::test]
async fn a_sigterm_to_the_dev_stacks_group_stops_services_then_gateway_then_servers() {
    // The stack starts its own servers (NATS with nats/dev.conf and its secrets), on free ports.
    // A port found free may be taken by another test's connection before a server binds it:
    // then the stack says a server did not start, and it is started again on other ports.
    let stack_bin = binary("sequent").to_string_lossy().to_string();
    let mut attempt = 0;
    let (mut stack, data, http_port) = loop {
        attempt += 1;
        let data = TempDir::new("dev-stack").unwrap();
        let http_port = free_port().to_string();
        let env = vec![
            ("SEQUENT_GATEWAY_LISTEN".to_string(), format!("127.0.0.1:{}", free_port())),
            ("SEQUENT_EXPLORER_PORT".to_string(), free_port().to_string()),
            ("SEQUENT_NO_BUILD".to_string(), "1".to_string()),
            ("RUST_LOG".to_string(), "info,async_nats=warn".to_string()),
        ];
        let (nats_port, redis_port) = (free_port().to_string(), free_port().to_string());
        let data_dir = data.path().to_string_lossy().to_string();
        // setsid: the stack leads a process group, as under ./sequent.sh or a service manager.
        let args = [
            stack_bin.as_str(),
            "--nats-port",
            &nats_port,
            "--redis-port",
            &redis_port,
            "--http-port",
            &http_port,
            "--instances",
            "1",
            "--data-dir",
            &data_dir,
        ];
        let mut stack = Child::spawn("sequent", "setsid", &args, &env).unwrap();
        match stack.wait_for_line("Sequent is running.", Duration::from_secs(180)).await {
            Ok(_) => break (stack, data, http_port),
            Err(e) if attempt < 3 && e.to_string().contains("did not start listening") => {
                eprintln!("the stack's servers did not start (attempt {attempt}): {e}; again on other ports");
            }
            Err(e) => panic!("{e}"),
        }
    };
    // Running, then ready once its instances hold their partitions (a moment after they joined).
    sequent_tests::wait_until("the bank to be ready", Duration::from_secs(60), || async {
        let ready = reqwest::get(format!("http://127.0.0.1:{http_port}/ready")).await.map_err(|e| e.to_string())?;
        match ready.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("{status}: {}", ready.text().await.unwrap_or_default())),
        }
    })
    .await
    .unwrap();

    // SIGTERM to the whole group, as `kill -TERM -- -PGID` does.
    let status = stack.terminate_group(Duration::from_secs(90)).await.unwrap();
    assert!(status.success(), "the stack exited with {status}");

    let out = stack.output();
    let at = |needle: &str| out.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("the stack printed no {needle:?}:\n{}", out.join("\n")));
    let (services, gateway, gateway_stopped, servers) =
        (at("stopping: the services first"), at("stopping: the gateway"), at("  the gateway stopped"), at("stopping: NATS and Redis"));
    assert!(services < gateway && gateway < gateway_stopped && gateway_stopped < servers, "services, then the gateway, then the servers:\n{}", out.join("\n"));
    assert!(!out.iter().any(|l| l.contains("did not stop in time")), "{}", out.join("\n"));
    // Each service got one SIGTERM, from the stack (none from the group signal), and stopped
    // gracefully before the gateway went.
    for service in ["users", "accounts", "transfers", "nectar", "bfaf", "explorer"] {
        let log = std::fs::read_to_string(data.path().join(format!("logs/{service}-1.log"))).unwrap();
        assert_eq!(log.matches("stop requested").count(), 1, "{service}: one stop request:\n{log}");
        assert!(log.lines().any(|l| l.contains("stop requested") && l.contains("SIGTERM")), "{service}: stopped by SIGTERM:\n{log}");
        assert!(log.contains("superclient stopped"), "{service}: stopped gracefully:\n{log}");
    }
}
