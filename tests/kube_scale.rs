//! Memory of `serve --inventory kube` at scale (docs/benchmarks.md,
//! "Memory"): the generated fleet (`src/emulator/fleet.rs`: VariantAutoscalings,
//! Deployments, ready Pods) in the in-process API server, which lists in
//! pages as a real one does, the Prometheus backend against the fleet's
//! emulated Prometheus API, fetching every 5 s, and a values request every
//! 200 ms throughout. Prints the peak RSS (VmHWM) of `serve`.
//!
//! ```text
//! BENCH_VARIANTS=10000 cargo test --release --test kube_scale -- --ignored --nocapture
//! ```
#![cfg(feature = "emulator")] // the emulator's fleet generator and emulated Prometheus

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::Server;
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::emulator::prometheus_api;

/// A field of /proc/PID/status in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of run time"]
async fn bench_kube_inventory_memory() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let variants = env("BENCH_VARIANTS", 10_000);
    let pods_per_variant = env("BENCH_PODS_PER_VARIANT", 10);
    let seconds = env("BENCH_SECONDS", 60) as u64;
    let fleet = Fleet::new(variants, pods_per_variant);
    let api = ApiServer::start().await;
    let t = Instant::now();
    for object in fleet.object_values() {
        api.apply(object);
    }
    eprintln!(
        "{} objects in the API server after {:.1?}",
        variants * (2 + pods_per_variant),
        t.elapsed()
    );
    let prometheus = prometheus_api::start("127.0.0.1:0".parse().unwrap(), fleet)
        .await
        .unwrap();
    let url = format!("http://{}", prometheus.addr());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).display().to_string();
    let server = Server::launch(
        dir,
        &[
            "--inventory",
            "kube",
            "--namespace",
            "wva-system",
            "--metrics-backend",
            "prometheus",
            "--prometheus-url",
            &url,
            "--metrics-fetch-interval",
            "5s",
            "--metrics-cache-ttl",
            "1h",
        ],
        &[("KUBECONFIG", &kubeconfig)],
        true,
    );
    let pid = server.proc.child.id();
    let started = Instant::now();
    // The first answer: the inventory is listed and a fetch cycle applied.
    let ns = fleet.namespace(42);
    let selector = format!("target_name={}", fleet.target_name(42));
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/wva_desired_ratio?labelSelector={}",
        server.base,
        common::urlencode(&selector)
    );
    // Not listening yet, or not ready: ask again.
    let wait = Duration::from_secs(env("BENCH_WAIT_SECONDS", 600) as u64);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let last = match server.client.get(&url).send().await {
            Ok(r) if r.status() == 200 => break,
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            started.elapsed() < wait,
            "no answer within {wait:?}; last: {last}; serve's log:\n{}",
            server.log()
        );
    }
    eprintln!(
        "first answer after {:.1?}; RSS {}, peak {}",
        started.elapsed(),
        mib(status_kib(pid, "VmRSS:")),
        mib(status_kib(pid, "VmHWM:"))
    );
    // Fetch cycles every 5 s, a request every 200 ms, all answered.
    let until = Instant::now() + Duration::from_secs(seconds);
    let (mut ok, mut failed) = (0u32, 0u32);
    let queries_before = prometheus.queries();
    while Instant::now() < until {
        match server.value(&ns, "wva_desired_ratio", &selector).await {
            Some(_) => ok += 1,
            None => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queries = prometheus.queries() - queries_before;
    eprintln!(
        "{seconds} s: {ok} answers, {failed} failed, {queries} Prometheus queries; serve RSS {}, peak (VmHWM) {}",
        mib(status_kib(pid, "VmRSS:")),
        mib(status_kib(pid, "VmHWM:"))
    );
    assert_eq!(failed, 0, "every request answered");
}
