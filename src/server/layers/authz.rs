//! Authorization: may the authenticated user make this request? Values
//! requests are `list` on the metric as a resource in the namespace,
//! custom metrics `get` on the described object's metric subresource,
//! everything else a non-resource `get` on the path (see
//! [`crate::server::auth::authz::attributes`]); `system:masters` is allowed
//! without asking, anyone else through a cached SubjectAccessReview. A
//! denial is answered 403 here.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response};

use super::errors::error_response;
use super::{Body, BoxResponseFuture};
use crate::api::router::ApiRequest;
use crate::k8s::status::ApiError;
use crate::kube_client::rate_limit::Priority;
use crate::server::auth::authn::UserInfo;
use crate::server::auth::{authz, Auth, Proof};

/// The [`tower::Layer`] of [`Authorize`]; None disables authorization.
#[derive(Clone)]
pub(crate) struct AuthzLayer(pub Option<Arc<Auth>>);

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authorize<S>;
    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// Lets allowed requests through, answers the others 403.
#[derive(Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

/// What the request asks, from the request the routing layer parsed and
/// its path as sent.
fn attributes(head: &http::request::Parts) -> Result<authz::Attributes, ApiError> {
    let request = head
        .extensions
        .get::<ApiRequest>()
        .ok_or_else(|| ApiError::internal("authorization before routing"))?;
    Ok(authz::attributes(request, head.uri.path()))
}

impl<S, B> tower::Service<Request<B>> for Authorize<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxResponseFuture<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let auth = match &self.auth {
            Some(auth) if !auth.always_allowed(req.uri().path()) => Arc::clone(auth),
            _ => return Either::Left(self.inner.call(req)),
        };
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Either::Right(Box::pin(async move {
            // Only the head is held across the wait: the body need not be Sync.
            let (head, body) = req.into_parts();
            let Some(user) = head.extensions.get::<UserInfo>() else {
                return Ok(error_response(&ApiError::internal(
                    "authorization without an authenticated user",
                )));
            };
            // A user without a proof was made by a layer that did not say
            // how: its reviews get the lowest priority.
            let proof = head
                .extensions
                .get::<Proof>()
                .copied()
                .unwrap_or(Proof(Priority::Unverified));
            let decided = match attributes(&head) {
                Ok(attrs) => auth.authorize(user, proof, &attrs).await,
                Err(e) => Err(e),
            };
            match decided {
                Ok(()) => inner.call(Request::from_parts(head, body)).await,
                Err(e) => Ok(error_response(&e)),
            }
        }))
    }
}
