//! Command line: every flag has an environment-variable fallback.

use sequent_protocol::duration::parse_duration;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "superclient",
    version,
    about = "Runs one Sequent service written in Lua: sticky per-key event delivery from JetStream, \
             effectively-once Redis effects, poison-event parking, state rebuilds and HTTP routes",
    long_about = "Runs one Sequent service written in Lua.\n\n\
        `superclient SCRIPT.lua` (or `superclient run SCRIPT.lua`) runs one instance; start several \
        processes for several instances of the same service type: they share the partitions. \
        `superclient a.lua b.lua` runs one instance of each service in one process.\n\
        `superclient rebuild SCRIPT.lua` rebuilds the service's Redis state from the stream into a \
        fresh namespace and swaps it in (running instances keep going).\n\
        `superclient parked list|release SERVICE [KEY]` shows and releases parked keys.\n\
        `superclient dump SERVICE` prints the service's active Redis state as JSON.\n\
        `superclient new NAME` writes a new service with its test; `superclient test SCRIPT` runs \
        a script's tests without servers.\n\
        `superclient register SCRIPT... --credentials-dir DIR` (or `--reader NAME`) adds principals \
        to a running deployment; `superclient unregister NAME` removes one.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The Lua script(s) of the service(s) (same as `run SCRIPT...`).
    pub scripts: Vec<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one instance of the service (the default). Several scripts run one instance of each
    /// service in this process (each still its own service: NATS user, consumers, Redis
    /// namespace, HTTP listener); `http.call` between them stays in the process.
    Run {
        #[arg(required = true)]
        scripts: Vec<PathBuf>,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Rebuild the service's state from the stream into a fresh namespace, then swap it in.
    Rebuild {
        script: PathBuf,
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Poison events: list parked keys, or release them (their held events are processed in order
    /// by the instance that owns the key's partition).
    Parked {
        #[command(subcommand)]
        action: ParkedAction,
    },
    /// Write a new service to start from: NAME.lua (declared with bus:register), NAME_test.lua
    /// (passes `superclient test NAME.lua`), the Lua API's editor stubs (sequent-api.lua) and a
    /// .luarc.json for the Lua language server.
    New {
        /// The service type: a lowercase letter, then lowercase letters, digits, '-' or '_'.
        name: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a script's tests without any server: the state and the stream are kept in memory.
    /// The test file (default: SCRIPT's name with _test.lua) gives events (`given`), calls
    /// routes (`request`) and checks the sends and the state (`expect_sent`, `expect_state`);
    /// see superclient/README.md, "Testing a script". Exits with 1 when a test fails.
    Test {
        /// The service's Lua script.
        script: PathBuf,
        /// The test file; default: NAME_test.lua next to NAME.lua.
        test_file: Option<PathBuf>,
    },
    /// Register services (from their scripts' declarations) or a reader with a running
    /// deployment, as an operator: their credentials are written to --credentials-dir
    /// (`<name>.json`, owner-only). No restart, no other edit: the gateways admit them at once.
    Register {
        /// The services' scripts.
        scripts: Vec<PathBuf>,
        /// Register a reader (an analyst: reads the streams, writes nothing) instead.
        #[arg(long, conflicts_with = "scripts")]
        reader: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove a principal: its connections are closed and refused from now on.
    Unregister {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print the active Redis state of a service (user keys only) as one JSON object.
    Dump {
        service: String,
        #[command(flatten)]
        redis: RedisOpt,
    },
}

#[derive(Debug, Subcommand)]
pub enum ParkedAction {
    /// List the parked keys of a service with their error and the number of held events.
    List {
        service: String,
        #[command(flatten)]
        redis: RedisOpt,
    },
    /// Release one parked key (or all of them): the parked event and the held ones are processed
    /// again, in order. Waits for the owning instance to finish and reports the outcome.
    Release {
        service: String,
        /// The key to release; all parked keys when omitted.
        key: Option<String>,
        #[command(flatten)]
        redis: RedisOpt,
        /// How long to wait for a running instance to process the release.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: Duration,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RedisOpt {
    /// Redis URL: one node (`redis://host:port/db`) or a Redis Cluster
    /// (`redis+cluster://host:port,host:port,...`, its seed nodes). Each service type keeps its
    /// state under its own key prefix, in one cluster slot (SCALING.md).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user. Default: the service type named by the script's `bus:register` (each service
    /// type has its own user in nats/test-users.conf).
    #[arg(long, env = "SEQUENT_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password. Default: `<user>-dev`, the dev-only password of nats/test-users.conf.
    #[arg(long, env = "SEQUENT_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Trust this CA file for a TLS connection to NATS (also enables TLS).
    #[arg(long, env = "SEQUENT_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Where the services' credentials are (`<service>.json`, written by `superclient
    /// register`): the service connects as the principal registered under its name. Without
    /// it, --nats-user/--nats-password (static users, as in the test harness).
    #[arg(long, env = "SEQUENT_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    #[command(flatten)]
    pub redis: RedisOpt,
}

/// Who a service is to NATS.
pub struct Identity {
    pub user: String,
    pub password: String,
}

impl Identity {
    /// Its own inbox prefix (`_INBOX_<user>`), the only one a principal may receive on
    /// (registered ones and the test users alike).
    pub fn inbox_prefix(&self) -> String {
        sequent_auth::permissions::inbox_prefix(&self.user)
    }
}

impl Conn {
    /// The identity of `service`: credentials in the URL, then --nats-user/--nats-password,
    /// then its credential in --credentials-dir, then the development users of
    /// nats/test-users.conf (`<service>` / `<service>-dev`).
    pub fn identity(&self, service: &str, in_url: Option<(String, String)>) -> anyhow::Result<Identity> {
        if let Some((user, password)) = in_url {
            return Ok(Identity { user, password });
        }
        if self.nats_user.is_some() || self.nats_password.is_some() || self.credentials_dir.is_none() {
            let user = self.nats_user.clone().unwrap_or_else(|| service.to_string());
            let password = match self.nats_password.clone() {
                Some(p) => p,
                None if sequent_net::dev_mode() => format!("{user}-dev"),
                None => anyhow::bail!(
                    "no NATS credential for service {service:?}: give --credentials-dir (SEQUENT_CREDENTIALS_DIR) after `superclient register`, \
                     or --nats-user/--nats-password (SEQUENT_NATS_USER/SEQUENT_NATS_PASSWORD); SEQUENT_DEV=1 uses the test users of nats/test-users.conf"
                ),
            };
            return Ok(Identity { user, password });
        }
        let dir = self.credentials_dir.as_ref().expect("checked above");
        let path = dir.join(format!("{service}.json"));
        let credential = sequent_auth::Credential::read(&path).map_err(|e| {
            anyhow::anyhow!(
                "no credential for service {service:?} in {}: {e}. Register the service first: superclient register SCRIPT --credentials-dir {}",
                dir.display(),
                dir.display()
            )
        })?;
        anyhow::ensure!(credential.name == service, "{} is the credential of {:?}, not of {service:?}", path.display(), credential.name);
        Ok(Identity { user: credential.name, password: credential.secret })
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunOpts {
    /// HTTP listen address for the script's routes, /health (liveness) and /ready (readiness).
    /// Port 0 picks a free port; the bound address is logged ("http listening on ..."). Metrics
    /// have a listener of their own: --metrics-listen.
    #[arg(long, env = "SEQUENT_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Name of this instance among the instances of its service type. Default: hostname-pid.
    #[arg(long, env = "SEQUENT_INSTANCE")]
    pub instance: Option<String>,
    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "SEQUENT_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Memory limit of each Lua state, in MiB.
    #[arg(long, env = "SEQUENT_LUA_MEMORY_MB", default_value_t = 64)]
    pub lua_memory_mb: usize,
    /// Lua VM instructions one call (handler, route, receipt listener) may run before it is
    /// stopped with an error.
    #[arg(long, env = "SEQUENT_LUA_INSTRUCTIONS", default_value_t = 50_000_000)]
    pub lua_instructions: u64,
    /// How long one call (handler, route, receipt listener) may run before it is stopped with
    /// an error, C library calls included; time spent waiting for Redis, the gateway, HTTP or
    /// `bus:wait` does not count (those waits have timeouts of their own).
    #[arg(long, env = "SEQUENT_LUA_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub lua_timeout: Duration,
    /// Lua states for event handlers: how many partitions run their handlers at the same time
    /// (a state is held across the batch's network waits). Made when first needed.
    #[arg(long, env = "SEQUENT_LUA_STATES", default_value_t = 16)]
    pub lua_states: usize,
    /// Lua states for HTTP routes and WebSocket connect functions: how many requests run at
    /// the same time (a request waiting in `bus:wait` or `http.call` holds one). Made when
    /// first needed.
    #[arg(long, env = "SEQUENT_LUA_ROUTE_STATES", default_value_t = 16)]
    pub lua_route_states: usize,
    /// Enable `admin.*` in the script (services, instances, parked keys of every service
    /// type): for an operators' backend such as the bfaf only.
    #[arg(long, env = "SEQUENT_ADMIN_API")]
    pub admin_api: bool,
    /// Most events a partition's worker applies in one batch (one commit, one ack).
    #[arg(long, env = "SEQUENT_BATCH", default_value_t = 64)]
    pub batch: usize,
    /// Attempts of a failing handler before its event is parked.
    #[arg(long, env = "SEQUENT_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: i64,
    /// First retry delay of a failing handler; doubles per attempt (capped at 10 s).
    #[arg(long, env = "SEQUENT_RETRY_DELAY", default_value = "200ms", value_parser = parse_duration)]
    pub retry_delay: Duration,
    /// How long a committed event's ack may wait, so that one ack covers several commits (the
    /// consumer acks every earlier event with the last); `0` acks every commit at once. After a
    /// crash, up to this much more of the events is delivered again and skipped.
    #[arg(long, env = "SEQUENT_ACK_LINGER", default_value = "100ms", value_parser = parse_duration)]
    pub ack_linger: Duration,
    /// How long an unacknowledged event waits before JetStream redelivers it. Long handlers
    /// keep their event with progress signals, so this only bounds recovery after a crash.
    #[arg(long, env = "SEQUENT_ACK_WAIT", default_value = "5s", value_parser = parse_duration)]
    pub ack_wait: Duration,
    /// How long a partition stays pinned to an instance that stopped pulling.
    #[arg(long, env = "SEQUENT_PIN_TIMEOUT", default_value = "4s", value_parser = parse_duration)]
    pub pin_timeout: Duration,
    /// Heartbeat period of this instance in the membership bucket.
    #[arg(long, env = "SEQUENT_HEARTBEAT", default_value = "500ms", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// An instance whose last heartbeat is older than this is considered gone and its
    /// partitions are taken over.
    #[arg(long, env = "SEQUENT_MEMBER_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub member_timeout: Duration,
    /// Do not rebuild automatically when the service's state is empty but the stream holds
    /// events of its types (start from an empty state instead).
    #[arg(long, env = "SEQUENT_NO_AUTO_REBUILD")]
    pub no_auto_rebuild: bool,
    /// Log format: `text` or `json`.
    #[arg(long, env = "SEQUENT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub http: sequent_net::serve::HttpOpts,
}
