//! Joins the inventory, the metrics cache and the analysis: for the
//! variants a request selects, the desired replicas of each, from an
//! analysis of their whole model.
//!
//! Decisions are made from memory only (the published inventory snapshot,
//! the metrics cache the background fetcher fills, the configurations in
//! force): the engine has no handle to a metrics backend. They are not a
//! pure function of those: V2 and slo keep history per model (V2's
//! capacity history, slo's observed rates), so deciding a model again
//! advances that history. That is why every model is decided once per
//! fetch cycle by a sweep ([`sweep`]), whose outcomes telemetry, the
//! status write-back and the request path read; a request decides on
//! demand only what the sweep cannot answer.
//!
//! - `inputs`: a model's inputs from the snapshot and the cache;
//! - `analysis`: the analysis the thresholds select, then the last steps;
//! - `limiter`: the fleet's accelerator allotment (`enableLimiter`);
//! - `sweep`: the sweep, its counters, answers from it;
//! - `publish`: the sweep's gauges and counters on `/metrics`.

mod allotment;
mod analysis;
mod counters;
mod errors;
mod inputs;
mod limiter;
pub(crate) mod publish;
mod sweep;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};

pub(crate) use crate::saturation::analyzers::Analysis;
pub(crate) use counters::DecisionCounters;
pub(crate) use errors::DecisionError;
pub(crate) use sweep::Sweep;

use crate::collector::{Freshness, FreshnessPolicy, MetricsCache};
use crate::hpa::Tolerances;
use crate::inventory::accelerators::AcceleratorInventory;
use crate::inventory::snapshot::labels;
use crate::inventory::{InventorySnapshot, InventoryStore, ModelKey, ReplicaPod, Variant};
use crate::k8s::selector::LabelSelector;
use crate::saturation::analyzers::Analyzers;
use crate::saturation::scale_to_zero::ZeroAction;
use crate::saturation::slo::{MissingSignal, ServiceClasses};
use crate::saturation::{SaturationAnalyzer, ScaleToZeroConfig, TargetReason, ThresholdConfig};

/// The decision for one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantDecision {
    pub(crate) variant: Arc<Variant>,
    pub desired: u32,
    /// Ready replicas of the scale target.
    pub ready: u32,
    /// desired / ready in milli units, rounded down (desired when ready is 0).
    pub(crate) ratio_milli: i64,
    pub reason: TargetReason,
    /// Which analysis decided ("saturation-v1" or "saturation-v2").
    pub(crate) analyzer: &'static str,
}

/// The outcome of one model's analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutcome {
    pub(crate) key: ModelKey,
    /// What the analysis that decided found; None when no ready replica
    /// reported the metrics it needs (decisions hold).
    pub(crate) analysis: Option<Analysis>,
    /// Which analysis decided.
    pub(crate) analyzer: &'static str,
    /// `analyzerName: slo` could not size the model: the signal it missed
    /// (the analysis named in `analyzer` decided instead).
    pub(crate) slo_fallback: Option<MissingSignal>,
    /// Replicas whose metrics were used.
    pub(crate) replicas_used: usize,
    /// Age of the newest sample among the model's ready replicas.
    pub(crate) newest_sample_age: Option<Duration>,
    /// Freshness class of that newest sample (None without samples).
    pub(crate) freshness: Option<Freshness>,
    pub decisions: Vec<VariantDecision>,
    /// What scale to zero / from zero did to the analysis' targets.
    pub(crate) zero_action: ZeroAction,
    /// Until when the outcome stays the decision with only time passing:
    /// when the first sample it used turns stale.
    pub(crate) valid_until: SystemTime,
}

impl ModelOutcome {
    /// Whether the analysis had metrics to decide from (else it held).
    pub(crate) fn has_metrics(&self) -> bool {
        self.analysis.is_some()
    }
}

/// Everything a decision needs, shared by the HTTP API and the KEDA scaler.
pub struct DecisionEngine {
    inventory: Arc<InventoryStore>,
    cache: Arc<MetricsCache>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    /// The analyses (V1, V2, slo), with V2's and slo's history.
    analyzers: Analyzers,
    /// Upstream's service classes: the objectives per model.
    service_classes: Arc<ArcSwap<ServiceClasses>>,
    /// Accelerators for `enableLimiter`; without one, limited models are
    /// not capped (and say so in the log).
    accelerators: Option<Arc<dyn AcceleratorInventory>>,
    /// `--limiter-on-v2`: `enableLimiter` of a V2 model's own entry caps
    /// its scale-ups too (an extension; upstream limits the V1 path only).
    v2_limiter: bool,
    freshness: FreshnessPolicy,
    /// The HPA controller's tolerance (`--hpa-tolerance`), for variants
    /// whose HPA sets none of its own.
    hpa_tolerance: Tolerances,
    /// `wva-model-scale-to-zero-config` (and `WVA_SCALE_TO_ZERO`).
    scale_to_zero: Arc<ArcSwap<ScaleToZeroConfig>>,
    /// The last fleet sweep.
    sweep: ArcSwapOption<Sweep>,
    counters: DecisionCounters,
}

impl std::fmt::Debug for DecisionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionEngine")
            .field("analyzers", &self.analyzers)
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
            analyzers: Analyzers::new(analyzer),
            service_classes: Arc::default(),
            accelerators: None,
            v2_limiter: false,
            freshness,
            hpa_tolerance: Tolerances::default(),
            scale_to_zero: Arc::default(),
            sweep: ArcSwapOption::empty(),
            counters: DecisionCounters::default(),
        }
    }

    /// The service classes in force (upstream's
    /// `<release>-workload-variant-autoscaler-service-classes-config`).
    pub(crate) fn with_service_classes(mut self, classes: Arc<ArcSwap<ServiceClasses>>) -> Self {
        self.service_classes = classes;
        self
    }

    /// The scale-to-zero configuration in force (shared with the collector).
    pub(crate) fn with_scale_to_zero(mut self, config: Arc<ArcSwap<ScaleToZeroConfig>>) -> Self {
        self.scale_to_zero = config;
        self
    }

    /// The thresholds in force (replaced as a whole on a ConfigMap change).
    pub(crate) fn thresholds(&self) -> &Arc<ArcSwap<ThresholdConfig>> {
        &self.thresholds
    }

    pub(crate) fn scale_to_zero(&self) -> &Arc<ArcSwap<ScaleToZeroConfig>> {
        &self.scale_to_zero
    }

    /// Where the limiter (`enableLimiter: true`) reads free accelerators.
    /// Applies `enableLimiter` to V2 models too, per model and namespace
    /// entry (`--limiter-on-v2`, an extension of upstream).
    pub(crate) fn with_v2_limiter(mut self, on: bool) -> Self {
        self.v2_limiter = on;
        self
    }

    pub fn with_accelerators(mut self, accelerators: Arc<dyn AcceleratorInventory>) -> Self {
        self.accelerators = Some(accelerators);
        self
    }

    /// The tolerance band the cluster's HPA controller applies
    /// (`--horizontal-pod-autoscaler-tolerance`), default 0.1.
    pub(crate) fn with_hpa_tolerance(mut self, tolerance: Tolerances) -> Self {
        self.hpa_tolerance = tolerance;
        self
    }

    pub(crate) fn inventory(&self) -> &Arc<InventoryStore> {
        &self.inventory
    }

    pub(crate) fn cache(&self) -> &Arc<MetricsCache> {
        &self.cache
    }

    /// Sweeps and analyses so far (registered on `/metrics` by `run`).
    pub(crate) fn counters(&self) -> &DecisionCounters {
        &self.counters
    }

    /// Decisions for the variants of `namespace` that `selector` matches,
    /// in variant name order. Reads only memory: the published inventory
    /// snapshot and the metrics cache.
    pub(crate) fn decide(
        &self,
        namespace: &str,
        selector: &LabelSelector,
    ) -> Result<Vec<VariantDecision>, DecisionError> {
        if !self.inventory.is_synced() {
            return Err(DecisionError::InventoryNotSynced);
        }
        let snapshot = self.inventory.load();
        let selected: Vec<&Arc<Variant>> = snapshot
            .variants_for_target(namespace, selector.exact_value(labels::TARGET_NAME))
            .filter(|v| selector.matches(&v.metric_labels))
            .collect();
        if selected.is_empty() {
            return Err(DecisionError::NoMatch {
                namespace: namespace.to_owned(),
                selector: selector.to_string(),
            });
        }
        self.decide_selected(&snapshot, &selected)
    }

    /// Decisions for the variants whose scale target is a `kind` named
    /// `target` (every target of that kind in the namespace when None) and
    /// whose metric labels match `selector`: the custom metrics API's
    /// Object metrics, which name the scale target itself.
    pub(crate) fn decide_for_targets(
        &self,
        namespace: &str,
        kind: &str,
        target: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<VariantDecision>, DecisionError> {
        if !self.inventory.is_synced() {
            return Err(DecisionError::InventoryNotSynced);
        }
        let snapshot = self.inventory.load();
        let selected: Vec<&Arc<Variant>> = snapshot
            .variants_for_target(namespace, target)
            .filter(|v| v.target_kind.eq_ignore_ascii_case(kind))
            .filter(|v| selector.matches(&v.metric_labels))
            .collect();
        if selected.is_empty() {
            return Err(DecisionError::NoMatch {
                namespace: namespace.to_owned(),
                selector: match target {
                    Some(t) => format!(
                        "{kind} {t:?}, metricSelector {selector:?}",
                        selector = selector.to_string()
                    ),
                    None => format!("every {kind}, metricSelector {:?}", selector.to_string()),
                },
            });
        }
        self.decide_selected(&snapshot, &selected)
    }

    /// The ready pods of `namespace` whose own labels, together with their
    /// variant's metric labels, match `selector` (optionally one pod by
    /// name), each with its cached metrics if they are younger than the
    /// stale threshold.
    pub(crate) fn ready_pod_metrics(
        &self,
        namespace: &str,
        pod: Option<&str>,
        selector: &LabelSelector,
    ) -> Result<Vec<(ReplicaPod, Option<crate::collector::ReplicaMetrics>)>, DecisionError> {
        if !self.inventory.is_synced() {
            return Err(DecisionError::InventoryNotSynced);
        }
        let snapshot = self.inventory.load();
        let now = SystemTime::now();
        let variant_labels: BTreeMap<&str, &Arc<Variant>> = snapshot
            .variants_in(namespace)
            .map(|v| (v.name.as_str(), v))
            .collect();
        let mut out = Vec::new();
        for p in snapshot.pods().iter().filter(|p| {
            p.ready && *p.namespace == *namespace && pod.is_none_or(|name| p.name() == name)
        }) {
            let Some(v) = variant_labels.get(&*p.variant) else {
                continue;
            };
            let mut labels = v.metric_labels.clone();
            labels.extend(p.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            if !selector.matches(&labels) {
                continue;
            }
            let metrics = self
                .cache
                .get(&p.key)
                .filter(|m| m.age(now) <= self.freshness.stale);
            out.push((p.clone(), metrics));
        }
        Ok(out)
    }

    fn decide_selected(
        &self,
        snapshot: &Arc<InventorySnapshot>,
        selected: &[&Arc<Variant>],
    ) -> Result<Vec<VariantDecision>, DecisionError> {
        let now = SystemTime::now();
        let sweep = self.current_sweep(snapshot);
        // Each model is decided once, however many of its variants were
        // selected: from the sweep when it still holds (read where the
        // sweep keeps it), else on demand.
        let mut outcomes: BTreeMap<ModelKey, Cow<'_, ModelOutcome>> = BTreeMap::new();
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
                let swept = sweep
                    .as_deref()
                    .and_then(|sweep| Self::swept_outcome(sweep, &key, now));
                let outcome = match swept {
                    Some(outcome) => Cow::Borrowed(outcome),
                    None => Cow::Owned(self.decide_model(snapshot, &key, now)?),
                };
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

    /// Decides one model now, on demand (its history advances), with a
    /// fresh fleet allotment when the limiter applies to it.
    pub(crate) fn decide_model(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
    ) -> Result<ModelOutcome, DecisionError> {
        let analysed = self.analyse(snapshot, key, now, counters::Trigger::demand)?;
        let allotment = self
            .limited(&analysed)
            .then(|| self.fresh_allotment(snapshot, key, &analysed, now));
        Ok(self.finish(snapshot, key, now, analysed, allotment.as_ref()))
    }

    /// Decisions for every model of the current snapshot, in key order: a
    /// sweep, published as the current one. Stale models are returned as
    /// errors.
    pub fn decide_all(&self) -> Vec<Result<ModelOutcome, DecisionError>> {
        self.sweep().outcomes.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
