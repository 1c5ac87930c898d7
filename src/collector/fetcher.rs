//! The background fetch loop: the only caller of a [`MetricsBackend`]. It
//! runs a fetch cycle, records which models it reached, forgets what is too
//! old to keep, and waits for the next cycle: an adaptive gap (see
//! [`FetchSchedule`]), or sooner when the inventory changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::health::{rfc3339_seconds, Change};
use super::{CollectorError, CycleReport, FreshnessPolicy, MetricsBackend, MetricsCache};
use crate::inventory::{InventoryStore, ModelKey};

/// The shortest time between the starts of two cycles started early by an
/// inventory change.
pub(crate) const MIN_CYCLE_GAP: Duration = Duration::from_secs(1);

/// How long the fetcher waits between the starts of two cycles: at least
/// `floor`, and at least `cost_multiple` times what the last cycle took.
///
/// Small and medium fleets are fetched every `floor` (decisions within about
/// one floor of the data reaching the backend). A large fleet whose cycle
/// takes a while is not turned into back-to-back cycles: with the default
/// multiple of 5 the fetcher is busy at most a fifth of the time, and the
/// gap grows and shrinks with the fleet on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSchedule {
    pub(crate) floor: Duration,
    pub(crate) cost_multiple: u32,
}

impl FetchSchedule {
    /// The default multiple of the last cycle's duration.
    pub(crate) const DEFAULT_COST_MULTIPLE: u32 = 5;

    /// A schedule with `floor` and the default multiple.
    pub fn with_floor(floor: Duration) -> Self {
        FetchSchedule {
            floor,
            cost_multiple: Self::DEFAULT_COST_MULTIPLE,
        }
    }

    /// The gap between the start of a cycle that took `last` and the start
    /// of the next one.
    pub fn gap_after(&self, last: Duration) -> Duration {
        self.floor.max(last.saturating_mul(self.cost_multiple))
    }
}

/// Called after every cycle, for telemetry and status write-back.
pub(crate) type CycleHook = Box<dyn Fn(&CycleOutcome) + Send + Sync>;

/// What the hook learns about a cycle.
#[derive(Debug)]
pub struct CycleOutcome {
    pub(crate) result: Result<CycleReport, CollectorError>,
    /// How long the cycle took.
    pub(crate) duration: Duration,
    /// The gap until the next scheduled cycle.
    pub(crate) next_gap: Duration,
}

/// Drives a [`MetricsBackend`].
pub struct Fetcher {
    pub backend: Arc<dyn MetricsBackend>,
    pub cache: Arc<MetricsCache>,
    pub inventory: Arc<InventoryStore>,
    pub schedule: FetchSchedule,
    /// Entries older than `freshness.unavailable` are dropped.
    pub freshness: FreshnessPolicy,
    pub on_cycle: Option<CycleHook>,
}

impl Fetcher {
    /// Runs until `shutdown` is cancelled. An inventory change starts the
    /// next cycle early (a new model gets data without waiting a whole gap),
    /// but never sooner than [`MIN_CYCLE_GAP`] after the last start, so
    /// that a busy cluster cannot turn into a query storm.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut changes = self.inventory.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            // Changes seen before this cycle are covered by it.
            changes.borrow_and_update();
            // A cycle waiting on an unreachable backend is abandoned at
            // shutdown rather than waited for.
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.cycle() => outcome,
            };
            let duration = started.elapsed();
            // A cycle with failures spent its time waiting on an unreachable
            // backend or pod, not working: the next one starts after the
            // floor, so that what comes back is read again at once.
            let gap = match &outcome {
                Ok(report) if report.failures == 0 && report.retries == 0 => {
                    self.schedule.gap_after(duration)
                }
                _ => self.schedule.floor,
            };
            if let Some(hook) = &self.on_cycle {
                hook(&CycleOutcome {
                    result: outcome,
                    duration,
                    next_gap: gap,
                });
            }
            let next = started + gap;
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

    /// One cycle: fetch, record the models reached, then forget pods that
    /// no longer exist and samples older than the unavailable threshold.
    /// Entries of pods that exist but went silent are kept until then:
    /// their growing age is what turns the model's answer into a 503
    /// instead of a silent hold.
    pub async fn cycle(&self) -> Result<CycleReport, CollectorError> {
        // Read before the snapshot: a source publishes its snapshot before
        // it marks the store synced.
        let synced = self.inventory.is_synced();
        let snapshot = self.inventory.load();
        let backend = self.backend.name();
        let started = SystemTime::now();
        let outcome = self.backend.fetch_cycle(&snapshot, &self.cache).await;
        let health = self.cache.health();
        match &outcome {
            Ok(report) => {
                tracing::debug!(
                    backend,
                    updated = report.replicas_updated,
                    failures = report.failures,
                    rejected = report.samples_rejected,
                    requests = report.requests,
                    "fetch cycle done"
                );
                for (key, _) in snapshot.models() {
                    if !report.unreached_models.contains(key) {
                        self.cache.mark_fetched(key, started);
                    }
                }
                if let Change::Recovered { since } = health.source_answered() {
                    tracing::info!(
                        backend,
                        failing_since = %rfc3339_seconds(since),
                        "the metrics source answers again"
                    );
                }
            }
            // The backend records (and logs) what failed as it happens,
            // once per change; an error it did not record is recorded here.
            Err(e) => match health.source_failure() {
                Some(_) => tracing::debug!(backend, error = %e, "fetch cycle failed"),
                None => {
                    health.source_failed(
                        &format!("metrics backend {backend} failed"),
                        &e.to_string(),
                        started,
                    );
                    tracing::warn!(backend, error = %e, "fetch cycle failed; logged again when it succeeds or fails differently");
                }
            },
        }
        health.retain_models(|k| snapshot.has_model(k));
        let now = SystemTime::now();
        let unavailable = self.freshness.unavailable;
        self.cache
            .retain(|k, m| snapshot.has_pod_key(k) && m.age(now) <= unavailable);
        self.cache
            .retain_models(|k: &ModelKey| snapshot.has_model(k));
        // Readiness: a cycle over the synced inventory (one that ran before
        // the first sync reached no model) that reached the source: every
        // query answered, or some model's pods did (an inventory with
        // nothing to fetch counts too).
        let reached_something = match &outcome {
            Ok(report) => {
                report.unreached_models.is_empty()
                    || report.unreached_models.len() < snapshot.models().count()
            }
            Err(_) => false,
        };
        if synced && reached_something {
            health.mark_succeeded();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::ReplicaMetrics;
    use crate::inventory::pod_key;
    use crate::inventory::{resolve, InventorySnapshot};

    /// A backend that reaches nothing, or everything, without writing.
    struct Stub {
        unreached: bool,
        fail: bool,
    }

    #[async_trait::async_trait]
    impl MetricsBackend for Stub {
        fn name(&self) -> &'static str {
            "stub"
        }
        async fn fetch_cycle(
            &self,
            inventory: &InventorySnapshot,
            _cache: &MetricsCache,
        ) -> Result<CycleReport, CollectorError> {
            if self.fail {
                return Err(CollectorError::Unreachable {
                    backend: "stub",
                    message: "down".into(),
                });
            }
            let unreached_models = if self.unreached {
                inventory.models().map(|(k, _)| k.clone()).collect()
            } else {
                Vec::new()
            };
            Ok(CycleReport {
                unreached_models,
                ..CycleReport::default()
            })
        }
    }

    fn fetcher(stub: Stub) -> Fetcher {
        let yaml = "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: ns}\nspec:\n  scaleTargetRef: {kind: Deployment, name: d}\n  modelID: m\n  maxReplicas: 4\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: d, namespace: ns}\nspec: {replicas: 2, selector: {}, template: {}}\nstatus: {replicas: 2, readyReplicas: 2}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p0, namespace: ns, labels: {llm-d.ai/variant: v}}\nstatus: {podIP: 127.0.0.1, conditions: [{type: Ready, status: \"True\"}]}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p1, namespace: ns, labels: {llm-d.ai/variant: v}}\nstatus: {podIP: 127.0.0.1, conditions: [{type: Ready, status: \"True\"}]}\n";
        let objects =
            crate::inventory::file::parse_objects(std::path::Path::new("t"), yaml).unwrap();
        let inventory = Arc::new(InventoryStore::new());
        inventory.publish(resolve(&objects).0);
        Fetcher {
            backend: Arc::new(stub),
            cache: Arc::new(MetricsCache::new()),
            inventory,
            schedule: FetchSchedule::with_floor(Duration::from_secs(1)),
            freshness: FreshnessPolicy::default(),
            on_cycle: None,
        }
    }

    fn sample(age: Duration) -> ReplicaMetrics {
        ReplicaMetrics {
            model_name: "m".into(),
            kv_usage: 0.5,
            queue_waiting: 0.0,
            queue_waiting_latest: None,
            running: None,
            sampled_at: SystemTime::now() - age,
            request_rate: None,
            avg_prompt_tokens: None,
            avg_generation_tokens: None,
            avg_prefill_seconds: None,
            prefix_cache_hit_rate: None,
            kv_cache: None,
            activity: None,
        }
    }

    fn model() -> ModelKey {
        ModelKey {
            namespace: "ns".into(),
            model_id: "m".into(),
        }
    }

    #[tokio::test]
    async fn a_cycle_records_the_models_it_reached_and_drops_what_is_too_old() {
        let f = fetcher(Stub {
            unreached: false,
            fail: false,
        });
        f.cache
            .insert(pod_key("ns", "p0"), sample(Duration::from_secs(10)));
        f.cache
            .insert(pod_key("ns", "p1"), sample(Duration::from_secs(301)));
        f.cache
            .insert(pod_key("ns", "gone"), sample(Duration::ZERO));
        f.cycle().await.unwrap();
        assert!(f.cache.fetched_at(&model()).is_some(), "reached: recorded");
        assert!(f.cache.get("ns/p0").is_some(), "young entry kept");
        assert!(
            f.cache.get("ns/p1").is_none(),
            "older than unavailable: dropped"
        );
        assert!(f.cache.get("ns/gone").is_none(), "pod left the inventory");
        assert!(
            f.cache.health().has_succeeded(),
            "a cycle that reached the source"
        );
    }

    #[tokio::test]
    async fn unreached_and_failed_cycles_leave_no_fetch_record() {
        for stub in [
            Stub {
                unreached: true,
                fail: false,
            },
            Stub {
                unreached: false,
                fail: true,
            },
        ] {
            let failing = stub.fail;
            let f = fetcher(stub);
            let _ = f.cycle().await;
            assert_eq!(f.cache.fetched_at(&model()), None);
            // Not ready until a cycle reaches the source.
            assert!(!f.cache.health().has_succeeded());
            // A failed cycle the backend did not record is recorded here.
            assert_eq!(
                f.cache.health().source_failure().is_some(),
                failing,
                "{:?}",
                f.cache.health().source_failure()
            );
        }
    }

    #[test]
    fn gap_is_the_floor_or_a_multiple_of_the_last_cycle() {
        let s = FetchSchedule::with_floor(Duration::from_secs(1));
        let cases = [
            (0, 1000),
            (100, 1000),
            (200, 1000),
            (201, 1005),
            (350, 1750),
            (4000, 20000),
        ];
        for (last_ms, want_ms) in cases {
            assert_eq!(
                s.gap_after(Duration::from_millis(last_ms)),
                Duration::from_millis(want_ms),
                "last cycle {last_ms} ms"
            );
        }
    }

    #[test]
    fn a_huge_cycle_does_not_overflow() {
        let s = FetchSchedule::with_floor(Duration::from_secs(1));
        assert_eq!(s.gap_after(Duration::MAX), Duration::MAX);
    }
}
