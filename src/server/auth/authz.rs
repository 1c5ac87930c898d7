//! What is being asked: request attributes as Kubernetes authorizes them,
//! and the message of a denial. Pure.

use crate::api::router::Route;

/// Attributes of a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attributes {
    Resource {
        verb: &'static str,
        group: &'static str,
        resource: String,
        namespace: String,
    },
    NonResource {
        verb: &'static str,
        path: String,
    },
}

pub const GROUP: &str = "external.metrics.k8s.io";

/// A values GET names no object, so Kubernetes calls it `list` on the
/// metric as resource; everything else is a non-resource `get` on the path.
pub fn attributes(route: &Route<'_>, path: &str) -> Attributes {
    match route {
        Route::ExternalMetric { namespace, metric } => Attributes::Resource {
            verb: "list",
            group: GROUP,
            resource: metric.to_ascii_lowercase(),
            namespace: (*namespace).to_owned(),
        },
        _ => Attributes::NonResource {
            verb: "get",
            path: path.to_owned(),
        },
    }
}

/// The 403 message: who was denied what.
pub fn denied_message(user: &str, a: &Attributes, reason: &str) -> String {
    let base = match a {
        Attributes::Resource {
            verb,
            group,
            resource,
            namespace,
        } => format!(
            "User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}"
        ),
        Attributes::NonResource { verb, path } => {
            format!("User {user:?} cannot {verb} path {path:?}")
        }
    };
    if reason.is_empty() {
        base
    } else {
        format!("{base}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_routes_to_review_attributes() {
        let cases = [
            (
                Route::ExternalMetric {
                    namespace: "llm",
                    metric: "WVA_Desired_Ratio",
                },
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/WVA_Desired_Ratio",
                Attributes::Resource {
                    verb: "list",
                    group: GROUP,
                    resource: "wva_desired_ratio".into(),
                    namespace: "llm".into(),
                },
            ),
            (
                Route::ApiResourceList,
                "/apis/external.metrics.k8s.io/v1beta1",
                Attributes::NonResource {
                    verb: "get",
                    path: "/apis/external.metrics.k8s.io/v1beta1".into(),
                },
            ),
            (
                Route::Metrics,
                "/metrics",
                Attributes::NonResource {
                    verb: "get",
                    path: "/metrics".into(),
                },
            ),
        ];
        for (route, path, want) in cases {
            assert_eq!(attributes(&route, path), want, "{path}");
        }
    }

    #[test]
    fn denial_says_who_and_what() {
        let a = Attributes::Resource {
            verb: "list",
            group: GROUP,
            resource: "wva_desired_ratio".into(),
            namespace: "llm".into(),
        };
        assert_eq!(
            denied_message("alice", &a, ""),
            "User \"alice\" cannot list resource \"wva_desired_ratio\" in API group \"external.metrics.k8s.io\" in the namespace \"llm\""
        );
    }
}
