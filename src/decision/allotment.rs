//! The limiter's caps for the whole fleet, as the limiter
//! ([`super::limiter`]) computed them and each model's decision
//! ([`super::analysis`]) applies them: its own file, so that the two read
//! one type without depending on each other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::inventory::{ModelKey, Variant};
use crate::saturation::{TargetReason, VariantTarget};

/// A variant's scale-up as the limiter granted it.
#[derive(Debug, Clone)]
pub(super) struct Cap {
    pub(super) desired: u32,
    pub(super) accelerator: String,
    /// Upstream's limiter (V1) rather than ours (V2).
    pub(super) upstream: bool,
}

/// The limiter's caps for the whole fleet, by (namespace, variant).
#[derive(Debug, Default)]
pub(crate) struct Allotment {
    pub(super) caps: HashMap<(String, String), Cap>,
}

impl Allotment {
    /// Caps `targets` (of the model `key`, in `variants`' order) to what
    /// the limiter granted.
    pub(crate) fn cap(
        &self,
        key: &ModelKey,
        variants: &[&Arc<Variant>],
        targets: &mut [VariantTarget],
    ) {
        for (v, t) in variants.iter().zip(targets.iter_mut()) {
            let Some(cap) = self.caps.get(&(v.namespace.clone(), v.name.clone())) else {
                continue;
            };
            if cap.upstream {
                tracing::info!(namespace = %key.namespace, model_id = %key.model_id, variant = %t.name, wanted = t.desired, granted = cap.desired, accelerator = %cap.accelerator, "scale-up limited by free accelerators (upstream's limiter)");
            } else {
                tracing::info!(namespace = %key.namespace, model_id = %key.model_id, variant = %t.name, wanted = t.desired, granted = cap.desired, accelerator = %cap.accelerator, "scale-up limited by free accelerators");
            }
            t.desired = cap.desired;
            t.reason = TargetReason::LimitedByAccelerators;
        }
    }
}
