//! Routing: decodes the request path, as Go's servers do (`%2F` is a `/`,
//! so clients that escape object names, such as the Python client's
//! `name="target/metric"`, reach the same route), and resolves it with
//! [`crate::api::router::route`], the one parse of the request. Unknown
//! paths are answered 404 and other methods than GET and HEAD 405 here; a
//! routed request carries its [`ApiRequest`] in its extensions to the
//! layers below (authentication, authorization, the handlers read it
//! there), and every answer carries the [`RouteName`] for telemetry.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use http::{Request, Response};

use super::errors::error_response;
use super::Body;
use crate::api::router::{route, ApiRequest};
use crate::k8s::status::ApiError;

/// The route name of an answer (`unmatched` for 404s and 405s), for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteName(pub &'static str);

/// The path after percent-decoding, or a 400 Status.
pub(crate) fn decoded_path(uri: &http::Uri) -> Result<Cow<'_, str>, ApiError> {
    percent_encoding::percent_decode_str(uri.path())
        .decode_utf8()
        .map_err(|_| {
            ApiError::bad_request("the request path is not valid UTF-8 after percent-decoding")
        })
}

/// The [`tower::Layer`] of [`Routing`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoutingLayer;

impl<S> tower::Layer<S> for RoutingLayer {
    type Service = Routing<S>;
    fn layer(&self, inner: S) -> Routing<S> {
        Routing { inner }
    }
}

/// Routes each request, answering those that match no route.
#[derive(Debug, Clone)]
pub(crate) struct Routing<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The answer of a routed request, labelled with its [`RouteName`].
    pub(crate) struct Named<F> {
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
        let request: ApiRequest = match decoded_path(req.uri()) {
            // Not counted in telemetry: no route to name it by.
            Err(e) => return Either::Left(futures::future::ready(Ok(error_response(&e)))),
            Ok(path) => match route(req.method(), &path, req.uri().query()) {
                Err(e) => {
                    let mut r = error_response(&e);
                    r.extensions_mut().insert(RouteName("unmatched"));
                    return Either::Left(futures::future::ready(Ok(r)));
                }
                Ok(request) => request,
            },
        };
        let name = request.name();
        req.extensions_mut().insert(request);
        Either::Right(Named {
            inner: self.inner.call(req),
            name,
        })
    }
}

/// `wva_routes_parsed_total`: requests parsed by
/// [`crate::api::router::route`] in this process. Equal to the requests
/// routed (answered or refused 404/405), since authentication,
/// authorization and the handlers read the parsed request from the
/// extensions instead of parsing again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RoutesParsed;

impl prometheus_client::collector::Collector for RoutesParsed {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let counter = prometheus_client::metrics::counter::ConstCounter::new(
            crate::api::router::requests_parsed(),
        );
        let metric = encoder.encode_descriptor(
            "wva_routes_parsed",
            "Requests whose method, path and query were parsed into a route (once per request).",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}
