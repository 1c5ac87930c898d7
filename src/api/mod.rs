//! The wire contract of external.metrics.k8s.io/v1beta1 and
//! custom.metrics.k8s.io (v1beta1, v1beta2). No I/O here: parsing a
//! request into an owned [`router::ApiRequest`] (once per request),
//! discovery documents, and rendering values answers (label selectors,
//! quantities and Status errors are in [`crate::k8s`]).

pub(crate) mod custom;
pub(crate) mod discovery;
pub(crate) mod metrics;
pub mod router;
pub(crate) mod values;
