//! The HPA controller's side of the contract (pure, no I/O): what it
//! computes from the values we serve, so that the analysis serves moves the
//! HPA acts on and `simulate` can run the same algorithm offline.

pub(crate) mod behavior;
pub(crate) mod replica_calculator;
pub(crate) mod served;
pub(crate) mod tolerance;

pub use behavior::{BehaviorState, HpaBehavior};
pub use behavior::{PolicyKind, RatePolicy, ScalingRules, SelectPolicy};

pub use replica_calculator::{
    desired_replicas, CalculatorError, HpaBounds, HpaOutcome, MetricProposal,
};
pub use replica_calculator::{external_metric_proposal, ExternalTarget, ScaleState};

#[cfg(test)]
pub(crate) use served::{hpa_proposal, SERVED_TARGETS};
pub(crate) use served::{hpa_reaches, served_milli};
pub use tolerance::{parse_tolerance, ToleranceError, Tolerances, DEFAULT_TOLERANCE};
