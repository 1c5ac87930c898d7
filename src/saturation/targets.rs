//! Per-variant targets of a model (DESIGN section 4, step 5): at most one
//! step per model per decision, on the variant whose cost makes it the
//! right one to grow or shrink.

use std::cmp::Ordering;

use super::analyzer::ModelAnalysis;

/// What the analysis needs to know of a variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantState {
    pub name: String,
    pub cost: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub spec_replicas: u32,
    pub ready_replicas: u32,
}

impl VariantState {
    fn in_transition(&self) -> bool {
        self.spec_replicas != self.ready_replicas
    }
}

/// Why a variant got its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetReason {
    ScaleUp,
    ScaleDown,
    Steady,
    InTransition,
    NoMetrics,
    ClampedToMin,
    ClampedToMax,
    /// The analysis wanted one more replica, but every move the HPA acts on
    /// (outside its tolerance band) is beyond `maxReplicas`.
    ToleranceHoldUp,
    /// The analysis wanted one replica less, but every move the HPA acts on
    /// would leave too little spare capacity or go below the minimum.
    ToleranceHoldDown,
    /// V2 with `enableLimiter`: the scale-up was cut to the accelerators
    /// free in the cluster.
    LimitedByAccelerators,
    /// Scale to zero: no request completed over the retention period.
    ScaledToZero,
    /// Idle over the retention period, but a variant's minReplicas is
    /// above zero: every variant at its minimum.
    IdleAtMin,
    /// No ready replica and requests queued in the endpoint picker.
    ScaleFromZero,
}

impl TargetReason {
    /// The reason of a move from `current` to `desired` replicas within
    /// the variant's bounds: up, down or steady.
    pub(crate) fn of_move(current: u32, desired: u32) -> Self {
        match desired.cmp(&current) {
            Ordering::Greater => TargetReason::ScaleUp,
            Ordering::Less => TargetReason::ScaleDown,
            Ordering::Equal => TargetReason::Steady,
        }
    }

    /// "up" / "down" for a move held by the HPA's tolerance band.
    pub(crate) fn tolerance_hold_direction(&self) -> Option<&'static str> {
        match self {
            TargetReason::ToleranceHoldUp => Some("up"),
            TargetReason::ToleranceHoldDown => Some("down"),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            TargetReason::ScaleUp => "scale_up",
            TargetReason::ScaleDown => "scale_down",
            TargetReason::Steady => "steady",
            TargetReason::InTransition => "in_transition",
            TargetReason::NoMetrics => "no_metrics",
            TargetReason::ClampedToMin => "clamped_to_min",
            TargetReason::ClampedToMax => "clamped_to_max",
            TargetReason::ToleranceHoldUp => "tolerance_hold_up",
            TargetReason::ToleranceHoldDown => "tolerance_hold_down",
            TargetReason::LimitedByAccelerators => "limited_by_accelerators",
            TargetReason::ScaledToZero => "scaled_to_zero",
            TargetReason::IdleAtMin => "idle_at_min",
            TargetReason::ScaleFromZero => "scale_from_zero",
        }
    }
}

/// The target of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantTarget {
    pub name: String,
    /// Spec replicas the decision started from.
    pub current: u32,
    pub desired: u32,
    pub reason: TargetReason,
}

impl VariantTarget {
    /// The variant kept at its spec replicas for `reason`, or clamped to
    /// its bounds when the spec is outside them (what an analysis with
    /// nothing to size by answers).
    pub(crate) fn held(s: &VariantState, reason: TargetReason) -> Self {
        let (desired, reason) = if s.spec_replicas < s.min_replicas {
            (s.min_replicas, TargetReason::ClampedToMin)
        } else if s.spec_replicas > s.max_replicas {
            (s.max_replicas, TargetReason::ClampedToMax)
        } else {
            (s.spec_replicas, reason)
        };
        VariantTarget {
            name: s.name.clone(),
            current: s.spec_replicas,
            desired,
            reason,
        }
    }
}

/// The analysis' order of preference: cheapest first, ties by name.
pub(crate) fn by_cost_then_name(a: &VariantState, b: &VariantState) -> Ordering {
    a.cost
        .partial_cmp(&b.cost)
        .unwrap_or(Ordering::Equal)
        .then_with(|| a.name.cmp(&b.name))
}

/// Computes one target per variant, in input order.
///
/// - `analysis` None (no ready replica reported metrics): hold.
/// - Any variant in transition (spec != ready): every variant holds, so that
///   capacity still starting is not counted twice.
/// - Scale up: +1 on the cheapest variant that can still grow (spec < max),
///   so that a variant at its maximum hands the step to the next cheapest.
/// - Scale down: -1 on the most expensive variant whose spec is above
///   max(1, min), so the step is not swallowed by the clamp and saturation
///   never scales a variant to zero.
/// - Finally every target is clamped to [min, max].
pub fn compute_targets(
    analysis: Option<&ModelAnalysis>,
    variants: &[VariantState],
) -> Vec<VariantTarget> {
    let mut targets: Vec<VariantTarget> = variants
        .iter()
        .map(|v| VariantTarget {
            name: v.name.clone(),
            current: v.spec_replicas,
            desired: v.spec_replicas,
            reason: TargetReason::Steady,
        })
        .collect();
    let hold = match analysis {
        None => Some(TargetReason::NoMetrics),
        Some(_) if variants.iter().any(VariantState::in_transition) => {
            Some(TargetReason::InTransition)
        }
        Some(_) => None,
    };
    if let Some(reason) = hold {
        targets.iter_mut().for_each(|t| t.reason = reason);
    } else if let Some(a) = analysis {
        let mut order: Vec<usize> = (0..variants.len()).collect();
        order.sort_by(|&i, &j| by_cost_then_name(&variants[i], &variants[j]));
        if a.should_scale_up {
            if let Some(&i) = order
                .iter()
                .find(|&&i| variants[i].spec_replicas < variants[i].max_replicas)
            {
                targets[i].desired += 1;
                targets[i].reason = TargetReason::ScaleUp;
            }
        } else if a.scale_down_safe {
            if let Some(&i) = order.iter().rev().find(|&&i| {
                let v = &variants[i];
                v.spec_replicas > v.min_replicas.max(1)
            }) {
                targets[i].desired -= 1;
                targets[i].reason = TargetReason::ScaleDown;
            }
        }
    }
    for (t, v) in targets.iter_mut().zip(variants) {
        if t.desired < v.min_replicas {
            t.desired = v.min_replicas;
            t.reason = TargetReason::ClampedToMin;
        } else if t.desired > v.max_replicas {
            t.desired = v.max_replicas;
            t.reason = TargetReason::ClampedToMax;
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::analyzer::{analyze_model, ReplicaLoad};
    use crate::saturation::SaturationThresholds;

    fn v(name: &str, cost: f64, min: u32, max: u32, spec: u32, ready: u32) -> VariantState {
        VariantState {
            name: name.into(),
            cost,
            min_replicas: min,
            max_replicas: max,
            spec_replicas: spec,
            ready_replicas: ready,
        }
    }

    fn verdict(up: bool, down: bool) -> ModelAnalysis {
        ModelAnalysis {
            replicas: 2,
            non_saturated: 2,
            avg_spare_kv: 0.3,
            avg_spare_queue: 4.0,
            should_scale_up: up,
            scale_down_safe: down,
        }
    }

    fn desired(a: Option<&ModelAnalysis>, vs: &[VariantState]) -> Vec<(u32, TargetReason)> {
        compute_targets(a, vs)
            .into_iter()
            .map(|t| (t.desired, t.reason))
            .collect()
    }

    use TargetReason::*;

    #[test]
    fn three_variants_by_cost() {
        let vs = [
            v("a", 20.0, 1, 10, 2, 2),
            v("b", 5.0, 1, 10, 2, 2),
            v("c", 15.0, 1, 10, 2, 2),
        ];
        assert_eq!(
            desired(Some(&verdict(true, false)), &vs),
            [(2, Steady), (3, ScaleUp), (2, Steady)]
        );
        assert_eq!(
            desired(Some(&verdict(false, true)), &vs),
            [(1, ScaleDown), (2, Steady), (2, Steady)]
        );
        assert_eq!(
            desired(Some(&verdict(false, false)), &vs),
            [(2, Steady), (2, Steady), (2, Steady)]
        );
    }

    #[test]
    fn edge_cases() {
        type Case = (
            &'static str,
            Option<ModelAnalysis>,
            Vec<VariantState>,
            Vec<(u32, TargetReason)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no metrics holds",
                None,
                vec![v("a", 10.0, 1, 10, 3, 3)],
                vec![(3, NoMetrics)],
            ),
            (
                "no metrics still clamps",
                None,
                vec![v("a", 10.0, 2, 10, 1, 1)],
                vec![(2, ClampedToMin)],
            ),
            (
                "transition holds every variant",
                Some(verdict(true, false)),
                vec![v("a", 1.0, 1, 10, 3, 2), v("b", 5.0, 1, 10, 2, 2)],
                vec![(3, InTransition), (2, InTransition)],
            ),
            (
                "cheapest at max hands the step on",
                Some(verdict(true, false)),
                vec![v("cheap", 1.0, 1, 2, 2, 2), v("dear", 9.0, 1, 10, 2, 2)],
                vec![(2, Steady), (3, ScaleUp)],
            ),
            (
                "every variant at max: nothing to grow",
                Some(verdict(true, false)),
                vec![v("a", 1.0, 1, 2, 2, 2)],
                vec![(2, Steady)],
            ),
            (
                "never below one by saturation",
                Some(verdict(false, true)),
                vec![v("a", 10.0, 0, 10, 1, 1)],
                vec![(1, Steady)],
            ),
            (
                "dearest at min hands the step on",
                Some(verdict(false, true)),
                vec![v("dear", 9.0, 3, 10, 3, 3), v("cheap", 1.0, 1, 10, 2, 2)],
                vec![(3, Steady), (1, ScaleDown)],
            ),
            (
                "cost ties: name ascending up, descending down",
                Some(verdict(true, false)),
                vec![v("b", 10.0, 1, 10, 1, 1), v("a", 10.0, 1, 10, 1, 1)],
                vec![(1, Steady), (2, ScaleUp)],
            ),
            (
                "cost ties down",
                Some(verdict(false, true)),
                vec![v("a", 10.0, 1, 10, 2, 2), v("b", 10.0, 1, 10, 2, 2)],
                vec![(2, Steady), (1, ScaleDown)],
            ),
            (
                "above max clamps",
                Some(verdict(false, false)),
                vec![v("a", 10.0, 1, 4, 6, 6)],
                vec![(4, ClampedToMax)],
            ),
            (
                "zero replicas min zero",
                None,
                vec![v("a", 10.0, 0, 4, 0, 0)],
                vec![(0, NoMetrics)],
            ),
        ];
        for (name, a, vs, want) in cases {
            assert_eq!(desired(a.as_ref(), &vs), want, "{name}");
        }
    }

    #[test]
    fn end_to_end_numbers_of_the_acceptance_checks() {
        let th = SaturationThresholds::default();
        let load = |kv_q: &[(f64, f64)]| -> Vec<ReplicaLoad> {
            kv_q.iter()
                .map(|&(kv, queue)| ReplicaLoad {
                    pod: "p".into(),
                    variant: "v".into(),
                    kv,
                    queue,
                })
                .collect()
        };
        let a = analyze_model(&load(&[(0.20, 1.0), (0.30, 1.0), (0.25, 1.0)]), &th);
        assert_eq!(
            desired(Some(&a), &[v("v", 10.0, 1, 10, 3, 3)]),
            [(2, ScaleDown)]
        );
        let a = analyze_model(&load(&[(0.75, 2.0), (0.76, 2.0)]), &th);
        assert_eq!(
            desired(Some(&a), &[v("v", 10.0, 1, 10, 2, 2)]),
            [(3, ScaleUp)]
        );
        let a = analyze_model(&load(&[(0.30, 0.0)]), &th);
        assert_eq!(
            desired(Some(&a), &[v("v", 10.0, 1, 10, 1, 1)]),
            [(1, Steady)],
            "single replica holds"
        );
    }
}
