//! Client-side QPS and burst for calls to the API server.
//!
//! A [`TokenBucket`] (pure: the caller passes the time in) hands out
//! reservations, first come first served: a caller that finds the bucket
//! empty is told how long to wait, and its token is taken at once, so that
//! later callers queue behind it instead of racing it. This is the
//! "reserve then wait" shape of Go's `x/time/rate`, which client-go's
//! limiter uses too.
//!
//! [`ApiRateLimitLayer`] puts one bucket in front of a kube client's
//! service. Watches are long-lived streams, not calls per second, and are
//! not counted (client-go does not count them either). A `429` answer with
//! `Retry-After` holds the whole bucket for that long: the API server said
//! it is overloaded, and every call of this client would get the same
//! answer.
//!
//! A client that retries on its own (kube's retry of 429/503/504) must have
//! that retry *above* the budget ([`retry_above_budget`]): kube's built-in
//! one sits below any layer added to its client, so its retries would go
//! out uncounted.

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

/// The longest `Retry-After` honoured: a larger value (or a date) is
/// capped, so that a misbehaving proxy cannot stop the client for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Invalid `--kube-api-qps` / `--kube-api-burst`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateLimitError {
    #[error("--kube-api-qps must be a finite number above 0, got {0}")]
    Qps(f64),
    #[error("--kube-api-burst must be at least 1, got {0}")]
    Burst(u32),
}

/// QPS and burst of one budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSettings {
    pub qps: f64,
    pub burst: u32,
}

impl RateLimitSettings {
    pub fn validate(&self) -> Result<(), RateLimitError> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Err(RateLimitError::Qps(self.qps));
        }
        if self.burst < 1 {
            return Err(RateLimitError::Burst(self.burst));
        }
        Ok(())
    }
}

/// A token bucket: `burst` tokens, refilled at `qps` per second. Pure.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    /// Tokens left at `updated`; negative while reservations are queued.
    tokens: f64,
    updated: Instant,
    /// No call goes out before this (a `Retry-After`).
    held_until: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(settings: RateLimitSettings, now: Instant) -> Result<Self, RateLimitError> {
        settings.validate()?;
        Ok(TokenBucket {
            qps: settings.qps,
            burst: f64::from(settings.burst),
            tokens: f64::from(settings.burst),
            updated: now,
            held_until: None,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.updated = self.updated.max(now);
    }

    /// Takes one token and says how long the caller must wait before it
    /// sends (zero when a token was there).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        let for_token = if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        };
        let for_hold = self
            .held_until
            .map(|h| h.saturating_duration_since(now))
            .unwrap_or_default();
        for_token.max(for_hold)
    }

    /// Holds every call until `now + wait` (capped at [`MAX_RETRY_AFTER`]).
    pub fn hold_for(&mut self, now: Instant, wait: Duration) {
        let until = now + wait.min(MAX_RETRY_AFTER);
        self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
    }
}

/// Label of the rate limiter's metrics: which budget.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub budget: String,
}

/// Metrics of every budget (registered once).
#[derive(Clone, Default)]
pub struct BudgetMetrics {
    requests: Family<BudgetLabels, Counter>,
    waited: Family<BudgetLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    retry_after: Family<BudgetLabels, Counter>,
}

impl BudgetMetrics {
    /// Registers `wva_kube_api_requests_total`,
    /// `wva_kube_api_rate_limit_wait_seconds_total` and
    /// `wva_kube_api_retry_after_total`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = BudgetMetrics::default();
        registry.register(
            "wva_kube_api_requests",
            "Calls to the API server that passed the client-side rate limit (watches not counted), by budget",
            m.requests.clone(),
        );
        registry.register(
            "wva_kube_api_rate_limit_wait_seconds",
            "Time calls to the API server waited for the client-side rate limit, by budget",
            m.waited.clone(),
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
pub struct ApiBudget {
    name: String,
    bucket: Mutex<TokenBucket>,
    metrics: Option<BudgetMetrics>,
    labels: BudgetLabels,
}

impl ApiBudget {
    pub fn new(
        name: &str,
        settings: RateLimitSettings,
        metrics: Option<BudgetMetrics>,
    ) -> Result<Arc<Self>, RateLimitError> {
        Ok(Arc::new(ApiBudget {
            name: name.to_owned(),
            bucket: Mutex::new(TokenBucket::new(settings, Instant::now())?),
            metrics,
            labels: BudgetLabels {
                budget: name.to_owned(),
            },
        }))
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // The bucket is a few numbers; a panic elsewhere cannot leave
        // them inconsistent, so a poisoned lock is still usable.
        match self.bucket.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits for this call's turn.
    pub async fn acquire(&self) {
        let wait = self.bucket().reserve(Instant::now());
        if let Some(m) = &self.metrics {
            m.requests.get_or_create(&self.labels).inc();
            if !wait.is_zero() {
                m.waited
                    .get_or_create(&self.labels)
                    .inc_by(wait.as_secs_f64());
            }
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
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
pub fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
    })
}

/// `Retry-After` in seconds (the API server sends seconds; an HTTP date
/// is not used by it and is ignored).
pub fn retry_after<B>(res: &Response<B>) -> Option<Duration> {
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
pub struct ApiRateLimitLayer<B> {
    budget: Arc<ApiBudget>,
    body: std::marker::PhantomData<fn(B)>,
}

impl<B> Clone for ApiRateLimitLayer<B> {
    fn clone(&self) -> Self {
        ApiRateLimitLayer::new(Arc::clone(&self.budget))
    }
}

impl<B> ApiRateLimitLayer<B> {
    pub fn new(budget: Arc<ApiBudget>) -> Self {
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
pub struct RateLimited<F, B>
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
pub fn retry_above_budget(
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
            let watch = is_watch(&req);
            if !watch {
                budget.acquire().await;
            }
            let res = inner.ready().await?.call(req).await?;
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

    /// Send times of calls arriving at `arrivals` (ms after start).
    fn send_times(qps: f64, burst: u32, arrivals: &[u64]) -> Vec<Duration> {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(qps, burst), start).unwrap();
        arrivals
            .iter()
            .map(|&a| {
                let at = start + Duration::from_millis(a);
                Duration::from_millis(a) + bucket.reserve(at)
            })
            .collect()
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

    #[test]
    fn retry_after_holds_every_call_and_is_capped() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(settings(100.0, 10), start).unwrap();
        bucket.hold_for(start, Duration::from_secs(2));
        assert_eq!(bucket.reserve(start), Duration::from_secs(2));
        let later = start + Duration::from_millis(1500);
        assert_eq!(bucket.reserve(later), Duration::from_millis(500));
        // A shorter hold does not shorten a longer one.
        bucket.hold_for(later, Duration::from_millis(100));
        assert_eq!(bucket.reserve(later), Duration::from_millis(500));
        // Past the hold, tokens alone decide.
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(3)),
            Duration::ZERO
        );
        bucket.hold_for(start, Duration::from_secs(3600));
        assert_eq!(bucket.reserve(start), MAX_RETRY_AFTER);
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
        /// calls go out in the order they reserved, and a call never waits
        /// longer than its queue position requires.
        #[test]
        fn never_more_than_burst_plus_qps_per_window(
            qps in 1.0f64..200.0,
            burst in 1u32..50,
            mut arrivals in proptest::collection::vec(0u64..5_000, 1..300),
        ) {
            arrivals.sort_unstable();
            let sent = send_times(qps, burst, &arrivals);
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
            // The first `burst` calls never wait.
            for (k, (&a, &s)) in arrivals.iter().zip(&sent).enumerate().take(burst as usize) {
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
}
