//! Issue 30, must-show 1: an upstream WVA install's own files and
//! environment work unchanged. Its Helm chart's rendered config file and
//! thresholds ConfigMap (tests/fixtures/upstream-wva, rendered from the chart
//! at b08b1c7) are read with the chart's environment; each upstream setting
//! is honoured, or refused at start with exit code 2 and a message naming it.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::apiserver::ApiServer;
use common::{Emulator, Server};
use serde_json::{json, Value};
use wva_metrics_server::command::{parse_cli, Command as Sub};

const BIN: &str = env!("CARGO_BIN_EXE_wva-metrics-server");

/// Tests that set process environment variables (clap reads them there)
/// run one at a time.
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream-wva")
        .join(name)
}

/// `serve`'s parsed flags for `args`, with `env` set in the process for the
/// parse (and removed after).
fn serve_args(
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Box<wva_metrics_server::cli::ServeArgs>, String> {
    let _lock = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let mut argv = vec!["wva-metrics-server", "serve"];
    argv.extend_from_slice(args);
    let parsed = parse_cli(argv, |k| std::env::var(k).ok());
    for (k, _) in env {
        std::env::remove_var(k);
    }
    match parsed {
        Ok(cli) => match cli.command {
            Sub::Serve(a) => Ok(a),
            _ => Err("not serve".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `serve` (it must stop at the start): exit code and stderr.
fn serve_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("KUBECONFIG")
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_helm_charts_config_file_sets_prometheus_and_the_cache_as_upstream_reads_it() {
    let file = fixture("helm-rendered-config.yaml");
    let file = file.to_str().unwrap();
    let a = serve_args(&["--config-file", file], &[]).unwrap();
    assert_eq!(
        a.prometheus.prometheus_base_url.as_deref(),
        Some("https://thanos-querier.openshift-monitoring.svc.cluster.local:9091")
    );
    assert_eq!(
        a.prometheus.prometheus_ca_cert.as_deref(),
        Some(Path::new("/etc/ssl/certs/prometheus-ca.crt"))
    );
    assert!(a.prometheus.prometheus_tls_insecure_skip_verify);
    assert!(!a.decisions.scale_to_zero);
    let f = a.metrics.freshness();
    assert_eq!(
        (f.fresh, f.stale, f.unavailable),
        (
            Duration::from_secs(60),
            Duration::from_secs(120),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        a.upstream.global_opt_interval,
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        a.upstream.prometheus_metrics_cache_cleanup_interval,
        Some(Duration::from_secs(60))
    );
    // The file's empty EPP token counts as unset, as in upstream.
    assert_eq!(a.upstream.epp_metric_reader_bearer_token, None);

    // Precedence: flag > environment > file > default.
    let a = serve_args(
        &["--config-file", file],
        &[("PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD", "90s")],
    )
    .unwrap();
    assert_eq!(
        a.metrics.freshness().stale,
        Duration::from_secs(90),
        "env over file"
    );
    let a = serve_args(
        &["--config-file", file, "--metrics-stale-after", "100s"],
        &[("PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD", "90s")],
    );
    match a {
        Ok(a) => assert_eq!(
            a.metrics.freshness().stale,
            Duration::from_secs(100),
            "flag over env"
        ),
        Err(e) => panic!("{e}"),
    }
    let a = serve_args(&[], &[]).unwrap();
    assert_eq!(a.prometheus.prometheus_base_url, None, "no file: defaults");
    assert_eq!(a.upstream.config_file, Path::new("/etc/wva/config.yaml"));
}

#[test]
fn config_file_errors_name_the_file_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "PROMETHEUS_BASE_URL: \"https://p:9091\"\nPROMETHEUS_METRICS_CACHE_TTL: soon\n",
            "line 2: PROMETHEUS_METRICS_CACHE_TTL: invalid value 'soon'",
        ),
        (
            "GLOBAL_OPT_INTERVAL: 60s\nPROMETEUS_BASE_URL: x\n",
            "line 2: PROMETEUS_BASE_URL: not a setting upstream WVA's config file has",
        ),
        (
            "LEADER_ELECTION_ID: abc\n",
            "line 1: LEADER_ELECTION_ID: an upstream WVA setting that has no equivalent",
        ),
        ("- a\n- b\n", "not YAML of KEY: value"),
    ];
    for (text, want) in cases {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let shown = path.display().to_string();
        let (code, err) = serve_exit(&["--config-file", &shown], &[]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(&shown) && err.contains(want), "{text}: {err}");
    }
    let (code, err) = serve_exit(&["--config-file", "/nonexistent/wva/config.yaml"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("/nonexistent/wva/config.yaml: cannot read it"),
        "{err}"
    );
}

/// Each upstream setting that cannot apply here stops the start naming it;
/// bad values of the ones that apply too.
#[test]
fn settings_that_cannot_apply_are_refused_at_start_naming_them() {
    // (environment, flags, what the error says)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (
            &[("EPP_METRIC_READER_BEARER_TOKEN", "s3cret")],
            &[],
            "EPP_METRIC_READER_BEARER_TOKEN is set",
        ),
        (
            &[("SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY", "10")],
            &[],
            "SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY=\"10\"",
        ),
        (
            &[("GLOBAL_OPT_INTERVAL", "soon")],
            &[],
            "GLOBAL_OPT_INTERVAL",
        ),
        (
            &[("PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL", "0s")],
            &[],
            "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL",
        ),
        (&[("WVA_LIMITED_MODE", "maybe")], &[], "WVA_LIMITED_MODE"),
        (
            &[("WVA_NODE_SELECTOR", "shard=a")],
            &[],
            "WVA_NODE_SELECTOR (--wva-node-selector) \"shard=a\" limits the Nodes",
        ),
        (
            &[("WVA_NODE_SELECTOR", "a=b=c=")],
            &["--accelerator-inventory"],
            "WVA_NODE_SELECTOR",
        ),
        (
            &[("WATCH_NAMESPACE", "team-a")],
            &["--watch-namespaces", "team-b"],
            "WATCH_NAMESPACE (--watch-namespace) \"team-a\" and --watch-namespaces",
        ),
        (
            &[("SATURATION_CONFIG_MAP_NAME", "Not_A_Name")],
            &[],
            "SATURATION_CONFIG_MAP_NAME",
        ),
    ];
    for (env, args, want) in cases {
        let (code, err) = serve_exit(args, env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert!(err.contains(want), "{env:?}: {err}");
    }
}

/// The settings that map onto ours, as upstream's chart sets them.
#[test]
fn settings_that_apply_map_onto_the_servers_own() {
    let a = serve_args(&[], &[("WATCH_NAMESPACE", "team-a")]).unwrap();
    assert_eq!(a.inventory.watch_namespaces, ["team-a"]);
    assert_eq!(a.upstream.watch_namespace.as_deref(), Some("team-a"));
    let a = serve_args(&[], &[("WVA_LIMITED_MODE", "true")]).unwrap();
    assert!(
        a.inventory.accelerator_inventory,
        "limited mode collects the GPU inventory"
    );
    // The chart's own values: limited mode off, an empty node selector.
    let a = serve_args(
        &[],
        &[("WVA_LIMITED_MODE", "false"), ("WVA_NODE_SELECTOR", "")],
    )
    .unwrap();
    assert!(!a.inventory.accelerator_inventory);
    assert_eq!(a.upstream.wva_node_selector, None);
    let a = serve_args(
        &["--accelerator-inventory"],
        &[("WVA_NODE_SELECTOR", "wva.llmd.ai/shard=instance-a")],
    )
    .unwrap();
    assert_eq!(
        a.upstream.wva_node_selector.as_deref(),
        Some("wva.llmd.ai/shard=instance-a")
    );
    let a = serve_args(
        &[],
        &[(
            "SATURATION_CONFIG_MAP_NAME",
            "workload-variant-autoscaler-wva-saturation-scaling-config",
        )],
    )
    .unwrap();
    assert_eq!(
        a.upstream.saturation_config_map_name,
        "workload-variant-autoscaler-wva-saturation-scaling-config"
    );
    assert_eq!(
        serve_args(&[], &[])
            .unwrap()
            .upstream
            .saturation_config_map_name,
        "wva-saturation-scaling-config"
    );
}

fn read_yaml(name: &str) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// The environment of the `manager` container of upstream's rendered
/// Deployment, as the kubelet gives it: plain values, and the field
/// references the chart uses (`metadata.namespace`) resolved to the
/// Deployment's namespace.
fn chart_env() -> Vec<(String, String)> {
    let deployment = read_yaml("helm-rendered-deployment-controller-manager.yaml");
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let manager = containers
        .iter()
        .find(|c| c["name"] == "manager")
        .expect("the chart's manager container");
    manager["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => v.clone(),
                (_, Value::String(path)) if path == "metadata.namespace" => namespace.to_owned(),
                other => panic!("{name}: an env source this test does not resolve: {other:?}"),
            };
            (name, value)
        })
        .collect()
}

const QWEN: &str = "Qwen/Qwen3-0.6B";
const QWEN_NS: &str = "llm-d-autoscaler";
const SYSTEM_NS: &str = "workload-variant-autoscaler-system";

fn qwen_objects(api: &ApiServer, emulators: &[Emulator]) {
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "qwen-decode", "namespace": QWEN_NS},
        "spec": {"replicas": emulators.len(), "selector": {"matchLabels": {"app": "qwen"}},
                 "template": {"metadata": {"labels": {"app": "qwen"}}, "spec": {"containers": []}}},
        "status": {"replicas": emulators.len(), "readyReplicas": emulators.len()}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("qwen-{i}"), "namespace": QWEN_NS,
                         "labels": {"app": "qwen", "llm-d.ai/variant": "qwen-h100"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "qwen-h100", "namespace": QWEN_NS,
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen-decode"},
                 "modelID": QWEN, "minReplicas": 1, "maxReplicas": 10}}));
}

/// The chart names its thresholds ConfigMap with the release's prefix and
/// says so in SATURATION_CONFIG_MAP_NAME: with the chart's environment the
/// rendered ConfigMap's override (kvCacheThreshold 0.70, kvSpareTrigger
/// 0.35 for Qwen/Qwen3-0.6B) is in force: 2 replicas at KV 0.6 have 0.1
/// spare, under 0.35, so 3 are wanted. Without the variable the ConfigMap
/// is not the one read, and the defaults hold at 2.
#[tokio::test]
async fn saturation_config_map_name_reads_the_charts_prefixed_configmap() {
    let api = ApiServer::start().await;
    let emulators = vec![
        Emulator::start(QWEN, 0.6, 0.0).await,
        Emulator::start(QWEN, 0.6, 0.0).await,
    ];
    qwen_objects(&api, &emulators);
    api.apply(read_yaml("helm-rendered-saturation-scaling-config.yaml"));
    // The chart's environment, from its rendered Deployment.
    let chart_env = chart_env();
    let chart_env: Vec<(&str, &str)> = chart_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(
        chart_env.contains(&(
            "SATURATION_CONFIG_MAP_NAME",
            "workload-variant-autoscaler-wva-saturation-scaling-config"
        )),
        "{chart_env:?}"
    );
    let with = Server::start_kube(&api, &["--namespace", SYSTEM_NS], &chart_env).await;
    let without = Server::start_kube(
        &api,
        &["--namespace", SYSTEM_NS],
        &[("POD_NAMESPACE", SYSTEM_NS)],
    )
    .await;
    with.wait_value(
        QWEN_NS,
        "wva_desired_replicas",
        "variant_name=qwen-h100",
        "3",
    )
    .await;
    without
        .wait_value(
            QWEN_NS,
            "wva_desired_replicas",
            "variant_name=qwen-h100",
            "2",
        )
        .await;
}

fn node(name: &str, shard: &str, gpus: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-SXM5-80GB",
                                                  "wva.llmd.ai/shard": shard}},
           "spec": {},
           "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string()},
                      "capacity": {"nvidia.com/gpu": gpus.to_string()}}})
}

/// WVA_NODE_SELECTOR shards the GPUs the limiter counts: with it only
/// node n1 (shard a: 4 GPUs, 3 requested by the running pods, 1 free)
/// counts, and the model that wants 2 more gets 1; without it n2's 10 free
/// GPUs count too and it gets both.
#[tokio::test]
async fn wva_node_selector_limits_the_nodes_the_limiter_counts() {
    let api = ApiServer::start().await;
    api.apply(node("n1", "a", 4));
    api.apply(node("n2", "b", 10));
    let model = "org/model-a";
    let mut emulators = Vec::new();
    for _ in 0..3 {
        emulators.push(
            Emulator::start_with(
                model,
                1.0,
                0.0,
                &["--num-gpu-blocks", "1000", "--block-size", "16"],
            )
            .await,
        );
    }
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "alpha-d", "namespace": "llm"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "alpha"}},
                 "template": {"metadata": {"labels": {"app": "alpha"}}, "spec": {"containers": []}}},
        "status": {"replicas": 3, "readyReplicas": 3}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("alpha-{i}"), "namespace": "llm",
                         "labels": {"app": "alpha", "llm-d.ai/variant": "alpha"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "spec": {"nodeName": "n1", "containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "alpha", "namespace": "llm",
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "alpha-d"},
                 "modelID": model, "minReplicas": 1, "maxReplicas": 10}}));
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
        "data": {"default": "analyzerName: saturation\nenableLimiter: true\n"}}));
    let sharded = Server::start_kube(
        &api,
        &["--accelerator-inventory", "--limiter-on-v2"],
        &[("WVA_NODE_SELECTOR", "wva.llmd.ai/shard=a")],
    )
    .await;
    let whole =
        Server::start_kube(&api, &["--accelerator-inventory", "--limiter-on-v2"], &[]).await;
    sharded
        .wait_value("llm", "wva_desired_replicas", "variant_name=alpha", "4")
        .await;
    whole
        .wait_value("llm", "wva_desired_replicas", "variant_name=alpha", "5")
        .await;
}

/// Upstream's GPU limiter by default: `enableLimiter: true` in the global
/// `default` entry caps V1 (the default analysis) scale-ups. Node n1 has 3
/// H100, the 3 running replicas (1 GPU each) use them all; the model is
/// saturated (KV 0.9) and V1 wants a fourth: with the limiter it stays at
/// 3, without it (a second server whose own namespace has no ConfigMap)
/// it gets 4.
#[tokio::test]
async fn enable_limiter_caps_v1_scale_ups_as_upstream() {
    let api = ApiServer::start().await;
    api.apply(node("n1", "a", 3));
    let model = "org/model-v1";
    let mut emulators = Vec::new();
    for _ in 0..3 {
        emulators.push(Emulator::start(model, 0.9, 0.0).await);
    }
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "v1-d", "namespace": "llm"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "v1"}},
                 "template": {"metadata": {"labels": {"app": "v1"}}, "spec": {"containers": []}}},
        "status": {"replicas": 3, "readyReplicas": 3}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("v1-{i}"), "namespace": "llm",
                         "labels": {"app": "v1", "llm-d.ai/variant": "v1"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "spec": {"nodeName": "n1", "containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(
        json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "v1", "namespace": "llm",
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "v1-d"},
                 "modelID": model, "minReplicas": 1, "maxReplicas": 10}}),
    );
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-limited"},
        "data": {"default": "kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 3\nenableLimiter: true\n"}}));
    let limited = Server::start_kube(
        &api,
        &["--namespace", "wva-limited", "--accelerator-inventory"],
        &[],
    )
    .await;
    let free = Server::start_kube(
        &api,
        &["--namespace", "wva-free", "--accelerator-inventory"],
        &[],
    )
    .await;
    free.wait_value("llm", "wva_desired_replicas", "variant_name=v1", "4")
        .await;
    limited
        .wait_value("llm", "wva_desired_replicas", "variant_name=v1", "3")
        .await;
    // Held by the limiter, not for want of metrics: it says so.
    common::eventually(
        Duration::from_secs(20),
        "the limiter's log line",
        || async {
            limited
                .log()
                .contains("scale-up limited by free accelerators (upstream's limiter)")
                .then_some(())
        },
    )
    .await;
    assert!(!free.log().contains("scale-up limited"));
}

/// Upstream's limiter inputs end to end: a Node labelled as NVIDIA's
/// feature discovery labels a T4 (`Tesla-T4`, no vendor word) holds GPUs
/// of type `T4`, the VariantAutoscaling's label; GPUs per replica are the
/// Deployment template's 2, although the running pods (of an older
/// template) request 1. Shard a (7 GPUs): 3 replicas use 6, the fourth
/// needs 2, so V1's scale-up is held at 3; with shard b's GPU (8) it gets
/// its 4th. Counting the pods' GPUs both would grow; with the whole name
/// `Tesla-T4` neither would.
#[tokio::test]
async fn limiter_counts_template_gpus_and_short_tesla_names_as_upstream() {
    let api = ApiServer::start().await;
    for (name, shard, gpus) in [("n1", "a", 7), ("n2", "b", 1)] {
        api.apply(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "Tesla-T4",
                                                   "wva.llmd.ai/shard": shard}},
            "spec": {},
            "status": {"allocatable": {"nvidia.com/gpu": gpus.to_string()},
                       "capacity": {"nvidia.com/gpu": gpus.to_string()}}}));
    }
    let model = "org/model-t4";
    let mut emulators = Vec::new();
    for _ in 0..3 {
        emulators.push(Emulator::start(model, 0.9, 0.0).await);
    }
    api.apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "t4-d", "namespace": "llm"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "t4"}},
                 "template": {"metadata": {"labels": {"app": "t4"}},
                              "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                                       "resources": {"requests": {"nvidia.com/gpu": "2"}}}]}}},
        "status": {"replicas": 3, "readyReplicas": 3}}));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("t4-{i}"), "namespace": "llm",
                         "labels": {"app": "t4", "llm-d.ai/variant": "t4"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "spec": {"nodeName": "n1", "containers": [{"name": "vllm", "image": "vllm/vllm-openai",
                     "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.apply(
        json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "t4", "namespace": "llm",
                     "labels": {"inference.optimization/acceleratorName": "T4"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t4-d"},
                 "modelID": model, "minReplicas": 1, "maxReplicas": 10}}),
    );
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-limited"},
        "data": {"default": "kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 3\nenableLimiter: true\n"}}));
    let args = ["--namespace", "wva-limited", "--accelerator-inventory"];
    let shard_a =
        Server::start_kube(&api, &args, &[("WVA_NODE_SELECTOR", "wva.llmd.ai/shard=a")]).await;
    let both = Server::start_kube(&api, &args, &[]).await;
    both.wait_value("llm", "wva_desired_replicas", "variant_name=t4", "4")
        .await;
    shard_a
        .wait_value("llm", "wva_desired_replicas", "variant_name=t4", "3")
        .await;
    common::eventually(
        Duration::from_secs(20),
        "the limiter's log line",
        || async {
            shard_a
                .log()
                .contains("scale-up limited by free accelerators (upstream's limiter)")
                .then_some(())
        },
    )
    .await;
}

/// The chart's container arguments. With the chart's default
/// `namespaceScoped: true` it passes `--watch-namespace=$(POD_NAMESPACE)`,
/// so upstream manages its own namespace only; the same flag (and
/// `--leader-elect`, `--config-file`) means the same here. The arguments of
/// upstream's controller-runtime endpoints (health probe, metrics) name
/// flags this server does not have (one port serves the API, health and
/// metrics) and are refused by name: an install replaces the container's
/// arguments, and keeps its environment and mounts.
#[test]
fn the_charts_arguments_select_the_same_namespace() {
    let deployment = read_yaml("helm-rendered-deployment-controller-manager.yaml");
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap();
    let manager = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "manager")
        .expect("the chart's manager container")
        .clone();
    let config = fixture("helm-rendered-config.yaml");
    // The kubelet substitutes $(POD_NAMESPACE); the mounted file is the
    // rendered config.yaml.
    let args: Vec<String> = manager["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("$(POD_NAMESPACE)", namespace)
                .replace("/etc/wva/config.yaml", config.to_str().unwrap())
        })
        .collect();
    let (shared, upstream_only): (Vec<&str>, Vec<&str>) =
        args.iter().map(String::as_str).partition(|a| {
            ["--leader-elect", "--config-file", "--watch-namespace"]
                .iter()
                .any(|f| a.starts_with(&format!("{f}=")))
        });
    assert_eq!(shared.len(), 3, "{args:?}");
    let a = serve_args(&shared, &[]).unwrap();
    assert_eq!(a.inventory.watch_namespaces, [namespace]);
    assert_eq!(a.status.leader_elect, Some(true));
    assert_eq!(
        a.prometheus.prometheus_base_url.as_deref(),
        Some("https://thanos-querier.openshift-monitoring.svc.cluster.local:9091")
    );
    assert_eq!(
        upstream_only,
        [
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=:8443",
            "--metrics-secure=true"
        ]
    );
    for arg in upstream_only {
        let flag = arg.split('=').next().unwrap_or_default();
        let err = serve_args(&[arg], &[]).unwrap_err();
        assert!(err.contains(flag), "{arg}: {err}");
    }
}

/// LOG_LEVEL (the chart sets `info`): upstream's four levels, any case,
/// when RUST_LOG is unset; another value logs at info, as upstream, and
/// here says so.
#[test]
fn log_level_is_upstreams_when_rust_log_is_unset() {
    use wva_metrics_server::telemetry::upstream_log_level;
    for (value, level) in [
        (None, "info"),
        (Some(""), "info"),
        (Some("debug"), "debug"),
        (Some("INFO"), "info"),
        (Some("warn"), "warn"),
        (Some("error"), "error"),
    ] {
        assert_eq!(upstream_log_level(value), (level, None), "{value:?}");
    }
    assert_eq!(
        upstream_log_level(Some("verbose")),
        ("info", Some("verbose".to_owned()))
    );
    // In the binary (RUST_LOG unset): an unknown value is named in the
    // log; at `error` the start's warnings (a generated certificate) are
    // filtered out, at `warn` they show; the refusal of an inapplicable
    // setting is the start's error and shows at every level.
    let run = |level: &str| {
        let out = Command::new(BIN)
            .arg("serve")
            .env("LOG_LEVEL", level)
            .env("SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY", "10")
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY"),
            "{err}"
        );
        err
    };
    let generated = "serving a self-signed certificate generated at start";
    let err = run("verbose");
    assert!(err.contains("LOG_LEVEL is not one of"), "{err}");
    assert!(err.contains(generated), "info shows warnings: {err}");
    assert!(run("warn").contains(generated));
    let err = run("error");
    assert!(!err.contains(generated), "{err}");
}
