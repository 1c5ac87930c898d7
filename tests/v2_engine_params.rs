//! Issue 14: V2 reads the vLLM engine parameters of each variant's
//! Deployment (`--max-num-batched-tokens` B, `--max-num-seqs` S, in
//! `command` or `args`, `--flag v` or `--flag=v`, `sh -c "..."`). Observable
//! through a variant with no replica yet: its capacity per replica is k2
//! derived from its parameters and the model's mean prompt and output
//! tokens (the emulator's requests: I = 512, O = 128), k2 = min(B x O /
//! (I + O), S) x (I + O/2), bounded by the live capacity of a compatible
//! variant; the number of replicas the cost-aware optimizer puts on it
//! tells the k2 the server derived.
//!
//! Model: variant `big` (cost 10, vLLM defaults) has 4 ready replicas of
//! 1000 x 16 tokens at KV 0.98: capacity k1 = 12,800 each, demand 62,720,
//! supply 51,200, required = 62,720 / 0.85 - 51,200 = 22,588 tokens.
//! Variant `small` (cost 1, 0 replicas) is cheaper per token, so it takes
//! the requirement: ceil(22,588 / k2) replicas.
//!
//! Kube mode runs against the in-process API server (real list/watch, the
//! Deployment reflector keeps only the parsed numbers); file mode reads the
//! same objects from the inventory file. (Until the first requests finish
//! there are no averages and the capacity is B; the tests wait for the
//! final count.)

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, variant_yaml, Emulator, Server, VariantSpec};
use serde_json::{json, Value};

const NS: &str = "llm";
const MODEL: &str = "org/model";
const WAIT: Duration = Duration::from_secs(30);

async fn four_saturated() -> Vec<Emulator> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(
            Emulator::start_with(
                MODEL,
                0.98,
                0.0,
                &["--num-gpu-blocks", "1000", "--block-size", "16"],
            )
            .await,
        );
    }
    out
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

fn va(name: &str, cost: &str, min: u32) -> Value {
    json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
           "metadata": {"name": name, "namespace": NS, "labels": {"inference.optimization/acceleratorName": "A100"}},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "modelID": MODEL, "variantCost": cost, "minReplicas": min, "maxReplicas": 20}})
}

/// A Deployment whose vLLM container has `container` (command and args).
fn deployment(name: &str, replicas: u32, container: Value) -> Value {
    let mut c = json!({"name": "vllm", "image": "vllm/vllm-openai",
                       "resources": {"requests": {"nvidia.com/gpu": "1"}}});
    if let (Some(c), Some(extra)) = (c.as_object_mut(), container.as_object()) {
        c.extend(extra.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": NS,
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [c, {"name": "proxy", "image": "envoy"}]}}},
           "status": {"replicas": replicas, "readyReplicas": replicas}})
}

fn pod(variant: &str, index: usize, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{variant}-{index}"), "namespace": NS,
                        "labels": {"app": variant, "llm-d.ai/variant": variant},
                        "annotations": {"prometheus.io/port": port.to_string()}},
           "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
           "status": {"phase": "Running", "podIP": "127.0.0.1",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

#[tokio::test]
async fn kube_deployment_args_set_the_token_budget_and_follow_changes() {
    let emulators = four_saturated().await;
    let api = ApiServer::start().await;
    api.apply(deployment("big", 4, json!({"args": ["--model", MODEL]})));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(pod("big", i, e.port));
    }
    api.apply(va("big", "10", 1));
    // `args`, `--flag=v` form: B 4096, S 8 -> N = min(819.2, 8) = 8,
    // k2 = 8 x 576 = 4608 -> ceil(22,588 / 4608) = 5.
    api.apply(deployment(
        "small",
        0,
        json!({"command": ["vllm", "serve"], "args": [MODEL, "--max-num-batched-tokens=4096", "--max-num-seqs=8"]}),
    ));
    api.apply(va("small", "1", 0));
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
        "data": {"default": "analyzerName: saturation\n"}}));
    let server = Server::start_kube(&api, &[], &[]).await;
    desired(&server, "small", "5").await;
    desired(&server, "big", "4").await;

    // `command` only, `--flag v` form, S 4: k2 = 4 x 576 = 2304 -> 10. (B is
    // the default, so `small` is compatible with `big`, whose live 12,800
    // does not bound 2304.) The watch brings the change.
    api.apply(deployment(
        "small",
        0,
        json!({"command": ["vllm", "serve", MODEL, "--max-num-seqs", "4"]}),
    ));
    desired(&server, "small", "10").await;

    // A shell command line, B 80: N = 80 x 128 / 640 = 16, k2 = 9216 -> 3.
    api.apply(deployment(
        "small",
        0,
        json!({"command": ["/bin/sh", "-c"], "args": [format!("exec vllm serve {MODEL} --port 8000 --max-num-batched-tokens 80")]}),
    ));
    desired(&server, "small", "3").await;

    // vLLM's defaults, like `big`: derived k2 = 256 x 576 = 147,456, bounded
    // by the compatible variant's live capacity 12,800 -> 2 (unbounded: 1).
    api.apply(deployment("small", 0, json!({"args": ["--model", MODEL]})));
    desired(&server, "small", "2").await;
    desired(&server, "big", "4").await;
}

#[tokio::test]
async fn file_inventory_deployment_args_set_the_token_budget() {
    let emulators = four_saturated().await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let mut inventory = variant_yaml(
        &VariantSpec {
            namespace: NS,
            variant: "big",
            target: "big",
            model: MODEL,
            min: 1,
            max: 20,
            ready: 4,
        },
        &ports,
    );
    let small = |args: &str| {
        format!(
            r#"---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata:
  name: small
  namespace: {NS}
  labels: {{inference.optimization/acceleratorName: A100}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: small}}
  modelID: {MODEL}
  variantCost: "1.0"
  minReplicas: 0
  maxReplicas: 20
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: small, namespace: {NS}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: small}}}}
  template:
    metadata: {{labels: {{app: small}}}}
    spec:
      containers:
      - name: vllm
        image: vllm/vllm-openai
        command: ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        args: [{args}]
status: {{replicas: 0, readyReplicas: 0}}
"#
        )
    };
    // B 2048, S 4: k2 = 4 x 576 = 2304 -> 10.
    inventory.push_str(&small(
        r#""--model", "m", "--max-num-batched-tokens", "2048", "--max-num-seqs=4""#,
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("thresholds.yaml");
    std::fs::write(&config, "default: |\n  analyzerName: saturation\n").unwrap();
    let config = config.display().to_string();
    let server = Server::with_inventory(
        &inventory,
        &[
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "500ms",
            "--saturation-config",
            &config,
        ],
    )
    .await;
    desired(&server, "small", "10").await;
    desired(&server, "big", "4").await;
}
