//! Issue 31 end to end: `analyzerName: slo` on a real `serve` over real
//! `emulate` replicas driven through a load step, with both metrics
//! backends (direct scrape, and a real Prometheus). The objective comes
//! from an upstream service-classes file (`--service-classes-config`).
//!
//! The emulators finish requests of 512 prompt and 128 generated tokens
//! (584 tokens per sequence with half the output and half a 16-token
//! block: 56.1 sequences in a 2048 x 16 cache). Before the step each of the
//! four replicas finishes 2 req/s with 10 running (5 s per request): 8 req/s
//! in all, two replicas' worth at the objective with the 15 % margin. At
//! the step each runs 55, finishes 11 req/s and holds 2 waiting: 44 req/s
//! arrive and 8 requests wait. A replica carries 9.0 req/s at the objective
//! (p95 of sequences within the cache), the backlog is drained within the
//! objective (2 s: 4 req/s more), so the objective needs ceil(48 / 9.0) = 6
//! replicas. The served count must be the one computed from the emulators'
//! own counters (read by the test from their `/metrics` over the minute
//! after the step), and the served ratio, put through the HPA's algorithm
//! from 4 ready replicas, must move the Deployment in one step to within
//! one of what the objective needs.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::time::Duration;

use common::prometheus::{PrometheusServer, Target};
use common::{eventually, variant_yaml, Emulator, Server, VariantSpec};
use serde_json::json;
use wva_metrics_server::hpa::{
    external_metric_proposal, BehaviorState, ExternalTarget, HpaBehavior, ScaleState, Tolerances,
};
use wva_metrics_server::k8s::quantity::parse_milli;
use wva_metrics_server::saturation::slo::sizing::{replicas_for, ReplicaShape, Z_P95};

const NS: &str = "llm";
const MODEL: &str = "meta/llama-3.1-8b";
const SELECTOR: &str = "target_name=llama-decode";
const CLASSES: &str = "premium.yaml: |\n  name: Premium\n  priority: 1\n  data:\n    - model: meta/llama-3.1-8b\n      slo-ttft: 2000\n      slo-tpot: 50\n    - model: default/default\n      slo-ttft: 10000\n      slo-tpot: 200\n";

/// The replicas the objective needs for the true load after the step:
/// 44 req/s, and 8 waiting drained within the 2 s objective.
fn needed() -> u32 {
    let tokens = 512.0 + 128.0 / 2.0 + 8.0;
    let shape = ReplicaShape {
        sequences: 2048.0 * 16.0 / tokens,
        seconds_per_request: 5.0,
    };
    replicas_for(44.0 + 8.0 / 2.0, shape.max_rate(Z_P95, 0.0))
}

async fn replicas() -> Vec<Emulator> {
    let mut out = Vec::new();
    for _ in 0..4 {
        let e = Emulator::start_with(
            MODEL,
            0.18,
            0.0,
            &[
                "--num-gpu-blocks",
                "2048",
                "--block-size",
                "16",
                "--request-rate",
                "2",
            ],
        )
        .await;
        e.set_state(json!({"running": 10})).await;
        out.push(e);
    }
    out
}

async fn serve(emulators: &[Emulator], backend: &[&str]) -> (Server, tempfile::TempDir) {
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let inventory = variant_yaml(
        &VariantSpec {
            namespace: NS,
            variant: "llama-a100",
            target: "llama-decode",
            model: MODEL,
            min: 1,
            max: 20,
            ready: 4,
        },
        &ports,
    );
    let dir = tempfile::tempdir().unwrap();
    let thresholds = dir.path().join("thresholds.yaml");
    std::fs::write(&thresholds, "default: |\n  analyzerName: slo\n").unwrap();
    let classes = dir.path().join("classes.yaml");
    std::fs::write(&classes, CLASSES).unwrap();
    let (t, c) = (
        thresholds.display().to_string(),
        classes.display().to_string(),
    );
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, inventory).unwrap();
    let inv = format!("file:{}", path.display());
    let mut args = vec![
        "--inventory",
        &inv,
        "--saturation-config",
        &t,
        "--service-classes-config",
        &c,
    ];
    args.extend_from_slice(backend);
    // With its log kept (`Server::log`) for the failure messages.
    let s = Server::start_with(tempfile::tempdir().unwrap(), &args, &[], true).await;
    (s, dir)
}

/// The served answer for the variant: (analyzer label, desired replicas).
async fn answer(s: &Server) -> Option<(String, u32)> {
    let (status, body) = s
        .get(&format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector={}",
            common::urlencode(SELECTOR)
        ))
        .await;
    let item = &body["items"][0];
    let desired = item["value"].as_str()?.parse().ok()?;
    let analyzer = item["metricLabels"]["analyzer"].as_str()?.to_owned();
    (status == 200).then_some((analyzer, desired))
}

/// What the test reads of one emulator's `/metrics`, as vLLM exposes it.
#[derive(Debug, Clone, Copy)]
struct Counters {
    at: tokio::time::Instant,
    completed: f64,
    prompt: (f64, f64),
    generation: (f64, f64),
    running: f64,
    waiting: f64,
}

async fn counters(e: &Emulator) -> Counters {
    let text = common::http_client()
        .get(format!("http://127.0.0.1:{}/metrics", e.port))
        .send()
        .await
        .expect("emulator /metrics")
        .text()
        .await
        .expect("emulator page");
    let at = tokio::time::Instant::now();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Counters {
        at,
        completed: sum("vllm:request_success_total"),
        prompt: (
            sum("vllm:request_prompt_tokens_sum"),
            sum("vllm:request_prompt_tokens_count"),
        ),
        generation: (
            sum("vllm:request_generation_tokens_sum"),
            sum("vllm:request_generation_tokens_count"),
        ),
        running: sum("vllm:num_requests_running"),
        waiting: sum("vllm:num_requests_waiting"),
    }
}

/// The replica count the analysis computes from the emulators' counters
/// between `from` and `to`: completions per second (arrivals, the queue
/// being steady), time per request by Little's law (running over
/// completions), tokens per sequence from the token histograms, the p95
/// rule per replica in the 2048 x 16 cache, and each replica's capacity
/// held by its own queue for the part of the start-up delay (120 s by
/// default, none learned here) it needs to finish that queue with a full
/// cache (vLLM keeps a queued request on its replica).
fn count_from_counters(from: &[Counters], to: &[Counters]) -> (u32, f64) {
    let (mut rate, mut running) = (0.0, 0.0);
    let mut waiting = Vec::new();
    let (mut prompt, mut generation) = ((0.0, 0.0), (0.0, 0.0));
    for (a, b) in from.iter().zip(to) {
        rate += (b.completed - a.completed) / (b.at - a.at).as_secs_f64();
        running += b.running;
        waiting.push(b.waiting);
        prompt.0 += b.prompt.0 - a.prompt.0;
        prompt.1 += b.prompt.1 - a.prompt.1;
        generation.0 += b.generation.0 - a.generation.0;
        generation.1 += b.generation.1 - a.generation.1;
    }
    let tokens = prompt.0 / prompt.1 + generation.0 / generation.1 / 2.0 + 16.0 / 2.0;
    let shape = ReplicaShape {
        sequences: 2048.0 * 16.0 / tokens,
        seconds_per_request: running / rate,
    };
    let per_replica = shape.max_rate(Z_P95, 0.0);
    let full = shape.sequences / shape.seconds_per_request;
    let startup = 120.0;
    let held: f64 = waiting
        .iter()
        .map(|w| per_replica * (w / (full * startup)).min(1.0))
        .sum();
    (replicas_for(rate + held, per_replica), rate)
}

async fn load_step(s: &Server, emulators: &[Emulator]) {
    // Before the step: 8 req/s on four replicas; the analysis learns 5 s
    // per request from a busy minute and asks for 2. Until it has a
    // completion rate (two readings of the counter) V2 decides and the
    // label says so.
    eventually(
        Duration::from_secs(240),
        "slo (not its V2 fallback) to answer 2 before the step",
        || async { (answer(s).await? == ("slo".to_owned(), 2)).then_some(()) },
    )
    .await;

    // The step: the replicas fill, finish at capacity, and queue a little.
    for e in emulators {
        e.set_state(json!({"kv": 0.98, "running": 55, "request_rate": 11, "waiting": 2}))
            .await;
    }
    let mut from = Vec::new();
    for e in emulators {
        from.push(counters(e).await);
    }
    // The completion rate and the token means are one-minute windows: the
    // answer is the step's once every replica has finished a minute of
    // requests at the new rate since the step (read from its counters),
    // and the server has fetched twice since.
    eventually(
        Duration::from_secs(240),
        "a minute of completions at 11 req/s on every replica after the step",
        || async {
            for (e, a) in emulators.iter().zip(&from) {
                if counters(e).await.completed - a.completed < 11.0 * 60.0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    s.wait_fetch_cycles(2).await;
    let served = answer(s).await;
    let mut to = Vec::new();
    for e in emulators {
        to.push(counters(e).await);
    }
    let (computed, rate) = count_from_counters(&from, &to);
    let log = s.log();
    assert_eq!(
        served,
        Some(("slo".to_owned(), computed)),
        "served answer against the count computed from the counters ({rate:.2} req/s)\n{log}"
    );
    // `/metrics` says why: on one page (one sweep), the rate sized for over
    // the rate one replica carries, rounded up, is the count asked for (a
    // scale-up from 4 adds whole replicas of that rate), and the arrivals
    // are the completions the test counted (the queues are steady).
    let page = s.text("/metrics").await;
    let gauge = |name: &str| -> f64 {
        page.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} on /metrics:\n{page}"))
    };
    let sized = gauge("wva_slo_sized_requests_per_second");
    let per_replica = gauge("wva_slo_replica_requests_per_second");
    assert_eq!(
        (sized / per_replica).ceil(),
        gauge("wva_desired_replicas"),
        "{sized} req/s sized, {per_replica} per replica"
    );
    let arrivals = gauge("wva_slo_arrivals_per_second");
    assert!(
        (arrivals - rate).abs() <= 0.15 * rate,
        "arrivals {arrivals} req/s against {rate:.2} counted"
    );
    assert!(gauge("wva_slo_request_seconds") > 0.0);
    let ratio = s
        .value(NS, "wva_desired_ratio", SELECTOR)
        .await
        .expect("the ratio is served");
    let served_ratio = parse_milli(&ratio).expect("a quantity");
    // The HPA (Value: 1) on 4 ready replicas.
    let scale = ScaleState {
        spec_replicas: 4,
        status_replicas: 4,
        ready_pods: 4,
    };
    let proposal = external_metric_proposal(
        &[served_ratio],
        ExternalTarget::Value { milli: 1000 },
        &scale,
        &Tolerances::default(),
    )
    .unwrap();
    let mut behavior = BehaviorState::new(0.0, 4);
    let next = behavior.next_replicas(&HpaBehavior::default(), 15.0, 4, proposal.replicas, 1, 20);
    let need = needed();
    assert_eq!(need, 6);
    assert_eq!(proposal.replicas, computed, "ratio {ratio} of 4 ready");
    assert_eq!(
        next, proposal.replicas,
        "one step: the HPA's rate limit does not cut it"
    );
    assert!(
        next.abs_diff(need) <= 1,
        "the Deployment goes to {next}, the objective needs {need}"
    );
}

#[tokio::test]
async fn slo_sizes_a_load_step_from_the_scraped_counters() {
    let emulators = replicas().await;
    let (s, _keep) = serve(
        &emulators,
        &["--metrics-backend", "scrape", "--scrape-interval", "500ms"],
    )
    .await;
    load_step(&s, &emulators).await;
}

#[tokio::test]
async fn slo_sizes_a_load_step_from_prometheus() {
    let emulators = replicas().await;
    let targets: Vec<Target> = emulators
        .iter()
        .enumerate()
        .map(|(i, e)| Target {
            port: e.port,
            namespace: NS.into(),
            pod: format!("llama-decode-{i}"),
        })
        .collect();
    let prom = PrometheusServer::start(&targets).await;
    // As in a cluster, where Prometheus scraped the replicas long before
    // this server asks: a minute of every replica's counters first.
    // `rate(...[1m])` over a series younger than its minute extrapolates
    // to less than the rate, and the first minute the analysis learns its
    // time per request from would be a third too slow.
    eventually(
        Duration::from_secs(120),
        "a minute of request counters in prometheus",
        || async {
            (prom
                .query("vllm:request_success_total offset 1m")
                .await
                .len()
                >= 12)
                .then_some(())
        },
    )
    .await;
    let url = prom.url();
    let (s, _keep) = serve(
        &emulators,
        &[
            "--metrics-backend",
            "prometheus",
            "--prometheus-url",
            &url,
            "--metrics-fetch-interval",
            "1s",
        ],
    )
    .await;
    load_step(&s, &emulators).await;
}

/// A bad service-classes file stops `serve` with exit code 2, naming it.
#[test]
fn a_bad_service_classes_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes.yaml");
    std::fs::write(
        &classes,
        "premium.yaml: |\n  name: P\n  data:\n    - model: m\n      slo-ttft: -1\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .args([
            "serve",
            "--inventory",
            "file:/nonexistent",
            "--insecure-disable-auth",
            "--service-classes-config",
            classes.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("classes.yaml") && err.contains("slo-ttft"),
        "{err}"
    );
}
