//! The `externalscaler.ExternalScaler` service over the decision core the
//! HTTP API uses: no second analysis path.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::metadata::{self, KedaMetric, ScalerQuery};
use super::proto::external_scaler_server::ExternalScaler;
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::decision::{DecisionEngine, DecisionError};

/// How often `StreamIsActive` re-evaluates the decision.
pub(crate) const STREAM_POLL: Duration = Duration::from_millis(500);
/// `StreamIsActive` repeats the current value at least this often, so that
/// KEDA (and proxies between) see the stream is alive.
pub(crate) const STREAM_KEEPALIVE: Duration = Duration::from_secs(10);

/// The decision for a trigger, summed over the variants it selects (as the
/// HPA sums the items of an external metric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TriggerValue {
    pub(crate) desired_replicas: u32,
    pub(crate) value: f64,
}

/// KEDA's external scaler.
#[derive(Clone)]
pub(crate) struct KedaScaler {
    engine: Arc<DecisionEngine>,
    shutdown: CancellationToken,
}

impl KedaScaler {
    pub(crate) fn new(engine: Arc<DecisionEngine>, shutdown: CancellationToken) -> Self {
        KedaScaler { engine, shutdown }
    }

    /// The current value of a trigger, or the gRPC status that explains why not.
    pub(crate) async fn evaluate(&self, query: &ScalerQuery) -> Result<TriggerValue, Status> {
        let decisions = self
            .engine
            .decide(&query.namespace, &query.selector)
            .map_err(|e| status_of(e, query))?;
        let desired: u32 = decisions.iter().map(|d| d.desired).sum();
        let value = match query.metric {
            KedaMetric::DesiredReplicas => f64::from(desired),
            KedaMetric::DesiredRatio => decisions
                .iter()
                .map(|d| d.ratio_milli as f64 / 1000.0)
                .sum(),
        };
        Ok(TriggerValue {
            desired_replicas: desired,
            value,
        })
    }
}

fn query_of(r: &ScaledObjectRef) -> Result<ScalerQuery, Status> {
    metadata::parse(&r.namespace, &r.scaler_metadata).map_err(|e| {
        let message = format!("ScaledObject {}/{}: {e}", r.namespace, r.name);
        match e {
            metadata::MetadataError::Invalid(_) => Status::invalid_argument(message),
            metadata::MetadataError::OtherNamespace(_) => Status::permission_denied(message),
        }
    })
}

fn status_of(e: DecisionError, q: &ScalerQuery) -> Status {
    match e {
        DecisionError::NoMatch { .. } => Status::not_found(format!(
            "no {} in namespace {:?}: no VariantAutoscaling or annotated scaler by that name",
            q.subject, q.namespace
        )),
        DecisionError::TargetMissing { .. } => Status::not_found(e.to_string()),
        _ if e.is_unavailable() => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

type ActiveStream = Pin<Box<dyn futures::Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let query = query_of(request.get_ref())?;
        let v = self.evaluate(&query).await?;
        Ok(Response::new(IsActiveResponse {
            result: v.desired_replicas > 0,
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// Sends the activity at once, then on every change (checked every
    /// [`STREAM_POLL`]) and at least every [`STREAM_KEEPALIVE`]. Ends when
    /// the client goes away or the server shuts down; an error (variant
    /// deleted, metrics stale) is sent and ends the stream, and KEDA
    /// reconnects.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let query = query_of(request.get_ref())?;
        let first = self.evaluate(&query).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let scaler = self.clone();
        tokio::spawn(async move {
            let mut last = first.desired_replicas > 0;
            let mut last_sent = tokio::time::Instant::now();
            if tx
                .send(Ok(IsActiveResponse { result: last }))
                .await
                .is_err()
            {
                return;
            }
            let mut tick = tokio::time::interval(STREAM_POLL);
            loop {
                tokio::select! {
                    _ = scaler.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let active = match scaler.evaluate(&query).await {
                    Ok(v) => v.desired_replicas > 0,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                if active != last || last_sent.elapsed() >= STREAM_KEEPALIVE {
                    if tx
                        .send(Ok(IsActiveResponse { result: active }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last = active;
                    last_sent = tokio::time::Instant::now();
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Target 1: KEDA builds an `AverageValue` HPA whose result for
    /// `desiredReplicas` is exactly the desired count (and for
    /// `desiredRatio`, a ratio of 1 holds).
    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let query = query_of(request.get_ref())?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: query.metric.name().to_owned(),
                target_size: 1,
                target_size_float: 1.0,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let req = request.get_ref();
        let object = req
            .scaled_object_ref
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("GetMetricsRequest has no scaledObjectRef"))?;
        let query = query_of(object)?;
        let v = self.evaluate(&query).await?;
        let name = if req.metric_name.is_empty() {
            query.metric.name().to_owned()
        } else {
            req.metric_name.clone()
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                // The integer field rounds down; KEDA reads the float field when set.
                metric_value: v.value.floor() as i64,
                metric_value_float: v.value,
            }],
        }))
    }
}
