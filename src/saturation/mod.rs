//! The saturation analysis (pure, no I/O): replica metrics and thresholds
//! in, per-variant desired replicas out.

pub mod analyzer;
pub mod targets;
pub mod thresholds;

pub use analyzer::{analyze_model, ModelAnalysis, ReplicaLoad};
pub use targets::{compute_targets, TargetReason, VariantState, VariantTarget};
pub use thresholds::{SaturationThresholds, ThresholdConfig, ThresholdError, CONFIGMAP_NAME};

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
    pub analysis: Option<ModelAnalysis>,
    pub targets: Vec<VariantTarget>,
}

/// An analysis strategy. V1 is percentage based; a token-based analyzer can
/// come later behind the same trait.
pub trait SaturationAnalyzer: Send + Sync {
    fn name(&self) -> &'static str;
    fn decide(&self, input: &ModelInput<'_>) -> ModelDecision;
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
