//! The wire contract of external.metrics.k8s.io/v1beta1. No I/O here:
//! routing, discovery documents, the values handler, label selectors,
//! quantities and Status errors.

pub mod discovery;
pub mod metrics;
pub mod quantity;
pub mod router;
pub mod selector;
pub mod status;
pub mod values;
