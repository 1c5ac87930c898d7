//! Request limits: excess requests are shed at once (503 Status) instead of
//! queueing behind a concurrency limit, a request that takes longer than
//! the request timeout is answered 504, and a URI longer than any label
//! selector needs is refused with 414 before anything parses it. (Request
//! head size and header-read deadlines are the connection's business: see
//! [`crate::server::connection`].)

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready};
use http::{Request, Response, StatusCode};
use tower::limit::{ConcurrencyLimit, ConcurrencyLimitLayer};
use tower::load_shed::{LoadShed, LoadShedLayer};
use tower::timeout::{Timeout, TimeoutLayer};
use tower::Layer;

use super::errors::error_response;
use super::Body;
use crate::k8s::status::ApiError;

/// Longest request URI served; a label selector never needs more.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Limits of the request stack.
#[derive(Debug, Clone, Copy)]
pub struct StackConfig {
    /// Requests in flight over all connections; beyond, 503 at once.
    pub max_concurrent_requests: usize,
    /// A request not answered within this time is answered 504.
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

/// Load shedding, then the concurrency limit, then the timeout, then the
/// URI length check. Its errors are turned into Status answers by
/// [`super::errors::ErrorsAsStatus`] above it.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimitsLayer(pub StackConfig);

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = LoadShed<ConcurrencyLimit<Timeout<UriLimit<S>>>>;

    fn layer(&self, inner: S) -> Self::Service {
        let timeout = TimeoutLayer::new(self.0.request_timeout).layer(UriLimit { inner });
        let limited = ConcurrencyLimitLayer::new(self.0.max_concurrent_requests).layer(timeout);
        LoadShedLayer::new().layer(limited)
    }
}

/// Refuses request URIs longer than [`MAX_URI_BYTES`] with a 414 Status.
#[derive(Debug, Clone)]
pub struct UriLimit<S> {
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
