//! Collects vLLM saturation signals per replica pod and keeps them in the
//! [`MetricsCache`] that the request path reads.
//!
//! A [`MetricsBackend`] (direct scrape, or Prometheus) runs fetch cycles in
//! the background, driven by the [`fetcher::Fetcher`]; it is the only part
//! of the server that talks to Prometheus or to pods. Handlers read the
//! cache and never wait on the network, whatever state the backend is in.

pub mod cache;
pub mod exposition;
pub mod fetcher;
pub(crate) mod freshness;
pub(crate) mod health;
pub mod prometheus;
pub(crate) mod sample;
pub mod scrape;
pub mod text_format;
pub(crate) mod window;

pub(crate) use cache::SchedulerQueues;
pub use cache::{Activity, MetricsCache, ReplicaMetrics};
pub use freshness::{Freshness, FreshnessPolicy};

use crate::inventory::{InventorySnapshot, ModelKey};

/// What one fetch cycle did, for logs and telemetry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleReport {
    /// Replicas whose metrics were updated.
    pub replicas_updated: usize,
    /// Targets (pods or queries) that failed this cycle.
    pub failures: usize,
    /// Samples rejected as out of range, NaN or infinite.
    pub samples_rejected: usize,
    /// Backend requests made (scrapes or PromQL queries).
    pub requests: usize,
    /// Requests retried after a transient failure. A cycle that retried
    /// spent its time waiting, not working: it does not stretch the gap.
    pub(crate) retries: usize,
    /// Models of the snapshot whose data source could not be reached this
    /// cycle (every ready pod's scrape failed). The fetcher records every
    /// other model of the snapshot as fetched.
    pub(crate) unreached_models: Vec<ModelKey>,
}

/// Why a fetch cycle failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("metrics backend {backend} is unreachable: {message}")]
    Unreachable {
        backend: &'static str,
        message: String,
    },
    #[error("metrics backend {backend} rejected the request: {message}")]
    Rejected {
        backend: &'static str,
        message: String,
    },
    #[error("metrics backend {backend} timed out after {seconds:.1}s")]
    Timeout { backend: &'static str, seconds: f64 },
    /// A setting of the backend that cannot work (a URL that is not one, a
    /// CA file that is not PEM): found before any request, exit code 2.
    #[error("{message}")]
    Configuration {
        backend: &'static str,
        message: String,
    },
}

/// A source of per-replica metrics.
#[async_trait::async_trait]
pub trait MetricsBackend: Send + Sync + 'static {
    /// Short name for logs and labels (`scrape`, `prometheus`).
    fn name(&self) -> &'static str;

    /// One fetch cycle for the ready pods of the inventory: writes what it
    /// learns into the cache. Pods it could not reach are left as they were,
    /// so their age grows and freshness rules take over.
    async fn fetch_cycle(
        &self,
        inventory: &InventorySnapshot,
        cache: &MetricsCache,
    ) -> Result<CycleReport, CollectorError>;
}
