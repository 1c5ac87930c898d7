//! Issue 30, must-show 5: the rest of upstream WVA's
//! `internal/engines/analyzers/saturation_v2/capacity_store_test.go`
//! (b08b1c7). Its eight `FindCompatible` cases are
//! `saturation::v2::history::tests::upstream_find_compatible_cases`; here
//! are the store's own cases against this server's `CapacityMemory` (live
//! records) and `EngineParams` (what upstream's `LoadFromDeployment` reads
//! from a Deployment: here the parameters are read from the Deployment on
//! every decision, not stored as a record).
//!
//! No counterpart (rows in docs/wva-compatibility.md): "should not
//! overwrite live data with deployment data" and "should prefer live
//! records over deployment-derived records" (no deployment-derived records
//! are stored here: only live ones are), "should handle nil deployment
//! gracefully" (a Go nil), "concurrent reads and writes" (the memory is
//! owned by one task; Rust's types rule out the data race).

use std::time::{Duration, SystemTime};

use wva_metrics_server::saturation::v2::engine::EngineParams;
use wva_metrics_server::saturation::v2::history::{CapacityMemory, CapacityRecord, CAPACITY_TTL};

fn key(ns: &str, model: &str, variant: &str) -> (String, String, String) {
    (ns.to_owned(), model.to_owned(), variant.to_owned())
}

fn record(capacity: f64, accelerator: &str, at: SystemTime) -> CapacityRecord {
    CapacityRecord {
        capacity,
        learned_at: at,
        accelerator: accelerator.to_owned(),
        engine: Some(EngineParams::default()),
    }
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
}

/// "Store and retrieve" (2), "Get missing key", "Cross-variant lookup".
#[test]
fn store_and_retrieve() {
    let mut m = CapacityMemory::default();
    m.remember(
        key("ns-1", "model-a", "variant-h100"),
        record(16000.0, "H100", t0()),
    );
    assert_eq!(
        m.recall(&key("ns-1", "model-a", "variant-h100")),
        Some(16000.0)
    );
    // Separate across namespaces.
    m.remember(
        key("ns-2", "model-a", "variant-h100"),
        record(32000.0, "H100", t0()),
    );
    assert_eq!(
        m.recall(&key("ns-1", "model-a", "variant-h100")),
        Some(16000.0)
    );
    assert_eq!(
        m.recall(&key("ns-2", "model-a", "variant-h100")),
        Some(32000.0)
    );
    // Missing key.
    assert_eq!(m.recall(&key("ns-1", "nonexistent", "variant")), None);
    // Same model, two variants: two records.
    m.remember(
        key("ns-1", "model-a", "variant-a100"),
        record(8000.0, "A100", t0()),
    );
    assert_eq!(
        m.recall(&key("ns-1", "model-a", "variant-a100")),
        Some(8000.0)
    );
    assert_eq!(
        m.recall(&key("ns-1", "model-a", "variant-h100")),
        Some(16000.0)
    );
    assert_eq!(m.len(), 3);
}

/// "Staleness" (3): a missing key has nothing; a fresh record is kept; an
/// old one is dropped. Upstream's `IsStale` (30 minutes) is not called by
/// its analyzer at b08b1c7; its records are evicted after 7 days, which is
/// the age that counts here (`CAPACITY_TTL`).
#[test]
fn staleness() {
    let mut m = CapacityMemory::default();
    assert_eq!(m.recall(&key("ns-1", "x", "y")), None);
    m.remember(
        key("ns-1", "model-a", "variant-h100"),
        record(16000.0, "H100", t0()),
    );
    assert_eq!(m.evict(t0() + Duration::from_secs(60)), 0, "fresh");
    assert_eq!(
        m.recall(&key("ns-1", "model-a", "variant-h100")),
        Some(16000.0)
    );
    assert_eq!(CAPACITY_TTL, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        m.evict(t0() + CAPACITY_TTL + Duration::from_secs(60)),
        1,
        "old"
    );
    assert_eq!(m.recall(&key("ns-1", "model-a", "variant-h100")), None);
}

/// `LoadFromDeployment` (3 cases that read the Deployment): its vLLM
/// parameters from the arguments; a default deployment's conservative
/// capacity is the V1 engine's default token budget (8192); and
/// `--num-gpu-blocks-override=5000 --block-size=16` gives 80000 KV tokens
/// while the budget stays 8192.
#[test]
fn parameters_from_the_deployment() {
    let p = EngineParams::from_args([
        "--gpu-memory-utilization=0.85",
        "--max-num-batched-tokens=4096",
    ]);
    assert_eq!(
        (p.gpu_memory_utilization, p.max_num_batched_tokens),
        (0.85, 4096)
    );
    let d = EngineParams::from_args(std::iter::empty());
    assert_eq!(d.max_num_batched_tokens, 8192);
    let o = EngineParams::from_args(["--num-gpu-blocks-override=5000", "--block-size=16"]);
    assert_eq!(o.override_total_tokens(), Some(80000));
    assert_eq!(o.max_num_batched_tokens, 8192);
}
