//! The HTTP server loop of the gateway and the superclient: HTTP/1.1 (WebSocket upgrades
//! included), optionally over TLS, with the protections `axum::serve` lacks:
//!
//! - a header-read timeout: a client that does not send a request's headers in time (a
//!   slowloris, or an idle keep-alive connection) is disconnected; a TLS handshake has the
//!   same time;
//! - a connection limit: at the limit, new connections wait in the listen backlog until one
//!   closes (upgraded WebSockets are not counted: they have their own limits).
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
use tokio::net::TcpListener;
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

/// Checks the TLS files, then serves `router` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, router: Router, opts: &HttpOpts, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let acceptor = opts.acceptor()?;
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let timeout = opts.header_read_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => return Ok(()),
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
            () = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let (router, acceptor) = (router.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => connection(tcp, router, peer, timeout).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => connection(tls, router, peer, timeout).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S, router: Router, peer: std::net::SocketAddr, timeout: Duration) {
    use tower::ServiceExt as _;
    // The client's address, for handlers that want it (ConnectInfo, as axum::serve gives it).
    let service = router.map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        request
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection closed");
    }
}
