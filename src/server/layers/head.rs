//! HEAD: the answer a GET would get, without its body. The router accepts
//! HEAD wherever it accepts GET; this layer drops the body on the way out,
//! whichever layer made the answer.

use std::task::{Context, Poll};

use futures::future::{Either, Map};
use futures::FutureExt;
use http::{Method, Request, Response};

use super::Body;

/// The [`tower::Layer`] of [`Head`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadLayer;

impl<S> tower::Layer<S> for HeadLayer {
    type Service = Head<S>;
    fn layer(&self, inner: S) -> Head<S> {
        Head { inner }
    }
}

/// Answers HEAD requests with the head of the GET answer.
#[derive(Debug, Clone)]
pub(crate) struct Head<S> {
    inner: S,
}

/// Drops the body of an answer, keeping its head.
pub(crate) fn without_body<E>(r: Result<Response<Body>, E>) -> Result<Response<Body>, E> {
    r.map(|response| {
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Body::default())
    })
}

type Bodiless<F, E> = Map<F, fn(Result<Response<Body>, E>) -> Result<Response<Body>, E>>;

impl<S, B> tower::Service<Request<B>> for Head<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Bodiless<S::Future, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.method() == Method::HEAD {
            Either::Right(self.inner.call(req).map(without_body as fn(_) -> _))
        } else {
            Either::Left(self.inner.call(req))
        }
    }
}
