//! Assembly of one model's inputs: its variants, the metrics of its ready
//! pods in each analysis' shape, the HPA's view of each scale target, and
//! how long what was read stays what it is.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{DecisionEngine, DecisionError};
use crate::hpa::{ScaleState, Tolerances};
use crate::inventory::{InventorySnapshot, ModelKey, Variant};
use crate::saturation::slo::{SloObjective, SloReplica};
use crate::saturation::v2::{self, ReplicaTokens, TokenVariant};
use crate::saturation::{HpaView, ReplicaLoad, SaturationThresholds, VariantState};

/// The inputs of one model's decision.
pub(crate) struct ModelInputs<'s> {
    pub(crate) variants: Vec<&'s Arc<Variant>>,
    pub(crate) replicas: Vec<ReplicaLoad>,
    pub(crate) tokens: Vec<ReplicaTokens>,
    pub(crate) slo: Vec<SloReplica>,
    pub(crate) newest: Option<Duration>,
    pub(crate) states: Vec<VariantState>,
    /// Until when these inputs stay what they are with only time passing:
    /// the first moment a sample (or the endpoint picker's queue, or the
    /// fetch record of a model without samples) that was used turns stale.
    pub(crate) valid_until: SystemTime,
}

/// A variant's average spare KV capacity over its replicas that are not
/// saturated (0 when none): the limiter's priority, as upstream's
/// `AvgSpareKvCapacity`.
pub(crate) fn variant_spare_kv(
    replicas: &[ReplicaLoad],
    variant: &str,
    th: &SaturationThresholds,
) -> f64 {
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

pub(crate) fn token_variants(
    variants: &[&Arc<Variant>],
    states: &[VariantState],
) -> Vec<TokenVariant> {
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
    /// A model's latency objective: the thresholds' `sloTtftMs`/`sloTpotMs`
    /// over its service class (or `default/default`'s), over the built-in.
    pub(crate) fn objective_for(
        &self,
        thresholds: &SaturationThresholds,
        model_id: &str,
    ) -> SloObjective {
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

    /// The endpoint picker's queue for a model, if fetched recently enough
    /// to steer (younger than the stale threshold).
    pub(crate) fn scheduler_queue(
        &self,
        model_id: &str,
        now: SystemTime,
    ) -> Option<v2::SchedulerQueue> {
        let not_before = now
            .checked_sub(self.freshness.stale)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.cache.scheduler_queue(model_id, not_before)
    }

    /// Requests completed over `window`, running and waiting, summed over
    /// the model's ready pods; None when a ready pod has no fresh entry or
    /// its counter history does not cover `window` (or there is none).
    pub(crate) fn model_requests(
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

    /// The variants of a model and the metrics of its ready pods, in every
    /// analysis' shape. Errors when no ready replica has a usable sample
    /// and the backend is not known to simply have none.
    pub(crate) fn model_inputs<'s>(
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
        let stale = self.freshness.stale;
        let mut replicas = Vec::new();
        let mut tokens = Vec::new();
        let mut slo = Vec::new();
        let mut newest: Option<Duration> = None;
        let mut valid_until = SystemTime::UNIX_EPOCH + Duration::from_secs(u32::MAX.into());
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
                        waiting_latest: m.queue_waiting_latest,
                        running: m.running,
                        completion_rate: m.request_rate,
                        avg_prompt_tokens: m.avg_prompt_tokens,
                        avg_output_tokens: m.avg_generation_tokens,
                        avg_prefill_seconds: m.avg_prefill_seconds,
                        cache: m.kv_cache,
                    },
                )
            }) else {
                continue;
            };
            newest = Some(newest.map_or(age, |n| n.min(age)));
            // A replica whose newest sample is stale no longer steers decisions.
            if age <= stale {
                valid_until = valid_until.min(now + (stale - age));
                replicas.push(load);
                slo.push(slo_replica);
                tokens.push(ReplicaTokens {
                    accelerator: accelerator_of(&token.variant),
                    ..token
                });
            }
        }
        if let Some(at) = self.cache.scheduler_queues_at() {
            // A queue read within the stale threshold steers until it is not.
            if at + stale >= now {
                valid_until = valid_until.min(at + stale);
            }
        }
        if replicas.is_empty() {
            self.check_no_fresh_replica(key, newest, now)?;
            if let Some(at) = self.cache.fetched_at(key) {
                valid_until = valid_until.min(at + stale);
            }
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
            valid_until,
        })
    }

    /// The HPA's view of each variant's target (for tolerance-aware steps).
    pub(crate) fn hpa_views(&self, variants: &[&Arc<Variant>]) -> Vec<HpaView> {
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
}
