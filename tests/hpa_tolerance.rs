//! Issue 19 end to end: at 12 ready replicas a one-replica step is inside
//! the HPA's tolerance band, so what we serve must be a move the HPA acts
//! on. Twelve `emulate` processes, a real `serve` scraping them over
//! loopback, real HTTPS; the HPA's formula is applied to the values exactly
//! as served (quantity strings, milli rounding) by the same pure module the
//! decision path uses.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use common::apiserver::ApiServer;
use common::{eventually, variant_yaml, Emulator, Server, VariantSpec};
use serde_json::json;
use std::time::Duration;
use wva_metrics_server::hpa::{external_metric_proposal, ExternalTarget, ScaleState, Tolerances};
use wva_metrics_server::k8s::quantity::parse_milli;

const NS: &str = "llm";
const TARGET: &str = "llama-70b-decode";
const SELECTOR: &str = "target_name=llama-70b-decode";
const READY: u32 = 12;

async fn twelve_replicas(kv: f64) -> Vec<Emulator> {
    let mut emulators = Vec::new();
    for _ in 0..READY {
        emulators.push(Emulator::start("meta/llama-3.1-70b", kv, 0.0).await);
    }
    emulators
}

fn inventory(emulators: &[Emulator], max: u32) -> String {
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    variant_yaml(
        &VariantSpec {
            namespace: NS,
            variant: "llama-70b-h100",
            target: TARGET,
            model: "meta/llama-3.1-70b",
            min: 1,
            max,
            ready: READY,
        },
        &ports,
    )
}

async fn serve(emulators: &[Emulator], max: u32, extra: &[&str]) -> Server {
    let mut args = vec!["--metrics-backend", "scrape", "--scrape-interval", "500ms"];
    args.extend_from_slice(extra);
    Server::with_inventory(&inventory(emulators, max), &args).await
}

/// What an HPA with the default tolerance, at 12 settled replicas, sets
/// from the value served under `target`.
fn hpa_replicas(served: &str, target: ExternalTarget) -> u32 {
    let milli = parse_milli(served).expect("a valid quantity");
    external_metric_proposal(
        &[milli],
        target,
        &ScaleState::settled(READY),
        &Tolerances::default(),
    )
    .expect("target 1 is valid")
    .replicas
}

const VALUE_1: ExternalTarget = ExternalTarget::Value { milli: 1000 };
const AVERAGE_VALUE_1: ExternalTarget = ExternalTarget::AverageValue { milli: 1000 };

/// Both served values for the selector, once the decision is `want`.
async fn served(s: &Server, want: &str) -> (String, String) {
    s.wait_value(NS, "wva_desired_replicas", SELECTOR, want)
        .await;
    let ratio = s
        .value(NS, "wva_desired_ratio", SELECTOR)
        .await
        .expect("one ratio item");
    let replicas = s
        .value(NS, "wva_desired_replicas", SELECTOR)
        .await
        .expect("one replicas item");
    (ratio, replicas)
}

#[tokio::test]
async fn twelve_replicas_scale_both_ways_through_the_hpa_formula() {
    // Saturated at KV 0.85: the analysis wants one more, 13/12 would be
    // swallowed (1083m, 13000m), so we serve 14.
    {
        let emulators = twelve_replicas(0.85).await;
        let s = serve(&emulators, 20, &[]).await;
        let (ratio, replicas) = served(&s, "14").await;
        assert_eq!((ratio.as_str(), replicas.as_str()), ("1166m", "14"));
        assert_eq!(hpa_replicas(&ratio, VALUE_1), 14);
        assert_eq!(hpa_replicas(&replicas, AVERAGE_VALUE_1), 14);
        assert!(hpa_replicas(&ratio, VALUE_1) > READY);
    }
    // Idle at KV 0.10: 11/12 would be swallowed (916m, 11000m); 10 is
    // outside the band and safe (spare' = 0.8 - 0.1 x 12/10 = 0.68). Fresh
    // replicas: the analysis reads one-minute peaks, so lowering the load
    // of running ones would take a minute to show.
    let emulators = twelve_replicas(0.10).await;
    let s = serve(&emulators, 20, &[]).await;
    let (ratio, replicas) = served(&s, "10").await;
    assert_eq!((ratio.as_str(), replicas.as_str()), ("833m", "10"));
    assert_eq!(hpa_replicas(&ratio, VALUE_1), 10);
    assert_eq!(hpa_replicas(&replicas, AVERAGE_VALUE_1), 10);
    assert!(hpa_replicas(&replicas, AVERAGE_VALUE_1) < READY);
}

#[tokio::test]
async fn a_move_the_hpa_would_ignore_is_held_and_counted() {
    let emulators = twelve_replicas(0.85).await;
    // maxReplicas 13: 13 is inside the band and 14 is above the maximum.
    let held = serve(&emulators, 13, &[]).await;
    // The cluster's HPA runs with a 0.05 tolerance: 13/12 = 1.083 acts.
    let narrow = serve(&emulators, 13, &["--hpa-tolerance", "0.05"]).await;

    narrow
        .wait_value(NS, "wva_desired_replicas", SELECTOR, "13")
        .await;
    let ratio = narrow
        .value(NS, "wva_desired_ratio", SELECTOR)
        .await
        .expect("one item");
    assert_eq!(ratio, "1083m");

    // The held server keeps serving 12 (ratio 1) and counts the hold.
    eventually(
        Duration::from_secs(20),
        "a tolerance hold in /metrics",
        || async {
            let text = held.text("/metrics").await;
            text.lines()
                .any(|l| {
                    l.starts_with("wva_tolerance_holds_total{")
                        && l.contains("direction=\"up\"")
                        && l.contains("reason=\"tolerance_hold_up\"")
                        && l.contains("variant_name=\"llama-70b-h100\"")
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        held.value(NS, "wva_desired_replicas", SELECTOR)
            .await
            .as_deref(),
        Some("12")
    );
    assert_eq!(
        held.value(NS, "wva_desired_ratio", SELECTOR)
            .await
            .as_deref(),
        Some("1")
    );
}

#[test]
fn a_bad_tolerance_is_refused_at_start() {
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--hpa-tolerance=-0.1"])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--hpa-tolerance") && stderr.contains("must be a finite number >= 0"),
        "{stderr}"
    );
}

/// The cluster path: a VariantAutoscaling whose move is held gets a status
/// reason, and an HPA's `behavior.scaleUp.tolerance` seen through the watch
/// narrows the band so that the move is served.
#[tokio::test]
async fn a_held_variant_says_why_and_an_hpa_tolerance_from_the_cluster_applies() {
    let api = ApiServer::start().await;
    let emulators = twelve_replicas(0.85).await;
    let server = Server::start_kube(&api, &["--status-min-interval", "1s"], &[]).await;
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": TARGET, "namespace": NS},
        "spec": {"replicas": READY, "selector": {"matchLabels": {"app": TARGET}},
                 "template": {"metadata": {"labels": {"app": TARGET}}, "spec": {"containers": []}}},
        "status": {"replicas": READY, "readyReplicas": READY}
    }));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{TARGET}-{i}"), "namespace": NS,
                         "labels": {"app": TARGET, "llm-d.ai/variant": "llama-70b-h100"},
                         "annotations": {"prometheus.io/port": e.port.to_string()}},
            "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
    }
    api.apply(json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        // With its accelerator: a status without one gets no allocation (as upstream).
        "metadata": {"name": "llama-70b-h100", "namespace": NS,
                     "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
                 "modelID": "meta/llama-3.1-70b", "minReplicas": 1, "maxReplicas": 13}
    }));

    // 13 is inside the default band and 14 above the maximum: held, and said so.
    let (_, body) = eventually(
        Duration::from_secs(20),
        "a status write with the hold",
        || async {
            api.status_patches()
                .into_iter()
                .find(|(_, b)| b["status"]["conditions"][2]["reason"] == "HeldByHPATolerance")
        },
    )
    .await;
    let status = &body["status"];
    assert_eq!(status["desiredOptimizedAlloc"]["numReplicas"], 12, "{body}");
    let message = status["conditions"][2]["message"].as_str().unwrap();
    assert!(
        message.contains("maxReplicas 13; holding at 12"),
        "{message}"
    );
    assert_eq!(
        server
            .value(NS, "wva_desired_replicas", SELECTOR)
            .await
            .as_deref(),
        Some("12")
    );

    // The HPA scaling the Deployment narrows its scale-up band to 0.05:
    // 13/12 = 1.083 is outside it, so the one-replica step is served.
    api.apply(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": TARGET, "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": TARGET},
                 "minReplicas": 1, "maxReplicas": 13,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "wva_desired_ratio", "selector": {"matchLabels": {"target_name": TARGET}}},
                     "target": {"type": "Value", "value": "1"}}}],
                 "behavior": {"scaleUp": {"tolerance": "0.05"}}}
    }));
    server
        .wait_value(NS, "wva_desired_replicas", SELECTOR, "13")
        .await;
    assert_eq!(
        server
            .value(NS, "wva_desired_ratio", SELECTOR)
            .await
            .as_deref(),
        Some("1083m")
    );
}
