//! The scrape backend against pages that are malformed, too large, or never
//! finish: each is a counted failure within the timeout, never a hang and
//! never a value; a good page afterwards is used again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wva_metrics_server::collector::scrape::{ScrapeBackend, ScrapeConfig};
use wva_metrics_server::collector::{MetricsBackend, MetricsCache};
use wva_metrics_server::inventory::{resolve, InventorySnapshot};
use wva_metrics_server::telemetry::Telemetry;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    Malformed,
    Huge,
    NeverEnds,
}

/// A tiny HTTP server whose answer is chosen by the test.
async fn page_server(mode: Arc<Mutex<Mode>>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let mode = *mode.lock().unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let good = "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.4\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 2\n";
                match mode {
                    Mode::Good => {
                        let r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{good}", good.len());
                        let _ = c.write_all(r.as_bytes()).await;
                    }
                    Mode::Malformed => {
                        let body = "vllm:kv_cache_usage_perc{model_name=\"m\" 0.4\n";
                        let r = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                        let _ = c.write_all(r.as_bytes()).await;
                    }
                    Mode::Huge => {
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await;
                        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "#".repeat(64 * 1024));
                        for _ in 0..64 {
                            if c.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                    Mode::NeverEnds => {
                        let _ = c
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n# partial",
                            )
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    port
}

fn snapshot(port: u16) -> InventorySnapshot {
    let y = format!(
        "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: ns}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  modelID: m\n---\nkind: Pod\napiVersion: v1\nmetadata: {{name: p, namespace: ns, labels: {{llm-d.ai/variant: v}}, annotations: {{prometheus.io/port: \"{port}\"}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    );
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap();
    resolve(&objects).0
}

#[tokio::test]
async fn bad_pages_are_counted_failures_and_never_values() {
    let mode = Arc::new(Mutex::new(Mode::Good));
    let port = page_server(Arc::clone(&mode)).await;
    let snap = snapshot(port);
    let (_, telemetry) = Telemetry::standalone();
    let config = ScrapeConfig {
        timeout: Duration::from_secs(1),
        max_body_bytes: 1024 * 1024,
        ..ScrapeConfig::default()
    };
    let backend = ScrapeBackend::new(config, telemetry).unwrap();
    let cache = MetricsCache::new();

    let r = backend.fetch_cycle(&snap, &cache).await.unwrap();
    assert_eq!((r.replicas_updated, r.failures), (1, 0));
    let first = cache.get("ns/p").unwrap();
    assert_eq!((first.kv_usage, first.queue_waiting), (0.4, 2.0));

    for bad in [Mode::Malformed, Mode::Huge, Mode::NeverEnds] {
        *mode.lock().unwrap() = bad;
        let started = Instant::now();
        let r = backend.fetch_cycle(&snap, &cache).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "bounded by the scrape timeout"
        );
        assert_eq!((r.replicas_updated, r.failures), (0, 1));
        assert_eq!(
            cache.get("ns/p").unwrap().sampled_at,
            first.sampled_at,
            "no value taken from a bad page"
        );
    }
    *mode.lock().unwrap() = Mode::Good;
    let r = backend.fetch_cycle(&snap, &cache).await.unwrap();
    assert_eq!(r.replicas_updated, 1, "a good page is used again");
}
