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
//!
//! Also `internal/engines/saturation/engine_v2_test.go` (10): its four
//! "CostAwareOptimizer via engine path" cases and its two
//! `applyEnforcedTargetsToDecisions` cases that decide something (the
//! scale-to-zero enforcer's targets replace the optimizer's; an enforcer
//! that changes nothing leaves the decision and its reason). Its other four
//! (`extractTargetsFromDecisions` x2, `buildVariantAnalysesFromDecisions`,
//! "should not modify decisions for other models") regroup one flat list of
//! decisions by model; here each model is decided on its own, so there is
//! no such list.

use std::time::Duration;

use wva_metrics_server::saturation::scale_to_zero::{apply, ModelActivity, ZeroAction};
use wva_metrics_server::saturation::v2::optimizer::{optimize, OptimizerVariant};
use wva_metrics_server::saturation::{ModelScaleToZero, TargetReason, VariantState};

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

/// engine_v2_test.go, "CostAwareOptimizer via engine path" (4 cases).
#[test]
fn engine_v2_optimizer_cases() {
    // Scale up the most cost-efficient: cheap 5/10000 beats 15/20000.
    assert_eq!(
        desired(
            &[
                v("variant-cheap", 5.0, 10000.0, 2),
                v("variant-expensive", 15.0, 20000.0, 1)
            ],
            5000.0,
            0.0
        ),
        named(&[("variant-cheap", 3), ("variant-expensive", 1)])
    );
    // Scale down the most expensive: 25000 spare, one 20000 replica goes.
    assert_eq!(
        desired(
            &[
                v("variant-cheap", 5.0, 10000.0, 3),
                v("variant-expensive", 15.0, 20000.0, 2)
            ],
            0.0,
            25000.0
        ),
        named(&[("variant-cheap", 3), ("variant-expensive", 1)])
    );
    // The cheapest keeps its last replica.
    assert_eq!(
        desired(
            &[
                v("variant-expensive", 15.0, 20000.0, 1),
                v("variant-cheap", 5.0, 10000.0, 1)
            ],
            0.0,
            30000.0
        ),
        named(&[("variant-expensive", 0), ("variant-cheap", 1)])
    );
    // Pending replicas do not take a variant out of the optimizer (the
    // optimizer sees spec replicas; pending ones are among them).
    assert_eq!(
        desired(
            &[
                v("variant-cheap", 5.0, 10000.0, 2),
                v("variant-mid", 10.0, 15000.0, 1)
            ],
            5000.0,
            0.0
        ),
        named(&[("variant-cheap", 3), ("variant-mid", 1)])
    );
}

/// engine_v2_test.go, `applyEnforcedTargetsToDecisions`: an idle model's
/// optimizer targets (v1 2 -> 3, v2 1) become 0 on both; with requests the
/// enforcer leaves v1's scale-up and its reason as they were.
#[test]
fn engine_v2_enforced_targets() {
    let states = [
        VariantState {
            name: "v1".into(),
            cost: 5.0,
            min_replicas: 0,
            max_replicas: 10,
            spec_replicas: 2,
            ready_replicas: 2,
        },
        VariantState {
            name: "v2".into(),
            cost: 10.0,
            min_replicas: 0,
            max_replicas: 10,
            spec_replicas: 1,
            ready_replicas: 1,
        },
    ];
    let optimizer_targets = || {
        let variants: Vec<OptimizerVariant> = states
            .iter()
            .map(|s| OptimizerVariant::from_state(s, 10000.0))
            .collect();
        optimize(&variants, 5000.0, 0.0)
    };
    let activity = |requests: f64| ModelActivity {
        config: ModelScaleToZero {
            enabled: true,
            retention: Duration::from_secs(600),
        },
        ready: 3,
        requests: Some(requests),
        scheduler_queue: None,
    };
    let mut idle = optimizer_targets();
    assert_eq!((idle[0].desired, idle[1].desired), (3, 1));
    assert_eq!(
        apply(&activity(0.0), &states, &mut idle),
        ZeroAction::ScaledToZero
    );
    assert_eq!(
        idle.iter()
            .map(|t| (t.desired, t.reason))
            .collect::<Vec<_>>(),
        [
            (0, TargetReason::ScaledToZero),
            (0, TargetReason::ScaledToZero)
        ]
    );
    let mut busy = optimizer_targets();
    let before = busy.clone();
    assert_eq!(apply(&activity(12.0), &states, &mut busy), ZeroAction::None);
    assert_eq!(busy, before);
    assert_eq!(busy[0].reason, TargetReason::ScaleUp);
}
