//! The one entry to the analyses: [`Analyzers::decide`] runs the analysis
//! a model's `analyzerName` selects ([`AnalyzerKind`]: V1, V2 or slo, with
//! slo's fallback to V2 or V1 when it misses a signal) and says which
//! decided and what it found. The server's decision engine and `simulate`
//! both call it, so the dispatch is written once.
//!
//! Why a kind plus one holder of state rather than one enum value per
//! model: V2 and slo keep history per model inside one analyzer each
//! (keyed by namespace and model), and which analysis applies to a model
//! is configuration that can change between two decisions, so the kind
//! is read from the thresholds at each decision while the history lives
//! in the holder. A new analysis is a new [`AnalyzerKind`] variant (and
//! its config name), its module, its state here and its arm in `decide`.

use std::sync::Arc;
use std::time::SystemTime;

use super::slo::{
    MissingSignal, SloAnalysis, SloAnalyzer, SloDecision, SloModelInput, SloObjective, SloReplica,
};
use super::v2::{
    self, ReplicaTokens, SchedulerQueue, TokenAnalysis, TokenAnalyzer, TokenModelInput,
    TokenVariant,
};
use super::{
    decide_acted_on, AnalyzerKind, HpaView, ModelAnalysis, ModelInput, PercentageAnalyzer,
    ReplicaLoad, SaturationAnalyzer, SaturationThresholds, VariantState, VariantTarget,
};

/// What the analysis that decided found (a model held without the
/// metrics it needs has none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Analysis {
    V1(ModelAnalysis),
    V2(TokenAnalysis),
    Slo(SloAnalysis),
}

/// One model's inputs, in the shape of each analysis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnalysisInput<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) model_id: &'a str,
    /// V1's view of the ready replicas.
    pub(crate) loads: &'a [ReplicaLoad],
    /// V2's view.
    pub(crate) tokens: &'a [ReplicaTokens],
    /// slo's view.
    pub(crate) slo: &'a [SloReplica],
    pub(crate) variants: &'a [VariantState],
    /// V2's view of the variants (in `variants`' order).
    pub(crate) token_variants: &'a [TokenVariant],
    pub(crate) thresholds: &'a SaturationThresholds,
    pub(crate) objective: SloObjective,
    /// The endpoint picker's queue, when fresh.
    pub(crate) scheduler_queue: Option<SchedulerQueue>,
    /// The HPA's view of each variant (in `variants`' order).
    pub(crate) hpas: &'a [HpaView],
}

/// What [`Analyzers::decide`] decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decided {
    /// Per variant, in input order: V1's already stepped into the HPA's
    /// tolerance band; V2's and slo's not yet (see [`Decided::steps_pending`]),
    /// because the limiter caps them first.
    pub(crate) targets: Vec<VariantTarget>,
    pub(crate) analysis: Option<Analysis>,
    pub(crate) decided_by: AnalyzerKind,
    /// slo could not size the model: the signal it missed.
    pub(crate) slo_fallback: Option<MissingSignal>,
    /// Whether [`Decided::step`] still has to run.
    pub(crate) steps_pending: bool,
}

impl Decided {
    /// Steps V2's and slo's targets into the HPA's tolerance band (after
    /// the limiter, if any); V1's already are.
    pub(crate) fn step(&mut self, variants: &[VariantState], hpas: &[HpaView]) {
        if std::mem::take(&mut self.steps_pending) {
            let max: Vec<u32> = variants.iter().map(|s| s.max_replicas).collect();
            self.targets = v2::tolerance_steps(&max, hpas, std::mem::take(&mut self.targets));
        }
    }
}

/// The analyses, with the history V2 and slo keep per model.
pub(crate) struct Analyzers {
    v1: Arc<dyn SaturationAnalyzer>,
    v2: TokenAnalyzer,
    slo: SloAnalyzer,
}

impl Default for Analyzers {
    fn default() -> Self {
        Self::new(Arc::new(PercentageAnalyzer))
    }
}

impl std::fmt::Debug for Analyzers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzers")
            .field("v1", &self.v1.name())
            .finish()
    }
}

impl Analyzers {
    pub(crate) fn new(v1: Arc<dyn SaturationAnalyzer>) -> Self {
        Analyzers {
            v1,
            v2: TokenAnalyzer::new(),
            slo: SloAnalyzer::new(),
        }
    }

    /// V1 over `input`: the analysis, then tolerance-aware steps.
    pub(crate) fn decide_v1(&self, input: &AnalysisInput<'_>) -> Decided {
        let decision = decide_acted_on(
            self.v1.as_ref(),
            &ModelInput {
                replicas: input.loads,
                variants: input.variants,
                thresholds: input.thresholds,
            },
            input.hpas,
        );
        Decided {
            targets: decision.targets,
            analysis: decision.analysis.map(Analysis::V1),
            decided_by: AnalyzerKind::Percentage,
            slo_fallback: None,
            steps_pending: false,
        }
    }

    /// V2 over `input` (advances its history of the model).
    pub(crate) fn decide_v2(&self, input: &AnalysisInput<'_>, now: SystemTime) -> Decided {
        let decision = self.v2.decide(
            &TokenModelInput {
                namespace: input.namespace,
                model_id: input.model_id,
                replicas: input.tokens,
                variants: input.token_variants,
                thresholds: input.thresholds,
                scheduler_queue: input.scheduler_queue,
            },
            now,
        );
        Decided {
            targets: decision.targets,
            analysis: decision.analysis.map(Analysis::V2),
            decided_by: AnalyzerKind::Tokens,
            slo_fallback: None,
            steps_pending: true,
        }
    }

    /// The analysis `kind` names over `input`; slo falls back to V2 when
    /// it misses a signal, to V1 when V2 would miss it too (the cache size).
    pub(crate) fn decide(
        &self,
        kind: AnalyzerKind,
        input: &AnalysisInput<'_>,
        now: SystemTime,
    ) -> Decided {
        match kind {
            AnalyzerKind::Percentage => self.decide_v1(input),
            AnalyzerKind::Tokens => self.decide_v2(input, now),
            AnalyzerKind::Slo => {
                let decision = self.slo.decide(
                    &SloModelInput {
                        namespace: input.namespace,
                        model_id: input.model_id,
                        replicas: input.slo,
                        variants: input.variants,
                        objective: input.objective,
                        headroom: input.thresholds.slo_headroom,
                        scheduler_queue: input.scheduler_queue.map(|q| q.requests),
                    },
                    now,
                );
                match decision {
                    SloDecision::Sized { targets, analysis } => Decided {
                        targets,
                        analysis: Some(Analysis::Slo(analysis)),
                        decided_by: AnalyzerKind::Slo,
                        slo_fallback: None,
                        steps_pending: true,
                    },
                    SloDecision::NoMetrics { targets } => Decided {
                        targets,
                        analysis: None,
                        decided_by: AnalyzerKind::Slo,
                        slo_fallback: None,
                        steps_pending: false,
                    },
                    SloDecision::Missing(missing) => {
                        let mut fallback = if missing == MissingSignal::CacheConfig {
                            self.decide_v1(input)
                        } else {
                            self.decide_v2(input, now)
                        };
                        fallback.slo_fallback = Some(missing);
                        tracing::debug!(
                            namespace = %input.namespace,
                            model_id = %input.model_id,
                            missing = missing.as_str(),
                            fallback = fallback.decided_by.as_str(),
                            "analyzerName slo cannot size the model without this signal: another analysis decides"
                        );
                        fallback
                    }
                }
            }
        }
    }
}
