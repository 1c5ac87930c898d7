//! The Prometheus backend at the size where its queries run on two threads
//! (10,000 pods and more, multi-threaded runtime): one cycle against the
//! emulated Prometheus API of a generated fleet writes every pod's values
//! into the cache exactly as the fleet serves them.
#![cfg(feature = "emulator")]

use std::time::Duration;

use prometheus_client::registry::Registry;
use wva_metrics_server::collector::prometheus::{PrometheusBackend, PrometheusConfig};
use wva_metrics_server::collector::{MetricsBackend, MetricsCache};
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::emulator::prometheus_api;
use wva_metrics_server::inventory::resolve;
use wva_metrics_server::telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_get_the_served_values() {
    wva_metrics_server::certs::install_crypto_provider();
    // 1,000 variants x 10 pods: at the threshold of the threaded path.
    let fleet = Fleet::new(1_000, 10);
    let objects = fleet.objects().unwrap();
    let (snapshot, problems) = resolve(&objects);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(snapshot.pods().len(), 10_000);
    let expected: Vec<_> = fleet.pods().collect();
    let api = prometheus_api::start("127.0.0.1:0".parse().unwrap(), fleet)
        .await
        .unwrap();
    let mut registry = Registry::default();
    let backend = PrometheusBackend::new(
        PrometheusConfig {
            url: api.url(),
            query_timeout: Duration::from_secs(30),
            ..PrometheusConfig::default()
        },
        Telemetry::new(&mut registry),
    )
    .unwrap();
    let cache = MetricsCache::new();
    for cycle in 0..2 {
        let report = backend.fetch_cycle(&snapshot, &cache).await.unwrap();
        assert_eq!(report.requests, 12, "cycle {cycle}");
        assert_eq!(report.replicas_updated, 10_000, "cycle {cycle}");
        assert_eq!(report.samples_rejected, 0, "cycle {cycle}");
    }
    assert_eq!(cache.len(), 10_000);
    for pod in &expected {
        let key = format!("{}/{}", pod.namespace, pod.name);
        let m = cache
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not cached"));
        assert_eq!(&*m.model_name, pod.model, "{key}");
        assert_eq!(m.kv_usage, pod.kv_usage, "{key}");
        assert_eq!(m.queue_waiting, pod.queue_waiting, "{key}");
        assert_eq!(m.queue_waiting_latest, Some(pod.queue_waiting), "{key}");
        assert_eq!(m.request_rate, Some(2.0 + pod.kv_usage * 8.0), "{key}");
        assert_eq!(m.avg_prompt_tokens, Some(512.0), "{key}");
        assert_eq!(m.avg_generation_tokens, Some(256.0), "{key}");
        // 512 prompt tokens at the emulator's 8,000 tokens/s.
        assert_eq!(m.avg_prefill_seconds, Some(0.064), "{key}");
        assert_eq!(m.prefix_cache_hit_rate, Some(0.25), "{key}");
        assert_eq!(
            m.kv_cache.map(|c| (c.num_gpu_blocks, c.block_size)),
            Some((27_328, 16)),
            "{key}"
        );
    }
    // Two cycles of twelve queries.
    assert_eq!(api.queries(), 24);
}
