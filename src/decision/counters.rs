//! Counts of decision work on `/metrics` (sweeps, and analyses by what
//! ran them): a file of its own because the sweep, the analysis and the
//! limiter all count, and none of them may depend on another for it.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What ran an analysis.
/// (Lower case: the variants are the label's values.)
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub(crate) enum Trigger {
    /// The fleet sweep after a fetch cycle.
    sweep,
    /// A request the sweep could not answer (or a direct call).
    demand,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TriggerLabels {
    trigger: Trigger,
}

/// Counts of decision work, exported on `/metrics`.
#[derive(Debug, Clone, Default)]
pub(crate) struct DecisionCounters {
    /// Fleet sweeps (one per fetch cycle).
    pub(super) sweeps: Counter,
    /// Model analyses run, by what ran them.
    analyses: Family<TriggerLabels, Counter>,
}

impl DecisionCounters {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "wva_decision_sweeps",
            "Fleet decision sweeps (every model decided once, after each fetch cycle)",
            self.sweeps.clone(),
        );
        registry.register(
            "wva_model_analyses",
            "Model analyses run, by the sweep (trigger=sweep) or on demand for what the sweep could not answer (trigger=demand)",
            self.analyses.clone(),
        );
    }

    /// Counts one model analysis.
    pub(crate) fn analysed(&self, trigger: Trigger) {
        self.analyses
            .get_or_create(&TriggerLabels { trigger })
            .inc();
    }
}
