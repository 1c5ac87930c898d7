//! The metrics this server serves and their legacy aliases.

/// One served external metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServedMetric {
    /// desired / ready replicas: for an HPA target of type `Value: 1`.
    DesiredRatio,
    /// desired replicas: for an HPA target of type `AverageValue: 1`.
    DesiredReplicas,
    /// ready replicas of the scale target.
    CurrentReplicas,
}

/// Every name served, in discovery order: the `wva_*` names, then the
/// `inferno_*` aliases kept for migration from older WVA releases.
pub const SERVED_NAMES: [(&str, ServedMetric); 6] = [
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
    pub fn from_name(name: &str) -> Option<(&'static str, ServedMetric)> {
        SERVED_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .copied()
    }
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
}
