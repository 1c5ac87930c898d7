//! The metrics this server serves and their legacy aliases, their values
//! in milli units, and the timestamp every values answer carries.

use crate::k8s::quantity::desired_ratio_milli;

/// One served external metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ServedMetric {
    /// desired / ready replicas: for an HPA target of type `Value: 1`.
    DesiredRatio,
    /// desired replicas: for an HPA target of type `AverageValue: 1`.
    DesiredReplicas,
    /// ready replicas of the scale target.
    CurrentReplicas,
}

/// Every name served, in discovery order: the `wva_*` names, then the
/// `inferno_*` aliases kept for migration from older WVA releases.
pub(crate) const SERVED_NAMES: [(&str, ServedMetric); 6] = [
    ("wva_desired_ratio", ServedMetric::DesiredRatio),
    ("wva_desired_replicas", ServedMetric::DesiredReplicas),
    ("wva_current_replicas", ServedMetric::CurrentReplicas),
    ("inferno_desired_ratio", ServedMetric::DesiredRatio),
    ("inferno_desired_replicas", ServedMetric::DesiredReplicas),
    ("inferno_current_replicas", ServedMetric::CurrentReplicas),
];

impl ServedMetric {
    /// Looks a name up case-insensitively: client-go lower-cases metric
    /// names, and users type them in any case.
    pub(crate) fn from_name(name: &str) -> Option<(&'static str, ServedMetric)> {
        SERVED_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .copied()
    }

    /// The value in milli units for `desired` of `ready` replicas: the
    /// ratio rounded down so that the HPA's `ceil(ready * value)` is the
    /// desired count. The one mapping of external, Object and KEDA values.
    pub(crate) fn milli(self, desired: u32, ready: u32) -> i64 {
        match self {
            ServedMetric::DesiredRatio => desired_ratio_milli(desired, ready),
            ServedMetric::DesiredReplicas => i64::from(desired) * 1000,
            ServedMetric::CurrentReplicas => i64::from(ready) * 1000,
        }
    }
}

/// The timestamp of a values answer made now: the current second (rounded
/// to the nearest). The answer cache keys on the same second, so that a
/// kept answer never carries another second's timestamp.
pub(crate) fn answer_time() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Second).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_case_insensitively() {
        let cases = [
            ("wva_desired_ratio", Some(ServedMetric::DesiredRatio)),
            ("WVA_Desired_Ratio", Some(ServedMetric::DesiredRatio)),
            (
                "inferno_desired_replicas",
                Some(ServedMetric::DesiredReplicas),
            ),
            ("wva_current_replicas", Some(ServedMetric::CurrentReplicas)),
            ("wva_desired", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                ServedMetric::from_name(name).map(|(_, m)| m),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn values_are_milli_units_with_the_ratio_rounded_down() {
        let cases = [
            (ServedMetric::DesiredRatio, 2, 3, 666),
            (ServedMetric::DesiredRatio, 3, 2, 1500),
            (ServedMetric::DesiredRatio, 7, 0, 7000),
            (ServedMetric::DesiredReplicas, 2, 3, 2000),
            (ServedMetric::CurrentReplicas, 2, 3, 3000),
        ];
        for (metric, desired, ready, want) in cases {
            assert_eq!(
                metric.milli(desired, ready),
                want,
                "{metric:?} {desired}/{ready}"
            );
        }
    }
}
