//! What the simulated collector reads of a replica (one sample a second,
//! the one-minute windows the analyses see) and what a run records per
//! minute.

use std::collections::VecDeque;

use super::replica_model::{FinishedCounters, ReplicaModel};

/// The span of the collector's (and `max_over_time`'s) peak window.
pub(crate) const PEAK_WINDOW: u64 = 60;

/// One simulated minute of one policy.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Minute {
    /// Requests that arrived.
    pub(crate) arrivals: u32,
    /// Mean pods (ready or starting): what is paid for.
    pub(crate) replicas: f64,
    pub(crate) ready_replicas: f64,
    /// p95 of the times to first token that went out this minute.
    pub ttft_p95: Option<f64>,
    /// Mean KV-cache usage over ready pods.
    pub(crate) kv_usage: Option<f64>,
}

/// What a scrape of a replica reads at the end of a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) at: u64,
    pub(crate) kv: f64,
    pub(crate) waiting: f64,
    pub(crate) running: f64,
    pub(crate) finished: FinishedCounters,
}

/// What the collector (or Prometheus) holds of a replica at some instant:
/// the one-minute peaks, and the mean tokens of the requests that finished
/// in that minute (`rate(_sum[1m]) / rate(_count[1m])`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) kv: f64,
    pub(crate) queue: f64,
    /// The newest sample's waiting requests.
    pub(crate) queue_latest: f64,
    /// (prompt, generated) tokens per request; None when none finished.
    pub(crate) token_means: Option<(f64, f64)>,
    /// Mean prefill seconds per request finished in the window.
    pub(crate) prefill_seconds: Option<f64>,
    /// The newest sample's running requests.
    pub(crate) running: f64,
    /// Finished requests per second between the first and last samples
    /// (`rate(vllm:request_success_total[1m])`); None with one sample.
    pub(crate) completion_rate: Option<f64>,
}

pub(crate) struct Pod {
    /// Its name's number, in creation order (names are never reused).
    pub(crate) id: u64,
    pub(crate) model: ReplicaModel,
    pub(crate) ready_at: u64,
    /// One per second, the last `PEAK_WINDOW` seconds.
    pub(crate) samples: VecDeque<Sample>,
}

impl Pod {
    /// The window ending at `now` of the samples a scraper with this period
    /// and phase took: the peaks `max_over_time(...[1m])` (or the
    /// collector's window) holds at `now`, and the token means from the
    /// first and last of those samples, as `rate()` takes them.
    pub(crate) fn window(&self, now: u64, period: u64, phase: u64) -> Option<Window> {
        let period = period.max(1);
        let from = now.saturating_sub(PEAK_WINDOW);
        let mut seen = self
            .samples
            .iter()
            .filter(|s| s.at > from && s.at <= now && s.at % period == phase % period);
        let first = seen.next()?;
        let (mut kv, mut queue, mut last) = (first.kv, first.waiting, first);
        for s in seen {
            kv = kv.max(s.kv);
            queue = queue.max(s.waiting);
            last = s;
        }
        let span = last.at.saturating_sub(first.at);
        Some(Window {
            kv,
            queue,
            queue_latest: last.waiting,
            token_means: last.finished.means_since(&first.finished),
            prefill_seconds: last.finished.prefill_mean_since(&first.finished),
            running: last.running,
            completion_rate: (span > 0).then(|| {
                last.finished
                    .requests
                    .saturating_sub(first.finished.requests) as f64
                    / span as f64
            }),
        })
    }
}

#[derive(Default)]
pub(crate) struct MinuteAccumulator {
    pub(crate) seconds: u32,
    pub(crate) arrivals: u32,
    pub(crate) pod_seconds: f64,
    pub(crate) ready_seconds: f64,
    pub(crate) kv_sum: f64,
    pub(crate) kv_samples: u32,
    pub(crate) ttfts: Vec<f64>,
}

impl MinuteAccumulator {
    pub(crate) fn finish(&mut self) -> Minute {
        let seconds = f64::from(self.seconds.max(1));
        let m = Minute {
            arrivals: self.arrivals,
            replicas: self.pod_seconds / seconds,
            ready_replicas: self.ready_seconds / seconds,
            ttft_p95: percentile(&mut self.ttfts, 0.95),
            kv_usage: (self.kv_samples > 0).then(|| self.kv_sum / f64::from(self.kv_samples)),
        };
        *self = MinuteAccumulator::default();
        m
    }
}

/// The nearest-rank percentile (`q` in (0, 1]); None for no values.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
