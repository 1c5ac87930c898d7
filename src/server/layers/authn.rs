//! Authentication: who is asking, as Kubernetes' delegated authentication
//! decides it (front proxy, client certificate, bearer token; see
//! [`crate::server::auth::Auth::authenticate`]). The user travels to the
//! authorization layer as a request extension; a request whose credential
//! is rejected is answered 401 here. Paths in `--authorization-always-allow-paths`
//! (the health checks) and servers started with `--insecure-disable-auth`
//! pass through untouched.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use http::{Request, Response};

use super::errors::error_response;
use super::{Body, BoxResponseFuture};
use crate::server::auth::{Auth, PeerCertificates};

/// The [`tower::Layer`] of [`Authenticate`]; None disables authentication.
#[derive(Clone)]
pub(crate) struct AuthnLayer(pub Option<Arc<Auth>>);

impl<S> tower::Layer<S> for AuthnLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// Attaches the user of each request, or answers 401.
#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    auth: Option<Arc<Auth>>,
}

impl<S, B> tower::Service<Request<B>> for Authenticate<S>
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
        // The service made ready by poll_ready goes into the future; this
        // one keeps a fresh clone (the usual tower pattern).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Either::Right(Box::pin(async move {
            // Only the head is held across the wait: the body need not be Sync.
            let (mut head, body) = req.into_parts();
            let user = auth
                .authenticate(&head.headers, head.extensions.get::<PeerCertificates>())
                .await;
            match user {
                Ok((user, proof)) => {
                    head.extensions.insert(user);
                    head.extensions.insert(proof);
                    inner.call(Request::from_parts(head, body)).await
                }
                Err(e) => Ok(error_response(&e)),
            }
        }))
    }
}
