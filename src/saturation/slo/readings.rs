//! What slo trusts of a replica's readings ([`crate::saturation::readings`]
//! says why): an optional reading it cannot have reported becomes absent
//! (the analysis falls back, and says so, when no replica has it), a queue
//! or a cache usage empty.

use super::SloReplica;
use crate::saturation::readings::{
    fraction, within, MAX_PREFILL_SECONDS, MAX_REQUESTS, MAX_TOKENS,
};
use crate::saturation::v2::KvCacheConfig;

/// The replica with every reading it cannot have reported taken out.
pub(super) fn trusted(r: &SloReplica) -> SloReplica {
    SloReplica {
        pod: r.pod.clone(),
        variant: r.variant.clone(),
        kv: fraction(r.kv),
        waiting: within(r.waiting, MAX_REQUESTS).unwrap_or(0.0),
        waiting_latest: r.waiting_latest.and_then(|v| within(v, MAX_REQUESTS)),
        running: r.running.and_then(|v| within(v, MAX_REQUESTS)),
        completion_rate: r.completion_rate.and_then(|v| within(v, MAX_REQUESTS)),
        avg_prompt_tokens: r.avg_prompt_tokens.and_then(|v| within(v, MAX_TOKENS)),
        avg_output_tokens: r.avg_output_tokens.and_then(|v| within(v, MAX_TOKENS)),
        avg_prefill_seconds: r
            .avg_prefill_seconds
            .and_then(|v| within(v, MAX_PREFILL_SECONDS)),
        cache: r.cache.and_then(KvCacheConfig::plausible),
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
            waiting_latest: Some(v),
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
                r.waiting_latest,
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
