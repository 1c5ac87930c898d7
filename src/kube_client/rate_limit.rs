//! Client-side QPS and burst for calls to the API server.
//!
//! A [`TokenBucket`] (pure: the caller passes the time in) holds `burst`
//! tokens refilled at `qps`, and queues of waiting calls, one per
//! [`Priority`]. A call takes its token only when it is at the head of the
//! queues and a token is there, just before it is sent: a call that gives
//! up while waiting (its client went away, its deadline passed) leaves the
//! queue and has taken nothing, so a flood of abandoned requests leaves no
//! debt behind. A call with a deadline is refused at once when the wait
//! estimated for its place in the queues is longer than the time it has
//! left, as Go's `rate.Limiter.Wait` refuses a wait past the context's
//! deadline. Calls of a higher priority go ahead of lower ones, so that
//! reviews for identities proven by a certificate (the aggregator, the HPA
//! behind it) never queue behind reviews that anyone can cause.
//!
//! [`ApiRateLimitLayer`] puts one bucket in front of a kube client's
//! service. Watches are long-lived streams, not calls per second, and are
//! not counted (client-go does not count them either). A `429` answer with
//! `Retry-After` holds the whole bucket for that long: the API server said
//! it is overloaded, and every call of this client would get the same
//! answer. A call's deadline and priority reach the layer through
//! [`with_call_context`] (a task-local: kube's `Api` has no place for them
//! in the request).
//!
//! A client that retries on its own (kube's retry of 429/503/504) must have
//! that retry *above* the budget ([`retry_above_budget`]): kube's built-in
//! one sits below any layer added to its client, so its retries would go
//! out uncounted.

mod bucket;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service, ServiceExt as _};

pub(crate) use bucket::{Ticket, TokenBucket};

/// The longest `Retry-After` honoured: a larger value (or a date) is
/// capped, so that a misbehaving proxy cannot stop the client for hours.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Who a call is made for; higher priorities are served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Priority {
    /// Reviews for an identity a verified certificate already proves (the
    /// aggregator's front proxy, x509 client certificates).
    Verified = 0,
    /// Calls of the server's own work, and reviews for users a TokenReview
    /// accepted.
    Normal = 1,
    /// Reviews anyone can cause without credentials: TokenReviews of
    /// unknown tokens, SubjectAccessReviews of anonymous requests.
    Unverified = 2,
}

const PRIORITIES: usize = 3;

/// The deadline and priority of the calls made inside [`with_call_context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallContext {
    /// A call that cannot be sent before this is refused instead of waiting.
    pub(crate) deadline: Option<Instant>,
    pub(crate) priority: Priority,
}

impl Default for CallContext {
    fn default() -> Self {
        CallContext {
            deadline: None,
            priority: Priority::Normal,
        }
    }
}

tokio::task_local! {
    static CALL_CONTEXT: CallContext;
}

/// Runs `fut` with `context` applying to every budgeted call it makes.
pub(crate) async fn with_call_context<F: Future>(context: CallContext, fut: F) -> F::Output {
    CALL_CONTEXT.scope(context, fut).await
}

fn current_context() -> CallContext {
    CALL_CONTEXT.try_with(|c| *c).unwrap_or_default()
}

/// A call refused by the client-side rate limit: its turn would come after
/// its deadline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("client-side rate limit of the {budget} API budget: {waiting} calls ahead, this call's turn would come after its deadline (--kube-api-qps / --kube-api-burst)")]
pub(crate) struct BudgetRefused {
    pub(crate) budget: String,
    /// Calls queued ahead of this one (all priorities it yields to).
    pub(crate) waiting: usize,
}

impl BudgetRefused {
    /// Whether `error` (from a budgeted client, at any depth) is a refusal.
    pub(crate) fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(err) = e {
            if err.is::<BudgetRefused>() {
                return true;
            }
            e = err.source();
        }
        false
    }
}

/// Invalid `--kube-api-qps` / `--kube-api-burst`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RateLimitError {
    #[error("--kube-api-qps must be a finite number above 0, got {0}")]
    Qps(f64),
    #[error("--kube-api-burst must be at least 1, got {0}")]
    Burst(u32),
}

/// QPS and burst of one budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateLimitSettings {
    pub(crate) qps: f64,
    pub(crate) burst: u32,
}

impl RateLimitSettings {
    pub(crate) fn validate(&self) -> Result<(), RateLimitError> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Err(RateLimitError::Qps(self.qps));
        }
        if self.burst < 1 {
            return Err(RateLimitError::Burst(self.burst));
        }
        Ok(())
    }
}

/// Label of the rate limiter's metrics: which budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BudgetLabels {
    pub(crate) budget: String,
}

/// Metrics of every budget (registered once).
#[derive(Clone, Default)]
pub(crate) struct BudgetMetrics {
    requests: Family<BudgetLabels, Counter>,
    waited: Family<BudgetLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    retry_after: Family<BudgetLabels, Counter>,
    refused: Family<BudgetLabels, Counter>,
}

impl BudgetMetrics {
    /// Registers `wva_kube_api_requests_total`,
    /// `wva_kube_api_rate_limit_wait_seconds_total`,
    /// `wva_kube_api_rate_limit_refused_total` and
    /// `wva_kube_api_retry_after_total`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = BudgetMetrics::default();
        registry.register(
            "wva_kube_api_requests",
            "Calls sent to the API server after the client-side rate limit (watches not counted), by budget",
            m.requests.clone(),
        );
        registry.register(
            "wva_kube_api_rate_limit_wait_seconds",
            "Time calls to the API server waited for the client-side rate limit, by budget",
            m.waited.clone(),
        );
        registry.register(
            "wva_kube_api_rate_limit_refused",
            "Calls not sent because their turn under the client-side rate limit would come after their deadline, by budget",
            m.refused.clone(),
        );
        registry.register(
            "wva_kube_api_retry_after",
            "429 answers with Retry-After that held a budget",
            m.retry_after.clone(),
        );
        m
    }
}

/// One named token bucket shared by every clone of a client.
pub(crate) struct ApiBudget {
    name: String,
    bucket: Mutex<TokenBucket>,
    /// Woken when the head of the queues moves (a call took its token or
    /// a waiting call left): the calls behind it look again.
    moved: tokio::sync::Notify,
    metrics: Option<BudgetMetrics>,
    labels: BudgetLabels,
}

/// A call's place in the queue; leaving it (drop) before the token was
/// taken gives the place up.
struct Waiting<'a> {
    budget: &'a ApiBudget,
    ticket: Ticket,
    taken: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.budget.bucket().leave(self.ticket);
            self.budget.moved.notify_waiters();
        }
    }
}

impl ApiBudget {
    pub(crate) fn new(
        name: &str,
        settings: RateLimitSettings,
        metrics: Option<BudgetMetrics>,
    ) -> Result<Arc<Self>, RateLimitError> {
        Ok(Arc::new(ApiBudget {
            name: name.to_owned(),
            bucket: Mutex::new(TokenBucket::new(settings, Instant::now())?),
            moved: tokio::sync::Notify::new(),
            metrics,
            labels: BudgetLabels {
                budget: name.to_owned(),
            },
        }))
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // The bucket is a few numbers and queues; a panic elsewhere cannot
        // leave them inconsistent, so a poisoned lock is still usable.
        match self.bucket.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Calls waiting for their turn now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.bucket().waiting()
    }

    fn refused(&self, waiting: usize) -> BudgetRefused {
        if let Some(m) = &self.metrics {
            m.refused.get_or_create(&self.labels).inc();
        }
        BudgetRefused {
            budget: self.name.clone(),
            waiting,
        }
    }

    /// Waits for this call's turn (the task's [`CallContext`] gives its
    /// priority and deadline). Dropped while waiting, it leaves the queue
    /// having taken nothing.
    pub(crate) async fn acquire(&self) -> Result<(), BudgetRefused> {
        let context = current_context();
        let joined = Instant::now();
        let max_wait = context
            .deadline
            .map(|d| d.saturating_duration_since(joined));
        let ticket = self
            .bucket()
            .join(joined, context.priority, max_wait)
            .map_err(|ahead| self.refused(ahead))?;
        let mut waiting = Waiting {
            budget: self,
            ticket,
            taken: false,
        };
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let now = Instant::now();
            let turn = self.bucket().try_take(now, ticket);
            let turn = match turn {
                Ok(()) => {
                    waiting.taken = true;
                    self.moved.notify_waiters();
                    break;
                }
                Err(turn) => turn,
            };
            if let Some(deadline) = context.deadline {
                if turn > deadline || now >= deadline {
                    let ahead = self.bucket().ahead_of(ticket).unwrap_or(0);
                    return Err(self.refused(ahead));
                }
            }
            if turn > now {
                tokio::select! {
                    _ = tokio::time::sleep_until(turn) => {}
                    _ = &mut moved => {}
                }
            } else {
                // Only calls ahead stand in the way: they announce when
                // they go or leave. The sleep is a safety net.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = &mut moved => {}
                }
            }
        }
        let waited = joined.elapsed();
        if let Some(m) = &self.metrics {
            if !waited.is_zero() {
                m.waited
                    .get_or_create(&self.labels)
                    .inc_by(waited.as_secs_f64());
            }
        }
        Ok(())
    }

    /// Counts a call that is being sent.
    fn sent(&self) {
        if let Some(m) = &self.metrics {
            m.requests.get_or_create(&self.labels).inc();
        }
    }

    /// A `429` with `Retry-After`: holds the budget.
    fn hold_for(&self, wait: Duration) {
        self.bucket().hold_for(Instant::now(), wait);
        if let Some(m) = &self.metrics {
            m.retry_after.get_or_create(&self.labels).inc();
        }
        tracing::warn!(
            budget = %self.name,
            retry_after_secs = wait.as_secs_f64(),
            "the API server answered 429 Too Many Requests; holding calls of this budget"
        );
    }
}

/// True for a watch request (`?watch=true` or `?watch=1`).
pub(crate) fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    })
}

/// `Retry-After` in seconds (the API server sends seconds; an HTTP date
/// is not used by it and is ignored).
pub(crate) fn retry_after<B>(res: &Response<B>) -> Option<Duration> {
    let value = res
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// Puts an [`ApiBudget`] in front of a kube client's service whose
/// requests have bodies of type `B`.
pub(crate) struct ApiRateLimitLayer<B> {
    budget: Arc<ApiBudget>,
    body: std::marker::PhantomData<fn(B)>,
}

impl<B> Clone for ApiRateLimitLayer<B> {
    fn clone(&self) -> Self {
        ApiRateLimitLayer::new(Arc::clone(&self.budget))
    }
}

impl<B> ApiRateLimitLayer<B> {
    pub(crate) fn new(budget: Arc<ApiBudget>) -> Self {
        ApiRateLimitLayer {
            budget,
            body: std::marker::PhantomData,
        }
    }
}

impl<S, B> Layer<S> for ApiRateLimitLayer<B>
where
    S: Service<Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
    B: Send + 'static,
{
    type Service = RateLimited<S::Future, B>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            // The kube client's service is not Clone; a buffer makes it so,
            // which lets each call wait for its token before it reaches
            // the connection (kube's own Client buffers the same way).
            inner: Buffer::new(inner, 1024),
            budget: Arc::clone(&self.budget),
        }
    }
}

/// A rate-limited kube client service.
pub(crate) struct RateLimited<F, B>
where
    F: Future,
{
    inner: Buffer<Request<B>, F>,
    budget: Arc<ApiBudget>,
}

impl<F, B> Clone for RateLimited<F, B>
where
    F: Future + Send + 'static,
    B: Send + 'static,
{
    fn clone(&self) -> Self {
        RateLimited {
            inner: self.inner.clone(),
            budget: Arc::clone(&self.budget),
        }
    }
}

/// kube's server-aware retry (429, 503, 504; exponential backoff with
/// jitter, `Retry-After` honoured; at most 15 retries) as a layer to put
/// above an [`ApiRateLimitLayer`], so that every retry waits for a token
/// of its own; `None` without retries. Use it instead of the client
/// configuration's `default_retry`, which retries below the budget.
pub(crate) fn retry_above_budget(
    retry: bool,
) -> tower::util::Either<
    tower::retry::RetryLayer<kube::client::retry::RetryPolicy>,
    tower::layer::util::Identity,
> {
    tower::util::option_layer(
        retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }),
    )
}

impl<F, B, RB, E> Service<Request<B>> for RateLimited<F, B>
where
    F: Future<Output = Result<Response<RB>, E>> + Send + 'static,
    E: Into<BoxError> + Send + Sync,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the buffer is awaited inside each call, after its
        // token: reserving a buffer slot here would hold it while waiting.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        let budget = Arc::clone(&self.budget);
        Box::pin(async move {
            let res = if is_watch(&req) {
                inner.ready().await?.call(req).await?
            } else {
                budget.acquire().await?;
                budget.sent();
                // The token is spent: the call goes out (on a task of its
                // own) even if its caller leaves now, so that every token
                // taken is one call sent, and counted once.
                let send = async move { inner.ready().await?.call(req).await };
                tokio::spawn(send).await.map_err(BoxError::from)??
            };
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                if let Some(wait) = retry_after(&res) {
                    budget.hold_for(wait);
                }
            }
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings(qps: f64, burst: u32) -> RateLimitSettings {
        RateLimitSettings { qps, burst }
    }

    /// The time a ticket's token is taken when its holder tries at every
    /// turn the bucket announces, from `t` on.
    fn take_from(bucket: &mut TokenBucket, ticket: Ticket, mut t: Instant) -> Instant {
        for _ in 0..100_000 {
            match bucket.try_take(t, ticket) {
                Ok(()) => return t,
                Err(turn) => t = turn.max(t + Duration::from_nanos(1)),
            }
        }
        panic!("ticket never served");
    }

    /// Send times of calls arriving at `arrivals` (ms after start, sorted);
    /// calls whose `abandons` flag is set join and leave at once.
    fn send_times_with(qps: f64, burst: u32, arrivals: &[(u64, bool)]) -> Vec<Duration> {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(qps, burst), start).unwrap();
        let mut t = start;
        let mut sent = Vec::new();
        for &(a, abandons) in arrivals {
            let at = start + Duration::from_millis(a);
            t = t.max(at);
            let ticket = bucket.join(at, Priority::Normal, None).unwrap();
            if abandons {
                bucket.leave(ticket);
                continue;
            }
            t = take_from(&mut bucket, ticket, t);
            sent.push(t - start);
        }
        assert_eq!(bucket.waiting(), 0);
        sent
    }

    fn send_times(qps: f64, burst: u32, arrivals: &[u64]) -> Vec<Duration> {
        let a: Vec<(u64, bool)> = arrivals.iter().map(|&a| (a, false)).collect();
        send_times_with(qps, burst, &a)
    }

    fn ms(d: &[Duration]) -> Vec<u128> {
        d.iter().map(|d| d.as_millis()).collect()
    }

    #[test]
    fn invalid_settings_are_refused() {
        for (qps, burst, error) in [
            (0.0, 1, Some(RateLimitError::Qps(0.0))),
            (-1.0, 1, Some(RateLimitError::Qps(-1.0))),
            (f64::INFINITY, 1, Some(RateLimitError::Qps(f64::INFINITY))),
            (5.0, 0, Some(RateLimitError::Burst(0))),
            (0.5, 1, None),
        ] {
            assert_eq!(
                settings(qps, burst).validate().err(),
                error,
                "{qps} {burst}"
            );
        }
        assert!(settings(f64::NAN, 1).validate().is_err());
    }

    #[test]
    fn a_burst_goes_at_once_then_calls_are_spaced_by_one_over_qps() {
        // 10 qps, burst 3: 6 calls at t=0 go at 0, 0, 0, 100, 200, 300 ms.
        let sent = send_times(10.0, 3, &[0; 6]);
        let ms: Vec<u128> = sent.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 0, 0, 100, 200, 300]);
    }

    #[test]
    fn an_idle_bucket_refills_up_to_burst_only() {
        // After 10 s idle at 10 qps the bucket holds 3 (burst), not 100.
        let mut arrivals = vec![0, 0, 0];
        arrivals.extend([10_000; 5]);
        let ms: Vec<u128> = send_times(10.0, 3, &arrivals)
            .iter()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(ms, [0, 0, 0, 10_000, 10_000, 10_000, 10_100, 10_200]);
    }

    /// The wait of one call joining at `now` with nothing queued.
    fn wait_of(bucket: &mut TokenBucket, now: Instant) -> Duration {
        let ticket = bucket.join(now, Priority::Normal, None).unwrap();
        take_from(bucket, ticket, now) - now
    }

    #[test]
    fn retry_after_holds_every_call_and_is_capped() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(100.0, 10), start).unwrap();
        bucket.hold_for(start, Duration::from_secs(2));
        assert_eq!(wait_of(&mut bucket, start), Duration::from_secs(2));
        let later = start + Duration::from_millis(1500);
        // A shorter hold does not shorten a longer one.
        bucket.hold_for(later, Duration::from_millis(100));
        assert_eq!(wait_of(&mut bucket, later), Duration::from_millis(500));
        // Past the hold, tokens alone decide.
        assert_eq!(
            wait_of(&mut bucket, start + Duration::from_secs(3)),
            Duration::ZERO
        );
        let t = start + Duration::from_secs(4);
        bucket.hold_for(t, Duration::from_secs(3600));
        assert_eq!(wait_of(&mut bucket, t), MAX_RETRY_AFTER);
    }

    #[test]
    fn abandoned_calls_leave_no_debt() {
        // 10 qps, burst 1: the token goes; 1,000 calls join and give up;
        // the next call waits one token (100 ms), not 1,001.
        let mut arrivals = vec![(0, false)];
        arrivals.extend(std::iter::repeat_n((0, true), 1000));
        arrivals.push((0, false));
        assert_eq!(ms(&send_times_with(10.0, 1, &arrivals)), [0, 100]);
    }

    #[test]
    fn a_call_whose_turn_would_pass_its_deadline_is_refused_taking_nothing() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(10.0, 1), start).unwrap();
        let limit = Some(Duration::from_millis(250));
        // Turns at 0, 100 and 200 ms fit within 250 ms; the fourth would
        // come at 300 ms and is refused with three calls ahead.
        let tickets: Vec<_> = (0..3)
            .map(|_| bucket.join(start, Priority::Normal, limit).unwrap())
            .collect();
        assert_eq!(bucket.join(start, Priority::Normal, limit), Err(3));
        assert_eq!(bucket.waiting(), 3, "the refused call is not queued");
        // One ahead gives up: a place frees for a new call.
        bucket.leave(tickets[1]);
        let late = bucket.join(start, Priority::Normal, limit).unwrap();
        let mut t = start;
        for ticket in [tickets[0], tickets[2], late] {
            t = take_from(&mut bucket, ticket, t);
        }
        assert_eq!(t - start, Duration::from_millis(200));
    }

    #[test]
    fn verified_calls_go_ahead_of_queued_unverified_ones() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(10.0, 1), start).unwrap();
        let first = bucket.join(start, Priority::Unverified, None).unwrap();
        assert_eq!(bucket.try_take(start, first), Ok(()));
        let flood: Vec<_> = (0..20)
            .map(|_| bucket.join(start, Priority::Unverified, None).unwrap())
            .collect();
        // An unverified newcomer with 2 s left is refused (20 ahead) ...
        assert_eq!(
            bucket.join(start, Priority::Unverified, Some(Duration::from_secs(2))),
            Err(20)
        );
        // ... a verified one is next in line, and a normal one after it.
        let hpa = bucket
            .join(start, Priority::Verified, Some(Duration::from_secs(2)))
            .unwrap();
        let own = bucket.join(start, Priority::Normal, None).unwrap();
        // Even once a token is there, the flood waits for them.
        let t = take_from(&mut bucket, hpa, start);
        assert_eq!(t - start, Duration::from_millis(100));
        let later = t + Duration::from_millis(100);
        assert!(bucket.try_take(later, flood[0]).is_err());
        let t = take_from(&mut bucket, own, later);
        assert_eq!(t - start, Duration::from_millis(200));
        let t = take_from(&mut bucket, flood[0], t);
        assert_eq!(t - start, Duration::from_millis(300));
    }

    #[test]
    fn watches_are_recognised() {
        for (uri, watch) in [
            ("/api/v1/pods?watch=true&resourceVersion=5", true),
            ("/api/v1/pods?resourceVersion=5&watch=1", true),
            ("/api/v1/pods?watch=false", false),
            ("/api/v1/pods?limit=500", false),
            ("/api/v1/pods", false),
            ("/api/v1/namespaces/watch/pods", false),
        ] {
            let req = Request::get(uri).body(()).unwrap();
            assert_eq!(is_watch(&req), watch, "{uri}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        for (header, want) in [
            (Some("3"), Some(Duration::from_secs(3))),
            (Some(" 10 "), Some(Duration::from_secs(10))),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            (None, None),
        ] {
            let mut res = Response::builder().status(429);
            if let Some(h) = header {
                res = res.header("Retry-After", h);
            }
            assert_eq!(retry_after(&res.body(()).unwrap()), want, "{header:?}");
        }
    }

    proptest! {
        /// In every window [t, t + w], at most burst + qps * w calls go out,
        /// calls go out in the order they joined, a call never waits longer
        /// than its queue position requires, and calls that give up change
        /// none of that.
        #[test]
        fn never_more_than_burst_plus_qps_per_window(
            qps in 1.0f64..200.0,
            burst in 1u32..50,
            mut arrivals in proptest::collection::vec((0u64..5_000, proptest::bool::weighted(0.3)), 1..300),
        ) {
            arrivals.sort_unstable();
            let sent = send_times_with(qps, burst, &arrivals);
            for w in sent.windows(2) {
                prop_assert!(w[0] <= w[1] + Duration::from_nanos(1), "FIFO: {:?}", w);
            }
            for (i, &from) in sent.iter().enumerate() {
                for (j, &to) in sent.iter().enumerate().skip(i) {
                    let window = (to - from.min(to)).as_secs_f64();
                    let calls = (j - i + 1) as f64;
                    prop_assert!(
                        calls <= f64::from(burst) + qps * window + 1e-6,
                        "{calls} calls in {window}s at qps {qps} burst {burst}"
                    );
                }
            }
            // The first `burst` calls that stay never wait.
            let stayed: Vec<u64> = arrivals.iter().filter(|a| !a.1).map(|a| a.0).collect();
            for (k, (&a, &s)) in stayed.iter().zip(&sent).enumerate().take(burst as usize) {
                prop_assert_eq!(Duration::from_millis(a), s, "call {} waited", k);
            }
        }
    }

    /// Retries (kube's policy, above the budget) each wait for a token:
    /// a call answered 503, 503, 200 is three calls of the budget, spaced
    /// by 1/QPS, and the caller sees the 200.
    #[tokio::test(start_paused = true)]
    async fn retries_above_the_budget_are_counted_and_paced() {
        let answers = Arc::new(Mutex::new(vec![200u16, 503, 503]));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let (a, s) = (Arc::clone(&answers), Arc::clone(&sent));
        let inner = tower::service_fn(move |_req: Request<kube::client::Body>| {
            let code = a.lock().unwrap().pop().unwrap_or(200);
            s.lock().unwrap().push(start.elapsed());
            async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(code).body(()).unwrap(),
                )
            }
        });
        let mut registry = Registry::default();
        let metrics = BudgetMetrics::register(&mut registry);
        let budget = ApiBudget::new("test", settings(2.0, 1), Some(metrics)).unwrap();
        let mut svc = tower::ServiceBuilder::new()
            .layer(retry_above_budget(true))
            .layer(ApiRateLimitLayer::new(budget))
            .service(inner);
        let req = Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .body(kube::client::Body::from(b"{}".to_vec()))
            .unwrap();
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 3, "two retries");
        for w in sent.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(500),
                "a retry went out {:?} after the call before it, faster than 2 a second",
                w[1] - w[0]
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("wva_kube_api_requests_total{budget=\"test\"} 3"),
            "{text}"
        );
    }

    /// The layer in front of a real service: calls are paced, watches are
    /// not, and a 429 with Retry-After holds the budget.
    #[tokio::test(start_paused = true)]
    async fn the_layer_paces_calls_but_not_watches() {
        let answer_429 = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&answer_429);
        let inner = tower::service_fn(move |_req: Request<()>| {
            let busy = flag.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                let mut res = Response::builder();
                if busy {
                    res = res.status(429).header("Retry-After", "2");
                }
                Ok::<_, std::convert::Infallible>(res.body(()).unwrap())
            }
        });
        let budget = ApiBudget::new("test", settings(10.0, 2), None).unwrap();
        let mut svc = ApiRateLimitLayer::new(budget).layer(inner);
        let start = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..4 {
            svc.ready().await.unwrap();
            svc.call(Request::get("/api/v1/pods").body(()).unwrap())
                .await
                .unwrap();
            sent.push(start.elapsed().as_millis());
        }
        assert_eq!(sent, [0, 0, 100, 200]);
        // Watches pass at once while the bucket is empty.
        let before = start.elapsed();
        for _ in 0..5 {
            svc.call(Request::get("/api/v1/pods?watch=true").body(()).unwrap())
                .await
                .unwrap();
        }
        assert_eq!(start.elapsed(), before);
        // A 429 with Retry-After: 2 holds the next call for 2 s.
        answer_429.store(true, std::sync::atomic::Ordering::SeqCst);
        let res = svc
            .call(Request::get("/api/v1/pods").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        answer_429.store(false, std::sync::atomic::Ordering::SeqCst);
        let held_from = start.elapsed();
        svc.call(Request::get("/api/v1/pods").body(()).unwrap())
            .await
            .unwrap();
        assert!(
            start.elapsed() - held_from >= Duration::from_secs(2),
            "held for {:?}",
            start.elapsed() - held_from
        );
    }

    /// Calls given up while waiting (their callers timed out) leave no
    /// debt, and the requests counter counts calls sent, not calls that
    /// waited.
    #[tokio::test(start_paused = true)]
    async fn abandoned_waits_are_not_counted_and_leave_no_debt() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = Arc::clone(&sent);
        let inner = tower::service_fn(move |_req: Request<()>| {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(Response::new(())) }
        });
        let mut registry = Registry::default();
        let metrics = BudgetMetrics::register(&mut registry);
        let budget = ApiBudget::new("test", settings(1.0, 1), Some(metrics)).unwrap();
        let svc = ApiRateLimitLayer::new(Arc::clone(&budget)).layer(inner);
        let call = |mut svc: RateLimited<_, ()>| async move {
            svc.call(Request::get("/api/v1/pods").body(()).unwrap())
                .await
        };
        let start = Instant::now();
        call(svc.clone()).await.unwrap();
        // 100 calls wait, and give up after 50 ms.
        let abandoned = futures::future::join_all(
            (0..100).map(|_| tokio::time::timeout(Duration::from_millis(50), call(svc.clone()))),
        )
        .await;
        assert!(abandoned.iter().all(Result::is_err));
        assert_eq!(budget.waiting(), 0);
        // The next call goes when the next token comes (1 s after the
        // first), not after 100 more.
        call(svc.clone()).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("wva_kube_api_requests_total{budget=\"test\"} 2"),
            "{text}"
        );
    }

    /// With a deadline, calls whose turn comes in time wait; the next one
    /// is refused at once, with an error that says so.
    #[tokio::test(start_paused = true)]
    async fn a_call_whose_turn_is_past_its_deadline_is_refused_at_once() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let budget = ApiBudget::new("reviews", settings(1.0, 1), None).unwrap();
        let svc = ApiRateLimitLayer::new(budget).layer(inner);
        let start = Instant::now();
        let context = CallContext {
            deadline: Some(start + Duration::from_secs(2)),
            priority: Priority::Unverified,
        };
        let calls = (0..4).map(|_| {
            let mut svc = svc.clone();
            async move {
                let out = svc.call(Request::get("/x").body(()).unwrap()).await;
                (out.map(|_| ()), start.elapsed())
            }
        });
        let results = with_call_context(context, futures::future::join_all(calls)).await;
        let times: Vec<u64> = results.iter().map(|r| r.1.as_secs()).collect();
        assert_eq!(times, [0, 1, 2, 0]);
        assert!(results[..3].iter().all(|r| r.0.is_ok()));
        let err = results[3].0.as_ref().unwrap_err();
        assert!(BudgetRefused::is_in(err.as_ref()), "{err}");
        assert!(err.to_string().contains("reviews API budget"), "{err}");
    }
}
