//! One model's decision in two halves around the fleet's limiter:
//! [`DecisionEngine::analyse`] runs the analysis the thresholds select
//! (`saturation::analyzers`: V1, V2 or slo, with slo's fallback, the same
//! dispatch `simulate` calls), [`DecisionEngine::finish`] applies
//! the fleet's accelerator allotment, the HPA's tolerance band and scale
//! to zero, and builds the outcome.

use std::sync::Arc;
use std::time::SystemTime;

use super::allotment::Allotment;
use super::counters::Trigger;
use super::inputs::{token_variants, ModelInputs};
use super::{DecisionEngine, DecisionError, ModelOutcome, VariantDecision};
use crate::inventory::{InventorySnapshot, ModelKey};
use crate::k8s::quantity::desired_ratio_milli;
use crate::saturation::analyzers::{Analysis, AnalysisInput, Decided};
use crate::saturation::scale_to_zero::{self, ModelActivity, ZeroAction};
use crate::saturation::v2::TokenAnalysis;
use crate::saturation::{AnalyzerKind, HpaView, SaturationThresholds};

/// A model analysed, before the fleet's limiter and the last steps.
pub(crate) struct Analysed<'s> {
    pub(crate) inputs: ModelInputs<'s>,
    pub(crate) thresholds: SaturationThresholds,
    hpas: Vec<HpaView>,
    pub(crate) decided: Decided,
}

impl Analysed<'_> {
    /// Whether any variant wants to grow.
    pub(crate) fn scales_up(&self) -> bool {
        self.decided.targets.iter().any(|t| t.desired > t.current)
    }

    /// V2's analysis, when V2 decided with metrics.
    pub(crate) fn token_analysis(&self) -> Option<&TokenAnalysis> {
        match &self.decided.analysis {
            Some(Analysis::V2(a)) => Some(a),
            _ => None,
        }
    }
}

impl DecisionEngine {
    /// Runs the analysis the model's thresholds select over its inputs.
    /// V2 and slo keep history per model: each call advances it.
    pub(crate) fn analyse<'s>(
        &self,
        snapshot: &'s InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
        trigger: Trigger,
    ) -> Result<Analysed<'s>, DecisionError> {
        let thresholds = self
            .thresholds
            .load()
            .for_model(&key.model_id, &key.namespace);
        let inputs = self.model_inputs(snapshot, key, now)?;
        self.counters.analysed(trigger);
        // Moves inside the HPA's tolerance band would be ignored by it: widen
        // them to the smallest move it acts on, or hold and say so.
        let hpas = self.hpa_views(&inputs.variants);
        let token_variants = token_variants(&inputs.variants, &inputs.states);
        // The same dispatch `simulate` runs.
        let decided = self.analyzers.decide(
            thresholds.analyzer,
            &AnalysisInput {
                namespace: &key.namespace,
                model_id: &key.model_id,
                loads: &inputs.replicas,
                tokens: &inputs.tokens,
                slo: &inputs.slo,
                variants: &inputs.states,
                token_variants: &token_variants,
                thresholds: &thresholds,
                objective: self.objective_for(&thresholds, &key.model_id),
                scheduler_queue: self.scheduler_queue(&key.model_id, now),
                hpas: &hpas,
            },
            now,
        );
        Ok(Analysed {
            inputs,
            thresholds,
            hpas,
            decided,
        })
    }

    /// Whether the model's decision goes through a limiter: the global
    /// `enableLimiter` on V1, or its own entry's on V2 with
    /// `--limiter-on-v2`; only scale-ups are limited.
    pub(crate) fn limited(&self, a: &Analysed<'_>) -> bool {
        let v1 = a.decided.decided_by == AnalyzerKind::Percentage
            && self.thresholds.load().default_thresholds().enable_limiter;
        let v2 = self.v2_limiter && a.thresholds.enable_limiter && a.token_analysis().is_some();
        (v1 || v2) && a.scales_up()
    }

    /// The model's outcome: its targets capped by the fleet's allotment,
    /// stepped into the HPA's band, then scale to zero.
    pub(crate) fn finish(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        now: SystemTime,
        analysed: Analysed<'_>,
        allotment: Option<&Allotment>,
    ) -> ModelOutcome {
        let Analysed {
            inputs,
            thresholds: _,
            hpas,
            mut decided,
        } = analysed;
        if let Some(allotment) = allotment {
            allotment.cap(key, &inputs.variants, &mut decided.targets);
        }
        decided.step(&inputs.states, &hpas);
        let Decided {
            mut targets,
            analysis,
            decided_by,
            slo_fallback,
            steps_pending: _,
        } = decided;
        // Scale to zero when idle for the retention period, from zero when
        // the endpoint picker queues requests for a model with no replica.
        let zero = self
            .scale_to_zero
            .load()
            .for_model(&key.model_id, &key.namespace);
        let activity = ModelActivity {
            config: zero,
            ready: inputs.states.iter().map(|s| s.ready_replicas).sum(),
            requests: if zero.enabled {
                self.model_requests(snapshot, key, now, zero.retention)
            } else {
                None
            },
            scheduler_queue: self.scheduler_queue(&key.model_id, now).map(|q| q.requests),
        };
        let zero_action = scale_to_zero::apply(&activity, &inputs.states, &mut targets);
        if zero_action != ZeroAction::None {
            tracing::debug!(namespace = %key.namespace, model_id = %key.model_id, action = zero_action.as_str(), "scale-to-zero policy applied");
        }
        let decisions = inputs
            .variants
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
                    analyzer: decided_by.as_str(),
                }
            })
            .collect();
        ModelOutcome {
            key: key.clone(),
            analysis,
            analyzer: decided_by.as_str(),
            slo_fallback,
            replicas_used: inputs.replicas.len(),
            newest_sample_age: inputs.newest,
            freshness: inputs.newest.map(|age| self.freshness.classify(age)),
            decisions,
            zero_action,
            valid_until: inputs.valid_until,
        }
    }
}
