//! The HPA controller's side of the contract (pure, no I/O): what it
//! computes from the values we serve, so that the analysis serves moves the
//! HPA acts on and `simulate` can run the same algorithm offline.

pub mod behavior;
pub mod replica_calculator;
pub mod served;
pub mod tolerance;

pub use behavior::{
    BehaviorState, HpaBehavior, PolicyKind, RatePolicy, ScalingRules, SelectPolicy,
};
pub use replica_calculator::{
    desired_replicas, external_metric_proposal, CalculatorError, ExternalTarget, HpaBounds,
    HpaOutcome, MetricProposal, ScaleState,
};
pub use served::{hpa_proposal, hpa_reaches, served_milli, SERVED_TARGETS};
pub use tolerance::{parse_tolerance, ToleranceError, Tolerances, DEFAULT_TOLERANCE};
