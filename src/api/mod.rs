//! The wire contract of external.metrics.k8s.io/v1beta1 and
//! custom.metrics.k8s.io (v1beta1, v1beta2). No I/O here: routing,
//! discovery documents and the values handlers (label selectors,
//! quantities and Status errors are in [`crate::k8s`]).

pub mod custom;
pub mod discovery;
pub mod metrics;
pub mod router;
pub mod values;
