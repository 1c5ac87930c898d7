//! The tower stack around [`App`]: a tracing span per request, load
//! shedding in front of a concurrency limit (excess requests get a 503
//! Status at once instead of queueing), and a request timeout (504 Status).

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::trace::TraceLayer;

use super::app::{overloaded, timed_out, App, Body};

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

pub type HttpService = BoxCloneService<Request<Incoming>, Response<Body>, Infallible>;

/// Builds the stack. Errors of the inner layers become Status responses, so
/// the service handed to hyper never fails.
pub fn build(app: App, config: StackConfig) -> HttpService {
    let inner = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(config.max_concurrent_requests)
        .timeout(config.request_timeout)
        .service(app);
    let mapped = inner.map_result(|r: Result<Response<Body>, BoxError>| match r {
        Ok(resp) => Ok(resp),
        Err(e) if e.is::<tower::load_shed::error::Overloaded>() => Ok(overloaded()),
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => Ok(timed_out()),
        Err(e) => {
            tracing::error!(error = %e, "request failed inside the stack");
            Ok(super::app::error_response(
                &crate::api::status::ApiError::internal("internal error"),
            ))
        }
    });
    let traced = ServiceBuilder::new()
        .layer(TraceLayer::new_for_http())
        .service(mapped);
    BoxCloneService::new(traced.map_response(|r: Response<_>| r))
}
