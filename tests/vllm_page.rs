//! A vLLM `/metrics` page from vLLM's own sources (tests/fixtures/
//! vllm-v0.10-metrics.txt names them) as test data for the exposition
//! parser, the scrape backend and, through a real Prometheus, the
//! Prometheus backend. Every other test reads pages our own emulator
//! renders; this one checks that what vLLM writes reads the same.
//!
//! What the real page has and the emulator does not, and how it is handled:
//! - `vllm:gpu_cache_usage_perc` (deprecated since vLLM 0.9, still written
//!   in 0.10) beside `vllm:kv_cache_usage_perc`: the newer name wins; the old
//!   one is only read when the new one is absent (pre-0.9 replicas).
//! - `*_created` gauges after every counter and histogram, Python GC and
//!   process series, and histograms we do not read (TTFT, e2e latency,
//!   queue time, iteration tokens): ignored.
//! - Go-style float spelling (`1.090571e+06`) and a `cache_config_info`
//!   with more labels than the emulator writes: parsed.
//!
//! Nothing the server reads is missing or renamed in the real page (the
//! last test checks every series name the Prometheus queries use).

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wva_metrics_server::collector::exposition::parse_vllm_page;
use wva_metrics_server::collector::prometheus::queries::{self, QuerySignal, Scope};
use wva_metrics_server::collector::scrape::{ScrapeBackend, ScrapeConfig};
use wva_metrics_server::collector::{MetricsBackend, MetricsCache};
use wva_metrics_server::inventory::{resolve, InventorySnapshot};
use wva_metrics_server::telemetry::Telemetry;

const PAGE: &str = include_str!("fixtures/vllm-v0.10-metrics.txt");
const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

/// Serves the page on every request, as vLLM's `/metrics` does.
async fn page_server(page: &'static str) -> u16 {
    page_server_by_request(Arc::new(move |_| page.to_owned())).await
}

/// Serves `page(n)` to the `n`th request (from 0).
async fn page_server_by_request(page: Arc<dyn Fn(usize) -> String + Send + Sync>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut c, _)) = l.accept().await {
            let page = page(served);
            served += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = c.write_all(r.as_bytes()).await;
            });
        }
    });
    port
}

/// A real Prometheus scraping the page on `port` as the pod `ns/vllm-0`.
async fn prometheus_scraping(port: u16) -> common::prometheus::PrometheusServer {
    common::prometheus::PrometheusServer::start(&[common::prometheus::Target {
        port,
        namespace: "ns".into(),
        pod: "vllm-0".into(),
    }])
    .await
}

/// One variant of the page's model with one ready pod `ns/vllm-0` on `port`.
fn snapshot(port: u16) -> InventorySnapshot {
    let y = format!(
        "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: ns}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  modelID: {MODEL}\n---\nkind: Pod\napiVersion: v1\nmetadata: {{name: vllm-0, namespace: ns, labels: {{llm-d.ai/variant: v}}, annotations: {{prometheus.io/port: \"{port}\"}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    );
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), &y).unwrap();
    resolve(&objects).0
}

#[test]
fn the_parser_reads_the_signals_of_a_real_page() {
    let page = parse_vllm_page(PAGE).expect("the page parses");
    assert_eq!(page.model_name.as_deref(), Some(MODEL));
    assert_eq!(page.kv_usage, Some(0.4566));
    assert_eq!(page.queue_waiting, Some(3.0));
    assert_eq!(page.running, Some(12.0));
    assert!(page.rejected.is_empty(), "{:?}", page.rejected);
    // vllm:cache_config_info{num_gpu_blocks="27328",block_size="16"}
    let cache = page.kv_cache.expect("cache_config_info");
    assert_eq!((cache.num_gpu_blocks, cache.block_size), (27328, 16));
    // vllm:prefix_cache_hits_total / _queries_total (not the deprecated gpu_ ones).
    let prefix = page.prefix_cache.expect("prefix cache counters");
    assert_eq!((prefix.hits, prefix.queries), (412160.0, 1083648.0));
    // The token histograms' (sum, count), for the scrape backend's averages.
    assert_eq!(page.prompt_tokens, Some((1.090571e6, 2093.0)));
    assert_eq!(page.generation_tokens, Some((274530.0, 2093.0)));
    // The prefill-time histogram's (sum, count), for the `slo` analysis.
    assert_eq!(page.prefill_time, Some((124.03858208656311, 2093.0)));
}

#[test]
fn the_new_kv_name_wins_over_the_deprecated_one() {
    // Both present with different values: kv_cache_usage_perc is the one read.
    let changed = PAGE.replace(
        &format!("vllm:gpu_cache_usage_perc{{engine=\"0\",model_name=\"{MODEL}\"}} 0.4566"),
        &format!("vllm:gpu_cache_usage_perc{{engine=\"0\",model_name=\"{MODEL}\"}} 0.9"),
    );
    assert_ne!(changed, PAGE, "the fixture has the deprecated series");
    assert_eq!(parse_vllm_page(&changed).unwrap().kv_usage, Some(0.4566));
    // A pre-0.9 page (only the old name) is still read.
    let old: String = PAGE
        .lines()
        .filter(|l| !l.contains("vllm:kv_cache_usage_perc"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(parse_vllm_page(&old).unwrap().kv_usage, Some(0.4566));
}

#[tokio::test]
async fn the_scrape_backend_reads_a_real_page() {
    let port = page_server(PAGE).await;
    let (_, telemetry) = Telemetry::standalone();
    let backend = ScrapeBackend::new(ScrapeConfig::default(), telemetry).unwrap();
    let cache = MetricsCache::new();
    let r = backend.fetch_cycle(&snapshot(port), &cache).await.unwrap();
    assert_eq!(
        (r.replicas_updated, r.failures, r.samples_rejected),
        (1, 0, 0)
    );
    let m = cache.get("ns/vllm-0").expect("the replica's metrics");
    assert_eq!(&*m.model_name, MODEL);
    assert_eq!((m.kv_usage, m.queue_waiting), (0.4566, 3.0));
    assert_eq!(m.queue_waiting_latest, Some(3.0));
    assert_eq!(m.running, Some(12.0));
    let cache_config = m.kv_cache.expect("vllm:cache_config_info collected");
    assert_eq!(
        (cache_config.num_gpu_blocks, cache_config.block_size),
        (27328, 16)
    );
}

#[tokio::test]
async fn the_prometheus_backend_reads_a_real_page_through_prometheus() {
    let port = page_server(PAGE).await;
    let prom = prometheus_scraping(port).await;
    // rate() needs two samples of the counters.
    common::eventually(
        Duration::from_secs(30),
        "two scrapes of the page",
        || async {
            let r = prom
                .query("count_over_time(vllm:request_success_total{finished_reason=\"stop\"}[1m])")
                .await;
            (r.first()
                .and_then(|v| v["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok())
                >= Some(2.0))
            .then_some(())
        },
    )
    .await;
    let backend = prom.backend();
    let cache = Arc::new(MetricsCache::new());
    let r = backend.fetch_cycle(&snapshot(port), &cache).await.unwrap();
    assert_eq!((r.replicas_updated, r.samples_rejected), (1, 0), "{r:?}");
    let m = cache.get("ns/vllm-0").expect("the replica's metrics");
    assert_eq!(&*m.model_name, MODEL);
    assert_eq!((m.kv_usage, m.queue_waiting), (0.4566, 3.0));
    // vllm:cache_config_info through Prometheus, in the same batched queries.
    let cache_config = m.kv_cache.expect("vllm:cache_config_info collected");
    assert_eq!(
        (cache_config.num_gpu_blocks, cache_config.block_size),
        (27328, 16)
    );
    assert_eq!(r.requests, QuerySignal::ALL.len(), "{r:?}");
    // The page never changes: no requests finish between scrapes, and
    // the prefix-cache hit rate is 0 / 0 (no lookups): unknown, not 0;
    // so is the mean prefill time (no request finished).
    assert_eq!(m.request_rate, Some(0.0));
    assert_eq!(m.prefix_cache_hit_rate, None);
    assert_eq!(m.avg_prefill_seconds, None);
    let missing = backend.validate_metrics_availability().await.unwrap();
    assert!(missing.is_empty(), "series the server expects: {missing:?}");
}

/// The page with 9 requests waiting for its first `first` scrapes, then 3.
fn queue_falls_after(first: usize) -> Arc<dyn Fn(usize) -> String + Send + Sync> {
    const WAITING: &str =
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} ";
    assert!(PAGE.contains(&format!("{WAITING}3.0")));
    Arc::new(move |n| {
        if n < first {
            PAGE.replace(&format!("{WAITING}3.0"), &format!("{WAITING}9.0"))
        } else {
            PAGE.to_owned()
        }
    })
}

/// A queue that fell within the minute: the peak (what V1 and V2 size by)
/// still reads 9, the newest value (what `slo` reads a long backlog's drain
/// from) 3, from both backends.
#[tokio::test]
async fn the_newest_queue_is_read_beside_its_peak() {
    let port = page_server_by_request(queue_falls_after(1)).await;
    let (_, telemetry) = Telemetry::standalone();
    let backend = ScrapeBackend::new(ScrapeConfig::default(), telemetry).unwrap();
    let cache = MetricsCache::new();
    let snap = snapshot(port);
    for _ in 0..2 {
        backend.fetch_cycle(&snap, &cache).await.unwrap();
    }
    let m = cache.get("ns/vllm-0").expect("the replica's metrics");
    assert_eq!((m.queue_waiting, m.queue_waiting_latest), (9.0, Some(3.0)));

    let port = page_server_by_request(queue_falls_after(3)).await;
    let prom = prometheus_scraping(port).await;
    common::eventually(
        Duration::from_secs(30),
        "a scrape of 9 waiting and a newer one of 3",
        || async {
            let value = |q: &'static str| {
                let prom = &prom;
                async move {
                    prom.query(q)
                        .await
                        .first()
                        .and_then(|v| v["value"][1].as_str())
                        .and_then(|v| v.parse::<f64>().ok())
                }
            };
            let peak = value("max_over_time(vllm:num_requests_waiting[1m])").await;
            let latest = value("vllm:num_requests_waiting").await;
            (peak == Some(9.0) && latest == Some(3.0)).then_some(())
        },
    )
    .await;
    let backend = prom.backend();
    let cache = MetricsCache::new();
    backend.fetch_cycle(&snapshot(port), &cache).await.unwrap();
    let m = cache.get("ns/vllm-0").expect("the replica's metrics");
    assert_eq!((m.queue_waiting, m.queue_waiting_latest), (9.0, Some(3.0)));
}

#[test]
fn every_series_the_queries_use_is_on_the_real_page() {
    let names: std::collections::BTreeSet<&str> = PAGE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    // The endpoint picker's queues are not on a vLLM page (per-model signals).
    for signal in QuerySignal::ALL.into_iter().filter(|s| !s.per_model()) {
        let promql = queries::build(signal, Scope::All);
        let used: Vec<&str> = promql
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|t| t.starts_with("vllm:"))
            .collect();
        assert!(!used.is_empty(), "{promql}");
        for name in used {
            assert!(
                names.contains(name),
                "{} reads {name}, which vLLM does not write",
                signal.as_str()
            );
        }
    }
    // The activity query (scale to zero) reads vLLM series too.
    let promql = queries::activity(std::time::Duration::from_secs(600), Scope::All);
    for name in promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("vllm:"))
    {
        assert!(
            names.contains(name),
            "activity reads {name}, which vLLM does not write"
        );
    }
}

/// Prometheus' own verdict on a page: `promtool check metrics` exits 1 on a
/// parse error and 0 or 3 (lint findings only, such as a missing HELP) when
/// the page parses.
fn promtool_accepts(page: &str) -> bool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(page.as_bytes())
        .expect("promtool reads the page");
    let out = child.wait_with_output().expect("promtool ends");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0 | 3) => true,
        Some(1) if text.contains("parsing error") => false,
        other => panic!("promtool exited {other:?} on {page:?}: {text}"),
    }
}

fn we_accept(page: &str) -> bool {
    wva_metrics_server::collector::text_format::for_each_sample(page, |_| Ok(())).is_ok()
}

/// Our text-format reader says yes or no where Prometheus' does, line by
/// line over the format's corners, and on the real vLLM page. Deliberate
/// differences are listed in `known_differences` below.
#[test]
fn the_text_format_reader_agrees_with_promtool() {
    let lines = [
        "x 1",
        "x {a=\"b\"} 1",
        "x{a=\"b\"}1",
        "x{a=\"b\",} 1",
        "x{,} 1",
        "x{} 1",
        "x\t1",
        " x 1",
        "x 1 -5",
        "x 1 1.5",
        "x Inf",
        "x +inf",
        "x -Inf",
        "x infinity",
        "x NaN",
        "x nan",
        "x 1e3",
        "x .5",
        "x 5.",
        "x 0x10",
        "x 1_0",
        "x +1",
        "x{a=\"\\t\"} 1",
        "x{a=\"\\\\\"} 1",
        "x{a=\"a\\\"b\\nc\"} 1",
        "x{a=\"é\"} 1",
        "x{a=\"b\" 1",
        "x{a=b} 1",
        "x{a=\"1\",a=\"2\"} 1",
        "x{_a=\"1\"} 1",
        "x{__name__=\"y\"} 1",
        "x{1a=\"y\"} 1",
        ":x 1",
        "x:y 1",
        "1x 1",
        "x-y 1",
        "x",
        "x 1 2 3",
        "x{ a = \"b\" } 1",
        "x{a=\"b\" ,b=\"c\"} 1",
        "# TYPE x gauge",
        "# TYPE x flavour",
        "# TYPE x",
        "# TYPE x gauge extra",
        "# TYPE x unknown",
        "# HELP x",
        "# HELP x some help",
        "# HELP 1x y",
        "#HELP 1x y",
        "# EOF",
        "# random comment {\"",
        "vllm:num_requests_waiting{model_name=\"meta/llama\",engine=\"0\"} 2.0",
    ];
    let mut disagree = Vec::new();
    for line in lines {
        let page = format!("{line}\n");
        let (ours, theirs) = (we_accept(&page), promtool_accepts(&page));
        if ours != theirs {
            disagree.push(format!("{line:?}: we say {ours}, promtool says {theirs}"));
        }
    }
    assert!(disagree.is_empty(), "{disagree:#?}");
    assert!(promtool_accepts(PAGE) && we_accept(PAGE));
    // A page cut in the middle of a line is refused by both.
    let cut = &PAGE[..PAGE
        .find("vllm:kv_cache_usage_perc{")
        .expect("the page has KV usage")
        + 30];
    assert!(!promtool_accepts(cut) && !we_accept(cut), "{cut:?}");
}

/// Where we deliberately differ from promtool's parser: blanks at the end
/// of a sample line are accepted (they cannot change a number; promtool
/// reads them as an empty timestamp).
#[test]
fn known_differences_from_promtool() {
    let page = "x{a=\"b\"} 1 \n";
    assert!(we_accept(page));
    assert!(!promtool_accepts(page));
}
