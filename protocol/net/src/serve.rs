//! The HTTP server loop of the gateway and the superclient: HTTP/1.1 (WebSocket upgrades
//! included), optionally over TLS, with the protections `axum::serve` lacks:
//!
//! - a header-read timeout: a client that does not send a request's headers in time (a
//!   slowloris, or an idle keep-alive connection) is disconnected; a TLS handshake has the
//!   same time;
//! - a connection limit: at the limit, new connections wait in the listen backlog until one
//!   closes (upgraded WebSockets are not counted: they have their own limits);
//! - a graceful stop: when the shutdown future completes, no new connection is accepted (those
//!   the kernel had already completed are still served), every connection finishes the request
//!   in hand and closes (idle keep-alive connections close at once), and [`serve`] returns when
//!   all are done or `--shutdown-timeout` has passed, whichever comes first.
//!
//! Each request carries the client's address as an `axum::extract::ConnectInfo<SocketAddr>`
//! extension.

use anyhow::Context as _;
use axum::Router;
use clap::Args;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sequent_protocol::duration::parse_duration;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use futures::FutureExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// Flags of an HTTP server (flattened into the gateway's and the superclient's).
#[derive(Debug, Clone, Args)]
pub struct HttpOpts {
    /// Serve HTTPS with this certificate chain (PEM file); needs --tls-key.
    #[arg(long, env = "SEQUENT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM file) of --tls-cert.
    #[arg(long, env = "SEQUENT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A client must send a request's headers (and finish a TLS handshake) within this time,
    /// else its connection is closed; idle keep-alive connections close after it too.
    #[arg(long, env = "SEQUENT_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Most HTTP connections served at once; more wait in the listen backlog.
    #[arg(long, env = "SEQUENT_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// On SIGTERM or SIGINT: how long the requests in flight (and, in the superclient, the
    /// event batches in hand) may take to finish before the process exits anyway.
    #[arg(long, env = "SEQUENT_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Where Prometheus scrapes `/metrics` (a listener of its own, plain HTTP, apart from the
    /// API). Port 0 picks a free port; the bound address is logged ("metrics listening on ...").
    /// Keep it on loopback or a private network: it is not authenticated.
    #[arg(long, env = "SEQUENT_METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: std::net::SocketAddr,
}

impl HttpOpts {
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The TLS acceptor of --tls-cert/--tls-key, or None for plain HTTP.
    fn acceptor(&self) -> anyhow::Result<Option<TlsAcceptor>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Ok(None) };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading the certificates of --tls-cert {}", cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "--tls-cert {} holds no certificate", cert.display());
        let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key of --tls-key {}", key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("--tls-cert and --tls-key do not make a usable certificate")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Checks the TLS files, then serves `router` on `listener` until `shutdown` completes; then
/// stops gracefully (see the module documentation) within `--shutdown-timeout`.
pub async fn serve(listener: TcpListener, router: Router, opts: &HttpOpts, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let acceptor = opts.acceptor()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let timeout = opts.header_read_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; all are done when `open.recv()` sees none left.
    let (alive, mut open) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    let spawn = |tcp: TcpStream, peer: std::net::SocketAddr, permit: Option<tokio::sync::OwnedSemaphorePermit>| {
        let _ = tcp.set_nodelay(true);
        let (router, acceptor, stop, alive) = (router.clone(), acceptor.clone(), stop_rx.clone(), alive.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _alive = alive;
            match acceptor {
                None => connection(tcp, router, peer, timeout, stop).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => connection(tls, router, peer, timeout, stop).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    };
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        spawn(tcp, peer, Some(permit));
    }
    // Connections the kernel completed already wait in the listen backlog: closing the listener
    // would reset them although their clients may have sent a request. Serve them too (one
    // request each), then close the listener.
    let _ = stop_tx.send(true);
    let mut late = 0;
    while let Some(Ok((tcp, peer))) = listener.accept().now_or_never() {
        spawn(tcp, peer, None);
        late += 1;
    }
    let addr = listener.local_addr().ok();
    drop(listener);
    drop(alive);
    let in_flight = opts.max_connections.max(1) - permits.available_permits() + late;
    tracing::info!(?addr, connections = in_flight, "HTTP server stopping: no new connections; finishing the requests in flight");
    let started = std::time::Instant::now();
    match tokio::time::timeout(opts.shutdown_timeout, open.recv()).await {
        Ok(_) => tracing::info!(?addr, seconds = started.elapsed().as_secs_f64(), "HTTP server stopped: every request in flight was answered"),
        Err(_) => tracing::warn!(
            ?addr,
            still_open = opts.max_connections.max(1) - permits.available_permits(),
            "HTTP server stopped with requests still in flight after --shutdown-timeout {:?}",
            opts.shutdown_timeout
        ),
    }
    Ok(())
}

/// Completes once `stop` is true (or its sender is gone). Unlike `wait_for`, holds no borrow of
/// the value across an await, so the future stays `Send`.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The future of SIGTERM or SIGINT (Ctrl-C), whichever comes first: what service managers,
/// container runtimes and terminals send to stop a process.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot listen for SIGTERM/SIGINT: the process stops only when killed");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stop requested");
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S, router: Router, peer: std::net::SocketAddr, timeout: Duration, mut stop: watch::Receiver<bool>) {
    use tower::ServiceExt as _;
    // The client's address, for handlers that want it (ConnectInfo, as axum::serve gives it).
    let service = router.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        request
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let served = loop {
        tokio::select! {
            served = conn.as_mut() => break served,
            // The server stops: finish the request in hand (or read the first one of a fresh
            // connection), answer it with `Connection: close`, and close; idle ones close now.
            () = stopped(&mut stop), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection closed");
    }
}
