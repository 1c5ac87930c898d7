//! Issue 30, must-show 3 and 5: upstream WVA's GPU limiter tables in
//! `internal/engines/pipeline` (b08b1c7), replayed against this server's
//! limiter (`saturation::v2::greedy_limiter`) and accelerator inventory
//! (`inventory::accelerators`):
//!
//! - `default_limiter_test.go` (9): 7 are
//!   `greedy_limiter::tests::upstream_default_limiter_cases`; the other two
//!   (`Name`, "should add decision step") are below;
//! - `greedy_saturation_algorithm_test.go` (8): 7 are
//!   `greedy_limiter::tests::upstream_greedy_by_saturation_cases`; its
//!   `Name` case has no counterpart (docs/wva-compatibility.md);
//! - `type_inventory_test.go`: every case below, one test per upstream
//!   `Describe`.
//!
//! Upstream's inventory is fed by a discovery mock (node -> type -> count);
//! here the same facts are `(node, type, GPUs)` rows for `free_by_type`,
//! and upstream's `SetUsed(type -> GPUs)` is what the WVA variants'
//! current replicas use (`used_by_type`), as its `DefaultLimiter` computes
//! it. Upstream's allocator is the pool `limit` allocates from: a request
//! of G GPUs is a decision asking for G replicas of 1 GPU.

use std::collections::BTreeMap;

use wva_metrics_server::inventory::accelerators::{free_by_type, normalize_accelerator_name};
use wva_metrics_server::saturation::v2::greedy_limiter::{
    available_by_type, limit, used_by_type, LimiterDecision, LIMITER_NAME,
};

fn types(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

/// The capacity per type of nodes given as (node, type, GPUs).
fn capacity(nodes: &[(&str, &str, u32)]) -> BTreeMap<String, u32> {
    free_by_type(
        nodes.iter().map(|(n, t, c)| (*n, (*t).to_owned(), *c)),
        std::iter::empty(),
    )
}

fn total(m: &BTreeMap<String, u32>) -> u32 {
    m.values().sum()
}

/// Decisions that only hold GPUs: `current` replicas of 1 GPU each, per
/// type, so that `used_by_type` is upstream's `SetUsed` argument.
fn holding(used: &[(&str, u32)]) -> Vec<LimiterDecision> {
    used.iter()
        .map(|(t, n)| LimiterDecision::new(&format!("holding-{t}"), t, *n, *n, 1))
        .collect()
}

/// One allocation request of `gpus` GPUs of type `accelerator`.
fn request(variant: &str, accelerator: &str, gpus: u32) -> LimiterDecision {
    LimiterDecision::new(variant, accelerator, 0, gpus, 1)
}

/// default_limiter_test.go, `Name` and "should add decision step": the
/// limiter is named as upstream's engine names it, a decision it cut says
/// so (`LimitedBy`), and every decision carries the limiter's step with
/// upstream's reason text.
#[test]
fn default_limiter_name_and_decision_step() {
    // Scale-up within the pool: A100 8, v1 2 -> 4 at 2 GPUs.
    let mut up = vec![LimiterDecision::new("v1", "A100", 2, 4, 2)];
    limit(&mut up, &types(&[("A100", 8)]));
    let step = up[0].step();
    assert_eq!(step.name, "gpu-limiter");
    assert_eq!(step.name, LIMITER_NAME);
    assert_eq!(step.reason, "allocated 4 GPUs for +2 replicas");
    assert!(!step.limited);
    assert_eq!(up[0].limited_by, None);
    // Limited: A100 6, v1 2 -> 5 at 2 GPUs: one replica added.
    let mut short = vec![LimiterDecision::new("v1", "A100", 2, 5, 2)];
    limit(&mut short, &types(&[("A100", 6)]));
    assert_eq!(short[0].limited_by, Some("gpu-limiter"));
    let step = short[0].step();
    assert_eq!(step.reason, "limited: allocated 2 GPUs for +1 replicas");
    assert!(step.limited);
    // A decision that does not scale up gets a step too.
    let mut hold = vec![LimiterDecision::new("v1", "A100", 3, 2, 2)];
    limit(&mut hold, &types(&[("A100", 8)]));
    assert_eq!(hold[0].step().reason, "no scale-up (target=2, current=3)");
    assert_eq!(hold[0].limited_by, None);
}

/// type_inventory_test.go, `Refresh` (5 entries): capacity per type summed
/// over the nodes; with nothing used, available equals the capacity.
#[test]
fn type_inventory_refresh_aggregates_capacity() {
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str, u32)>,
        Vec<(&'a str, u32)>,
        u32,
    );
    let cases: Vec<Case> = vec![
        (
            "single node single type",
            vec![("node-1", "H100", 8)],
            vec![("H100", 8)],
            8,
        ),
        (
            "single node multiple types",
            vec![("node-1", "H100", 4), ("node-1", "A100", 4)],
            vec![("H100", 4), ("A100", 4)],
            8,
        ),
        (
            "multiple nodes same type",
            vec![("node-1", "H100", 8), ("node-2", "H100", 8)],
            vec![("H100", 16)],
            16,
        ),
        (
            "heterogeneous cluster",
            vec![
                ("node-1", "H100", 8),
                ("node-2", "A100", 8),
                ("node-3", "L40S", 4),
            ],
            vec![("H100", 8), ("A100", 8), ("L40S", 4)],
            20,
        ),
        ("empty cluster", vec![], vec![], 0),
    ];
    for (name, nodes, want, want_total) in cases {
        // A node of several types is listed once per type (upstream's
        // discovery keys a node's GPUs by type); the node name only ties
        // pods to types, which this case has none of.
        let limits = capacity(&nodes);
        assert_eq!(limits, types(&want), "{name}");
        assert_eq!(total(&limits), want_total, "{name}");
        let available = available_by_type(&limits, &[]);
        assert_eq!(available, limits, "{name}: nothing used");
    }
}

/// `SetUsed` and `OverAllocation`: available is limit minus used per type,
/// never below zero.
#[test]
fn type_inventory_used_and_over_allocation() {
    let limits = capacity(&[("node-1", "H100", 16), ("node-2", "A100", 8)]);
    assert_eq!(total(&limits), 24);
    let used = holding(&[("H100", 4), ("A100", 2)]);
    assert_eq!(used_by_type(&used), types(&[("A100", 2), ("H100", 4)]));
    let available = available_by_type(&limits, &used);
    assert_eq!(available, types(&[("A100", 6), ("H100", 12)]));
    assert_eq!(total(&available), 18);

    let limits = capacity(&[("node-1", "H100", 8)]);
    let over = holding(&[("H100", 12)]);
    assert_eq!(total(&used_by_type(&over)), 12);
    assert_eq!(available_by_type(&limits, &over), types(&[("H100", 0)]));
}

/// `RefreshAll` with usage discovery: capacity minus what the pods on the
/// nodes request (this server's inventory, which the `--limiter-on-v2`
/// limiter allots from). Without usage discovery upstream errs; here the
/// Node and Pod reflectors always run together (no counterpart).
#[test]
fn type_inventory_refresh_all_with_usage() {
    let nodes = [
        ("node-1", "H100".to_owned(), 16),
        ("node-2", "A100".to_owned(), 8),
    ];
    let pods = [
        ("node-1", 3),
        ("node-1", 1),
        ("node-2", 2),
        ("elsewhere", 5),
    ];
    let free = free_by_type(nodes.iter().map(|(n, t, c)| (*n, t.clone(), *c)), pods);
    assert_eq!(free, types(&[("A100", 6), ("H100", 12)]));
    assert_eq!(total(&free), 18);
}

/// `CreateAllocator` (2 cases): the allocator starts from what is available
/// (limit - used), allocating does not change the inventory, and a request
/// above what is left gets the rest.
#[test]
fn type_inventory_create_allocator() {
    let limits = capacity(&[("node-1", "H100", 16), ("node-2", "A100", 8)]);
    let mut decisions = holding(&[("H100", 4), ("A100", 4)]);
    assert_eq!(total(&available_by_type(&limits, &decisions)), 16);
    decisions.push(request("model-a", "H100", 4));
    let left = limit(&mut decisions, &limits);
    assert_eq!(decisions[2].gpus_allocated, 4);
    assert_eq!(total(&left), 12);
    assert_eq!(left, types(&[("A100", 4), ("H100", 8)]));
    // The inventory (limits) is untouched.
    assert_eq!(limits, types(&[("A100", 8), ("H100", 16)]));

    let limits = capacity(&[("node-1", "H100", 8)]);
    let mut decisions = holding(&[("H100", 6)]);
    decisions.push(request("model-a", "H100", 4));
    let left = limit(&mut decisions, &limits);
    assert_eq!(
        (decisions[1].gpus_allocated, decisions[1].was_limited),
        (2, true)
    );
    assert_eq!(total(&left), 0);
}

/// `TypeAllocator.TryAllocate` (7 entries): (pools, type asked, GPUs asked,
/// GPUs granted, pools after). Upstream's "error when accelerator name not
/// specified" grants nothing (its greedy algorithm ignores the error and
/// counts 0), which is what happens here.
#[test]
fn type_allocator_try_allocate() {
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, u32)>,
        &'a str,
        u32,
        u32,
        Vec<(&'a str, u32)>,
    );
    let cases: Vec<Case> = vec![
        (
            "allocate from available pool",
            vec![("H100", 16), ("A100", 8)],
            "H100",
            4,
            4,
            vec![("H100", 12), ("A100", 8)],
        ),
        (
            "allocate entire pool",
            vec![("H100", 8)],
            "H100",
            8,
            8,
            vec![("H100", 0)],
        ),
        (
            "partial allocation when pool exhausted",
            vec![("H100", 4)],
            "H100",
            8,
            4,
            vec![("H100", 0)],
        ),
        (
            "no allocation when type not available",
            vec![("A100", 8)],
            "H100",
            4,
            0,
            vec![("A100", 8), ("H100", 0)],
        ),
        (
            "error when accelerator name not specified",
            vec![("H100", 8)],
            "",
            4,
            0,
            vec![("H100", 8)],
        ),
        (
            "zero request returns zero",
            vec![("H100", 8)],
            "H100",
            0,
            0,
            vec![("H100", 8)],
        ),
        (
            "types are isolated",
            vec![("H100", 4), ("A100", 8)],
            "A100",
            6,
            6,
            vec![("H100", 4), ("A100", 2)],
        ),
    ];
    for (name, pools, accelerator, asked, granted, after) in cases {
        let mut decisions = vec![request("model-a", accelerator, asked)];
        let left = limit(&mut decisions, &types(&pools));
        assert_eq!(decisions[0].gpus_allocated, granted, "{name}");
        assert_eq!(decisions[0].target, granted, "{name}: replicas of 1 GPU");
        assert_eq!(left, types(&after), "{name}");
    }
}

/// `Multiple Allocations`: state carries across requests: 4 H100, 6 A100,
/// then 20 H100 of which 12 are left. (Upstream calls its allocator in
/// sequence; here the requests go in the limiter's order, most saturated
/// first, so their spare capacity gives that sequence.)
#[test]
fn type_allocator_multiple_allocations() {
    let mut decisions = vec![
        request("model-a", "H100", 4),
        request("model-b", "A100", 6),
        request("model-c", "H100", 20),
    ];
    for (i, d) in decisions.iter_mut().enumerate() {
        d.spare_capacity = i as f64 * 0.1;
    }
    let left = limit(&mut decisions, &types(&[("H100", 16), ("A100", 8)]));
    let granted: Vec<u32> = decisions.iter().map(|d| d.gpus_allocated).collect();
    assert_eq!(granted, [4, 6, 12]);
    assert_eq!(left, types(&[("A100", 2), ("H100", 0)]));
    assert_eq!(total(&left), 2);
    assert_eq!(decisions[2].limited_by, Some(LIMITER_NAME));
}

/// `normalizeAcceleratorName` (9 entries) and its `TypeInventory`
/// integration case.
#[test]
fn normalize_accelerator_name_cases() {
    for (name, full, short) in [
        ("NVIDIA A100", "NVIDIA-A100-PCIE-80GB", "A100"),
        ("NVIDIA H100", "NVIDIA-H100-SXM5-80GB", "H100"),
        ("NVIDIA L40S", "NVIDIA-L40S-48GB", "L40S"),
        ("AMD MI300X", "AMD-MI300X-192G", "MI300X"),
        ("Intel Gaudi 2", "Intel-Gaudi-2-96GB", "Gaudi-2"),
        ("already short - A100", "A100", "A100"),
        ("already short - H100", "H100", "H100"),
        ("lowercase nvidia", "nvidia-A100-PCIE-80GB", "A100"),
        ("unknown vendor fallback", "Unknown-GPU-Model-123", "GPU"),
    ] {
        assert_eq!(normalize_accelerator_name(full), short, "{name}");
    }
    // Integration: discovered types are the short names; the full ones
    // hold nothing.
    let limits = capacity(&[
        (
            "node-1",
            normalize_accelerator_name("NVIDIA-A100-PCIE-80GB").as_str(),
            4,
        ),
        (
            "node-2",
            normalize_accelerator_name("NVIDIA-H100-SXM5-80GB").as_str(),
            8,
        ),
    ]);
    assert_eq!(limits, types(&[("A100", 4), ("H100", 8)]));
    assert_eq!(total(&limits), 12);
    assert_eq!(limits.get("NVIDIA-A100-PCIE-80GB"), None);
}
