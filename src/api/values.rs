//! `GET .../namespaces/{ns}/{metric}?labelSelector=...`: the values request
//! the HPA makes every sync period.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::{answer_time, ServedMetric, SERVED_NAMES};
use super::router::ExternalQuery;
use crate::decision::{DecisionEngine, DecisionError, VariantDecision};
use crate::k8s::quantity::write_milli;
use crate::k8s::status::ApiError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalMetricValueList<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    items: Vec<ExternalMetricValue<'a>>,
}

#[derive(Serialize)]
struct ListMeta {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalMetricValue<'a> {
    metric_name: &'a str,
    metric_labels: ItemLabels<'a>,
    timestamp: &'a str,
    value: String,
}

/// The variant's labels plus `analyzer`, the analysis that decided,
/// serialised without building a new map per item.
struct ItemLabels<'a> {
    variant: &'a BTreeMap<String, String>,
    analyzer: &'static str,
}

/// Label added to every item: which analysis decided.
pub(crate) const ANALYZER_LABEL: &str = "analyzer";

impl Serialize for ItemLabels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.variant.len() + 1))?;
        for (k, v) in self.variant {
            if k != ANALYZER_LABEL {
                m.serialize_entry(k, v)?;
            }
        }
        m.serialize_entry(ANALYZER_LABEL, self.analyzer)?;
        m.end()
    }
}

/// Maps a decision failure to the Status the client sees.
pub(crate) fn decision_error(e: DecisionError) -> ApiError {
    match e {
        DecisionError::NoMatch { .. } | DecisionError::TargetMissing { .. } => {
            ApiError::not_found(e.to_string())
        }
        _ if e.is_unavailable() => ApiError::service_unavailable(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// A values answer, and whether asking again with the same inputs gives
/// the same answer (false when an analysis with state between decisions,
/// the token-based one, took part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValuesAnswer {
    pub(crate) body: Vec<u8>,
    pub(crate) repeatable: bool,
}

/// Answers a values request with an `ExternalMetricValueList` JSON body.
pub(crate) fn external_metric_answer(
    engine: &DecisionEngine,
    q: &ExternalQuery,
) -> Result<ValuesAnswer, ApiError> {
    let metric = &q.metric;
    let (name, served) = ServedMetric::from_name(metric).ok_or_else(|| {
        let names: Vec<&str> = SERVED_NAMES.iter().map(|(n, _)| *n).collect();
        ApiError::not_found(format!(
            "external metric {metric:?} is not served here; served metrics: {}",
            names.join(", ")
        ))
    })?;
    let selector = q.selector.as_ref().map_err(Clone::clone)?;
    let decisions = engine
        .decide(&q.namespace, selector)
        .map_err(decision_error)?;
    let timestamp = answer_time().to_string();
    let repeatable = decisions.iter().all(|d| {
        d.analyzer != crate::saturation::v2::ANALYZER_NAME
            && d.analyzer != crate::saturation::slo::ANALYZER_NAME
    });
    Ok(ValuesAnswer {
        body: render_list(name, served, &decisions, &timestamp),
        repeatable,
    })
}

/// Serialises the list. Values are Quantities in milli units; the ratio is
/// rounded down so that the HPA's `ceil(ready * value)` is the desired count.
pub(crate) fn render_list(
    name: &str,
    metric: ServedMetric,
    decisions: &[VariantDecision],
    timestamp: &str,
) -> Vec<u8> {
    let items = decisions
        .iter()
        .map(|d| {
            let mut value = String::with_capacity(8);
            write_milli(&mut value, metric.milli(d.desired, d.ready));
            ExternalMetricValue {
                metric_name: name,
                metric_labels: ItemLabels {
                    variant: &d.variant.metric_labels,
                    analyzer: d.analyzer,
                },
                timestamp,
                value,
            }
        })
        .collect();
    let list = ExternalMetricValueList {
        kind: "ExternalMetricValueList",
        api_version: "external.metrics.k8s.io/v1beta1",
        metadata: ListMeta {},
        items,
    };
    // Strings, maps of strings and integers always serialise.
    serde_json::to_vec(&list).unwrap_or_default()
}
