//! The tower stack around [`App`], outermost first: a tracing span per
//! request; errors of the inner layers turned into Status responses; load
//! shedding in front of a concurrency limit (excess requests get a 503
//! Status at once instead of queueing); and a request timeout (504 Status).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder};

use super::app::{error_response, overloaded, timed_out, App, Body};
use super::trace::TraceLayer;
use crate::k8s::status::ApiError;

/// Limits of the request stack.
#[derive(Debug, Clone, Copy)]
pub struct StackConfig {
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The stack as hyper sees it: it never fails.
pub type HttpService = BoxCloneService<Request<Incoming>, Response<Body>, Infallible>;

/// Builds the stack.
pub fn build(app: App, config: StackConfig) -> HttpService {
    let service = ServiceBuilder::new()
        .layer(TraceLayer)
        .layer_fn(|inner| ErrorsAsStatus {
            inner,
            ready_error: None,
        })
        .load_shed()
        .concurrency_limit(config.max_concurrent_requests)
        .timeout(config.request_timeout)
        .service(app);
    BoxCloneService::new(service)
}

/// Turns the errors of the layers below into Status responses.
pub struct ErrorsAsStatus<S> {
    inner: S,
    /// A readiness error, answered on the next call.
    ready_error: Option<BoxError>,
}

impl<S: Clone> Clone for ErrorsAsStatus<S> {
    fn clone(&self) -> Self {
        ErrorsAsStatus {
            inner: self.inner.clone(),
            ready_error: None,
        }
    }
}

fn status_for(e: BoxError) -> Response<Body> {
    if e.is::<tower::load_shed::error::Overloaded>() {
        overloaded()
    } else if e.is::<tower::timeout::error::Elapsed>() {
        timed_out()
    } else {
        tracing::error!(error = %e, "request failed inside the stack");
        error_response(&ApiError::internal("internal error"))
    }
}

impl<S, B> tower::Service<Request<B>> for ErrorsAsStatus<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.ready_error = Some(e);
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(e) = self.ready_error.take() {
            return Box::pin(std::future::ready(Ok(status_for(e))));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { Ok(fut.await.unwrap_or_else(status_for)) })
    }
}
