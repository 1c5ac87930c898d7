//! Request limits: excess requests are shed at once (503 Status) instead of
//! queueing behind a concurrency limit, a request that takes longer than
//! the request timeout is answered 504, and a URI longer than any label
//! selector needs is refused with 414 before anything parses it. (Request
//! head size and header-read deadlines are the connection's business: see
//! [`crate::server::connection`].)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready};
use http::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{BoxError, Layer};

use super::errors::error_response;
use super::Body;
use crate::k8s::status::ApiError;

/// Longest request URI served; a label selector never needs more.
pub(crate) const MAX_URI_BYTES: usize = 8 * 1024;

/// Limits of the request stack.
#[derive(Debug, Clone, Copy)]
pub struct StackConfig {
    /// Requests in flight over all connections; beyond, 503 at once.
    pub(crate) max_concurrent_requests: usize,
    /// A request not answered within this time is answered 504.
    pub(crate) request_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The concurrency limit with load shedding, then the request timeout,
/// then the URI length check. A request beyond the limit fails at once
/// with [`Overloaded`] (no queueing), one that takes too long with
/// [`TimedOut`]; [`super::errors::ErrorsAsStatus`] above turns both into
/// Status answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimitsLayer(pub StackConfig);

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimits {
            inner: UriLimit { inner },
            permits: Arc::new(Semaphore::new(self.0.max_concurrent_requests)),
            timeout: self.0.request_timeout,
        }
    }
}

/// More requests in flight than `--max-concurrent-requests`.
#[derive(Debug, Default, thiserror::Error)]
#[error("too many requests in flight")]
pub(crate) struct Overloaded;

/// No answer within `--request-timeout`.
#[derive(Debug, Default, thiserror::Error)]
#[error("request timed out")]
pub(crate) struct TimedOut;

/// Sheds requests beyond the concurrency limit and times out slow ones.
/// Clones share the limit (hyper clones the stack per request, so the
/// clone is two reference counts and a copy).
#[derive(Debug, Clone)]
pub(crate) struct RequestLimits<S> {
    inner: UriLimit<S>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

pin_project_lite::pin_project! {
    /// A request in flight: holds its permit until its answer is ready.
    pub(crate) struct Limited<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl<F, E> Future for Limited<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match std::task::ready!(this.inner.poll(cx)) {
            Ok(answer) => answer.map_err(Into::into),
            Err(_) => Err(TimedOut.into()),
        };
        this.permit.take();
        Poll::Ready(out)
    }
}

impl<S, B> tower::Service<Request<B>> for RequestLimits<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Either<
        Ready<Result<Response<Body>, BoxError>>,
        Limited<<UriLimit<S> as tower::Service<Request<B>>>::Future>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return Either::Left(futures::future::ready(Err(Overloaded.into())));
        };
        Either::Right(Limited {
            inner: tokio::time::timeout(self.timeout, self.inner.call(req)),
            permit: Some(permit),
        })
    }
}

/// Refuses request URIs longer than [`MAX_URI_BYTES`] with a 414 Status.
#[derive(Debug, Clone)]
pub(crate) struct UriLimit<S> {
    inner: S,
}

/// The length of a URI as the client sent it (path and query; origin-form
/// requests, which is what clients send, have nothing else), counted
/// without formatting it.
fn uri_len(uri: &http::Uri) -> usize {
    let origin = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    origin + authority + scheme
}

impl<S, B> tower::Service<Request<B>> for UriLimit<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if uri_len(req.uri()) > MAX_URI_BYTES {
            return Either::Left(futures::future::ready(Ok(error_response(&ApiError::new(
                StatusCode::URI_TOO_LONG,
                "RequestURITooLong",
                format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
            )))));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    /// A handler that answers after `delay`.
    fn slow(
        delay: Duration,
    ) -> impl Service<Request<()>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone
    {
        tower::service_fn(move |_req: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(Response::new(Body::default()))
        })
    }

    fn get() -> Request<()> {
        Request::get("/apis").body(()).expect("test request")
    }

    #[tokio::test(start_paused = true)]
    async fn excess_requests_are_shed_and_slow_ones_time_out() {
        let config = StackConfig {
            max_concurrent_requests: 1,
            request_timeout: Duration::from_secs(30),
        };
        let mut limited = RequestLimitsLayer(config).layer(slow(Duration::from_secs(10)));
        let first = limited.ready().await.unwrap().call(get());
        let mut other = limited.clone();
        let second = other.ready().await.unwrap().call(get()).await;
        assert!(
            second.unwrap_err().is::<Overloaded>(),
            "the limit is shared by clones"
        );
        assert_eq!(first.await.unwrap().status(), 200);
        let third = limited.ready().await.unwrap().call(get()).await;
        assert_eq!(third.unwrap().status(), 200, "the permit came back");

        let mut stuck = RequestLimitsLayer(config).layer(slow(Duration::from_secs(31)));
        let answer = stuck.ready().await.unwrap().call(get()).await;
        assert!(answer.unwrap_err().is::<TimedOut>());
        let again = stuck.ready().await.unwrap().call(get()).await;
        assert!(
            again.unwrap_err().is::<TimedOut>(),
            "a timed-out request frees its permit"
        );
    }

    #[test]
    fn uri_length_counts_what_the_client_sent() {
        for (uri, len) in [
            ("/apis", 5),
            ("/apis?labelSelector=a%3Db", 25),
            ("https://h:1/x?y", 15),
            ("*", 1),
        ] {
            let parsed: http::Uri = uri.parse().expect("test URI");
            assert_eq!(uri_len(&parsed), len, "{uri}");
            assert_eq!(uri_len(&parsed), parsed.to_string().len(), "{uri}");
        }
    }
}
