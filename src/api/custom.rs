//! `custom.metrics.k8s.io`: the decision as an **Object metric on the scale
//! target** (`deployments.apps/wva_desired_ratio` and friends), and the raw
//! per-pod saturation signals as **Pods metrics**.
//!
//! Why a second group: a cluster has one owner per APIService group. Where
//! KEDA owns `external.metrics.k8s.io`, the HPA can still read our decision
//! here, in the group Prometheus Adapter usually owns (which is what this
//! server replaces). An Object metric also names its target directly, so
//! the HPA needs no label selector.
//!
//! Wire format as k8s.io/metrics defines it: `v1beta2` (what the HPA
//! controller asks) carries `metric: {name}`; `v1beta1` (older clients,
//! `kubectl get --raw`) carries `metricName`. Both lists are `MetricValueList`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIResource, APIResourceList, GroupVersionForDiscovery,
};
use serde::Serialize;

use super::metrics::{answer_time, ServedMetric, SERVED_NAMES};
// The versions and resources are the router's vocabulary (it parses
// them); re-exported here, where the custom metrics API is.
use super::router::CustomQuery;
pub(crate) use super::router::{CustomVersion, DescribedResource};
use super::values::decision_error;
use crate::decision::{DecisionEngine, VariantDecision};
use crate::k8s::quantity::write_milli;
use crate::k8s::status::ApiError;

pub(crate) const GROUP: &str = "custom.metrics.k8s.io";

/// The raw signals served per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodSignal {
    /// Peak KV-cache usage over the last minute, in [0, 1].
    KvCacheUsage,
    /// Peak waiting requests over the last minute.
    RequestsWaiting,
}

pub(crate) const POD_SIGNALS: [(&str, PodSignal); 2] = [
    ("vllm_kv_cache_usage", PodSignal::KvCacheUsage),
    ("vllm_num_requests_waiting", PodSignal::RequestsWaiting),
];

impl PodSignal {
    pub(crate) fn from_name(name: &str) -> Option<(&'static str, PodSignal)> {
        POD_SIGNALS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .copied()
    }
}

/// The APIGroup document: v1beta2 preferred.
pub(crate) fn api_group() -> APIGroup {
    let versions: Vec<GroupVersionForDiscovery> = CustomVersion::ALL
        .iter()
        .map(|v| GroupVersionForDiscovery {
            group_version: v.group_version().to_owned(),
            version: v.as_str().to_owned(),
        })
        .collect();
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: versions.first().cloned(),
        server_address_by_client_cidrs: None,
        versions,
    }
}

/// The APIResourceList of one version: `{resource}/{metric}` for every
/// object metric and pod signal (the custom metrics API's convention).
pub(crate) fn resource_list(version: CustomVersion) -> APIResourceList {
    let resource = |name: String| APIResource {
        name,
        singular_name: String::new(),
        namespaced: true,
        kind: "MetricValueList".to_owned(),
        verbs: vec!["get".to_owned()],
        ..Default::default()
    };
    let mut resources = Vec::new();
    for r in [
        DescribedResource::Deployments,
        DescribedResource::StatefulSets,
    ] {
        for (name, _) in SERVED_NAMES {
            resources.push(resource(format!("{}/{name}", r.segment())));
        }
    }
    for (name, _) in POD_SIGNALS {
        resources.push(resource(format!("pods/{name}")));
    }
    APIResourceList {
        group_version: version.group_version().to_owned(),
        resources,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    api_version: &'static str,
}

#[derive(Serialize)]
struct MetricIdentifier<'a> {
    name: &'a str,
}

/// One item; the fields that differ between versions are optional and
/// set for the version answered.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValue<'a> {
    described_object: ObjectReference<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<MetricIdentifier<'a>>,
    timestamp: &'a str,
    value: String,
}

#[derive(Serialize)]
struct ListMeta {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricValueList<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    items: Vec<MetricValue<'a>>,
}

/// Answers a custom metrics request with a `MetricValueList` JSON body.
pub(crate) fn custom_metric_values(
    engine: &DecisionEngine,
    q: &CustomQuery,
) -> Result<Vec<u8>, ApiError> {
    let timestamp = answer_time().to_string();
    let name = q.object_name();
    match q.resource {
        DescribedResource::Pods => {
            let (metric_name, signal) = PodSignal::from_name(&q.metric).ok_or_else(|| {
                let names: Vec<&str> = POD_SIGNALS.iter().map(|(n, _)| *n).collect();
                ApiError::not_found(format!(
                    "custom metric {:?} is not served for pods; served: {}",
                    q.metric,
                    names.join(", ")
                ))
            })?;
            let selector = q.label_selector.as_ref().map_err(Clone::clone)?;
            let pods = engine
                .ready_pod_metrics(&q.namespace, name, selector)
                .map_err(decision_error)?;
            if pods.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no ready pod {}in namespace {:?} matches labelSelector {:?}",
                    name.map(|n| format!("{n:?} ")).unwrap_or_default(),
                    q.namespace,
                    selector.to_string()
                )));
            }
            let items: Vec<(String, i64)> = pods
                .iter()
                .filter_map(|(p, m)| {
                    let m = m.as_ref()?;
                    let v = match signal {
                        PodSignal::KvCacheUsage => m.kv_usage,
                        PodSignal::RequestsWaiting => m.queue_waiting,
                    };
                    // Milli units, rounded down like every value we serve.
                    Some((p.name().to_owned(), (v * 1000.0).floor() as i64))
                })
                .collect();
            if items.is_empty() {
                return Err(ApiError::service_unavailable(format!(
                    "metrics of the {} selected pod(s) in namespace {:?} are not fetched yet or stale",
                    pods.len(),
                    q.namespace
                )));
            }
            Ok(render(
                q.version,
                DescribedResource::Pods,
                &q.namespace,
                metric_name,
                items.iter().map(|(n, v)| (n.as_str(), *v)),
                &timestamp,
            ))
        }
        target => {
            let (metric_name, served) = ServedMetric::from_name(&q.metric).ok_or_else(|| {
                let names: Vec<&str> = SERVED_NAMES.iter().map(|(n, _)| *n).collect();
                ApiError::not_found(format!(
                    "custom metric {:?} is not served for {}; served: {}",
                    q.metric,
                    target.segment(),
                    names.join(", ")
                ))
            })?;
            let selector = q.metric_selector.as_ref().map_err(Clone::clone)?;
            if !q.label_selector.as_ref().map_err(Clone::clone)?.is_empty() {
                return Err(ApiError::bad_request(
                    "labelSelector selects scale targets by their own labels, which this server does not keep; \
                     name the target, or use metricSelector with target_name, variant_name, model_id or accelerator_type",
                ));
            }
            let decisions = engine
                .decide_for_targets(&q.namespace, target.kind(), name, selector)
                .map_err(decision_error)?;
            let items = per_target(&decisions, served);
            Ok(render(
                q.version,
                target,
                &q.namespace,
                metric_name,
                items.iter().map(|(n, v)| (n.as_str(), *v)),
                &timestamp,
            ))
        }
    }
}

/// One value per scale target: the HPA reads exactly one item for an
/// Object metric, so variants sharing a target (rare) are added up, and the
/// ratio is that of the sums.
fn per_target(decisions: &[VariantDecision], metric: ServedMetric) -> Vec<(String, i64)> {
    let mut sums: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for d in decisions {
        let e = sums.entry(d.variant.target_name.as_str()).or_default();
        e.0 += d.desired;
        e.1 += d.ready;
    }
    sums.into_iter()
        .map(|(target, (desired, ready))| (target.to_owned(), metric.milli(desired, ready)))
        .collect()
}

fn render<'a>(
    version: CustomVersion,
    resource: DescribedResource,
    namespace: &'a str,
    metric: &'a str,
    items: impl Iterator<Item = (&'a str, i64)>,
    timestamp: &'a str,
) -> Vec<u8> {
    let items = items
        .map(|(name, milli)| {
            let mut value = String::with_capacity(8);
            write_milli(&mut value, milli);
            MetricValue {
                described_object: ObjectReference {
                    kind: resource.kind(),
                    namespace,
                    name,
                    api_version: resource.api_version(),
                },
                metric_name: (version == CustomVersion::V1beta1).then_some(metric),
                metric: (version == CustomVersion::V1beta2)
                    .then_some(MetricIdentifier { name: metric }),
                timestamp,
                value,
            }
        })
        .collect();
    let list = MetricValueList {
        kind: "MetricValueList",
        api_version: version.group_version(),
        metadata: ListMeta {},
        items,
    };
    // Strings and integers always serialise.
    serde_json::to_vec(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_names_every_object_metric_and_pod_signal() {
        let list = resource_list(CustomVersion::V1beta2);
        let json = serde_json::to_value(&list).unwrap();
        assert_eq!(json["kind"], "APIResourceList");
        assert_eq!(json["groupVersion"], "custom.metrics.k8s.io/v1beta2");
        let names: Vec<&str> = json["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for want in [
            "deployments.apps/wva_desired_ratio",
            "deployments.apps/wva_desired_replicas",
            "deployments.apps/wva_current_replicas",
            "statefulsets.apps/wva_desired_ratio",
            "deployments.apps/inferno_desired_ratio",
            "pods/vllm_kv_cache_usage",
            "pods/vllm_num_requests_waiting",
        ] {
            assert!(names.contains(&want), "{want} in {names:?}");
        }
        for r in json["resources"].as_array().unwrap() {
            assert_eq!(r["kind"], "MetricValueList");
            assert_eq!(r["namespaced"], true);
        }
    }

    #[test]
    fn group_prefers_v1beta2() {
        let g = serde_json::to_value(api_group()).unwrap();
        assert_eq!(g["kind"], "APIGroup");
        assert_eq!(g["preferredVersion"]["version"], "v1beta2");
        assert_eq!(
            g["versions"][1]["groupVersion"],
            "custom.metrics.k8s.io/v1beta1"
        );
    }

    #[test]
    fn items_follow_each_version_s_field_names() {
        let one = [("llama-decode", 1500)];
        for (version, name_field) in [
            (CustomVersion::V1beta1, "metricName"),
            (CustomVersion::V1beta2, "metric"),
        ] {
            let body = render(
                version,
                DescribedResource::Deployments,
                "llm",
                "wva_desired_ratio",
                one.iter().map(|(n, v)| (*n, *v)),
                "2026-11-26T00:00:00Z",
            );
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["kind"], "MetricValueList");
            assert_eq!(v["apiVersion"], version.group_version());
            let item = &v["items"][0];
            assert_eq!(
                item["describedObject"],
                serde_json::json!({"kind": "Deployment", "namespace": "llm", "name": "llama-decode", "apiVersion": "apps/v1"})
            );
            assert_eq!(item["value"], "1500m");
            assert!(item.get(name_field).is_some(), "{version:?}: {item}");
            match version {
                CustomVersion::V1beta1 => {
                    assert_eq!(item["metricName"], "wva_desired_ratio");
                    assert!(item.get("metric").is_none());
                }
                CustomVersion::V1beta2 => {
                    assert_eq!(item["metric"]["name"], "wva_desired_ratio");
                    assert!(item.get("metricName").is_none());
                }
            }
        }
    }

    #[test]
    fn resources_and_signals_parse_case_insensitively() {
        assert_eq!(
            DescribedResource::parse("Deployments.apps"),
            Some(DescribedResource::Deployments)
        );
        assert_eq!(DescribedResource::parse("deployments"), None);
        assert_eq!(
            PodSignal::from_name("VLLM_KV_CACHE_USAGE").map(|(_, s)| s),
            Some(PodSignal::KvCacheUsage)
        );
        assert_eq!(CustomVersion::parse("v1"), None);
    }
}
