//! Parses a request's method, path and query into an owned [`ApiRequest`],
//! once per request: the routing layer stores it in the request's
//! extensions, where authentication, authorization and the handlers read
//! it. Pure, so that the fuzzer and the tests can drive it without a
//! server.

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;

use crate::k8s::selector::LabelSelector;
use crate::k8s::status::ApiError;

/// A served version of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomVersion {
    V1beta1,
    V1beta2,
}

impl CustomVersion {
    /// Newest first: the order of discovery, the first is preferred.
    pub(crate) const ALL: [CustomVersion; 2] = [CustomVersion::V1beta2, CustomVersion::V1beta1];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "v1beta1" => Some(CustomVersion::V1beta1),
            "v1beta2" => Some(CustomVersion::V1beta2),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CustomVersion::V1beta1 => "v1beta1",
            CustomVersion::V1beta2 => "v1beta2",
        }
    }

    pub(crate) fn group_version(self) -> &'static str {
        match self {
            CustomVersion::V1beta1 => "custom.metrics.k8s.io/v1beta1",
            CustomVersion::V1beta2 => "custom.metrics.k8s.io/v1beta2",
        }
    }
}

/// The kinds of object metrics are served for, by their path segment
/// (`{resource}.{group}` as the HPA's REST mapping writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DescribedResource {
    Deployments,
    StatefulSets,
    Pods,
}

impl DescribedResource {
    pub(crate) const ALL: [DescribedResource; 3] = [
        DescribedResource::Deployments,
        DescribedResource::StatefulSets,
        DescribedResource::Pods,
    ];

    pub(crate) fn parse(segment: &str) -> Option<Self> {
        DescribedResource::ALL
            .into_iter()
            .find(|r| r.segment().eq_ignore_ascii_case(segment))
    }

    pub(crate) fn segment(self) -> &'static str {
        match self {
            DescribedResource::Deployments => "deployments.apps",
            DescribedResource::StatefulSets => "statefulsets.apps",
            DescribedResource::Pods => "pods",
        }
    }

    pub(crate) fn kind(self) -> &'static str {
        match self {
            DescribedResource::Deployments => "Deployment",
            DescribedResource::StatefulSets => "StatefulSet",
            DescribedResource::Pods => "Pod",
        }
    }

    pub(crate) fn api_version(self) -> &'static str {
        match self {
            DescribedResource::Deployments | DescribedResource::StatefulSets => "apps/v1",
            DescribedResource::Pods => "v1",
        }
    }
}

/// Everything the server answers, with what the request asks parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    ApiGroupList,
    ApiGroup,
    ApiResourceList,
    /// `external.metrics.k8s.io` values of a namespace's variants.
    ExternalValues(ExternalQuery),
    CustomApiGroup,
    CustomResourceList {
        version: CustomVersion,
    },
    /// `custom.metrics.k8s.io`: a decision as an Object metric on a scale
    /// target (a Deployment or StatefulSet).
    ObjectMetric(CustomQuery),
    /// `custom.metrics.k8s.io`: a raw signal per pod, as Pods metrics.
    PodsMetric(CustomQuery),
    Healthz,
    Livez,
    Readyz,
    Version,
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3Group,
    Metrics,
}

/// A values request of `external.metrics.k8s.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalQuery {
    pub(crate) namespace: String,
    /// The metric as asked (any case).
    pub(crate) metric: String,
    /// `labelSelector`, or the 400 its parse gave: answered by the handler,
    /// after authentication and authorization, as before the parse moved.
    pub(crate) selector: Result<LabelSelector, ApiError>,
}

/// A request of `custom.metrics.k8s.io` for one described object or all
/// (`*`) of a resource in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomQuery {
    pub(crate) version: CustomVersion,
    pub(crate) namespace: String,
    pub(crate) resource: DescribedResource,
    /// `*` for every object of the resource in the namespace.
    pub(crate) name: String,
    /// The metric as asked (any case).
    pub(crate) metric: String,
    /// `labelSelector` (or its 400, answered by the handler).
    pub(crate) label_selector: Result<LabelSelector, ApiError>,
    /// `metricSelector` of an Object metric (or its 400); everything for
    /// Pods metrics, which do not read it.
    pub(crate) metric_selector: Result<LabelSelector, ApiError>,
}

impl CustomQuery {
    /// The described object's name; None for `*`.
    pub(crate) fn object_name(&self) -> Option<&str> {
        (self.name != "*").then_some(self.name.as_str())
    }
}

impl ApiRequest {
    /// A low-cardinality name for telemetry and tracing.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ApiRequest::ApiGroupList => "apis",
            ApiRequest::ApiGroup => "api_group",
            ApiRequest::ApiResourceList => "api_resource_list",
            ApiRequest::ExternalValues(_) => "external_metric",
            ApiRequest::CustomApiGroup => "custom_api_group",
            ApiRequest::CustomResourceList { .. } => "custom_api_resource_list",
            ApiRequest::ObjectMetric(_) | ApiRequest::PodsMetric(_) => "custom_metric",
            ApiRequest::Healthz => "healthz",
            ApiRequest::Livez => "livez",
            ApiRequest::Readyz => "readyz",
            ApiRequest::Version => "version",
            ApiRequest::OpenApiV2 => "openapi_v2",
            ApiRequest::OpenApiV3Root | ApiRequest::OpenApiV3Group => "openapi_v3",
            ApiRequest::Metrics => "metrics",
        }
    }
}

/// Requests parsed since the process started (`wva_routes_parsed_total`):
/// equal to the requests routed, which shows that nothing parses twice.
static PARSED: AtomicU64 = AtomicU64::new(0);

/// Requests parsed by [`route`] so far in this process.
pub(crate) fn requests_parsed() -> u64 {
    PARSED.load(Ordering::Relaxed)
}

const GROUP_PREFIX: &str = "/apis/external.metrics.k8s.io";
const CUSTOM_PREFIX: &str = "/apis/custom.metrics.k8s.io";

/// Parses a request: `path` is the decoded path, `query` the query string
/// as sent. Unknown paths are 404 and any method other than GET (or HEAD)
/// on a known path is 405, each as a Status. A selector that does not
/// parse is kept in the request as its 400 (see [`ExternalQuery::selector`]).
pub fn route(method: &Method, path: &str, query: Option<&str>) -> Result<ApiRequest, ApiError> {
    PARSED.fetch_add(1, Ordering::Relaxed);
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let r = match trimmed {
        "/apis" => ApiRequest::ApiGroupList,
        GROUP_PREFIX => ApiRequest::ApiGroup,
        "/healthz" => ApiRequest::Healthz,
        "/livez" => ApiRequest::Livez,
        "/readyz" => ApiRequest::Readyz,
        "/version" => ApiRequest::Version,
        "/openapi/v2" => ApiRequest::OpenApiV2,
        "/openapi/v3" => ApiRequest::OpenApiV3Root,
        "/openapi/v3/apis/external.metrics.k8s.io/v1beta1"
        | "/openapi/v3/apis/custom.metrics.k8s.io/v1beta1"
        | "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2" => ApiRequest::OpenApiV3Group,
        "/metrics" => ApiRequest::Metrics,
        CUSTOM_PREFIX => ApiRequest::CustomApiGroup,
        _ => {
            if let Some(rest) = trimmed.strip_prefix(GROUP_PREFIX) {
                match rest {
                    "/v1beta1" => ApiRequest::ApiResourceList,
                    rest => metric_route(rest, path, query)?,
                }
            } else if let Some(rest) = trimmed.strip_prefix(CUSTOM_PREFIX) {
                custom_route(rest, path, query)?
            } else {
                return Err(not_found(path));
            }
        }
    };
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::method_not_allowed(method, path));
    }
    Ok(r)
}

fn metric_route(rest: &str, path: &str, query: Option<&str>) -> Result<ApiRequest, ApiError> {
    let rest = rest
        .strip_prefix("/v1beta1/")
        .ok_or_else(|| not_found(path))?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("namespaces"), Some(ns), Some(metric), None) if !ns.is_empty() && !metric.is_empty() => {
            Ok(ApiRequest::ExternalValues(ExternalQuery {
                namespace: ns.to_owned(),
                metric: metric.to_owned(),
                selector: selector_param(query, "labelSelector"),
            }))
        }
        (Some(metric), None, None, None) if !metric.is_empty() => Err(ApiError::not_found(format!(
            "external metrics are namespaced: use /apis/external.metrics.k8s.io/v1beta1/namespaces/{{namespace}}/{metric}"
        ))),
        _ => Err(not_found(path)),
    }
}

/// `/{version}` or `/{version}/namespaces/{ns}/{resource}/{name}/{metric}`
/// under the custom metrics group.
fn custom_route(rest: &str, path: &str, query: Option<&str>) -> Result<ApiRequest, ApiError> {
    let rest = rest.strip_prefix('/').ok_or_else(|| not_found(path))?;
    let mut parts = rest.split('/');
    let version = parts
        .next()
        .and_then(CustomVersion::parse)
        .ok_or_else(|| not_found(path))?;
    let parts: Vec<&str> = parts.collect();
    match parts.as_slice() {
        [] => Ok(ApiRequest::CustomResourceList { version }),
        ["namespaces", namespace, resource, name, metric]
            if !namespace.is_empty() && !name.is_empty() && !metric.is_empty() =>
        {
            let resource = DescribedResource::parse(resource).ok_or_else(|| {
                let served: Vec<&str> = DescribedResource::ALL.iter().map(|r| r.segment()).collect();
                ApiError::not_found(format!(
                    "custom metrics are not served for resource {resource:?}; served: {}",
                    served.join(", ")
                ))
            })?;
            let pods = resource == DescribedResource::Pods;
            let q = CustomQuery {
                version,
                namespace: (*namespace).to_owned(),
                resource,
                name: (*name).to_owned(),
                metric: (*metric).to_owned(),
                label_selector: selector_param(query, "labelSelector"),
                metric_selector: if pods {
                    Ok(LabelSelector::everything())
                } else {
                    selector_param(query, "metricSelector")
                },
            };
            Ok(if pods {
                ApiRequest::PodsMetric(q)
            } else {
                ApiRequest::ObjectMetric(q)
            })
        }
        [_, _, _] | [_, _] => Err(ApiError::not_found(format!(
            "only namespaced objects have custom metrics here: use /apis/custom.metrics.k8s.io/{}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}",
            version.as_str()
        ))),
        _ => Err(not_found(path)),
    }
}

/// The selector in query parameter `param` (`labelSelector`, or
/// `metricSelector` on the custom metrics API); everything when absent.
/// The aggregator re-encodes the query as form data (space as `+`), so it
/// is decoded as such.
fn selector_param(query: Option<&str>, param: &str) -> Result<LabelSelector, ApiError> {
    let raw = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == param)
        .map(|(_, v)| v);
    match raw {
        None => Ok(LabelSelector::everything()),
        Some(s) => LabelSelector::parse(&s)
            .map_err(|e| ApiError::bad_request(format!("invalid {param} {:?}: {e}", s.as_ref()))),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource: {path}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(p: &str) -> Result<ApiRequest, ApiError> {
        route(&Method::GET, p, None)
    }

    fn custom(
        version: CustomVersion,
        resource: DescribedResource,
        name: &str,
        metric: &str,
    ) -> CustomQuery {
        CustomQuery {
            version,
            namespace: "llm".into(),
            resource,
            name: name.into(),
            metric: metric.into(),
            label_selector: Ok(LabelSelector::everything()),
            metric_selector: Ok(LabelSelector::everything()),
        }
    }

    #[test]
    fn routes_custom_metrics_paths() {
        assert_eq!(
            get("/apis/custom.metrics.k8s.io").unwrap(),
            ApiRequest::CustomApiGroup
        );
        assert_eq!(
            get("/apis/custom.metrics.k8s.io/v1beta2/").unwrap(),
            ApiRequest::CustomResourceList {
                version: CustomVersion::V1beta2
            }
        );
        assert_eq!(
            get("/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/deployments.apps/llama-decode/wva_desired_ratio")
                .unwrap(),
            ApiRequest::ObjectMetric(custom(
                CustomVersion::V1beta1,
                DescribedResource::Deployments,
                "llama-decode",
                "wva_desired_ratio"
            ))
        );
        let pods =
            get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_kv_cache_usage")
                .unwrap();
        assert_eq!(
            pods,
            ApiRequest::PodsMetric(custom(
                CustomVersion::V1beta2,
                DescribedResource::Pods,
                "*",
                "vllm_kv_cache_usage"
            ))
        );
        match pods {
            ApiRequest::PodsMetric(q) => assert_eq!(q.object_name(), None),
            other => panic!("{other:?}"),
        }
        for (bad, code) in [
            ("/apis/custom.metrics.k8s.io/v2", 404),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/services/x/m",
                404,
            ),
            ("/apis/custom.metrics.k8s.io/v1beta2/nodes/n1/m", 404),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods//m",
                404,
            ),
        ] {
            assert_eq!(get(bad).unwrap_err().code.as_u16(), code, "{bad}");
        }
        let e = get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/services/x/m").unwrap_err();
        assert!(e.message.contains("deployments.apps"), "{}", e.message);
        assert_eq!(
            route(&Method::POST, "/apis/custom.metrics.k8s.io/v1beta2", None)
                .unwrap_err()
                .code
                .as_u16(),
            405
        );
    }

    #[test]
    fn custom_queries_carry_their_parsed_selectors() {
        let path = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/deployments.apps/d/wva_desired_ratio";
        let q = "metricSelector=model_id%3Dm&labelSelector=a+in+(x,y)";
        let ApiRequest::ObjectMetric(object) = route(&Method::GET, path, Some(q)).unwrap() else {
            panic!("not an Object metric");
        };
        assert_eq!(object.object_name(), Some("d"));
        assert_eq!(
            object.metric_selector.map(|s| s.to_string()),
            Ok("model_id=m".to_owned())
        );
        assert_eq!(
            object.label_selector.map(|s| s.to_string()),
            Ok("a in (x,y)".to_owned())
        );
        // A bad selector is a 400 the handler answers (after authorization).
        let ApiRequest::ObjectMetric(bad) =
            route(&Method::GET, path, Some("metricSelector=a%20in%20(")).unwrap()
        else {
            panic!("not an Object metric");
        };
        assert_eq!(bad.metric_selector.unwrap_err().code.as_u16(), 400);
        // Pods metrics do not read metricSelector.
        let pods = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_kv_cache_usage";
        let ApiRequest::PodsMetric(p) =
            route(&Method::GET, pods, Some("metricSelector=a%20in%20(")).unwrap()
        else {
            panic!("not a Pods metric");
        };
        assert_eq!(p.metric_selector, Ok(LabelSelector::everything()));
    }

    #[test]
    fn selector_is_decoded_as_form_data() {
        let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio";
        let cases = [
            (None, Ok("")),
            (
                Some("labelSelector=target_name%3Dllama"),
                Ok("target_name=llama"),
            ),
            (Some("labelSelector=a+in+(x,y)"), Ok("a in (x,y)")),
            (Some("foo=bar"), Ok("")),
            (Some("labelSelector=target_name%20in%20("), Err(400)),
        ];
        for (query, want) in cases {
            let Ok(ApiRequest::ExternalValues(q)) = route(&Method::GET, path, query) else {
                panic!("{query:?} does not route to external values");
            };
            let got = q
                .selector
                .map(|s| s.to_string())
                .map_err(|e| e.code.as_u16());
            assert_eq!(got, want.map(str::to_owned), "{query:?}");
        }
    }

    #[test]
    fn routes_known_paths() {
        let cases = [
            ("/apis", ApiRequest::ApiGroupList),
            ("/apis/", ApiRequest::ApiGroupList),
            ("/apis/external.metrics.k8s.io", ApiRequest::ApiGroup),
            (
                "/apis/external.metrics.k8s.io/v1beta1",
                ApiRequest::ApiResourceList,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/",
                ApiRequest::ApiResourceList,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio",
                ApiRequest::ExternalValues(ExternalQuery {
                    namespace: "llm".into(),
                    metric: "wva_desired_ratio".into(),
                    selector: Ok(LabelSelector::everything()),
                }),
            ),
            ("/healthz", ApiRequest::Healthz),
            ("/livez", ApiRequest::Livez),
            ("/readyz", ApiRequest::Readyz),
            ("/version", ApiRequest::Version),
            ("/openapi/v2", ApiRequest::OpenApiV2),
            ("/openapi/v3", ApiRequest::OpenApiV3Root),
            ("/metrics", ApiRequest::Metrics),
        ];
        for (path, want) in cases {
            assert_eq!(get(path), Ok(want), "{path}");
        }
    }

    #[test]
    fn rejects_unknown_paths_and_methods() {
        let cases = [
            (Method::GET, "/", 404),
            (Method::GET, "/api", 404),
            (Method::GET, "/apis/custom.metrics.k8s.io/v1alpha1", 404),
            (Method::GET, "/apis/external.metrics.k8s.io/v1beta2", 404),
            (
                Method::GET,
                "/apis/external.metrics.k8s.io/v1beta1/wva_desired_ratio",
                404,
            ),
            (
                Method::GET,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/a",
                404,
            ),
            (
                Method::GET,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b/c",
                404,
            ),
            (
                Method::POST,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/a/b",
                405,
            ),
            (Method::DELETE, "/apis", 405),
            (Method::PUT, "/healthz", 405),
            (Method::POST, "/nope", 404),
        ];
        for (method, path, code) in cases {
            let err = route(&method, path, None).unwrap_err();
            assert_eq!(err.code.as_u16(), code, "{method} {path}");
        }
    }
}
