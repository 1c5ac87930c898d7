//! Errors as Kubernetes `Status` answers: every refusal, whatever layer
//! makes it, is a `metav1.Status` JSON body with the matching HTTP code.
//! [`ErrorsAsStatus`] turns the errors of the layers below it (overload,
//! timeout) into such answers, so that hyper only ever sees a
//! response.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{Either, Map, Ready};
use futures::FutureExt;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use tower::BoxError;

use super::limits::{Overloaded, TimedOut};
use super::Body;
use crate::k8s::status::ApiError;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A Status answer for an error.
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(Body::new(e.to_json().into()));
    *r.status_mut() = e.code;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// 503 for a request refused by load shedding.
pub(crate) fn overloaded() -> Response<Body> {
    error_response(&ApiError::service_unavailable(
        "the server is handling too many requests; retry shortly",
    ))
}

/// 504 for a request that ran out of time.
pub(crate) fn timed_out() -> Response<Body> {
    error_response(&ApiError::timeout(
        "the request did not complete within the server's request timeout",
    ))
}

/// The Status answer for an error of a tower layer.
pub(crate) fn status_for(e: BoxError) -> Response<Body> {
    if e.is::<Overloaded>() {
        overloaded()
    } else if e.is::<TimedOut>() {
        timed_out()
    } else {
        tracing::error!(error = %e, "request failed inside the stack");
        error_response(&ApiError::internal("internal error"))
    }
}

/// The [`tower::Layer`] of [`ErrorsAsStatus`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErrorsAsStatusLayer;

impl<S> tower::Layer<S> for ErrorsAsStatusLayer {
    type Service = ErrorsAsStatus<S>;
    fn layer(&self, inner: S) -> ErrorsAsStatus<S> {
        ErrorsAsStatus {
            inner,
            ready_error: None,
        }
    }
}

/// Turns the errors of the layers below into Status answers.
pub(crate) struct ErrorsAsStatus<S> {
    inner: S,
    /// A readiness error of the layers below (none of ours fails there
    /// today; a tower layer added later might), answered
    /// on the next call.
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

type Converted<F> =
    Map<F, fn(Result<Response<Body>, BoxError>) -> Result<Response<Body>, Infallible>>;

fn never_fail(r: Result<Response<Body>, BoxError>) -> Result<Response<Body>, Infallible> {
    Ok(r.unwrap_or_else(status_for))
}

impl<S, B> tower::Service<Request<B>> for ErrorsAsStatus<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, Converted<S::Future>>;

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
            return Either::Left(futures::future::ready(Ok(status_for(e))));
        }
        Either::Right(self.inner.call(req).map(never_fail as fn(_) -> _))
    }
}
