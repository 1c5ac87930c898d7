//! The innermost service: routes a request and runs its handler. Handlers
//! read in-memory state only; nothing here waits on the network.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response};
use http_body_util::Full;
use prometheus_client::registry::Registry;

use super::auth::{authz, Auth, PeerCertificates};
use crate::api::custom::{custom_metric_values, CustomVersion};
use crate::api::discovery::DiscoveryDocuments;
use crate::api::router::{route, Route};
use crate::api::values::external_metric_values;
use crate::decision::DecisionEngine;
use crate::k8s::status::ApiError;
use crate::telemetry::{RouteLabels, RouteOnly, Telemetry};

pub type Body = Full<Bytes>;

/// Longest request URI served; a label selector never needs more.
pub const MAX_URI_BYTES: usize = 8 * 1024;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const OPENMETRICS: HeaderValue =
    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");

/// Shared state of the API.
pub struct AppState {
    pub engine: Arc<DecisionEngine>,
    pub discovery: DiscoveryDocuments,
    pub registry: Registry,
    pub telemetry: Telemetry,
    /// Set once the first metrics fetch cycle has finished.
    pub first_fetch_done: Arc<AtomicBool>,
    /// Authentication and authorization; None only when explicitly disabled.
    pub auth: Option<Arc<Auth>>,
}

/// The routing service, cheap to clone (one per connection).
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
}

impl App {
    pub fn new(state: AppState) -> Self {
        App {
            state: Arc::new(state),
        }
    }

    /// The server's own metrics, for the layers below HTTP.
    pub fn telemetry(&self) -> &Telemetry {
        &self.state.telemetry
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Handles one request to completion.
    /// Only the request head is used: every route is a GET, and a body sent
    /// along is ignored (dropped unread).
    pub async fn handle(&self, req: &http::request::Parts) -> Response<Body> {
        let started = std::time::Instant::now();
        if req.uri.to_string().len() > MAX_URI_BYTES {
            return error_response(&ApiError::new(
                http::StatusCode::URI_TOO_LONG,
                "RequestURITooLong",
                format!("the request URI is longer than {MAX_URI_BYTES} bytes"),
            ));
        }
        // Routed on the decoded path, as Go's servers do (`%2F` is a `/`):
        // clients that escape object names, such as the Python client's
        // `name="target/metric"`, reach the same route.
        let path = match percent_encoding::percent_decode_str(req.uri.path()).decode_utf8() {
            Ok(p) => p,
            Err(_) => {
                return error_response(&ApiError::bad_request(
                    "the request path is not valid UTF-8 after percent-decoding",
                ))
            }
        };
        let (route_name, response) = match route(&req.method, &path) {
            Ok(r) => match self.check_access(&r, req).await {
                Ok(()) => (r.name(), self.dispatch(&r, req).await),
                Err(e) => (r.name(), error_response(&e)),
            },
            Err(e) => ("unmatched", error_response(&e)),
        };
        let t = &self.state.telemetry;
        t.http_requests
            .get_or_create(&RouteLabels {
                route: route_name.to_owned(),
                code: response.status().as_u16().to_string(),
            })
            .inc();
        t.http_duration
            .get_or_create(&RouteOnly {
                route: route_name.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        if req.method == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, Body::default());
        }
        response
    }

    /// Authenticates and authorizes a routed request (always-allowed paths
    /// such as the health checks skip both).
    async fn check_access(
        &self,
        r: &Route<'_>,
        req: &http::request::Parts,
    ) -> Result<(), ApiError> {
        let Some(auth) = &self.state.auth else {
            return Ok(());
        };
        let path = req.uri.path();
        if auth.always_allowed(path) {
            return Ok(());
        }
        let user = auth
            .authenticate(&req.headers, req.extensions.get::<PeerCertificates>())
            .await?;
        auth.authorize(&user, &authz::attributes(r, path)).await
    }

    async fn dispatch(&self, r: &Route<'_>, req: &http::request::Parts) -> Response<Body> {
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
            Route::ApiGroupList => ok(JSON, d.api_group_list.clone()),
            Route::ApiGroup => ok(JSON, d.api_group.clone()),
            Route::ApiResourceList => ok(JSON, d.api_resource_list.clone()),
            Route::Version => ok(JSON, d.version.clone()),
            Route::OpenApiV2 => ok(JSON, d.openapi_v2.clone()),
            Route::OpenApiV3Root => ok(JSON, d.openapi_v3_root.clone()),
            Route::OpenApiV3Group => ok(JSON, d.openapi_v3_group.clone()),
            Route::Healthz | Route::Livez => ok(TEXT, Bytes::from_static(b"ok")),
            Route::Readyz => self.readyz(),
            Route::Metrics => {
                let mut out = String::new();
                match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
                    Ok(()) => ok(OPENMETRICS, Bytes::from(out)),
                    Err(e) => {
                        error_response(&ApiError::internal(format!("cannot encode metrics: {e}")))
                    }
                }
            }
            Route::CustomApiGroup => ok(JSON, d.custom_api_group.clone()),
            Route::CustomResourceList { version } => ok(
                JSON,
                match version {
                    CustomVersion::V1beta1 => d.custom_v1beta1.clone(),
                    CustomVersion::V1beta2 => d.custom_v1beta2.clone(),
                },
            ),
            Route::CustomMetric(q) => match custom_metric_values(&s.engine, q, req.uri.query()) {
                Ok(body) => ok(JSON, Bytes::from(body)),
                Err(e) => error_response(&e),
            },
            Route::ExternalMetric { namespace, metric } => {
                match external_metric_values(&s.engine, namespace, metric, req.uri.query()).await {
                    Ok(body) => ok(JSON, Bytes::from(body)),
                    Err(e) => error_response(&e),
                }
            }
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
        if !s.first_fetch_done.load(Ordering::Acquire) {
            failing.push("metrics: first fetch cycle not finished".to_owned());
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
fn unserved_group(r: &Route<'_>, d: &DiscoveryDocuments) -> Option<&'static str> {
    match r {
        Route::CustomApiGroup | Route::CustomResourceList { .. } | Route::CustomMetric(_)
            if !d.groups.custom =>
        {
            Some(crate::api::custom::GROUP)
        }
        Route::ApiGroup | Route::ApiResourceList | Route::ExternalMetric { .. }
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

/// A Status response for an error.
pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(e.to_json())));
    *r.status_mut() = e.code;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
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

/// Status for requests the stack refused before they reached a handler.
pub fn overloaded() -> Response<Body> {
    error_response(&ApiError::service_unavailable(
        "the server is handling too many requests; retry shortly",
    ))
}

pub fn timed_out() -> Response<Body> {
    error_response(&ApiError::timeout(
        "the request did not complete within the server's request timeout",
    ))
}
