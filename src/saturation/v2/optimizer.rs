//! The cost-aware optimizer (upstream WVA's `CostAwareOptimizer`, written
//! from its documented behaviour) and the accelerator limiter's allotment.
//!
//! - Scale up by `ceil(remaining / capacity)` replicas on variants in
//!   ascending cost per token of capacity, until the requirement is covered
//!   (a variant stops at its `maxReplicas` and hands the rest on).
//! - Scale down by `floor(remaining spare / capacity)` replicas from the most
//!   expensive variant first; the cheapest variant with replicas keeps one
//!   when no other variant has any; no variant goes below its `minReplicas`.
//! - Variants whose capacity is unknown (0) are skipped both ways.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::saturation::{TargetReason, VariantState, VariantTarget};

/// What the optimizer needs of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerVariant {
    pub name: String,
    pub cost: f64,
    /// Tokens of capacity per replica (0 = unknown).
    pub per_replica: f64,
    /// The replica count decisions start from (spec replicas).
    pub current: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

impl OptimizerVariant {
    pub fn from_state(s: &VariantState, per_replica: f64) -> Self {
        OptimizerVariant {
            name: s.name.clone(),
            cost: s.cost,
            per_replica,
            current: s.spec_replicas,
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
        }
    }

    fn cost_per_token(&self) -> f64 {
        if self.per_replica > 0.0 {
            self.cost / self.per_replica
        } else {
            f64::INFINITY
        }
    }
}

/// Targets in input order. `required` and `spare` are in tokens; at most
/// one of them acts (required first), as upstream.
pub fn optimize(variants: &[OptimizerVariant], required: f64, spare: f64) -> Vec<VariantTarget> {
    let mut desired: Vec<u32> = variants.iter().map(|v| v.current).collect();
    if required > 0.0 {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.sort_by(|&a, &b| {
            let (va, vb) = (&variants[a], &variants[b]);
            va.cost_per_token()
                .partial_cmp(&vb.cost_per_token())
                .unwrap_or(Ordering::Equal)
                .then_with(|| va.name.cmp(&vb.name))
        });
        let mut remaining = required;
        for i in order {
            let v = &variants[i];
            if remaining <= 0.0 {
                break;
            }
            if v.per_replica <= 0.0 {
                continue;
            }
            let needed = (remaining / v.per_replica).ceil();
            let room = v.max_replicas.saturating_sub(desired[i]);
            let add = (needed.min(room as f64)) as u32;
            desired[i] += add;
            remaining -= add as f64 * v.per_replica;
        }
    } else if spare > 0.0 {
        // Upstream protects the cheapest variant of all; when that one has
        // no replica, an expensive variant's last replica could go and the
        // model would be left with none. The cheapest variant that *has*
        // replicas is protected instead (the same one whenever the cheapest
        // has replicas, which is every upstream test case).
        let cheapest = (0..variants.len())
            .filter(|&i| variants[i].current > 0)
            .min_by(|&a, &b| {
                variants[a]
                    .cost
                    .partial_cmp(&variants[b].cost)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| variants[a].name.cmp(&variants[b].name))
            });
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.sort_by(|&a, &b| {
            variants[b]
                .cost
                .partial_cmp(&variants[a].cost)
                .unwrap_or(Ordering::Equal)
                .then_with(|| variants[b].name.cmp(&variants[a].name))
        });
        let mut remaining = spare;
        for i in order {
            let v = &variants[i];
            if remaining <= 0.0 {
                break;
            }
            if v.per_replica <= 0.0 {
                continue;
            }
            let others_have_replicas = desired.iter().enumerate().any(|(j, d)| j != i && *d > 0);
            let protect = u32::from(Some(i) == cheapest && !others_have_replicas);
            let floor = v.min_replicas.max(protect);
            let removable = desired[i].saturating_sub(floor);
            let remove = ((remaining / v.per_replica).floor().min(removable as f64)) as u32;
            if remove == 0 {
                continue;
            }
            desired[i] -= remove;
            remaining -= remove as f64 * v.per_replica;
        }
    }
    variants
        .iter()
        .zip(desired)
        .map(|(v, d)| {
            let (desired, reason) = if d < v.min_replicas {
                (v.min_replicas, TargetReason::ClampedToMin)
            } else if d > v.max_replicas {
                (v.max_replicas, TargetReason::ClampedToMax)
            } else {
                (d, TargetReason::of_move(v.current, d))
            };
            VariantTarget {
                name: v.name.clone(),
                current: v.current,
                desired,
                reason,
            }
        })
        .collect()
}

/// One variant's scale-up competing for accelerators.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScaleUpClaim {
    /// Index of the model in the caller's list (for the result).
    pub(crate) model: usize,
    pub(crate) variant: String,
    pub(crate) accelerator: String,
    pub(crate) gpus_per_replica: u32,
    /// Replicas the optimizer added.
    pub(crate) wanted: u32,
    /// Demand over supply of the model: the most saturated model goes first.
    pub(crate) utilization: f64,
    pub(crate) cost: f64,
}

/// What the limiter granted a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) granted: u32,
    pub(crate) limited: bool,
}

/// Allots the free accelerators of each type to scale-ups, greedily: the
/// most saturated model first (ties: cheaper variant, then name), each
/// taking the whole replicas it can pay for with what is left. Returns one
/// grant per claim, in input order. An accelerator type missing from `free`
/// has none free.
pub(crate) fn allot_accelerators(
    claims: &[ScaleUpClaim],
    free: &BTreeMap<String, u32>,
) -> Vec<Grant> {
    let mut left = free.clone();
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by(|&a, &b| {
        let (ca, cb) = (&claims[a], &claims[b]);
        cb.utilization
            .partial_cmp(&ca.utilization)
            .unwrap_or(Ordering::Equal)
            .then_with(|| ca.cost.partial_cmp(&cb.cost).unwrap_or(Ordering::Equal))
            .then_with(|| ca.variant.cmp(&cb.variant))
    });
    let mut grants = vec![
        Grant {
            granted: 0,
            limited: false
        };
        claims.len()
    ];
    for i in order {
        let c = &claims[i];
        let per = c.gpus_per_replica.max(1);
        let pool = left.entry(c.accelerator.clone()).or_insert(0);
        let granted = c.wanted.min(*pool / per);
        *pool -= granted * per;
        grants[i] = Grant {
            granted,
            limited: granted < c.wanted,
        };
    }
    grants
}
