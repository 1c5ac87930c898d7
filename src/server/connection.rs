//! Connection-level limits, below HTTP: how many connections may be open,
//! how long a connection may sit without sending a request head, and how
//! long a keep-alive connection may stay idle.
//!
//! hyper's own `header_read_timeout` covers a slow HTTP/1 request head once
//! its first byte arrived, but not a client that completes the TLS handshake
//! and then sends nothing, nor one that stops inside the HTTP/2 preface; and
//! nothing closes idle keep-alive connections. Every such connection holds a
//! file descriptor and a task, so an attacker (or a leaky client) could
//! exhaust the server. The [`ConnectionGate`] caps the count, and
//! [`Activity`] tells the connection's driver when to give up on it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::{ConnectionLabels, PortLabels, Telemetry};

/// The limits of one listening port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// After the TLS handshake, the first complete request head must arrive
    /// within this time.
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Connections beyond this many are closed at once.
    pub(crate) max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 4096,
        }
    }
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    OverLimit,
    NoRequestHead,
    Idle,
    PlainHttp,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::OverLimit => "over_limit",
            CloseReason::NoRequestHead => "no_request_head",
            CloseReason::Idle => "idle",
            CloseReason::PlainHttp => "plain_http",
        }
    }
}

/// Where a port reports its connections (each port has its own metric
/// names, which dashboards already use).
pub(crate) trait PortMetrics: Send + Sync {
    /// Open connections now (handshaking ones included).
    fn set_open(&self, open: usize);
    /// A connection closed at once because `max` were open.
    fn refused(&self);
}

/// The HTTPS port's metrics: `wva_connections_open{port}` and
/// `wva_connections_closed_by_server_total{port, reason}`.
pub(crate) struct HttpsPortMetrics {
    pub(crate) port: &'static str,
    pub(crate) telemetry: Telemetry,
}

impl HttpsPortMetrics {
    /// Counts a connection the server closed.
    pub(crate) fn closed(&self, reason: CloseReason) {
        self.telemetry
            .connections_closed
            .get_or_create(&ConnectionLabels {
                port: self.port.to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }
}

impl PortMetrics for HttpsPortMetrics {
    fn set_open(&self, open: usize) {
        self.telemetry
            .connections_open
            .get_or_create(&PortLabels {
                port: self.port.to_owned(),
            })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn refused(&self) {
        self.closed(CloseReason::OverLimit);
    }
}

/// Counts the open connections of one port and refuses those beyond the cap.
pub(crate) struct ConnectionGate {
    port: &'static str,
    max: usize,
    open: AtomicUsize,
    /// When a refusal was last logged: refusals come in floods, logs must not.
    last_refusal_log: Mutex<Option<Instant>>,
    metrics: Option<Arc<dyn PortMetrics>>,
    /// Woken when the last open connection ends (for draining).
    all_closed: tokio::sync::Notify,
}

impl std::fmt::Debug for ConnectionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGate")
            .field("port", &self.port)
            .field("max", &self.max)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl ConnectionGate {
    /// A gate for the port named `port` (in logs).
    pub(crate) fn new(
        port: &'static str,
        max: usize,
        metrics: Option<Arc<dyn PortMetrics>>,
    ) -> Arc<Self> {
        Arc::new(ConnectionGate {
            port,
            max: max.max(1),
            open: AtomicUsize::new(0),
            last_refusal_log: Mutex::new(None),
            metrics,
            all_closed: tokio::sync::Notify::new(),
        })
    }

    /// Admits one more connection, or refuses it (logged at most once per
    /// second, counted) when `max` are open already.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            if let Some(m) = &self.metrics {
                m.refused();
            }
            let now = Instant::now();
            let mut last = self
                .last_refusal_log
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                *last = Some(now);
                tracing::warn!(
                    port = self.port,
                    max_connections = self.max,
                    "connection refused: too many open connections (--max-connections); further refusals within a second are only counted"
                );
            }
            return None;
        }
        self.set_open_gauge();
        Some(ConnectionPermit(Arc::clone(self)))
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn set_open_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.set_open(self.open());
        }
    }

    /// Resolves once no admitted connection is open (immediately if none is).
    pub(crate) async fn drained(&self) {
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One admitted connection; releases its slot when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit(Arc<ConnectionGate>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
        self.0.set_open_gauge();
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled: each
/// one the `gate` admits (those over its cap are closed at once, before
/// any work) gets Nagle off and its own task running `serve` with the
/// connection's permit. Shared by the HTTPS and the KEDA ports.
pub(crate) async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    gate: &Arc<ConnectionGate>,
    shutdown: &tokio_util::sync::CancellationToken,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr, ConnectionPermit) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Running out of file descriptors is transient: back off briefly.
                    tracing::warn!(port = gate.port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(permit) = gate.try_admit() else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp, peer, permit));
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake timed out")]
    TimedOut,
    #[error("TLS handshake failed: {0}")]
    Failed(#[from] std::io::Error),
}

/// Runs a handshake (`f`) for at most `timeout`.
pub(crate) async fn handshake<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, HandshakeError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HandshakeError::TimedOut),
    }
}

/// What the requests of one connection are doing, for its driver.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the last request finished.
    idle_since_ms: AtomicU64,
    /// Whether the driver sleeps until the first request head's deadline,
    /// the one deadline that a finished request can move earlier (when the
    /// idle timeout is the shorter). Every later deadline only moves later,
    /// so the driver finds out when it wakes, and requests need not wake it.
    header_deadline_armed: AtomicBool,
    /// Wakes the driver when a request ends while the first request head's
    /// deadline is armed.
    changed: tokio::sync::Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            header_deadline_armed: AtomicBool::new(true),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// Marks a request (whose head has been read) as started. A start only
    /// removes the deadline, so the driver is not woken: it looks again
    /// when its sleep ends.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// When the connection must be closed unless something happens first,
    /// and why; `None` while a request is in flight (the request timeout
    /// bounds it).
    pub(crate) fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, CloseReason)> {
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some((
                self.opened + limits.header_read_timeout,
                CloseReason::NoRequestHead,
            ));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since =
            self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some((idle_since + limits.idle_timeout, CloseReason::Idle))
    }
}

/// Ends a request's part in its connection's activity when dropped.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let since = u64::try_from(a.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(since, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        if a.header_deadline_armed.load(Ordering::Acquire) {
            a.changed.notify_one();
        }
    }
}

/// Drives `conn` until it ends, or until the connection's [`Activity`]
/// says it has waited too long for a request head or sat idle; then drops
/// it, which closes the socket. Returns why the server closed it, if it did.
///
/// Requests do not wake the driver (that cost a timer registration and a
/// poll of the connection per request): it sleeps until the deadline it
/// last computed and then computes it again, which is exact because a
/// request can only move the deadline later, except for the first
/// request head's deadline, where a finished request wakes it.
pub(crate) async fn drive<F: std::future::Future>(
    conn: F,
    activity: &Activity,
    limits: &ConnectionLimits,
) -> Result<F::Output, CloseReason> {
    tokio::pin!(conn);
    loop {
        let deadline = activity.deadline(limits);
        let header_armed = matches!(deadline, Some((_, CloseReason::NoRequestHead)));
        activity
            .header_deadline_armed
            .store(header_armed, Ordering::Release);
        // While a request is in flight there is no deadline: look again
        // after the idle timeout (the request timeout ends the request).
        let wake = deadline.map_or_else(|| Instant::now() + limits.idle_timeout, |(at, _)| at);
        tokio::select! {
            out = &mut conn => return Ok(out),
            // The first request ended: compute the deadline again.
            _ = activity.changed.notified(), if header_armed => {}
            _ = tokio::time::sleep_until(wake) => {
                if let Some((at, reason)) = activity.deadline(limits) {
                    if Instant::now() >= at {
                        return Err(reason);
                    }
                }
            }
        }
    }
}

/// A service wrapper that reports each request to the connection's
/// [`Activity`] while it is in flight.
#[derive(Clone)]
pub(crate) struct TrackActivity<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackActivity<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        TrackActivity { inner, activity }
    }
}

impl<S, R> tower::Service<R> for TrackActivity<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let guard = self.activity.request_started();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(guard);
            out
        })
    }
}

/// Whether the first byte of a connection on a TLS port shows a plaintext
/// HTTP/1 request (a method starts with an ASCII capital letter; a TLS
/// ClientHello starts with the handshake record type 0x16).
pub(crate) fn looks_like_plain_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// What Go's HTTPS server answers to plaintext HTTP, so that curl and
/// browsers show the user what to do.
pub(crate) const PLAIN_HTTP_RESPONSE: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server: use https:// for this port.\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 2,
        }
    }

    #[test]
    fn gate_admits_up_to_the_cap_and_frees_slots_on_drop() {
        let gate = ConnectionGate::new("test", 2, None);
        let a = gate.try_admit().expect("first");
        let b = gate.try_admit().expect("second");
        assert!(gate.try_admit().is_none(), "third is over the cap");
        assert_eq!(gate.open(), 2);
        drop(a);
        assert_eq!(gate.open(), 1);
        let c = gate.try_admit();
        assert!(c.is_some(), "a freed slot is reused");
        drop((b, c));
        assert_eq!(gate.open(), 0);
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_connection() {
        let gate = ConnectionGate::new("test", 2, None);
        gate.drained().await;
        let a = gate.try_admit().expect("first");
        let b = gate.try_admit().expect("second");
        let waiter = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.drained().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("drained once both closed")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_requests_of_the_connection() {
        let a = Activity::new();
        let l = limits();
        let (at, why) = a.deadline(&l).expect("no request yet");
        assert_eq!(why, CloseReason::NoRequestHead);
        assert_eq!(at - a.opened, Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(3)).await;
        let guard = a.request_started();
        assert_eq!(a.deadline(&l), None, "a request in flight has no deadline");
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(guard);
        let (at, why) = a.deadline(&l).expect("idle");
        assert_eq!(why, CloseReason::Idle);
        assert_eq!(at - a.opened, Duration::from_secs(5 + 90));
    }

    #[tokio::test(start_paused = true)]
    async fn drive_closes_a_silent_connection_and_lets_a_finished_one_end() {
        let a = Activity::new();
        let l = limits();
        let never = std::future::pending::<()>();
        assert_eq!(drive(never, &a, &l).await, Err(CloseReason::NoRequestHead));

        let b = Activity::new();
        let _busy = b.request_started();
        let done = async { 7 };
        assert_eq!(drive(done, &b, &l).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn drive_closes_an_idle_connection_at_its_idle_deadline() {
        // Idle timeout shorter than the header timeout: the first request's
        // end moves the deadline earlier and must wake the driver.
        let l = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(2),
            max_connections: 2,
        };
        let a = Activity::new();
        let start = Instant::now();
        let a2 = Arc::clone(&a);
        let requests = async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(a2.request_started());
            std::future::pending::<()>().await
        };
        assert_eq!(drive(requests, &a, &l).await, Err(CloseReason::Idle));
        assert_eq!(start.elapsed(), Duration::from_secs(1 + 2));

        // Later requests push the deadline on without waking the driver;
        // it closes the connection one idle timeout after the last one.
        let b = Activity::new();
        let start = Instant::now();
        let b2 = Arc::clone(&b);
        let requests = async move {
            for _ in 0..5 {
                let g = b2.request_started();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                drop(g);
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            std::future::pending::<()>().await
        };
        assert_eq!(drive(requests, &b, &l).await, Err(CloseReason::Idle));
        // The last request ended at 13.5 s; idle for 2 s after.
        assert_eq!(start.elapsed(), Duration::from_millis(13_500 + 2000));
    }

    #[test]
    fn plain_http_is_told_from_a_client_hello() {
        for b in [b'G', b'P', b'H', b'D', b'O'] {
            assert!(looks_like_plain_http(b));
        }
        assert!(!looks_like_plain_http(0x16));
        assert!(!looks_like_plain_http(0x80));
    }
}
