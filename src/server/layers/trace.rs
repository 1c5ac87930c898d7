//! A tracing span per request, as the outermost layer of the stack: every
//! log line of a request carries its method and path, and one line records
//! the outcome.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tracing::Instrument;

/// Lines about failed (5xx) requests: at most one a second, process-wide.
static FAILURE_LOG: crate::server::log_limit::LogLimiter =
    crate::server::log_limit::LogLimiter::new(std::time::Duration::from_secs(1));

/// Wraps a service with a span per request.
#[derive(Clone, Debug)]
pub(crate) struct TraceRequests<S> {
    inner: S,
}

/// The [`tower::Layer`] of [`TraceRequests`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceRequests<S>;
    fn layer(&self, inner: S) -> TraceRequests<S> {
        TraceRequests { inner }
    }
}

impl<S, B, R> tower::Service<Request<B>> for TraceRequests<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A debug span: at the default level it is disabled and costs
        // nothing, where an info span had every request's fields formatted
        // by the log layer (measurable at tens of thousands of requests per
        // second, see docs/benchmarks.md). Failures name the request on
        // their own event instead.
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            version = ?req.version(),
        );
        let method = req.method().clone();
        let uri = req.uri().clone();
        let started = Instant::now();
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let micros = started.elapsed().as_micros() as u64;
                match &result {
                    Ok(r) if r.status().is_server_error() => {
                        // A flood of failing requests must not flood the log.
                        if let Some(suppressed) = FAILURE_LOG.allow() {
                            tracing::warn!(
                                %method,
                                path = uri.path(),
                                status = r.status().as_u16(),
                                micros,
                                suppressed,
                                "request failed (further failed requests within a second are counted in the next such line as suppressed)"
                            )
                        }
                    }
                    Ok(r) => tracing::debug!(status = r.status().as_u16(), micros, "request done"),
                    Err(e) => tracing::error!(%method, path = uri.path(), error = %e, micros, "request error"),
                }
                result
            }
            .instrument(span),
        )
    }
}
