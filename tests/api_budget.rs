//! Calls to the API server are bounded (issue 23): the client-side QPS and
//! burst hold for every call the server makes (watches excepted), status
//! writes are queued and their backlog exported, failed writes are retried
//! with backoff honouring `Retry-After`, and a 403 is logged once naming
//! the missing permission. Against the in-process API server, with the real
//! kube client in a real `serve` process.

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
/// Bound of every wait; each ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(60);

fn va(name: &str, model: &str) -> Value {
    json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "modelID": model, "minReplicas": 1, "maxReplicas": 10}
    })
}

fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

/// `n` VariantAutoscalings (10 models), each with its Deployment.
fn populate(api: &ApiServer, n: usize) {
    for i in 0..n {
        let name = format!("v{i:04}");
        api.apply(deployment(&name, 2));
        api.apply(va(&name, &format!("model-{}", i % 10)));
    }
}

async fn serve(api: &ApiServer, extra: &[&str]) -> Server {
    Server::start_kube(api, extra, &[]).await
}

fn written(api: &ApiServer, name: &str) -> bool {
    api.object("variantautoscalings", NS, name)
        .is_some_and(|o| o["status"]["desiredOptimizedAlloc"]["numReplicas"].is_number())
}

/// Calls of the `reviews` budget (TokenReview, SubjectAccessReview) and
/// of the `main` one (everything else).
fn is_review(path: &str) -> bool {
    path.ends_with("reviews")
}

fn is_main(path: &str) -> bool {
    !is_review(path)
}

/// The most calls of one budget that may *arrive* within 1 s: burst + qps
/// x 1 s, and 0.1 s more of qps for the time between a call leaving the
/// client and the API server recording it, which varies (a call sent
/// later can be recorded sooner after the one before it).
fn bound(burst: usize, qps: f64) -> usize {
    burst + (qps * 1.1) as usize
}

/// The value of an unlabelled (or first matching) sample in /metrics text.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn calls_to_the_api_server_stay_within_qps_and_burst() {
    const N: usize = 150;
    const QPS: f64 = 40.0;
    const BURST: usize = 10;
    let api = ApiServer::start().await;
    populate(&api, N);
    let server = serve(&api, &["--kube-api-qps", "40", "--kube-api-burst", "10"]).await;
    // Every status written (and its Event sent): 150 writes + 150 Events
    // + the lists, paced at 40 a second.
    let saw_backlog = std::sync::atomic::AtomicBool::new(false);
    eventually(WAIT, "every status written", || async {
        let text = server.text("/metrics").await;
        if metric(&text, "wva_status_writes_pending").is_some_and(|p| p > 0.0) {
            saw_backlog.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        (0..N)
            .all(|i| written(&api, &format!("v{i:04}")))
            .then_some(())
    })
    .await;
    let saw_backlog = saw_backlog.load(std::sync::atomic::Ordering::SeqCst);
    let text = eventually(
        WAIT,
        "the backlog to drain and the Events to go out",
        || async {
            let text = server.text("/metrics").await;
            let events = metric(&text, "wva_events_total{result=\"sent\"}").unwrap_or(0.0);
            (metric(&text, "wva_status_writes_pending") == Some(0.0) && events >= N as f64)
                .then_some(text)
        },
    )
    .await;
    assert!(
        saw_backlog,
        "the backlog showed in /metrics while writes waited"
    );
    assert_eq!(
        metric(&text, "wva_status_writes_total{result=\"ok\"}"),
        Some(N as f64),
        "one write per VariantAutoscaling"
    );
    let calls = api.calls();
    let patches = calls
        .iter()
        .filter(|c| c.1 == "PATCH" && c.2.ends_with("/status"))
        .count();
    let posts = calls.iter().filter(|c| c.1 == "POST").count();
    assert_eq!(patches, N, "status writes");
    assert!(posts >= N, "Events (and reviews): {posts}");
    // The bound of a token bucket: burst + qps x window, for every window,
    // per budget (reviews have their own).
    for (budget, keep) in [
        ("main", is_main as fn(&str) -> bool),
        ("reviews", is_review),
    ] {
        let most = api.max_calls_within_matching(Duration::from_secs(1), keep);
        assert!(
            most <= bound(BURST, QPS),
            "{budget}: {most} calls within one second (qps {QPS}, burst {BURST})"
        );
    }
    // And the calls were paced, not merely few: the whole run took at
    // least (calls - burst) / qps.
    let span = calls.last().unwrap().0 - calls.first().unwrap().0;
    let floor = Duration::from_secs_f64((calls.len() - 2 * BURST) as f64 / QPS);
    assert!(
        span >= floor,
        "{} calls in {span:?}: faster than {QPS} a second",
        calls.len()
    );
    assert!(
        metric(&text, "wva_kube_api_requests_total{budget=\"main\"}").unwrap_or(0.0)
            >= (2 * N) as f64,
        "{text}"
    );
    assert!(
        metric(&text, "wva_kube_api_requests_total{budget=\"reviews\"}").unwrap_or(0.0) >= 1.0,
        "the /metrics reads above were authorized by SubjectAccessReviews on their own budget"
    );
}

#[tokio::test]
async fn failed_status_writes_are_retried_honouring_retry_after() {
    let api = ApiServer::start().await;
    populate(&api, 1);
    api.fail_status_patches(&[(429, 2), (500, 0), (409, 0)]);
    let server = serve(&api, &[]).await;
    eventually(WAIT, "the status written after the failures", || async {
        written(&api, "v0000").then_some(())
    })
    .await;
    let answers = api.status_answers();
    let codes: Vec<u16> = answers.iter().map(|a| a.1).collect();
    assert_eq!(codes, [429, 500, 409, 200], "retried until written, once");
    let after_429 = answers[1].0 - answers[0].0;
    assert!(
        after_429 >= Duration::from_secs(2),
        "the retry after a 429 with Retry-After: 2 came {after_429:?} later"
    );
    let text = server.text("/metrics").await;
    assert_eq!(
        metric(&text, "wva_status_writes_total{result=\"retry\"}"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "wva_kube_api_retry_after_total{budget=\"main\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_forbidden_status_write_is_logged_once_naming_the_permission() {
    let api = ApiServer::start().await;
    populate(&api, 3);
    api.fail_status_patches(&[(403, 0), (403, 0), (403, 0)]);
    let server = serve(&api, &[]).await;
    eventually(WAIT, "three forbidden writes", || async {
        (api.status_answers().len() >= 3).then_some(())
    })
    .await;
    let text = eventually(WAIT, "three forbidden writes counted", || async {
        let text = server.text("/metrics").await;
        (metric(&text, "wva_status_writes_total{result=\"forbidden\"}") == Some(3.0))
            .then_some(text)
    })
    .await;
    // Retried every minute, not every cycle: nothing else was sent over
    // the next cycles.
    server.wait_fetch_cycles(4).await;
    assert_eq!(api.status_answers().len(), 3, "{text}");
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lack of permission"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    assert!(
        lines[0].contains("patch variantautoscalings/status (API group llmd.ai)"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn forbidden_events_are_logged_once_naming_the_permission() {
    let api = ApiServer::start().await;
    populate(&api, 3);
    api.forbid_writes("events");
    let server = serve(&api, &[]).await;
    // Each VariantAutoscaling's first status brings two Events (a decision,
    // and metrics unavailable: it has no pods): six refused.
    let text = eventually(WAIT, "six refused Events", || async {
        let text = server.text("/metrics").await;
        (metric(&text, "wva_events_total{result=\"failed\"}") == Some(6.0)).then_some(text)
    })
    .await;
    assert_eq!(
        metric(&text, "wva_events_total{result=\"sent\"}"),
        None,
        "{text}"
    );
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lack of permission"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    assert!(
        lines[0].contains("create events (API group events.k8s.io)"),
        "{}",
        lines[0]
    );
    // The statuses were written all the same.
    assert!((0..3).all(|i| written(&api, &format!("v{i:04}"))));
}

#[tokio::test]
async fn a_forbidden_lease_is_logged_once_naming_the_permission() {
    let api = ApiServer::start().await;
    populate(&api, 1);
    api.forbid_writes("leases");
    let server = serve(&api, &["--leader-elect-retry-period", "500ms"]).await;
    let creates = || {
        api.calls()
            .iter()
            .filter(|c| c.1 == "POST" && c.2.ends_with("/leases"))
            .count()
    };
    eventually(WAIT, "three refused Lease creates", || async {
        (creates() >= 3).then_some(())
    })
    .await;
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lack of permission"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "logged once over {} attempts: {lines:?}",
        creates()
    );
    assert!(
        lines[0].contains("get, create, update leases (API group coordination.k8s.io)"),
        "{}",
        lines[0]
    );
    // Not the leader: nothing written.
    assert!(!written(&api, "v0000"));
}

#[tokio::test]
async fn a_forbidden_list_is_logged_once_naming_the_permission() {
    let api = ApiServer::start().await;
    populate(&api, 1);
    api.forbid("horizontalpodautoscalers");
    // Not ready while a source cannot list: launched without waiting.
    let server = Server::launch_kube(&api, &[], &[]);
    let lists = || {
        api.calls()
            .iter()
            .filter(|c| c.1 == "GET" && c.2 == "/apis/autoscaling/v2/horizontalpodautoscalers")
            .count()
    };
    // The watcher's backoff retries the list: wait for three refusals.
    eventually(WAIT, "three refused lists", || async {
        (lists() >= 3).then_some(())
    })
    .await;
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lack of permission"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "logged once over {} lists: {lines:?}",
        lists()
    );
    assert!(
        lines[0].contains("get, list, watch horizontalpodautoscalers (API group autoscaling)"),
        "{}",
        lines[0]
    );
}

/// The number of VariantAutoscalings whose status shows `replicas`.
fn statuses_at(api: &ApiServer, replicas: u32) -> usize {
    api.count_objects("variantautoscalings", NS, |o| {
        o["status"]["desiredOptimizedAlloc"]["numReplicas"] == replicas
    })
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let used: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    Duration::from_secs_f64(used / ticks)
}

/// A memory figure of a process in KiB (`VmHWM:` peak, `VmRSS:` now).
fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The most of `times` (sorted) within any `window`.
fn max_within(times: &[std::time::Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut first = 0;
    for (last, t) in times.iter().enumerate() {
        while *t - times[first] >= window {
            first += 1;
        }
        best = best.max(last - first + 1);
    }
    best
}

/// An HPA-like client: asks `wva_desired_replicas` of a different variant
/// every 100 ms until `stop` is set; returns the latencies of the 200
/// answers and the number of failed requests.
fn spawn_probe(
    server: &Server,
    n: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Duration>, usize)> {
    let client = server.client.clone();
    let base = server.base.clone();
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut failures = 0;
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let url = format!(
                "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dv{:04}",
                (i * 7919) % n
            );
            i += 1;
            let t = std::time::Instant::now();
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        latencies.sort();
        (latencies, failures)
    })
}

/// Benchmark (docs/benchmarks.md, "API server traffic"): `BENCH_VAS`
/// VariantAutoscalings (default 10,000, in 1,000 models) whose decisions
/// all change at once, with `--kube-api-qps BENCH_QPS` (default 20, the
/// server's default) and burst 2 x QPS. Reports the calls per second the
/// API server saw, the time until every status is current, the latency of
/// HPA requests meanwhile (and for 20 s before, as the baseline), and the
/// memory of the server and of this process (the in-process API server).
///
/// cargo test --release --test api_budget -- --ignored --nocapture bench_
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: minutes of run time"]
async fn bench_all_decisions_change_at_once() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("BENCH_VAS", 10_000);
    let qps = env("BENCH_QPS", 20);
    let burst = env("BENCH_BURST", 2 * qps);
    let api = ApiServer::start().await;
    for i in 0..n {
        let name = format!("v{i:04}");
        api.apply(deployment(&name, 2));
        api.apply(va(&name, &format!("model-{}", i % 1000)));
    }
    let (qps_s, burst_s) = (qps.to_string(), burst.to_string());
    let started = std::time::Instant::now();
    let server = serve(
        &api,
        &[
            "--kube-api-qps",
            &qps_s,
            "--kube-api-burst",
            &burst_s,
            // A fetch cycle (and a status plan over every variant) each 2 s.
            "--scrape-interval",
            "2s",
        ],
    )
    .await;
    let pid = server.proc.child.id();
    let long = Duration::from_secs(3 * 3600);
    let mut last_report = std::time::Instant::now();
    eventually(long, "the first statuses", || {
        let at = statuses_at(&api, 2);
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = std::time::Instant::now();
            eprintln!(
                "  {:>5.0?}: {at} of {n} initial statuses written",
                started.elapsed()
            );
        }
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (at == n).then_some(())
        }
    })
    .await;
    let initial = started.elapsed();
    let initial_calls = api.calls().len();
    eprintln!("initial statuses of {n} VariantAutoscalings written in {initial:.1?} ({initial_calls} calls, including the lists)");
    // The baseline: HPA requests with no status backlog, for 20 s. It also
    // takes the last status writes past --status-min-interval (10 s), so
    // that the change phase measures the rate limit, not that interval.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idle_probe = spawn_probe(&server, n, std::sync::Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (idle_latencies, idle_failures) = idle_probe.await.unwrap();

    // HPA requests to our API, every 100 ms, while the backlog drains.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = spawn_probe(&server, n, std::sync::Arc::clone(&stop));
    // Every decision changes at once: each Deployment goes from 2 to 3
    // replicas (no pods, so each variant holds at its new count).
    let calls_before = api.calls().len();
    let cpu_before = cpu_time(pid);
    let t0 = std::time::Instant::now();
    for i in 0..n {
        api.apply(deployment(&format!("v{i:04}"), 3));
    }
    let mut max_backlog = 0.0f64;
    let mut last_report = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = server.text("/metrics").await;
        let backlog = metric(&text, "wva_status_writes_pending").unwrap_or(0.0);
        max_backlog = max_backlog.max(backlog);
        let at = statuses_at(&api, 3);
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = std::time::Instant::now();
            eprintln!(
                "  {:>5.0?}: {at} of {n} statuses current, backlog {backlog}, {} calls",
                t0.elapsed(),
                api.calls().len() - calls_before
            );
        }
        if at == n {
            break;
        }
        assert!(t0.elapsed() < long, "statuses not current within {long:?}");
    }
    let current = t0.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (latencies, failures) = probe.await.unwrap();
    let calls: Vec<_> = api.calls()[calls_before..].to_vec();
    let t_end = t0 + current;
    let in_phase: Vec<_> = calls.iter().filter(|c| c.0 <= t_end).collect();
    let mut per_second = vec![0usize; current.as_secs() as usize + 1];
    for c in &in_phase {
        let s = (c.0.saturating_duration_since(t0)).as_secs() as usize;
        if let Some(b) = per_second.get_mut(s) {
            *b += 1;
        }
    }
    let patches = in_phase
        .iter()
        .filter(|c| c.1 == "PATCH" && c.2.ends_with("/status"))
        .count();
    let events = in_phase.iter().filter(|c| c.2.contains("/events")).count();
    let reviews = in_phase.iter().filter(|c| c.2.contains("reviews")).count();
    let full_seconds = &per_second[..per_second.len().saturating_sub(1)];
    let times: Vec<_> = in_phase.iter().map(|c| c.0).collect();
    let phase_window = max_within(&times, Duration::from_secs(1));
    let main_window = api.max_calls_within_matching(Duration::from_secs(1), is_main);
    // After the first second (the bucket's burst): the sustained rate.
    let sustained = in_phase
        .iter()
        .filter(|c| c.0 >= t0 + Duration::from_secs(1))
        .count() as f64
        / (current.as_secs_f64() - 1.0).max(1.0);
    let text = server.text("/metrics").await;
    let p = |l: &[Duration], q: f64| percentile(l, q);
    eprintln!(
        "\n| VariantAutoscalings | QPS / burst | calls in the change phase (status PATCH / Events, new or series / reviews) | calls per second: mean / after the first second / max 1 s bucket | most calls in any 1 s window: change phase / whole run (main budget) | time until every status is current | largest backlog | HPA requests before (n / p50 / p99 / max / failed) | HPA requests meanwhile (n / p50 / p99 / max / failed) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n| {n} | {qps} / {burst} | {} ({patches} / {events} / {reviews}) | {:.1} / {sustained:.1} / {} | {phase_window} / {main_window} | {current:.1?} | {max_backlog} | {} / {:.1?} / {:.1?} / {:.1?} / {idle_failures} | {} / {:.1?} / {:.1?} / {:.1?} / {failures} |",
        in_phase.len(),
        in_phase.len() as f64 / current.as_secs_f64(),
        full_seconds.iter().max().copied().unwrap_or(0),
        idle_latencies.len(),
        p(&idle_latencies, 0.5),
        p(&idle_latencies, 0.99),
        idle_latencies.last().copied().unwrap_or_default(),
        latencies.len(),
        p(&latencies, 0.5),
        p(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "initial phase {initial:.1?}; serve: CPU {cpu:.1?} in the change phase, peak RSS {} MiB, RSS now {} MiB; this process (in-process API server, {} calls recorded): peak RSS {} MiB",
        kib(pid, "VmHWM:") / 1024,
        kib(pid, "VmRSS:") / 1024,
        api.calls().len(),
        kib(std::process::id(), "VmHWM:") / 1024,
    );
    for line in text.lines().filter(|l| {
        l.starts_with("wva_status_writes")
            || l.starts_with("wva_events_total")
            || l.starts_with("wva_kube_api")
    }) {
        eprintln!("{line}");
    }
    let main_most = api.max_calls_within_matching(Duration::from_secs(1), is_main);
    assert!(
        main_most <= bound(burst, qps as f64),
        "{main_most} calls of the main budget within one second: more than burst + qps"
    );
}
