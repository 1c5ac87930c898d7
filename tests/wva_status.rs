//! VariantAutoscaling status written by a real `serve --inventory kube`
//! against the in-process API server (real list/watch, server-side apply):
//! the status of a variant decided by V2 (issue 29, item 1), and status
//! writes against upstream WVA's own CRD (issue 30, must-show 4).

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
const MODEL: &str = "meta/llama-3.1-8b";
/// Bound of every wait; each ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(30);

fn deployment(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
           "status": {"replicas": replicas, "readyReplicas": replicas}})
}

fn pod(deployment: &str, variant: &str, index: usize, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{deployment}-{index}"), "namespace": NS,
                        "labels": {"app": deployment, "llm-d.ai/variant": variant},
                        "annotations": {"prometheus.io/port": port.to_string()}},
           "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
           "status": {"phase": "Running", "podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

async fn replicas_with_cache(n: usize, kv: f64) -> Vec<Emulator> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            Emulator::start_with(
                MODEL,
                kv,
                0.0,
                &["--num-gpu-blocks", "1000", "--block-size", "16"],
            )
            .await,
        );
    }
    out
}

/// The last status patch of `name` that satisfies `pred`.
async fn status_where(
    api: &ApiServer,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/variantautoscalings/{name}/status");
    eventually(WAIT, what, || async {
        api.status_patches()
            .into_iter()
            .rev()
            .find(|(uri, b)| uri.contains(&path) && pred(&b["status"]))
            .map(|(_, b)| b["status"].clone())
    })
    .await
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// Issue 29, item 1: with `analyzerName: saturation` the variant is decided
/// by V2; its status says metrics are available and carries V2's replicas
/// (before the fix: `MetricsAvailable=False`, "holding").
#[tokio::test]
async fn a_variant_decided_by_v2_is_written_with_metrics_available_and_v2s_replicas() {
    let api = ApiServer::start().await;
    let emulators = replicas_with_cache(4, 0.98).await;
    api.apply(deployment("llama-decode", 4));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(pod("llama-decode", "llama-h100", i, e.port));
    }
    api.apply(json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "llama-h100", "namespace": NS,
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
                 "modelID": MODEL, "minReplicas": 1, "maxReplicas": 10}}));
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
        "data": {"default": "analyzerName: saturation\n"}}));
    let server = Server::start_kube(&api, &["--status-min-interval", "1s"], &[]).await;
    // KV 0.98 on 4 replicas, queue 0: V2 asks for 6 (V1 would step to 5).
    server
        .wait_value(NS, "wva_desired_replicas", "variant_name=llama-h100", "6")
        .await;
    let status = status_where(&api, "llama-h100", "a status with V2's 6 replicas", |s| {
        s["desiredOptimizedAlloc"]["numReplicas"] == 6
    })
    .await;
    let metrics = condition(&status, "MetricsAvailable");
    assert_eq!(
        (&metrics["status"], &metrics["reason"]),
        (&json!("True"), &json!("MetricsFound")),
        "{status}"
    );
    let ready = condition(&status, "OptimizationReady");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("True"), &json!("Optimized")),
        "{status}"
    );
    assert_eq!(status["desiredOptimizedAlloc"]["accelerator"], "H100");
    // No write of that variant ever said metrics were missing once V2 had them.
    let stored = api
        .object("variantautoscalings", NS, "llama-h100")
        .expect("the VariantAutoscaling");
    assert_eq!(stored["status"]["desiredOptimizedAlloc"]["numReplicas"], 6);
    assert_eq!(
        condition(&stored["status"], "MetricsAvailable")["status"],
        "True"
    );
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream-wva")
        .join(name)
}

/// Upstream WVA's CRD at b08b1c7, unchanged.
fn upstream_crd() -> Value {
    let text =
        std::fs::read_to_string(fixture("config-crd-bases-llmd.ai_variantautoscalings.yaml"))
            .expect("the upstream CRD fixture");
    serde_norway::from_str(&text).expect("the upstream CRD parses")
}

/// A VariantAutoscaling as upstream's samples write it: no min/max.
fn upstream_va(name: &str, target: &str, accelerator: Option<&str>) -> Value {
    let mut va = json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "labels": {}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "modelID": MODEL}});
    if let Some(a) = accelerator {
        va["metadata"]["labels"]["inference.optimization/acceleratorName"] = json!(a);
    }
    va
}

/// Issue 30, must-show 4: with upstream's CRD installed unchanged (the test
/// API server prunes, defaults and validates every write against its
/// schema), every status write is accepted: the variant with an
/// accelerator gets its allocation, the one without gets conditions only
/// (no empty accelerator is ever sent), and the bounds upstream's CRD
/// cannot hold come from the HPA (maxReplicas 5) and the ScaledObject
/// (minReplicaCount 0) that scale each target.
#[tokio::test]
async fn status_writes_pass_upstreams_crd_and_bounds_come_from_the_scalers() {
    let api = ApiServer::start().await;
    api.install_crd(&upstream_crd());
    // Our extras are pruned by upstream's CRD, its default is applied.
    let mut with_bounds = upstream_va("probe", "probe-d", Some("H100"));
    with_bounds["spec"]["minReplicas"] = json!(0);
    with_bounds["spec"]["maxReplicas"] = json!(3);
    let stored = api
        .try_apply(with_bounds)
        .expect("valid under upstream's CRD");
    assert_eq!(stored["spec"].get("minReplicas"), None, "pruned: {stored}");
    assert_eq!(stored["spec"]["variantCost"], "10.0", "defaulted: {stored}");
    api.delete("VariantAutoscaling", NS, "probe");

    // Variant a: 4 replicas at KV 0.98 (wants 5 or more), HPA max 5.
    let a = replicas_with_cache(4, 0.98).await;
    api.apply(deployment("a-decode", 4));
    for (i, e) in a.iter().enumerate() {
        api.apply(pod("a-decode", "a-h100", i, e.port));
    }
    api.apply(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "a-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a-decode"},
                 "minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "External", "external": {"metric": {"name": "wva_desired_replicas"},
                              "target": {"type": "AverageValue", "averageValue": "1"}}}]}}));
    api.apply(upstream_va("a-h100", "a-decode", Some("H100")));
    // Variant b: no accelerator label, one idle replica, scaled by a
    // ScaledObject with minReplicaCount 2.
    let b = replicas_with_cache(1, 0.10).await;
    api.apply(deployment("b-decode", 1));
    api.apply(pod("b-decode", "b-none", 0, b[0].port));
    api.apply(
        json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "b-so", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "b-decode"}, "minReplicaCount": 2, "maxReplicaCount": 4,
                 "triggers": [{"type": "external", "metadata": {"scalerAddress": "wva:9090"}}]}}),
    );
    let mut b_va = upstream_va("b-none", "b-decode", None);
    b_va["spec"]["modelID"] = json!("org/model-b");
    api.apply(b_va);

    let server = Server::start_kube(&api, &["--status-min-interval", "1s"], &[]).await;
    // a: capped by the HPA's maxReplicas 5 (its VA has none).
    let a_status = status_where(&api, "a-h100", "a's allocation", |s| {
        s["desiredOptimizedAlloc"]["numReplicas"].is_number()
            && condition(s, "MetricsAvailable")["status"] == "True"
    })
    .await;
    assert_eq!(
        a_status["desiredOptimizedAlloc"]["numReplicas"], 5,
        "{a_status}"
    );
    assert_eq!(a_status["desiredOptimizedAlloc"]["accelerator"], "H100");
    // b: conditions only, saying why.
    let b_status = status_where(&api, "b-none", "b's conditions", |s| {
        condition(s, "OptimizationReady")["reason"] == "AcceleratorUnknown"
    })
    .await;
    assert_eq!(b_status.get("desiredOptimizedAlloc"), None, "{b_status}");
    assert_eq!(condition(&b_status, "OptimizationReady")["status"], "False");
    assert!(condition(&b_status, "OptimizationReady")["message"]
        .as_str()
        .unwrap()
        .contains("inference.optimization/acceleratorName"));
    // b's bounds are the ScaledObject's: idle at 1 replica, raised to its
    // minReplicaCount 2.
    server
        .wait_value(NS, "wva_desired_replicas", "variant_name=b-none", "2")
        .await;
    // Every write the server sent was accepted by upstream's schema, and
    // none carried an empty accelerator.
    assert_eq!(api.schema_rejections(), Vec::<(String, Vec<String>)>::new());
    for (uri, patch) in api.status_patches() {
        let accelerator = &patch["status"]["desiredOptimizedAlloc"]["accelerator"];
        assert!(
            accelerator.is_null() || accelerator.as_str().is_some_and(|a| a.len() >= 2),
            "{uri}: {patch}"
        );
    }
    let metrics = server.text("/metrics").await;
    let skipped = metrics
        .lines()
        .find(|l| l.starts_with("wva_status_allocations_skipped_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(skipped >= 1.0, "{metrics}");
    drop((a, b));
}
