//! What the kube inventory watches and writes, as RBAC rules: the
//! ClusterRole in deploy/ must grant each.

/// One (group, resource, verbs) the server needs; the ClusterRole in
/// deploy/ must grant each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacRule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What the kube inventory watches and writes.
pub fn required_rbac() -> Vec<RbacRule> {
    const WATCH: &[&str] = &["get", "list", "watch"];
    vec![
        RbacRule {
            api_group: "llmd.ai",
            resource: "variantautoscalings",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "autoscaling",
            resource: "horizontalpodautoscalers",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "keda.sh",
            resource: "scaledobjects",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "deployments",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "statefulsets",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "replicasets",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "",
            resource: "pods",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "",
            resource: "configmaps",
            verbs: WATCH,
        },
        // Metadata only: the exclude annotation and the config-enabled label.
        RbacRule {
            api_group: "",
            resource: "namespaces",
            verbs: WATCH,
        },
    ]
}
