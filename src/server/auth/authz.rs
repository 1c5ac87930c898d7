//! What is being asked: request attributes as Kubernetes authorizes them,
//! and the message of a denial. Pure.

use crate::api::router::ApiRequest;

/// Attributes of a SubjectAccessReview.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Attributes {
    Resource {
        verb: &'static str,
        group: &'static str,
        version: &'static str,
        resource: String,
        namespace: String,
        /// The object (custom metrics name the described object), if any.
        name: Option<String>,
        /// The metric, as the custom metrics API's subresource.
        subresource: Option<String>,
    },
    NonResource {
        verb: &'static str,
        path: String,
    },
}

pub(crate) const GROUP: &str = "external.metrics.k8s.io";

/// A values GET names no object, so Kubernetes calls it `list` on the
/// metric as resource; everything else is a non-resource `get` on the path.
pub(crate) fn attributes(request: &ApiRequest, path: &str) -> Attributes {
    match request {
        ApiRequest::ExternalValues(q) => Attributes::Resource {
            verb: "list",
            group: GROUP,
            version: "v1beta1",
            resource: q.metric.to_ascii_lowercase(),
            namespace: q.namespace.clone(),
            name: None,
            subresource: None,
        },
        // As a Kubernetes API server parses the path (and so as the
        // custom-metrics-apiserver library authorizes it): the described
        // resource with its group, the object's name (`*` included), and
        // the metric as the subresource, verb get.
        ApiRequest::ObjectMetric(q) | ApiRequest::PodsMetric(q) => Attributes::Resource {
            verb: "get",
            group: crate::api::custom::GROUP,
            version: q.version.as_str(),
            resource: q.resource.segment().to_owned(),
            namespace: q.namespace.clone(),
            name: Some(q.name.clone()),
            subresource: Some(q.metric.to_ascii_lowercase()),
        },
        _ => Attributes::NonResource {
            verb: "get",
            path: path.to_owned(),
        },
    }
}

/// The 403 message, word for word as a Kubernetes API server writes it
/// (`responsewriters.Forbidden` and `apierrors.NewForbidden`): who was
/// denied what, then the authorizer's reason if it gave one.
pub(crate) fn denied_message(user: &str, a: &Attributes, reason: &str) -> String {
    let (prefix, what) = match a {
        Attributes::Resource {
            verb,
            group,
            resource,
            namespace,
            name,
            subresource,
            ..
        } => {
            let shown = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.clone(),
            };
            let scope = if namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {namespace:?}")
            };
            let group_resource = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let prefix = match name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => format!("{group_resource} {n:?} is forbidden"),
                None => format!("{group_resource} is forbidden"),
            };
            (
                prefix,
                format!(
                    "User {user:?} cannot {verb} resource {shown:?} in API group {group:?} {scope}"
                ),
            )
        }
        Attributes::NonResource { verb, path } => (
            "forbidden".to_owned(),
            format!("User {user:?} cannot {verb} path {path:?}"),
        ),
    };
    if reason.is_empty() {
        format!("{prefix}: {what}")
    } else {
        format!("{prefix}: {what}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::{CustomQuery, ExternalQuery};
    use crate::k8s::selector::LabelSelector;

    #[test]
    fn maps_routes_to_review_attributes() {
        let cases = [
            (
                ApiRequest::ExternalValues(ExternalQuery {
                    namespace: "llm".into(),
                    metric: "WVA_Desired_Ratio".into(),
                    selector: Ok(LabelSelector::everything()),
                }),
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/WVA_Desired_Ratio",
                Attributes::Resource {
                    verb: "list",
                    group: GROUP,
                    version: "v1beta1",
                    resource: "wva_desired_ratio".into(),
                    namespace: "llm".into(),
                    name: None,
                    subresource: None,
                },
            ),
            (
                ApiRequest::ApiResourceList,
                "/apis/external.metrics.k8s.io/v1beta1",
                Attributes::NonResource {
                    verb: "get",
                    path: "/apis/external.metrics.k8s.io/v1beta1".into(),
                },
            ),
            (
                ApiRequest::Metrics,
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
            version: "v1beta1",
            resource: "wva_desired_ratio".into(),
            namespace: "llm".into(),
            name: None,
            subresource: None,
        };
        assert_eq!(
            denied_message("alice", &a, ""),
            "wva_desired_ratio.external.metrics.k8s.io is forbidden: User \"alice\" cannot list resource \"wva_desired_ratio\" in API group \"external.metrics.k8s.io\" in the namespace \"llm\""
        );
        assert_eq!(
            denied_message("alice", &a, "no RBAC policy matched"),
            "wva_desired_ratio.external.metrics.k8s.io is forbidden: User \"alice\" cannot list resource \"wva_desired_ratio\" in API group \"external.metrics.k8s.io\" in the namespace \"llm\": no RBAC policy matched"
        );
        let path = Attributes::NonResource {
            verb: "get",
            path: "/metrics".into(),
        };
        assert_eq!(
            denied_message("system:anonymous", &path, ""),
            "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn custom_metrics_are_authorized_as_the_described_object_s_subresource() {
        let q = CustomQuery {
            version: crate::api::custom::CustomVersion::V1beta2,
            namespace: "llm".into(),
            resource: crate::api::custom::DescribedResource::Deployments,
            name: "llama-decode".into(),
            metric: "WVA_Desired_Ratio".into(),
            label_selector: Ok(LabelSelector::everything()),
            metric_selector: Ok(LabelSelector::everything()),
        };
        let a = attributes(&ApiRequest::ObjectMetric(q), "/ignored");
        assert_eq!(
            a,
            Attributes::Resource {
                verb: "get",
                group: "custom.metrics.k8s.io",
                version: "v1beta2",
                resource: "deployments.apps".into(),
                namespace: "llm".into(),
                name: Some("llama-decode".into()),
                subresource: Some("wva_desired_ratio".into()),
            }
        );
        assert_eq!(
            denied_message("bob", &a, ""),
            "deployments.apps.custom.metrics.k8s.io \"llama-decode\" is forbidden: User \"bob\" cannot get resource \"deployments.apps/wva_desired_ratio\" in API group \"custom.metrics.k8s.io\" in the namespace \"llm\""
        );
    }
}
