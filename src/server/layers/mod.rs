//! The layers of the request path, one concern per file, composed in
//! [`super::stack`] (outermost first):
//!
//! | layer | file | what it does |
//! | --- | --- | --- |
//! | trace | [`trace`] | a span per request; failures logged with method and path |
//! | HEAD | [`head`] | a HEAD request gets the GET answer's head, no body |
//! | errors as Status | [`errors`] | errors of the layers below become `metav1.Status` answers |
//! | limits | [`limits`] | load shedding, concurrency limit, request timeout, URI length |
//! | telemetry | [`telemetry`] | `wva_http_requests` and `wva_http_request_duration_seconds` per route |
//! | routing | [`routing`] | decodes the path and parses the request once into an [`ApiRequest`](crate::api::router::ApiRequest) in its extensions, 404/405 |
//! | authentication | [`authn`] | who is asking (front proxy, client certificate, bearer token) |
//! | authorization | [`authz`] | may they (SubjectAccessReview) |
//!
//! Below them, [`super::app::App`] runs the route's handler.

pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod errors;
pub(crate) mod head;
pub(crate) mod limits;
pub(crate) mod routing;
pub(crate) mod telemetry;
pub(crate) mod trace;

use bytes::Bytes;
use http_body_util::Full;

/// The body of every answer: the whole answer is in memory.
pub(crate) type Body = Full<Bytes>;

/// The future of a layer that either answers at once or waits on the layer below.
pub(crate) type BoxResponseFuture<E> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Body>, E>> + Send + 'static>,
>;
