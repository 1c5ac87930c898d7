//! What the analyses trust of a replica's readings. The collectors reject
//! NaN, infinite and out-of-range samples where they enter
//! (`collector/sample.rs`, logged and counted); this is the pure analyses'
//! own guard for what is derived after that or handed to them by another
//! caller (`simulate`, tests). A NaN, an infinity or an absurd magnitude in
//! their arithmetic turns every rate it touches into NaN, or a token count
//! cast to an integer into a saturated one that overflows a sum, and the
//! replica count into a silent wrong number (the property tests of slo and
//! V2 found both before this guard). A reading that is not a finite number
//! within what a replica can report is taken as not reported.

/// Requests a replica (or the endpoint picker) can hold, or finish per
/// second, at most.
pub(crate) const MAX_REQUESTS: f64 = 1e6;
/// Mean tokens of a prompt or an output, at most (context windows are
/// below ten million tokens).
pub(crate) const MAX_TOKENS: f64 = 1e7;
/// Mean prefill seconds of a request, at most.
pub(crate) const MAX_PREFILL_SECONDS: f64 = 3600.0;
/// Bytes the endpoint picker can hold queued, at most.
pub(crate) const MAX_QUEUE_BYTES: f64 = 1e15;

/// Tokens of one replica's KV cache, at most (a trillion: a node's GPUs
/// hold millions); beyond it `num_gpu_blocks x block_size` saturates and
/// sums of caches overflow (`KvCacheConfig::plausible`).
pub(crate) const MAX_CACHE_TOKENS: u64 = 1_000_000_000_000;

/// The reading when it is a finite number in `[0, max]`.
pub(crate) fn within(v: f64, max: f64) -> Option<f64> {
    (v.is_finite() && (0.0..=max).contains(&v)).then_some(v)
}

/// A fraction (cache usage, hit rate): above 1 is all of it, below 0 or
/// not a number none.
pub(crate) fn fraction(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finite_readings_within_their_bounds_are_kept() {
        for (v, kept, as_fraction) in [
            (0.0, Some(0.0), 0.0),
            (0.5, Some(0.5), 0.5),
            (7.0, Some(7.0), 1.0),
            (10.0, Some(10.0), 1.0),
            (10.5, None, 1.0),
            (-0.1, None, 0.0),
            (f64::NAN, None, 0.0),
            (f64::INFINITY, None, 0.0),
            (f64::NEG_INFINITY, None, 0.0),
        ] {
            assert_eq!(within(v, 10.0), kept, "{v}");
            assert_eq!(fraction(v), as_fraction, "{v}");
        }
    }
}
