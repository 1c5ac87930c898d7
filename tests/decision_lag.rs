//! Measurements for docs/benchmarks.md, ignored in the normal suite (they
//! take minutes and report numbers rather than assert speed):
//!
//! ```text
//! cargo test --release --test decision_lag -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - decision lag: time from a replica's load rising to a changed
//!   `wva_desired_ratio`, for the scrape backend and for the Prometheus
//!   backend with a 1 s scrape interval;
//! - a 60 s soak at a fixed request rate while the emulated load changes:
//!   every request must succeed, and the server's memory is reported.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::prometheus::{PrometheusServer, Target};
use common::{variant_yaml, Emulator, Server, VariantSpec};

const TRIALS: usize = 3;

/// `TRIALS` models in one namespace, two replicas each, all idle.
async fn idle_models() -> (Vec<Vec<Emulator>>, String, Vec<Target>) {
    let mut groups = Vec::new();
    let mut yaml = String::new();
    let mut targets = Vec::new();
    for t in 0..TRIALS {
        let model = format!("lag-model-{t}");
        let mut group = Vec::new();
        for i in 0..2 {
            let e = Emulator::start(&model, 0.30, 0.0).await;
            targets.push(Target {
                port: e.port,
                namespace: "llm-lag".into(),
                pod: format!("lag-decode-{t}-{i}"),
            });
            group.push(e);
        }
        let ports: Vec<u16> = group.iter().map(|e| e.port).collect();
        yaml += &variant_yaml(
            &VariantSpec {
                namespace: "llm-lag",
                variant: &format!("lag-variant-{t}"),
                target: &format!("lag-decode-{t}"),
                model: &model,
                min: 2,
                max: 10,
                ready: 2,
            },
            &ports,
        );
        groups.push(group);
    }
    (groups, yaml, targets)
}

/// For each trial: raise the load of one model's replicas past the KV
/// threshold and poll (every 20 ms) until its ratio changes.
async fn measure_lag(s: &Server, groups: &[Vec<Emulator>]) -> Vec<Duration> {
    let mut lags = Vec::new();
    for (t, group) in groups.iter().enumerate() {
        let selector = format!("target_name=lag-decode-{t}");
        s.wait_value("llm-lag", "wva_desired_ratio", &selector, "1")
            .await;
        let started = Instant::now();
        for e in group {
            e.set_state(serde_json::json!({"kv": 0.90, "waiting": 1.0}))
                .await;
        }
        let deadline = started + Duration::from_secs(30);
        loop {
            let v = s.value("llm-lag", "wva_desired_ratio", &selector).await;
            if v.as_deref().is_some_and(|v| v != "1") {
                lags.push(started.elapsed());
                break;
            }
            assert!(Instant::now() < deadline, "trial {t}: no change in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    lags
}

fn report(name: &str, lags: &[Duration]) {
    let ms: Vec<String> = lags
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    let worst = lags.iter().max().copied().unwrap_or_default();
    println!(
        "{name}: decision lag per trial [{}], worst {worst:?}",
        ms.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement for docs/benchmarks.md"]
async fn decision_lag_scrape_backend() {
    let (groups, yaml, _) = idle_models().await;
    let s = Server::with_inventory(&yaml, &["--metrics-backend", "scrape"]).await;
    let lags = measure_lag(&s, &groups).await;
    report("scrape backend (--scrape-interval 2s, default)", &lags);
    assert_eq!(lags.len(), TRIALS);
}

/// `count` variants of other models, with no pods: they add inventory and
/// analysis work to every cycle and request, as a larger fleet does.
fn extra_variants(count: usize) -> String {
    (0..count)
        .map(|i| {
            variant_yaml(
                &VariantSpec {
                    namespace: "llm-extra",
                    variant: &format!("extra-{i}"),
                    target: &format!("extra-decode-{i}"),
                    model: &format!("extra-model-{i}"),
                    min: 1,
                    max: 4,
                    ready: 1,
                },
                &[],
            )
        })
        .collect()
}

/// The Prometheus backend at its default settings (fetch gap floor 1 s,
/// no request-time refresh) with `extra` more variants in the inventory.
async fn prometheus_lag(extra: usize) {
    let (groups, yaml, targets) = idle_models().await;
    let prom = PrometheusServer::start(&targets).await;
    let url = prom.url();
    let yaml = yaml + &extra_variants(extra);
    let s = Server::with_inventory(
        &yaml,
        &["--metrics-backend", "prometheus", "--prometheus-url", &url],
    )
    .await;
    let lags = measure_lag(&s, &groups).await;
    report(
        &format!(
            "Prometheus backend, defaults (scrape 1s), {} variants",
            TRIALS + extra
        ),
        &lags,
    );
    assert_eq!(lags.len(), TRIALS);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement for docs/benchmarks.md"]
async fn decision_lag_prometheus_backend() {
    prometheus_lag(0).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement for docs/benchmarks.md"]
async fn decision_lag_prometheus_backend_200_variants() {
    prometheus_lag(197).await;
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "60 s soak for docs/benchmarks.md"]
async fn soak_60s_fixed_rate_changing_load() {
    const RATE: u64 = 200;
    const SOAK: Duration = Duration::from_secs(60);
    let (groups, yaml, _) = idle_models().await;
    let s = Server::with_inventory(&yaml, &["--metrics-backend", "scrape"]).await;
    s.wait_value(
        "llm-lag",
        "wva_desired_ratio",
        "target_name=lag-decode-0",
        "1",
    )
    .await;
    let pid = s.proc.child.id();
    let rss_start = rss_kib(pid, "VmRSS:");

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut failed = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut phase = 0;
    let mut samples = Vec::new();
    while started.elapsed() < SOAK {
        tick.tick().await;
        // Every 5 s the load of every model changes.
        let now_phase = (started.elapsed().as_secs() / 5) as usize;
        if now_phase != phase {
            phase = now_phase;
            let kv = [0.30, 0.90, 0.55, 0.10][phase % 4];
            for group in &groups {
                for e in group {
                    e.set_state(serde_json::json!({"kv": kv, "waiting": (phase % 3) as f64}))
                        .await;
                }
            }
            samples.push(rss_kib(pid, "VmRSS:"));
        }
        let t = sent as usize % TRIALS;
        let url = format!(
            "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-lag/wva_desired_ratio?labelSelector=target_name%3Dlag-decode-{t}",
            s.base
        );
        let client = s.client.clone();
        in_flight.spawn(async move {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => None,
                Ok(r) => Some(format!("HTTP {}", r.status())),
                Err(e) => Some(e.to_string()),
            }
        });
        sent += 1;
        while let Some(done) = in_flight.try_join_next() {
            if let Some(err) = done.unwrap() {
                failed.push(err);
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        if let Some(err) = done.unwrap() {
            failed.push(err);
        }
    }
    let rss_end = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");
    println!(
        "soak: {sent} requests in {:?} ({RATE}/s target), {} failed; RSS start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB; every 5 s: {:?} KiB",
        started.elapsed(),
        failed.len(),
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        peak as f64 / 1024.0,
        samples
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(sent >= RATE * 50, "only {sent} requests were sent");
    // Flat memory: a leak of even 1 KiB per request would add 12 MiB.
    assert!(
        rss_end < rss_start + 12 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
