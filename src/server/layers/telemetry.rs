//! Request telemetry: `wva_http_requests` by route and status code and
//! `wva_http_request_duration_seconds` by route, for every answer that
//! routing named (answers refused before routing, such as 414, are not
//! counted). The metric handles of each (route, code) pair are looked up
//! in the registry's families once and kept, so that a request costs two
//! atomic updates, not label strings and a family lookup.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::routing::RouteName;
use super::Body;
use crate::telemetry::{RouteLabels, RouteOnly, Telemetry};

/// The handles of one route and status code.
#[derive(Clone)]
struct Handles {
    requests: Counter,
    duration: Histogram,
}

/// Metric handles by route and status code, filled on first use.
pub(crate) struct RequestMetrics {
    telemetry: Telemetry,
    handles: RwLock<HashMap<(&'static str, u16), Handles>>,
}

impl RequestMetrics {
    pub(crate) fn new(telemetry: Telemetry) -> Arc<Self> {
        Arc::new(RequestMetrics {
            telemetry,
            handles: RwLock::default(),
        })
    }

    /// Counts one answer of `route` with `code` that took `seconds`.
    pub(crate) fn record(&self, route: &'static str, code: u16, seconds: f64) {
        let key = (route, code);
        let known = self
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let handles = known.unwrap_or_else(|| {
            let t = &self.telemetry;
            let h = Handles {
                requests: t
                    .http_requests
                    .get_or_create(&RouteLabels {
                        route: route.to_owned(),
                        code: code.to_string(),
                    })
                    .clone(),
                duration: t
                    .http_duration
                    .get_or_create(&RouteOnly {
                        route: route.to_owned(),
                    })
                    .clone(),
            };
            self.handles
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, h.clone());
            h
        });
        handles.requests.inc();
        handles.duration.observe(seconds);
    }
}

/// The [`tower::Layer`] of [`RecordRequests`].
#[derive(Clone)]
pub(crate) struct TelemetryLayer(pub Arc<RequestMetrics>);

impl<S> tower::Layer<S> for TelemetryLayer {
    type Service = RecordRequests<S>;
    fn layer(&self, inner: S) -> RecordRequests<S> {
        RecordRequests {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// Counts and times each answer by its route.
#[derive(Clone)]
pub(crate) struct RecordRequests<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

pin_project_lite::pin_project! {
    /// An answer on its way, timed from the call.
    pub(crate) struct Recorded<F> {
        #[pin]
        inner: F,
        started: Instant,
        metrics: Arc<RequestMetrics>,
    }
}

impl<F, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(r) = &out {
            if let Some(RouteName(route)) = r.extensions().get::<RouteName>() {
                let seconds = this.started.elapsed().as_secs_f64();
                this.metrics.record(route, r.status().as_u16(), seconds);
            }
        }
        Poll::Ready(out)
    }
}

impl<S, B> tower::Service<Request<B>> for RecordRequests<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Recorded {
            started: Instant::now(),
            inner: self.inner.call(req),
            metrics: Arc::clone(&self.metrics),
        }
    }
}
