//! The handlers: the innermost service of the stack, below routing,
//! authentication and authorization (see [`super::layers`]). Handlers read
//! in-memory state only; nothing here waits on the network.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use super::answers::Answers;
use super::auth::Auth;
use super::layers::errors::error_response;
pub(crate) use super::layers::Body;
use crate::api::custom::{custom_metric_values, CustomVersion};
use crate::api::discovery::DiscoveryDocuments;
use crate::api::router::{ApiRequest, ExternalQuery};
use crate::api::values::external_metric_answer;
use crate::decision::DecisionEngine;
use crate::k8s::status::ApiError;
use crate::telemetry::Telemetry;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const OPENMETRICS: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");

/// Shared state of the API.
pub(crate) struct AppState {
    pub(crate) engine: Arc<DecisionEngine>,
    pub(crate) discovery: DiscoveryDocuments,
    pub(crate) registry: Registry,
    pub(crate) telemetry: Telemetry,
    /// Authentication and authorization; None only when explicitly disabled.
    pub(crate) auth: Option<Arc<Auth>>,
}

/// The handlers, cheap to clone (one per connection).
#[derive(Clone)]
pub(crate) struct App {
    state: Arc<AppState>,
    answers: Arc<Answers>,
}

impl App {
    pub(crate) fn new(mut state: AppState) -> Self {
        state
            .registry
            .register_collector(Box::new(super::layers::routing::RoutesParsed));
        App {
            answers: Arc::new(Answers::new(Arc::clone(&state.engine))),
            state: Arc::new(state),
        }
    }

    /// The server's own metrics, for the layers below HTTP.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.state.telemetry
    }

    pub(crate) fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Runs the handler of a routed request: the [`ApiRequest`] the routing
    /// layer parsed is in its extensions. Only the request head is used:
    /// every route is a GET, and a body sent along is ignored (dropped
    /// unread).
    pub(crate) async fn handle(&self, req: &http::request::Parts) -> Response<Body> {
        let Some(r) = req.extensions.get::<ApiRequest>() else {
            return error_response(&ApiError::internal("request reached the handlers unrouted"));
        };
        self.dispatch(r, req).await
    }

    async fn dispatch(&self, r: &ApiRequest, req: &http::request::Parts) -> Response<Body> {
        let s = &self.state;
        let d = &s.discovery;
        if let Some(group) = unserved_group(r, d) {
            return error_response(&ApiError::not_found(format!(
                "{group} is not served by this server (see --api-groups)"
            )));
        }
        match r {
            // The aggregator asks /apis for aggregated discovery (apidiscovery.k8s.io
            // v2); a plain APIGroupList with a plain JSON content type makes it fall
            // back to legacy discovery, whatever the Accept header says.
            ApiRequest::ApiGroupList => ok(JSON, d.api_group_list.clone()),
            ApiRequest::ApiGroup => ok(JSON, d.api_group.clone()),
            ApiRequest::ApiResourceList => ok(JSON, d.api_resource_list.clone()),
            ApiRequest::Version => ok(JSON, d.version.clone()),
            ApiRequest::OpenApiV2 => ok(JSON, d.openapi_v2.clone()),
            ApiRequest::OpenApiV3Root => ok(JSON, d.openapi_v3_root.clone()),
            ApiRequest::OpenApiV3Group => ok(JSON, d.openapi_v3_group.clone()),
            ApiRequest::Healthz | ApiRequest::Livez => ok(TEXT, Bytes::from_static(b"ok")),
            ApiRequest::Readyz => self.readyz(),
            ApiRequest::Metrics => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
                    Ok(()) => ok(OPENMETRICS, Bytes::from(out)),
                    Err(e) => {
                        error_response(&ApiError::internal(format!("cannot encode metrics: {e}")))
                    }
                }
            }
            ApiRequest::CustomApiGroup => ok(JSON, d.custom_api_group.clone()),
            ApiRequest::CustomResourceList { version } => ok(
                JSON,
                match version {
                    CustomVersion::V1beta1 => d.custom_v1beta1.clone(),
                    CustomVersion::V1beta2 => d.custom_v1beta2.clone(),
                },
            ),
            ApiRequest::ObjectMetric(q) | ApiRequest::PodsMetric(q) => {
                match custom_metric_values(&s.engine, q) {
                    Ok(body) => ok(JSON, Bytes::from(body)),
                    Err(e) => error_response(&e),
                }
            }
            ApiRequest::ExternalValues(q) => self.external_values(q, req),
        }
    }

    /// A values request: the kept answer while its inputs are unchanged
    /// (see [`Answers`]), else a new one.
    fn external_values(&self, q: &ExternalQuery, req: &http::request::Parts) -> Response<Body> {
        let request = req.uri.path_and_query().map_or("", |pq| pq.as_str());
        let answer = self
            .answers
            .answer(request, || external_metric_answer(&self.state.engine, q));
        match answer {
            Ok(body) => ok(JSON, body),
            Err(e) => error_response(&e),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let s = &self.state;
        let mut failing = Vec::new();
        let inventory = s.engine.inventory();
        if !inventory.is_synced() {
            failing.push(format!(
                "inventory: not synced (waiting for {})",
                inventory.pending().join(", ")
            ));
        }
        // Ready once a fetch cycle reached the metrics source; later
        // outages do not take readiness back (the answers say them), see
        // docs/architecture.md "Readiness".
        let health = s.engine.cache().health();
        if !health.has_succeeded() {
            failing.push(match health.any_failure() {
                Some(failure) => format!("metrics: no fetch has succeeded yet: {failure}"),
                None => "metrics: the first fetch cycle has not finished".to_owned(),
            });
        }
        if failing.is_empty() {
            ok(TEXT, Bytes::from_static(b"ok"))
        } else {
            error_response(&ApiError::service_unavailable(format!(
                "not ready: {}",
                failing.join("; ")
            )))
        }
    }
}

/// The group of a route when this server was told not to serve it.
fn unserved_group(r: &ApiRequest, d: &DiscoveryDocuments) -> Option<&'static str> {
    match r {
        ApiRequest::CustomApiGroup
        | ApiRequest::CustomResourceList { .. }
        | ApiRequest::ObjectMetric(_)
        | ApiRequest::PodsMetric(_)
            if !d.groups.custom =>
        {
            Some(crate::api::custom::GROUP)
        }
        ApiRequest::ApiGroup | ApiRequest::ApiResourceList | ApiRequest::ExternalValues(_)
            if !d.groups.external =>
        {
            Some(crate::api::discovery::GROUP)
        }
        _ => None,
    }
}

fn ok(content_type: HeaderValue, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(CONTENT_TYPE, content_type);
    r
}

impl<B> tower::Service<Request<B>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let app = self.clone();
        let (parts, _body) = req.into_parts();
        Box::pin(async move { Ok(app.handle(&parts).await) })
    }
}
