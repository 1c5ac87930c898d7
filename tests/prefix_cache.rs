//! Issue 14: the prefix-cache hit rate V2 uses to reduce the prompt tokens
//! of requests queued in the scheduler, collected by both backends from
//! vLLM's `vllm:prefix_cache_hits_total` / `vllm:prefix_cache_queries_total`
//! counters of a real `emulate` replica (one request of 512 prompt tokens
//! finishes every two seconds, a quarter of them found in the cache): the
//! scrape backend over its own window, the Prometheus backend in its
//! batched queries (one more query per cycle, still independent of the
//! number of variants). The scrape backend's mean prompt and output tokens
//! come from the same window (histogram sums over counts), and so does the
//! mean prefill time per request (issue 31: `vllm:request_prefill_time_seconds`,
//! 512 tokens at the emulator's 8,000 tokens/s: 64 ms), which the Prometheus
//! backend reads in its batched queries too.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::prometheus::{PrometheusServer, Target};
use common::Emulator;
use wva_metrics_server::collector::cache::ReplicaMetrics;
use wva_metrics_server::collector::prometheus::queries::QuerySignal;
use wva_metrics_server::collector::scrape::{ScrapeBackend, ScrapeConfig};
use wva_metrics_server::collector::{MetricsBackend, MetricsCache};
use wva_metrics_server::emulator::render::PREFIX_CACHE_HIT_FRACTION;
use wva_metrics_server::inventory::{resolve, InventorySnapshot};
use wva_metrics_server::telemetry::Telemetry;

const MODEL: &str = "org/model";
const WAIT: Duration = Duration::from_secs(60);

fn snapshot(port: u16) -> InventorySnapshot {
    let y = format!(
        "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: ns}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  modelID: {MODEL}\n---\nkind: Pod\napiVersion: v1\nmetadata: {{name: vllm-0, namespace: ns, labels: {{llm-d.ai/variant: v}}, annotations: {{prometheus.io/port: \"{port}\"}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    );
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap();
    resolve(&objects).0
}

/// Runs cycles until the replica has a hit rate; returns it and the entry.
async fn hit_rate_after_cycles(
    backend: &dyn MetricsBackend,
    snap: &InventorySnapshot,
) -> (f64, ReplicaMetrics) {
    let cache = MetricsCache::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        backend.fetch_cycle(snap, &cache).await.unwrap();
        if let Some(m) = cache.get("ns/vllm-0") {
            if let Some(rate) = m.prefix_cache_hit_rate {
                return (rate, m);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no prefix-cache hit rate within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_scrape_backend_measures_the_hit_rate_over_its_window() {
    let e = Emulator::start(MODEL, 0.5, 0.0).await;
    let (_, telemetry) = Telemetry::standalone();
    let backend = ScrapeBackend::new(ScrapeConfig::default(), telemetry).unwrap();
    let (rate, m) = hit_rate_after_cycles(&backend, &snapshot(e.port)).await;
    assert_eq!(rate, PREFIX_CACHE_HIT_FRACTION);
    // The emulator's requests: 512 prompt and 128 generated tokens each.
    assert_eq!(
        (m.avg_prompt_tokens, m.avg_generation_tokens),
        (Some(512.0), Some(128.0))
    );
    assert_prefill_seconds(&m);
}

/// The emulator prefills each request's 512 prompt tokens at 8,000
/// tokens/s: 64 ms (a mean of equal values, up to the sum's rounding).
fn assert_prefill_seconds(m: &ReplicaMetrics) {
    let prefill = m.avg_prefill_seconds.expect("the mean prefill time");
    assert!(
        (prefill - 512.0 / 8000.0).abs() < 1e-9,
        "mean prefill seconds {prefill}"
    );
}

#[tokio::test]
async fn the_prometheus_backend_reads_the_hit_rate_in_its_batched_queries() {
    let e = Emulator::start(MODEL, 0.5, 0.0).await;
    let prom = PrometheusServer::start(&[Target {
        port: e.port,
        namespace: "ns".into(),
        pod: "vllm-0".into(),
    }])
    .await;
    let backend = prom.backend();
    let snap = snapshot(e.port);
    let (rate, m) = hit_rate_after_cycles(&backend, &snap).await;
    assert!(
        (rate - PREFIX_CACHE_HIT_FRACTION).abs() < 1e-9,
        "hit rate {rate}"
    );
    // Read in the same cycle: the prefill histogram grows with the same
    // finished requests as the prefix-cache counters.
    assert_prefill_seconds(&m);
    let r = backend
        .fetch_cycle(&snap, &MetricsCache::new())
        .await
        .unwrap();
    assert_eq!(r.requests, QuerySignal::ALL.len(), "{r:?}");
    assert_eq!(QuerySignal::ALL.len(), 12);
}
