//! The `VariantAutoscaling` custom resource (`llmd.ai/v1alpha1`), typed.
//!
//! The same type is read from a static inventory file and, later, watched in a
//! cluster, so both paths agree on field names and defaults.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `spec.variantCost` when a variant does not name one (DESIGN section 5).
pub(crate) const DEFAULT_VARIANT_COST: f64 = 10.0;

/// Label on a VariantAutoscaling that names its accelerator (for example `A100`).
pub(crate) const ACCELERATOR_LABEL: &str = "inference.optimization/acceleratorName";

/// Spec of a VariantAutoscaling: one way (variant) of serving a model, scaled through its target.
// The printer columns repeat `type_ = ...`, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmd.ai",
    version = "v1alpha1",
    kind = "VariantAutoscaling",
    namespaced,
    shortname = "va",
    plural = "variantautoscalings",
    status = "VariantAutoscalingStatus",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.scaleTargetRef.name"
    ),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.modelID"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(
        name = "Optimized",
        type_ = "integer",
        json_path = ".status.desiredOptimizedAlloc.numReplicas"
    ),
    printcolumn(
        name = "MetricsReady",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"MetricsAvailable\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas").message("minReplicas must not be greater than maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingSpec {
    /// The workload (Deployment or StatefulSet) whose replicas this variant scales.
    pub(crate) scale_target_ref: ScaleTargetRef,
    /// Model served by the target, as vLLM reports it in `model_name`.
    #[serde(rename = "modelID")]
    pub(crate) model_id: String,
    /// Relative cost of one replica, a decimal string ("10.0" when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant_cost: Option<String>,
    /// Lower bound for the desired replicas (1 when absent; 0 allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub(crate) min_replicas: Option<i32>,
    /// Upper bound for the desired replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub(crate) max_replicas: Option<i32>,
}

/// Reference to the scaled workload, as in `autoscaling/v2` `CrossVersionObjectReference`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ScaleTargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_version: Option<String>,
    pub(crate) kind: String,
    pub(crate) name: String,
}

/// The CRD as YAML, generated from these types (`wva-metrics-server crd`).
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&crd())
}

/// The CRD: generated from these types, with every validation of upstream
/// WVA's CRD (`config/crd/bases/llmd.ai_variantautoscalings.yaml` at
/// b08b1c7) added, so that an object valid here is valid there and the
/// reverse (our extras aside: `spec.minReplicas`/`maxReplicas` and the
/// rule between them).
pub(crate) fn crd() -> serde_json::Value {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(VariantAutoscaling::crd()).unwrap_or_default();
    if let Some(versions) = crd["spec"]["versions"].as_array_mut() {
        for version in versions {
            with_upstream_validations(&mut version["schema"]["openAPIV3Schema"]);
        }
    }
    crd
}

/// Upstream's validations, written into the generated schema.
fn with_upstream_validations(schema: &mut serde_json::Value) {
    use serde_json::json;
    let root = &mut schema["properties"];
    root["apiVersion"] =
        json!({"description": "The versioned schema of this object.", "type": "string"});
    root["kind"] =
        json!({"description": "The REST resource this object represents.", "type": "string"});
    root["metadata"] = json!({"type": "object"});
    let spec = &mut schema["properties"]["spec"]["properties"];
    spec["modelID"]["minLength"] = json!(1);
    spec["scaleTargetRef"]["x-kubernetes-map-type"] = json!("atomic");
    let cost = &mut spec["variantCost"];
    cost["default"] = json!("10.0");
    cost["pattern"] = json!(r"^\d+(\.\d+)?$");
    if let Some(c) = cost.as_object_mut() {
        c.remove("nullable");
    }
    let status = &mut schema["properties"]["status"]["properties"];
    let alloc = &mut status["desiredOptimizedAlloc"];
    alloc["properties"]["accelerator"] = json!({
        "description": "Accelerator of the variant (its inference.optimization/acceleratorName label).",
        "minLength": 2,
        "type": "string"
    });
    alloc["properties"]["numReplicas"]["minimum"] = json!(0);
    alloc["required"] = json!(["accelerator", "numReplicas"]);
    let conditions = &mut status["conditions"];
    conditions["x-kubernetes-list-type"] = json!("map");
    conditions["x-kubernetes-list-map-keys"] = json!(["type"]);
    let item = &mut conditions["items"]["properties"];
    item["message"]["maxLength"] = json!(32768);
    item["observedGeneration"]["minimum"] = json!(0);
    item["reason"]["maxLength"] = json!(1024);
    item["reason"]["minLength"] = json!(1);
    item["reason"]["pattern"] = json!("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$");
    item["status"]["enum"] = json!(["True", "False", "Unknown"]);
    item["type"]["maxLength"] = json!(316);
    item["type"]["pattern"] = json!(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
    );
}

/// Observed state written back by the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) desired_optimized_alloc: Option<OptimizedAlloc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// Upstream WVA's actuation state (its controller writes it; kept in
    /// the schema so that an upstream install's objects stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) actuation: Option<Actuation>,
}

/// Whether upstream's actuator applied the latest decision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Actuation {
    pub(crate) applied: bool,
}

/// The latest decision for the variant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OptimizedAlloc {
    pub(crate) num_replicas: i32,
    /// Required by the schema (see [`crd`]); read leniently.
    #[serde(default)]
    pub(crate) accelerator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_run_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
