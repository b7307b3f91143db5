use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = bus_gateway::Config::parse();
    init_tracing(&config.log_format);
    bus_gateway::run(config).await
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
