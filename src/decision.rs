//! Joins the inventory, the metrics cache and the analyzer: for the variants
//! a request selects, runs the saturation analysis of their whole model and
//! returns the desired replicas of each.
//!
//! The decision is a pure function of the published snapshot, the cached
//! metrics and the thresholds, so several server replicas given the same
//! inputs answer the same. It never touches the network: the engine has no
//! handle to a metrics backend, only to the cache that the background
//! fetcher fills.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::collector::{Freshness, FreshnessPolicy, MetricsCache};
use crate::hpa::{ScaleState, Tolerances};
use crate::inventory::accelerators::AcceleratorInventory;
use crate::inventory::snapshot::labels;
use crate::inventory::{InventorySnapshot, InventoryStore, ModelKey, ReplicaPod, Variant};
use crate::k8s::quantity::desired_ratio_milli;
use crate::k8s::selector::LabelSelector;
use crate::saturation::scale_to_zero::{self, ModelActivity, ZeroAction};
use crate::saturation::slo::{
    MissingSignal, ServiceClasses, SloAnalysis, SloAnalyzer, SloDecision, SloModelInput,
    SloObjective, SloReplica,
};
use crate::saturation::v2::{
    self, ReplicaTokens, ScaleUpClaim, TokenAnalysis, TokenAnalyzer, TokenModelInput, TokenVariant,
};
use crate::saturation::{
    decide_acted_on, AnalyzerKind, HpaView, ModelAnalysis, ModelInput, ReplicaLoad,
    SaturationAnalyzer, SaturationThresholds, ScaleToZeroConfig, TargetReason, ThresholdConfig,
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
    /// Which analysis decided ("saturation-v1" or "saturation-v2").
    pub analyzer: &'static str,
}

/// The outcome of one model's analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutcome {
    pub key: ModelKey,
    /// V1's analysis; None when no ready replica reported metrics
    /// (decisions hold) or when V2 decided.
    pub analysis: Option<ModelAnalysis>,
    /// V2's analysis, when V2 decided and a replica reported its KV cache.
    pub token_analysis: Option<TokenAnalysis>,
    /// Which analysis decided.
    pub analyzer: &'static str,
    /// `analyzerName: slo` could not size the model: the signal it missed
    /// (the analysis named in `analyzer` decided instead).
    pub slo_fallback: Option<MissingSignal>,
    /// The objective-sized analysis, when it decided.
    pub slo_analysis: Option<SloAnalysis>,
    /// Replicas whose metrics were used.
    pub replicas_used: usize,
    /// Age of the newest sample among the model's ready replicas.
    pub newest_sample_age: Option<Duration>,
    /// Freshness class of that newest sample (None without samples).
    pub freshness: Option<Freshness>,
    pub decisions: Vec<VariantDecision>,
    /// What scale to zero / from zero did to the analysis' targets.
    pub zero_action: ZeroAction,
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
    /// No fetch has reached the model's metrics since it appeared: `why`
    /// says what happened (the source's failure), or that the first fetch
    /// is still to come.
    #[error("no metrics for model {model_id:?} in namespace {namespace:?}: {why}")]
    NotFetchedYet {
        namespace: String,
        model_id: String,
        why: String,
    },
    #[error("metrics of model {model_id:?} in namespace {namespace:?} are stale: the newest sample is {age_secs}s old (stale after {stale_secs}s)")]
    Stale {
        namespace: String,
        model_id: String,
        age_secs: u64,
        stale_secs: u64,
    },
    #[error("metrics of model {model_id:?} in namespace {namespace:?} are stale: the metrics backend has not been reached for {age_secs}s (stale after {stale_secs}s){why}")]
    BackendUnreachable {
        namespace: String,
        model_id: String,
        age_secs: u64,
        stale_secs: u64,
        /// `: <the source's failure>` when known, else empty.
        why: String,
    },
}

impl ModelOutcome {
    /// Whether the analysis had metrics to decide from (else it held).
    pub fn has_metrics(&self) -> bool {
        self.analysis.is_some() || self.token_analysis.is_some() || self.slo_analysis.is_some()
    }
}

impl DecisionError {
    /// Whether the error is about data that is not there (yet), which a
    /// client should retry, rather than about what it asked for.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DecisionError::InventoryNotSynced
                | DecisionError::NotFetchedYet { .. }
                | DecisionError::Stale { .. }
                | DecisionError::BackendUnreachable { .. }
        )
    }
}

/// Everything a decision needs, shared by the HTTP API and the KEDA scaler.
pub struct DecisionEngine {
    inventory: Arc<InventoryStore>,
    cache: Arc<MetricsCache>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    analyzer: Arc<dyn SaturationAnalyzer>,
    /// The token-based analysis, for models whose thresholds select it.
    token_analyzer: Arc<TokenAnalyzer>,
    /// The objective-sized analysis (`analyzerName: slo`), with its state.
    slo_analyzer: Arc<SloAnalyzer>,
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
}

impl std::fmt::Debug for DecisionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionEngine")
            .field("analyzer", &self.analyzer.name())
            .field("freshness", &self.freshness)
            .finish()
    }
}

/// The inputs of one model's decision.
/// A variant's average spare KV capacity over its replicas that are not
/// saturated (0 when none): the limiter's priority, as upstream's
/// `AvgSpareKvCapacity`.
fn variant_spare_kv(replicas: &[ReplicaLoad], variant: &str, th: &SaturationThresholds) -> f64 {
    let spare: Vec<f64> = replicas
        .iter()
        .filter(|r| r.variant == variant && !th.is_saturated(r))
        .map(|r| th.kv_cache_threshold - r.kv)
        .collect();
    if spare.is_empty() {
        0.0
    } else {
        spare.iter().sum::<f64>() / spare.len() as f64
    }
}

struct ModelInputs<'s> {
    variants: Vec<&'s Arc<Variant>>,
    replicas: Vec<ReplicaLoad>,
    tokens: Vec<ReplicaTokens>,
    slo: Vec<SloReplica>,
    newest: Option<Duration>,
    states: Vec<VariantState>,
}

fn token_variants(variants: &[&Arc<Variant>], states: &[VariantState]) -> Vec<TokenVariant> {
    variants
        .iter()
        .zip(states)
        .map(|(v, s)| TokenVariant {
            state: s.clone(),
            accelerator: v.accelerator.clone(),
            engine: v.engine.clone(),
        })
        .collect()
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
            token_analyzer: Arc::new(TokenAnalyzer::new()),
            slo_analyzer: Arc::new(SloAnalyzer::new()),
            service_classes: Arc::default(),
            accelerators: None,
            v2_limiter: false,
            freshness,
            hpa_tolerance: Tolerances::default(),
            scale_to_zero: Arc::default(),
        }
    }

    /// The service classes in force (upstream's
    /// `<release>-workload-variant-autoscaler-service-classes-config`).
    pub fn with_service_classes(mut self, classes: Arc<ArcSwap<ServiceClasses>>) -> Self {
        self.service_classes = classes;
        self
    }

    /// A model's latency objective: the thresholds' `sloTtftMs`/`sloTpotMs`
    /// over its service class (or `default/default`'s), over the built-in.
    pub fn objective_for(&self, thresholds: &SaturationThresholds, model_id: &str) -> SloObjective {
        let base = self
            .service_classes
            .load()
            .for_model(model_id)
            .unwrap_or_default();
        SloObjective {
            ttft_seconds: thresholds
                .slo_ttft_ms
                .map_or(base.ttft_seconds, |ms| ms / 1000.0),
            tpot_seconds: thresholds
                .slo_tpot_ms
                .map_or(base.tpot_seconds, |ms| ms / 1000.0),
        }
    }

    /// The scale-to-zero configuration in force (shared with the collector).
    pub fn with_scale_to_zero(mut self, config: Arc<ArcSwap<ScaleToZeroConfig>>) -> Self {
        self.scale_to_zero = config;
        self
    }

    /// The thresholds in force (replaced as a whole on a ConfigMap change).
    pub fn thresholds(&self) -> &Arc<ArcSwap<ThresholdConfig>> {
        &self.thresholds
    }

    pub fn scale_to_zero(&self) -> &Arc<ArcSwap<ScaleToZeroConfig>> {
        &self.scale_to_zero
    }

    /// The endpoint picker's queue for a model, if fetched recently enough
    /// to steer (younger than the stale threshold).
    fn scheduler_queue(&self, model_id: &str, now: SystemTime) -> Option<v2::SchedulerQueue> {
        let not_before = now
            .checked_sub(self.freshness.stale)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.cache.scheduler_queue(model_id, not_before)
    }

    /// Requests completed over `window`, running and waiting, summed over
    /// the model's ready pods; None when a ready pod has no fresh entry or
    /// its counter history does not cover `window` (or there is none).
    fn model_requests(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
        window: Duration,
    ) -> Option<f64> {
        let mut total = 0.0;
        let mut any = false;
        for pod in snapshot.model_pods(key).filter(|p| p.ready) {
            let r = self.cache.with(&pod.key, |m| {
                if m.age(now) > self.freshness.stale {
                    return None;
                }
                let a = m.activity.filter(|a| a.window == window)?;
                Some(a.requests + m.queue_waiting)
            })??;
            total += r;
            any = true;
        }
        any.then_some(total)
    }

    /// Where the limiter (`enableLimiter: true`) reads free accelerators.
    /// Applies `enableLimiter` to V2 models too, per model and namespace
    /// entry (`--limiter-on-v2`, an extension of upstream).
    pub fn with_v2_limiter(mut self, on: bool) -> Self {
        self.v2_limiter = on;
        self
    }

    pub fn with_accelerators(mut self, accelerators: Arc<dyn AcceleratorInventory>) -> Self {
        self.accelerators = Some(accelerators);
        self
    }

    /// The V2 analyzer (its state sizes are exported as telemetry).
    pub fn token_analyzer(&self) -> &Arc<TokenAnalyzer> {
        &self.token_analyzer
    }

    /// The tolerance band the cluster's HPA controller applies
    /// (`--horizontal-pod-autoscaler-tolerance`), default 0.1.
    pub fn with_hpa_tolerance(mut self, tolerance: Tolerances) -> Self {
        self.hpa_tolerance = tolerance;
        self
    }

    /// The band a variant's HPA applies: its own `behavior` tolerances where
    /// set, the controller's elsewhere.
    fn tolerances_for(&self, v: &Variant) -> Tolerances {
        Tolerances {
            scale_up: v
                .hpa_scale_up_tolerance
                .unwrap_or(self.hpa_tolerance.scale_up),
            scale_down: v
                .hpa_scale_down_tolerance
                .unwrap_or(self.hpa_tolerance.scale_down),
        }
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
    /// in variant name order. Reads only memory: the published inventory
    /// snapshot and the metrics cache.
    pub fn decide(
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
    pub fn decide_for_targets(
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
    pub fn ready_pod_metrics(
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
        let thresholds = self
            .thresholds
            .load()
            .for_model(&key.model_id, &key.namespace);
        let inputs = self.model_inputs(snapshot, key, now)?;
        let ModelInputs {
            variants,
            replicas,
            tokens,
            slo,
            newest,
            states,
        } = inputs;
        // Moves inside the HPA's tolerance band would be ignored by it: widen
        // them to the smallest move it acts on, or hold and say so.
        let hpas = self.hpa_views(&variants);
        let run_v1 = || {
            // The same pure function `simulate` runs: analysis, then
            // tolerance-aware steps.
            let decision = decide_acted_on(
                self.analyzer.as_ref(),
                &ModelInput {
                    replicas: &replicas,
                    variants: &states,
                    thresholds: &thresholds,
                },
                &hpas,
            );
            let mut targets = decision.targets;
            // Upstream's GPU limiter: the global `enableLimiter`, on V1.
            if self.thresholds.load().default_thresholds().enable_limiter {
                self.limit_v1(snapshot, key, now, &variants, &replicas, &mut targets);
            }
            (targets, decision.analysis, None, AnalyzerKind::Percentage)
        };
        let run_v2 = || {
            let token_variants = token_variants(&variants, &states);
            let decision = self.token_analyzer.decide(
                &TokenModelInput {
                    namespace: &key.namespace,
                    model_id: &key.model_id,
                    replicas: &tokens,
                    variants: &token_variants,
                    thresholds: &thresholds,
                    scheduler_queue: self.scheduler_queue(&key.model_id, now),
                },
                now,
            );
            let mut targets = decision.targets;
            // Upstream has no limiter on V2: ours is an opt-in extension.
            if self.v2_limiter && thresholds.enable_limiter {
                if let Some(a) = &decision.analysis {
                    self.limit(snapshot, key, now, a, &variants, &mut targets);
                }
            }
            let max: Vec<u32> = states.iter().map(|s| s.max_replicas).collect();
            let targets = v2::tolerance_steps(&max, &hpas, targets);
            (targets, None, decision.analysis, AnalyzerKind::Tokens)
        };
        let mut slo_fallback = None;
        let mut slo_analysis = None;
        let (mut targets, analysis, token_analysis, analyzer) = match thresholds.analyzer {
            AnalyzerKind::Percentage => run_v1(),
            AnalyzerKind::Tokens => run_v2(),
            AnalyzerKind::Slo => {
                let decision = self.slo_analyzer.decide(
                    &SloModelInput {
                        namespace: &key.namespace,
                        model_id: &key.model_id,
                        replicas: &slo,
                        variants: &states,
                        objective: self.objective_for(&thresholds, &key.model_id),
                        scheduler_queue: self
                            .scheduler_queue(&key.model_id, now)
                            .map(|q| q.requests),
                    },
                    now,
                );
                match decision {
                    SloDecision::Sized { targets, analysis } => {
                        slo_analysis = Some(analysis);
                        let max: Vec<u32> = states.iter().map(|s| s.max_replicas).collect();
                        let targets = v2::tolerance_steps(&max, &hpas, targets);
                        (targets, None, None, AnalyzerKind::Slo)
                    }
                    SloDecision::NoMetrics { targets } => (targets, None, None, AnalyzerKind::Slo),
                    SloDecision::Missing(missing) => {
                        slo_fallback = Some(missing);
                        // V2 needs the cache size too; without it, V1.
                        let fallback = if missing == MissingSignal::CacheConfig {
                            run_v1()
                        } else {
                            run_v2()
                        };
                        tracing::debug!(
                            namespace = %key.namespace,
                            model_id = %key.model_id,
                            missing = missing.as_str(),
                            fallback = fallback.3.as_str(),
                            "analyzerName slo cannot size the model without this signal: another analysis decides"
                        );
                        fallback
                    }
                }
            }
        };
        // Scale to zero when idle for the retention period, from zero when
        // the endpoint picker queues requests for a model with no replica.
        let zero = self
            .scale_to_zero
            .load()
            .for_model(&key.model_id, &key.namespace);
        let activity = ModelActivity {
            config: zero,
            ready: states.iter().map(|s| s.ready_replicas).sum(),
            requests: if zero.enabled {
                self.model_requests(snapshot, key, now, zero.retention)
            } else {
                None
            },
            scheduler_queue: self.scheduler_queue(&key.model_id, now).map(|q| q.requests),
        };
        let zero_action = scale_to_zero::apply(&activity, &states, &mut targets);
        if zero_action != ZeroAction::None {
            tracing::debug!(namespace = %key.namespace, model_id = %key.model_id, action = zero_action.as_str(), "scale-to-zero policy applied");
        }
        let decisions = variants
            .iter()
            .zip(targets)
            .map(|(v, t)| {
                let ready = v.ready_replicas();
                VariantDecision {
                    variant: Arc::clone(v),
                    desired: t.desired,
                    ready,
                    ratio_milli: desired_ratio_milli(t.desired, ready),
                    reason: t.reason,
                    analyzer: analyzer.as_str(),
                }
            })
            .collect();
        Ok(ModelOutcome {
            key: key.clone(),
            analysis,
            token_analysis,
            analyzer: analyzer.as_str(),
            slo_fallback,
            slo_analysis,
            replicas_used: replicas.len(),
            newest_sample_age: newest,
            freshness: newest.map(|age| self.freshness.classify(age)),
            decisions,
            zero_action,
        })
    }

    /// The variants of a model and the metrics of its ready pods, in both
    /// analyses' shapes. Errors when no ready replica has a usable sample
    /// and the backend is not known to simply have none.
    fn model_inputs<'s>(
        &self,
        snapshot: &'s InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
    ) -> Result<ModelInputs<'s>, DecisionError> {
        let variants: Vec<&Arc<Variant>> = snapshot
            .model_variants(key)
            .filter(|v| v.target.is_some())
            .collect();
        let accelerator_of = |variant: &str| {
            variants
                .iter()
                .find(|v| v.name == variant)
                .map(|v| v.accelerator.clone())
                .unwrap_or_default()
        };
        let mut replicas = Vec::new();
        let mut tokens = Vec::new();
        let mut slo = Vec::new();
        let mut newest: Option<Duration> = None;
        for pod in snapshot.model_pods(key).filter(|p| p.ready) {
            let Some((age, load, token, slo_replica)) = self.cache.with(&pod.key, |m| {
                (
                    m.age(now),
                    ReplicaLoad {
                        pod: pod.name().to_owned(),
                        variant: pod.variant.to_string(),
                        kv: m.kv_usage,
                        queue: m.queue_waiting,
                    },
                    ReplicaTokens {
                        pod: pod.name().to_owned(),
                        variant: pod.variant.to_string(),
                        accelerator: String::new(),
                        kv: m.kv_usage,
                        queue: m.queue_waiting,
                        cache: m.kv_cache,
                        avg_input_tokens: m.avg_prompt_tokens,
                        avg_output_tokens: m.avg_generation_tokens,
                        prefix_cache_hit_rate: m.prefix_cache_hit_rate,
                        sampled_at: m.sampled_at,
                    },
                    SloReplica {
                        pod: pod.name().to_owned(),
                        variant: pod.variant.to_string(),
                        kv: m.kv_usage,
                        waiting: m.queue_waiting,
                        running: m.running,
                        completion_rate: m.request_rate,
                        avg_prompt_tokens: m.avg_prompt_tokens,
                        avg_output_tokens: m.avg_generation_tokens,
                        cache: m.kv_cache,
                    },
                )
            }) else {
                continue;
            };
            newest = Some(newest.map_or(age, |n| n.min(age)));
            // A replica whose newest sample is stale no longer steers decisions.
            if age <= self.freshness.stale {
                replicas.push(load);
                slo.push(slo_replica);
                tokens.push(ReplicaTokens {
                    accelerator: accelerator_of(&token.variant),
                    ..token
                });
            }
        }
        if replicas.is_empty() {
            self.check_no_fresh_replica(key, newest, now)?;
        }
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
        Ok(ModelInputs {
            variants,
            replicas,
            tokens,
            slo,
            newest,
            states,
        })
    }

    /// The HPA's view of each variant's target (for tolerance-aware steps).
    fn hpa_views(&self, variants: &[&Arc<Variant>]) -> Vec<HpaView> {
        variants
            .iter()
            .map(|v| {
                let t = v.target.unwrap_or_default();
                HpaView {
                    scale: ScaleState {
                        spec_replicas: t.spec_replicas,
                        status_replicas: t.status_replicas,
                        ready_pods: t.ready_replicas,
                    },
                    tolerances: self.tolerances_for(v),
                }
            })
            .collect()
    }

    /// GPUs per replica of a variant: the most any of its pods requests
    /// (at least 1).
    fn gpus_per_replica(
        inventory: &dyn AcceleratorInventory,
        snapshot: &InventorySnapshot,
        v: &Variant,
    ) -> u32 {
        snapshot
            .pods()
            .iter()
            .filter(|p| *p.namespace == *v.namespace && *p.variant == *v.name)
            .filter_map(|p| inventory.pod_gpus(&p.namespace, p.name()))
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Upstream WVA's GPU limiter (global `enableLimiter: true`, V1 path):
    /// every V1 model's scale-ups share the GPUs per accelerator type that
    /// the WVA variants' current replicas leave free, most saturated variant
    /// (lowest average spare KV) first, then the cheapest
    /// ([`v2::greedy_limiter`]). Caps this model's targets.
    fn limit_v1(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
        variants: &[&Arc<Variant>],
        replicas: &[ReplicaLoad],
        targets: &mut [crate::saturation::VariantTarget],
    ) {
        use crate::saturation::v2::greedy_limiter::{limit, LimiterDecision};
        if !targets.iter().any(|t| t.desired > t.current) {
            return;
        }
        let Some(inventory) = &self.accelerators else {
            tracing::warn!(namespace = %key.namespace, model_id = %key.model_id, "enableLimiter is set but the server has no accelerator inventory (--accelerator-inventory): scale-ups are not capped");
            return;
        };
        let Some(capacity) = inventory.capacity_by_type() else {
            return;
        };
        let config = self.thresholds.load();
        let decision = |v: &Variant, target: u32, spare: f64| LimiterDecision {
            spare_capacity: spare,
            cost: v.cost,
            ..LimiterDecision::new(
                &format!("{}/{}", v.namespace, v.name),
                &v.accelerator,
                v.target.map_or(0, |t| t.spec_replicas),
                target,
                Self::gpus_per_replica(inventory.as_ref(), snapshot, v),
            )
        };
        let mut decisions = Vec::new();
        let mut ours = Vec::new();
        let mut keys: Vec<&ModelKey> = snapshot.models().map(|(k, _)| k).collect();
        keys.sort();
        for k in keys {
            let th = config.for_model(&k.model_id, &k.namespace);
            if k == key {
                for (i, (v, t)) in variants.iter().zip(targets.iter()).enumerate() {
                    ours.push((decisions.len(), i));
                    decisions.push(decision(
                        v,
                        t.desired,
                        variant_spare_kv(replicas, &v.name, &th),
                    ));
                }
                continue;
            }
            let inputs = self.model_inputs(snapshot, k, now).ok();
            // Every WVA variant's replicas count as used; only V1 models'
            // scale-ups compete (upstream applies it on the V1 path).
            let other_targets = match (&inputs, th.analyzer) {
                (Some(inputs), AnalyzerKind::Percentage) => Some(
                    decide_acted_on(
                        self.analyzer.as_ref(),
                        &ModelInput {
                            replicas: &inputs.replicas,
                            variants: &inputs.states,
                            thresholds: &th,
                        },
                        &self.hpa_views(&inputs.variants),
                    )
                    .targets,
                ),
                _ => None,
            };
            for v in snapshot.model_variants(k).filter(|v| v.target.is_some()) {
                let target = other_targets
                    .as_ref()
                    .and_then(|ts| ts.iter().find(|t| t.name == v.name))
                    .map_or(v.target.map_or(0, |t| t.spec_replicas), |t| t.desired);
                let spare = inputs
                    .as_ref()
                    .map_or(0.0, |i| variant_spare_kv(&i.replicas, &v.name, &th));
                decisions.push(decision(v, target, spare));
            }
        }
        limit(&mut decisions, &capacity);
        for (d, i) in ours {
            let granted = &decisions[d];
            let t = &mut targets[i];
            if granted.was_limited && granted.target < t.desired {
                tracing::info!(namespace = %key.namespace, model_id = %key.model_id, variant = %t.name, wanted = t.desired, granted = granted.target, accelerator = %granted.accelerator, "scale-up limited by free accelerators (upstream's limiter)");
                t.desired = granted.target;
                t.reason = TargetReason::LimitedByAccelerators;
            }
        }
    }

    /// `enableLimiter`: caps this model's scale-ups by the accelerators free
    /// per type, allotted greedily over every model that has the limiter on
    /// and wants to grow, most saturated first (each server replica computes
    /// the same allotment from the same inventory and metrics).
    fn limit(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
        analysis: &TokenAnalysis,
        variants: &[&Arc<Variant>],
        targets: &mut [crate::saturation::VariantTarget],
    ) {
        let Some(inventory) = &self.accelerators else {
            tracing::warn!(namespace = %key.namespace, model_id = %key.model_id, "enableLimiter is set but the server has no accelerator inventory (cluster mode only): scale-ups are not capped");
            return;
        };
        let Some(free) = inventory.free_by_type() else {
            return;
        };
        let gpus_of = |v: &Variant| -> u32 {
            snapshot
                .pods()
                .iter()
                .filter(|p| *p.namespace == *v.namespace && *p.variant == *v.name)
                .filter_map(|p| inventory.pod_gpus(&p.namespace, p.name()))
                .max()
                .unwrap_or(1)
                .max(1)
        };
        let mut claims: Vec<ScaleUpClaim> = Vec::new();
        let mut ours: Vec<(usize, usize)> = Vec::new();
        let push = |claims: &mut Vec<ScaleUpClaim>,
                    model: usize,
                    utilization: f64,
                    vs: &[&Arc<Variant>],
                    ts: &[crate::saturation::VariantTarget]|
         -> Vec<(usize, usize)> {
            let mut idx = Vec::new();
            for (i, (v, t)) in vs.iter().zip(ts).enumerate() {
                if t.desired > t.current {
                    idx.push((claims.len(), i));
                    claims.push(ScaleUpClaim {
                        model,
                        variant: v.name.clone(),
                        accelerator: v.accelerator.clone(),
                        gpus_per_replica: gpus_of(v),
                        wanted: t.desired - t.current,
                        utilization,
                        cost: v.cost,
                    });
                }
            }
            idx
        };
        ours.extend(push(
            &mut claims,
            0,
            analysis.utilization(),
            variants,
            targets,
        ));
        if ours.is_empty() {
            return;
        }
        // The other models with the limiter on, analysed as they would be.
        let config = self.thresholds.load();
        let mut others: Vec<&ModelKey> = snapshot
            .models()
            .map(|(k, _)| k)
            .filter(|k| *k != key)
            .filter(|k| {
                let t = config.for_model(&k.model_id, &k.namespace);
                t.analyzer == AnalyzerKind::Tokens && t.enable_limiter
            })
            .collect();
        others.sort();
        for (n, other) in others.into_iter().enumerate() {
            let th: SaturationThresholds = config.for_model(&other.model_id, &other.namespace);
            let Ok(inputs) = self.model_inputs(snapshot, other, now) else {
                continue;
            };
            let token_variants = token_variants(&inputs.variants, &inputs.states);
            let d = self.token_analyzer.decide(
                &TokenModelInput {
                    namespace: &other.namespace,
                    model_id: &other.model_id,
                    replicas: &inputs.tokens,
                    variants: &token_variants,
                    thresholds: &th,
                    scheduler_queue: self.scheduler_queue(&other.model_id, now),
                },
                now,
            );
            if let Some(a) = &d.analysis {
                push(
                    &mut claims,
                    n + 1,
                    a.utilization(),
                    &inputs.variants,
                    &d.targets,
                );
            }
        }
        let grants = v2::allot_accelerators(&claims, &free);
        for (claim, i) in ours {
            let g = &grants[claim];
            if g.limited {
                let t = &mut targets[i];
                t.desired = t.current + g.granted;
                t.reason = TargetReason::LimitedByAccelerators;
                tracing::info!(namespace = %key.namespace, model_id = %key.model_id, variant = %t.name, wanted = claims[claim].wanted, granted = g.granted, accelerator = %claims[claim].accelerator, "scale-up limited by free accelerators");
            }
        }
    }

    /// A model none of whose ready replicas has a usable sample: an error
    /// unless the backend answers and simply has no series for them (then
    /// the model holds, and says so in its reason).
    fn check_no_fresh_replica(
        &self,
        key: &ModelKey,
        newest: Option<Duration>,
        now: SystemTime,
    ) -> Result<(), DecisionError> {
        let stale_secs = self.freshness.stale.as_secs();
        if let Some(age) = newest {
            return Err(DecisionError::Stale {
                namespace: key.namespace.clone(),
                model_id: key.model_id.clone(),
                age_secs: age.as_secs(),
                stale_secs,
            });
        }
        let failure = || self.cache.health().why_not_fetched(key);
        match self.cache.fetched_at(key) {
            None => Err(DecisionError::NotFetchedYet {
                namespace: key.namespace.clone(),
                model_id: key.model_id.clone(),
                why: match failure() {
                    Some(f) => f.to_string(),
                    None => "the first fetch since the model appeared has not finished; retry in a few seconds".to_owned(),
                },
            }),
            Some(at) => {
                let age = now.duration_since(at).unwrap_or_default();
                if age > self.freshness.stale {
                    Err(DecisionError::BackendUnreachable {
                        namespace: key.namespace.clone(),
                        model_id: key.model_id.clone(),
                        age_secs: age.as_secs(),
                        stale_secs,
                        why: failure().map(|f| format!(": {f}")).unwrap_or_default(),
                    })
                } else {
                    Ok(())
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::ReplicaMetrics;
    use crate::inventory::pod_key;
    use crate::inventory::{resolve, InventoryObjects};
    use crate::saturation::PercentageAnalyzer;

    /// One variant in `ns` with `ready` ready pods named p0.. behind a Deployment.
    fn objects(
        ns: &str,
        variant: &str,
        model: &str,
        spec: u32,
        ready: u32,
        pods: usize,
    ) -> InventoryObjects {
        let mut y = format!(
            "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: {variant}, namespace: {ns}}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: {variant}-d}}\n  modelID: {model}\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {{name: {variant}-d, namespace: {ns}}}\nspec: {{replicas: {spec}, selector: {{}}, template: {{}}}}\nstatus: {{replicas: {spec}, readyReplicas: {ready}}}\n"
        );
        for i in 0..pods {
            y.push_str(&format!(
                "---\nkind: Pod\napiVersion: v1\nmetadata: {{name: {variant}-p{i}, namespace: {ns}, labels: {{llm-d.ai/variant: {variant}}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
        crate::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap()
    }

    fn engine(objects: InventoryObjects) -> DecisionEngine {
        let store = Arc::new(InventoryStore::new());
        store.publish(resolve(&objects).0);
        DecisionEngine::new(
            store,
            Arc::new(MetricsCache::new()),
            Arc::new(ArcSwap::from_pointee(ThresholdConfig::default())),
            Arc::new(PercentageAnalyzer),
            FreshnessPolicy::default(),
        )
    }

    fn report(e: &DecisionEngine, ns: &str, pod: &str, kv: f64, q: f64, age: Duration) {
        e.cache().insert(
            pod_key(ns, pod),
            ReplicaMetrics {
                model_name: "m".into(),
                kv_usage: kv,
                queue_waiting: q,
                running: None,
                sampled_at: SystemTime::now() - age,
                request_rate: None,
                avg_prompt_tokens: None,
                avg_generation_tokens: None,
                prefix_cache_hit_rate: None,
                kv_cache: None,
                activity: None,
            },
        );
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn scales_down_the_worked_example() {
        let e = engine(objects("ns", "v", "m", 3, 3, 3));
        for (i, kv) in [0.20, 0.30, 0.25].into_iter().enumerate() {
            report(&e, "ns", &format!("v-p{i}"), kv, 1.0, Duration::ZERO);
        }
        let d = e.decide("ns", &sel("variant_name=v")).unwrap();
        assert_eq!((d[0].desired, d[0].ready, d[0].ratio_milli), (2, 3, 666));
        assert_eq!(d[0].reason, TargetReason::ScaleDown);
    }

    #[test]
    fn steps_follow_the_hpa_tolerance_flag_and_the_hpa_behavior() {
        let idle = |e: &DecisionEngine| {
            for i in 0..8 {
                report(e, "ns", &format!("v-p{i}"), 0.10, 0.0, Duration::ZERO);
            }
        };
        // A 0.3 band: 7/8 and 6/8 are inside, 5/8 = 0.625 is outside and safe.
        let e =
            engine(objects("ns", "v", "m", 8, 8, 8)).with_hpa_tolerance(Tolerances::uniform(0.3));
        idle(&e);
        let d = e.decide("ns", &sel("variant_name=v")).unwrap();
        assert_eq!((d[0].desired, d[0].reason), (5, TargetReason::ScaleDown));
        assert_eq!(d[0].ratio_milli, 625);

        // The HPA scaling the target narrows its scale-down band to 0.01.
        let mut o = objects("ns", "v", "m", 8, 8, 8);
        let hpa = "kind: HorizontalPodAutoscaler\napiVersion: autoscaling/v2\nmetadata: {name: v-hpa, namespace: ns}\nspec:\n  scaleTargetRef: {kind: Deployment, name: v-d}\n  maxReplicas: 10\n  behavior: {scaleDown: {tolerance: \"0.01\"}}\n";
        o.horizontal_pod_autoscalers.extend(
            crate::inventory::file::parse_objects(std::path::Path::new("h"), hpa)
                .unwrap()
                .horizontal_pod_autoscalers,
        );
        let e = engine(o).with_hpa_tolerance(Tolerances::uniform(0.3));
        idle(&e);
        let d = e.decide("ns", &sel("variant_name=v")).unwrap();
        assert_eq!((d[0].desired, d[0].reason), (7, TargetReason::ScaleDown));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = engine(objects("ns", "v", "m", 2, 2, 2));
        let err = e.decide("ns", &sel("target_name=nope")).unwrap_err();
        assert_eq!(
            err,
            DecisionError::NoMatch {
                namespace: "ns".into(),
                selector: "target_name=nope".into()
            }
        );
        let err = e.decide("other", &sel("")).unwrap_err();
        assert!(matches!(err, DecisionError::NoMatch { .. }));

        // Every ready replica's newest sample is older than the stale threshold.
        report(&e, "ns", "v-p0", 0.5, 0.0, Duration::from_secs(150));
        report(&e, "ns", "v-p1", 0.5, 0.0, Duration::from_secs(200));
        let err = e.decide("ns", &sel("")).unwrap_err();
        assert_eq!(
            err,
            DecisionError::Stale {
                namespace: "ns".into(),
                model_id: "m".into(),
                age_secs: 150,
                stale_secs: 120,
            }
        );
        assert!(err.to_string().contains("150s old"), "{err}");

        // One fresh replica is enough to decide, over the fresh replicas only.
        report(&e, "ns", "v-p1", 0.75, 2.0, Duration::ZERO);
        let d = e.decide("ns", &sel("")).unwrap();
        assert_eq!(d[0].desired, 3);
    }

    fn model(ns: &str, m: &str) -> ModelKey {
        ModelKey {
            namespace: ns.into(),
            model_id: m.into(),
        }
    }

    #[test]
    fn no_metrics_holds_at_current_once_fetched() {
        let e = engine(objects("ns", "v", "m", 4, 4, 4));
        // Before any fetch cycle reached the model: 503, not a silent hold.
        assert_eq!(
            e.decide("ns", &sel("")).unwrap_err(),
            DecisionError::NotFetchedYet {
                namespace: "ns".into(),
                model_id: "m".into(),
                why: "the first fetch since the model appeared has not finished; retry in a few seconds".into()
            }
        );
        // A failed fetch is said, with its cause and since when.
        e.cache().health().source_failed(
            "Prometheus at http://prometheus:9090 unreachable",
            "connection refused",
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            e.decide("ns", &sel("")).unwrap_err().to_string(),
            "no metrics for model \"m\" in namespace \"ns\": Prometheus at http://prometheus:9090 \
             unreachable since 1970-01-01T00:00:00Z: connection refused"
        );
        e.cache().health().source_answered();
        // Fetched, and the backend has no series for the pods: hold.
        e.cache().mark_fetched(&model("ns", "m"), SystemTime::now());
        let d = e.decide("ns", &sel("")).unwrap();
        assert_eq!(
            (d[0].desired, d[0].ratio_milli, d[0].reason),
            (4, 1000, TargetReason::NoMetrics)
        );
    }

    #[test]
    fn a_backend_out_of_reach_past_the_stale_threshold_is_unavailable() {
        let e = engine(objects("ns", "v", "m", 2, 2, 2));
        let last = SystemTime::now() - Duration::from_secs(150);
        e.cache().mark_fetched(&model("ns", "m"), last);
        let err = e.decide("ns", &sel("")).unwrap_err();
        assert_eq!(
            err,
            DecisionError::BackendUnreachable {
                namespace: "ns".into(),
                model_id: "m".into(),
                age_secs: 150,
                stale_secs: 120,
                why: String::new(),
            }
        );
        assert!(err.is_unavailable());
        assert!(
            err.to_string().contains("not been reached for 150s"),
            "{err}"
        );
        // Within the stale threshold the model still holds.
        e.cache().mark_fetched(
            &model("ns", "m"),
            SystemTime::now() - Duration::from_secs(110),
        );
        assert_eq!(e.decide("ns", &sel("")).unwrap()[0].desired, 2);
    }

    #[test]
    fn aging_samples_still_decide_and_say_so() {
        let e = engine(objects("ns", "v", "m", 2, 2, 2));
        report(&e, "ns", "v-p0", 0.75, 2.0, Duration::from_secs(90));
        report(&e, "ns", "v-p1", 0.76, 2.0, Duration::from_secs(100));
        let snapshot = e.inventory().load();
        let outcome = e
            .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
            .unwrap();
        assert_eq!(outcome.freshness, Some(Freshness::Aging));
        assert_eq!(outcome.decisions[0].desired, 3);
        report(&e, "ns", "v-p0", 0.75, 2.0, Duration::ZERO);
        let outcome = e
            .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
            .unwrap();
        assert_eq!(outcome.freshness, Some(Freshness::Fresh));
    }

    #[test]
    fn unsynced_inventory_is_unavailable() {
        let e = DecisionEngine::new(
            Arc::new(InventoryStore::new()),
            Arc::new(MetricsCache::new()),
            Arc::new(ArcSwap::from_pointee(ThresholdConfig::default())),
            Arc::new(PercentageAnalyzer),
            FreshnessPolicy::default(),
        );
        assert_eq!(
            e.decide("ns", &sel("")).unwrap_err(),
            DecisionError::InventoryNotSynced
        );
    }

    /// A VariantAutoscaling on H100 with `ready` ready pods.
    fn h100(ns: &str, variant: &str, model: &str, ready: u32) -> String {
        let mut y = format!(
            "---\nkind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: {variant}, namespace: {ns}, labels: {{inference.optimization/acceleratorName: H100}}}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: {variant}-d}}\n  modelID: {model}\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {{name: {variant}-d, namespace: {ns}}}\nspec: {{replicas: {ready}, selector: {{}}, template: {{}}}}\nstatus: {{replicas: {ready}, readyReplicas: {ready}}}\n"
        );
        for i in 0..ready {
            y.push_str(&format!(
                "---\nkind: Pod\napiVersion: v1\nmetadata: {{name: {variant}-p{i}, namespace: {ns}, labels: {{llm-d.ai/variant: {variant}}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
        y
    }

    fn engine_with(yaml: &str, config: &str) -> DecisionEngine {
        let store = Arc::new(InventoryStore::new());
        let objects =
            crate::inventory::file::parse_objects(std::path::Path::new("t"), yaml).unwrap();
        store.publish(resolve(&objects).0);
        let (config, errors) = ThresholdConfig::from_yaml_str(config).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        DecisionEngine::new(
            store,
            Arc::new(MetricsCache::new()),
            Arc::new(ArcSwap::from_pointee(config)),
            Arc::new(PercentageAnalyzer),
            FreshnessPolicy::default(),
        )
    }

    /// A replica with a 1000 x 16 token KV cache.
    fn report_tokens(e: &DecisionEngine, ns: &str, pod: &str, kv: f64) {
        e.cache().insert(
            pod_key(ns, pod),
            ReplicaMetrics {
                model_name: "m".into(),
                kv_usage: kv,
                queue_waiting: 0.0,
                running: None,
                sampled_at: SystemTime::now(),
                request_rate: None,
                avg_prompt_tokens: Some(100.0),
                avg_generation_tokens: Some(50.0),
                prefix_cache_hit_rate: None,
                kv_cache: Some(crate::saturation::v2::KvCacheConfig {
                    num_gpu_blocks: 1000,
                    block_size: 16,
                }),
                activity: None,
            },
        );
    }

    #[test]
    fn analyzer_name_saturation_selects_v2_per_model_and_anything_else_keeps_v1() {
        // (config, analyzer of model m, desired at kv 0.98, at kv 0.10)
        let cases = [
            ("default: {}", "saturation-v1", 5, 3),
            ("default: {analyzerName: percentage}", "saturation-v1", 5, 3),
            ("default: {analyzerName: saturation}", "saturation-v2", 6, 1),
            (
                "default: {}\nm-ns: {model_id: m, namespace: ns, analyzerName: saturation}",
                "saturation-v2",
                6,
                1,
            ),
            (
                "default: {analyzerName: saturation}\nm-ns: {model_id: m, namespace: ns, analyzerName: \"\"}",
                "saturation-v1",
                5,
                3,
            ),
        ];
        for (config, analyzer, high, low) in cases {
            let e = engine_with(&h100("ns", "v", "m", 4), config);
            for (kv, want) in [(0.98, high), (0.10, low)] {
                for i in 0..4 {
                    report_tokens(&e, "ns", &format!("v-p{i}"), kv);
                }
                let d = e.decide("ns", &sel("")).unwrap();
                assert_eq!(
                    (d[0].desired, d[0].analyzer),
                    (want, analyzer),
                    "{config} at kv {kv}"
                );
            }
        }
    }

    /// A namespace-local thresholds ConfigMap selects V2 for the models of
    /// its namespace only; the global config keeps V1 elsewhere, and a
    /// namespace-local `analyzerName` other than `saturation` keeps V1 even
    /// when the global default selects V2.
    #[test]
    fn namespace_local_analyzer_name_selects_v2_for_its_namespace_only() {
        let yaml = format!("{}{}", h100("ns", "v", "m", 4), h100("other", "w", "m", 4));
        let cases = [
            (
                "default: {}",
                "default: {analyzerName: saturation}",
                ("saturation-v2", 6),
                ("saturation-v1", 5),
            ),
            (
                "default: {analyzerName: saturation}",
                "default: {analyzerName: percentage}",
                ("saturation-v1", 5),
                ("saturation-v2", 6),
            ),
        ];
        for (global, local, in_ns, in_other) in cases {
            let e = engine_with(&yaml, global);
            let (local_config, errors) = ThresholdConfig::from_yaml_str(local).unwrap();
            assert!(errors.is_empty(), "{errors:?}");
            let config = ThresholdConfig::from_yaml_str(global)
                .unwrap()
                .0
                .with_namespace_local("ns", local_config);
            e.thresholds.store(Arc::new(config));
            for (ns, v) in [("ns", "v"), ("other", "w")] {
                for i in 0..4 {
                    report_tokens(&e, ns, &format!("{v}-p{i}"), 0.98);
                }
            }
            let got = |ns: &str| {
                let d = e.decide(ns, &sel("")).unwrap();
                (d[0].analyzer, d[0].desired)
            };
            assert_eq!(got("ns"), in_ns, "{global} / local {local}");
            assert_eq!(got("other"), in_other, "{global} / local {local}");
        }
    }

    #[test]
    fn the_endpoint_pickers_queue_is_v2s_scheduler_queue_demand() {
        let e = engine_with(
            &h100("ns", "v", "m", 4),
            "default: {analyzerName: saturation}",
        );
        for i in 0..4 {
            report_tokens(&e, "ns", &format!("v-p{i}"), 0.10);
        }
        let alone = e.decide("ns", &sel("")).unwrap()[0].desired;
        assert_eq!(alone, 1, "light load: V2 scales down");
        // 400,000 queued bytes = 100,000 tokens waiting in the endpoint
        // picker for this model, sampled at `at`.
        let queue_at = |at: SystemTime| {
            e.cache()
                .set_scheduler_queues(crate::collector::SchedulerQueues {
                    by_model: [(
                        "m".to_owned(),
                        v2::SchedulerQueue {
                            requests: 100.0,
                            bytes: 400_000.0,
                        },
                    )]
                    .into_iter()
                    .collect(),
                    at,
                })
        };
        // More than the four replicas hold.
        queue_at(SystemTime::now());
        let queued = e.decide("ns", &sel("")).unwrap()[0].desired;
        assert!(queued > 4, "the queue is demand: {queued}");
        // A queue older than the stale threshold no longer steers.
        queue_at(SystemTime::now() - Duration::from_secs(3600));
        assert_eq!(e.decide("ns", &sel("")).unwrap()[0].desired, 1);
    }

    #[test]
    fn v2_without_cache_config_holds_and_says_no_metrics() {
        let e = engine_with(
            &h100("ns", "v", "m", 4),
            "default: {analyzerName: saturation}",
        );
        for i in 0..4 {
            report(&e, "ns", &format!("v-p{i}"), 0.98, 0.0, Duration::ZERO);
        }
        let d = e.decide("ns", &sel("")).unwrap();
        assert_eq!((d[0].desired, d[0].reason), (4, TargetReason::NoMetrics));
        let snapshot = e.inventory().load();
        let o = e
            .decide_model(&snapshot, &model("ns", "m"), SystemTime::now())
            .unwrap();
        assert!(!o.has_metrics());
        assert_eq!(o.analyzer, "saturation-v2");
    }

    struct FixedAccelerators(BTreeMap<String, u32>);

    impl AcceleratorInventory for FixedAccelerators {
        fn free_by_type(&self) -> Option<BTreeMap<String, u32>> {
            Some(self.0.clone())
        }
        fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
            Some(self.0.clone())
        }
        fn pod_gpus(&self, _: &str, _: &str) -> Option<u32> {
            Some(1)
        }
    }

    /// Upstream's limiter on the V1 path, from the global `enableLimiter`:
    /// 5 H100 in the cluster, 4 used by the two models' current replicas (1
    /// GPU each), 1 free. Both models want +1; model a's replicas are
    /// saturated (average spare KV 0), b's have 0.05 spare: a gets the GPU,
    /// b is limited and says so. Without `enableLimiter`, both grow.
    #[test]
    fn upstream_limiter_on_v1_serves_the_most_saturated_variant_first() {
        let yaml = format!("{}{}", h100("ns", "a", "ma", 2), h100("ns", "b", "mb", 2));
        for (config, want_a, want_b) in [
            (
                "default: {enableLimiter: true}",
                (3, TargetReason::ScaleUp),
                (2, TargetReason::LimitedByAccelerators),
            ),
            (
                "default: {}",
                (3, TargetReason::ScaleUp),
                (3, TargetReason::ScaleUp),
            ),
        ] {
            let e = engine_with(&yaml, config)
                .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 5)].into())));
            for i in 0..2 {
                report(&e, "ns", &format!("a-p{i}"), 0.85, 0.0, Duration::ZERO);
                report(&e, "ns", &format!("b-p{i}"), 0.75, 0.0, Duration::ZERO);
            }
            let d = e.decide("ns", &sel("")).unwrap();
            let got: Vec<(&str, u32, TargetReason)> = d
                .iter()
                .map(|d| (d.variant.name.as_str(), d.desired, d.reason))
                .collect();
            assert_eq!(
                got,
                [("a", want_a.0, want_a.1), ("b", want_b.0, want_b.1)],
                "{config}"
            );
        }
    }

    #[test]
    fn limiter_allots_free_gpus_by_saturation_across_models() {
        // Model a: 3 replicas full (utilization 1.25), wants +2. Model b: 4
        // replicas at 0.98 (utilization 1.225), wants +2. 3 H100 free.
        let yaml = format!("{}{}", h100("ns", "a", "ma", 3), h100("ns", "b", "mb", 4));
        let config = "default: {analyzerName: saturation, enableLimiter: true}";
        let e = engine_with(&yaml, config)
            .with_v2_limiter(true)
            .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
        for i in 0..3 {
            report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
        }
        for i in 0..4 {
            report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
        }
        let a = e.decide("ns", &sel("variant_name=a")).unwrap();
        let b = e.decide("ns", &sel("variant_name=b")).unwrap();
        assert_eq!((a[0].desired, a[0].reason), (5, TargetReason::ScaleUp));
        assert_eq!(
            (b[0].desired, b[0].reason),
            (5, TargetReason::LimitedByAccelerators)
        );
        // Without the limiter both get what they need.
        let e = engine_with(&yaml, "default: {analyzerName: saturation}")
            .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
        for i in 0..3 {
            report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
        }
        for i in 0..4 {
            report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
        }
        assert_eq!(
            e.decide("ns", &sel("variant_name=b")).unwrap()[0].desired,
            6
        );
        // With `enableLimiter: true` but without --limiter-on-v2, as
        // upstream: V2 is not limited.
        let e = engine_with(&yaml, config)
            .with_accelerators(Arc::new(FixedAccelerators([("H100".to_owned(), 3)].into())));
        for i in 0..3 {
            report_tokens(&e, "ns", &format!("a-p{i}"), 1.0);
        }
        for i in 0..4 {
            report_tokens(&e, "ns", &format!("b-p{i}"), 0.98);
        }
        let b = e.decide("ns", &sel("variant_name=b")).unwrap();
        assert_eq!((b[0].desired, b[0].reason), (6, TargetReason::ScaleUp));
    }
}
