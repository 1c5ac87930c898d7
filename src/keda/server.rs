//! The KEDA port's connection handling: an accept loop with a cap on open
//! connections, a TLS handshake bound, HTTP/2 only (hyper, with stream and
//! reset limits), and per connection a watchdog that closes it when no
//! complete request arrives within the header-read timeout after the
//! handshake, or when it has had nothing in flight for the idle timeout.
//! Every request passes [`Guard`]: unary calls share a concurrency limit and
//! a timeout; `StreamIsActive` streams are bounded per connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::server::connection::{self, ConnectionGate, HandshakeError, PortMetrics};
use crate::telemetry::{ConnectionCloseLabels, Telemetry};

/// Limits of the KEDA port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KedaLimits {
    /// A TLS handshake that takes longer is dropped.
    pub(crate) handshake_timeout: Duration,
    /// A connection whose first complete request (HTTP/2 preface, settings
    /// and a HEADERS frame) has not arrived this long after the handshake
    /// is closed.
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Open connections (handshaking included); beyond, new ones are closed at once.
    pub(crate) max_connections: usize,
    /// `StreamIsActive` streams open at once on one connection.
    pub(crate) max_streams_per_connection: u32,
    /// Unary calls in flight over all connections; beyond, RESOURCE_EXHAUSTED.
    pub(crate) max_concurrent_requests: usize,
    /// A unary call that takes longer is answered DEADLINE_EXCEEDED.
    pub(crate) request_timeout: Duration,
    /// Streams a client may reset before they are accepted (rapid reset).
    pub(crate) max_pending_accept_reset_streams: usize,
    /// Streams this server may reset for protocol errors before the
    /// connection is closed (HTTP/2 "MadeYouReset").
    pub(crate) max_local_error_reset_streams: usize,
    /// Largest decoded request message.
    pub(crate) max_message_bytes: usize,
    /// Largest request header list.
    pub(crate) max_header_list_bytes: u32,
    /// How long shutdown waits for open connections to finish.
    pub(crate) drain_timeout: Duration,
}

impl Default for KedaLimits {
    fn default() -> Self {
        KedaLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
            max_streams_per_connection: 512,
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 256,
            // A ScaledObjectRef is a name, a namespace and a few metadata keys.
            max_message_bytes: 64 * 1024,
            max_header_list_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl KedaLimits {
    /// HTTP/2 streams allowed at once per connection: every permitted
    /// `StreamIsActive` plus room for unary calls beside them.
    pub(crate) fn max_concurrent_streams(&self) -> u32 {
        self.max_streams_per_connection.saturating_add(64)
    }
}

/// The gRPC path of the one server-streaming method.
pub(crate) const STREAM_IS_ACTIVE_PATH: &str = "/externalscaler.ExternalScaler/StreamIsActive";

/// Why the server closed a connection (the `reason` label of
/// `wva_keda_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    MaxConnections,
    HandshakeTimeout,
    HeaderTimeout,
    IdleTimeout,
}

impl CloseReason {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            CloseReason::MaxConnections => "max_connections",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
        }
    }
}

/// What the watchdog of a connection sees: requests in flight and
/// requests started so far.
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    in_flight: usize,
    started: u64,
}

/// Decides when a connection is closed, from its activity. Resolves with
/// the reason; never resolves for a connection that keeps working.
async fn watchdog(mut activity: watch::Receiver<Activity>, limits: KedaLimits) -> CloseReason {
    let asked = tokio::time::timeout(
        limits.header_read_timeout,
        activity.wait_for(|a| a.started > 0),
    )
    .await
    .is_ok();
    if !asked {
        return CloseReason::HeaderTimeout;
    }
    loop {
        // The sender lives as long as the connection: errors cannot happen
        // while this future is polled, and would only end the wait.
        if activity.wait_for(|a| a.in_flight == 0).await.is_err() {
            return std::future::pending().await;
        }
        let seen = activity.borrow().started;
        let timed_out = tokio::time::timeout(
            limits.idle_timeout,
            activity.wait_for(|a| a.started != seen),
        )
        .await
        .is_err();
        if timed_out && activity.borrow().in_flight == 0 {
            return CloseReason::IdleTimeout;
        }
    }
}

/// Held while a request (and, for a stream, its response body) is in flight.
struct InFlight {
    activity: Arc<watch::Sender<Activity>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    fn start(
        activity: &Arc<watch::Sender<Activity>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.started += 1;
        });
        InFlight {
            activity: Arc::clone(activity),
            _permit: permit,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity
            .send_modify(|a| a.in_flight = a.in_flight.saturating_sub(1));
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it ends.
    pub(crate) struct GuardedBody {
        #[pin]
        inner: tonic::body::Body,
        guard: Option<InFlight>,
    }
}

impl GuardedBody {
    fn new(inner: tonic::body::Body, guard: InFlight) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A gRPC error response, counted as in flight until sent.
fn status_response(status: tonic::Status, guard: InFlight) -> http::Response<GuardedBody> {
    status
        .into_http::<tonic::body::Body>()
        .map(|b| GuardedBody::new(b, guard))
}

/// Applies the per-request limits in front of the gRPC service.
#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    activity: Arc<watch::Sender<Activity>>,
    /// `StreamIsActive` streams of this connection.
    streams: Arc<Semaphore>,
    /// Unary calls of all connections.
    unary: Arc<Semaphore>,
    limits: KedaLimits,
}

type GuardFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<GuardedBody>, std::convert::Infallible>> + Send>,
>;

impl<S> tower::Service<http::Request<Incoming>> for Guard<S>
where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<GuardedBody>;
    type Error = std::convert::Infallible;
    type Future = GuardFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let mut inner = self.inner.clone();
        let activity = Arc::clone(&self.activity);
        let limits = self.limits;
        if req.uri().path() == STREAM_IS_ACTIVE_PATH {
            let permit = Arc::clone(&self.streams).try_acquire_owned().ok();
            return Box::pin(async move {
                let Some(permit) = permit else {
                    let guard = InFlight::start(&activity, None);
                    return Ok(status_response(
                        tonic::Status::resource_exhausted(format!(
                            "this connection already has {} StreamIsActive streams open",
                            limits.max_streams_per_connection
                        )),
                        guard,
                    ));
                };
                let guard = InFlight::start(&activity, Some(permit));
                let response = inner.call(req).await?;
                Ok(response.map(|b| GuardedBody::new(b, guard)))
            });
        }
        let permit = Arc::clone(&self.unary).try_acquire_owned().ok();
        Box::pin(async move {
            let guard = InFlight::start(&activity, None);
            let Some(_permit) = permit else {
                return Ok(status_response(
                    tonic::Status::resource_exhausted(format!(
                        "{} requests in flight: try again",
                        limits.max_concurrent_requests
                    )),
                    guard,
                ));
            };
            match tokio::time::timeout(limits.request_timeout, inner.call(req)).await {
                Ok(response) => Ok(response?.map(|b| GuardedBody::new(b, guard))),
                Err(_) => Ok(status_response(
                    tonic::Status::deadline_exceeded(format!(
                        "no answer within {:?}",
                        limits.request_timeout
                    )),
                    guard,
                )),
            }
        })
    }
}

/// The KEDA port's metrics: `wva_keda_open_connections` and
/// `wva_keda_connections_closed_total{reason}`.
struct KedaPortMetrics(Telemetry);

impl KedaPortMetrics {
    fn closed(&self, reason: CloseReason) {
        self.0
            .keda_connections_closed
            .get_or_create(&ConnectionCloseLabels {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }
}

impl PortMetrics for KedaPortMetrics {
    fn set_open(&self, open: usize) {
        self.0
            .keda_open_connections
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn refused(&self) {
        self.closed(CloseReason::MaxConnections);
    }
}

/// Serves `service` on `listener` until `shutdown`, over TLS with `tls`,
/// or in plain text (HTTP/2 with prior knowledge) when `tls` is None. The
/// accept loop, connection cap and handshake deadline are the HTTPS port's
/// ([`crate::server::connection`]).
pub(crate) async fn serve<S>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: S,
    limits: KedaLimits,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tls.map(|config| {
        // gRPC is HTTP/2 only.
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams())
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let unary = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let metrics = Arc::new(KedaPortMetrics(telemetry));
    let gate = ConnectionGate::new(
        "keda",
        limits.max_connections,
        Some(Arc::clone(&metrics) as Arc<dyn PortMetrics>),
    );
    connection::accept_loop(listener, &gate, &shutdown, |tcp, peer, permit| {
        let (acceptor, builder, unary, metrics, shutdown, service) = (
            acceptor.clone(),
            Arc::clone(&builder),
            Arc::clone(&unary),
            Arc::clone(&metrics),
            shutdown.clone(),
            service.clone(),
        );
        async move {
            let reason = match acceptor {
                None => run_connection(tcp, service, &builder, unary, limits, shutdown).await,
                Some(acceptor) => {
                    match connection::handshake(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(tls) => {
                            run_connection(tls, service, &builder, unary, limits, shutdown).await
                        }
                        Err(HandshakeError::TimedOut) => Some(CloseReason::HandshakeTimeout),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "KEDA port: no TLS session");
                            None
                        }
                    }
                }
            };
            drop(permit);
            if let Some(reason) = reason {
                tracing::debug!(%peer, reason = reason.as_str(), "KEDA port: connection closed by the server");
                metrics.closed(reason);
            }
        }
    })
    .await;
    if tokio::time::timeout(limits.drain_timeout, gate.drained())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?limits.drain_timeout, "KEDA port: shutdown drain timed out");
    }
}

/// Serves one connection until it ends, returning why the server closed it
/// (None when the client did, or on shutdown).
async fn run_connection<I, S>(
    io: I,
    service: S,
    builder: &hyper::server::conn::http2::Builder<TokioExecutor>,
    unary: Arc<Semaphore>,
    limits: KedaLimits,
    shutdown: CancellationToken,
) -> Option<CloseReason>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (activity, observed) = watch::channel(Activity::default());
    let guard = Guard {
        inner: service,
        activity: Arc::new(activity),
        streams: Arc::new(Semaphore::new(limits.max_streams_per_connection as usize)),
        unary,
        limits,
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(guard));
    tokio::pin!(conn);
    let dog = watchdog(observed, limits);
    tokio::pin!(dog);
    let reason = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "KEDA port: connection ended with an error");
            }
            return None;
        }
        reason = &mut dog => Some(reason),
        _ = shutdown.cancelled() => None,
    };
    match reason {
        // Nothing was ever asked: drop the socket without ceremony.
        Some(CloseReason::HeaderTimeout) => return reason,
        // Idle or shutting down: say goodbye (GOAWAY) and let in-flight work end.
        _ => conn.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(limits.drain_timeout, conn).await;
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header: u64, idle: u64) -> KedaLimits {
        KedaLimits {
            header_read_timeout: Duration::from_millis(header),
            idle_timeout: Duration::from_millis(idle),
            ..KedaLimits::default()
        }
    }

    #[tokio::test]
    async fn watchdog_closes_a_connection_that_never_asks() {
        let (_tx, rx) = watch::channel(Activity::default());
        assert_eq!(
            watchdog(rx, limits(100, 60_000)).await,
            CloseReason::HeaderTimeout
        );
    }

    #[tokio::test]
    async fn watchdog_closes_an_idle_connection_but_not_a_busy_one() {
        let (tx, rx) = watch::channel(Activity::default());
        let tx = Arc::new(tx);
        let dog = tokio::spawn(watchdog(rx, limits(60_000, 1000)));
        // A long stream: in flight for 2.5 idle timeouts.
        let stream = InFlight::start(&tx, None);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !dog.is_finished(),
            "a connection with a stream open is not idle"
        );
        drop(stream);
        // Requests every tenth of the idle timeout keep it open.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(InFlight::start(&tx, None));
        }
        assert!(
            !dog.is_finished(),
            "requests within the idle timeout keep it open"
        );
        assert_eq!(dog.await.unwrap(), CloseReason::IdleTimeout);
    }

    #[test]
    fn streams_leave_room_for_unary_calls() {
        let l = KedaLimits::default();
        assert!(l.max_concurrent_streams() > l.max_streams_per_connection);
        let max = KedaLimits {
            max_streams_per_connection: u32::MAX,
            ..l
        };
        assert_eq!(max.max_concurrent_streams(), u32::MAX);
    }
}
