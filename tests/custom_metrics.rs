//! custom.metrics.k8s.io against real clients: `kubectl get --raw` on every
//! path (discovery of both versions, Object metrics on the scale target,
//! the wildcard, metricSelector, Pods metrics, errors), and the official
//! Python `kubernetes` client's CustomObjectsApi on the Object path.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::process::Command;

use common::{two_model_inventory, Emulator, Server};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The five replicas of the two worked examples: llama (kv .20/.30/.25,
/// desired 2 of 3) and mistral (kv .75/.76, desired 3 of 2).
async fn start() -> (Server, Vec<Emulator>) {
    let emulators = common::two_model_emulators().await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let s = Server::with_inventory(
        &two_model_inventory(&ports),
        &["--metrics-backend", "scrape"],
    )
    .await;
    s.wait_mistral_at_3().await;
    (s, emulators)
}

/// `kubectl get --raw PATH` against the server: the JSON answer, or the
/// error text kubectl printed.
fn kubectl_raw(s: &Server, path: &str) -> Result<Value, String> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let out = Command::new(&kubectl)
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &s.base,
            "--certificate-authority",
            s.ca_path().to_str().unwrap(),
            // Any credential keeps kubectl from prompting for one; the
            // standalone server runs with authentication off.
            "--token",
            "unused",
            "get",
            "--raw",
            path,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {kubectl} ({e}): scripts/test installs kubectl (kubernetes-client)")
        });
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ok(s: &Server, path: &str) -> Value {
    kubectl_raw(s, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn names(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_every_custom_metrics_path() {
    let (s, _e) = start().await;
    let s = &s;
    tokio::task::block_in_place(|| {
        // Discovery: both groups, both custom versions, v1beta2 preferred.
        let groups = ok(s, "/apis");
        let group_names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            group_names,
            ["external.metrics.k8s.io", "custom.metrics.k8s.io"]
        );
        let group = ok(s, "/apis/custom.metrics.k8s.io");
        assert_eq!(group["preferredVersion"]["version"], "v1beta2");
        for v in ["v1beta1", "v1beta2"] {
            let list = ok(s, &format!("/apis/custom.metrics.k8s.io/{v}"));
            assert_eq!(list["groupVersion"], format!("custom.metrics.k8s.io/{v}"));
            let n = names(&list);
            for want in [
                "deployments.apps/wva_desired_ratio",
                "deployments.apps/wva_desired_replicas",
                "deployments.apps/wva_current_replicas",
                "statefulsets.apps/wva_desired_ratio",
                "pods/vllm_kv_cache_usage",
            ] {
                assert!(n.iter().any(|x| x == want), "{want} in {v}: {n:?}");
            }
        }

        // Object metric on the scale target, v1beta2: one item naming it.
        let base = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-b/deployments.apps";
        let list = ok(s, &format!("{base}/mistral-decode/wva_desired_replicas"));
        assert_eq!(list["kind"], "MetricValueList");
        assert_eq!(list["apiVersion"], "custom.metrics.k8s.io/v1beta2");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{list}");
        assert_eq!(
            items[0]["describedObject"],
            serde_json::json!({"kind": "Deployment", "namespace": "llm-b", "name": "mistral-decode", "apiVersion": "apps/v1"})
        );
        assert_eq!(items[0]["metric"]["name"], "wva_desired_replicas");
        assert_eq!(items[0]["value"], "3");
        // The ratio for a `Value: 1` target: 3 desired / 2 ready.
        let ratio = ok(s, &format!("{base}/mistral-decode/wva_desired_ratio"));
        assert_eq!(ratio["items"][0]["value"], "1500m");
        let current = ok(s, &format!("{base}/mistral-decode/wva_current_replicas"));
        assert_eq!(current["items"][0]["value"], "2");

        // v1beta1 writes `metricName` instead of `metric`.
        let old = ok(
            s,
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm-b/deployments.apps/mistral-decode/wva_desired_replicas",
        );
        assert_eq!(old["apiVersion"], "custom.metrics.k8s.io/v1beta1");
        assert_eq!(old["items"][0]["metricName"], "wva_desired_replicas");
        assert!(old["items"][0].get("metric").is_none());
        assert_eq!(old["items"][0]["value"], "3");

        // The wildcard lists every target in the namespace.
        let all = ok(
            s,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-a/deployments.apps/*/wva_desired_replicas",
        );
        let items = all["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["describedObject"]["name"], "llama-decode");
        assert_eq!(items[0]["value"], "2");

        // metricSelector filters by our metric labels.
        let picked = ok(
            s,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-a/deployments.apps/*/wva_desired_replicas?metricSelector=variant_name%3Dllama-a100",
        );
        assert_eq!(picked["items"].as_array().unwrap().len(), 1);
        let none = kubectl_raw(
            s,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-a/deployments.apps/*/wva_desired_replicas?metricSelector=variant_name%3Dnope",
        );
        assert!(none.unwrap_err().contains("NotFound"));

        // Pods metrics: the raw per-pod signals of ready pods, in milli units.
        let pods = ok(
            s,
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-b/pods/*/vllm_kv_cache_usage?labelSelector=target_name%3Dmistral-decode",
        );
        let mut values: Vec<(String, String)> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                assert_eq!(i["describedObject"]["kind"], "Pod");
                (
                    i["describedObject"]["name"].as_str().unwrap().to_owned(),
                    i["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        values.sort();
        let vs: Vec<&str> = values.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(vs, ["750m", "760m"], "{values:?}");
        let waiting = ok(
            s,
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/llm-b/pods/*/vllm_num_requests_waiting",
        );
        for i in waiting["items"].as_array().unwrap() {
            assert_eq!(i["value"], "2");
            assert_eq!(i["metricName"], "vllm_num_requests_waiting");
        }

        // Errors are Status objects that say what is wrong.
        for (path, words) in [
            (
                format!("{base}/mistral-decode/wva_nonsense"),
                "not served for deployments.apps",
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-b/statefulsets.apps/mistral-decode/wva_desired_ratio".to_owned(),
                "NotFound",
            ),
            (
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-b/services.v1/x/m".to_owned(),
                "not served for resource",
            ),
        ] {
            let e = kubectl_raw(s, &path).unwrap_err();
            assert!(e.contains(words), "{path}: {e}");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kubernetes_client_reads_the_object_metric() {
    let (s, _e) = start().await;
    let python = common::python();
    let script = format!("{ROOT}/tests/custom_metrics_client.py");
    let run = |name: &str| -> Value {
        let out = Command::new(&python)
            .args([
                script.as_str(),
                &s.base,
                s.ca_path().to_str().unwrap(),
                "llm-b",
                "deployments.apps",
                name,
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}): scripts/test creates the venv with `kubernetes`",
                    python.display()
                )
            });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let answer = tokio::task::block_in_place(|| run("mistral-decode/wva_desired_replicas"));
    let item = &answer["ok"]["items"][0];
    assert_eq!(
        item["describedObject"]["name"], "mistral-decode",
        "{answer}"
    );
    assert_eq!(item["metric"]["name"], "wva_desired_replicas");
    assert_eq!(item["value"], "3");
    let missing = tokio::task::block_in_place(|| run("no-such-target/wva_desired_replicas"));
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["body"]["kind"], "Status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_groups_choose_what_is_served() {
    let (s, _e) =
        common::one_variant_server(&["--metrics-backend", "scrape", "--api-groups", "custom"])
            .await;
    let (_, groups) = s.get("/apis").await;
    assert_eq!(groups["groups"].as_array().unwrap().len(), 1, "{groups}");
    assert_eq!(groups["groups"][0]["name"], "custom.metrics.k8s.io");
    let (status, body) = s.get("/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("--api-groups"));
    let (status, _) = s.get("/apis/custom.metrics.k8s.io/v1beta2").await;
    assert_eq!(status, 200);
}
