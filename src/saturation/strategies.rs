//! Proptest strategies the analyses' property tests share.

use proptest::prelude::*;

use super::VariantState;

/// A reading as a collector or a caller might hand it over: mostly
/// plausible (in `[0, max)`), sometimes NaN, an infinity, a negative or an
/// absurd magnitude.
pub(crate) fn hostile(max: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0f64..max,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => -100.0f64..0.0,
        1 => Just(1e300),
    ]
}

/// `num_gpu_blocks` or `block_size` as a label can carry it: mostly a
/// plausible count, sometimes `u64::MAX` or any number.
pub(crate) fn cache_count(plausible: u64) -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..plausible, 1 => Just(u64::MAX), 1 => any::<u64>()]
}

/// One to four variants named `v0`.., any bounds, spec and readiness.
pub(crate) fn variant_states() -> impl Strategy<Value = Vec<VariantState>> {
    prop::collection::vec(
        (0.0f64..50.0, 0u32..4, 0u32..8, 0u32..12, any::<bool>()),
        1..5,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (cost, min, span, spec, settled))| VariantState {
                name: format!("v{i}"),
                cost,
                min_replicas: min,
                max_replicas: min + span,
                spec_replicas: spec,
                ready_replicas: if settled {
                    spec
                } else {
                    spec.saturating_sub(1)
                },
            })
            .collect()
    })
}
