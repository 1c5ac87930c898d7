//! Where `--inventory kube` finds variants and their pods, beyond the
//! VariantAutoscaling-with-labelled-pods case: annotated KEDA ScaledObjects,
//! the Pod -> ReplicaSet -> Deployment owner chain through a real
//! ReplicaSet object, StatefulSets, `--watch-namespaces`, and `/readyz`
//! before the caches are synced. The in-process API server speaks the real
//! list/watch protocol; `serve` is the real binary.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::apiserver::{merge_apply, ApiServer};
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const MODEL: &str = "meta/llama-3.1-8b";
/// Long enough for any of these waits on a loaded machine; they end as
/// soon as the condition holds.
const WAIT: Duration = Duration::from_secs(20);

/// kv .20/.30/.25, one waiting each: the worked example that sheds one of
/// three replicas (desired 2), and .20/.30 that sheds one of two (desired 1).
async fn emulators(n: usize) -> Vec<Emulator> {
    let mut out = Vec::new();
    for kv in [0.20, 0.30, 0.25].into_iter().take(n) {
        out.push(Emulator::start(MODEL, kv, 1.0).await);
    }
    out
}

fn ready_status() -> Value {
    json!({"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]})
}

fn deployment(ns: &str, name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

fn va(ns: &str, name: &str, kind: &str, target: &str) -> Value {
    json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                 "modelID": MODEL, "minReplicas": 1, "maxReplicas": 10}
    })
}

/// A ready pod owned by `owner` (kind, name), without a variant label (the
/// template hash label is what a Deployment's ReplicaSet gives its pods).
fn owned_pod(ns: &str, name: &str, owner: (&str, &str), port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"pod-template-hash": "7f9c"},
                     "annotations": {"prometheus.io/port": port.to_string()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                                          "uid": format!("uid-{}", owner.1), "controller": true}]},
        "status": ready_status()
    })
}

/// `serve --inventory kube --metrics-backend scrape` with `extra` flags.
async fn serve(api: &ApiServer, extra: &[&str]) -> Server {
    Server::start_kube(api, &[&["--update-status", "false"], extra].concat(), &[]).await
}

async fn value_of(s: &Server, ns: &str, metric: &str, selector: &str) -> Option<String> {
    s.value(ns, metric, selector).await
}

#[tokio::test]
async fn an_annotated_scaled_object_is_a_variant_and_follows_changes() {
    let api = ApiServer::start().await;
    let e = emulators(2).await;
    api.apply(deployment("llm", "llama-decode", 2));
    for (i, em) in e.iter().enumerate() {
        api.apply(owned_pod(
            "llm",
            &format!("llama-decode-7f9c-{i}"),
            ("ReplicaSet", "llama-decode-7f9c"),
            em.port,
        ));
    }
    let scaled_object = |min: i64, max: i64| {
        json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "llama-so", "namespace": "llm",
                         "annotations": {"llm-d.ai/managed": "true", "llm-d.ai/model-id": MODEL,
                                         "llm-d.ai/variant-cost": "7.5"}},
            "spec": {"scaleTargetRef": {"name": "llama-decode"},
                     "minReplicaCount": min, "maxReplicaCount": max,
                     "triggers": [{"type": "external", "metadata": {"scalerAddress": "wva:8443"}}]}
        })
    };
    api.apply(scaled_object(1, 4));
    let s = serve(&api, &[]).await;
    let sel = "variant_name=llama-so";
    // kv .20/.30 sheds one of two: 1 (holding would say 2), so the
    // ScaledObject's pods were found and scraped.
    s.wait_value("llm", "wva_desired_replicas", sel, "1").await;
    let (_, body) = s
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=variant_name%3Dllama-so")
        .await;
    assert_eq!(
        body["items"][0]["metricLabels"]["target_name"],
        "llama-decode"
    );
    assert_eq!(body["items"][0]["metricLabels"]["model_id"], MODEL);

    // Its minReplicaCount is followed: 3 is above the 2 ready replicas.
    api.apply(scaled_object(3, 4));
    s.wait_value("llm", "wva_desired_replicas", sel, "3").await;

    // Deleted: the variant is gone.
    api.delete("ScaledObject", "llm", "llama-so");
    eventually(WAIT, "a 404 after the ScaledObject is deleted", || async {
        let (status, _) = s
            .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=variant_name%3Dllama-so")
            .await;
        (status == 404).then_some(())
    })
    .await;
}

#[tokio::test]
async fn pods_are_found_through_a_replica_set_and_a_stateful_set() {
    let api = ApiServer::start().await;
    let e = emulators(3).await;
    // A ReplicaSet whose name does not follow the Deployment's naming
    // scheme: only the ReplicaSet object's owner reference links its pods
    // to the Deployment.
    api.apply(deployment("llm", "llama-decode", 3));
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "hand-made-rs", "namespace": "llm", "uid": "uid-hand-made-rs",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode",
                                          "uid": "uid-llama-decode", "controller": true}]},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "llama-decode"}}},
        "status": {"replicas": 3, "readyReplicas": 3}
    }));
    for (i, em) in e.iter().enumerate() {
        api.apply(owned_pod(
            "llm",
            &format!("pod-{i}"),
            ("ReplicaSet", "hand-made-rs"),
            em.port,
        ));
    }
    api.apply(va("llm", "llama-rs", "Deployment", "llama-decode"));

    // A StatefulSet variant of another model in another namespace.
    let sts_emulators = {
        let mut v = Vec::new();
        for kv in [0.20, 0.30] {
            v.push(Emulator::start("sts-model", kv, 1.0).await);
        }
        v
    };
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "llama-sts", "namespace": "llm-sts", "uid": "uid-llama-sts"},
        "spec": {"replicas": 2, "serviceName": "llama-sts", "selector": {"matchLabels": {"app": "llama-sts"}},
                 "template": {"metadata": {"labels": {"app": "llama-sts"}}, "spec": {"containers": []}}},
        "status": {"replicas": 2, "readyReplicas": 2}
    }));
    for (i, em) in sts_emulators.iter().enumerate() {
        api.apply(owned_pod(
            "llm-sts",
            &format!("llama-sts-{i}"),
            ("StatefulSet", "llama-sts"),
            em.port,
        ));
    }
    let mut sts_va = va("llm-sts", "llama-sts-va", "StatefulSet", "llama-sts");
    sts_va["spec"]["modelID"] = json!("sts-model");
    api.apply(sts_va);

    let s = serve(&api, &[]).await;
    // The worked example: 3 ready at .20/.30/.25 -> 2. Without the
    // ReplicaSet link no pod would count and the model would hold at 3.
    s.wait_value("llm", "wva_desired_replicas", "variant_name=llama-rs", "2")
        .await;
    assert_eq!(
        value_of(&s, "llm", "wva_current_replicas", "variant_name=llama-rs")
            .await
            .as_deref(),
        Some("3")
    );
    // StatefulSet pods: .20/.30 sheds one of two -> 1 (holding says 2).
    s.wait_value(
        "llm-sts",
        "wva_desired_replicas",
        "variant_name=llama-sts-va",
        "1",
    )
    .await;
    let (_, body) = s
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-sts/wva_desired_replicas?labelSelector=variant_name%3Dllama-sts-va")
        .await;
    assert_eq!(
        body["items"][0]["metricLabels"]["target_kind"],
        "StatefulSet"
    );

    // The ReplicaSet is re-owned by another Deployment: its pods leave the
    // variant, which then has no metrics and holds at its 3 replicas.
    api.apply(deployment("llm", "other-decode", 3));
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "hand-made-rs", "namespace": "llm", "uid": "uid-hand-made-rs",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "other-decode",
                                          "uid": "uid-other-decode", "controller": true}]},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "llama-decode"}}},
        "status": {"replicas": 3, "readyReplicas": 3}
    }));
    s.wait_value("llm", "wva_desired_replicas", "variant_name=llama-rs", "3")
        .await;
    // Status updates are off (see `serve`): nothing to lead, so the server
    // never reads or writes a Lease (and needs no RBAC for one).
    let lease_calls: Vec<String> = api
        .calls()
        .into_iter()
        .filter(|c| c.2.contains("/leases"))
        .map(|c| format!("{} {}", c.1, c.2))
        .collect();
    assert!(lease_calls.is_empty(), "{lease_calls:?}");
}

#[tokio::test]
async fn watch_namespaces_limits_the_variants_served() {
    let api = ApiServer::start().await;
    let e = emulators(2).await;
    for ns in ["team-a", "team-b"] {
        api.apply(deployment(ns, "llama-decode", 1));
        api.apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "llama-decode-0", "namespace": ns, "labels": {"llm-d.ai/variant": "llama"},
                         "annotations": {"prometheus.io/port": e[usize::from(ns == "team-b")].port.to_string()}},
            "status": ready_status()
        }));
        api.apply(va(ns, "llama", "Deployment", "llama-decode"));
    }
    let s = serve(&api, &["--watch-namespaces", "team-a"]).await;
    s.wait_value("team-a", "wva_current_replicas", "variant_name=llama", "1")
        .await;
    let (status, body) = s
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/team-b/wva_current_replicas?labelSelector=variant_name%3Dllama")
        .await;
    assert_eq!(status, 404, "team-b is not watched: {body}");
    assert_eq!(body["kind"], "Status");
    // A variant created later in an unwatched namespace stays unserved,
    // one in the watched namespace is served.
    api.apply(deployment("team-b", "late", 1));
    api.apply(va("team-b", "late", "Deployment", "late"));
    api.apply(deployment("team-a", "late", 1));
    api.apply(va("team-a", "late", "Deployment", "late"));
    s.wait_value("team-a", "wva_current_replicas", "variant_name=late", "1")
        .await;
    let (status, _) = s
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/team-b/wva_current_replicas?labelSelector=variant_name%3Dlate")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readyz_waits_for_the_caches_and_discovery_does_not() {
    let api = ApiServer::start().await;
    api.hold_lists("pods");
    let s = Server::launch_kube(&api, &[], &[]);
    // Not ready while the pod list is held, and it says what it waits for
    // (first "inventory", then the resources not yet listed).
    let body = eventually(WAIT, "/readyz to name the pods it waits for", || async {
        let r = s
            .client
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.text().await.ok()?;
        assert_eq!(status, 503, "ready before the pods were listed: {body}");
        body.contains("pods").then_some(body)
    })
    .await;
    assert!(body.contains("not synced"), "{body}");
    // Discovery never depends on the caches (the aggregator probes it).
    let (status, body) = s.get("/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(status, 200, "{body}");
    // Still not ready several fetch cycles later: it waits for the lists,
    // not for a clock.
    s.wait_fetch_cycles(3).await;
    let (status, _) = s.get("/readyz").await;
    assert_eq!(status, 503);
    api.release_lists();
    s.wait_ready().await;
}

#[test]
fn server_side_apply_merges_status_conditions_by_type() {
    let mut stored = json!({
        "desiredOptimizedAlloc": {"numReplicas": 2, "accelerator": "H100"},
        "actualAlloc": {"numReplicas": 2},
        "conditions": [
            {"type": "TargetResolved", "status": "True"},
            {"type": "OtherController", "status": "True", "reason": "Theirs"}
        ]
    });
    let applied = json!({
        "desiredOptimizedAlloc": {"numReplicas": 3},
        "conditions": [
            {"type": "TargetResolved", "status": "False"},
            {"type": "MetricsAvailable", "status": "True"}
        ]
    });
    merge_apply(&mut stored, &applied);
    assert_eq!(
        stored,
        json!({
            "desiredOptimizedAlloc": {"numReplicas": 3, "accelerator": "H100"},
            "actualAlloc": {"numReplicas": 2},
            "conditions": [
                {"type": "TargetResolved", "status": "False"},
                {"type": "OtherController", "status": "True", "reason": "Theirs"},
                {"type": "MetricsAvailable", "status": "True"}
            ]
        })
    );
}
