//! The per-replica metrics the request path reads.

use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use crate::inventory::{ModelKey, PodKey};

/// The saturation signals of one replica: peaks over the last minute.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaMetrics {
    /// `model_name` as the replica reports it.
    pub model_name: std::sync::Arc<str>,
    /// Peak KV-cache usage in [0, 1].
    pub kv_usage: f64,
    /// Peak number of waiting requests.
    pub queue_waiting: f64,
    /// Number of waiting requests in the newest sample, when known.
    pub queue_waiting_latest: Option<f64>,
    /// Latest number of running requests, when known.
    pub running: Option<f64>,
    /// Time of the newest accepted sample.
    pub sampled_at: SystemTime,
    /// Finished requests per second, when the backend knows it.
    pub request_rate: Option<f64>,
    /// Mean prompt tokens per request over the last minute, when known.
    pub avg_prompt_tokens: Option<f64>,
    /// Mean generated tokens per request over the last minute, when known.
    pub avg_generation_tokens: Option<f64>,
    /// Mean seconds of prefill per request over the last minute
    /// (`vllm:request_prefill_time_seconds`), when known.
    pub avg_prefill_seconds: Option<f64>,
    /// Prefix-cache hits / queries over the last minute, in [0, 1], when known.
    pub prefix_cache_hit_rate: Option<f64>,
    /// `vllm:cache_config_info`'s `num_gpu_blocks` and `block_size`, when
    /// the replica exports them (the token-based analysis needs them).
    pub kv_cache: Option<crate::saturation::v2::KvCacheConfig>,
    /// Requests completed over the model's scale-to-zero retention period
    /// plus requests running, when scale to zero is on for the model and
    /// the replica's counter history covers the period.
    pub activity: Option<Activity>,
}

/// What a replica did over a scale-to-zero retention period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activity {
    /// The retention period the count covers.
    pub(crate) window: Duration,
    /// `vllm:request_success_total`'s increase over `window` plus the
    /// requests running (their peak over the last minute with Prometheus,
    /// the latest scrape's count with the scrape backend).
    pub(crate) requests: f64,
}

/// The llm-d endpoint picker's flow-control queues, per model
/// (`target_model_name`, or `model_name` where that is empty), as fetched
/// by one cycle. A model absent from the map has nothing queued.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SchedulerQueues {
    pub(crate) by_model: std::collections::HashMap<String, crate::saturation::v2::SchedulerQueue>,
    /// When the cycle that read them started.
    pub(crate) at: SystemTime,
}

impl ReplicaMetrics {
    /// Age of the newest sample at `now` (zero if the clock went backwards).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.sampled_at).unwrap_or_default()
    }
}

/// Concurrent map from pod key to its latest metrics. Backends write, the
/// decision path reads; a read clones nothing but the entry it needs.
#[derive(Debug, Default)]
pub struct MetricsCache {
    /// Probed once per pod per cycle and per analysed replica per request:
    /// a fast hash (keys are pod names from the cluster, not attacker
    /// controlled request input).
    ///
    /// Values are boxed: a hash table keeps a quarter or more of its slots
    /// empty, and an empty slot of a ~200-byte value was ~6 MB at 100,000
    /// pods; a box is replaced in place on every update.
    replicas: DashMap<PodKey, Box<ReplicaMetrics>, foldhash::fast::RandomState>,
    /// When a fetch cycle last reached each model's data source. Tells a
    /// model that has not been fetched yet (503) from one whose replicas
    /// report nothing (hold), and dates the data of a model whose backend
    /// has been failing.
    fetched: DashMap<ModelKey, SystemTime, foldhash::fast::RandomState>,
    /// The endpoint picker's queues as last fetched (None: no source, or
    /// not fetched yet).
    scheduler: arc_swap::ArcSwapOption<SchedulerQueues>,
    /// Counts the changes: bumped after every write, so that a value read
    /// before a computation tells whether its inputs changed since
    /// (`server::answers`).
    generation: std::sync::atomic::AtomicU64,
    /// Whether the source answers, and why not (answers, `/readyz`).
    health: super::health::FetchHealth,
}

impl MetricsCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the fetcher knows about the source's health.
    pub(crate) fn health(&self) -> &super::health::FetchHealth {
        &self.health
    }

    /// The metrics of one pod, if any were ever accepted.
    pub fn get(&self, key: &str) -> Option<ReplicaMetrics> {
        self.replicas.get(key).map(|e| (**e.value()).clone())
    }

    /// Runs `f` on the pod's entry without cloning it.
    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&ReplicaMetrics) -> R) -> Option<R> {
        self.replicas.get(key).map(|e| f(e.value()))
    }

    /// Stores the metrics of one pod.
    pub fn insert(&self, key: PodKey, metrics: ReplicaMetrics) {
        self.replicas.insert(key, Box::new(metrics));
        self.changed();
    }

    /// Stores the metrics of one pod, overwriting an existing entry in
    /// place: the common case every cycle, and then no key is copied.
    pub(crate) fn upsert(&self, key: &str, metrics: ReplicaMetrics) {
        match self.replicas.get_mut(key) {
            Some(mut entry) => **entry = metrics,
            None => {
                self.replicas.insert(key.to_owned(), Box::new(metrics));
            }
        }
        self.changed();
    }

    /// Drops the entries for which `keep` returns false (pods that no
    /// longer exist, or whose newest sample is too old to be kept).
    pub(crate) fn retain(&self, keep: impl Fn(&str, &ReplicaMetrics) -> bool) {
        self.replicas.retain(|k, m| keep(k.as_str(), m));
        self.changed();
    }

    /// Records that a fetch cycle started at `at` reached the data source
    /// of `model`.
    pub(crate) fn mark_fetched(&self, model: &ModelKey, at: SystemTime) {
        match self.fetched.get_mut(model) {
            Some(mut t) => *t = at,
            None => {
                self.fetched.insert(model.clone(), at);
            }
        }
        self.changed();
    }

    /// When a fetch cycle last reached the data source of `model`.
    pub(crate) fn fetched_at(&self, model: &ModelKey) -> Option<SystemTime> {
        self.fetched.get(model).map(|t| *t)
    }

    /// Forgets the fetch records of models for which `keep` returns false.
    pub(crate) fn retain_models(&self, keep: impl Fn(&ModelKey) -> bool) {
        self.fetched.retain(|k, _| keep(k));
        self.changed();
    }

    /// Replaces the endpoint picker's queues with those of a cycle.
    pub(crate) fn set_scheduler_queues(&self, queues: SchedulerQueues) {
        self.scheduler.store(Some(std::sync::Arc::new(queues)));
        self.changed();
    }

    /// The queue of `model_id` in the endpoint picker, if queues were
    /// fetched at or after `not_before` (an absent model has nothing queued).
    pub(crate) fn scheduler_queue(
        &self,
        model_id: &str,
        not_before: SystemTime,
    ) -> Option<crate::saturation::v2::SchedulerQueue> {
        let q = self.scheduler.load();
        let q = q.as_ref().filter(|q| q.at >= not_before)?;
        Some(q.by_model.get(model_id).copied().unwrap_or_default())
    }

    /// When the endpoint picker's queues were read (None before the first
    /// read): a decision that used them holds until they turn stale.
    pub(crate) fn scheduler_queues_at(&self) -> Option<SystemTime> {
        self.scheduler.load().as_ref().map(|q| q.at)
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The number of changes so far (see the field).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}
