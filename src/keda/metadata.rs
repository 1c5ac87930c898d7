//! What a ScaledObject's `external` trigger asks for, from its
//! `scalerMetadata`. Pure and table-tested.

use std::collections::HashMap;

use crate::api::selector::LabelSelector;
use crate::inventory::snapshot::labels;

/// Which number the trigger scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KedaMetric {
    /// Desired replicas; KEDA's `AverageValue` target of 1 then yields exactly that count.
    DesiredReplicas,
    /// Desired over ready replicas.
    DesiredRatio,
}

impl KedaMetric {
    /// The metric name reported to KEDA.
    pub fn name(&self) -> &'static str {
        match self {
            KedaMetric::DesiredReplicas => "wva_desired_replicas",
            KedaMetric::DesiredRatio => "wva_desired_ratio",
        }
    }
}

/// A parsed trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerQuery {
    pub namespace: String,
    pub selector: LabelSelector,
    pub metric: KedaMetric,
    /// `variant "x"` or `target "y"`, for messages.
    pub subject: String,
}

/// A trigger whose metadata cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MetadataError(pub String);

/// Metadata keys.
pub const VARIANT_NAME: &str = "variantName";
pub const TARGET_NAME: &str = "targetName";
pub const NAMESPACE: &str = "namespace";
pub const METRIC: &str = "metric";

/// Parses the metadata of a ScaledObject in `object_namespace`. The variant
/// is named by `variantName`, or `targetName` (all variants scaling that
/// target); `namespace` defaults to the ScaledObject's; `metric` is
/// `desiredReplicas` (default) or `desiredRatio`.
pub fn parse(
    object_namespace: &str,
    metadata: &HashMap<String, String>,
) -> Result<ScalerQuery, MetadataError> {
    let get = |k: &str| metadata.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let (label, value, what) = match (get(VARIANT_NAME), get(TARGET_NAME)) {
        (Some(v), _) => (labels::VARIANT_NAME, v, "variant"),
        (None, Some(t)) => (labels::TARGET_NAME, t, "target"),
        (None, None) => {
            return Err(MetadataError(format!(
                "scalerMetadata must name the variant: set {VARIANT_NAME} (or {TARGET_NAME})"
            )))
        }
    };
    let selector = LabelSelector::parse(&format!("{label}={value}"))
        .ok()
        .filter(|s| s.requirements().len() == 1 && s.exact_value(label) == Some(value))
        .ok_or_else(|| {
            MetadataError(format!(
                "scalerMetadata {what} name {value:?} is not a valid Kubernetes name"
            ))
        })?;
    let namespace = get(NAMESPACE).unwrap_or(object_namespace).to_owned();
    if namespace.is_empty() {
        return Err(MetadataError(format!(
            "no namespace: set scalerMetadata {NAMESPACE} or the ScaledObject's namespace"
        )));
    }
    let metric = match get(METRIC) {
        None | Some("desiredReplicas") => KedaMetric::DesiredReplicas,
        Some("desiredRatio") => KedaMetric::DesiredRatio,
        Some(other) => {
            return Err(MetadataError(format!(
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
                    ("namespace", "llm"),
                    ("metric", "desiredRatio"),
                ],
                Ok(("llm", "variant_name=v", KedaMetric::DesiredRatio)),
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
                (Err(e), Err(mention)) => assert!(e.0.contains(mention), "{pairs:?}: {e}"),
                (got, want) => panic!("{pairs:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(
            parse("", &md(&[("variantName", "v")])).is_err(),
            "no namespace at all"
        );
    }
}
