//! The saturation analysis (pure, no I/O): replica metrics and thresholds
//! in, per-variant desired replicas out.

pub(crate) mod analyzer;
pub(crate) mod analyzers;
pub(crate) mod readings;
pub mod scale_to_zero;
pub mod slo;
pub(crate) mod steps;
#[cfg(test)]
pub(crate) mod strategies;
pub(crate) mod targets;
pub mod thresholds;
pub mod v2;

pub use analyzer::{analyze_model, ModelAnalysis, ReplicaLoad};
pub use scale_to_zero::{ModelScaleToZero, ScaleToZeroConfig};
pub(crate) use steps::{tolerance_aware_steps, HpaView};
pub use targets::{compute_targets, TargetReason, VariantState, VariantTarget};
pub use thresholds::{AnalyzerKind, SaturationThresholds, ThresholdConfig, CONFIGMAP_NAME};
pub use thresholds::{LocatedThresholdError, ThresholdError};

/// Everything one model's decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct ModelInput<'a> {
    pub replicas: &'a [ReplicaLoad],
    pub variants: &'a [VariantState],
    pub thresholds: &'a SaturationThresholds,
}

/// The analysis and the per-variant targets (in input order).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDecision {
    pub(crate) analysis: Option<ModelAnalysis>,
    pub(crate) targets: Vec<VariantTarget>,
}

/// V1's analysis behind a trait, so that tests and benchmarks can pass
/// their own; the analyses as a whole (V1, V2, slo) are chosen per model
/// in [`analyzers::Analyzers::decide`].
pub trait SaturationAnalyzer: Send + Sync {
    fn name(&self) -> &'static str;
    fn decide(&self, input: &ModelInput<'_>) -> ModelDecision;
}

/// The decision served for one model: the analyzer's targets rewritten into
/// moves the HPA acts on (tolerance-aware steps). The server's decision
/// engine and `simulate` both call this, so they cannot drift apart.
pub(crate) fn decide_acted_on(
    analyzer: &dyn SaturationAnalyzer,
    input: &ModelInput<'_>,
    hpas: &[HpaView],
) -> ModelDecision {
    let decision = analyzer.decide(input);
    let targets = tolerance_aware_steps(
        decision.analysis.as_ref(),
        input.thresholds,
        input.variants,
        hpas,
        decision.targets,
    );
    ModelDecision {
        analysis: decision.analysis,
        targets,
    }
}

/// The V1 analyzer: KV-cache and queue percentages (DESIGN section 4).
#[derive(Debug, Default, Clone, Copy)]
pub struct PercentageAnalyzer;

impl SaturationAnalyzer for PercentageAnalyzer {
    fn name(&self) -> &'static str {
        "percentage"
    }

    fn decide(&self, input: &ModelInput<'_>) -> ModelDecision {
        let analysis =
            (!input.replicas.is_empty()).then(|| analyze_model(input.replicas, input.thresholds));
        let targets = compute_targets(analysis.as_ref(), input.variants);
        ModelDecision { analysis, targets }
    }
}

#[cfg(test)]
mod properties {
    use super::strategies::{hostile, variant_states as variants};
    use super::*;
    use proptest::prelude::*;

    fn replicas() -> impl Strategy<Value = Vec<ReplicaLoad>> {
        prop::collection::vec((0.0f64..=1.0, 0.0f64..20.0), 0..12).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (kv, queue))| ReplicaLoad {
                    pod: format!("p{i}"),
                    variant: "v".into(),
                    kv,
                    queue,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn targets_stay_in_bounds_and_move_one_step(replicas in replicas(), variants in variants()) {
            let th = SaturationThresholds::default();
            let d = PercentageAnalyzer.decide(&ModelInput { replicas: &replicas, variants: &variants, thresholds: &th });
            let mut steps = 0;
            for (t, v) in d.targets.iter().zip(&variants) {
                prop_assert!(t.desired >= v.min_replicas && t.desired <= v.max_replicas, "{t:?} out of [{}, {}]", v.min_replicas, v.max_replicas);
                let clamped = v.spec_replicas.clamp(v.min_replicas, v.max_replicas);
                if t.desired != clamped {
                    steps += 1;
                    prop_assert_eq!(t.desired.abs_diff(clamped), 1);
                }
            }
            prop_assert!(steps <= 1, "at most one step per model per decision: {:?}", d.targets);
        }

        #[test]
        fn hostile_readings_keep_targets_in_bounds(
            readings in prop::collection::vec((hostile(50.0), hostile(50.0)), 0..12),
            variants in variants(),
        ) {
            let replicas: Vec<ReplicaLoad> = readings
                .iter()
                .enumerate()
                .map(|(i, &(kv, queue))| ReplicaLoad { pod: format!("p{i}"), variant: format!("v{}", i % variants.len()), kv, queue })
                .collect();
            let th = SaturationThresholds::default();
            let d = PercentageAnalyzer.decide(&ModelInput { replicas: &replicas, variants: &variants, thresholds: &th });
            for (t, v) in d.targets.iter().zip(&variants) {
                prop_assert!(t.desired >= v.min_replicas && t.desired <= v.max_replicas, "{t:?} out of [{}, {}]", v.min_replicas, v.max_replicas);
            }
        }

        #[test]
        fn decisions_do_not_depend_on_replica_order(mut replicas in replicas(), variants in variants()) {
            let th = SaturationThresholds::default();
            let a = PercentageAnalyzer.decide(&ModelInput { replicas: &replicas, variants: &variants, thresholds: &th });
            replicas.reverse();
            let b = PercentageAnalyzer.decide(&ModelInput { replicas: &replicas, variants: &variants, thresholds: &th });
            let desired = |d: &ModelDecision| d.targets.iter().map(|t| t.desired).collect::<Vec<_>>();
            prop_assert_eq!(desired(&a), desired(&b));
        }
    }
}
