//! What the HPA controller does with the values of an External metric, as
//! Kubernetes' replica calculator and `reconcileAutoscaler` compute it
//! (pkg/controller/podautoscaler). Pure: the same code answers "what will
//! the HPA make of the value we serve" for the decision path, the tests and
//! the offline `simulate` loop.
//!
//! Modelled: both External target types, the tolerance band (per direction),
//! spec vs status vs ready replicas, zero replicas, min/max and the default
//! scale-up limit of an HPA without `behavior`. Not modelled here (they need
//! time): stabilization windows and `behavior` rate policies.

use super::tolerance::Tolerances;

/// The target of an External metric, in milli units as the HPA reads it
/// (`Quantity.MilliValue()`): `value: "1"` is 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalTarget {
    /// `target.type: Value`: the summed value is compared with the target.
    Value { milli: i64 },
    /// `target.type: AverageValue`: the summed value is divided over the
    /// target's current replicas.
    AverageValue { milli: i64 },
}

/// The scale target as the HPA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScaleState {
    /// `spec.replicas` of the scale subresource: the HPA's "current replicas".
    pub spec_replicas: u32,
    /// `status.replicas`: what `AverageValue` divides by.
    pub status_replicas: u32,
    /// Ready pods matching the target's selector: what `Value` multiplies by.
    pub ready_pods: u32,
}

impl ScaleState {
    /// A target at rest: every replica exists and is ready.
    pub const fn settled(replicas: u32) -> Self {
        ScaleState {
            spec_replicas: replicas,
            status_replicas: replicas,
            ready_pods: replicas,
        }
    }
}

/// The HPA's proposal for one External metric, before min/max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricProposal {
    pub replicas: u32,
    /// The ratio compared with the tolerance band.
    pub(crate) usage_ratio: f64,
    /// True when the ratio was inside the band, so the proposal is the
    /// current replicas.
    pub(crate) within_tolerance: bool,
}

/// A target the HPA would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalculatorError {
    #[error("the metric target must be positive, got {milli}m")]
    TargetNotPositive { milli: i64 },
}

/// `int32(math.Ceil(x))` without Go's undefined out-of-range conversion:
/// negative and NaN give 0, huge values saturate at `i32::MAX`.
fn ceil_replicas(x: f64) -> u32 {
    let c = x.ceil();
    if c.is_nan() || c <= 0.0 {
        0
    } else if c >= f64::from(i32::MAX) {
        i32::MAX as u32
    } else {
        c as u32
    }
}

/// The HPA's proposal for an External metric whose items carry
/// `values_milli` (the HPA sums every item the selector returns).
///
/// - `Value`: `ratio = sum / target`; with current (spec) replicas 0 the
///   proposal is `ceil(ratio)` with no band; otherwise the current replicas
///   when the ratio is within the band, else `ceil(ratio x ready pods)`.
/// - `AverageValue`: `ratio = sum / (target x status replicas)`; within the
///   band the proposal is the status replicas, else `ceil(sum / target)`. At
///   0 status replicas the ratio is infinite (or NaN for a zero sum), never
///   within the band.
pub fn external_metric_proposal(
    values_milli: &[i64],
    target: ExternalTarget,
    scale: &ScaleState,
    tolerances: &Tolerances,
) -> Result<MetricProposal, CalculatorError> {
    let usage = values_milli
        .iter()
        .fold(0i64, |sum, &v| sum.saturating_add(v)) as f64;
    match target {
        ExternalTarget::Value { milli } => {
            if milli <= 0 {
                return Err(CalculatorError::TargetNotPositive { milli });
            }
            let usage_ratio = usage / milli as f64;
            if scale.spec_replicas == 0 {
                return Ok(MetricProposal {
                    replicas: ceil_replicas(usage_ratio),
                    usage_ratio,
                    within_tolerance: false,
                });
            }
            let within = tolerances.is_within(usage_ratio);
            let replicas = if within {
                scale.spec_replicas
            } else {
                ceil_replicas(usage_ratio * f64::from(scale.ready_pods))
            };
            Ok(MetricProposal {
                replicas,
                usage_ratio,
                within_tolerance: within,
            })
        }
        ExternalTarget::AverageValue { milli } => {
            if milli <= 0 {
                return Err(CalculatorError::TargetNotPositive { milli });
            }
            let usage_ratio = usage / (milli as f64 * f64::from(scale.status_replicas));
            let within = tolerances.is_within(usage_ratio);
            let replicas = if within {
                scale.status_replicas
            } else {
                ceil_replicas(usage / milli as f64)
            };
            Ok(MetricProposal {
                replicas,
                usage_ratio,
                within_tolerance: within,
            })
        }
    }
}

/// `minReplicas` / `maxReplicas` of an HPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HpaBounds {
    pub(crate) min_replicas: u32,
    pub(crate) max_replicas: u32,
}

/// Why the HPA ends where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpaOutcome {
    /// `spec.replicas` is 0 and `minReplicas` is not: autoscaling is off and
    /// nothing changes.
    ScalingDisabled,
    /// The replicas the HPA sets.
    Replicas(u32),
}

/// The HPA's desired replicas from its metric proposals, for an HPA without
/// `behavior` and ignoring the downscale stabilization window (the caller
/// keeps the history when it needs one):
/// current above max -> max, below min -> min; otherwise the largest
/// proposal, limited to [min, min(max, max(2 x current, 4))].
pub fn desired_replicas(
    proposals: &[MetricProposal],
    scale: &ScaleState,
    bounds: &HpaBounds,
) -> HpaOutcome {
    let current = scale.spec_replicas;
    if current == 0 && bounds.min_replicas != 0 {
        return HpaOutcome::ScalingDisabled;
    }
    if current > bounds.max_replicas {
        return HpaOutcome::Replicas(bounds.max_replicas);
    }
    if current < bounds.min_replicas {
        return HpaOutcome::Replicas(bounds.min_replicas);
    }
    let proposed = proposals
        .iter()
        .map(|p| p.replicas)
        .max()
        .unwrap_or(current);
    let scale_up_limit = current.saturating_mul(2).max(4);
    let maximum = bounds.max_replicas.min(scale_up_limit);
    HpaOutcome::Replicas(proposed.clamp(bounds.min_replicas, maximum.max(bounds.min_replicas)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE_1: ExternalTarget = ExternalTarget::Value { milli: 1000 };
    const AVERAGE_1: ExternalTarget = ExternalTarget::AverageValue { milli: 1000 };

    fn replicas(values: &[i64], target: ExternalTarget, scale: ScaleState) -> u32 {
        external_metric_proposal(values, target, &scale, &Tolerances::default())
            .unwrap()
            .replicas
    }

    fn state(spec: u32, status: u32, ready: u32) -> ScaleState {
        ScaleState {
            spec_replicas: spec,
            status_replicas: status,
            ready_pods: ready,
        }
    }

    #[test]
    fn value_target_follows_the_documented_formula() {
        // (served milli values, spec, status, ready, replicas)
        let cases: &[(&[i64], u32, u32, u32, u32)] = &[
            // The numbers at 12 ready replicas: inside the band.
            (&[1083], 12, 12, 12, 12),
            (&[916], 12, 12, 12, 12),
            // Tolerance-aware steps: 14/12 and 10/12 are outside.
            (&[1166], 12, 12, 12, 14),
            (&[833], 12, 12, 12, 10),
            // Band edges are inside: exactly 1.1 and 0.9 keep the current count.
            (&[1100], 10, 10, 10, 10),
            (&[900], 10, 10, 10, 10),
            (&[1101], 10, 10, 10, 12),
            (&[899], 10, 10, 10, 9),
            // ceil(ratio x ready), with ready, not spec, as the multiplier.
            (&[1500], 2, 2, 2, 3),
            (&[666], 3, 3, 3, 2),
            (&[1500], 4, 4, 2, 3),
            // Inside the band the current (spec) count stays, whatever ready is.
            (&[1050], 4, 4, 2, 4),
            // At 0 current replicas: ceil(ratio), no band.
            (&[1000], 0, 0, 0, 1),
            (&[3000], 0, 0, 0, 3),
            (&[0], 0, 0, 0, 0),
            // Items are summed.
            (&[600, 600], 2, 2, 2, 3),
        ];
        for &(values, spec, status, ready, want) in cases {
            assert_eq!(
                replicas(values, VALUE_1, state(spec, status, ready)),
                want,
                "{values:?} at spec {spec} ready {ready}"
            );
        }
    }

    #[test]
    fn average_value_target_follows_the_documented_formula() {
        let cases: &[(&[i64], u32, u32, u32)] = &[
            // The numbers: 13 and 11 at 12 current are inside the band.
            (&[13_000], 12, 12, 12),
            (&[11_000], 12, 12, 12),
            (&[14_000], 12, 12, 14),
            (&[10_000], 12, 12, 10),
            // Edges inside, at 10.
            (&[11_000], 10, 10, 10),
            (&[9_000], 10, 10, 10),
            (&[12_000], 10, 10, 12),
            (&[8_000], 10, 10, 8),
            // Below 10, one step is outside.
            (&[3_000], 2, 2, 3),
            (&[2_000], 3, 3, 2),
            // Divides by status replicas (pods that exist), not spec: 13/10
            // is outside the band where 13/12 would be inside.
            (&[13_000], 14, 12, 12),
            (&[13_000], 12, 10, 13),
            // At 0 status replicas the ratio is infinite: ceil(sum / target).
            (&[3_000], 0, 0, 3),
            (&[0], 0, 0, 0),
            (&[2_500], 0, 0, 3),
        ];
        for &(values, spec, status, want) in cases {
            assert_eq!(
                replicas(values, AVERAGE_1, state(spec, status, status)),
                want,
                "{values:?} at spec {spec} status {status}"
            );
        }
    }

    #[test]
    fn per_direction_tolerances_move_the_edges() {
        let t = Tolerances {
            scale_down: 0.1,
            scale_up: 0.05,
        };
        let p = |v: i64| {
            external_metric_proposal(&[v], AVERAGE_1, &ScaleState::settled(12), &t)
                .unwrap()
                .replicas
        };
        assert_eq!(p(13_000), 13, "13/12 = 1.083 > 1.05");
        assert_eq!(p(11_000), 12, "11/12 = 0.917 >= 0.9");
    }

    #[test]
    fn targets_must_be_positive() {
        for target in [
            ExternalTarget::Value { milli: 0 },
            ExternalTarget::AverageValue { milli: -1 },
        ] {
            assert!(matches!(
                external_metric_proposal(
                    &[1000],
                    target,
                    &ScaleState::settled(1),
                    &Tolerances::default()
                ),
                Err(CalculatorError::TargetNotPositive { .. })
            ));
        }
    }

    #[test]
    fn min_max_and_scale_up_limit() {
        let b = HpaBounds {
            min_replicas: 2,
            max_replicas: 20,
        };
        let prop = |replicas| MetricProposal {
            replicas,
            usage_ratio: 2.0,
            within_tolerance: false,
        };
        // (spec, proposal, outcome)
        let cases = [
            (12, 14, HpaOutcome::Replicas(14)),
            (12, 30, HpaOutcome::Replicas(20)),
            (12, 1, HpaOutcome::Replicas(2)),
            // At most max(2 x current, 4) in one go.
            (3, 9, HpaOutcome::Replicas(6)),
            (2, 9, HpaOutcome::Replicas(4)),
            // Current outside [min, max] snaps to the bound first.
            (25, 14, HpaOutcome::Replicas(20)),
            (1, 1, HpaOutcome::Replicas(2)),
            // spec 0 with min != 0: autoscaling is disabled.
            (0, 5, HpaOutcome::ScalingDisabled),
        ];
        for (spec, proposal, want) in cases {
            let got = desired_replicas(&[prop(proposal)], &ScaleState::settled(spec), &b);
            assert_eq!(got, want, "spec {spec}, proposal {proposal}");
        }
        // Several metrics: the largest proposal wins.
        assert_eq!(
            desired_replicas(&[prop(5), prop(7)], &ScaleState::settled(6), &b),
            HpaOutcome::Replicas(7)
        );
        // minReplicas 0 (HPAScaleToZero) lets 0 replicas scale up.
        let zero = HpaBounds {
            min_replicas: 0,
            max_replicas: 10,
        };
        assert_eq!(
            desired_replicas(&[prop(3)], &ScaleState::settled(0), &zero),
            HpaOutcome::Replicas(3)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn scale() -> impl Strategy<Value = ScaleState> {
            (0u32..40, 0u32..40, 0u32..40).prop_map(|(spec, status, ready)| ScaleState {
                spec_replicas: spec,
                status_replicas: status,
                ready_pods: ready,
            })
        }

        proptest! {
            /// Whatever the served values (sums that saturate included) and
            /// the scale: a positive target gives a proposal, never a panic,
            /// and a proposal within the band is the current count.
            #[test]
            fn any_values_give_a_proposal(
                values in prop::collection::vec(any::<i64>(), 0..6),
                milli in 1i64..10_000_000,
                average in any::<bool>(),
                scale in scale(),
            ) {
                let target = if average { ExternalTarget::AverageValue { milli } } else { ExternalTarget::Value { milli } };
                let p = external_metric_proposal(&values, target, &scale, &Tolerances::default()).unwrap();
                prop_assert!(!p.usage_ratio.is_nan() || (average && scale.status_replicas == 0), "{p:?}");
                if p.within_tolerance {
                    let current = if average { scale.status_replicas } else { scale.spec_replicas };
                    prop_assert_eq!(p.replicas, current);
                }
                prop_assert!(p.replicas <= i32::MAX as u32);
            }

            /// The result is within [min, max], and from a count inside
            /// them at most max(2 x current, 4).
            #[test]
            fn desired_replicas_stay_in_bounds(
                proposals in prop::collection::vec(0u32..200, 0..4),
                spec in 0u32..60,
                min in 0u32..10,
                span in 0u32..40,
            ) {
                let bounds = HpaBounds { min_replicas: min, max_replicas: min + span };
                let proposals: Vec<MetricProposal> = proposals.iter().map(|&replicas| MetricProposal { replicas, usage_ratio: 1.0, within_tolerance: false }).collect();
                match desired_replicas(&proposals, &ScaleState::settled(spec), &bounds) {
                    HpaOutcome::ScalingDisabled => prop_assert!(spec == 0 && min != 0),
                    HpaOutcome::Replicas(n) => {
                        prop_assert!(n >= bounds.min_replicas && n <= bounds.max_replicas, "{n} outside {bounds:?}");
                        if (min..=min + span).contains(&spec) {
                            prop_assert!(n <= spec.saturating_mul(2).max(4).max(min), "{n} from {spec}");
                        }
                    }
                }
            }
        }
    }
}
