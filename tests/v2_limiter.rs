//! Issue 14, the GPU limiter (`enableLimiter: true`) end to end: a real
//! `serve --inventory kube --accelerator-inventory` against the in-process
//! API server (real list/watch), which holds a Node with GPUs and the pods
//! that request them; real `emulate` replicas report their load and KV cache.
//! Two models compete for the 3 GPUs that are free.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
const WAIT: Duration = Duration::from_secs(30);

fn node(name: &str, product: &str, gpus: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, "kubernetes.io/os": "linux"}},
           "spec": {"podCIDR": "10.0.0.0/24"},
           "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string(), "cpu": "64"},
                      "capacity": {"nvidia.com/gpu": gpus.to_string(), "cpu": "64"}}})
}

fn va(name: &str, model: &str) -> Value {
    json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
           "metadata": {"name": name, "namespace": NS, "labels": {"inference.optimization/acceleratorName": "H100"}},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{name}-d")},
                    "modelID": model, "minReplicas": 1, "maxReplicas": 10}})
}

fn deployment(name: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": format!("{name}-d"), "namespace": NS},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
           "status": {"replicas": replicas, "readyReplicas": replicas}})
}

/// A ready pod of variant `name` on node n1 requesting one GPU.
fn pod(name: &str, index: usize, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{name}-{index}"), "namespace": NS,
                        "labels": {"app": name, "llm-d.ai/variant": name},
                        "annotations": {"prometheus.io/port": port.to_string()}},
           "spec": {"nodeName": "n1", "containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                    "resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "4"}}}]},
           "status": {"phase": "Running", "podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

struct Model {
    variant: &'static str,
    model: &'static str,
    emulators: Vec<Emulator>,
}

async fn model(variant: &'static str, model: &'static str, replicas: usize, kv: f64) -> Model {
    let mut emulators = Vec::new();
    for _ in 0..replicas {
        emulators.push(
            Emulator::start_with(
                model,
                kv,
                0.0,
                &["--num-gpu-blocks", "1000", "--block-size", "16"],
            )
            .await,
        );
    }
    Model {
        variant,
        model,
        emulators,
    }
}

fn apply(api: &ApiServer, m: &Model) {
    api.apply(deployment(m.variant, m.emulators.len() as u32));
    for (i, e) in m.emulators.iter().enumerate() {
        api.apply(pod(m.variant, i, e.port));
    }
    api.apply(va(m.variant, m.model));
}

async fn desired(server: &Server, variant: &str, want: &str) {
    let selector = format!("variant_name={variant}");
    eventually(WAIT, &format!("{variant} desired {want}"), || async {
        (server
            .value(NS, "wva_desired_replicas", &selector)
            .await
            .as_deref()
            == Some(want))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_models_share_the_free_gpus_by_saturation_and_the_limited_one_says_so() {
    let api = ApiServer::start().await;
    // 10 GPUs on the node; 7 requested by the running pods: 3 free.
    api.apply(node("n1", "NVIDIA-H100-SXM5-80GB", 10));
    // Model a: 3 replicas with a full cache (utilization 1.25), wants +2.
    // Model b: 4 replicas at KV 0.98 (utilization 1.225), wants +2.
    let a = model("alpha", "org/model-a", 3, 1.0).await;
    let b = model("beta", "org/model-b", 4, 0.98).await;
    apply(&api, &a);
    apply(&api, &b);
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
        "data": {"default": "analyzerName: saturation\nenableLimiter: true\n"}}));
    let server =
        Server::start_kube(&api, &["--accelerator-inventory", "--limiter-on-v2"], &[]).await;
    // The more saturated model gets the 2 it needs, the other the 1 left.
    desired(&server, "alpha", "5").await;
    desired(&server, "beta", "5").await;
    eventually(
        WAIT,
        "the limited decision in /metrics and the log",
        || async {
            let text = server.text("/metrics").await;
            let counted = text.lines().any(|l| {
                l.starts_with("wva_replica_scaling_total")
                    && l.contains("variant_name=\"beta\"")
                    && l.contains("reason=\"limited_by_accelerators\"")
            });
            let logged = server
                .log()
                .contains("scale-up limited by free accelerators");
            (counted && logged).then_some(())
        },
    )
    .await;
    let (_, body) = server
        .get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dbeta"
        ))
        .await;
    assert_eq!(
        body["items"][0]["metricLabels"]["analyzer"],
        "saturation-v2"
    );

    // Two more GPUs become free (a second node): beta gets its second one.
    api.apply(node("n2", "NVIDIA-H100-SXM5-80GB", 2));
    desired(&server, "beta", "6").await;
    desired(&server, "alpha", "5").await;
}
