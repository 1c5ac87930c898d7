//! The decisions of the `slo` analysis before there is anything to size
//! by: hold what is there (no metrics), size by concurrency (the cache-size
//! prior, before the time per request is learned), or let an idle model go
//! to its minimum.

use super::{SloAnalysis, SloDecision, SloModelInput, DEFAULT_STARTUP};
use crate::saturation::slo::sizing::{ReplicaShape, Z_P95};
use crate::saturation::v2::{optimize, OptimizerVariant};
use crate::saturation::{TargetReason, VariantState, VariantTarget};

/// Every variant kept at its replicas (clamped to its bounds).
pub(super) fn hold(variants: &[VariantState], reason: TargetReason) -> Vec<VariantTarget> {
    variants
        .iter()
        .map(|s| VariantTarget::held(s, reason))
        .collect()
}

/// Before the time per request is known (no busy minute seen yet), the
/// cache-size prior: sized by concurrency, the requests running plus those
/// waiting (at most as many again: a queue spike alone never asks for
/// everything) in replicas of the p95 sequences the cache holds.
pub(super) fn by_concurrency(
    input: &SloModelInput<'_>,
    running: f64,
    waiting: f64,
    sequences: f64,
    tokens_per_sequence: f64,
) -> SloDecision {
    let demand = running + waiting.min(running.max(1.0));
    // The p95 rule with no wait allowed: N + z sqrt(N) <= sequences.
    let per = ReplicaShape {
        sequences,
        seconds_per_request: 1.0,
    }
    .max_rate(Z_P95, 0.0);
    let variants: Vec<OptimizerVariant> = input
        .variants
        .iter()
        .map(|v| OptimizerVariant::from_state(v, per))
        .collect();
    let supply: f64 = input
        .variants
        .iter()
        .map(|v| f64::from(v.spec_replicas) * per)
        .sum();
    let targets = if demand > supply {
        optimize(&variants, demand - supply, 0.0)
    } else {
        // No scale-down before the rate is known.
        hold(input.variants, TargetReason::Steady)
    };
    SloDecision::Sized {
        analysis: SloAnalysis {
            arrival_rate: 0.0,
            sized_rate: 0.0,
            backlog: waiting,
            seconds_per_request: 0.0,
            tokens_per_sequence,
            prefill_seconds: None,
            per_replica_rate: vec![0.0; input.variants.len()],
            startup_seconds: DEFAULT_STARTUP.as_secs_f64(),
        },
        targets,
    }
}

/// Nothing in flight and nothing learned yet: every variant may go to its
/// minimum (the cheapest keeps one), as an idle model needs no capacity.
pub(super) fn idle(input: &SloModelInput<'_>) -> SloDecision {
    let variants: Vec<OptimizerVariant> = input
        .variants
        .iter()
        .map(|v| OptimizerVariant::from_state(v, 1.0))
        .collect();
    let spare = f64::from(input.variants.iter().map(|v| v.spec_replicas).sum::<u32>());
    SloDecision::Sized {
        analysis: SloAnalysis {
            arrival_rate: 0.0,
            sized_rate: 0.0,
            backlog: 0.0,
            seconds_per_request: 0.0,
            tokens_per_sequence: 0.0,
            prefill_seconds: None,
            per_replica_rate: vec![0.0; input.variants.len()],
            startup_seconds: DEFAULT_STARTUP.as_secs_f64(),
        },
        targets: optimize(&variants, 0.0, spare),
    }
}
