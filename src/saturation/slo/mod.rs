//! The analysis sized to a latency objective (`analyzerName: slo`): the
//! replica count whose time to first token meets the model's objective at
//! the arrival rate expected once new replicas would be ready.
//!
//! It reads only what vLLM exposes (and the server already collects): per
//! replica the completion rate (`vllm:request_success_total`), the mean
//! prompt and generated tokens of finished requests (the request-token
//! histograms), running and waiting requests, KV-cache usage and size
//! (`vllm:cache_config_info`), and the endpoint picker's queue where there
//! is one. From these, with no configured capacity:
//!
//! - tokens per sequence = mean prompt + half the mean output (a sequence
//!   grows while it decodes) + half a block; sequences per replica = the
//!   cache's tokens / that (the cache-size prior);
//! - seconds per request = sequences in the replicas / completion rate
//!   (Little's law), learned online with a time-based moving average that
//!   weighs busy replicas most;
//! - arrival rate = completion rate + the growth of the queues (waiting,
//!   and the picker's) over the last minute, pod by pod; on a pod working
//!   off a backlog signed, so that its completions are not taken for new
//!   arrivals;
//! - the trend of the arrival rate over the last minutes, projected over
//!   the start-up delay (learned from how long the model's scale-ups took
//!   to become ready);
//! - the backlog: a replica whose own queue takes longer than the
//!   objective to drain carries none of the new arrivals (its queued
//!   requests are its own; more replicas do not drain them sooner); the
//!   picker's queue drains within the objective, at most doubling the
//!   rate asked for;
//! - per replica, the highest rate whose p95 of sequences in the replica
//!   stays within the cache, and whose p95 wait for the prefill engine
//!   (one prompt at a time) leaves the objective for the prefill itself
//!   ([`sizing`]; the mean prefill time from
//!   `vllm:request_prefill_time_seconds`, where exported);
//! - scale-down only to a count that carries the highest arrival rate of
//!   the last minutes at [`DOWN_MARGIN`] of that rate.
//!
//! A signal it cannot size without (the cache size, the completion rate,
//! the token lengths) makes it return [`MissingSignal`]: the caller falls
//! back to V2, then V1, and says so.
//!
//! Pure: the state is per model ([`history`]), dated by the injected
//! clock, bounded.

mod backlog;
mod history;
mod lone;
pub mod objective;
mod prior;
mod readings;
pub mod sizing;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::v2::{optimize, KvCacheConfig, OptimizerVariant};
use super::{TargetReason, VariantState, VariantTarget};
use backlog::{backlogged, completions, long_backlog, queue};
use history::{blend, learn_startup, median, push, ModelHistory};
use lone::second_replica;
pub(crate) use objective::{ServiceClasses, SloObjective};
use prior::{by_concurrency, hold, idle};
use sizing::{prefill_max_rate, queue_growth, robust_slope, ReplicaShape, TAIL_P95, Z_P95};

/// Name of the analysis in served labels, status and `/metrics`.
pub(crate) const ANALYZER_NAME: &str = "slo";

/// Scale-down keeps this fraction of a replica's rate as margin: a smaller
/// count is taken only when it carries the recent peak at 85 % of what the
/// objective allows.
pub(crate) const DOWN_MARGIN: f64 = 0.85;
/// The start-up delay assumed before the model's first scale-up was seen
/// to become ready (then it is learned).
pub(crate) const DEFAULT_STARTUP: Duration = Duration::from_secs(120);
/// Window of the growth of requests in the system.
const GROWTH_WINDOW: f64 = 60.0;
/// Window of a queue's recent rise, taken where it is steeper than the
/// minute's slope: a load step is sized from its first half-minute, not
/// from a minute that averages the calm before it in (the replicas asked
/// for then come in one start-up delay, not in several).
const RISE_WINDOW: f64 = 30.0;
/// Window of the arrival-rate trend.
const TREND_WINDOW: f64 = 300.0;
/// Window whose highest arrival rate a scale-down must carry.
const DOWN_WINDOW: f64 = 180.0;
/// A model not decided for this long is forgotten.
const FORGET_AFTER: f64 = 3600.0;
/// Models remembered at most (the oldest is forgotten first).
const MAX_MODELS: usize = 4096;

/// What the analysis reads of one ready replica.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SloReplica {
    pub(crate) pod: String,
    pub(crate) variant: String,
    /// KV-cache usage in [0, 1] (the one-minute peak).
    pub(crate) kv: f64,
    /// Waiting requests (the one-minute peak).
    pub(crate) waiting: f64,
    /// Waiting requests in the newest sample, when the backend reports it
    /// (a long backlog's fall shows here a minute before the peak falls).
    pub(crate) waiting_latest: Option<f64>,
    /// Running requests, when the backend knows them.
    pub(crate) running: Option<f64>,
    /// Finished requests per second over the last minute.
    pub(crate) completion_rate: Option<f64>,
    pub(crate) avg_prompt_tokens: Option<f64>,
    pub(crate) avg_output_tokens: Option<f64>,
    /// Mean seconds of prefill per request over the last minute
    /// (`vllm:request_prefill_time_seconds`' `_sum` / `_count`), when known.
    pub(crate) avg_prefill_seconds: Option<f64>,
    pub(crate) cache: Option<KvCacheConfig>,
}

/// One model's inputs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SloModelInput<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) model_id: &'a str,
    pub(crate) replicas: &'a [SloReplica],
    pub(crate) variants: &'a [VariantState],
    pub(crate) objective: SloObjective,
    /// `sloHeadroom`: replicas for `1 + headroom` times the rate sized for
    /// (validated to 0..=9 where it is read).
    pub(crate) headroom: f64,
    /// Requests queued for the model in the endpoint picker.
    pub(crate) scheduler_queue: Option<f64>,
}

/// A signal without which the analysis cannot size the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingSignal {
    /// No replica exports `vllm:cache_config_info`.
    CacheConfig,
    /// No replica has a completion rate (`vllm:request_success_total`).
    CompletionRate,
    /// Requests are in flight but no mean prompt/output length is known
    /// (the request-token histograms), now or before.
    TokenLengths,
}

impl MissingSignal {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            MissingSignal::CacheConfig => "vllm:cache_config_info",
            MissingSignal::CompletionRate => "vllm:request_success_total",
            MissingSignal::TokenLengths => {
                "vllm:request_prompt_tokens/vllm:request_generation_tokens"
            }
        }
    }
}

/// What the analysis found, for logs, status and tests.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SloAnalysis {
    /// Arrivals per second now (completions + growth in the system).
    pub(crate) arrival_rate: f64,
    /// The rate sized for: projected over the start-up delay, plus the
    /// backlog's drain.
    pub(crate) sized_rate: f64,
    /// Requests waiting (replicas and endpoint picker).
    pub(crate) backlog: f64,
    pub(crate) seconds_per_request: f64,
    pub(crate) tokens_per_sequence: f64,
    /// Mean prefill seconds per request, when the replicas report it.
    pub(crate) prefill_seconds: Option<f64>,
    /// Per variant (input order): requests/s one replica carries within
    /// the objective.
    pub(crate) per_replica_rate: Vec<f64>,
    /// The start-up delay used (learned or the default).
    pub(crate) startup_seconds: f64,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SloDecision {
    Sized {
        analysis: SloAnalysis,
        targets: Vec<VariantTarget>,
    },
    /// No ready replica reported: hold.
    NoMetrics { targets: Vec<VariantTarget> },
    /// The caller falls back to another analysis.
    Missing(MissingSignal),
}

/// The analysis with its per-model state.
#[derive(Debug, Default)]
pub(crate) struct SloAnalyzer {
    state: Mutex<BTreeMap<(String, String), ModelHistory>>,
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl SloAnalyzer {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Decides one model at `now`.
    pub(crate) fn decide(&self, input: &SloModelInput<'_>, now: SystemTime) -> SloDecision {
        let t = seconds(now);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.retain(|_, h| t - h.last_seen <= FORGET_AFTER);
        if state.len() >= MAX_MODELS {
            if let Some(oldest) = state
                .iter()
                .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen))
                .map(|(k, _)| k.clone())
            {
                state.remove(&oldest);
            }
        }
        let history = state
            .entry((input.namespace.to_owned(), input.model_id.to_owned()))
            .or_default();
        let replicas: Vec<SloReplica> = input.replicas.iter().map(readings::trusted).collect();
        let input = SloModelInput {
            replicas: &replicas,
            scheduler_queue: readings::trusted_queue(input.scheduler_queue),
            ..*input
        };
        decide_with(&input, history, t)
    }
}

/// One decision on readings [`readings::trusted`] let through: finite,
/// not negative, usage within [0, 1] (so no clamp below repeats it).
fn decide_with(input: &SloModelInput<'_>, h: &mut ModelHistory, t: f64) -> SloDecision {
    let dt = if h.last_seen > 0.0 {
        t - h.last_seen
    } else {
        0.0
    };
    h.last_seen = t;
    learn_startup(h, input.variants, t);
    if input.replicas.is_empty() {
        return SloDecision::NoMetrics {
            targets: hold(input.variants, TargetReason::NoMetrics),
        };
    }
    let caches: Vec<&KvCacheConfig> = input
        .replicas
        .iter()
        .filter_map(|r| r.cache.as_ref())
        .collect();
    let Some(model_cache) = median(caches.iter().map(|c| c.total_tokens() as f64).collect()) else {
        return SloDecision::Missing(MissingSignal::CacheConfig);
    };
    let block = median(caches.iter().map(|c| c.block_size as f64).collect()).unwrap_or(16.0);
    if input.replicas.iter().all(|r| r.completion_rate.is_none()) {
        return SloDecision::Missing(MissingSignal::CompletionRate);
    }
    let rate: f64 = input.replicas.iter().map(completions).sum();
    // Token lengths: the completion-weighted mean over replicas, else the
    // last known.
    let weighted_over = |f: fn(&SloReplica) -> Option<f64>, variant: Option<&str>| {
        let (mut sum, mut weight) = (0.0, 0.0);
        let replicas = input
            .replicas
            .iter()
            .filter(|r| variant.is_none_or(|v| r.variant == v));
        for r in replicas {
            if let (Some(v), Some(w)) = (f(r), r.completion_rate) {
                if w > 0.0 {
                    sum += v * w;
                    weight += w;
                }
            }
        }
        (weight > 0.0).then(|| sum / weight)
    };
    let weighted = |f: fn(&SloReplica) -> Option<f64>| weighted_over(f, None);
    if let (Some(p), Some(o)) = (
        weighted(|r| r.avg_prompt_tokens),
        weighted(|r| r.avg_output_tokens),
    ) {
        let tokens = p + o / 2.0 + block / 2.0;
        h.tokens_per_sequence = Some(blend(h.tokens_per_sequence, tokens, dt, 1.0));
    }
    let prefill_of = |r: &SloReplica| r.avg_prefill_seconds.filter(|s| *s > 0.0);
    if let Some(prefill) = weighted(prefill_of) {
        h.prefill_seconds = Some(blend(h.prefill_seconds, prefill, dt, 1.0));
    }
    h.variant_prefill_seconds
        .retain(|name, _| input.variants.iter().any(|v| &v.name == name));
    for v in input.variants {
        if let Some(prefill) = weighted_over(prefill_of, Some(&v.name)) {
            let learned = h.variant_prefill_seconds.get(&v.name).copied();
            h.variant_prefill_seconds
                .insert(v.name.clone(), blend(learned, prefill, dt, 1.0));
        }
    }
    let picker_queue = input.scheduler_queue.unwrap_or(0.0);
    let waiting: f64 = input.replicas.iter().map(|r| r.waiting).sum::<f64>() + picker_queue;
    let busy = waiting > 0.0
        || input
            .replicas
            .iter()
            .any(|r| r.kv > 0.0 || r.running.is_some_and(|n| n > 0.0));
    let Some(tokens_per_sequence) = h.tokens_per_sequence else {
        if busy {
            return SloDecision::Missing(MissingSignal::TokenLengths);
        }
        return idle(input);
    };
    // Sequences in the replicas: running where reported, else the tokens in
    // the cache over the tokens per sequence.
    let running: f64 = input
        .replicas
        .iter()
        .map(|r| {
            r.running.unwrap_or_else(|| {
                r.kv * r.cache.map_or(model_cache, |c| c.total_tokens() as f64)
                    / tokens_per_sequence
            })
        })
        .sum();
    let sequences = model_cache / tokens_per_sequence;
    // Arrivals, pod by pod: its completions plus the growth of its queue
    // over the last minute (the requests it does not keep up with). On a
    // pod whose queue takes longer than the objective to finish (working
    // off a backlog) the growth is signed and the sum never below zero, so
    // that a pod draining a backlog (finishing requests that arrived
    // minutes ago, its queue shrinking as fast) counts for the few that
    // still reach it, not for its throughput: counting that throughput as
    // arrivals sized a load step's drain for about twice the load. On
    // other pods a fall of the queue is not taken off (a short queue's
    // one-minute peak falls a minute after the queue did, when the
    // completions that emptied it have left the rate). Growth only over pods seen
    // for the whole window. The growth of the running set is left out (it
    // grows when new replicas fill, at no change of arrivals), and so is a
    // new pod's queue: a load-aware picker levels it with the others as it
    // joins while the total backlog shrinks, and the waiting reported is a
    // one-minute peak, which would take that levelling for growth.
    push(&mut h.running, (t, running), GROWTH_WINDOW);
    let queues = input
        .replicas
        .iter()
        .map(|r| (r.pod.as_str(), r.waiting))
        .chain(input.scheduler_queue.map(|q| ("", q)));
    for (pod, w) in queues {
        let series = h.waiting.entry(pod.to_owned()).or_default();
        push(series, (t, w), GROWTH_WINDOW);
    }
    for r in input.replicas {
        if let Some(w) = r.waiting_latest {
            let series = h.waiting_latest.entry(r.pod.clone()).or_default();
            push(series, (t, w), GROWTH_WINDOW);
        }
    }
    let recent = |v: &VecDeque<(f64, f64)>| v.back().is_some_and(|(at, _)| t - at <= GROWTH_WINDOW);
    h.waiting.retain(|_, v| recent(v));
    h.waiting_latest.retain(|_, v| recent(v));
    let startup = h.startup.unwrap_or(DEFAULT_STARTUP.as_secs_f64());
    // A history that spans most of the growth window; for a pod's queue,
    // a pod seen for the window (not one that joined within it).
    let spans_growth = |v: &VecDeque<(f64, f64)>| {
        v.front()
            .is_some_and(|(at, _)| t - at >= GROWTH_WINDOW * 0.75)
    };
    let seen_for_window = |pod: &str| h.waiting.get(pod).is_some_and(spans_growth);
    // A long backlog's growth is read from its newest values
    // ([`long_backlog`] says why).
    let growth_of = |pod: &str, latest: bool| -> f64 {
        let histories = if latest {
            &h.waiting_latest
        } else {
            &h.waiting
        };
        histories
            .get(pod)
            .filter(|v| spans_growth(v))
            .and_then(|v| {
                let points: Vec<(f64, f64)> = v.iter().copied().collect();
                queue_growth(&points, t, RISE_WINDOW)
            })
            .unwrap_or(0.0)
    };
    let ttft = input.objective.ttft_seconds.max(0.001);
    let replica_arrivals: f64 = input
        .replicas
        .iter()
        .map(|r| {
            let completions = completions(r);
            let growth = growth_of(&r.pod, long_backlog(r, startup));
            if backlogged(r, ttft) {
                // Working off a backlog: its shrinking queue says its
                // completions are old arrivals.
                (completions + growth).max(0.0)
            } else {
                completions + growth.max(0.0)
            }
        })
        .sum();
    let arrival_rate = (replica_arrivals + growth_of("", false)).max(0.0);
    let spanned = spans_growth(&h.running);
    if rate > 0.0 && spanned {
        // Little's law over the completion rate's own window: the mean
        // running over the last minute over the rate of that minute (the
        // newest count alone over a one-minute rate would take a load step
        // for slow requests). Busy minutes say most about the rate near
        // capacity; a minute that was partly idle says little.
        let n = h.running.len() as f64;
        let mean = h.running.iter().map(|(_, r)| r).sum::<f64>() / n;
        let least = h
            .running
            .iter()
            .map(|(_, r)| *r)
            .fold(f64::INFINITY, f64::min);
        if mean >= 1.0 && least >= 0.5 * mean {
            let observed = mean / rate;
            let load = mean / (sequences * input.replicas.len() as f64);
            h.seconds_per_request = Some(blend(h.seconds_per_request, observed, dt, load.max(0.2)));
        }
    }
    push(&mut h.arrivals, (t, arrival_rate), TREND_WINDOW);
    let Some(seconds_per_request) = h.seconds_per_request else {
        if busy {
            return by_concurrency(input, running, waiting, sequences, tokens_per_sequence);
        }
        return idle(input);
    };
    // A trend is growth in both halves of the window: a load step (seen as
    // a one-minute rise through the completion rate's window) rises in one.
    // So only over a history that spans most of the window: over the two
    // minutes of a server just started, that one-minute rise fills both
    // halves and was projected as a steep ramp.
    let arrivals: Vec<(f64, f64)> = h.arrivals.iter().copied().collect();
    let (older, newer) = arrivals.split_at(arrivals.len() / 2);
    let spans_window = arrivals
        .first()
        .is_some_and(|(at, _)| t - at >= TREND_WINDOW * 0.75);
    let trend = robust_slope(older)
        .zip(robust_slope(newer))
        .filter(|_| spans_window)
        .map_or(0.0, |(a, b)| a.min(b));
    // Not while a replica works off a backlog: the estimate then moves with
    // the drain and with new replicas joining, not with demand, and its
    // rise was projected as a ramp on top of a step already counted.
    let trend = if input.replicas.iter().any(|r| backlogged(r, ttft)) {
        0.0
    } else {
        trend
    };
    let projected = arrival_rate + trend.max(0.0) * startup;
    // Per variant: its replicas' cache, else the model's. No wait for a
    // slot is counted on: the objective is a p95 per minute, and a minute
    // holds several independent looks at the replica, so the stationary
    // p95 of sequences within the cache is already the loose end of it.
    let allowed_wait = 0.0;
    // The prefill bound: a replica prefills one prompt at a time, so long
    // prompts (code completion, retrieval) fill its prefill queue long
    // before its cache; the time to first token waits on that queue. Per
    // variant: variants on different accelerators prefill at different
    // speeds, as their caches differ.
    let prefill_of_variant = |name: &str| {
        h.variant_prefill_seconds
            .get(name)
            .copied()
            .or(h.prefill_seconds)
    };
    // Per variant: (requests/s within the objective, requests/s finished
    // with the cache or the prefill full).
    let shapes: Vec<(f64, f64)> = input
        .variants
        .iter()
        .map(|v| {
            let cache = median(
                input
                    .replicas
                    .iter()
                    .filter(|r| r.variant == v.name)
                    .filter_map(|r| r.cache.map(|c| c.total_tokens() as f64))
                    .collect(),
            )
            .unwrap_or(model_cache);
            let shape = ReplicaShape {
                sequences: cache / tokens_per_sequence,
                seconds_per_request,
            };
            let prefill = prefill_of_variant(&v.name);
            let prefill_rate = prefill.and_then(|s| prefill_max_rate(s, ttft, TAIL_P95));
            let prefill_full = prefill.map(|s| 1.0 / s);
            (
                shape
                    .max_rate(Z_P95, allowed_wait)
                    .min(prefill_rate.unwrap_or(f64::INFINITY)),
                (shape.sequences / seconds_per_request).min(prefill_full.unwrap_or(f64::INFINITY)),
            )
        })
        .collect();
    // The headroom a user chose (`sloHeadroom`) against a rise nothing
    // measured foretells: a load step lands on the replicas there are for
    // a start-up delay whatever is asked for then. Each replica is sized to
    // carry `1 / (1 + headroom)` of its rate, so the spare capacity scales
    // with the load, and the scale-down margin and the lone replica's
    // second keep it.
    let headroom_share = 1.0 / (1.0 + input.headroom.max(0.0));
    let per_replica: Vec<f64> = shapes
        .iter()
        .map(|(rate, _)| rate * headroom_share)
        .collect();
    // The backlog. A request waiting in a replica is served by that
    // replica (vLLM does not hand it to another): more replicas do not
    // drain it sooner, they take the new arrivals off it while it drains.
    // So a replica's capacity is held by its own queue for the part of the
    // next start-up delay (the time any replica asked for now takes to
    // come) that it needs to finish that queue at a full cache's rate, and
    // that part is added to the rate sized for. Sizing the whole backlog's
    // drain within the objective instead asked for up to twice the load
    // (maxReplicas on a load step) for replicas that could not take any of
    // it. Not a pod that joined within the window: what waits there came
    // since it joined, arrivals the rate already sizes for (counting them
    // again kept a step's replicas at twice what it needed). The queue is
    // its newest value ([`queue`]). The endpoint
    // picker's queue can go to any replica: it drains within the
    // objective, at most doubling the rate asked for (a queue spike alone
    // never asks for everything).
    let held: f64 = input
        .variants
        .iter()
        .zip(&shapes)
        .map(|(v, (rate, full))| {
            input
                .replicas
                .iter()
                .filter(|r| r.variant == v.name && seen_for_window(&r.pod))
                .map(|r| rate * (queue(r) / (full * startup).max(1e-9)).min(1.0))
                .sum::<f64>()
        })
        .sum();
    let drain = (picker_queue / ttft).min(projected.max(rate)) + held;
    let sized_rate = projected + drain;
    let recent_peak = h
        .arrivals
        .iter()
        .filter(|(at, _)| t - at <= DOWN_WINDOW)
        .map(|(_, r)| *r)
        .fold(arrival_rate, f64::max)
        + drain;
    let supply: f64 = input
        .variants
        .iter()
        .zip(&per_replica)
        .map(|(v, r)| f64::from(v.spec_replicas) * r)
        .sum();
    let opt = |margin: f64| -> Vec<OptimizerVariant> {
        input
            .variants
            .iter()
            .zip(&per_replica)
            .map(|(v, r)| OptimizerVariant::from_state(v, r * margin))
            .collect()
    };
    let mut targets = if sized_rate > supply + 1e-9 {
        optimize(&opt(1.0), sized_rate - supply, 0.0)
    } else {
        let spare = supply * DOWN_MARGIN - recent_peak;
        optimize(&opt(DOWN_MARGIN), 0.0, spare)
    };
    second_replica(&mut targets, input.variants, &per_replica, recent_peak);
    SloDecision::Sized {
        analysis: SloAnalysis {
            arrival_rate,
            sized_rate,
            backlog: waiting,
            seconds_per_request,
            tokens_per_sequence,
            prefill_seconds: h.prefill_seconds,
            per_replica_rate: per_replica,
            startup_seconds: startup,
        },
        targets,
    }
}

#[cfg(test)]
mod tests;
