//! Issue 30, must-show 5: the rest of upstream WVA's
//! `internal/engines/pipeline/cost_aware_optimizer_test.go` (b08b1c7).
//! Its ten scaling cases are `saturation::v2::tests::
//! upstream_cost_aware_optimizer_cases`; below are "should process models
//! independently" and its helper functions' cases (cost-efficiency order,
//! cost order, cheapest variant), shown through what they decide in
//! `saturation::v2::optimizer::optimize`. The cases without a counterpart
//! (its `Name`, a request with a nil result, decision metadata,
//! `mergeConstraints` over several constraint providers) have rows in
//! docs/wva-compatibility.md.

use wva_metrics_server::saturation::v2::optimizer::{optimize, OptimizerVariant};

fn v(name: &str, cost: f64, per_replica: f64, current: u32) -> OptimizerVariant {
    OptimizerVariant {
        name: name.to_owned(),
        cost,
        per_replica,
        current,
        min_replicas: 0,
        max_replicas: 1000,
    }
}

fn desired(variants: &[OptimizerVariant], required: f64, spare: f64) -> Vec<(String, u32)> {
    optimize(variants, required, spare)
        .into_iter()
        .map(|t| (t.name, t.desired))
        .collect()
}

fn named(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
    pairs.iter().map(|(n, d)| ((*n).to_owned(), *d)).collect()
}

/// "should process models independently": model-1 needs 5000 tokens more
/// (its one variant goes 1 -> 2), model-2 has 10000 spare (2 -> 1). Each
/// model is optimized on its own here by construction: one call per model.
#[test]
fn models_are_processed_independently() {
    assert_eq!(
        desired(&[v("m1-v1", 5.0, 10000.0, 1)], 5000.0, 0.0),
        named(&[("m1-v1", 2)])
    );
    assert_eq!(
        desired(&[v("m2-v1", 10.0, 10000.0, 2)], 0.0, 10000.0),
        named(&[("m2-v1", 1)])
    );
}

/// `sortByCostEfficiencyAsc`: cost per token ascending (cheap 0.0005, mid
/// 0.001, expensive 0.0015): a scale-up of one replica goes to "cheap",
/// and of more than cheap's room, next to "mid".
#[test]
fn scale_up_follows_cost_efficiency() {
    let vs = [
        v("expensive", 15.0, 10000.0, 1),
        v("cheap", 5.0, 10000.0, 1),
        v("mid", 10.0, 10000.0, 1),
    ];
    assert_eq!(
        desired(&vs, 10000.0, 0.0),
        named(&[("expensive", 1), ("cheap", 2), ("mid", 1)])
    );
    // Efficiency, not cost: a dearer variant with more capacity per replica
    // is the better buy (10 for 40000 tokens beats 5 for 10000).
    let vs = [v("small", 5.0, 10000.0, 1), v("big", 10.0, 40000.0, 1)];
    assert_eq!(
        desired(&vs, 30000.0, 0.0),
        named(&[("small", 1), ("big", 2)])
    );
}

/// `sortByCostDesc` and `findCheapestVariant`: scale-down removes from the
/// most expensive variant first (absolute cost), and the cheapest keeps
/// its last replica.
#[test]
fn scale_down_follows_cost_and_keeps_the_cheapest() {
    let vs = [
        v("cheap", 5.0, 10000.0, 1),
        v("expensive", 15.0, 10000.0, 1),
        v("mid", 10.0, 10000.0, 1),
    ];
    assert_eq!(
        desired(&vs, 0.0, 10000.0),
        named(&[("cheap", 1), ("expensive", 0), ("mid", 1)])
    );
    assert_eq!(
        desired(&vs, 0.0, 1_000_000.0),
        named(&[("cheap", 1), ("expensive", 0), ("mid", 0)])
    );
}
