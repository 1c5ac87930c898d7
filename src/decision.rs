//! Joins the inventory, the metrics cache and the analyzer: for the variants
//! a request selects, runs the saturation analysis of their whole model and
//! returns the desired replicas of each.
//!
//! The decision is a pure function of the published snapshot, the cached
//! metrics and the thresholds, so several server replicas given the same
//! inputs answer the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::api::quantity::desired_ratio_milli;
use crate::api::selector::LabelSelector;
use crate::collector::{FreshnessPolicy, MetricsBackend, MetricsCache};
use crate::inventory::{InventorySnapshot, InventoryStore, ModelKey, Variant};
use crate::saturation::{
    ModelAnalysis, ModelInput, ReplicaLoad, SaturationAnalyzer, TargetReason, ThresholdConfig,
    VariantState,
};

/// The decision for one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantDecision {
    pub variant: Arc<Variant>,
    pub desired: u32,
    /// Ready replicas of the scale target.
    pub ready: u32,
    /// desired / ready in milli units, rounded down (desired when ready is 0).
    pub ratio_milli: i64,
    pub reason: TargetReason,
}

/// The outcome of one model's analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutcome {
    pub key: ModelKey,
    /// None when no ready replica reported metrics (decisions hold).
    pub analysis: Option<ModelAnalysis>,
    /// Replicas whose metrics were used.
    pub replicas_used: usize,
    /// Age of the newest sample among the model's ready replicas.
    pub newest_sample_age: Option<Duration>,
    pub decisions: Vec<VariantDecision>,
}

/// Why no decision can be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("the variant inventory has not been loaded yet")]
    InventoryNotSynced,
    #[error("no variant in namespace {namespace:?} matches selector {selector:?}")]
    NoMatch { namespace: String, selector: String },
    #[error("scale target {kind} {namespace}/{name} of variant {variant:?} does not exist")]
    TargetMissing {
        namespace: String,
        variant: String,
        kind: String,
        name: String,
    },
    #[error("metrics of model {model_id:?} in namespace {namespace:?} are stale: the newest sample is {age_secs}s old (stale after {stale_secs}s)")]
    Stale {
        namespace: String,
        model_id: String,
        age_secs: u64,
        stale_secs: u64,
    },
}

/// Everything a decision needs, shared by the HTTP API and the KEDA scaler.
pub struct DecisionEngine {
    inventory: Arc<InventoryStore>,
    cache: Arc<MetricsCache>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    analyzer: Arc<dyn SaturationAnalyzer>,
    freshness: FreshnessPolicy,
    backend: Option<Arc<dyn MetricsBackend>>,
}

impl std::fmt::Debug for DecisionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionEngine")
            .field("analyzer", &self.analyzer.name())
            .field("freshness", &self.freshness)
            .finish()
    }
}

impl DecisionEngine {
    pub fn new(
        inventory: Arc<InventoryStore>,
        cache: Arc<MetricsCache>,
        thresholds: Arc<ArcSwap<ThresholdConfig>>,
        analyzer: Arc<dyn SaturationAnalyzer>,
        freshness: FreshnessPolicy,
    ) -> Self {
        DecisionEngine {
            inventory,
            cache,
            thresholds,
            analyzer,
            freshness,
            backend: None,
        }
    }

    /// Lets requests refresh expired per-model data through `backend`
    /// before deciding (single-flight, bounded by the backend's timeout).
    pub fn with_backend(mut self, backend: Arc<dyn MetricsBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    pub fn inventory(&self) -> &Arc<InventoryStore> {
        &self.inventory
    }

    pub fn cache(&self) -> &Arc<MetricsCache> {
        &self.cache
    }

    pub fn freshness(&self) -> FreshnessPolicy {
        self.freshness
    }

    /// Decisions for the variants of `namespace` that `selector` matches,
    /// in variant name order. Waits at most the backend's refresh timeout
    /// for expired per-model data; with a warm cache it does not wait.
    pub async fn decide(
        &self,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Result<Vec<VariantDecision>, DecisionError> {
        if !self.inventory.is_synced() {
            return Err(DecisionError::InventoryNotSynced);
        }
        let snapshot = self.inventory.load();
        let selected: Vec<&Arc<Variant>> = snapshot
            .variants_in(namespace)
            .filter(|v| selector.matches(&v.metric_labels))
            .collect();
        if selected.is_empty() {
            return Err(DecisionError::NoMatch {
                namespace: namespace.to_owned(),
                selector: selector.to_string(),
            });
        }
        if let Some(backend) = &self.backend {
            let mut keys: Vec<ModelKey> = selected
                .iter()
                .map(|v| ModelKey {
                    namespace: v.namespace.clone(),
                    model_id: v.model_id.clone(),
                })
                .collect();
            keys.sort();
            keys.dedup();
            let refreshes = keys
                .iter()
                .map(|k| backend.ensure_fresh(&snapshot, &self.cache, k));
            let limit = backend.refresh_timeout();
            if tokio::time::timeout(limit, futures::future::join_all(refreshes))
                .await
                .is_err()
            {
                tracing::warn!(namespace, ?limit, "metrics refresh did not finish in time; answering from the cache");
            }
        }
        self.decide_selected(&snapshot, &selected)
    }

    fn decide_selected(
        &self,
        snapshot: &InventorySnapshot,
        selected: &[&Arc<Variant>],
    ) -> Result<Vec<VariantDecision>, DecisionError> {
        let now = SystemTime::now();
        // Each model is analysed once, however many of its variants were selected.
        let mut outcomes: BTreeMap<ModelKey, ModelOutcome> = BTreeMap::new();
        let mut decisions = Vec::with_capacity(selected.len());
        let mut missing = None;
        for &v in selected {
            if v.target.is_none() {
                missing.get_or_insert_with(|| DecisionError::TargetMissing {
                    namespace: v.namespace.clone(),
                    variant: v.name.clone(),
                    kind: v.target_kind.clone(),
                    name: v.target_name.clone(),
                });
                continue;
            }
            let key = ModelKey {
                namespace: v.namespace.clone(),
                model_id: v.model_id.clone(),
            };
            if !outcomes.contains_key(&key) {
                let outcome = self.decide_model(snapshot, &key, now)?;
                outcomes.insert(key.clone(), outcome);
            }
            if let Some(d) = outcomes
                .get(&key)
                .and_then(|o| o.decisions.iter().find(|d| d.variant.name == v.name))
            {
                decisions.push(d.clone());
            }
        }
        match (decisions.is_empty(), missing) {
            (true, Some(err)) => Err(err),
            _ => Ok(decisions),
        }
    }

    /// Runs the analysis for one model over the metrics of its ready pods.
    pub fn decide_model(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
    ) -> Result<ModelOutcome, DecisionError> {
        let variants: Vec<&Arc<Variant>> = snapshot
            .model_variants(key)
            .filter(|v| v.target.is_some())
            .collect();
        let mut replicas = Vec::new();
        let mut newest: Option<Duration> = None;
        for pod in snapshot.model_pods(key).filter(|p| p.ready) {
            let Some((age, load)) = self.cache.with(&pod.key, |m| {
                (
                    m.age(now),
                    ReplicaLoad {
                        pod: pod.name.clone(),
                        variant: pod.variant.clone(),
                        kv: m.kv_usage,
                        queue: m.queue_waiting,
                    },
                )
            }) else {
                continue;
            };
            newest = Some(newest.map_or(age, |n| n.min(age)));
            // A replica whose newest sample is stale no longer steers decisions.
            if age <= self.freshness.stale {
                replicas.push(load);
            }
        }
        if replicas.is_empty() {
            if let Some(age) = newest {
                return Err(DecisionError::Stale {
                    namespace: key.namespace.clone(),
                    model_id: key.model_id.clone(),
                    age_secs: age.as_secs(),
                    stale_secs: self.freshness.stale.as_secs(),
                });
            }
        }
        let thresholds = self
            .thresholds
            .load()
            .for_model(&key.model_id, &key.namespace);
        let states: Vec<VariantState> = variants
            .iter()
            .map(|v| {
                let t = v.target.unwrap_or_default();
                VariantState {
                    name: v.name.clone(),
                    cost: v.cost,
                    min_replicas: v.min_replicas,
                    max_replicas: v.max_replicas,
                    spec_replicas: t.spec_replicas,
                    ready_replicas: t.ready_replicas,
                }
            })
            .collect();
        let decision = self.analyzer.decide(&ModelInput {
            replicas: &replicas,
            variants: &states,
            thresholds: &thresholds,
        });
        let decisions = variants
            .iter()
            .zip(decision.targets)
            .map(|(v, t)| {
                let ready = v.ready_replicas();
                VariantDecision {
                    variant: Arc::clone(v),
                    desired: t.desired,
                    ready,
                    ratio_milli: desired_ratio_milli(t.desired, ready),
                    reason: t.reason,
                }
            })
            .collect();
        Ok(ModelOutcome {
            key: key.clone(),
            analysis: decision.analysis,
            replicas_used: replicas.len(),
            newest_sample_age: newest,
            decisions,
        })
    }

    /// Decisions for every model of the current snapshot, for telemetry and
    /// status write-back. Stale models are returned as errors.
    pub fn decide_all(&self) -> Vec<Result<ModelOutcome, DecisionError>> {
        let snapshot = self.inventory.load();
        let now = SystemTime::now();
        let mut keys: Vec<&ModelKey> = snapshot.models().map(|(k, _)| k).collect();
        keys.sort();
        keys.into_iter()
            .map(|k| self.decide_model(&snapshot, k, now))
            .collect()
    }
}
