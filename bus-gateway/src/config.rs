//! Command-line flags, each with an environment-variable fallback.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use sequent_protocol::duration::parse_duration;
use std::time::Duration;

/// See [`Config::consumer_storage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumerStorage {
    File,
    Memory,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bus-gateway",
    about = "Sequent's gateway: validated, version-checked appends to the JetStream event stream, \
             queries, and a live WebSocket feed",
    version
)]
pub struct Config {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS user of the gateway (see nats/test-users.conf).
    #[arg(long, env = "SEQUENT_GATEWAY_NATS_USER", default_value = "gateway")]
    pub nats_user: String,

    /// NATS password of the gateway (required; in development mode, SEQUENT_DEV=1, the test
    /// users' `gateway-dev`).
    #[arg(long, env = "SEQUENT_GATEWAY_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// Trust this CA file for a TLS connection to NATS (also enables TLS).
    #[arg(long, env = "SEQUENT_NATS_CA")]
    pub nats_ca: Option<PathBuf>,

    /// HTTP listen address (REST API, WebSocket live feed, /health, /ready). Metrics have a
    /// listener of their own: --metrics-listen.
    #[arg(long, env = "SEQUENT_GATEWAY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Name of the JetStream stream holding the events.
    #[arg(long, env = "SEQUENT_STREAM", default_value = "EVENTS")]
    pub stream: String,

    /// Replicas of the streams (1 for a single node, 3 for a cluster).
    #[arg(long, env = "SEQUENT_REPLICAS", default_value_t = 1)]
    pub replicas: usize,

    /// Where the services' partition consumers keep their state (what was delivered and acked):
    /// `memory` writes no state file (a busy file consumer rewrites one up to ten times a
    /// second, nats-server's largest cost under the bank); the gateway records their ack floors
    /// on disk every 5 s and makes a consumer lost with a nats-server restart again after its
    /// floor. `file` keeps them on disk. Changing it replaces the existing consumers. See
    /// README.md, "Consumer state".
    #[arg(long, env = "SEQUENT_CONSUMER_STORAGE", default_value = "memory", value_enum)]
    pub consumer_storage: ConsumerStorage,

    /// Number of key partitions. Fixed when the stream is created; changing it later would move
    /// keys between partitions, so the gateway refuses to start on a mismatch.
    #[arg(long, env = "SEQUENT_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,

    /// Instead of serving: copy the events of this (old) stream into --stream, made with
    /// --partitions, keeping every sequence, and exit. The way to another partition count
    /// (SCALING.md); the old stream stops taking appends and its services must handle what is
    /// left first.
    #[arg(long, env = "SEQUENT_REPARTITION_FROM")]
    pub repartition_from: Option<String>,

    /// With --repartition-from: how long to wait for the services to handle and ack what the
    /// old stream holds before giving up (changing nothing more; run it again later).
    #[arg(long, env = "SEQUENT_REPARTITION_WAIT", default_value = "2m", value_parser = parse_duration)]
    pub repartition_wait: Duration,

    /// With --repartition-from, for tests of an interrupted copy: exit (status 3) once the
    /// event at this sequence is copied, as a run killed there would have left it.
    #[arg(long, hide = true)]
    pub repartition_stop_at: Option<u64>,

    /// How long JetStream remembers event ids to absorb retries, e.g. "2m", "10m".
    #[arg(long, env = "SEQUENT_DEDUP_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub dedup_window: Duration,

    /// Largest `data` object of one event, in bytes.
    #[arg(long, env = "SEQUENT_MAX_DATA_BYTES", default_value_t = 256 * 1024)]
    pub max_data_bytes: usize,

    /// Most events in one append (an atomic batch).
    #[arg(long, env = "SEQUENT_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,

    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "SEQUENT_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// API tokens for HTTP clients, comma separated `name:token:role` with role `write` (append
    /// and read) or `read`. When empty, the HTTP API is open: only sensible on loopback.
    #[arg(long, env = "SEQUENT_API_TOKENS", default_value = "", hide_env_values = true)]
    pub api_tokens: String,

    /// Answer nats-server's auth callout with this account nkey seed (`SA...`; its public key is
    /// the `issuer` of the server's `auth_callout` block): principals registered in the
    /// registry connect with their own credentials and get least-privilege permissions derived
    /// from their declarations, and the registry is the append policy (`--policy` is then
    /// ignored). See nats/dev.conf and deploy/.
    #[arg(long, env = "SEQUENT_CALLOUT_SEED", hide_env_values = true)]
    pub callout_seed: Option<String>,

    /// The NATS account admitted principals are bound to (the `account` of `auth_callout`).
    #[arg(long, env = "SEQUENT_NATS_ACCOUNT", default_value = "SEQUENT")]
    pub nats_account: String,

    /// A user of the system account, to close the connections of a principal that is removed
    /// or registered anew: `user:password`. Without it they keep their open connections until
    /// they reconnect.
    #[arg(long, env = "SEQUENT_SYS_NATS_CREDENTIALS", hide_env_values = true)]
    pub sys_nats: Option<String>,

    /// JSON file naming, per service type, the event types it may append:
    /// `{"accounts": ["AccountOpened", ...], ...}`. Without it any service may append any type.
    #[arg(long, env = "SEQUENT_POLICY")]
    pub policy: Option<PathBuf>,

    /// How long one JetStream request may take before it is retried (the outcome of a
    /// timed-out append is unknown, so it is retried with the same event id).
    #[arg(long, env = "SEQUENT_NATS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_timeout: Duration,

    /// Keys whose current version is cached as a hint (JetStream stays the authority).
    #[arg(long, env = "SEQUENT_VERSION_CACHE", default_value_t = 100_000)]
    pub version_cache: usize,

    /// Atomic batches one gateway keeps open at once; more wait their turn. JetStream allows
    /// 50 per stream, so several gateways together should stay near that.
    #[arg(long, env = "SEQUENT_MAX_OPEN_BATCHES", default_value_t = 32)]
    pub max_open_batches: usize,

    /// Log format: `text` or `json`.
    #[arg(long, env = "SEQUENT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    #[command(flatten)]
    pub http: sequent_net::serve::HttpOpts,
}
