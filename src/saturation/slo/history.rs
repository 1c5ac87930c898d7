//! What the `slo` analysis remembers of a model between decisions, and
//! how it learns from it: time-based moving averages, a history sampled
//! at most every [`SAMPLE_SPACING`] whatever the rate of decisions, and
//! the start-up delay of the model's own scale-ups. Pure.

use std::collections::{BTreeMap, VecDeque};

use crate::saturation::VariantState;

/// Time constant of the learned seconds per request and start-up delay.
const LEARN_SECONDS: f64 = 120.0;
/// Samples closer than this are merged into the history (the server may
/// decide several times a second).
const SAMPLE_SPACING: f64 = 5.0;

#[derive(Debug, Default, Clone)]
pub(crate) struct ModelHistory {
    pub(crate) last_seen: f64,
    pub(crate) seconds_per_request: Option<f64>,
    pub(crate) tokens_per_sequence: Option<f64>,
    /// Mean prefill seconds per request over the model's replicas.
    pub(crate) prefill_seconds: Option<f64>,
    /// The same per variant (a variant on a slower accelerator prefills
    /// slower); a variant not learned yet takes the model's.
    pub(crate) variant_prefill_seconds: BTreeMap<String, f64>,
    /// Per pod, (t, waiting); the endpoint picker's queue under "".
    pub(crate) waiting: BTreeMap<String, VecDeque<(f64, f64)>>,
    /// Per pod, (t, newest waiting), where the backend reports it.
    pub(crate) waiting_latest: BTreeMap<String, VecDeque<(f64, f64)>>,
    /// (t, running).
    pub(crate) running: VecDeque<(f64, f64)>,
    /// (t, arrival rate).
    pub(crate) arrivals: VecDeque<(f64, f64)>,
    pub(crate) startup: Option<f64>,
    /// Scale-ups not yet ready: (since, total spec replicas asked).
    pub(crate) pending: VecDeque<(f64, u32)>,
    pub(crate) last_spec: u32,
}

/// Moving average with a time constant: the same weight per second
/// whether the server decides every second or every minute.
pub(crate) fn blend(old: Option<f64>, new: f64, dt: f64, weight: f64) -> f64 {
    match old {
        None => new,
        Some(old) => {
            let a = (1.0 - (-dt.max(0.0) / LEARN_SECONDS).exp()) * weight.clamp(0.0, 1.0);
            old + a * (new - old)
        }
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub(crate) fn push(v: &mut VecDeque<(f64, f64)>, sample: (f64, f64), window: f64) {
    match v.back_mut() {
        // Within the newest slot: its value becomes the newest, its time
        // stays (moving the time too kept a history that is asked more
        // often than every SAMPLE_SPACING, an HPA and KEDA each polling,
        // at one sample forever: nothing was ever learned). A sample older
        // than the slot (a decision that took the lock late) is dropped.
        Some(last) if sample.0 - last.0 < SAMPLE_SPACING => {
            if sample.0 >= last.0 {
                last.1 = sample.1;
            }
        }
        _ => v.push_back(sample),
    }
    while v.front().is_some_and(|(at, _)| sample.0 - at > window) {
        v.pop_front();
    }
}

/// Learns the start-up delay: from when a scale-up was first seen until
/// the model's ready replicas reached it.
pub(crate) fn learn_startup(h: &mut ModelHistory, variants: &[VariantState], t: f64) {
    let spec: u32 = variants.iter().map(|v| v.spec_replicas).sum();
    let ready: u32 = variants.iter().map(|v| v.ready_replicas).sum();
    if spec > h.last_spec && spec > ready {
        h.pending.push_back((t, spec));
    }
    h.last_spec = spec;
    // A scale-down below a pending target cancels it.
    h.pending.retain(|(_, target)| *target <= spec);
    while let Some(&(since, target)) = h.pending.front() {
        if ready < target {
            break;
        }
        h.pending.pop_front();
        let took = t - since;
        if took > 0.0 {
            h.startup = Some(match h.startup {
                None => took,
                Some(old) => old + 0.5 * (took - old),
            });
        }
    }
    while h.pending.len() > 64 {
        h.pending.pop_front();
    }
}
