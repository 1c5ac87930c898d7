//! The background fetch loop: runs the backend's fetch cycle every interval
//! (and right away when the inventory changes), so that the request path
//! finds the cache warm.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{CollectorError, CycleReport, MetricsBackend, MetricsCache};
use crate::inventory::InventoryStore;

/// The shortest time between the starts of two cycles.
pub const MIN_CYCLE_GAP: Duration = Duration::from_secs(1);

/// Called after every cycle, for telemetry and status write-back.
pub type CycleHook = Box<dyn Fn() + Send + Sync>;

/// Drives a [`MetricsBackend`].
pub struct Fetcher {
    pub backend: Arc<dyn MetricsBackend>,
    pub cache: Arc<MetricsCache>,
    pub inventory: Arc<InventoryStore>,
    pub interval: Duration,
    /// Set after the first cycle, successful or not: readiness must not wait
    /// on the metrics backend, or an outage would take discovery down too.
    pub first_cycle_done: Arc<AtomicBool>,
    pub on_cycle: Option<CycleHook>,
}

impl Fetcher {
    /// Runs until `shutdown` is cancelled. An inventory change starts the
    /// next cycle early (new pods get metrics without waiting a whole
    /// interval), but never sooner than [`MIN_CYCLE_GAP`] after the last
    /// one, so that a busy cluster cannot turn into a query storm.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.inventory.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            // Failures are logged in the cycle; the loop goes on.
            let _ = self.cycle().await;
            let next = started + self.interval;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => continue,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            let earliest = (started + MIN_CYCLE_GAP).min(next);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(earliest) => {}
            }
        }
    }

    /// One cycle: fetch, then forget pods that no longer exist. Entries of
    /// pods that exist but went silent are kept: their growing age is what
    /// turns the model's answer into a 503 instead of a silent hold.
    pub async fn cycle(&self) -> Result<CycleReport, CollectorError> {
        let snapshot = self.inventory.load();
        let backend = self.backend.name();
        let outcome = self.backend.fetch_cycle(&snapshot, &self.cache).await;
        match &outcome {
            Ok(report) => tracing::debug!(
                backend,
                updated = report.replicas_updated,
                failures = report.failures,
                rejected = report.samples_rejected,
                requests = report.requests,
                "fetch cycle done"
            ),
            Err(e) => tracing::warn!(backend, error = %e, "fetch cycle failed"),
        }
        self.cache.retain(|k| snapshot.has_pod_key(k));
        self.first_cycle_done.store(true, Ordering::Release);
        if let Some(hook) = &self.on_cycle {
            hook();
        }
        outcome
    }
}
