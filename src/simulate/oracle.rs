//! The oracle policy: the replicas the arrivals ahead need, by the
//! replica model's own parameters (a bound no real autoscaler reaches),
//! and the reactive reference: the same rules over the arrivals that have
//! already come (what perfect measurement without foresight reaches).

use std::collections::VecDeque;

use super::replica_model::{ReplicaParams, Request};
use super::trace::Arrivals;
use crate::saturation::slo::sizing::{
    prefill_max_rate, replicas_for, ReplicaShape, TAIL_P95, Z_P95,
};

/// The arrivals an oracle knows, from the same streams (same seeds) the
/// loop draws from: run ahead of the loop for the oracle, kept for the
/// last minute for the reactive reference.
pub(crate) struct Lookahead<'t> {
    pub(crate) warm: Arrivals<'t>,
    pub(crate) trace: Arrivals<'t>,
    pub(crate) warm_end: f64,
    pub(crate) reached: f64,
    pub(crate) requests: VecDeque<Request>,
    pub(crate) scratch: Vec<Request>,
}

impl Lookahead<'_> {
    /// Draws the arrivals up to `until` and forgets those before `now`.
    pub(crate) fn advance(&mut self, now: f64, until: f64) {
        if until > self.reached {
            if self.reached < self.warm_end {
                self.scratch.clear();
                self.warm.until(until.min(self.warm_end), &mut self.scratch);
                self.requests.extend(self.scratch.iter().copied());
            }
            if until > self.warm_end {
                self.scratch.clear();
                self.trace.until(until - self.warm_end, &mut self.scratch);
                let shift = self.warm_end;
                self.requests.extend(self.scratch.iter().map(|r| Request {
                    arrival: r.arrival + shift,
                    ..*r
                }));
            }
            self.reached = until;
        }
        while self.requests.front().is_some_and(|r| r.arrival < now) {
            self.requests.pop_front();
        }
        self.requests.make_contiguous();
    }
}

/// Replicas the oracle keeps: the most that any minute starting within
/// `horizon` seconds of `from` needs (sliding by 15 s), by the replica
/// model's parameters: a replica carries the rate whose p95 of sequences
/// fits its cache and whose p95 wait for the prefill engine leaves the
/// objective for the prefill itself (the rules `slo` applies with learned
/// quantities, [`prefill_max_rate`]). The
/// backlog already waiting is added as a rate drained within the
/// objective, at most doubling the rate (as `slo` does). And clumps: the
/// prompts of a few seconds (production traces bring dozens at once) are
/// prefilled by the time the objective after them runs out
/// ([`clump_replicas`]).
pub(crate) fn oracle_replicas(
    params: &ReplicaParams,
    slo_ttft: f64,
    ahead: &[Request],
    from: f64,
    horizon: f64,
    waiting: f64,
) -> u32 {
    windows_replicas(params, slo_ttft, ahead, from, horizon, 60.0, waiting)
}

/// Seconds of past arrivals the reactive reference sizes from: the minute
/// (what the one-minute rates of a real server cover) and its last quarter
/// (a step is seen within a sync period of landing).
pub(crate) const REACTIVE_SPANS: [f64; 2] = [60.0, 15.0];

/// Replicas the reactive reference keeps: the oracle's rules applied to
/// the arrivals of the last minute and of its last 15 s (the larger
/// count), plus the backlog already waiting. It knows the replica model
/// and every arrival so far, nothing ahead, and holds no spare capacity:
/// where it misses the objective after a step, so does every policy that
/// sizes to the need from what it has measured.
pub(crate) fn reactive_replicas(
    params: &ReplicaParams,
    slo_ttft: f64,
    seen: &[Request],
    now: f64,
    waiting: f64,
) -> u32 {
    REACTIVE_SPANS
        .into_iter()
        .map(|span| windows_replicas(params, slo_ttft, seen, now - span, 0.0, span, waiting))
        .max()
        .unwrap_or(0)
}

/// The most replicas any window of `span` seconds starting within
/// `horizon` seconds of `from` (sliding by 15 s) needs; the backlog is
/// added to the first.
fn windows_replicas(
    params: &ReplicaParams,
    slo_ttft: f64,
    ahead: &[Request],
    from: f64,
    horizon: f64,
    span: f64,
    waiting: f64,
) -> u32 {
    let total = f64::from(params.num_gpu_blocks) * f64::from(params.block_size);
    let mut need = 0;
    let mut k = 0.0;
    while k <= horizon {
        let (a, b) = (from + k, from + k + span);
        let lo = ahead.partition_point(|r| r.arrival < a);
        let hi = ahead.partition_point(|r| r.arrival < b);
        let window = &ahead[lo..hi];
        let mut rate = window.len() as f64 / span;
        if k == 0.0 {
            // The backlog drained within the objective, at most doubling.
            rate += (waiting / slo_ttft.max(0.001)).min(rate);
        }
        if !window.is_empty() && rate > 0.0 {
            let n = window.len() as f64;
            let prompt = window
                .iter()
                .map(|r| f64::from(r.input_tokens))
                .sum::<f64>()
                / n;
            let output = window
                .iter()
                .map(|r| f64::from(r.output_tokens))
                .sum::<f64>()
                / n;
            let tokens = prompt + output / 2.0 + f64::from(params.block_size) / 2.0;
            let shape = ReplicaShape {
                sequences: (total / tokens.max(1.0)).min(f64::from(params.max_num_seqs)),
                seconds_per_request: prompt / params.prefill_tokens_per_second
                    + output / params.decode_tokens_per_second,
            };
            let prefill_seconds = prompt.max(1.0) / params.prefill_tokens_per_second;
            let prefill_bound =
                prefill_max_rate(prefill_seconds, slo_ttft, TAIL_P95).unwrap_or(f64::INFINITY);
            let per_replica = shape.max_rate(Z_P95, 0.0).min(prefill_bound);
            need = need.max(replicas_for(rate, per_replica));
            need = need.max(clump_replicas(params, slo_ttft, window));
        }
        k += 15.0;
    }
    need
}

/// Seconds of the clumps [`clump_replicas`] looks at.
const CLUMP_SECONDS: [f64; 3] = [1.0, 5.0, 15.0];

/// Replicas whose prefill engines, together, finish the prompts of every
/// clump in `minute` (a minute of arrivals) within the objective after the
/// clump: a clump of `w` seconds bringing `P` seconds of prefill is done on
/// `n` replicas fed greedily by `P / n` plus the longest prefill (Graham's
/// bound of list scheduling), so it needs `P / (w + ttft - longest)`
/// replicas (none can help when the longest prompt alone takes the
/// objective). A clump of no more than 5 % of the minute's
/// requests may be late (the objective is that minute's p95), so it does
/// not count. The minute-rate rules cannot see such clumps: a minute at a
/// modest rate can hold them.
pub(crate) fn clump_replicas(params: &ReplicaParams, slo_ttft: f64, minute: &[Request]) -> u32 {
    let allowed_late = (minute.len() as f64 * TAIL_P95).floor() as usize;
    let per_second = params.prefill_tokens_per_second.max(1e-9);
    let longest = minute
        .iter()
        .map(|r| f64::from(r.input_tokens) / per_second)
        .fold(0.0, f64::max);
    let mut need = 0;
    for w in CLUMP_SECONDS {
        let mut hi = 0;
        let mut tokens = 0.0;
        for (lo, first) in minute.iter().enumerate() {
            while hi < minute.len() && minute[hi].arrival < first.arrival + w {
                tokens += f64::from(minute[hi].input_tokens);
                hi += 1;
            }
            let budget = w + slo_ttft - longest;
            if hi - lo > allowed_late && budget > 0.0 {
                let prefill = tokens / per_second;
                need = need.max(replicas_for(prefill, budget));
            }
            tokens -= f64::from(first.input_tokens);
        }
    }
    need
}
