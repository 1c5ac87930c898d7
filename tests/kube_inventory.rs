//! `--inventory kube` against an in-process API server that speaks the
//! real list/watch protocol, with the real kube client in a real `serve`
//! process pointed at it by a kubeconfig.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
const MODEL: &str = "meta/llama-3.1-8b";
/// Bound of every wait: generous for a loaded machine, and each wait ends
/// as soon as its condition holds. How quickly changes show is measured
/// in docs/benchmarks.md, not asserted here.
const WAIT: Duration = Duration::from_secs(20);

fn va(name: &str, target: &str, min: u32, max: u32) -> Value {
    json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "modelID": MODEL, "minReplicas": min, "maxReplicas": max}
    })
}

fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

/// A ready pod of `deployment` owned through its ReplicaSet (no variant label).
fn pod(deployment: &str, index: usize, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{deployment}-7f9c-{index}"), "namespace": NS,
                     "labels": {"app": deployment, "pod-template-hash": "7f9c"},
                     "annotations": {"prometheus.io/port": port.to_string()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deployment}-7f9c"),
                                          "uid": "rs-uid", "controller": true}]},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

struct Cluster {
    api: ApiServer,
    server: Server,
    emulators: Vec<Emulator>,
}

/// Three replicas at kv .20/.30/.25 (desired 2 of 3) and a fourth
/// emulator, not yet in the cluster, at kv .79 with 4 waiting.
async fn cluster() -> Cluster {
    let api = ApiServer::start().await;
    let mut emulators = Vec::new();
    for (kv, q) in [(0.20, 1.0), (0.30, 1.0), (0.25, 1.0), (0.79, 4.0)] {
        emulators.push(Emulator::start(MODEL, kv, q).await);
    }
    // An empty inventory must still become ready (every reflector synced).
    let server = Server::start_kube(
        &api,
        &[
            "--metrics-fresh-within",
            "1s",
            "--metrics-stale-after",
            "3s",
            "--status-min-interval",
            "1s",
        ],
        &[],
    )
    .await;
    Cluster {
        api,
        server,
        emulators,
    }
}

impl Cluster {
    fn create_variant(&self, replicas: usize) {
        self.api.apply(deployment("llama-decode", replicas as u32));
        for (i, e) in self.emulators.iter().take(replicas).enumerate() {
            self.api.apply(pod("llama-decode", i, e.port));
        }
        self.api.apply(va("llama-h100", "llama-decode", 1, 10));
    }

    async fn value(&self, metric: &str) -> Option<String> {
        self.server
            .value(NS, metric, "target_name=llama-decode")
            .await
    }
}

#[tokio::test]
async fn variants_follow_the_cluster() {
    let c = cluster().await;
    let (status, body) = c
        .server
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio")
        .await;
    assert_eq!(status, 404, "nothing exists yet: {body}");

    let created = Instant::now();
    c.create_variant(3);
    eventually(WAIT, "the new variant to be served", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "2")
    })
    .await;
    println!("served {:?} after creation", created.elapsed());
    assert_eq!(c.value("wva_current_replicas").await.as_deref(), Some("3"));
    let (_, body) = c
        .server
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio")
        .await;
    assert_eq!(
        body["items"][0]["metricLabels"]["variant_name"],
        "llama-h100"
    );
    assert_eq!(body["items"][0]["metricLabels"]["accelerator_type"], "H100");

    // Scaling the Deployment (and its fourth pod arriving) changes current replicas.
    c.api.apply(pod("llama-decode", 3, c.emulators[3].port));
    c.api.apply(deployment("llama-decode", 4));
    eventually(WAIT, "current replicas 4", || async {
        c.value("wva_current_replicas").await.filter(|v| v == "4")
    })
    .await;
    // With the busy fourth replica the queue spare is too thin to shed one: hold at 4.
    eventually(WAIT, "desired replicas 4", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "4")
    })
    .await;

    // The pod is deleted (its emulator still serves its series): it stops
    // counting at once, and the model can shed a replica again.
    c.api.delete("Pod", NS, "llama-decode-7f9c-3");
    c.api.apply(deployment("llama-decode", 3));
    let deleted = Instant::now();
    eventually(WAIT, "the deleted pod to stop counting", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "2")
    })
    .await;
    println!("pod deletion reflected after {:?}", deleted.elapsed());

    let deleted = Instant::now();
    c.api.delete("VariantAutoscaling", NS, "llama-h100");
    eventually(WAIT, "a 404 after the VariantAutoscaling is deleted", || async {
        let (status, _) = c.server.get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_ratio?labelSelector=target_name%3Dllama-decode").await;
        (status == 404).then_some(())
    })
    .await;
    println!("404 {:?} after deletion", deleted.elapsed());
}

#[tokio::test]
async fn an_annotated_hpa_is_a_variant() {
    let c = cluster().await;
    c.api.apply(deployment("llama-decode", 2));
    for (i, e) in c.emulators.iter().take(2).enumerate() {
        c.api.apply(pod("llama-decode", i, e.port));
    }
    let hpa = |min: u32, max: u32| {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "llama-hpa", "namespace": NS,
                         "annotations": {"llm-d.ai/managed": "true", "llm-d.ai/model-id": MODEL}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
                     "minReplicas": min, "maxReplicas": max}
        })
    };
    let desired = || async {
        let (status, body) = c.server.get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=variant_name%3Dllama-hpa").await;
        (status == 200)
            .then(|| body["items"][0]["value"].as_str().map(str::to_owned))
            .flatten()
    };
    // Two ready replicas at kv .20/.30 shed one: 1. Holding (no metrics
    // yet) would answer 2, so this waits for real scrapes of the HPA's pods.
    c.api.apply(hpa(1, 4));
    eventually(WAIT, "the HPA's variant to shed a replica", || async {
        desired().await.filter(|v| v == "1")
    })
    .await;
    let (_, body) = c.server.get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=variant_name%3Dllama-hpa").await;
    assert_eq!(
        body["items"][0]["metricLabels"]["variant_name"],
        "llama-hpa"
    );
    // The HPA's minimum 3 is above both the analysis (1) and the ready
    // replicas (2): only clamping to the HPA's min gives 3.
    c.api.apply(hpa(3, 4));
    eventually(WAIT, "clamped up to the HPA's minReplicas", || async {
        desired().await.filter(|v| v == "3")
    })
    .await;
    // Saturated replicas would add one (3), holding says 2: the HPA's
    // maximum 1 is the only reason for 1.
    for e in &c.emulators[..2] {
        e.set_state(json!({"kv": 0.95})).await;
    }
    c.api.apply(hpa(1, 1));
    eventually(WAIT, "clamped down to the HPA's maxReplicas", || async {
        desired().await.filter(|v| v == "1")
    })
    .await;
    // Lifting the maximum shows the scale-up the clamp was holding back.
    c.api.apply(hpa(1, 4));
    eventually(WAIT, "the saturated model to scale up", || async {
        desired().await.filter(|v| v == "3")
    })
    .await;
}

#[tokio::test]
async fn thresholds_configmap_applies_live_and_bad_ones_are_refused() {
    let c = cluster().await;
    c.create_variant(3);
    eventually(WAIT, "desired 2 at default thresholds", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "2")
    })
    .await;
    // kvCacheThreshold 0.26: replicas at .30 and .25... .30 is saturated and the
    // spare of the others is thin: scale up to 4.
    let cm = |default: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
               "data": {"default": default}})
    };
    c.api
        .apply(cm("kvCacheThreshold: 0.26\nkvSpareTrigger: 0.1\n"));
    eventually(WAIT, "the new thresholds to scale up", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "4")
    })
    .await;
    c.api.apply(cm("kvCacheThreshold: 5\n"));
    eventually(
        WAIT,
        "the invalid ConfigMap to be refused in the log",
        || async {
            c.server
                .log()
                .contains("invalid saturation thresholds; keeping the previous ones")
                .then_some(())
        },
    )
    .await;
    assert!(
        c.server.log().contains("kvCacheThreshold"),
        "the log says why"
    );
    assert_eq!(
        c.value("wva_desired_replicas").await.as_deref(),
        Some("4"),
        "old thresholds kept"
    );
}

#[tokio::test]
async fn cut_watches_and_410_gone_are_recovered_without_wrong_answers() {
    let c = cluster().await;
    c.create_variant(3);
    eventually(WAIT, "desired 2", || async {
        c.value("wva_desired_replicas").await.filter(|v| v == "2")
    })
    .await;
    for round in 0..2 {
        let (lists_before, _) = c.api.counters();
        if round == 0 {
            c.api.cut_watches();
        } else {
            c.api.expire_resource_versions();
            c.api.cut_watches();
        }
        // Meanwhile every answer is the right one.
        for _ in 0..10 {
            assert_eq!(
                c.value("wva_desired_replicas").await.as_deref(),
                Some("2"),
                "round {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A change made after the cut is seen: the watches were re-established.
        let name = format!("after-cut-{round}");
        c.api.apply(deployment(&name, 1));
        c.api.apply(va(&name, &name, 1, 10));
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_current_replicas?labelSelector=variant_name%3D{name}"
        );
        eventually(WAIT, "a variant created after the cut", || async {
            let (status, body) = c.server.get(&path).await;
            (status == 200 && body["items"][0]["value"] == "1").then_some(())
        })
        .await;
        let (lists, gone) = c.api.counters();
        if round == 1 {
            assert!(gone > 0, "the watches were answered 410 Gone");
            assert!(lists > lists_before, "and the client listed again");
        }
    }
}

#[tokio::test]
async fn status_receives_the_decision_once_per_change() {
    let c = cluster().await;
    // The VariantAutoscaling arrives with a status field another controller
    // owns: server-side apply of ours must leave it in place.
    c.api.apply(deployment("llama-decode", 3));
    for (i, e) in c.emulators.iter().take(3).enumerate() {
        c.api.apply(pod("llama-decode", i, e.port));
    }
    let mut with_status = va("llama-h100", "llama-decode", 1, 10);
    with_status["status"] = json!({"actualAlloc": {"numReplicas": 3, "accelerator": "H100"}});
    c.api.apply(with_status);
    // The first write may predate the first scrape (MetricsMissing); wait for the decision.
    let patch = eventually(WAIT, "a status write with the decision", || async {
        c.api
            .status_patches()
            .into_iter()
            .find(|(_, b)| b["status"]["conditions"][1]["reason"] == "MetricsFound")
    })
    .await;
    let (uri, body) = patch;
    assert!(
        uri.contains("/apis/llmd.ai/v1alpha1/namespaces/llm/variantautoscalings/llama-h100/status"),
        "{uri}"
    );
    assert!(
        uri.contains("fieldManager=wva-metrics-server") && uri.contains("force=true"),
        "server-side apply: {uri}"
    );
    let status = &body["status"];
    assert_eq!(status["desiredOptimizedAlloc"]["numReplicas"], 2, "{body}");
    assert_eq!(status["desiredOptimizedAlloc"]["accelerator"], "H100");
    assert!(status["desiredOptimizedAlloc"]["lastRunTime"].is_string());
    let conditions: Vec<(String, String, String)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        [
            ("TargetResolved".into(), "True".into(), "TargetFound".into()),
            (
                "MetricsAvailable".into(),
                "True".into(),
                "MetricsFound".into()
            ),
            (
                "OptimizationReady".into(),
                "True".into(),
                "Optimized".into()
            ),
        ]
    );
    // Nothing changes for several fetch cycles: no further write. (A
    // write before the first scrape, MetricsMissing, may precede the one
    // found above; what counts is that nothing follows it.)
    let writes = c.api.status_patches().len();
    c.server.wait_fetch_cycles(4).await;
    let after = c.api.status_patches();
    assert_eq!(
        after.len(),
        writes,
        "no write when nothing changed: {after:?}"
    );
    assert_eq!(
        after
            .last()
            .map(|(_, b)| b["status"]["conditions"][1]["reason"].clone()),
        Some(json!("MetricsFound")),
        "the decision is the last write"
    );
    // Server-side apply keeps what other field managers wrote in status.
    let stored = c
        .api
        .object("variantautoscalings", NS, "llama-h100")
        .expect("the VariantAutoscaling");
    assert_eq!(stored["status"]["desiredOptimizedAlloc"]["numReplicas"], 2);
    assert_eq!(
        stored["status"]["actualAlloc"]["numReplicas"], 3,
        "another manager's status field survives our apply: {stored}"
    );
    // The Event is a call of its own, made after the status write
    // returned: wait for it rather than expect it with the write.
    eventually(WAIT, "a ScalingDecision Event", || async {
        c.api
            .events()
            .iter()
            .any(|e| e["reason"] == "ScalingDecision")
            .then_some(())
    })
    .await;

    // Metrics go stale: the conditions change, one write and one Warning event.
    drop(c.emulators);
    eventually(WAIT, "a MetricsStale condition", || async {
        c.api
            .status_patches()
            .iter()
            .any(|(_, b)| b["status"]["conditions"][1]["reason"] == "MetricsStale")
            .then_some(())
    })
    .await;
    // The Warning follows the write that carries the condition (it failed
    // under load when read right after the write: only ScalingDecision was
    // there yet). It is the one about staleness, not a MetricsMissing
    // Warning from before the first scrape, which also delays it: one
    // Event per object and reason per minute (EVENT_INTERVAL).
    eventually(
        WAIT + Duration::from_secs(60),
        "a MetricsUnavailable Warning saying MetricsStale",
        || async {
            c.api
                .events()
                .iter()
                .any(|e| {
                    e["reason"] == "MetricsUnavailable"
                        && e["type"] == "Warning"
                        && e["note"]
                            .as_str()
                            .is_some_and(|n| n.starts_with("MetricsStale"))
                })
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_the_thresholds_configmap_restores_the_built_in_thresholds() {
    let c = cluster().await;
    c.create_variant(3);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "wva-saturation-scaling-config", "namespace": "wva-system"},
           "data": {"default": "kvCacheThreshold: 0.26\nkvSpareTrigger: 0.1\n"}});
    c.api.apply(cm);
    eventually(
        Duration::from_secs(10),
        "the ConfigMap's thresholds to scale up",
        || async { c.value("wva_desired_replicas").await.filter(|v| v == "4") },
    )
    .await;
    c.api
        .delete("ConfigMap", "wva-system", "wva-saturation-scaling-config");
    eventually(
        Duration::from_secs(10),
        "the built-in thresholds (desired 2) after the deletion",
        || async { c.value("wva_desired_replicas").await.filter(|v| v == "2") },
    )
    .await;
    assert!(
        c.server
            .log()
            .matches("saturation thresholds updated")
            .count()
            >= 2,
        "the log says why the thresholds changed"
    );
}
