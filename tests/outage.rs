//! Faults never reach the HPA: with the metrics backend gone (Prometheus
//! killed, a pod's `/metrics` refusing connections or accepting and never
//! answering), values requests keep answering at once: 200 with the last
//! decision while the data is younger than `--metrics-stale-after`, then a
//! 503 Status naming the model and the age of its data; and 200 with fresh
//! data once the backend is back.
//!
//! Requests here use a client timeout of 2 s: a request path that waited on
//! the network would run into the 30 s default query timeout (as it did
//! before) and fail these tests. The latency itself is a benchmark
//! (docs/benchmarks.md, "Outage timeline"), not an assertion.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::prometheus::{PrometheusServer, Target};
use common::{eventually, two_model_emulators, two_model_inventory, Emulator, Server};

const MISTRAL: &str = "mistral-7b";
const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_replicas?labelSelector=target_name%3Dmistral-decode";
/// Stale threshold of these tests: short, so that the 503 comes within seconds.
const STALE_SECS: u64 = 5;

/// One observation of the values endpoint during an outage.
#[derive(Debug)]
struct Observation {
    after: Duration,
    latency: Duration,
    status: u16,
    value: Option<String>,
    message: String,
}

/// Asks every 200 ms from the start of the outage until 503s have been
/// seen for two seconds (at most 40 s), and checks the shape of the
/// timeline: 200 with the last decision, then 503 naming the model and its
/// age, never back and forth, never a request that ran into the client's
/// 2 s timeout.
async fn observe_outage(s: &Server, outage: Instant) -> Vec<Observation> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(s.ca_path()).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let mut first_503: Option<Duration> = None;
    while outage.elapsed() < Duration::from_secs(40) {
        let asked = Instant::now();
        let r = client
            .get(format!("{}{PATH}", s.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("a request during the outage failed: {e}"));
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("a JSON body");
        let latency = asked.elapsed();
        let after = outage.elapsed();
        seen.push(Observation {
            after,
            latency,
            status,
            value: body["items"][0]["value"].as_str().map(str::to_owned),
            message: body["message"].as_str().unwrap_or_default().to_owned(),
        });
        if status == 503 {
            assert_eq!(body["kind"], "Status", "{body}");
            assert_eq!(body["reason"], "ServiceUnavailable", "{body}");
            first_503.get_or_insert(after);
        }
        if first_503.is_some_and(|t| after > t + Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = first_503.unwrap_or_else(|| panic!("no 503 within 40 s: {seen:?}"));
    let (before, after): (Vec<&Observation>, Vec<&Observation>) =
        seen.iter().partition(|o| o.after < first);
    assert!(
        !before.is_empty(),
        "the last decision is served while the data is young: {seen:?}"
    );
    for o in &before {
        assert_eq!(
            (o.status, o.value.as_deref()),
            (200, Some("3")),
            "before the stale threshold: the last decision ({seen:?})"
        );
    }
    for o in &after {
        assert_eq!(o.status, 503, "once stale, stays 503 ({seen:?})");
        assert!(
            o.message.contains(MISTRAL) && o.message.contains("s old")
                || o.message.contains("not been reached for"),
            "the message names the model and the age: {}",
            o.message
        );
        assert!(o.message.contains(MISTRAL), "{}", o.message);
    }
    // The stale threshold, not a timeout, is what turned the answer: the
    // last 200 came when the data was at most STALE_SECS old (plus the
    // fetch and scrape intervals), so at least ~STALE_SECS minus those
    // after the outage began.
    assert!(
        first >= Duration::from_secs(STALE_SECS - 3),
        "503 came too early ({first:?}) for a {STALE_SECS}s stale threshold: {seen:?}"
    );
    seen
}

/// Prints the timeline (for docs/benchmarks.md): one line per second of
/// the outage with the statuses and the slowest answer in it.
fn print_timeline(what: &str, seen: &[Observation]) {
    let first = seen.iter().find(|o| o.status == 503).map(|o| o.after);
    let slowest = seen.iter().map(|o| o.latency).max().unwrap_or_default();
    println!(
        "{what}: {} requests, first 503 after {first:?}, slowest answer {slowest:?}",
        seen.len()
    );
    let mut second = 0;
    while let Some(window) = Some(
        seen.iter()
            .filter(|o| o.after.as_secs() == second)
            .collect::<Vec<_>>(),
    )
    .filter(|w| !w.is_empty())
    {
        let statuses: Vec<u16> = window.iter().map(|o| o.status).collect();
        let worst = window.iter().map(|o| o.latency).max().unwrap_or_default();
        println!("  t+{second:>2}s statuses {statuses:?} slowest {worst:?}");
        second += 1;
    }
}

/// `serve` over the two-model inventory on `ports` with `extra` flags, data
/// fresh within 2 s and stale after STALE_SECS, once mistral answers 3.
async fn outage_server(ports: &[u16], extra: &[&str]) -> Server {
    let stale = format!("{STALE_SECS}s");
    let mut args = extra.to_vec();
    args.extend_from_slice(&[
        "--metrics-fresh-within",
        "2s",
        "--metrics-stale-after",
        &stale,
    ]);
    let s = Server::with_inventory(&two_model_inventory(ports), &args).await;
    s.wait_mistral_at_3().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_killed_and_restarted() {
    let emulators = two_model_emulators().await;
    let targets: Vec<Target> = emulators
        .iter()
        .enumerate()
        .map(|(i, e)| Target {
            port: e.port,
            namespace: if i < 3 { "llm-a" } else { "llm-b" }.into(),
            pod: if i < 3 {
                format!("llama-decode-{i}")
            } else {
                format!("mistral-decode-{}", i - 3)
            },
        })
        .collect();
    let mut prom = PrometheusServer::start(&targets).await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    // Default fetch interval and query timeout (30 s): only the freshness
    // thresholds are shortened.
    let s = outage_server(
        &ports,
        &[
            "--metrics-backend",
            "prometheus",
            "--prometheus-url",
            &prom.url(),
            "--metrics-unavailable-after",
            "60s",
        ],
    )
    .await;

    prom.stop();
    let seen = observe_outage(&s, Instant::now()).await;
    print_timeline("Prometheus killed", &seen);

    let restarted = Instant::now();
    prom.restart().await;
    s.wait_mistral_at_3().await;
    println!("200 again {:?} after the restart", restarted.elapsed());
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("wva_backend_errors_total{backend=\"prometheus\""),
        "failed queries are counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_pods_refusing_connections() {
    let mut emulators = two_model_emulators().await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let s = outage_server(&ports, &["--metrics-backend", "scrape"]).await;

    // The mistral replicas die: connections to them are refused.
    for e in &mut emulators[3..] {
        e.proc.stop();
    }
    let seen = observe_outage(&s, Instant::now()).await;
    print_timeline("pods refusing connections", &seen);
    // The other model keeps its answer.
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2")
    );

    for (p, kv) in ports[3..].iter().zip([0.75, 0.76]) {
        emulators.push(Emulator::start_on(*p, MISTRAL, kv, 2.0).await);
    }
    s.wait_mistral_at_3().await;
}

/// A TCP front for a replica that either forwards to it or, once switched
/// to hang, stops answering on every connection (old and new) while
/// keeping them open: a pod that accepts and never answers.
struct HangingFront {
    port: u16,
    hang: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HangingFront {
    async fn start(upstream: u16) -> HangingFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hang, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if !*watch.borrow_and_update() {
                        let Ok(mut up) =
                            tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut up) => return,
                            _ = watch.wait_for(|h| *h) => {}
                        }
                    }
                    // Hold the connection open and say nothing (bounded).
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(client);
                });
            }
        });
        HangingFront { port, hang, task }
    }

    fn set_hang(&self, hang: bool) {
        let _ = self.hang.send(hang);
    }
}

impl Drop for HangingFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_pods_that_accept_and_never_answer() {
    let emulators = two_model_emulators().await;
    let mut fronts = Vec::new();
    for e in &emulators[3..] {
        fronts.push(HangingFront::start(e.port).await);
    }
    let mut ports: Vec<u16> = emulators[..3].iter().map(|e| e.port).collect();
    ports.extend(fronts.iter().map(|f| f.port));
    let s = outage_server(
        &ports,
        &["--metrics-backend", "scrape", "--scrape-timeout", "2s"],
    )
    .await;

    for f in &fronts {
        f.set_hang(true);
    }
    let seen = observe_outage(&s, Instant::now()).await;
    print_timeline("pods that never answer", &seen);

    for f in &fronts {
        f.set_hang(false);
    }
    eventually(
        Duration::from_secs(20),
        "fresh data after the pods answer again",
        || async {
            (s.value(
                "llm-b",
                "wva_desired_replicas",
                "target_name=mistral-decode",
            )
            .await
            .as_deref()
                == Some("3"))
            .then_some(())
        },
    )
    .await;
}
