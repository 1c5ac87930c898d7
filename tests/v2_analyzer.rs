//! Issue 14 end to end: `analyzerName: saturation` selects the token-based
//! analysis (V2) for a model. Four real `emulate` processes report
//! `vllm:cache_config_info` with 1000 blocks of 16 tokens; a real `serve`
//! scrapes them over loopback and answers over HTTPS. Served items and
//! `/metrics` say which analysis decided.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use common::{eventually, http_client, variant_yaml, Emulator, Server, VariantSpec};
use serde_json::json;
use std::time::Duration;

const NS: &str = "llm";
const MODEL: &str = "meta/llama-3.1-8b";
const SELECTOR: &str = "target_name=llama-decode";

async fn four_replicas(kv: f64) -> Vec<Emulator> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.push(
            Emulator::start_with(
                MODEL,
                kv,
                0.0,
                &["--num-gpu-blocks", "1000", "--block-size", "16"],
            )
            .await,
        );
    }
    out
}

async fn serve(emulators: &[Emulator], thresholds: &str) -> (Server, tempfile::TempDir) {
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let inventory = variant_yaml(
        &VariantSpec {
            namespace: NS,
            variant: "llama-a100",
            target: "llama-decode",
            model: MODEL,
            min: 1,
            max: 10,
            ready: 4,
        },
        &ports,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("thresholds.yaml");
    std::fs::write(&config, thresholds).unwrap();
    let config = config.display().to_string();
    let s = Server::with_inventory(
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
    (s, dir)
}

async fn analyzer_label(s: &Server) -> String {
    let (status, body) = s
        .get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector={}",
            common::urlencode(SELECTOR)
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"][0]["metricLabels"]["analyzer"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn worked_examples_v2_against_v1_end_to_end() {
    let emulators = four_replicas(0.98).await;
    // The emulator exposes the cache as vLLM does, and in /admin/state.
    let page = http_client()
        .get(format!("http://127.0.0.1:{}/metrics", emulators[0].port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("num_gpu_blocks=\"1000\"") && page.contains("block_size=\"16\""),
        "{page}"
    );
    let state: serde_json::Value = http_client()
        .get(format!(
            "http://127.0.0.1:{}/admin/state",
            emulators[0].port
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            state["num_gpu_blocks"].as_u64(),
            state["block_size"].as_u64()
        ),
        (Some(1000), Some(16))
    );

    let (v2, _keep) = serve(&emulators, "default: |\n  analyzerName: saturation\n").await;
    let (v1, _keep1) = serve(&emulators, "default: |\n  kvCacheThreshold: 0.80\n").await;
    // KV 0.98, queue 0: V2 wants 6 (+2 in one step), V1 one step to 5.
    v2.wait_value(NS, "wva_desired_replicas", SELECTOR, "6")
        .await;
    v1.wait_value(NS, "wva_desired_replicas", SELECTOR, "5")
        .await;
    assert_eq!(analyzer_label(&v2).await, "saturation-v2");
    assert_eq!(analyzer_label(&v1).await, "saturation-v1");
    // /metrics counts decisions per analyzer.
    for (s, analyzer) in [(&v2, "saturation-v2"), (&v1, "saturation-v1")] {
        let line = format!("wva_analyzer_decisions_total{{namespace=\"{NS}\",model_id=\"{MODEL}\",analyzer=\"{analyzer}\"}}");
        eventually(Duration::from_secs(20), "the analyzer counter", || async {
            let text = s.text("/metrics").await;
            text.lines()
                .find(|l| l.starts_with(&line))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|n| *n >= 1.0)
        })
        .await;
    }
}

#[tokio::test]
async fn worked_example_at_low_load_v2_scales_down_in_one_step() {
    // (The scrape backend decides on one-minute peaks: a load that falls
    // would take a minute to show, so this case starts low.)
    let emulators = four_replicas(0.10).await;
    let (v2, _keep) = serve(&emulators, "default: |\n  analyzerName: saturation\n").await;
    let (v1, _keep1) = serve(&emulators, "default: |\n  analyzerName: \"\"\n").await;
    // KV 0.10: V2 goes to 1 at once, V1 one step to 3.
    v2.wait_value(NS, "wva_desired_replicas", SELECTOR, "1")
        .await;
    v1.wait_value(NS, "wva_desired_replicas", SELECTOR, "3")
        .await;
    assert_eq!(analyzer_label(&v2).await, "saturation-v2");
    assert_eq!(analyzer_label(&v1).await, "saturation-v1");
}

#[tokio::test]
async fn v2_follows_the_kv_cache_each_replica_reports() {
    // Replicas changed to a smaller cache through /admin/state lower the
    // median capacity, and V2 adds more replicas for the same load.
    let emulators = four_replicas(0.5).await;
    let (v2, _keep) = serve(&emulators, "default: |\n  analyzerName: saturation\n").await;
    // 4 x 8000 tokens in use, supply 4 x 12800: required 37647 - 51200 < 0,
    // spare 51200 - 45714 = 5486 < 12800: steady at 4.
    v2.wait_value(NS, "wva_desired_replicas", SELECTOR, "4")
        .await;
    for e in &emulators[..3] {
        e.set_state(json!({"num_gpu_blocks": 500})).await;
    }
    // Three replicas of 8000 tokens with 4000 in use, one of 16000 with 8000:
    // median capacity (6400 + 6400) / 2 = 6400, supply 25600, demand 20000:
    // required 23529 - 25600 < 0; spare 25600 - 28571 < 0: still 4. With
    // KV 0.9 on all: demand 3 x 7200 + 14400 = 36000, required 42353 - 25600
    // = 16753 -> ceil(16753 / 6400) = 3 more (with the caches unchanged:
    // 67765 - 51200 = 16565 -> 2 more, 6).
    for e in &emulators {
        e.set_state(json!({"kv": 0.9})).await;
    }
    v2.wait_value(NS, "wva_desired_replicas", SELECTOR, "7")
        .await;
    let (status, _) = v2.get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn demo_runs_with_v2() {
    let port = common::free_port();
    let _demo = common::Proc::spawn(
        "demo-v2",
        &[
            "demo",
            "--port",
            &port.to_string(),
            "--phase",
            "5s",
            "--analyzer",
            "v2",
        ],
    );
    let url = format!(
        "https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-demo/wva_desired_replicas?labelSelector=target_name%3Dllama-8b-decode"
    );
    // curl as the client (the demo's certificate is self-signed, hence -k).
    let analyzer = eventually(Duration::from_secs(20), "a V2 answer from the demo", || {
        let url = url.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["-sk", "--max-time", "2", &url])
                    .output()
            })
            .await
            .ok()?
            .ok()?;
            let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            body["items"][0]["metricLabels"]["analyzer"]
                .as_str()
                .map(str::to_owned)
        }
    })
    .await;
    assert_eq!(analyzer, "saturation-v2");
}
