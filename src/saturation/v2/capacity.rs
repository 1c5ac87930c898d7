//! Token capacity of replicas, variants and a model (upstream WVA's
//! `saturation_v2` analyzer, re-derived from its documented behaviour).
//!
//! Per replica: total KV tokens = blocks x block size, tokens in use =
//! round(kv x total), demand = in use + queue x mean prompt tokens; k1 =
//! total x kvCacheThreshold (memory bound), k2 = the compute bound (observed
//! while the queue is at its threshold, else history, else derived from the
//! engine parameters, else k1); capacity = min(k1, k2).

use std::time::SystemTime;

pub(crate) use super::engine::EngineParams;
use super::history::{CapacityMemory, CapacityRecord, K2History, K2Key, OutputBucket};
use crate::saturation::{SaturationThresholds, VariantState};

/// `vllm:cache_config_info`'s `num_gpu_blocks` and `block_size` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KvCacheConfig {
    pub num_gpu_blocks: u64,
    pub block_size: u64,
}

impl KvCacheConfig {
    pub(crate) fn total_tokens(&self) -> u64 {
        self.num_gpu_blocks.saturating_mul(self.block_size)
    }

    /// The cache when it holds at least one token and at most
    /// [`MAX_CACHE_TOKENS`](crate::saturation::readings::MAX_CACHE_TOKENS)
    /// (a label any pod can export; beyond it sums of caches overflow).
    pub(crate) fn plausible(self) -> Option<Self> {
        (1..=crate::saturation::readings::MAX_CACHE_TOKENS)
            .contains(&self.total_tokens())
            .then_some(self)
    }
}

/// What V2 needs of one replica.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicaTokens {
    pub(crate) pod: String,
    pub(crate) variant: String,
    pub(crate) accelerator: String,
    /// KV-cache usage in [0, 1].
    pub(crate) kv: f64,
    /// Waiting requests.
    pub(crate) queue: f64,
    /// None: the replica does not report `vllm:cache_config_info`; V2 skips it.
    pub(crate) cache: Option<KvCacheConfig>,
    /// Mean prompt tokens per request (rate of `_sum` / `_count`).
    pub(crate) avg_input_tokens: Option<f64>,
    /// Mean generated tokens per request.
    pub(crate) avg_output_tokens: Option<f64>,
    /// Prefix-cache hits / queries in [0, 1] (rate over the window).
    pub(crate) prefix_cache_hit_rate: Option<f64>,
    /// Time of the newest sample: dates k2 observations.
    pub(crate) sampled_at: SystemTime,
}

/// Where a replica's k2 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum K2Source {
    Observed,
    History,
    Derived,
    MemoryBound,
}

/// One replica's capacity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplicaCapacity {
    pub(crate) pod: String,
    pub(crate) variant: String,
    pub(crate) total_tokens: u64,
    pub(crate) tokens_in_use: u64,
    pub(crate) demand: u64,
    pub(crate) k1: u64,
    pub(crate) k2: u64,
    pub(crate) k2_source: K2Source,
    pub(crate) effective: u64,
}

/// One variant's capacity.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariantCapacity {
    pub(crate) name: String,
    pub(crate) cost: f64,
    pub(crate) accelerator: String,
    pub(crate) ready: u32,
    pub(crate) pending: u32,
    /// Median effective capacity of its live replicas, else remembered /
    /// derived capacity, else 0 (unknown: the optimizer skips it).
    pub(crate) per_replica: f64,
    pub(crate) supply: f64,
    pub(crate) demand: f64,
}

/// Requests queued in the llm-d scheduler's flow control (not yet on a pod).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct SchedulerQueue {
    pub(crate) requests: f64,
    pub(crate) bytes: f64,
}

/// Bytes per token used to turn the scheduler queue's bytes into tokens (upstream: 4).
pub(crate) const BYTES_PER_TOKEN: f64 = 4.0;

/// A variant as V2 sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenVariant {
    pub(crate) state: VariantState,
    pub(crate) accelerator: String,
    /// From the scale target's container args (Deployments only, as
    /// upstream), when known.
    pub(crate) engine: Option<EngineParams>,
}

/// Everything one model's V2 decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenModelInput<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) model_id: &'a str,
    pub(crate) replicas: &'a [ReplicaTokens],
    pub(crate) variants: &'a [TokenVariant],
    pub(crate) thresholds: &'a SaturationThresholds,
    pub(crate) scheduler_queue: Option<SchedulerQueue>,
}

/// The model-level result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenAnalysis {
    pub(crate) replicas: Vec<ReplicaCapacity>,
    /// In input variant order.
    pub(crate) variants: Vec<VariantCapacity>,
    pub(crate) supply: f64,
    pub(crate) anticipated_supply: f64,
    pub(crate) demand: f64,
    /// Tokens of capacity to add: demand / scaleUpThreshold - anticipated supply (>= 0).
    pub(crate) required: f64,
    /// Tokens of capacity that can go: supply - demand / scaleDownBoundary (>= 0).
    pub(crate) spare: f64,
}

impl TokenAnalysis {
    /// Demand over supply, 0 without supply: orders models for the limiter.
    pub(crate) fn utilization(&self) -> f64 {
        if self.supply > 0.0 {
            self.demand / self.supply
        } else if self.demand > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }
}

/// The mutable state V2 keeps between decisions.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenState {
    pub(crate) k2_history: K2History,
    pub(crate) capacity: CapacityMemory,
}

impl TokenState {
    /// Upstream's evictions (k2 history 24 h, capacity 7 days).
    pub(crate) fn evict(&mut self, now: SystemTime) -> usize {
        self.k2_history.evict(now) + self.capacity.evict(now)
    }
}

/// Median, the mean of the middle two (rounded down) for an even count.
pub(crate) fn median(values: &mut [u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 0 {
        (values[n / 2 - 1] + values[n / 2]) / 2
    } else {
        values[n / 2]
    }
}

/// Model-level workload averages over the replicas that report prompt or
/// output lengths: mean prompt tokens, mean output tokens, mean prefix-cache
/// hit rate (a replica without one counts as 0, as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct WorkloadAverages {
    pub(crate) input: f64,
    pub(crate) output: f64,
    pub(crate) prefix_hit_rate: f64,
}

pub(crate) fn workload_averages(replicas: &[ReplicaTokens]) -> WorkloadAverages {
    let (mut i, mut o, mut h, mut n) = (0.0, 0.0, 0.0, 0usize);
    for r in replicas {
        let (ri, ro) = (
            r.avg_input_tokens.unwrap_or(0.0),
            r.avg_output_tokens.unwrap_or(0.0),
        );
        if ri > 0.0 || ro > 0.0 {
            i += ri;
            o += ro;
            h += r.prefix_cache_hit_rate.unwrap_or(0.0).clamp(0.0, 1.0);
            n += 1;
        }
    }
    if n == 0 {
        WorkloadAverages::default()
    } else {
        let n = n as f64;
        WorkloadAverages {
            input: i / n,
            output: o / n,
            prefix_hit_rate: h / n,
        }
    }
}

/// Token demand of requests queued in the scheduler: input tokens estimated
/// from bytes and from count (the larger), reduced by the prefix-cache hit
/// rate (those prompt tokens reuse cached blocks), plus their output tokens.
/// The local vLLM queue gets no such reduction: its requests have not been
/// looked up in the prefix cache yet (upstream's rule).
pub(crate) fn scheduler_queue_demand(q: Option<SchedulerQueue>, replicas: &[ReplicaTokens]) -> f64 {
    let Some(q) = q.filter(|q| q.requests > 0.0 || q.bytes > 0.0) else {
        return 0.0;
    };
    let w = workload_averages(replicas);
    let input = (q.bytes / BYTES_PER_TOKEN).max(q.requests * w.input) * (1.0 - w.prefix_hit_rate);
    input + q.requests * w.output
}

/// The replica with every reading it cannot have reported taken out
/// ([`crate::saturation::readings`] says why): token means and the hit rate
/// become absent, a queue or a cache usage empty.
pub(crate) fn trusted(r: &ReplicaTokens) -> ReplicaTokens {
    use crate::saturation::readings::{fraction, within, MAX_REQUESTS, MAX_TOKENS};
    ReplicaTokens {
        kv: fraction(r.kv),
        cache: r.cache.and_then(KvCacheConfig::plausible),
        queue: within(r.queue, MAX_REQUESTS).unwrap_or(0.0),
        avg_input_tokens: r.avg_input_tokens.and_then(|v| within(v, MAX_TOKENS)),
        avg_output_tokens: r.avg_output_tokens.and_then(|v| within(v, MAX_TOKENS)),
        prefix_cache_hit_rate: r.prefix_cache_hit_rate.and_then(|v| within(v, 1.0)),
        ..r.clone()
    }
}

/// The endpoint picker's queue, when both its counts are counts.
pub(crate) fn trusted_queue(q: SchedulerQueue) -> Option<SchedulerQueue> {
    use crate::saturation::readings::{within, MAX_QUEUE_BYTES, MAX_REQUESTS};
    Some(SchedulerQueue {
        requests: within(q.requests, MAX_REQUESTS)?,
        bytes: within(q.bytes, MAX_QUEUE_BYTES)?,
    })
}

/// One replica's capacity; None when it has no cache config (skipped by V2).
/// Records a k2 observation in `history` when the queue is saturated.
pub(crate) fn replica_capacity(
    r: &ReplicaTokens,
    model_id: &str,
    engine: Option<&EngineParams>,
    th: &SaturationThresholds,
    history: &mut K2History,
) -> Option<ReplicaCapacity> {
    let total = r.cache?.total_tokens();
    if total == 0 {
        return None;
    }
    let in_use = (r.kv.clamp(0.0, 1.0) * total as f64).round() as u64;
    let avg_in = r.avg_input_tokens.unwrap_or(0.0).max(0.0);
    let avg_out = r.avg_output_tokens.unwrap_or(0.0).max(0.0);
    let queue = r.queue.max(0.0).floor();
    let demand = in_use + (queue * avg_in) as u64;
    let k1 = (total as f64 * th.kv_cache_threshold) as u64;
    let key = K2Key {
        model_id: model_id.to_owned(),
        accelerator: r.accelerator.clone(),
        bucket: OutputBucket::classify(avg_out),
    };
    let (k2, k2_source) = if queue >= th.queue_length_threshold.floor() && in_use > 0 {
        history.observe(&key, &r.pod, r.sampled_at, in_use as f64);
        (in_use, K2Source::Observed)
    } else if let Some(avg) = history.average(&key).filter(|a| *a >= 1.0) {
        (avg as u64, K2Source::History)
    } else if let Some(k2) = engine.and_then(|e| e.derived_k2(avg_in, avg_out)) {
        (k2, K2Source::Derived)
    } else {
        (k1, K2Source::MemoryBound)
    };
    Some(ReplicaCapacity {
        pod: r.pod.clone(),
        variant: r.variant.clone(),
        total_tokens: total,
        tokens_in_use: in_use,
        demand,
        k1,
        k2,
        k2_source,
        effective: k1.min(k2),
    })
}

/// Per-replica capacity of a variant with no live replica (scaled to zero,
/// or every pod still starting), upstream's order:
/// 1. the capacity remembered from its last live replicas;
/// 2. with engine parameters (any Deployment has them) and workload data
///    from the model's other replicas: k2 derived from the parameters,
///    bounded by its own k1 when `--num-gpu-blocks-override` fixes the
///    cache size, and by the live capacity of a *compatible* variant (same
///    model in any namespace, same accelerator and GPUs per replica,
///    capacity-compatible parameters);
/// 3. with engine parameters only: the per-step token budget (a safe
///    lower bound, so that a new variant can still be chosen);
/// 4. else 0: unknown, the optimizer skips the variant.
pub(crate) fn idle_variant_capacity(
    model_id: &str,
    v: &TokenVariant,
    key: &super::history::VariantKey,
    th: &SaturationThresholds,
    workload: &WorkloadAverages,
    state: &TokenState,
) -> f64 {
    if let Some(c) = state.capacity.recall(key) {
        return c;
    }
    let Some(engine) = &v.engine else {
        return 0.0;
    };
    if let Some(derived) = engine.derived_k2(workload.input, workload.output) {
        let mut bounded = derived as f64;
        if let Some(total) = engine.override_total_tokens() {
            let k1 = (total as f64 * th.kv_cache_threshold).floor();
            if k1 > 0.0 {
                bounded = bounded.min(k1);
            }
        }
        if let Some(c) = state
            .capacity
            .find_compatible(model_id, &v.accelerator, engine)
        {
            bounded = bounded.min(c);
        }
        return bounded;
    }
    engine.max_num_batched_tokens as f64
}

/// The V2 analysis of one model. Replicas are visited in pod-name order so
/// that the history does not depend on the order the inventory lists them.
pub(crate) fn analyze_tokens(input: &TokenModelInput<'_>, state: &mut TokenState) -> TokenAnalysis {
    let th = input.thresholds;
    let mut replicas: Vec<&ReplicaTokens> = input.replicas.iter().collect();
    replicas.sort_by(|a, b| a.pod.cmp(&b.pod));
    let engine_of = |variant: &str| {
        input
            .variants
            .iter()
            .find(|v| v.state.name == variant)
            .and_then(|v| v.engine.as_ref())
    };
    let capacities: Vec<ReplicaCapacity> = replicas
        .iter()
        .filter_map(|r| {
            replica_capacity(
                r,
                input.model_id,
                engine_of(&r.variant),
                th,
                &mut state.k2_history,
            )
        })
        .collect();
    let workload = workload_averages(input.replicas);
    let key_of = |v: &TokenVariant| {
        (
            input.namespace.to_owned(),
            input.model_id.to_owned(),
            v.state.name.clone(),
        )
    };
    // First the variants with live replicas: their median is remembered
    // before any variant without one looks for a compatible record (upstream
    // also records every live replica before aggregating).
    let mut live_capacity: Vec<Option<f64>> = Vec::with_capacity(input.variants.len());
    for v in input.variants {
        let mut eff: Vec<u64> = capacities
            .iter()
            .filter(|c| c.variant == v.state.name)
            .map(|c| c.effective)
            .collect();
        if eff.is_empty() {
            live_capacity.push(None);
            continue;
        }
        let m = median(&mut eff) as f64;
        let newest = replicas
            .iter()
            .filter(|r| r.variant == v.state.name)
            .map(|r| r.sampled_at)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        state.capacity.remember(
            key_of(v),
            CapacityRecord {
                capacity: m,
                learned_at: newest,
                accelerator: v.accelerator.clone(),
                engine: v.engine.clone(),
            },
        );
        live_capacity.push(Some(m));
    }
    let mut variants = Vec::with_capacity(input.variants.len());
    let (mut supply, mut anticipated, mut demand) = (0.0, 0.0, 0.0);
    for (v, live_cap) in input.variants.iter().zip(live_capacity) {
        let live: Vec<&ReplicaCapacity> = capacities
            .iter()
            .filter(|c| c.variant == v.state.name)
            .collect();
        let per_replica = match live_cap {
            Some(m) => m,
            None => idle_variant_capacity(input.model_id, v, &key_of(v), th, &workload, state),
        };
        let variant_demand: f64 = live.iter().map(|c| c.demand as f64).sum();
        let ready = v.state.ready_replicas;
        let pending = v.state.spec_replicas.saturating_sub(ready);
        let variant_supply = ready as f64 * per_replica;
        supply += variant_supply;
        anticipated += (ready + pending) as f64 * per_replica;
        demand += variant_demand;
        variants.push(VariantCapacity {
            name: v.state.name.clone(),
            cost: v.state.cost,
            accelerator: v.accelerator.clone(),
            ready,
            pending,
            per_replica,
            supply: variant_supply,
            demand: variant_demand,
        });
    }
    demand += scheduler_queue_demand(input.scheduler_queue, input.replicas);
    let required = if th.scale_up_threshold > 0.0 {
        (demand / th.scale_up_threshold - anticipated).max(0.0)
    } else {
        0.0
    };
    let spare = if th.scale_down_boundary > 0.0 {
        (supply - demand / th.scale_down_boundary).max(0.0)
    } else {
        0.0
    };
    TokenAnalysis {
        replicas: capacities,
        variants,
        supply,
        anticipated_supply: anticipated,
        demand,
        required,
        spare,
    }
}
