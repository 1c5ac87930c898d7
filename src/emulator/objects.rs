//! The Kubernetes objects of an emulated variant, in the shapes of the API
//! (VariantAutoscaling, Deployment, Pod), shared by the demo and the
//! generated fleets so that both feed the inventory exactly what a cluster
//! would.

use serde_json::{json, Value};

/// A VariantAutoscaling that scales the Deployment `target`.
pub(crate) struct VariantSpec<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) target: &'a str,
    pub(crate) model: &'a str,
    pub(crate) accelerator: &'a str,
    pub(crate) cost: f64,
    pub(crate) min_replicas: u32,
    pub(crate) max_replicas: u32,
}

pub(crate) fn variant_autoscaling(v: &VariantSpec<'_>) -> Value {
    json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": v.name, "namespace": v.namespace,
                     "labels": {"inference.optimization/acceleratorName": v.accelerator}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": v.target},
                 "modelID": v.model, "variantCost": format!("{:.1}", v.cost),
                 "minReplicas": v.min_replicas, "maxReplicas": v.max_replicas}
    })
}

/// The scale target, selecting its pods by `app: <name>`.
pub(crate) fn deployment(namespace: &str, name: &str, replicas: u32, ready: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}}},
        "status": {"replicas": replicas, "readyReplicas": ready}
    })
}

/// A pod of `variant` on 127.0.0.1, scraped on `port` when given.
pub(crate) fn pod(
    namespace: &str,
    name: &str,
    target: &str,
    variant: &str,
    ready: bool,
    port: Option<u16>,
) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app": target, "llm-d.ai/variant": variant}},
        "status": {"podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    });
    if let Some(port) = port {
        pod["metadata"]["annotations"] = json!({"prometheus.io/port": port.to_string()});
    }
    pod
}
