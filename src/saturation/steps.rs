//! Tolerance-aware steps: every move we serve must be one the HPA acts on.
//!
//! The HPA ignores a usage ratio within its tolerance band (default
//! `0.9 <= ratio <= 1.1`, both target types), so the analysis' one-replica
//! step is swallowed from 10 replicas up. When the analysis moves a variant
//! and that move is inside the band, the move becomes the smallest one the
//! HPA acts on, provided the analysis says that larger move is safe too;
//! otherwise the variant holds, with a reason that says so.

use super::analyzer::ModelAnalysis;
use super::targets::{by_cost_then_name, TargetReason, VariantState, VariantTarget};
use super::thresholds::SaturationThresholds;
use crate::hpa::{hpa_reaches, ScaleState, Tolerances};

/// How a variant's HPA sees its scale target, and the band it applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HpaView {
    pub(crate) scale: ScaleState,
    pub(crate) tolerances: Tolerances,
}

/// Spare capacity per replica when the load of `n` non-saturated replicas
/// is spread over `n - k`: `load' = (threshold - spare) x n/(n-k)`,
/// `spare' = threshold - load'`. None when nothing would be left.
pub(crate) fn spare_after_removing(
    n: usize,
    k: usize,
    avg_spare: f64,
    threshold: f64,
) -> Option<f64> {
    if k >= n {
        return None;
    }
    let load = (threshold - avg_spare) * n as f64 / (n - k) as f64;
    Some(threshold - load)
}

/// True when removing `k` replicas keeps both spares at or above their
/// triggers (DESIGN section 4 step 4, for k replicas instead of one).
pub(crate) fn scale_down_by_is_safe(
    a: &ModelAnalysis,
    k: usize,
    th: &SaturationThresholds,
) -> bool {
    let kv = spare_after_removing(a.non_saturated, k, a.avg_spare_kv, th.kv_cache_threshold);
    let q = spare_after_removing(
        a.non_saturated,
        k,
        a.avg_spare_queue,
        th.queue_length_threshold,
    );
    matches!((kv, q), (Some(kv), Some(q)) if kv >= th.kv_spare_trigger && q >= th.queue_spare_trigger)
}

/// Rewrites the analysis' steps (reasons `ScaleUp` / `ScaleDown`) into moves
/// the HPA acts on. `variants`, `hpas` and `targets` are in the same order.
///
/// - The step as computed already reaches the HPA: unchanged.
/// - Scale up: the smallest count above the current one, up to
///   `maxReplicas`, that the HPA reaches.
/// - Scale down: the largest count below the current one, down to
///   `max(1, minReplicas)`, that the HPA reaches, as long as removing that
///   many replicas still meets the spare triggers.
/// - When the chosen variant has no such move, the step goes to the variant
///   the analysis would pick next (cheapest first up, dearest first down)
///   among those it left steady, as it does for a variant at its bounds.
/// - When no variant has one, the chosen variant holds at its current count
///   with `ToleranceHoldUp` / `ToleranceHoldDown`.
pub(crate) fn tolerance_aware_steps(
    analysis: Option<&ModelAnalysis>,
    thresholds: &SaturationThresholds,
    variants: &[VariantState],
    hpas: &[HpaView],
    mut targets: Vec<VariantTarget>,
) -> Vec<VariantTarget> {
    let n = targets.len().min(variants.len()).min(hpas.len());
    for i in 0..n {
        let up = match targets[i].reason {
            TargetReason::ScaleUp => true,
            TargetReason::ScaleDown => false,
            _ => continue,
        };
        if hpa_reaches(targets[i].desired, &hpas[i].scale, &hpas[i].tolerances) {
            continue;
        }
        let mut next: Vec<usize> = (0..n)
            .filter(|&j| j != i && targets[j].reason == TargetReason::Steady)
            .collect();
        next.sort_by(|&a, &b| by_cost_then_name(&variants[a], &variants[b]));
        if !up {
            next.reverse();
        }
        let found = std::iter::once(i).chain(next).find_map(|j| {
            let step = Step {
                up,
                current: targets[j].current,
                variant: &variants[j],
                hpa: &hpas[j],
            };
            step.acted_on(analysis, thresholds)
                .map(|desired| (j, desired))
        });
        targets[i].desired = targets[i].current;
        match found {
            Some((j, desired)) => {
                if j != i {
                    targets[i].reason = TargetReason::Steady;
                }
                targets[j].desired = desired;
                targets[j].reason = if up {
                    TargetReason::ScaleUp
                } else {
                    TargetReason::ScaleDown
                };
            }
            None => {
                targets[i].reason = if up {
                    TargetReason::ToleranceHoldUp
                } else {
                    TargetReason::ToleranceHoldDown
                };
            }
        }
    }
    targets
}

/// A move of one variant in one direction.
struct Step<'a> {
    up: bool,
    current: u32,
    variant: &'a VariantState,
    hpa: &'a HpaView,
}

impl Step<'_> {
    /// The smallest move the HPA acts on that stays in bounds (and, down,
    /// keeps the spare triggers), or None.
    fn acted_on(&self, analysis: Option<&ModelAnalysis>, th: &SaturationThresholds) -> Option<u32> {
        let reaches = |n: &u32| hpa_reaches(*n, &self.hpa.scale, &self.hpa.tolerances);
        if self.up {
            (self.current.saturating_add(1)..=self.variant.max_replicas).find(reaches)
        } else {
            let floor = self.variant.min_replicas.max(1);
            let safe = |n: &u32| {
                let k = self.current.saturating_sub(*n) as usize;
                analysis.is_some_and(|a| scale_down_by_is_safe(a, k, th))
            };
            (floor..self.current).rev().take_while(safe).find(reaches)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpa::{hpa_proposal, served_milli, SERVED_TARGETS};
    use crate::saturation::analyzer::{analyze_model, spare_after_removal, ReplicaLoad};
    use crate::saturation::targets::compute_targets;
    use proptest::prelude::*;
    use TargetReason::*;

    fn variant(min: u32, max: u32, n: u32) -> VariantState {
        VariantState {
            name: "v".into(),
            cost: 10.0,
            min_replicas: min,
            max_replicas: max,
            spec_replicas: n,
            ready_replicas: n,
        }
    }

    fn uniform(n: u32, kv: f64, queue: f64) -> Vec<ReplicaLoad> {
        (0..n)
            .map(|i| ReplicaLoad {
                pod: format!("p{i}"),
                variant: "v".into(),
                kv,
                queue,
            })
            .collect()
    }

    /// The full pipeline for one variant at `n` settled replicas.
    fn decide(v: &VariantState, loads: &[ReplicaLoad], tol: Tolerances) -> (u32, TargetReason) {
        let th = SaturationThresholds::default();
        let a = analyze_model(loads, &th);
        let targets = compute_targets(Some(&a), std::slice::from_ref(v));
        let hpa = HpaView {
            scale: ScaleState {
                spec_replicas: v.spec_replicas,
                status_replicas: v.spec_replicas,
                ready_pods: v.ready_replicas,
            },
            tolerances: tol,
        };
        let t = tolerance_aware_steps(Some(&a), &th, std::slice::from_ref(v), &[hpa], targets);
        (t[0].desired, t[0].reason)
    }

    #[test]
    fn steps_at_each_size() {
        let t = Tolerances::default();
        // (replicas, max, kv, queue, desired, reason)
        let cases = [
            // Below 10 a one-replica step is outside the band: unchanged.
            (3, 20, 0.85, 0.0, 4, ScaleUp),
            (9, 20, 0.85, 0.0, 10, ScaleUp),
            (3, 20, 0.10, 0.0, 2, ScaleDown),
            (9, 20, 0.10, 0.0, 8, ScaleDown),
            // The 12 replicas: 12 -> 14 up, 12 -> 10 down.
            (12, 20, 0.85, 0.0, 14, ScaleUp),
            (12, 20, 0.10, 0.0, 10, ScaleDown),
            // At 10, +1 is exactly 1.1 (inside) and -1 exactly 0.9 (inside).
            (10, 20, 0.85, 0.0, 12, ScaleUp),
            (10, 20, 0.10, 0.0, 8, ScaleDown),
            (20, 40, 0.85, 0.0, 23, ScaleUp),
            (20, 40, 0.10, 0.0, 17, ScaleDown),
            (100, 200, 0.85, 0.0, 111, ScaleUp),
            (100, 200, 0.10, 0.0, 89, ScaleDown),
            // Up: the move the HPA acts on is beyond max -> hold.
            (12, 13, 0.85, 0.0, 12, ToleranceHoldUp),
            (12, 14, 0.85, 0.0, 14, ScaleUp),
            // Down: one replica less is safe (spare' = 0.8 - 0.6 x 12/11 =
            // 0.145 >= 0.10), two less is not (0.8 - 0.6 x 12/10 = 0.08) -> hold.
            (12, 20, 0.60, 0.0, 12, ToleranceHoldDown),
            // 30 -> 26 (27/30 = 0.9 is inside): 0.8 - 0.5 x 30/26 = 0.223, safe.
            (30, 40, 0.50, 0.0, 26, ScaleDown),
        ];
        for (n, max, kv, q, want, reason) in cases {
            assert_eq!(
                decide(&variant(1, max, n), &uniform(n, kv, q), t),
                (want, reason),
                "{n} replicas at kv {kv}, max {max}"
            );
        }
    }

    #[test]
    fn down_respects_the_minimum() {
        let t = Tolerances::default();
        // 12 -> 11 is in the band, 10 is below min 11: hold.
        assert_eq!(
            decide(&variant(11, 20, 12), &uniform(12, 0.10, 0.0), t),
            (12, ToleranceHoldDown)
        );
        assert_eq!(
            decide(&variant(10, 20, 12), &uniform(12, 0.10, 0.0), t),
            (10, ScaleDown)
        );
    }

    #[test]
    fn a_configured_tolerance_changes_the_step() {
        // behavior.scaleUp.tolerance 0.01 / scaleDown 0.01: one step is enough.
        let small = Tolerances::uniform(0.01);
        assert_eq!(
            decide(&variant(1, 20, 12), &uniform(12, 0.85, 0.0), small),
            (13, ScaleUp)
        );
        assert_eq!(
            decide(&variant(1, 20, 12), &uniform(12, 0.10, 0.0), small),
            (11, ScaleDown)
        );
        // A wider scale-up band needs a bigger step: (12+k)/12 > 1.2 -> k = 3.
        let wide_up = Tolerances {
            scale_down: 0.1,
            scale_up: 0.2,
        };
        assert_eq!(
            decide(&variant(1, 20, 12), &uniform(12, 0.85, 0.0), wide_up),
            (15, ScaleUp)
        );
    }

    /// Several variants of one model, all settled, under the default band.
    fn decide_model(vs: &[VariantState], loads: &[ReplicaLoad]) -> Vec<(u32, TargetReason)> {
        let th = SaturationThresholds::default();
        let a = analyze_model(loads, &th);
        let hpas: Vec<HpaView> = vs
            .iter()
            .map(|v| HpaView {
                scale: ScaleState::settled(v.spec_replicas),
                tolerances: Tolerances::default(),
            })
            .collect();
        tolerance_aware_steps(Some(&a), &th, vs, &hpas, compute_targets(Some(&a), vs))
            .into_iter()
            .map(|t| (t.desired, t.reason))
            .collect()
    }

    fn named(name: &str, cost: f64, max: u32, n: u32) -> VariantState {
        VariantState {
            name: name.into(),
            cost,
            ..variant(1, max, n)
        }
    }

    #[test]
    fn a_step_no_move_of_the_chosen_variant_can_carry_goes_to_the_next_variant() {
        // Up: the cheap variant's 13 is inside the band and 14 above its max;
        // the dear one takes the step, 3 -> 4.
        let vs = [named("cheap", 5.0, 13, 12), named("dear", 20.0, 20, 3)];
        assert_eq!(
            decide_model(&vs, &uniform(15, 0.85, 0.0)),
            [(12, Steady), (4, ScaleUp)]
        );
        // Down over 15 replicas at kv 0.63: one less is safe (0.8 - 0.63 x
        // 15/14 = 0.125), two less is not (0.073). The dear variant's 11 is
        // inside the band and 10 unsafe; the cheap one goes 3 -> 2.
        let vs = [named("dear", 20.0, 20, 12), named("cheap", 5.0, 20, 3)];
        assert_eq!(
            decide_model(&vs, &uniform(15, 0.63, 0.0)),
            [(12, Steady), (2, ScaleDown)]
        );
        // Nobody can: the chosen variant holds and says so.
        let vs = [named("a", 5.0, 13, 12), named("b", 20.0, 11, 11)];
        assert_eq!(
            decide_model(&vs, &uniform(23, 0.85, 0.0)),
            [(12, ToleranceHoldUp), (11, Steady)]
        );
    }

    #[test]
    fn steady_and_held_variants_are_left_alone() {
        let t = Tolerances::default();
        // kv 0.65 over 12: spare 0.15 is no scale-up, and one replica less
        // (0.8 - 0.65 x 12/11 = 0.091 < 0.10) is unsafe: steady, untouched.
        assert_eq!(
            decide(&variant(1, 20, 12), &uniform(12, 0.65, 0.0), t),
            (12, Steady)
        );
    }

    #[test]
    fn removing_one_is_the_designs_formula() {
        for n in 2..20usize {
            for spare in [0.0, 0.1, 0.55, 0.8] {
                assert_eq!(
                    spare_after_removing(n, 1, spare, 0.8),
                    spare_after_removal(n, spare, 0.8)
                );
            }
        }
        assert_eq!(spare_after_removing(3, 3, 0.5, 0.8), None);
    }

    proptest! {
        /// Several variants: at most one moves, within its bounds, by a move
        /// its HPA acts on; every other keeps its current count.
        #[test]
        fn one_acted_on_move_per_model(
            sizes in prop::collection::vec((1u32..60, 0u32..10, 1.0f64..30.0), 1..4),
            kv in 0.0f64..1.0,
        ) {
            let vs: Vec<VariantState> = sizes
                .iter()
                .enumerate()
                .map(|(i, &(n, extra, cost))| named(&format!("v{i}"), cost, n + extra, n))
                .collect();
            let total: u32 = sizes.iter().map(|s| s.0).sum();
            let got = decide_model(&vs, &uniform(total, kv, 0.0));
            let moved: Vec<usize> = (0..vs.len()).filter(|&i| got[i].0 != vs[i].spec_replicas).collect();
            prop_assert!(moved.len() <= 1, "{:?}", got);
            for &i in &moved {
                let (desired, v) = (got[i].0, &vs[i]);
                prop_assert!(desired >= v.min_replicas.max(1) && desired <= v.max_replicas);
                prop_assert!(hpa_reaches(desired, &ScaleState::settled(v.spec_replicas), &Tolerances::default()));
            }
        }

        /// For every size from 1 to 500 and every load, the count we serve
        /// is exactly what the HPA's formula gives back for both target
        /// types, or we hold and say so.
        #[test]
        fn every_served_move_is_acted_on_exactly(n in 1u32..=500, kv in 0.0f64..1.0, q in 0.0f64..8.0, max_extra in 0u32..80, tol_milli in 0u32..300) {
            let tol = Tolerances::uniform(f64::from(tol_milli) / 1000.0);
            let v = variant(1, n + max_extra, n);
            let (desired, reason) = decide(&v, &uniform(n, kv, q), tol);
            let scale = ScaleState::settled(n);
            match reason {
                ScaleUp | ScaleDown => {
                    prop_assert_ne!(desired, n);
                    for target in SERVED_TARGETS {
                        prop_assert_eq!(
                            hpa_proposal(target, desired, &scale, &tol),
                            Some(desired),
                            "{:?} serving {} for {} at {}", target, served_milli(target, desired, n), desired, n
                        );
                    }
                }
                _ => prop_assert_eq!(desired, n),
            }
        }
    }

    /// The HPA's formulas written out from the Kubernetes documentation,
    /// independently of `crate::hpa`, reading the quantity string we serve.
    fn documented_hpa(served: &str, n: u32, average: bool) -> u32 {
        let milli = crate::k8s::quantity::parse_milli(served).unwrap();
        let ratio = if average {
            milli as f64 / (1000.0 * f64::from(n))
        } else {
            milli as f64 / 1000.0
        };
        if (0.9..=1.1).contains(&ratio) {
            n
        } else if average {
            (milli as f64 / 1000.0).ceil() as u32
        } else {
            (ratio * f64::from(n)).ceil() as u32
        }
    }

    #[test]
    fn every_count_we_may_serve_matches_the_documented_formula_for_n_up_to_500() {
        use crate::k8s::quantity::{desired_ratio_milli, format_milli};
        let tol = Tolerances::default();
        for n in 1..=500u32 {
            let scale = ScaleState::settled(n);
            // Holding serves n itself: the HPA keeps n with either target.
            for d in 1..=n + n / 5 + 2 {
                let value = documented_hpa(&format_milli(desired_ratio_milli(d, n)), n, false);
                let average = documented_hpa(&format_milli(i64::from(d) * 1000), n, true);
                let exact = value == d && average == d;
                assert_eq!(
                    hpa_reaches(d, &scale, &tol),
                    exact || d == n,
                    "n {n}, d {d}: documented formula gives {value} / {average}"
                );
                if d == n {
                    assert_eq!((value, average), (n, n), "a hold at {n}");
                }
            }
        }
    }

    #[test]
    fn every_reachable_count_round_trips_for_n_up_to_500() {
        // Exhaustive companion of the property: for every n the smallest up
        // and down moves the HPA acts on exist within 20 % of n (+2), lie
        // outside the band, and round-trip through both target types.
        let tol = Tolerances::default();
        for n in 1..=500u32 {
            let scale = ScaleState::settled(n);
            let up = (n + 1..=n + n / 5 + 2)
                .find(|&d| hpa_reaches(d, &scale, &tol))
                .unwrap_or_else(|| panic!("no up move at {n}"));
            assert!(up as f64 > n as f64 * 1.1, "{n} -> {up}");
            for target in SERVED_TARGETS {
                assert_eq!(hpa_proposal(target, up, &scale, &tol), Some(up));
            }
            if n > 1 {
                let down = (n.saturating_sub(n / 5 + 2).max(1)..n)
                    .rev()
                    .find(|&d| hpa_reaches(d, &scale, &tol))
                    .unwrap_or_else(|| panic!("no down move at {n}"));
                assert!((down as f64) < n as f64 * 0.9, "{n} -> {down}");
                for target in SERVED_TARGETS {
                    assert_eq!(hpa_proposal(target, down, &scale, &tol), Some(down));
                }
            }
        }
    }
}
