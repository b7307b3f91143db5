//! Outside development mode (`SEQUENT_DEV=0`) no binary runs on a public default: started
//! without one of its secrets, it exits at once, non-zero, naming what is missing.

use sequent_tests::{binary, redis, repo_root, Child};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Runs `program` outside development mode with `env` and returns its output once it exited,
/// failing the test if it exited successfully or did not name `needle`.
async fn refuses(name: &str, program: &str, args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("SEQUENT_DEV".into(), "0".into()));
    let mut child = Child::spawn(name, binary(program), args, &env).unwrap();
    let status = tokio::time::timeout(T, child.wait()).await.unwrap_or_else(|_| panic!("{name} kept running without its secret")).unwrap();
    let output = child.output().join("\n");
    assert!(!status.success(), "{name} exited successfully:\n{output}");
    assert!(output.contains(needle), "{name} did not name {needle:?}:\n{output}");
    println!("REFUSED: {name}: {}", output.lines().find(|l| l.contains(needle)).unwrap_or_default().trim());
}

#[tokio::test]
async fn binaries_refuse_to_start_without_their_secrets_outside_development_mode() {
    // The gateway: no API tokens and no registry would leave its HTTP API open to anyone.
    let nats_url = ("NATS_URL", "nats://127.0.0.1:1");
    refuses("gateway-open", "bus-gateway", &[], &[nats_url], "refusing to serve an open HTTP API").await;
    // ...and with tokens, it still needs its own NATS password.
    refuses("gateway-nats", "bus-gateway", &[], &[nats_url, ("SEQUENT_API_TOKENS", "ops:a-long-operator-token-123:write")], "SEQUENT_GATEWAY_NATS_PASSWORD").await;

    // A service with internal routes needs the deployment's service token; one that mints
    // tokens, the token secret; every service, its NATS credential.
    let redis = redis().await.unwrap();
    let users = repo_root().join("services/users.lua");
    let users = users.to_str().unwrap();
    let redis_url = ("REDIS_URL", redis.url.as_str());
    let service_token = ("SEQUENT_SERVICE_TOKEN", "a-service-token-of-enough-length-0123");
    let token_secret = ("SEQUENT_TOKEN_SECRET", "a-secret-of-enough-length-0123456789");
    refuses("users-service-token", "superclient", &[users], &[nats_url, redis_url], "SEQUENT_SERVICE_TOKEN").await;
    refuses("users-token-secret", "superclient", &[users], &[nats_url, redis_url, service_token], "SEQUENT_TOKEN_SECRET").await;
    refuses("users-nats", "superclient", &[users], &[nats_url, redis_url, service_token, token_secret], "no NATS credential").await;
}
