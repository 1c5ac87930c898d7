//! Standalone mode follows its files: the inventory file and the
//! `--saturation-config` file are reloaded when they change, and a version
//! that does not load keeps the last good one and says why in the log.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::{eventually, two_model_inventory, variant_yaml, Emulator, Server, VariantSpec};

const WAIT: Duration = Duration::from_secs(20);

/// The llama replicas of the worked example (.20/.30/.25: desired 2 of 3)
/// and the mistral ones (.75/.76: desired 3 of 2).
async fn five_replicas() -> Vec<Emulator> {
    let mut e = Vec::new();
    for (kv, q) in [(0.20, 1.0), (0.30, 1.0), (0.25, 1.0)] {
        e.push(Emulator::start("meta/llama-3.1-8b", kv, q).await);
    }
    for (kv, q) in [(0.75, 2.0), (0.76, 2.0)] {
        e.push(Emulator::start("mistral-7b", kv, q).await);
    }
    e
}

fn llama_only(ports: &[u16]) -> String {
    variant_yaml(
        &VariantSpec {
            namespace: "llm-a",
            variant: "llama-a100",
            target: "llama-decode",
            model: "meta/llama-3.1-8b",
            min: 1,
            max: 10,
            ready: 3,
        },
        &ports[..3],
    )
}

/// `serve --inventory file:` with the scrape backend, logging to serve.log;
/// returns the server and the inventory file's path.
async fn serve(inventory: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, inventory).unwrap();
    let inv = format!("file:{}", path.display());
    let mut args = vec![
        "--inventory",
        inv.as_str(),
        "--metrics-backend",
        "scrape",
        "--scrape-interval",
        "500ms",
    ];
    args.extend_from_slice(extra);
    (Server::start_with(dir, &args, &[], true).await, path)
}

async fn wait_log(s: &Server, line: &str) {
    eventually(WAIT, &format!("{line:?} in the log"), || async {
        s.log().contains(line).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_inventory_file_is_reloaded_and_a_broken_version_keeps_the_last_good_one() {
    let e = five_replicas().await;
    let ports: Vec<u16> = e.iter().map(|e| e.port).collect();
    let (s, path) = serve(&llama_only(&ports), &[]).await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;
    let (status, _) = s
        .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_replicas?labelSelector=target_name%3Dmistral-decode")
        .await;
    assert_eq!(status, 404, "mistral is not in the first version");

    // A variant is added: served without a restart.
    std::fs::write(&path, two_model_inventory(&ports)).unwrap();
    s.wait_mistral_at_3().await;
    eventually(WAIT, "mistral's gauge on /metrics", || async {
        s.text("/metrics")
            .await
            .contains("wva_desired_replicas{variant_name=\"mistral-l40s\"")
            .then_some(())
    })
    .await;

    // A broken version (not YAML objects) keeps both variants.
    std::fs::write(&path, "kind: [unclosed\n").unwrap();
    wait_log(
        &s,
        "inventory reload failed; keeping the previous inventory",
    )
    .await;
    assert_eq!(
        s.value(
            "llm-b",
            "wva_desired_replicas",
            "target_name=mistral-decode"
        )
        .await
        .as_deref(),
        Some("3")
    );
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2")
    );

    // A variant is removed: 404 for it, the other one unaffected.
    std::fs::write(&path, llama_only(&ports)).unwrap();
    eventually(WAIT, "mistral to be gone", || async {
        let (status, _) = s
            .get("/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_replicas?labelSelector=target_name%3Dmistral-decode")
            .await;
        (status == 404).then_some(())
    })
    .await;
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2")
    );
    // Its gauges leave `/metrics` with it; llama's stay.
    eventually(WAIT, "mistral's gauges to leave /metrics", || async {
        let page = s.text("/metrics").await;
        let series = |variant: &str| {
            page.lines()
                .filter(|l| l.starts_with("wva_desired_replicas{"))
                .filter(|l| l.contains(&format!("variant_name=\"{variant}\"")))
                .count()
        };
        (series("mistral-l40s") == 0 && series("llama-a100") == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_saturation_config_file_is_reloaded_and_a_bad_version_is_refused() {
    let e = five_replicas().await;
    let ports: Vec<u16> = e.iter().map(|e| e.port).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("saturation.yaml");
    std::fs::write(&config, "default: |\n  kvCacheThreshold: 0.80\n").unwrap();
    let config_arg = config.display().to_string();
    let (s, _inventory) = serve(&llama_only(&ports), &["--saturation-config", &config_arg]).await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;

    // kvCacheThreshold 0.26: the .30 replica is saturated and the others'
    // spare (.01/.06) is below the trigger: scale up, 3 -> 4.
    std::fs::write(
        &config,
        "default: |\n  kvCacheThreshold: 0.26\n  kvSpareTrigger: 0.1\n",
    )
    .unwrap();
    wait_log(&s, "saturation config reloaded").await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "4",
    )
    .await;

    // An invalid threshold: refused, named in the log, the last good
    // thresholds stay (defaults would give 2 again).
    std::fs::write(&config, "default: |\n  kvCacheThreshold: 5\n").unwrap();
    wait_log(
        &s,
        "saturation config reload failed; keeping the previous thresholds",
    )
    .await;
    assert!(s.log().contains("kvCacheThreshold"), "the log says why");
    s.wait_fetch_cycles(3).await;
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("4"),
        "the previous thresholds are kept"
    );
}
