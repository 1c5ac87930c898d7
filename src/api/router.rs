//! Maps a method and path to a [`Route`]. Pure, so that the fuzzer and the
//! tests can drive it without a server.

use http::Method;

use super::custom::{CustomQuery, CustomVersion, DescribedResource};
use crate::k8s::status::ApiError;

/// Everything the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    ApiGroupList,
    ApiGroup,
    ApiResourceList,
    ExternalMetric { namespace: &'a str, metric: &'a str },
    CustomApiGroup,
    CustomResourceList { version: CustomVersion },
    CustomMetric(CustomQuery<'a>),
    Healthz,
    Livez,
    Readyz,
    Version,
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3Group,
    Metrics,
}

impl Route<'_> {
    /// A low-cardinality name for telemetry and tracing.
    pub fn name(&self) -> &'static str {
        match self {
            Route::ApiGroupList => "apis",
            Route::ApiGroup => "api_group",
            Route::ApiResourceList => "api_resource_list",
            Route::ExternalMetric { .. } => "external_metric",
            Route::CustomApiGroup => "custom_api_group",
            Route::CustomResourceList { .. } => "custom_api_resource_list",
            Route::CustomMetric(_) => "custom_metric",
            Route::Healthz => "healthz",
            Route::Livez => "livez",
            Route::Readyz => "readyz",
            Route::Version => "version",
            Route::OpenApiV2 => "openapi_v2",
            Route::OpenApiV3Root | Route::OpenApiV3Group => "openapi_v3",
            Route::Metrics => "metrics",
        }
    }
}

const GROUP_PREFIX: &str = "/apis/external.metrics.k8s.io";
const CUSTOM_PREFIX: &str = "/apis/custom.metrics.k8s.io";

/// Resolves a request. Unknown paths are 404 and any method other than GET
/// (or HEAD) on a known path is 405, each as a Status.
pub fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ApiError> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let r = match trimmed {
        "/apis" => Route::ApiGroupList,
        GROUP_PREFIX => Route::ApiGroup,
        "/healthz" => Route::Healthz,
        "/livez" => Route::Livez,
        "/readyz" => Route::Readyz,
        "/version" => Route::Version,
        "/openapi/v2" => Route::OpenApiV2,
        "/openapi/v3" => Route::OpenApiV3Root,
        "/openapi/v3/apis/external.metrics.k8s.io/v1beta1"
        | "/openapi/v3/apis/custom.metrics.k8s.io/v1beta1"
        | "/openapi/v3/apis/custom.metrics.k8s.io/v1beta2" => Route::OpenApiV3Group,
        "/metrics" => Route::Metrics,
        CUSTOM_PREFIX => Route::CustomApiGroup,
        _ => {
            if let Some(rest) = trimmed.strip_prefix(GROUP_PREFIX) {
                match rest {
                    "/v1beta1" => Route::ApiResourceList,
                    rest => metric_route(rest, path)?,
                }
            } else if let Some(rest) = trimmed.strip_prefix(CUSTOM_PREFIX) {
                custom_route(rest, path)?
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

fn metric_route<'a>(rest: &'a str, path: &str) -> Result<Route<'a>, ApiError> {
    let rest = rest
        .strip_prefix("/v1beta1/")
        .ok_or_else(|| not_found(path))?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("namespaces"), Some(ns), Some(metric), None) if !ns.is_empty() && !metric.is_empty() => {
            Ok(Route::ExternalMetric {
                namespace: ns,
                metric,
            })
        }
        (Some(metric), None, None, None) if !metric.is_empty() => Err(ApiError::not_found(format!(
            "external metrics are namespaced: use /apis/external.metrics.k8s.io/v1beta1/namespaces/{{namespace}}/{metric}"
        ))),
        _ => Err(not_found(path)),
    }
}

/// `/{version}` or `/{version}/namespaces/{ns}/{resource}/{name}/{metric}`
/// under the custom metrics group.
fn custom_route<'a>(rest: &'a str, path: &str) -> Result<Route<'a>, ApiError> {
    let rest = rest.strip_prefix('/').ok_or_else(|| not_found(path))?;
    let mut parts = rest.split('/');
    let version = parts
        .next()
        .and_then(CustomVersion::parse)
        .ok_or_else(|| not_found(path))?;
    let parts: Vec<&str> = parts.collect();
    match parts.as_slice() {
        [] => Ok(Route::CustomResourceList { version }),
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
            Ok(Route::CustomMetric(CustomQuery {
                version,
                namespace,
                resource,
                name,
                metric,
            }))
        }
        [_, _, _] | [_, _] => Err(ApiError::not_found(format!(
            "only namespaced objects have custom metrics here: use /apis/custom.metrics.k8s.io/{}/namespaces/{{namespace}}/{{resource}}/{{name}}/{{metric}}",
            version.as_str()
        ))),
        _ => Err(not_found(path)),
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

    #[test]
    fn routes_custom_metrics_paths() {
        let get = |p: &'static str| route(&Method::GET, p);
        assert_eq!(
            get("/apis/custom.metrics.k8s.io").unwrap(),
            Route::CustomApiGroup
        );
        assert_eq!(
            get("/apis/custom.metrics.k8s.io/v1beta2/").unwrap(),
            Route::CustomResourceList {
                version: CustomVersion::V1beta2
            }
        );
        assert_eq!(
            get("/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm/deployments.apps/llama-decode/wva_desired_ratio")
                .unwrap(),
            Route::CustomMetric(CustomQuery {
                version: CustomVersion::V1beta1,
                namespace: "llm",
                resource: DescribedResource::Deployments,
                name: "llama-decode",
                metric: "wva_desired_ratio",
            })
        );
        assert_eq!(
            get("/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_kv_cache_usage")
                .unwrap(),
            Route::CustomMetric(CustomQuery {
                version: CustomVersion::V1beta2,
                namespace: "llm",
                resource: DescribedResource::Pods,
                name: "*",
                metric: "vllm_kv_cache_usage",
            })
        );
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
            route(&Method::POST, "/apis/custom.metrics.k8s.io/v1beta2")
                .unwrap_err()
                .code
                .as_u16(),
            405
        );
    }

    #[test]
    fn routes_known_paths() {
        let cases = [
            ("/apis", Route::ApiGroupList),
            ("/apis/", Route::ApiGroupList),
            ("/apis/external.metrics.k8s.io", Route::ApiGroup),
            (
                "/apis/external.metrics.k8s.io/v1beta1",
                Route::ApiResourceList,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/",
                Route::ApiResourceList,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio",
                Route::ExternalMetric {
                    namespace: "llm",
                    metric: "wva_desired_ratio",
                },
            ),
            ("/healthz", Route::Healthz),
            ("/livez", Route::Livez),
            ("/readyz", Route::Readyz),
            ("/version", Route::Version),
            ("/openapi/v2", Route::OpenApiV2),
            ("/openapi/v3", Route::OpenApiV3Root),
            ("/metrics", Route::Metrics),
        ];
        for (path, want) in cases {
            assert_eq!(route(&Method::GET, path), Ok(want), "{path}");
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
            let err = route(&method, path).unwrap_err();
            assert_eq!(err.code.as_u16(), code, "{method} {path}");
        }
    }
}
