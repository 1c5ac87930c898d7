//! The request path from hyper to the handlers: one tower layer per
//! concern (see [`super::layers`]), outermost first.

use std::convert::Infallible;

use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use super::app::App;
use super::layers::authn::AuthnLayer;
use super::layers::authz::AuthzLayer;
use super::layers::errors::ErrorsAsStatusLayer;
use super::layers::head::HeadLayer;
use super::layers::limits::RequestLimitsLayer;
pub(crate) use super::layers::limits::StackConfig;
use super::layers::routing::RoutingLayer;
use super::layers::telemetry::{RequestMetrics, TelemetryLayer};
use super::layers::trace::TraceLayer;
use super::layers::Body;

/// The stack as hyper sees it: it never fails.
pub(crate) type HttpService<B> = BoxCloneSyncService<Request<B>, Response<Body>, Infallible>;

/// Builds the stack around `app`.
pub(crate) fn build<B: Send + 'static>(app: App, config: StackConfig) -> HttpService<B> {
    let auth = app.state().auth.clone();
    let metrics = RequestMetrics::new(app.telemetry().clone());
    let service = ServiceBuilder::new()
        .layer(TraceLayer) //                    span per request, failures logged
        .layer(HeadLayer) //                     HEAD: the GET answer without body
        .layer(ErrorsAsStatusLayer) //           errors below -> Status answers
        .layer(RequestLimitsLayer(config)) //    shed, concurrency, timeout, URI length
        .layer(TelemetryLayer(metrics)) //       requests and latency per route
        .layer(RoutingLayer) //                  parse once -> ApiRequest, 404 / 405
        .layer(AuthnLayer(auth.clone())) //      who: 401
        .layer(AuthzLayer(auth)) //              may they: 403
        .service(app); //                        the route's handler
    BoxCloneSyncService::new(service)
}
