//! What the analysis trusts of a replica's readings. The collectors reject
//! NaN, infinite and out-of-range samples where they enter
//! (`collector/sample.rs`, logged and counted); this is the pure analysis'
//! own guard for what is derived after that or handed to it by another
//! caller (`simulate`, tests): a NaN, an infinity or an absurd magnitude
//! that reached its arithmetic would turn every rate it touches into NaN
//! and the replica count into a silent wrong number (the property test in
//! `tests.rs` found exactly that before this guard). A reading that is not
//! a finite number within what a replica can report is taken as not
//! reported: an optional signal becomes absent (the analysis falls back,
//! and says so, when no replica has it), a queue or a cache usage empty.

use super::SloReplica;
use crate::saturation::v2::KvCacheConfig;

/// Requests a replica (or the endpoint picker) can hold or finish per
/// second, at most.
const MAX_REQUESTS: f64 = 1e6;
/// Mean tokens of a prompt or an output, at most (context windows are
/// below ten million tokens).
const MAX_TOKENS: f64 = 1e7;
/// Mean prefill seconds of a request, at most.
const MAX_PREFILL_SECONDS: f64 = 3600.0;

/// The reading when it is a finite number in `[0, max]`.
fn within(v: f64, max: f64) -> Option<f64> {
    (v.is_finite() && (0.0..=max).contains(&v)).then_some(v)
}

/// A cache of at least one token.
fn cache(c: KvCacheConfig) -> Option<KvCacheConfig> {
    (c.total_tokens() > 0).then_some(c)
}

/// The replica with every reading it cannot have reported taken out.
pub(super) fn trusted(r: &SloReplica) -> SloReplica {
    SloReplica {
        pod: r.pod.clone(),
        variant: r.variant.clone(),
        // Usage is a fraction: above 1 is a full cache.
        kv: if r.kv.is_finite() {
            r.kv.clamp(0.0, 1.0)
        } else {
            0.0
        },
        waiting: within(r.waiting, MAX_REQUESTS).unwrap_or(0.0),
        running: r.running.and_then(|v| within(v, MAX_REQUESTS)),
        completion_rate: r.completion_rate.and_then(|v| within(v, MAX_REQUESTS)),
        avg_prompt_tokens: r.avg_prompt_tokens.and_then(|v| within(v, MAX_TOKENS)),
        avg_output_tokens: r.avg_output_tokens.and_then(|v| within(v, MAX_TOKENS)),
        avg_prefill_seconds: r
            .avg_prefill_seconds
            .and_then(|v| within(v, MAX_PREFILL_SECONDS)),
        cache: r.cache.and_then(cache),
    }
}

/// The endpoint picker's queue, when it is a count.
pub(super) fn trusted_queue(q: Option<f64>) -> Option<f64> {
    q.and_then(|v| within(v, MAX_REQUESTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(v: f64) -> SloReplica {
        SloReplica {
            pod: "p".into(),
            variant: "v".into(),
            kv: v,
            waiting: v,
            running: Some(v),
            completion_rate: Some(v),
            avg_prompt_tokens: Some(v),
            avg_output_tokens: Some(v),
            avg_prefill_seconds: Some(v),
            cache: Some(KvCacheConfig {
                num_gpu_blocks: 10,
                block_size: 16,
            }),
        }
    }

    #[test]
    fn readings_a_replica_cannot_report_are_taken_as_absent() {
        // (every reading, kv, waiting, the optional ones kept)
        for (v, kv, waiting, kept) in [
            (0.5, 0.5, 0.5, true),
            (0.0, 0.0, 0.0, true),
            (3.0, 1.0, 3.0, true),
            (f64::NAN, 0.0, 0.0, false),
            (f64::INFINITY, 0.0, 0.0, false),
            (f64::NEG_INFINITY, 0.0, 0.0, false),
            (-1.0, 0.0, 0.0, false),
            (1e300, 1.0, 0.0, false),
        ] {
            let r = trusted(&replica(v));
            assert_eq!((r.kv, r.waiting), (kv, waiting), "{v}");
            let optional = [
                r.running,
                r.completion_rate,
                r.avg_prompt_tokens,
                r.avg_output_tokens,
                r.avg_prefill_seconds,
            ];
            assert!(optional.iter().all(|o| o.is_some() == kept), "{v}: {r:?}");
            assert!(r.cache.is_some(), "{v}");
        }
        // Tokens and prefill have their own bounds.
        let mut r = replica(1.0);
        r.avg_prompt_tokens = Some(2e6);
        r.avg_prefill_seconds = Some(4000.0);
        let r = trusted(&r);
        assert_eq!(r.avg_prompt_tokens, Some(2e6));
        assert_eq!(r.avg_prefill_seconds, None);
        // An empty cache is no cache.
        let mut r = replica(1.0);
        r.cache = Some(KvCacheConfig {
            num_gpu_blocks: 0,
            block_size: 16,
        });
        assert_eq!(trusted(&r).cache, None);
        assert_eq!(trusted_queue(Some(f64::NAN)), None);
        assert_eq!(trusted_queue(Some(4.0)), Some(4.0));
    }
}
