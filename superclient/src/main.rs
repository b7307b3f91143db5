//! superclient: runs Sequent services written in Lua. See `superclient --help`.

use clap::Parser;
use superclient::cli::{Cli, Command, ParkedAction};
use superclient::{app, authoring, consume::parking, registration};

// Lua's allocations (mlua hands them to Rust's allocator) and the runtime's are a sixth of the
// superclient's CPU with the system allocator; mimalloc's thread-local heaps cost less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Some(Command::Run { run, .. } | Command::Rebuild { run, .. }) => run.log_format.clone(),
        _ => cli.run.log_format.clone(),
    };
    // A test run shows its own report; the scripts' logs only from warnings up (RUST_LOG shows more).
    let quiet = matches!(cli.command, Some(Command::Test { .. }));
    init_tracing(&log_format, if quiet { "warn,superclient::script::api::crypto=error" } else { "info,async_nats=warn" });
    // At least 4 worker threads: a Lua call inside a C function (table.sort, a pattern match)
    // cannot yield until its time limit stops it, and on a 2-core machine two such calls would
    // otherwise hold every worker and stall the other requests.
    // TOKIO_WORKER_THREADS, when set, decides instead (tokio reads it).
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(workers);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            None => app::run(&cli.scripts, cli.conn, cli.run).await,
            Some(Command::Run { scripts, conn, run }) => app::run(&scripts, conn, run).await,
            Some(Command::Rebuild { script, conn, run }) => app::rebuild(&script, conn, run).await,
            Some(Command::Parked { action: ParkedAction::List { service, redis } }) => parking::cli_list(&service, &redis).await,
            Some(Command::Parked { action: ParkedAction::Release { service, key, redis, wait } }) => {
                parking::cli_release(&service, key.as_deref(), &redis, wait).await
            }
            Some(Command::Dump { service, redis }) => app::dump(&service, &redis.redis_url).await,
            Some(Command::New { name, dir }) => {
                for path in authoring::skeleton::write(&name, &dir)? {
                    println!("wrote {}", path.display());
                }
                println!("next: superclient test {}", dir.join(format!("{name}.lua")).display());
                Ok(())
            }
            Some(Command::Test { script, test_file }) => match authoring::testing::run(&script, test_file.as_deref()).await? {
                true => Ok(()),
                false => std::process::exit(1),
            },
            Some(Command::Register { scripts, reader, conn }) => {
                let dir = conn.credentials_dir.clone().unwrap_or_else(|| ".sequent/secrets/credentials".into());
                let subject = match &reader {
                    Some(name) => registration::Subject::Reader(name),
                    None => registration::Subject::Scripts(&scripts),
                };
                registration::register(subject, &conn, &dir).await
            }
            Some(Command::Unregister { name, conn }) => registration::unregister(&name, &conn).await,
        }
    })
}

fn init_tracing(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
