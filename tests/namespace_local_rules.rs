//! Issue 30, must-show 2: namespace-local configuration follows upstream
//! WVA's three rules (`configmap_reconciler.go`, b08b1c7): a namespace's
//! own ConfigMaps are read when it holds a VariantAutoscaling, when it is
//! labelled `wva.llmd.ai/config-enabled: "true"`, or when it is
//! `WATCH_NAMESPACE`; namespace-local scale-to-zero ConfigMaps as well as
//! thresholds. A real `serve --inventory kube` against the in-process API
//! server, real `emulate` replicas.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use common::apiserver::ApiServer;
use common::{Emulator, Server};
use serde_json::{json, Value};

const OWN: &str = "wva-system";
const MODEL: &str = "meta/llama-3.1-8b";

fn variant(api: &ApiServer, ns: &str, emulators: &[Emulator], min: u32) {
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": ns},
        "spec": {"replicas": emulators.len(), "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}},
        "status": {"replicas": emulators.len(), "readyReplicas": emulators.len()}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("d-{i}"), "namespace": ns,
                         "labels": {"app": "d", "llm-d.ai/variant": "v"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(
        json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "v", "namespace": ns,
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                 "modelID": MODEL, "minReplicas": min, "maxReplicas": 10}}),
    );
}

/// Thresholds that make 2 replicas at KV 0.6 want a third (0.1 spare is
/// under the 0.35 trigger); the defaults hold at 2.
fn eager_thresholds(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": ns},
        "data": {"default": "kvCacheThreshold: 0.70\nkvSpareTrigger: 0.35\n"}})
}

async fn two_at(kv: f64) -> Vec<Emulator> {
    vec![
        Emulator::start(MODEL, kv, 0.0).await,
        Emulator::start(MODEL, kv, 0.0).await,
    ]
}

/// Rule 1: a namespace that holds a VariantAutoscaling has its local
/// ConfigMap read, without any label (before: the label only). A namespace
/// with the exclude annotation is not read (nor served).
#[tokio::test]
async fn a_namespace_with_a_variant_reads_its_local_configmap_without_a_label() {
    let api = ApiServer::start().await;
    let tracked = two_at(0.6).await;
    let plain = two_at(0.6).await;
    variant(&api, "tracked", &tracked, 1);
    variant(&api, "plain", &plain, 1);
    api.apply(eager_thresholds("tracked"));
    let s = Server::start_kube(&api, &["--namespace", OWN], &[]).await;
    s.wait_value("tracked", "wva_desired_replicas", "target_name=d", "3")
        .await;
    // The namespace without a local ConfigMap keeps the global (built-in) thresholds.
    s.wait_value("plain", "wva_desired_replicas", "target_name=d", "2")
        .await;
    // The same ConfigMap in a namespace with no variant and no label is
    // not read: when the variant moves in, it is.
    let later = two_at(0.6).await;
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}}));
    api.apply(eager_thresholds("later"));
    variant(&api, "later", &later, 1);
    s.wait_value("later", "wva_desired_replicas", "target_name=d", "3")
        .await;
}

/// Rule 3: WATCH_NAMESPACE selects the namespace whose variants are served
/// (upstream's single-namespace mode) and reads its local ConfigMaps.
#[tokio::test]
async fn watch_namespace_reads_its_local_configmaps_without_a_label() {
    let api = ApiServer::start().await;
    let a = two_at(0.6).await;
    let b = two_at(0.6).await;
    variant(&api, "team-a", &a, 1);
    variant(&api, "team-b", &b, 1);
    api.apply(eager_thresholds("team-a"));
    let s = Server::start_kube(
        &api,
        &["--namespace", OWN],
        &[("WATCH_NAMESPACE", "team-a")],
    )
    .await;
    s.wait_value("team-a", "wva_desired_replicas", "target_name=d", "3")
        .await;
    let (code, body) = s
        .get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team-b/wva_desired_replicas?labelSelector={}",
            common::urlencode("target_name=d")
        ))
        .await;
    assert!(
        code == 404 || body["items"].as_array().is_some_and(|i| i.is_empty()),
        "team-b is not served with WATCH_NAMESPACE=team-a: {code} {body}"
    );
}

/// A namespace-local `wva-model-scale-to-zero-config` replaces the global
/// one for its namespace: with no global ConfigMap and WVA_SCALE_TO_ZERO
/// unset, the idle model of "tracked" goes to 0 with its local 2 s
/// retention, the same idle model in "plain" stays at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_local_scale_to_zero_configmaps_are_read() {
    let api = ApiServer::start().await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let e = Emulator::start_with(MODEL, 0.1, 0.0, &["--request-rate", "0"]).await;
        e.set_state(json!({"running": 0})).await;
        idle.push(e);
    }
    let (t, p) = idle.split_at(1);
    variant(&api, "tracked", t, 0);
    variant(&api, "plain", p, 0);
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-model-scale-to-zero-config", "namespace": "tracked"},
        "data": {"default": "enable_scale_to_zero: true\nretention_period: \"2s\"\n"}}));
    let s = Server::start_kube(&api, &["--namespace", OWN, "--update-status=false"], &[]).await;
    s.wait_value("tracked", "wva_desired_replicas", "target_name=d", "0")
        .await;
    s.wait_value("plain", "wva_desired_replicas", "target_name=d", "1")
        .await;
    // Deleted: the global configuration (off) applies again.
    api.delete("ConfigMap", "tracked", "wva-model-scale-to-zero-config");
    s.wait_value("tracked", "wva_desired_replicas", "target_name=d", "1")
        .await;
}
