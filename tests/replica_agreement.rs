//! Measurement (ignored by default; run with `--ignored --nocapture`):
//! two `serve` replicas against one real Prometheus, polled side by side
//! every 100 ms while the load steps every 6 s (two up-and-down cycles). Prints how often and
//! for how long their answers disagree (docs/benchmarks.md, "Two replicas").

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::prometheus::{PrometheusServer, Target};
use common::{two_model_inventory, Emulator, Server};

const LLAMA: &str = "meta/llama-3.1-8b";

#[tokio::test]
#[ignore = "measurement, ~3 min"]
async fn two_replicas_disagree_only_briefly_after_a_change() {
    let mut emulators = Vec::new();
    let mut targets = Vec::new();
    for (i, (model, ns, dep, kv)) in [
        (LLAMA, "llm-a", "llama-decode", 0.20),
        (LLAMA, "llm-a", "llama-decode", 0.30),
        (LLAMA, "llm-a", "llama-decode", 0.25),
        ("mistral-7b", "llm-b", "mistral-decode", 0.75),
        ("mistral-7b", "llm-b", "mistral-decode", 0.76),
    ]
    .into_iter()
    .enumerate()
    {
        let e = Emulator::start(model, kv, 1.0).await;
        targets.push(Target {
            port: e.port,
            namespace: ns.into(),
            pod: format!("{dep}-{}", if i < 3 { i } else { i - 3 }),
        });
        emulators.push(e);
    }
    let prom = PrometheusServer::start(&targets).await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let inventory = two_model_inventory(&ports);
    let args = [
        "--metrics-backend",
        "prometheus",
        "--prometheus-url",
        &prom.url(),
        "--metrics-fetch-interval",
        "1s",
    ];
    let a = Server::with_inventory(&inventory, &args).await;
    let b = Server::with_inventory(&inventory, &args).await;
    // Load steps of 6 s: up (seen at once), then low long enough for the
    // one-minute peak to pass (the scale-down shows about 60 s later).
    let cycle = [
        0.60, 0.78, 0.20, 0.20, 0.20, 0.20, 0.20, 0.20, 0.20, 0.20, 0.20, 0.20,
    ];
    let steps: Vec<f64> = cycle.iter().chain(cycle.iter()).copied().collect();
    let selector = "target_name=llama-decode";
    let mut polls = 0u32;
    let mut disagreeing = 0u32;
    let mut windows: Vec<Duration> = Vec::new();
    let mut open: Option<Instant> = None;
    let mut changes = 0u32;
    let mut last_a: Option<String> = None;
    for kv in steps {
        for e in &emulators[..3] {
            e.set_state(serde_json::json!({"kv": kv, "waiting": 1.0}))
                .await;
        }
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let (va, vb) = tokio::join!(
                a.value("llm-a", "wva_desired_ratio", selector),
                b.value("llm-a", "wva_desired_ratio", selector)
            );
            polls += 1;
            if va.is_some() && va != last_a {
                changes += 1;
                last_a = va.clone();
            }
            if va != vb {
                disagreeing += 1;
                open.get_or_insert_with(Instant::now);
            } else if let Some(t) = open.take() {
                windows.push(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some(t) = open.take() {
        windows.push(t.elapsed());
    }
    windows.sort();
    let max = windows.last().copied().unwrap_or_default();
    let median = windows.get(windows.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "polls {polls}, value changes seen by replica A {changes}, polls disagreeing {disagreeing} ({:.1} %), \
         disagreement windows {} (median {median:?}, max {max:?}): {windows:?}",
        100.0 * disagreeing as f64 / polls as f64,
        windows.len()
    );
}
