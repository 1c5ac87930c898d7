//! The token-based saturation analysis (V2, `analyzerName: saturation`):
//! capacity in KV tokens instead of percentages, several replicas per step,
//! cost-aware placement (upstream WVA's `saturation_v2` analyzer and
//! `pipeline` optimizer; facts re-derived, code our own). Pure: the only
//! state is [`TokenState`], dated by sample times and evicted by an
//! injected clock.
//!
//! Entry point for callers outside the server (for example `simulate`):
//! build a [`TokenModelInput`] and call [`TokenAnalyzer::decide`] with the
//! current time; keep the same `TokenAnalyzer` across calls so that its k2
//! history accumulates.

pub(crate) mod capacity;
pub mod engine;
pub mod greedy_limiter;
pub mod history;
pub mod optimizer;

use std::sync::Mutex;
use std::time::SystemTime;

pub(crate) use capacity::{
    analyze_tokens, KvCacheConfig, ReplicaTokens, SchedulerQueue, TokenAnalysis, TokenModelInput,
    TokenState, TokenVariant,
};
pub(crate) use engine::{ContainerArgs, EngineParams};
#[cfg(test)]
pub(crate) use history::CapacityRecord;
#[cfg(test)]
pub(crate) use optimizer::Grant;
pub(crate) use optimizer::{allot_accelerators, optimize, OptimizerVariant, ScaleUpClaim};

use super::{HpaView, TargetReason, VariantTarget};
use crate::hpa::hpa_reaches;

/// Name of V2 in served labels and `/metrics`.
pub(crate) const ANALYZER_NAME: &str = "saturation-v2";

/// A V2 decision for one model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenDecision {
    /// None when no replica reports `vllm:cache_config_info` (hold).
    pub(crate) analysis: Option<TokenAnalysis>,
    /// In input variant order.
    pub(crate) targets: Vec<VariantTarget>,
}

/// The V2 analyzer with its state. Shared by all requests; the lock is
/// held for one model's analysis (microseconds).
#[derive(Debug, Default)]
pub(crate) struct TokenAnalyzer {
    state: Mutex<TokenState>,
}

impl TokenAnalyzer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Analyses one model and places the result on its variants. `now`
    /// drives the evictions only.
    pub(crate) fn decide(&self, input: &TokenModelInput<'_>, now: SystemTime) -> TokenDecision {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.evict(now);
        decide_with(input, &mut state)
    }

    /// Sizes of the state: (k2 history keys, remembered capacities).
    #[cfg(test)]
    pub(crate) fn state_sizes(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (state.k2_history.keys(), state.capacity.len())
    }
}

/// [`TokenAnalyzer::decide`] on explicit state.
pub(crate) fn decide_with(input: &TokenModelInput<'_>, state: &mut TokenState) -> TokenDecision {
    let replicas: Vec<ReplicaTokens> = input.replicas.iter().map(capacity::trusted).collect();
    let input = &TokenModelInput {
        replicas: &replicas,
        scheduler_queue: input.scheduler_queue.and_then(capacity::trusted_queue),
        ..*input
    };
    let hold = |reason| -> Vec<VariantTarget> {
        input
            .variants
            .iter()
            .map(|v| VariantTarget::held(&v.state, reason))
            .collect()
    };
    if !input.replicas.iter().any(|r| r.cache.is_some()) {
        return TokenDecision {
            analysis: None,
            targets: hold(TargetReason::NoMetrics),
        };
    }
    let analysis = analyze_tokens(input, state);
    let variants: Vec<OptimizerVariant> = input
        .variants
        .iter()
        .zip(&analysis.variants)
        .map(|(v, c)| OptimizerVariant::from_state(&v.state, c.per_replica))
        .collect();
    let targets = optimize(&variants, analysis.required, analysis.spare);
    TokenDecision {
        analysis: Some(analysis),
        targets,
    }
}

/// The HPA ignores moves inside its tolerance band. A V2 scale-up the HPA
/// would ignore grows to the smallest count it acts on (more capacity than
/// required is safe), up to `maxReplicas`; a scale-down it would ignore
/// holds, since removing more than the spare allows would cross the
/// scale-down boundary.
pub(crate) fn tolerance_steps(
    max_replicas: &[u32],
    hpas: &[HpaView],
    mut targets: Vec<VariantTarget>,
) -> Vec<VariantTarget> {
    for ((t, &max), hpa) in targets.iter_mut().zip(max_replicas).zip(hpas) {
        let up = match t.reason {
            TargetReason::ScaleUp => true,
            TargetReason::ScaleDown => false,
            _ => continue,
        };
        if hpa_reaches(t.desired, &hpa.scale, &hpa.tolerances) {
            continue;
        }
        let widened = up
            .then(|| (t.desired + 1..=max).find(|n| hpa_reaches(*n, &hpa.scale, &hpa.tolerances)))
            .flatten();
        match widened {
            Some(n) => t.desired = n,
            None => {
                t.desired = t.current;
                t.reason = if up {
                    TargetReason::ToleranceHoldUp
                } else {
                    TargetReason::ToleranceHoldDown
                };
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests;
