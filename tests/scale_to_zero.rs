//! Scale to zero and back, end to end: emulated vLLM replicas whose
//! `vllm:request_success_total` follows `request_rate`, the scale-to-zero
//! config file in upstream's shape, the HTTP API, KEDA's `IsActive` through
//! a Python grpcio client, and an emulated endpoint picker's flow-control
//! queue, with both metrics backends.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::process::Command;
use std::time::Duration;

use common::prometheus::{PrometheusServer, Target};
use common::{eventually, free_port, make_client_pki, variant_yaml, Emulator, Server, VariantSpec};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SHORT_RETENTION: &str =
    "default: |\n  enable_scale_to_zero: true\n  retention_period: \"3s\"\n";

fn spec<'a>(namespace: &'a str, model: &'a str, ready: u32) -> VariantSpec<'a> {
    VariantSpec {
        namespace,
        variant: "v",
        target: "d",
        model,
        min: 0,
        max: 4,
        ready,
    }
}

/// `serve` over `inventory` with the 3 s retention config and the KEDA port.
async fn serve(inventory: &str, extra: &[&str]) -> (Server, u16) {
    let dir = tempfile::tempdir().unwrap();
    let inv_path = dir.path().join("inventory.yaml");
    std::fs::write(&inv_path, inventory).unwrap();
    let stz_path = dir.path().join("scale-to-zero.yaml");
    std::fs::write(&stz_path, SHORT_RETENTION).unwrap();
    let inv = format!("file:{}", inv_path.display());
    let stz = stz_path.display().to_string();
    let grpc_port = free_port();
    let grpc = grpc_port.to_string();
    let client = make_client_pki(dir.path(), "keda-operator");
    let client_ca = client.ca_path.display().to_string();
    let mut args = vec![
        "--inventory",
        &inv,
        "--scale-to-zero-config",
        &stz,
        "--keda-port",
        &grpc,
        "--keda-client-ca-file",
        &client_ca,
    ];
    args.extend_from_slice(extra);
    (Server::start(dir, &args).await, grpc_port)
}

/// KEDA's `IsActive` for the variant, from the Python grpcio client.
fn is_active(server: &Server, grpc_port: u16, namespace: &str) -> bool {
    keda(server, grpc_port, namespace, "active", "active")
}

/// The first message of KEDA's `StreamIsActive` for the variant.
fn stream_is_active(server: &Server, grpc_port: u16, namespace: &str) -> bool {
    keda(server, grpc_port, namespace, "stream", "stream")
}

/// One keda_client.py command, and the boolean `key` of its answer.
fn keda(server: &Server, grpc_port: u16, namespace: &str, command: &str, key: &str) -> bool {
    let d = server.dir.path();
    let out = Command::new(common::python())
        .args([
            format!("{ROOT}/tests/keda_client.py"),
            "--address".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--ca".into(),
            server.ca_path().display().to_string(),
            "--proto-dir".into(),
            format!("{ROOT}/proto"),
            "--namespace".into(),
            namespace.into(),
            "--cert".into(),
            d.join("client.crt").display().to_string(),
            "--key".into(),
            d.join("client.key").display().to_string(),
            "--metadata".into(),
            "variantName=v".into(),
            command.into(),
        ])
        .output()
        .expect("python runs (scripts/test installs grpcio into target/test-venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keda_client.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v[key]
        .as_bool()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Waits (bounded) until KEDA's IsActive says `want`.
async fn wait_active(server: &Server, grpc_port: u16, namespace: &str, want: bool) {
    eventually(
        Duration::from_secs(30),
        &format!("IsActive {want}"),
        || async move {
            let got = tokio::task::block_in_place(|| is_active(server, grpc_port, namespace));
            (got == want).then_some(())
        },
    )
    .await;
}

/// A busy replica whose requests stop: idle for the retention period, the
/// model goes to 0 desired and KEDA's IsActive to false; requests complete
/// again: back to 1 desired and IsActive true. Scrape backend (the counter
/// history is kept by the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_for_the_retention_period_goes_to_zero_and_back_scrape() {
    let replica = Emulator::start_with("stz-model", 0.1, 0.0, &["--request-rate", "2"]).await;
    let (s, grpc) = serve(
        &variant_yaml(&spec("stz", "stz-model", 1), &[replica.port]),
        &["--metrics-backend", "scrape", "--scrape-interval", "1s"],
    )
    .await;
    let sel = "target_name=d";
    s.wait_value("stz", "wva_desired_replicas", sel, "1").await;
    assert!(tokio::task::block_in_place(|| is_active(&s, grpc, "stz")));

    // No request completes, runs or waits any more.
    replica
        .set_state(serde_json::json!({"request_rate": 0, "running": 0, "waiting": 0}))
        .await;
    s.wait_value("stz", "wva_desired_replicas", sel, "0").await;
    // desired 0 over 1 ready: ratio 0.
    assert_eq!(
        s.value("stz", "wva_desired_ratio", sel).await.as_deref(),
        Some("0")
    );
    wait_active(&s, grpc, "stz", false).await;
    assert!(!tokio::task::block_in_place(|| stream_is_active(
        &s, grpc, "stz"
    )));

    // Requests complete again: the model is busy, at least one replica.
    replica
        .set_state(serde_json::json!({"request_rate": 2, "running": 1}))
        .await;
    s.wait_value("stz", "wva_desired_replicas", sel, "1").await;
    wait_active(&s, grpc, "stz", true).await;
    assert!(tokio::task::block_in_place(|| stream_is_active(
        &s, grpc, "stz"
    )));
}

/// A model at zero (no pod, Deployment at 0) stays there while nothing is
/// queued, and gets one replica on its variant when the endpoint picker
/// (scraped with --epp-metrics-url) queues requests for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_bring_a_model_back_from_zero_scrape() {
    let epp = Emulator::start("zero-model", 0.0, 0.0).await;
    epp.set_state(serde_json::json!({"scheduler_queue": 0}))
        .await;
    let epp_url = format!("http://127.0.0.1:{}/metrics", epp.port);
    let (s, grpc) = serve(
        &variant_yaml(&spec("zero", "zero-model", 0), &[]),
        &[
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "1s",
            "--epp-metrics-url",
            &epp_url,
        ],
    )
    .await;
    let sel = "target_name=d";
    s.wait_value("zero", "wva_desired_replicas", sel, "0").await;
    assert_eq!(
        s.value("zero", "wva_desired_ratio", sel).await.as_deref(),
        Some("0")
    );
    wait_active(&s, grpc, "zero", false).await;

    epp.set_state(serde_json::json!({"scheduler_queue": 3}))
        .await;
    s.wait_value("zero", "wva_desired_replicas", sel, "1").await;
    // At 0 ready the ratio is the desired count: the HPA (HPAScaleToZero)
    // computes ceil(ratio) = 1 for a target at 0.
    assert_eq!(
        s.value("zero", "wva_desired_ratio", sel).await.as_deref(),
        Some("1")
    );
    wait_active(&s, grpc, "zero", true).await;
}

/// The same two transitions with the Prometheus backend: the activity query
/// over the retention period and the flow-control queue query, against a
/// real Prometheus scraping the replica and the emulated endpoint picker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_and_back_through_prometheus() {
    let replica = Emulator::start_with("stz-model", 0.1, 0.0, &["--request-rate", "2"]).await;
    // Nothing in flight, so only completions keep the replica busy (the
    // in-flight count is a one-minute peak with Prometheus).
    replica.set_state(serde_json::json!({"running": 0})).await;
    let epp = Emulator::start("zero-model", 0.0, 0.0).await;
    epp.set_state(serde_json::json!({"running": 0, "scheduler_queue": 0}))
        .await;
    let target = |port, namespace: &str, pod: &str| Target {
        port,
        namespace: namespace.into(),
        pod: pod.into(),
    };
    let prom = PrometheusServer::start(&[
        target(replica.port, "stz", "d-0"),
        target(epp.port, "gateway", "epp-0"),
    ])
    .await;
    let mut inventory = variant_yaml(&spec("stz", "stz-model", 1), &[replica.port]);
    inventory.push_str(&variant_yaml(&spec("zero", "zero-model", 0), &[]));
    let url = prom.url();
    let (s, grpc) = serve(
        &inventory,
        &[
            "--metrics-backend",
            "prometheus",
            "--prometheus-url",
            &url,
            "--metrics-fetch-interval",
            "1s",
        ],
    )
    .await;
    let sel = "target_name=d";
    s.wait_value("stz", "wva_desired_replicas", sel, "1").await;
    s.wait_value("zero", "wva_desired_replicas", sel, "0").await;

    replica
        .set_state(serde_json::json!({"request_rate": 0}))
        .await;
    s.wait_value("stz", "wva_desired_replicas", sel, "0").await;
    wait_active(&s, grpc, "stz", false).await;
    replica
        .set_state(serde_json::json!({"request_rate": 2}))
        .await;
    s.wait_value("stz", "wva_desired_replicas", sel, "1").await;

    epp.set_state(serde_json::json!({"scheduler_queue": 2}))
        .await;
    s.wait_value("zero", "wva_desired_replicas", sel, "1").await;
    wait_active(&s, grpc, "zero", true).await;
    // One activity query per cycle for the one retention period, beside
    // the batched signal queries: not one per model or variant.
    let activity: Vec<String> = prom
        .logged_queries()
        .into_iter()
        .filter(|q| q.contains("offset 3s"))
        .collect();
    assert!(!activity.is_empty(), "the activity query was sent");
    assert!(
        activity
            .iter()
            .all(|q| !q.contains("stz-model") && !q.contains("zero-model")),
        "batched, not per model: {activity:?}"
    );
}

/// `--inventory kube`: the `wva-model-scale-to-zero-config` ConfigMap in
/// the server's namespace is followed live, with upstream's precedence: the
/// `default` entry's retention period with `WVA_SCALE_TO_ZERO=true` puts an
/// idle model at 0; an override for the model that turns it off brings it
/// back to 1; a deleted ConfigMap leaves the environment's 10 minutes, which
/// the replica's history does not cover yet (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configmap_is_followed_in_kube_mode() {
    use common::apiserver::ApiServer;
    use serde_json::json;
    const NS: &str = "llm";
    const OWN: &str = "wva-system";
    const MODEL: &str = "meta/llama-3.1-8b";
    let api = ApiServer::start().await;
    // Idle from the start: nothing completes, runs or waits.
    let replica = Emulator::start_with(MODEL, 0.1, 0.0, &["--request-rate", "0"]).await;
    replica.set_state(json!({"running": 0})).await;
    for ns in [OWN, NS] {
        api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}}},
        "status": {"replicas": 1, "readyReplicas": 1}
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "d-0", "namespace": NS,
                     "labels": {"app": "d", "llm-d.ai/variant": "v"},
                     "annotations": {"prometheus.io/port": replica.port.to_string()}},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    }));
    api.apply(json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "v", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                 "modelID": MODEL, "minReplicas": 0, "maxReplicas": 4}
    }));
    let configmap = |data: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "wva-model-scale-to-zero-config", "namespace": OWN},
               "data": data})
    };
    api.apply(configmap(json!({"default": "retention_period: \"2s\"\n"})));
    let s = Server::start_kube(
        &api,
        &["--namespace", OWN, "--update-status=false"],
        &[("WVA_SCALE_TO_ZERO", "true")],
    )
    .await;
    let sel = "target_name=d";
    s.wait_value(NS, "wva_desired_replicas", sel, "0").await;

    // An override for the model turns it off (and a broken entry beside it
    // is skipped, not fatal).
    api.apply(configmap(json!({
        "default": "retention_period: \"2s\"\n",
        "llama": format!("model_id: {MODEL}\nenable_scale_to_zero: false\n"),
        "typo": "model_id: other\nretention: 5m\n",
    })));
    s.wait_value(NS, "wva_desired_replicas", sel, "1").await;
    assert!(
        s.log().contains("scale-to-zero entry refused"),
        "the broken entry is logged"
    );

    // Back to the default entry only: 0 again.
    api.apply(configmap(json!({"default": "retention_period: \"2s\"\n"})));
    s.wait_value(NS, "wva_desired_replicas", sel, "0").await;

    // Deleted: WVA_SCALE_TO_ZERO with the default 10 minutes, which the
    // replica's counter history does not cover: busy as far as anyone knows.
    api.delete("ConfigMap", OWN, "wva-model-scale-to-zero-config");
    s.wait_value(NS, "wva_desired_replicas", sel, "1").await;
}
