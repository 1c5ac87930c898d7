//! The scrape backend against pages that are malformed, too large, or never
//! finish: each is a counted failure within the timeout, never a hang and
//! never a value; a good page afterwards is used again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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
                        // A valid page of 2 MiB: the signals followed by
                        // many well-formed series. Without the size limit
                        // it would parse and be used.
                        let _ = c
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await;
                        let mut chunks = vec![huge_page_head()];
                        let filler = huge_page_filler();
                        while chunks.iter().map(String::len).sum::<usize>() < 2 * 1024 * 1024 {
                            chunks.push(filler.clone());
                        }
                        chunks.push(String::new());
                        for body in chunks {
                            let chunk = format!("{:x}\r\n{body}\r\n", body.len());
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

/// The start of the oversize page: the two signals at values no other
/// page serves (0.9, 7), so a page used despite its size shows in the cache.
fn huge_page_head() -> String {
    "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.9\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 7\n# TYPE filler gauge\n".to_owned()
}

/// 64 KiB of well-formed series.
fn huge_page_filler() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 64 * 1024 {
        s.push_str(&format!("filler{{series=\"{i}\"}} {i}\n"));
        i += 1;
    }
    s
}

fn snapshot(port: u16) -> InventorySnapshot {
    let y = format!(
        "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: ns}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  modelID: m\n---\nkind: Pod\napiVersion: v1\nmetadata: {{name: p, namespace: ns, labels: {{llm-d.ai/variant: v}}, annotations: {{prometheus.io/port: \"{port}\"}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    );
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap();
    resolve(&objects).0
}

/// `wva_backend_errors_total{backend="scrape",kind}`.
fn errors_of_kind(registry: &prometheus_client::registry::Registry, kind: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("wva_backend_errors_total{") && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn bad_pages_are_counted_failures_and_never_values() {
    let mode = Arc::new(Mutex::new(Mode::Good));
    let port = page_server(Arc::clone(&mode)).await;
    let snap = snapshot(port);
    let (registry, telemetry) = Telemetry::standalone();
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

    // Each bad page is a failure of its own kind, and no value is taken
    // from it. The cycle is bounded by the scrape timeout (1 s); the outer
    // bound only turns a hang into a failure instead of a stuck test.
    for (bad, kind) in [
        (Mode::Malformed, "parse"),
        (Mode::Huge, "too_large"),
        (Mode::NeverEnds, "timeout"),
    ] {
        *mode.lock().unwrap() = bad;
        let r = tokio::time::timeout(Duration::from_secs(30), backend.fetch_cycle(&snap, &cache))
            .await
            .expect("the cycle ends")
            .unwrap();
        assert_eq!((r.replicas_updated, r.failures), (0, 1), "{kind}");
        assert_eq!(errors_of_kind(&registry, kind), 1.0, "counted as {kind}");
        assert_eq!(
            cache.get("ns/p").unwrap().sampled_at,
            first.sampled_at,
            "no value taken from a bad page ({kind})"
        );
    }
    *mode.lock().unwrap() = Mode::Good;
    let r = backend.fetch_cycle(&snap, &cache).await.unwrap();
    assert_eq!(r.replicas_updated, 1, "a good page is used again");
}
