//! Issue 30, must-show 4: our CRD keeps every validation and field of
//! upstream WVA's CRD (at b08b1c7), and the test API server's schema check
//! refuses what kube-apiserver refuses under either CRD.

mod common;

use common::openapi::{admit, crd_schema};
use serde_json::{json, Value};

fn upstream() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/upstream-wva/config-crd-bases-llmd.ai_variantautoscalings.yaml"
    );
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ours() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crd-variantautoscaling.yaml"
    );
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Keywords that constrain a value (descriptions and printer columns aside).
const RULES: &[&str] = &[
    "type",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "default",
    "minimum",
    "maximum",
    "format",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

/// Every (path, keyword) of `upstream` missing or different in `ours`.
fn missing(upstream: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
    for rule in RULES {
        if let Some(u) = upstream.get(*rule) {
            let o = ours.get(*rule);
            let same = match (u, o) {
                // Numbers compare by value (0 and 0.0 are the same minimum).
                (Value::Number(a), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
                (a, Some(b)) => a == b,
                (_, None) => false,
            };
            if !same {
                out.push(format!("{path}: {rule} {u} (ours: {o:?})"));
            }
        }
    }
    if let Some(required) = upstream["required"].as_array() {
        for r in required {
            let ours_required = ours["required"].as_array().cloned().unwrap_or_default();
            if !ours_required.contains(r) {
                out.push(format!("{path}: required {r}"));
            }
        }
    }
    if let Some(props) = upstream["properties"].as_object() {
        for (k, u) in props {
            let o = &ours["properties"][k];
            if o.is_null() {
                out.push(format!("{path}.{k}: field missing"));
            } else {
                missing(u, o, &format!("{path}.{k}"), out);
            }
        }
    }
    if let Some(items) = upstream.get("items") {
        missing(items, &ours["items"], &format!("{path}[]"), out);
    }
}

#[test]
fn our_crd_keeps_every_upstream_field_and_validation() {
    let (u, o) = (
        crd_schema(&upstream()).unwrap(),
        crd_schema(&ours()).unwrap(),
    );
    let mut out = Vec::new();
    missing(&u, &o, "", &mut out);
    assert_eq!(out, Vec::<String>::new());
    // Our extras stay.
    let spec = &o["properties"]["spec"]["properties"];
    assert_eq!(spec["minReplicas"]["type"], "integer");
    assert_eq!(spec["maxReplicas"]["type"], "integer");
    assert_eq!(
        o["properties"]["status"]["properties"]["actuation"]["required"],
        json!(["applied"])
    );
}

fn va(status: Value) -> Value {
    json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
           "metadata": {"name": "v", "namespace": "llm"},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "modelID": "m"},
           "status": status})
}

fn condition(kind: &str, status: &str, reason: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": "m",
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

/// Objects both CRDs refuse, with the field error kube-apiserver names;
/// the status our server writes passes both.
#[test]
fn both_crds_refuse_what_upstreams_refuses_and_accept_our_writes() {
    let good_status = json!({
        "desiredOptimizedAlloc": {"numReplicas": 3, "accelerator": "H100", "lastRunTime": "2026-01-01T00:00:00Z"},
        "conditions": [condition("TargetResolved", "True", "TargetFound"),
                       condition("MetricsAvailable", "True", "MetricsFound"),
                       condition("OptimizationReady", "False", "AcceleratorUnknown")]});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty accelerator",
            va(json!({"desiredOptimizedAlloc": {"numReplicas": 1, "accelerator": ""}})),
            "status.desiredOptimizedAlloc.accelerator in body should be at least 2 chars long",
        ),
        (
            "no accelerator",
            va(json!({"desiredOptimizedAlloc": {"numReplicas": 1}})),
            "status.desiredOptimizedAlloc.accelerator: Required value",
        ),
        (
            "negative replicas",
            va(json!({"desiredOptimizedAlloc": {"numReplicas": -1, "accelerator": "H100"}})),
            "should be greater than or equal to 0",
        ),
        (
            "condition status",
            va(json!({"conditions": [condition("MetricsAvailable", "Yes", "MetricsFound")]})),
            "status.conditions[0].status: Unsupported value: \"Yes\"",
        ),
        (
            "condition reason",
            va(json!({"conditions": [condition("MetricsAvailable", "True", "no spaces allowed")]})),
            "status.conditions[0].reason in body should match",
        ),
        (
            "duplicate condition type",
            va(
                json!({"conditions": [condition("MetricsAvailable", "True", "A"),
                                     condition("MetricsAvailable", "False", "B")]}),
            ),
            "status.conditions[1]: Duplicate value",
        ),
        (
            "variantCost pattern",
            {
                let mut v = va(json!({}));
                v["spec"]["variantCost"] = json!("ten");
                v
            },
            "spec.variantCost in body should match",
        ),
        (
            "empty modelID",
            {
                let mut v = va(json!({}));
                v["spec"]["modelID"] = json!("");
                v
            },
            "spec.modelID in body should be at least 1 chars long",
        ),
    ];
    for (crd_name, crd) in [("upstream", upstream()), ("ours", ours())] {
        let schema = crd_schema(&crd).unwrap();
        for (what, object, error) in &cases {
            let mut object = object.clone();
            let errors = admit(&schema, &mut object).expect_err(what);
            assert!(
                errors.iter().any(|e| e.contains(error)),
                "{crd_name}, {what}: {errors:?}"
            );
        }
        let mut object = va(good_status.clone());
        admit(&schema, &mut object).unwrap_or_else(|e| panic!("{crd_name}: {e:?}"));
        assert_eq!(
            object["spec"]["variantCost"], "10.0",
            "{crd_name}: defaulted"
        );
    }
}
