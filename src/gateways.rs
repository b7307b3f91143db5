//! The settings of the stack's gateways: the one in this process takes them as flags, a
//! gateway of its own process (`--cluster` runs a second one) in its environment, where the
//! secrets stay out of its command line (which `ps` shows).

use crate::secrets::StackSecrets;

/// (flag, environment variable, value) of each setting.
fn settings(secrets: &StackSecrets, nats_url: &str, replicas: u16) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("--nats-url", "NATS_URL", nats_url.to_string()),
        ("--nats-password", "SEQUENT_GATEWAY_NATS_PASSWORD", secrets.nats_gateway.clone()),
        ("--callout-seed", "SEQUENT_CALLOUT_SEED", secrets.callout_seed.clone()),
        ("--sys-nats", "SEQUENT_SYS_NATS_CREDENTIALS", format!("sys:{}", secrets.nats_sys)),
        ("--replicas", "SEQUENT_REPLICAS", replicas.to_string()),
    ]
}

/// The environment of a gateway process.
pub fn env(secrets: &StackSecrets, nats_url: &str, replicas: u16) -> Vec<(String, String)> {
    settings(secrets, nats_url, replicas).into_iter().map(|(_, var, value)| (var.to_string(), value)).collect()
}

/// The command line of the gateway in this process.
pub fn args(secrets: &StackSecrets, nats_url: &str, replicas: u16) -> Vec<String> {
    let mut args = vec!["bus-gateway".to_string()];
    for (flag, _, value) in settings(secrets, nats_url, replicas) {
        args.extend([flag.to_string(), value]);
    }
    args
}
