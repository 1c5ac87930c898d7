//! Sweep benchmark: every model of a generated fleet decided once (the
//! fleet sweep that runs after each fetch cycle), with upstream's GPU
//! limiter on, timed. The fleet is `emulator::fleet::Fleet` (two
//! variants per model, three accelerator types); the metrics cache is
//! filled directly with the fleet's loads, so only the decisions are
//! timed. The accelerator inventory has 10% more GPUs of each type than
//! the variants' current replicas use, so many scale-ups are limited.
//!
//! ```text
//! cargo run --release --example sweep -- --models 5000 --sweeps 5
//! ```
//!
//! docs/benchmarks.md has the numbers, before (each model's decision
//! re-analysed every other model for the limiter) and after (the
//! allotment computed once per sweep).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use clap::Parser;
use wva_metrics_server::collector::{FreshnessPolicy, MetricsCache, ReplicaMetrics};
use wva_metrics_server::decision::DecisionEngine;
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::inventory::accelerators::AcceleratorInventory;
use wva_metrics_server::inventory::{pod_key, resolve, InventoryStore};
use wva_metrics_server::saturation::{PercentageAnalyzer, TargetReason, ThresholdConfig};

/// The server's allocator, so that time is the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 5_000)]
    models: usize,
    #[arg(long, default_value_t = 2)]
    pods_per_variant: usize,
    #[arg(long, default_value_t = 5)]
    sweeps: usize,
    /// Run without `enableLimiter` (the limiter's share of the time).
    #[arg(long)]
    no_limiter: bool,
}

/// GPUs per type: what the fleet's replicas use plus 10%, one per pod.
struct FixedAccelerators(BTreeMap<String, u32>);

impl AcceleratorInventory for FixedAccelerators {
    fn free_by_type(&self) -> Option<BTreeMap<String, u32>> {
        Some(self.0.iter().map(|(k, v)| (k.clone(), v / 11)).collect())
    }
    fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
        Some(self.0.clone())
    }
    fn pod_gpus(&self, _: &str, _: &str) -> Option<u32> {
        Some(1)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet = Fleet::new(args.models * 2, args.pods_per_variant);
    let (snapshot, problems) = resolve(&fleet.objects()?);
    anyhow::ensure!(problems.is_empty(), "fleet does not resolve: {problems:?}");
    let mut capacity: BTreeMap<String, u32> = BTreeMap::new();
    for v in snapshot.variants() {
        *capacity.entry(v.accelerator.clone()).or_default() +=
            v.target.map_or(0, |t| t.spec_replicas);
    }
    for gpus in capacity.values_mut() {
        *gpus += *gpus / 10;
    }
    let inventory = Arc::new(InventoryStore::new());
    inventory.publish(snapshot);
    let cache = Arc::new(MetricsCache::new());
    for p in fleet.pods() {
        cache.insert(
            pod_key(&p.namespace, &p.name),
            ReplicaMetrics {
                model_name: p.model.into(),
                kv_usage: p.kv_usage,
                queue_waiting: p.queue_waiting,
                queue_waiting_latest: Some(p.queue_waiting),
                running: None,
                sampled_at: SystemTime::now(),
                request_rate: None,
                avg_prompt_tokens: None,
                avg_generation_tokens: None,
                avg_prefill_seconds: None,
                prefix_cache_hit_rate: None,
                kv_cache: None,
                activity: None,
            },
        );
    }
    let config = if args.no_limiter {
        "default: {}"
    } else {
        "default: {enableLimiter: true}"
    };
    let (thresholds, errors) = ThresholdConfig::from_yaml_str(config)?;
    anyhow::ensure!(errors.is_empty(), "{errors:?}");
    let engine = DecisionEngine::new(
        inventory,
        cache,
        Arc::new(ArcSwap::from_pointee(thresholds)),
        Arc::new(PercentageAnalyzer),
        FreshnessPolicy {
            stale: Duration::from_secs(3600),
            unavailable: Duration::from_secs(7200),
            ..FreshnessPolicy::default()
        },
    )
    .with_accelerators(Arc::new(FixedAccelerators(capacity.clone())));
    println!(
        "fleet: {} models, {} variants, {} pods; limiter {}; GPUs {capacity:?}",
        args.models,
        fleet.variants,
        fleet.pod_count(),
        if args.no_limiter { "off" } else { "on" },
    );
    println!("sweep  ms  decided  scale_ups  limited");
    for n in 1..=args.sweeps {
        let started = Instant::now();
        let outcomes = engine.decide_all();
        let took = started.elapsed();
        let decisions: Vec<_> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .flat_map(|o| o.decisions.iter())
            .collect();
        let ups = decisions.iter().filter(|d| d.desired > d.ready).count();
        let limited = decisions
            .iter()
            .filter(|d| matches!(d.reason, TargetReason::LimitedByAccelerators))
            .count();
        println!(
            "{n:>5}  {:>8.1}  {:>7}  {ups:>9}  {limited:>7}",
            took.as_secs_f64() * 1e3,
            outcomes.iter().filter(|o| o.is_ok()).count(),
        );
    }
    Ok(())
}
