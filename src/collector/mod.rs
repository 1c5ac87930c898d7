//! Collects vLLM saturation signals per replica pod and keeps them in the
//! [`MetricsCache`] that the request path reads.
//!
//! A [`MetricsBackend`] (direct scrape, or Prometheus) runs fetch cycles in
//! the background; handlers never wait on the network when the cache is warm.

pub mod cache;
pub mod exposition;
pub mod fetcher;
pub mod freshness;
pub mod prometheus;
pub mod sample;
pub mod scrape;
pub mod window;

pub use cache::{pod_key, MetricsCache, PodKey, ReplicaMetrics};
pub use freshness::{Freshness, FreshnessPolicy};
pub use sample::{RejectReason, SampleCheck, Signal};

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

    /// Called on the request path before a model is analysed: a backend
    /// whose per-model data can expire refreshes it here (once for all
    /// concurrent callers). The caller bounds the wait. Backends that keep
    /// the cache warm on their own need not do anything.
    async fn ensure_fresh(
        &self,
        _inventory: &InventorySnapshot,
        _cache: &MetricsCache,
        _key: &ModelKey,
    ) {
    }

    /// How long a request may wait in [`MetricsBackend::ensure_fresh`].
    fn refresh_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }
}
