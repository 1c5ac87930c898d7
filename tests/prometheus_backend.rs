//! The Prometheus backend against a real Prometheus scraping `emulate`
//! replicas: same decisions as the scrape backend, a constant number of
//! queries per cycle, no extra queries from HPA traffic, freshness and
//! recovery, and rejected samples.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

/// Batched queries per fetch cycle, whatever the number of variants.
const QUERIES: usize = wva_metrics_server::collector::prometheus::queries::QuerySignal::ALL.len();

use std::time::{Duration, Instant};

use common::prometheus::{PrometheusServer, Target};
use common::{eventually, two_model_inventory, variant_yaml, Emulator, Server, VariantSpec};

const LLAMA: &str = "meta/llama-3.1-8b";
const MISTRAL: &str = "mistral-7b";

/// Emulators of the two worked examples, and the Prometheus targets for them.
async fn replicas() -> (Vec<Emulator>, Vec<Target>) {
    let mut emulators = Vec::new();
    let mut targets = Vec::new();
    for (i, (kv, q)) in [(0.20, 1.0), (0.30, 1.0), (0.25, 1.0)]
        .into_iter()
        .enumerate()
    {
        let e = Emulator::start(LLAMA, kv, q).await;
        targets.push(Target {
            port: e.port,
            namespace: "llm-a".into(),
            pod: format!("llama-decode-{i}"),
        });
        emulators.push(e);
    }
    for (i, (kv, q)) in [(0.75, 2.0), (0.76, 2.0)].into_iter().enumerate() {
        let e = Emulator::start(MISTRAL, kv, q).await;
        targets.push(Target {
            port: e.port,
            namespace: "llm-b".into(),
            pod: format!("mistral-decode-{i}"),
        });
        emulators.push(e);
    }
    (emulators, targets)
}

/// The inventory for the two models plus `extra` variants without pods.
fn inventory(emulators: &[Emulator], extra: usize) -> String {
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let mut y = two_model_inventory(&ports);
    for i in 0..extra {
        y += &variant_yaml(
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
        );
    }
    y
}

async fn serve(prom: &PrometheusServer, inventory_yaml: &str, extra: &[&str]) -> Server {
    serve_url(&prom.url(), inventory_yaml, extra).await
}

async fn serve_url(url: &str, inventory_yaml: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--metrics-backend", "prometheus", "--prometheus-url", url];
    args.extend_from_slice(extra);
    Server::with_inventory(inventory_yaml, &args).await
}

/// Short intervals and freshness thresholds, so that outages show within
/// seconds.
const FAST_FRESHNESS: [&str; 8] = [
    "--metrics-fetch-interval",
    "1s",
    "--metrics-fresh-within",
    "2s",
    "--metrics-stale-after",
    "4s",
    "--metrics-unavailable-after",
    "10s",
];

/// Waits for the mistral model's healthy answer (2 replicas at KV 75 %:
/// desired 3).
async fn mistral_desires_three(s: &Server) {
    s.wait_mistral_at_3().await;
}

/// Batched queries of the backend in the query log (the harness's own
/// queries and the start-up availability check have other shapes).
fn batched(queries: &[String]) -> Vec<&String> {
    queries
        .iter()
        .filter(|q| q.contains("by (namespace, pod, model_name") || q.contains("by (model_name)"))
        .collect()
}

#[tokio::test]
async fn same_decisions_as_the_scrape_backend() {
    let (emulators, targets) = replicas().await;
    let prom = PrometheusServer::start(&targets).await;
    let s = serve(
        &prom,
        &inventory(&emulators, 0),
        &["--metrics-fetch-interval", "1s"],
    )
    .await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;
    assert_eq!(
        s.value("llm-a", "wva_desired_ratio", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("666m")
    );
    assert_eq!(
        s.value("llm-a", "wva_current_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("3")
    );
    mistral_desires_three(&s).await;
    assert_eq!(
        s.value("llm-b", "wva_desired_ratio", "target_name=mistral-decode")
            .await
            .as_deref(),
        Some("1500m")
    );
}

/// `serve` over `yaml` with the fetcher's debug log ("fetch cycle done",
/// one line per cycle with the queries it sent) in `serve.log`.
async fn serve_counting_cycles(url: &str, yaml: &str, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, yaml).unwrap();
    let inv = format!("file:{}", path.display());
    let mut args = vec![
        "--inventory",
        &inv,
        "--metrics-backend",
        "prometheus",
        "--prometheus-url",
        url,
    ];
    args.extend_from_slice(extra);
    Server::start_with(
        dir,
        &args,
        &[(
            "RUST_LOG",
            "info,wva_metrics_server::collector::fetcher=debug",
        )],
        true,
    )
    .await
}

/// Fetch cycles the server has logged so far.
fn cycles_logged(s: &Server) -> usize {
    s.log()
        .lines()
        .filter(|l| l.contains("fetch cycle done"))
        .count()
}

/// Runs `serve` for a few cycles and returns (batched queries in
/// Prometheus' query log, fetch cycles in the server's own log). The
/// cycles are counted from the server's debug log ("fetch cycle done"),
/// not from the query log, so that queries per model or per variant
/// cannot pass for cycles.
async fn queries_per_cycle(prom: &PrometheusServer, yaml: &str) -> (usize, usize) {
    let before = prom.logged_queries().len();
    let s = serve_counting_cycles(
        &prom.url(),
        yaml,
        &[
            "--metrics-fetch-interval",
            "1s",
            "--metrics-cache-ttl",
            "30s",
        ],
    )
    .await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;
    let first = cycles_logged(&s);
    eventually(
        Duration::from_secs(30),
        "three more fetch cycles",
        || async { (cycles_logged(&s) >= first + 3).then_some(()) },
    )
    .await;
    let mut s = s;
    // Stopped between cycles or in one: a cycle cut short may have sent
    // part of its queries, so the last logged cycle is compared with a
    // margin below.
    s.proc.stop();
    let log = s.log();
    let cycles = log
        .lines()
        .filter(|l| l.contains("fetch cycle done"))
        .count();
    for line in log.lines().filter(|l| l.contains("fetch cycle done")) {
        assert!(
            line.contains(&format!("requests={QUERIES}")),
            "{QUERIES} queries per cycle: {line}"
        );
    }
    // Prometheus writes its query log as it answers; wait for the last ones.
    let queries = eventually(Duration::from_secs(10), "the query log", || async {
        let log = prom.logged_queries();
        let n = batched(&log[before.min(log.len())..]).len();
        (n >= QUERIES * cycles).then_some(n)
    })
    .await;
    (queries, cycles)
}

#[tokio::test]
async fn queries_per_cycle_do_not_grow_with_variants() {
    let (emulators, targets) = replicas().await;
    let prom = PrometheusServer::start(&targets).await;
    // One variant (the llama one), then 200 (both models and 198 more).
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let one = variant_yaml(
        &VariantSpec {
            namespace: "llm-a",
            variant: "llama-a100",
            target: "llama-decode",
            model: LLAMA,
            min: 1,
            max: 10,
            ready: 3,
        },
        &ports[..3],
    );
    let (q1, c1) = queries_per_cycle(&prom, &one).await;
    let (q200, c200) = queries_per_cycle(&prom, &inventory(&emulators, 198)).await;
    assert!(c1 >= 3 && c200 >= 3, "several cycles ran ({c1}, {c200})");
    // QUERIES per cycle, plus at most one cycle cut short by the stop.
    for (what, q, c) in [("1 variant", q1, c1), ("200 variants", q200, c200)] {
        assert!(
            (QUERIES * c..QUERIES * c + QUERIES).contains(&q),
            "{what}: {q} queries in {c} cycles"
        );
    }
    println!(
        "queries per cycle: 1 variant {:.1}, 200 variants {:.1}",
        q1 as f64 / c1 as f64,
        q200 as f64 / c200 as f64
    );
}

#[tokio::test]
async fn hpa_requests_cause_no_queries() {
    let (emulators, targets) = replicas().await;
    let prom = PrometheusServer::start(&targets).await;
    let s = serve_counting_cycles(
        &prom.url(),
        &inventory(&emulators, 0),
        &["--metrics-fetch-interval", "2s"],
    )
    .await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;
    let before = prom.logged_queries().len();
    let cycles_before = cycles_logged(&s);
    for i in 0..100 {
        let (ns, sel) = if i % 2 == 0 {
            ("llm-a", "llama-decode")
        } else {
            ("llm-b", "mistral-decode")
        };
        let v = s
            .value(ns, "wva_desired_ratio", &format!("target_name={sel}"))
            .await;
        assert!(v.is_some(), "request {i} answered");
    }
    let log = prom.logged_queries();
    let cycles = cycles_logged(&s) - cycles_before;
    let during = batched(&log[before..]);
    let per_model: Vec<&&String> = during
        .iter()
        .filter(|q| q.contains("model_name=\""))
        .collect();
    assert!(
        per_model.is_empty(),
        "requests caused per-model queries: {per_model:?}"
    );
    // QUERIES per background cycle, plus at most one cycle that was
    // under way at either edge of the window: 100 requests add none.
    assert!(
        during.len() <= QUERIES * (cycles + 1),
        "{} queries during 100 requests and {cycles} background cycles",
        during.len()
    );
}

#[tokio::test]
async fn stale_model_answers_503_and_recovers() {
    let (mut emulators, targets) = replicas().await;
    let mut prom = PrometheusServer::start(&targets).await;
    let mut flags = FAST_FRESHNESS.to_vec();
    flags.extend(["--prometheus-query-timeout", "2s"]);
    let s = serve(&prom, &inventory(&emulators, 0), &flags).await;
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_ratio?labelSelector=target_name%3Dmistral-decode";
    mistral_desires_three(&s).await;

    // The model's replicas stop: its series go stale in Prometheus.
    let ports: Vec<u16> = emulators[3..].iter().map(|e| e.port).collect();
    for e in &mut emulators[3..] {
        e.proc.stop();
    }
    let stopped = Instant::now();
    let body = eventually(
        Duration::from_secs(20),
        "a 503 for the stopped model",
        || async {
            let (status, body) = s.get(path).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    println!(
        "503 after {:?} (stale threshold 4s, fetch interval 1s)",
        stopped.elapsed()
    );
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "ServiceUnavailable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(MISTRAL) && message.contains("old"),
        "{message}"
    );
    // The other model is unaffected.
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2")
    );

    // Replicas back on the same ports: normal answers again.
    for (p, (kv, q)) in ports.iter().zip([(0.75, 2.0), (0.76, 2.0)]) {
        emulators.push(Emulator::start_on(*p, MISTRAL, kv, q).await);
    }
    let restarted = Instant::now();
    mistral_desires_three(&s).await;
    println!(
        "recovered {:?} after the replicas restarted",
        restarted.elapsed()
    );

    // Prometheus itself goes down: the same 503. Requests never wait on
    // Prometheus (the client's 10 s timeout would fail the request; the
    // latency itself is in docs/benchmarks.md, "Outage timeline").
    prom.stop();
    let body = eventually(
        Duration::from_secs(20),
        "a 503 while Prometheus is down",
        || async {
            let (status, body) = s.get(path).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains(MISTRAL));
    prom.restart().await;
    mistral_desires_three(&s).await;
}

#[tokio::test]
async fn invalid_samples_are_rejected_and_do_not_change_the_decision() {
    let (emulators, targets) = replicas().await;
    let prom = PrometheusServer::start(&targets).await;
    let s = serve(
        &prom,
        &inventory(&emulators, 0),
        &[
            "--metrics-fetch-interval",
            "1s",
            "--metrics-cache-ttl",
            "1s",
        ],
    )
    .await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;
    // Every llama replica reports the bad value. Accepted, kv 1.7 would make
    // all three saturated and the model scale up (3 -> 4); NaN would leave
    // no usable spare. Rejected, each replica keeps its last good value
    // (.20/.30/.25): still 2.
    for (kv, reason, in_prometheus) in [
        (
            serde_json::json!(1.7),
            "out_of_range",
            "count(vllm:kv_cache_usage_perc{namespace=\"llm-a\"} > 1)",
        ),
        (
            serde_json::json!("NaN"),
            "not_finite",
            "count(vllm:kv_cache_usage_perc{namespace=\"llm-a\"} != vllm:kv_cache_usage_perc{namespace=\"llm-a\"})",
        ),
    ] {
        for e in &emulators[..3] {
            e.set_state(serde_json::json!({ "kv": kv })).await;
        }
        eventually(
            Duration::from_secs(30),
            &format!("Prometheus to hold the {reason} value of all three replicas"),
            || async {
                let r = prom.query(in_prometheus).await;
                (r.first().and_then(|v| v["value"][1].as_str()) == Some("3")).then_some(())
            },
        )
        .await;
        let rejected = || async { rejected_count(&s.text("/metrics").await, reason) };
        let before = rejected().await;
        // Two more cycles, each rejecting the three replicas' samples.
        eventually(
            Duration::from_secs(30),
            &format!("two cycles of {reason} rejections"),
            || async { (rejected().await >= before + 6.0).then_some(()) },
        )
        .await;
        assert_eq!(
            s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
                .await
                .as_deref(),
            Some("2"),
            "the decision is unchanged while {reason} samples are rejected"
        );
        for (e, good) in emulators[..3].iter().zip([0.20, 0.30, 0.25]) {
            e.set_state(serde_json::json!({ "kv": good })).await;
        }
    }
}

/// `wva_metrics_samples_rejected_total` of the Prometheus backend for
/// `reason`, summed over signals (0 when absent).
fn rejected_count(text: &str, reason: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("wva_metrics_samples_rejected_total{")
                && l.contains("backend=\"prometheus\"")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP proxy in front of Prometheus that holds every chunk of its
/// answers for a switchable delay: a Prometheus that is up but too slow.
struct DelayProxy {
    port: u16,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    async fn start(upstream_port: u16) -> DelayProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = Arc::clone(&delay_ms);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                let delay = Arc::clone(&delay);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match ur.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DelayProxy {
            port,
            delay_ms,
            task,
        }
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_slower_than_the_query_timeout_gives_503_not_hung_requests() {
    let (emulators, targets) = replicas().await;
    let prom = PrometheusServer::start(&targets).await;
    let prom_port: u16 = prom.url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = DelayProxy::start(prom_port).await;
    let url = format!("http://127.0.0.1:{}", proxy.port);
    let mut flags = FAST_FRESHNESS.to_vec();
    flags.extend(["--prometheus-query-timeout", "1s"]);
    let s = serve_url(&url, &inventory(&emulators, 0), &flags).await;
    let path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_ratio?labelSelector=target_name%3Dmistral-decode";
    mistral_desires_three(&s).await;

    // Every answer now takes 3 s, three times the query timeout.
    proxy.set_delay(Duration::from_secs(3));
    let slowest = std::sync::Mutex::new(Duration::ZERO);
    let body = eventually(
        Duration::from_secs(30),
        "a 503 while Prometheus is too slow",
        || async {
            let started = Instant::now();
            let (status, body) = s.get(path).await;
            let waited = started.elapsed();
            let mut worst = slowest.lock().unwrap();
            *worst = (*worst).max(waited);
            assert!(
                status == 200 || status == 503,
                "unexpected {status}: {body}"
            );
            (status == 503).then_some(body)
        },
    )
    .await;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 503);
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert!(
        body["message"].as_str().unwrap().contains(MISTRAL),
        "{body}"
    );
    // Requests never wait on the slow backend: a request that did would
    // run into the client's timeout and fail above. The figure is printed
    // for docs/benchmarks.md, not asserted (noisy machines).
    let slowest = *slowest.lock().unwrap();
    println!("503 reached; slowest request {slowest:?}");

    // Prometheus answers promptly again: normal answers return.
    proxy.set_delay(Duration::ZERO);
    mistral_desires_three(&s).await;
}
