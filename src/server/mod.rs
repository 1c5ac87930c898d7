//! The HTTPS server: accept loop (connection cap) -> plaintext check -> TLS
//! -> HTTP/1.1 or HTTP/2 (request-head and idle deadlines) -> the tower
//! stack of [`stack::build`] (trace, HEAD, errors as Status, limits,
//! telemetry, routing, authentication, authorization; one file each under
//! [`layers`]) -> the handlers of [`App`].

pub(crate) mod answers;
pub(crate) mod app;
pub mod auth;
pub(crate) mod connection;
pub(crate) mod layers;
pub(crate) mod log_limit;
pub(crate) mod stack;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub(crate) use app::{App, AppState};
use connection::{
    Activity, CloseReason, ConnectionGate, ConnectionLimits, HttpsPortMetrics, TrackActivity,
};
use hyper::body::Incoming;
use stack::HttpService;
pub(crate) use stack::StackConfig;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// A TLS handshake that takes longer is dropped.
    pub(crate) handshake_timeout: Duration,
    /// Clients must send a complete request head within this time: the
    /// first after the handshake, and each later HTTP/1 one once started.
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections beyond this many are closed at once.
    pub(crate) max_connections: usize,
    /// Largest request head (request line plus headers) accepted, in bytes.
    pub(crate) max_header_bytes: usize,
    /// How long shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
}

impl ServerLimits {
    /// The limits that the connection driver enforces.
    pub(crate) fn connection(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` is cancelled, then
/// drains open connections for at most `limits.drain_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: App,
    stack: StackConfig,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let metrics = Arc::new(HttpsPortMetrics {
        port: "https",
        telemetry: app.telemetry().clone(),
    });
    let gate = ConnectionGate::new(
        "https",
        limits.max_connections,
        Some(Arc::clone(&metrics) as Arc<dyn connection::PortMetrics>),
    );
    let service = stack::build(app, stack);
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(http_builder(&limits));
    connection::accept_loop(listener, &gate, &shutdown, |tcp, peer, permit| {
        let connection = Connection {
            acceptor: acceptor.clone(),
            service: service.clone(),
            builder: Arc::clone(&builder),
            metrics: Arc::clone(&metrics),
            limits,
        };
        let watcher = graceful.watcher();
        let metrics = Arc::clone(&metrics);
        async move {
            if let Some(reason) = connection.run(tcp, peer, watcher).await {
                metrics.closed(reason);
                tracing::debug!(%peer, reason = reason.as_str(), "connection closed by the server");
            }
            drop(permit);
        }
    })
    .await;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(timeout = ?limits.drain_timeout, "shutdown drain timed out; closing remaining connections");
        }
    }
}

/// HTTP/1.1 and HTTP/2 with the request-head limits.
fn http_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// What one connection of the HTTPS port needs.
struct Connection {
    acceptor: TlsAcceptor,
    service: HttpService<Incoming>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    metrics: Arc<HttpsPortMetrics>,
    limits: ServerLimits,
}

impl Connection {
    /// Plaintext check, TLS handshake, then HTTP until the connection ends;
    /// returns why the server closed it, if it did.
    async fn run(
        self,
        tcp: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) -> Option<CloseReason> {
        let handshake = connection::handshake(self.limits.handshake_timeout, async {
            let mut tcp = tcp;
            if refuse_plain_http(&mut tcp, &self.metrics).await {
                return Ok(None);
            }
            self.acceptor.accept(tcp).await.map(Some)
        });
        let tls = match handshake.await {
            Ok(Some(tls)) => tls,
            Ok(None) => {
                tracing::debug!(%peer, "plain HTTP on the HTTPS port answered 400");
                return None;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "no TLS session");
                return None;
            }
        };
        // The client certificate chain travels with every request of the
        // connection; authentication verifies it at the first request that
        // needs it and keeps the verdict for the connection.
        let peer_certificates = auth::PeerCertificates(Arc::new(auth::PeerChain::new(
            tls.get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        )));
        let activity = Activity::new();
        let service = TrackActivity::new(
            tower::ServiceExt::map_request(
                self.service,
                move |mut req: http::Request<Incoming>| {
                    req.extensions_mut().insert(peer_certificates.clone());
                    req
                },
            ),
            Arc::clone(&activity),
        );
        let conn = self
            .builder
            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
        let conn = watcher.watch(conn.into_owned());
        match connection::drive(conn, &activity, &self.limits.connection()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection closed with error");
                None
            }
            Err(reason) => Some(reason),
        }
    }
}

/// Answers a plaintext HTTP request on the TLS port with a 400 that says
/// to use https (as Go's servers do), instead of letting the client puzzle
/// over a TLS alert read as HTTP/0.9. Returns whether it did.
async fn refuse_plain_http(tcp: &mut TcpStream, metrics: &HttpsPortMetrics) -> bool {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if connection::looks_like_plain_http(first[0]) => {}
        _ => return false,
    }
    // Counted before the answer goes out: a client that reads the answer
    // and then looks at /metrics sees it.
    metrics.closed(CloseReason::PlainHttp);
    // The request itself is not read: the answer goes out and the socket
    // closes. A write error means the client left already.
    let _ = tcp.write_all(connection::PLAIN_HTTP_RESPONSE).await;
    let _ = tcp.shutdown().await;
    true
}

/// Binds the listening socket.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
