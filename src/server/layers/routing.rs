//! Routing: decodes the request path, as Go's servers do (`%2F` is a `/`,
//! so clients that escape object names, such as the Python client's
//! `name="target/metric"`, reach the same route), and resolves it with
//! [`crate::api::router::route`]. Unknown paths are answered 404 and other
//! methods than GET and HEAD 405 here; a routed request carries [`Routed`]
//! to the layers below, and every answer carries the [`RouteName`] for
//! telemetry.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use http::{Request, Response};

use super::errors::error_response;
use super::Body;
use crate::api::router::{route, Route};
use crate::k8s::status::ApiError;

/// The route of a request, for the layers below routing.
#[derive(Debug, Clone)]
pub struct Routed {
    /// The route's low-cardinality name.
    pub name: &'static str,
    /// The decoded path when it differs from the request's path.
    decoded: Option<Box<str>>,
}

impl Routed {
    /// The path the request was routed on.
    pub fn path<'r>(&'r self, uri: &'r http::Uri) -> &'r str {
        self.decoded.as_deref().unwrap_or(uri.path())
    }

    /// The route, resolved again from the path (routing is a few string
    /// comparisons; this keeps the route's borrowed parts borrowed).
    pub fn route<'r>(
        &'r self,
        method: &http::Method,
        uri: &'r http::Uri,
    ) -> Result<Route<'r>, ApiError> {
        route(method, self.path(uri))
    }
}

/// The route name of an answer (`unmatched` for 404s and 405s), for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteName(pub &'static str);

/// The path after percent-decoding, or a 400 Status.
pub fn decoded_path(uri: &http::Uri) -> Result<Cow<'_, str>, ApiError> {
    percent_encoding::percent_decode_str(uri.path())
        .decode_utf8()
        .map_err(|_| {
            ApiError::bad_request("the request path is not valid UTF-8 after percent-decoding")
        })
}

/// The [`tower::Layer`] of [`Routing`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingLayer;

impl<S> tower::Layer<S> for RoutingLayer {
    type Service = Routing<S>;
    fn layer(&self, inner: S) -> Routing<S> {
        Routing { inner }
    }
}

/// Routes each request, answering those that match no route.
#[derive(Debug, Clone)]
pub struct Routing<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The answer of a routed request, labelled with its [`RouteName`].
    pub struct Named<F> {
        #[pin]
        inner: F,
        name: &'static str,
    }
}

impl<F, E> Future for Named<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.inner.poll(cx).map_ok(|mut r| {
            r.extensions_mut().insert(RouteName(this.name));
            r
        })
    }
}

impl<S, B> tower::Service<Request<B>> for Routing<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, Named<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let routed = match decoded_path(req.uri()) {
            // Not counted in telemetry: no route to name it by.
            Err(e) => return Either::Left(futures::future::ready(Ok(error_response(&e)))),
            Ok(path) => match route(req.method(), &path) {
                Err(e) => {
                    let mut r = error_response(&e);
                    r.extensions_mut().insert(RouteName("unmatched"));
                    return Either::Left(futures::future::ready(Ok(r)));
                }
                Ok(r) => Routed {
                    name: r.name(),
                    decoded: match &path {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(p) => Some(p.as_str().into()),
                    },
                },
            },
        };
        let name = routed.name;
        req.extensions_mut().insert(routed);
        Either::Right(Named {
            inner: self.inner.call(req),
            name,
        })
    }
}
