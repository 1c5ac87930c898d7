//! Counts KEDA's calls (`wva_keda_requests_total` by method and gRPC code)
//! around the scaler, so that the dashboard and alerts see KEDA's traffic
//! and its errors as they see the HPA's on the HTTPS port.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::{Request, Response, Status};

use super::proto::external_scaler_server::ExternalScaler;
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};
use super::service::KedaScaler;
use crate::telemetry::KedaCallLabels;

/// The scaler with every call counted. `StreamIsActive` counts the opening
/// of the stream (its first answer or its refusal).
pub(crate) struct CountedScaler {
    inner: KedaScaler,
    calls: Family<KedaCallLabels, Counter>,
}

impl CountedScaler {
    pub(crate) fn new(inner: KedaScaler, calls: Family<KedaCallLabels, Counter>) -> Self {
        CountedScaler { inner, calls }
    }

    fn count<T>(&self, method: &str, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.calls
            .get_or_create(&KedaCallLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
    }
}

#[tonic::async_trait]
impl ExternalScaler for CountedScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let result = self.inner.is_active(request).await;
        self.count("IsActive", &result);
        result
    }

    type StreamIsActiveStream = <KedaScaler as ExternalScaler>::StreamIsActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let result = self.inner.stream_is_active(request).await;
        self.count("StreamIsActive", &result);
        result
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let result = self.inner.get_metric_spec(request).await;
        self.count("GetMetricSpec", &result);
        result
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let result = self.inner.get_metrics(request).await;
        self.count("GetMetrics", &result);
        result
    }
}
