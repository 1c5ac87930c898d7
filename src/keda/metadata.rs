//! What a ScaledObject's `external` trigger asks for, from its
//! `scalerMetadata`. Pure and table-tested.

use std::collections::HashMap;

use crate::inventory::snapshot::labels;
use crate::k8s::selector::LabelSelector;

/// Which number the trigger scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KedaMetric {
    /// Desired replicas; KEDA's `AverageValue` target of 1 then yields exactly that count.
    DesiredReplicas,
    /// Desired over ready replicas.
    DesiredRatio,
}

impl KedaMetric {
    /// The metric name reported to KEDA.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            KedaMetric::DesiredReplicas => "wva_desired_replicas",
            KedaMetric::DesiredRatio => "wva_desired_ratio",
        }
    }
}

/// A parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScalerQuery {
    pub(crate) namespace: String,
    pub(crate) selector: LabelSelector,
    pub(crate) metric: KedaMetric,
    /// `variant "x"` or `target "y"`, for messages.
    pub(crate) subject: String,
}

/// A trigger whose metadata cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MetadataError {
    /// Missing or malformed metadata (gRPC INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The trigger asks for another namespace than its ScaledObject's
    /// (gRPC PERMISSION_DENIED).
    #[error("{0}")]
    OtherNamespace(String),
}

/// Metadata keys.
pub(crate) const VARIANT_NAME: &str = "variantName";
pub(crate) const TARGET_NAME: &str = "targetName";
pub(crate) const NAMESPACE: &str = "namespace";
pub(crate) const METRIC: &str = "metric";

/// Parses the metadata of a ScaledObject in `object_namespace`. The variant
/// is named by `variantName`, or `targetName` (all variants scaling that
/// target), and is always looked up in the ScaledObject's own namespace:
/// a `namespace` key naming another one is refused, or a ScaledObject in
/// one namespace could read the decisions of any other. `metric` is
/// `desiredReplicas` (default) or `desiredRatio`.
pub(crate) fn parse(
    object_namespace: &str,
    metadata: &HashMap<String, String>,
) -> Result<ScalerQuery, MetadataError> {
    let get = |k: &str| metadata.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (label, value, what) = match (get(VARIANT_NAME), get(TARGET_NAME)) {
        (Some(v), _) => (labels::VARIANT_NAME, v, "variant"),
        (None, Some(t)) => (labels::TARGET_NAME, t, "target"),
        (None, None) => {
            return Err(MetadataError::Invalid(format!(
                "scalerMetadata must name the variant: set {VARIANT_NAME} (or {TARGET_NAME})"
            )))
        }
    };
    let selector = LabelSelector::parse(&format!("{label}={value}"))
        .ok()
        .filter(|s| s.requirements().len() == 1 && s.exact_value(label) == Some(value))
        .ok_or_else(|| {
            MetadataError::Invalid(format!(
                "scalerMetadata {what} name {value:?} is not a valid Kubernetes name"
            ))
        })?;
    let namespace = object_namespace.trim();
    if namespace.is_empty() {
        return Err(MetadataError::Invalid(
            "scaledObjectRef has no namespace: the variant is looked up in the ScaledObject's namespace"
                .to_owned(),
        ));
    }
    if let Some(asked) = get(NAMESPACE).filter(|n| *n != namespace) {
        return Err(MetadataError::OtherNamespace(format!(
            "scalerMetadata {NAMESPACE} {asked:?} is not the ScaledObject's namespace {namespace:?}: \
             a trigger may only read variants of its own namespace"
        )));
    }
    let namespace = namespace.to_owned();
    let metric = match get(METRIC) {
        None | Some("desiredReplicas") => KedaMetric::DesiredReplicas,
        Some("desiredRatio") => KedaMetric::DesiredRatio,
        Some(other) => {
            return Err(MetadataError::Invalid(format!(
                "scalerMetadata {METRIC} {other:?} is not desiredReplicas or desiredRatio"
            )))
        }
    };
    Ok(ScalerQuery {
        namespace,
        selector,
        metric,
        subject: format!("{what} {value:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_form() {
        type Want = Result<(&'static str, &'static str, KedaMetric), &'static str>;
        let cases: &[(&[(&str, &str)], Want)] = &[
            (
                &[("variantName", "llama-a100")],
                Ok((
                    "obj-ns",
                    "variant_name=llama-a100",
                    KedaMetric::DesiredReplicas,
                )),
            ),
            (
                &[
                    ("variantName", "v"),
                    ("namespace", "obj-ns"),
                    ("metric", "desiredRatio"),
                ],
                Ok(("obj-ns", "variant_name=v", KedaMetric::DesiredRatio)),
            ),
            (
                &[("variantName", "v"), ("namespace", "kube-system")],
                Err("not the ScaledObject's namespace"),
            ),
            (
                &[("variantName", "v"), ("namespace", "")],
                Ok(("obj-ns", "variant_name=v", KedaMetric::DesiredReplicas)),
            ),
            (
                &[("targetName", "llama-decode")],
                Ok((
                    "obj-ns",
                    "target_name=llama-decode",
                    KedaMetric::DesiredReplicas,
                )),
            ),
            (
                &[("variantName", "v"), ("targetName", "t")],
                Ok(("obj-ns", "variant_name=v", KedaMetric::DesiredReplicas)),
            ),
            (&[], Err("variantName")),
            (&[("variantName", " ")], Err("variantName")),
            (
                &[("variantName", "a,b=c")],
                Err("not a valid Kubernetes name"),
            ),
            (&[("variantName", "v"), ("metric", "cpu")], Err("metric")),
        ];
        for (pairs, want) in cases {
            let got = parse("obj-ns", &md(pairs));
            match (got, want) {
                (Ok(q), Ok((ns, sel, metric))) => {
                    assert_eq!(
                        (q.namespace.as_str(), q.selector.to_string(), q.metric),
                        (*ns, sel.to_string(), *metric),
                        "{pairs:?}"
                    );
                }
                (Err(e), Err(mention)) => {
                    assert!(e.to_string().contains(mention), "{pairs:?}: {e}")
                }
                (got, want) => panic!("{pairs:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(
            matches!(
                parse("", &md(&[("variantName", "v")])),
                Err(MetadataError::Invalid(_))
            ),
            "no namespace at all"
        );
        assert!(
            matches!(
                parse("", &md(&[("variantName", "v"), ("namespace", "llm")])),
                Err(MetadataError::Invalid(_))
            ),
            "the metadata cannot stand in for the ScaledObject's namespace"
        );
        assert!(matches!(
            parse(
                "team-a",
                &md(&[("variantName", "v"), ("namespace", "team-b")])
            ),
            Err(MetadataError::OtherNamespace(_))
        ));
    }
}
