//! Upstream WVA's namespace semantics in `--inventory kube`, against the
//! in-process API server (real list/watch) and a real `serve` process:
//! namespace-local thresholds ConfigMaps (opt-in label), the exclude
//! annotation, multi-controller isolation, and the cost default.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
const OWN_NS: &str = "wva-system";
const MODEL: &str = "meta/llama-3.1-8b";
const CONFIGMAP: &str = "wva-saturation-scaling-config";

fn va(name: &str, target: &str, labels: Value, cost: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "modelID": MODEL, "minReplicas": 1, "maxReplicas": 10}
    });
    if let Some(c) = cost {
        v["spec"]["variantCost"] = json!(c);
    }
    v
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

fn pod(variant: &str, deployment: &str, index: usize, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{deployment}-{index}"), "namespace": NS,
                     "labels": {"app": deployment, "llm-d.ai/variant": variant},
                     "annotations": {"prometheus.io/port": port.to_string()}},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn namespace(name: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels, "annotations": annotations}})
}

fn configmap(namespace: &str, default: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": CONFIGMAP, "namespace": namespace},
           "data": {"default": default}})
}

struct Cluster {
    api: ApiServer,
    server: Server,
    emulators: Vec<Emulator>,
}

/// Three replicas at kv .20/.30/.25, 1 waiting: desired 2 of 3 at the
/// default thresholds.
async fn cluster(env: &[(&str, &str)]) -> Cluster {
    let api = ApiServer::start().await;
    let mut emulators = Vec::new();
    for kv in [0.20, 0.30, 0.25] {
        emulators.push(Emulator::start(MODEL, kv, 1.0).await);
    }
    api.apply(namespace(OWN_NS, json!({}), json!({})));
    api.apply(namespace(NS, json!({}), json!({})));
    let server =
        Server::start_kube(&api, &["--namespace", OWN_NS, "--update-status=false"], env).await;
    Cluster {
        api,
        server,
        emulators,
    }
}

impl Cluster {
    fn create_variant(&self, name: &str, target: &str, labels: Value, cost: Option<&str>) {
        self.api.apply(deployment(target, 3));
        for (i, e) in self.emulators.iter().enumerate() {
            self.api.apply(pod(name, target, i, e.port));
        }
        self.api.apply(va(name, target, labels, cost));
    }

    async fn desired(&self, want: &str, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            self.server
                .value(NS, "wva_desired_replicas", "target_name=llama-decode")
                .await
                .filter(|v| v == want)
        })
        .await;
    }

    fn warning_events(&self, kind: &str, reason: &str) -> Vec<Value> {
        self.api
            .events()
            .into_iter()
            .filter(|e| {
                e["type"] == "Warning" && e["reason"] == reason && e["regarding"]["kind"] == kind
            })
            .collect()
    }
}

#[tokio::test]
async fn namespace_local_configmap_is_followed_through_create_change_and_delete() {
    let c = cluster(&[]).await;
    c.create_variant("llama-h100", "llama-decode", json!({}), None);
    c.desired("2", "desired 2 at the built-in thresholds").await;

    // Global thresholds under which the model scales up (.30 is saturated
    // at 0.26 and the others have too little spare).
    c.api.apply(configmap(
        OWN_NS,
        "kvCacheThreshold: 0.26\nkvSpareTrigger: 0.1\nenableLimiter: false\n",
    ));
    c.desired("4", "the global ConfigMap to scale up").await;

    // A ConfigMap in the model's namespace, which has not opted in: the
    // global one stays in force until the namespace is labelled.
    c.api.apply(configmap(
        NS,
        "kvCacheThreshold: 0.6\nkvSpareTrigger: 0.25\n",
    ));
    c.api.apply(namespace(
        NS,
        json!({"wva.llmd.ai/config-enabled": "true"}),
        json!({}),
    ));
    // Spare kv .35 >= .25 (no scale-up), .225 after removing one < .25: hold 3.
    c.desired(
        "3",
        "the namespace-local ConfigMap to replace the global one",
    )
    .await;

    // Changed: the local one at 0.8/0.1 sheds a replica.
    c.api.apply(configmap(
        NS,
        "kvCacheThreshold: 0.8\nkvSpareTrigger: 0.1\n",
    ));
    c.desired("2", "the changed namespace-local ConfigMap")
        .await;

    // A version with a typo is refused: the last good one stays, with a log
    // line, a Warning Event on the ConfigMap and a counter.
    c.api.apply(configmap(
        NS,
        "kvCacheThreshold: 0.26\nkvSpareTriger: 0.1\n",
    ));
    eventually(
        Duration::from_secs(10),
        "a Warning Event on the refused ConfigMap",
        || async {
            let e = c.warning_events("ConfigMap", "InvalidConfiguration");
            (!e.is_empty()).then_some(e)
        },
    )
    .await;
    let events = c.warning_events("ConfigMap", "InvalidConfiguration");
    assert_eq!(events[0]["regarding"]["namespace"], NS, "{events:?}");
    assert!(
        events[0]["note"]
            .as_str()
            .unwrap()
            .contains("kvSpareTriger"),
        "the Event names the key: {events:?}"
    );
    let metrics = c.server.text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "wva_config_rejected_total{{namespace=\"{NS}\",configmap=\"{CONFIGMAP}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(c
        .server
        .log()
        .contains("invalid saturation thresholds; keeping the previous ones"));
    assert_eq!(
        c.server
            .value(NS, "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2"),
        "the last good namespace-local thresholds stay"
    );

    // Deleted: the global ConfigMap applies again.
    c.api.delete("ConfigMap", NS, CONFIGMAP);
    c.desired("4", "the global ConfigMap after the local one is deleted")
        .await;

    // Excluded: the namespace is not managed at all.
    c.api.apply(namespace(
        NS,
        json!({"wva.llmd.ai/config-enabled": "true"}),
        json!({"wva.llmd.ai/exclude": "true"}),
    ));
    eventually(
        Duration::from_secs(10),
        "a 404 for the excluded namespace",
        || async {
            let (status, _) = c
                .server
                .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas")
                .await;
            (status == 404).then_some(())
        },
    )
    .await;
    // The global entry's enableLimiter is a key this server uses (the V2
    // limiter): nothing is reported as unused.
    let log = c.server.log();
    assert_eq!(
        log.matches("saturation config key not used by this server")
            .count(),
        0,
        "{log}"
    );
}

#[tokio::test]
async fn controller_instance_serves_only_its_variants_and_labels_items() {
    let c = cluster(&[("CONTROLLER_INSTANCE", "blue")]).await;
    c.create_variant(
        "llama-h100",
        "llama-decode",
        json!({"wva.llmd.ai/controller-instance": "blue"}),
        None,
    );
    c.api.apply(deployment("other-decode", 1));
    c.api.apply(va(
        "other",
        "other-decode",
        json!({"wva.llmd.ai/controller-instance": "green"}),
        None,
    ));
    c.api
        .apply(va("unlabelled", "unlabelled-decode", json!({}), None));
    c.desired("2", "the blue variant to be served").await;
    let (status, body) = c
        .server
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=controller_instance%3Dblue")
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["metricLabels"]["controller_instance"], "blue");
    assert_eq!(items[0]["metricLabels"]["variant_name"], "llama-h100");
    for target in ["other-decode", "unlabelled-decode"] {
        let (status, body) = c
            .server
            .get(&format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3D{target}"))
            .await;
        assert_eq!(
            status, 404,
            "{target} belongs to no or another instance: {body}"
        );
    }
}

#[tokio::test]
async fn an_unparsable_variant_cost_is_the_default_with_a_warning_event() {
    let c = cluster(&[]).await;
    c.create_variant("llama-h100", "llama-decode", json!({}), Some("cheap"));
    c.desired("2", "the variant with a bad cost to be served")
        .await;
    let events = eventually(
        Duration::from_secs(10),
        "a Warning Event on the VariantAutoscaling",
        || async {
            let e = c.warning_events("VariantAutoscaling", "InvalidField");
            (!e.is_empty()).then_some(e)
        },
    )
    .await;
    assert_eq!(events.len(), 1, "said once: {events:?}");
    assert_eq!(events[0]["regarding"]["name"], "llama-h100");
    assert!(
        events[0]["note"]
            .as_str()
            .unwrap()
            .contains("spec.variantCost \"cheap\""),
        "{events:?}"
    );
}
