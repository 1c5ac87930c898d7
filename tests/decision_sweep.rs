//! Issue 29: one fleet decision (sweep) per fetch cycle. `/metrics` counts
//! sweeps (`wva_decision_sweeps_total`) and model analyses by what ran
//! them (`wva_model_analyses_total{trigger="sweep"|"demand"}`): over a run
//! the sweeps equal the fetch cycles, every sweep analyses each model
//! once, and HPA requests between cycles, on external metrics and on
//! custom metrics (Object metric on the scale target), are answered from
//! the sweep without analysing again.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::time::Duration;

use common::{eventually, two_model_inventory, Emulator, Server};

/// The counters of one `/metrics` read.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    cycles: u64,
    sweeps: u64,
    by_sweep: u64,
    on_demand: u64,
}

fn sum(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn counts(s: &Server) -> Counts {
    let text = s.text("/metrics").await;
    Counts {
        cycles: sum(&text, "wva_fetch_cycles_total{"),
        sweeps: sum(&text, "wva_decision_sweeps_total "),
        by_sweep: sum(&text, "wva_model_analyses_total{trigger=\"sweep\"}"),
        on_demand: sum(&text, "wva_model_analyses_total{trigger=\"demand\"}"),
    }
}

/// The two worked examples (llama: 2 of 3, mistral: 3 of 2), scraped.
async fn start() -> (Server, Vec<Emulator>) {
    let emulators = common::two_model_emulators().await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let s = Server::with_inventory(
        &two_model_inventory(&ports),
        &["--metrics-backend", "scrape"],
    )
    .await;
    s.wait_mistral_at_3().await;
    (s, emulators)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sweep_per_fetch_cycle_analyses_each_model_once() {
    let (s, _e) = start().await;
    let first = counts(&s).await;
    assert!(first.sweeps >= 1, "{first:?}");
    // Over 5 more cycles: read when no cycle is between its fetch and its
    // sweep (the two counters move a few microseconds apart).
    let last = eventually(Duration::from_secs(60), "5 more fetch cycles", || async {
        let c = counts(&s).await;
        (c.cycles >= first.cycles + 5 && c.sweeps == c.cycles).then_some(c)
    })
    .await;
    assert_eq!(last.sweeps, last.cycles, "{last:?}");
    assert!(last.sweeps >= first.sweeps + 5, "{first:?} -> {last:?}");
    // Both models had metrics in every one of those sweeps: 2 analyses each.
    let later = eventually(Duration::from_secs(60), "a read between sweeps", || async {
        let c = counts(&s).await;
        (c.sweeps == c.cycles && c.sweeps > last.sweeps).then_some(c)
    })
    .await;
    assert_eq!(
        later.by_sweep - last.by_sweep,
        2 * (later.sweeps - last.sweeps),
        "{last:?} -> {later:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_requests_between_cycles_do_not_analyse_again() {
    let (s, _e) = start().await;
    // The first sweep with both models' metrics has been published.
    s.wait_fetch_cycles(1).await;
    let before = counts(&s).await;
    let external = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-b/wva_desired_replicas?labelSelector={}",
        common::urlencode("target_name=mistral-decode")
    );
    let object = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-b/deployments.apps/mistral-decode/wva_desired_replicas";
    let wildcard = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm-a/deployments.apps/*/wva_desired_replicas";
    for _ in 0..20 {
        let (code, list) = s.get(&external).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["items"][0]["value"], "3", "{list}");
        let (code, list) = s.get(object).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["items"][0]["value"], "3", "{list}");
        let (code, list) = s.get(wildcard).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list["items"][0]["value"], "2", "{list}");
    }
    let after = counts(&s).await;
    assert_eq!(
        after.on_demand,
        before.on_demand,
        "60 requests over {} sweeps analysed on demand: {before:?} -> {after:?}",
        after.sweeps - before.sweeps
    );
}
