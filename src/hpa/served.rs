//! The values we serve for a desired count, and whether the HPA's own
//! formula turns them back into exactly that count.

use super::replica_calculator::{external_metric_proposal, ExternalTarget, ScaleState};
use super::tolerance::Tolerances;
use crate::k8s::quantity::desired_ratio_milli;

/// `value: "1"` / `averageValue: "1"` in milli units.
const ONE: i64 = 1000;

/// The two ways an HPA reads our decision, with the recommended target of 1.
pub(crate) const SERVED_TARGETS: [ExternalTarget; 2] = [
    ExternalTarget::Value { milli: ONE },
    ExternalTarget::AverageValue { milli: ONE },
];

/// The milli value served for `desired` under `target`: `wva_desired_ratio`
/// (desired / ready, rounded down) for `Value`, `wva_desired_replicas`
/// (desired itself) for `AverageValue`.
pub(crate) fn served_milli(target: ExternalTarget, desired: u32, ready: u32) -> i64 {
    match target {
        ExternalTarget::Value { .. } => desired_ratio_milli(desired, ready),
        ExternalTarget::AverageValue { .. } => i64::from(desired) * 1000,
    }
}

/// The replicas an HPA with target 1 proposes from what we serve for
/// `desired`, or None when the calculator refuses the target.
pub(crate) fn hpa_proposal(
    target: ExternalTarget,
    desired: u32,
    scale: &ScaleState,
    tolerances: &Tolerances,
) -> Option<u32> {
    let served = served_milli(target, desired, scale.ready_pods);
    external_metric_proposal(&[served], target, scale, tolerances)
        .ok()
        .map(|p| p.replicas)
}

/// True when an HPA with either target type, given what we serve for
/// `desired`, proposes exactly `desired`: the move is one the HPA acts on,
/// neither swallowed by the tolerance band nor off by a rounding.
pub(crate) fn hpa_reaches(desired: u32, scale: &ScaleState, tolerances: &Tolerances) -> bool {
    SERVED_TARGETS
        .iter()
        .all(|&t| hpa_proposal(t, desired, scale, tolerances) == Some(desired))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_is_swallowed_from_ten_replicas_up() {
        let t = Tolerances::default();
        for n in 1..=60u32 {
            let s = ScaleState::settled(n);
            let up = hpa_reaches(n + 1, &s, &t);
            let down = hpa_reaches(n - 1, &s, &t);
            assert_eq!(up, n < 10, "+1 at {n}");
            // (n-1)/n >= 0.9 from n = 10 up; at 1, 0 replicas is a ratio of 0.
            assert_eq!(down, n < 10, "-1 at {n}");
        }
    }

    #[test]
    fn the_issue_numbers() {
        let t = Tolerances::default();
        let s = ScaleState::settled(12);
        let value = ExternalTarget::Value { milli: 1000 };
        let average = ExternalTarget::AverageValue { milli: 1000 };
        assert_eq!(served_milli(value, 13, 12), 1083);
        assert_eq!(served_milli(value, 11, 12), 916);
        assert_eq!(hpa_proposal(value, 13, &s, &t), Some(12));
        assert_eq!(hpa_proposal(value, 11, &s, &t), Some(12));
        assert_eq!(hpa_proposal(average, 13, &s, &t), Some(12));
        assert_eq!(hpa_proposal(average, 11, &s, &t), Some(12));
        assert!(hpa_reaches(14, &s, &t) && hpa_reaches(10, &s, &t));
    }
}
