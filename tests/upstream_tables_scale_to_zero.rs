//! Issue 30, must-show 5: upstream WVA's scale-to-zero tables at b08b1c7,
//! replayed where they decide something this server decides too:
//!
//! - `internal/collector/registration/scale_to_zero_test.go` (6): the
//!   request count over the retention period, and that a count that cannot
//!   be had (no series, a failed query) never lets a model go to zero; the
//!   query carries the model, the namespace and the period. Its two
//!   registration cases (a query registered in a source registry, no panic
//!   without one) have no counterpart: queries here are functions
//!   (`collector::prometheus::queries`).
//! - `internal/engines/scalefromzero/engine_test.go` (3 tests): a model
//!   with no ready replica is brought back to 1, one with a replica is left
//!   alone, no model is nothing to do. Upstream finds the model's queue
//!   through its InferencePool and endpoint-picker Service (its "labels not
//!   matched" subtest is an error there); here the queue is the endpoint
//!   picker's flow-control metric per model, so that subtest has no
//!   counterpart.
//!
//! The enforcer's own table (`enforcer_test.go`) is replayed in
//! tests/wva_compat.rs.

use std::time::Duration;

use wva_metrics_server::collector::prometheus::queries::{activity, Scope};
use wva_metrics_server::saturation::scale_to_zero::{
    apply, is_idle, ModelActivity, ModelScaleToZero, ZeroAction,
};
use wva_metrics_server::saturation::{TargetReason, VariantState, VariantTarget};

fn on() -> ModelScaleToZero {
    ModelScaleToZero {
        enabled: true,
        retention: Duration::from_secs(600),
    }
}

fn activity_of(ready: u32, requests: Option<f64>, queue: Option<f64>) -> ModelActivity {
    ModelActivity {
        config: on(),
        ready,
        requests,
        scheduler_queue: queue,
    }
}

/// "should return the request count" (100.5: not idle), and the two
/// "should return an error to prevent premature scale-to-zero" cases (an
/// empty result, a failed query): the count is unknown (None) and the model
/// is not idle. With a count of 0 it is.
#[test]
fn request_count_and_premature_scale_to_zero() {
    assert!(!is_idle(&activity_of(2, Some(100.5), None)));
    assert!(!is_idle(&activity_of(2, None, None)), "no series: unknown");
    assert!(is_idle(&activity_of(2, Some(0.0), None)));
}

/// "should format retention period correctly in query": 15 minutes, model
/// `test-model`, namespace `test-ns`. Upstream writes `[15m]`; here the
/// period is written in seconds (`[900s]`), the same duration to PromQL.
#[test]
fn query_carries_period_model_and_namespace() {
    let q = activity(
        Duration::from_secs(15 * 60),
        Scope::Model {
            namespace: "test-ns",
            model_id: "test-model",
        },
    );
    assert!(q.contains("[900s]"), "{q}");
    assert!(q.contains("model_name=\"test-model\""), "{q}");
    assert!(q.contains("namespace=\"test-ns\""), "{q}");
    assert!(q.contains("vllm:request_success_total"), "{q}");
}

fn variant(name: &str, cost: f64, replicas: u32) -> VariantState {
    VariantState {
        name: name.into(),
        cost,
        min_replicas: 0,
        max_replicas: 10,
        spec_replicas: replicas,
        ready_replicas: replicas,
    }
}

fn targets(variants: &[VariantState]) -> Vec<VariantTarget> {
    variants
        .iter()
        .map(|v| VariantTarget {
            name: v.name.clone(),
            current: v.spec_replicas,
            desired: v.spec_replicas,
            reason: TargetReason::Steady,
        })
        .collect()
}

/// scalefromzero/engine_test.go: TestSingleInactiveVariant ("one inactive
/// variant": brought back; "zero inactive variants": skipped),
/// TestMultipleInactiveVariants (three models at 0, each brought back) and
/// TestEmptyInactiveVariants (nothing to do). Requests are queued for each
/// model in the endpoint picker.
#[test]
fn scale_from_zero_engine_cases() {
    // One inactive variant: 1 replica.
    let at_zero = [variant("resource", 10.0, 0)];
    let mut t = targets(&at_zero);
    let action = apply(&activity_of(0, None, Some(3.0)), &at_zero, &mut t);
    assert_eq!(action, ZeroAction::FromZero);
    assert_eq!(
        (t[0].desired, t[0].reason),
        (1, TargetReason::ScaleFromZero)
    );
    // Zero inactive variants: the variant has a replica; nothing changes.
    let running = [variant("resource", 10.0, 1)];
    let mut t = targets(&running);
    let action = apply(&activity_of(1, Some(5.0), Some(3.0)), &running, &mut t);
    assert_eq!(action, ZeroAction::None);
    assert_eq!(t[0].desired, 1);
    // Three models, each with one variant at 0: each is brought back.
    for model in ["model-1", "model-2", "model-3"] {
        let v = [variant(&format!("{model}-resource"), 10.0, 0)];
        let mut t = targets(&v);
        assert_eq!(
            apply(&activity_of(0, None, Some(1.0)), &v, &mut t),
            ZeroAction::FromZero,
            "{model}"
        );
        assert_eq!(t[0].desired, 1, "{model}");
    }
    // No variants: nothing to do.
    let mut none: Vec<VariantTarget> = Vec::new();
    assert_eq!(
        apply(&activity_of(0, None, Some(1.0)), &[], &mut none),
        ZeroAction::None
    );
}
