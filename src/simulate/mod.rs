//! `wva-metrics-server simulate`: replays a load trace offline, in virtual
//! time, through the vLLM replica model, the real analysis and the HPA's
//! algorithm, once per policy, and reports latency and cost side by side.
//!
//! - [`trace`]: built-in scenarios and CSV traces, seeded arrivals;
//! - [`policy`]: who decides on which data (`v1`, `v2`, `chain`, `slo`,
//!   and the clairvoyant `oracle` that bounds them);
//! - [`closed_loop`]: the loop of one policy;
//! - [`summary`], [`report`]: `summary.json`, `minutes.csv`, the table, `report.html`.
//!
//! Everything but [`run_cli`] is pure.

pub(crate) mod closed_loop;
mod oracle;
pub(crate) mod policy;
pub mod replica_model;
pub(crate) mod report;
mod sampling;
pub(crate) mod summary;
pub mod trace;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use clap::Args;

use crate::cli::parse_duration;
use crate::hpa::{HpaBehavior, ScalingRules, Tolerances};
use replica_model::ReplicaParams;

pub use closed_loop::{run_policy, PolicyRun, SimConfig};
pub use policy::{parse_policies, ChainDelays, Policy, PolicyError};
pub use summary::{summarize, PolicySummary, Summary};
pub use trace::{parse_trace, scenario, Trace, TraceError};

/// `simulate`'s arguments.
#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("load").required(true).args(["scenario", "trace"])))]
pub struct SimulateArgs {
    /// Built-in load scenario: diurnal, burst, ramp or idle-then-burst.
    #[arg(long, value_parser = ["diurnal", "burst", "ramp", "idle-then-burst"])]
    pub(crate) scenario: Option<String>,
    /// Load trace CSV: `timestamp_seconds,requests_per_second[,avg_input_tokens,avg_output_tokens]` or one request per line, in the Azure LLM trace layout `TIMESTAMP,ContextTokens,GeneratedTokens` or BurstGPT's `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`.
    #[arg(long)]
    pub(crate) trace: Option<PathBuf>,
    /// Virtual time to simulate (default: 24h for diurnal, 2h for the other scenarios, the trace's length for a file).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Comma-separated policies: v1 (this server, percentage analysis), v2 (this server, token-based analysis), chain (V1 behind controller -> Prometheus -> adapter), slo (this server, sized to the latency objective), oracle (clairvoyant bound: sees the arrivals one start-up delay ahead and the replica model's parameters), reactive (the oracle without foresight: the replica model's parameters and the arrivals of the last minute).
    #[arg(long, default_value = policy::DEFAULT_POLICIES)]
    pub(crate) policies: String,
    /// Thresholds file (as for `serve`); its `default` entry, or the entry of --model-id/--namespace, applies.
    #[arg(long)]
    pub(crate) saturation_config: Option<PathBuf>,
    /// Model ID whose thresholds apply.
    #[arg(long, default_value = "simulated-model")]
    pub(crate) model_id: String,
    /// Namespace whose thresholds apply.
    #[arg(long, default_value = "default")]
    pub(crate) namespace: String,
    /// Time-to-first-token objective: a minute whose p95 is above it is an SLO-violation minute.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) slo_ttft: Duration,
    /// Output directory for summary.json, minutes.csv, report.html and charts/*.svg.
    #[arg(long, default_value = "simulate-out")]
    pub(crate) out: PathBuf,
    /// Time run first at the trace's first-minute load and not counted, so that the trace starts on a cluster settled for its load (0s: it starts at --min-replicas).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub(crate) warm_up: Duration,
    /// Seed of the arrival generator: the same seed gives the same summary.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// HPA minReplicas.
    #[arg(long, default_value_t = 1)]
    pub(crate) min_replicas: u32,
    /// HPA maxReplicas.
    #[arg(long, default_value_t = 20)]
    pub(crate) max_replicas: u32,
    /// Time from pod creation to Ready.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub(crate) startup_delay: Duration,
    /// HPA sync period (--horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) hpa_sync_period: Duration,
    /// HPA tolerance (--horizontal-pod-autoscaler-tolerance).
    #[arg(long, default_value_t = 0.1)]
    pub(crate) hpa_tolerance: f64,
    /// HPA behavior.scaleDown.stabilizationWindowSeconds.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub(crate) scale_down_stabilization: Duration,
    /// HPA behavior.scaleUp.stabilizationWindowSeconds.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) scale_up_stabilization: Duration,
    /// How often this server's collector refreshes (v1, v2).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub(crate) fetch_interval: Duration,
    /// v2: give the analysis no mean prompt/output tokens per request (as when the metrics lack vLLM's request-token histograms; by default v2 gets the last minute's means, as the Prometheus backend computes them).
    #[arg(long)]
    pub(crate) v2_without_token_means: bool,
    /// chain: Prometheus scrape interval of the replicas.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) chain_scrape_interval: Duration,
    /// chain: the controller's reconcile interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) chain_controller_interval: Duration,
    /// chain: the scrape of the controller's output before the adapter serves it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub(crate) chain_adapter_interval: Duration,
    /// Replica model: num_gpu_blocks.
    #[arg(long, default_value_t = 2048)]
    pub(crate) num_gpu_blocks: u32,
    /// Replica model: tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub(crate) block_size: u32,
    /// Replica model: --max-num-seqs.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_num_seqs: u32,
    /// Replica model: prompt tokens prefilled per second.
    #[arg(long, default_value_t = 8000.0)]
    pub(crate) prefill_tokens_per_second: f64,
    /// Replica model: tokens generated per second per running sequence.
    #[arg(long, default_value_t = 40.0)]
    pub(crate) decode_tokens_per_second: f64,
    /// Cost of one replica for one hour (the variantCost scale).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) cost_per_replica_hour: f64,
}

/// A flag value the simulation cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum SimulateError {
    #[error("--{flag} {value}: {reason}")]
    BadFlag {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
}

fn whole_seconds(flag: &'static str, d: Duration, min: u64) -> Result<u64, SimulateError> {
    let s = d.as_secs();
    if s < min || d.subsec_nanos() != 0 {
        return Err(SimulateError::BadFlag {
            flag,
            value: humantime::format_duration(d).to_string(),
            reason: if min == 0 {
                "must be whole seconds"
            } else {
                "must be whole seconds, at least 1s"
            },
        });
    }
    Ok(s)
}

fn positive(flag: &'static str, v: f64) -> Result<f64, SimulateError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(SimulateError::BadFlag {
            flag,
            value: v.to_string(),
            reason: "must be a finite number > 0",
        })
    }
}

fn nonzero(flag: &'static str, v: u32) -> Result<u32, SimulateError> {
    if v > 0 {
        Ok(v)
    } else {
        Err(SimulateError::BadFlag {
            flag,
            value: v.to_string(),
            reason: "must be at least 1",
        })
    }
}

/// The simulation's configuration from the flags (thresholds apart).
pub(crate) fn config_from_args(
    args: &SimulateArgs,
    duration: u64,
) -> Result<SimConfig, SimulateError> {
    let defaults = HpaBehavior::default();
    if args.min_replicas > args.max_replicas {
        return Err(SimulateError::BadFlag {
            flag: "min-replicas",
            value: args.min_replicas.to_string(),
            reason: "must not exceed --max-replicas",
        });
    }
    if !(args.hpa_tolerance.is_finite() && args.hpa_tolerance >= 0.0) {
        return Err(SimulateError::BadFlag {
            flag: "hpa-tolerance",
            value: args.hpa_tolerance.to_string(),
            reason: "must be a finite number >= 0",
        });
    }
    Ok(SimConfig {
        duration_seconds: duration,
        warm_up_seconds: whole_seconds("warm-up", args.warm_up, 0)?,
        seed: args.seed,
        replica: ReplicaParams {
            num_gpu_blocks: nonzero("num-gpu-blocks", args.num_gpu_blocks)?,
            block_size: nonzero("block-size", args.block_size)?,
            max_num_seqs: nonzero("max-num-seqs", args.max_num_seqs)?,
            prefill_tokens_per_second: positive(
                "prefill-tokens-per-second",
                args.prefill_tokens_per_second,
            )?,
            decode_tokens_per_second: positive(
                "decode-tokens-per-second",
                args.decode_tokens_per_second,
            )?,
        },
        substeps: 4,
        startup_delay: whole_seconds("startup-delay", args.startup_delay, 0)?,
        hpa_sync_period: whole_seconds("hpa-sync-period", args.hpa_sync_period, 1)?,
        tolerances: Tolerances::uniform(args.hpa_tolerance),
        behavior: HpaBehavior {
            scale_up: ScalingRules {
                stabilization_window_seconds: whole_seconds(
                    "scale-up-stabilization",
                    args.scale_up_stabilization,
                    0,
                )? as u32,
                ..defaults.scale_up
            },
            scale_down: ScalingRules {
                stabilization_window_seconds: whole_seconds(
                    "scale-down-stabilization",
                    args.scale_down_stabilization,
                    0,
                )? as u32,
                ..defaults.scale_down
            },
        },
        min_replicas: args.min_replicas,
        max_replicas: nonzero("max-replicas", args.max_replicas)?,
        thresholds: Default::default(),
        fetch_interval: whole_seconds("fetch-interval", args.fetch_interval, 1)?,
        token_means: !args.v2_without_token_means,
        slo_ttft: positive("slo-ttft", args.slo_ttft.as_secs_f64())?,
        cost_per_replica_hour: if args.cost_per_replica_hour.is_finite()
            && args.cost_per_replica_hour >= 0.0
        {
            args.cost_per_replica_hour
        } else {
            return Err(SimulateError::BadFlag {
                flag: "cost-per-replica-hour",
                value: args.cost_per_replica_hour.to_string(),
                reason: "must be a finite number >= 0",
            });
        },
    })
}

/// The chain's periods from the flags.
pub(crate) fn chain_from_args(args: &SimulateArgs) -> Result<ChainDelays, SimulateError> {
    Ok(ChainDelays {
        scrape: whole_seconds("chain-scrape-interval", args.chain_scrape_interval, 1)?,
        controller: whole_seconds(
            "chain-controller-interval",
            args.chain_controller_interval,
            1,
        )?,
        adapter: whole_seconds("chain-adapter-interval", args.chain_adapter_interval, 1)?,
    })
}

/// Runs every policy over the trace (one after the other: the machine's
/// cores are better left to the rest) and totals them.
pub(crate) fn simulate(
    trace_name: &str,
    trace: &Trace,
    config: &SimConfig,
    policies: &[Policy],
    progress: &mut dyn FnMut(u64),
) -> (Summary, Vec<PolicyRun>) {
    let runs: Vec<PolicyRun> = policies
        .iter()
        .map(|p| run_policy(config, p, trace, progress))
        .collect();
    let summary = Summary {
        trace: trace_name.to_owned(),
        duration_seconds: config.duration_seconds,
        warm_up_seconds: config.warm_up_seconds,
        seed: config.seed,
        slo_ttft_seconds: config.slo_ttft,
        policies: runs
            .iter()
            .map(|r| summarize(r, config.slo_ttft, config.cost_per_replica_hour))
            .collect(),
    };
    (summary, runs)
}

/// Writes `summary.json`, `minutes.csv`, `report.html` and `charts/*.svg` into `out`.
pub(crate) fn write_outputs(
    out: &Path,
    summary: &Summary,
    runs: &[PolicyRun],
) -> anyhow::Result<Vec<PathBuf>> {
    let charts_dir = out.join("charts");
    std::fs::create_dir_all(&charts_dir)
        .with_context(|| format!("cannot create {}", charts_dir.display()))?;
    let mut written = Vec::new();
    let mut inline = Vec::new();
    for chart in report::charts(runs, summary.slo_ttft_seconds) {
        let svg = report::svg(&chart).map_err(anyhow::Error::msg)?;
        let path = charts_dir.join(format!("{}.svg", chart.id));
        std::fs::write(&path, &svg).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        inline.push((chart.title, svg));
    }
    let json = serde_json::to_string_pretty(summary).context("cannot encode summary.json")?;
    let path = out.join("summary.json");
    std::fs::write(&path, json + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    let path = out.join("minutes.csv");
    std::fs::write(&path, summary::minutes_csv(runs, summary.slo_ttft_seconds))
        .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    let path = out.join("report.html");
    std::fs::write(&path, report::html(summary, &inline))
        .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    Ok(written)
}

/// `simulate` from the command line.
pub async fn run_cli(args: SimulateArgs) -> anyhow::Result<()> {
    let thresholds =
        crate::run::load_thresholds(args.saturation_config.as_deref(), &args.namespace)?
            .for_model(&args.model_id, &args.namespace);
    let chain = chain_from_args(&args)?;
    let policies = parse_policies(&args.policies, chain)?;
    let (name, trace, natural) = match (&args.scenario, &args.trace) {
        (Some(name), _) => {
            let duration = args
                .duration
                .map_or(trace::scenario_default_duration(name), |d| d.as_secs_f64());
            let trace = scenario(name, duration).with_context(|| {
                format!(
                    "unknown scenario {name:?}: use {}",
                    trace::SCENARIOS.join(", ")
                )
            })?;
            (name.clone(), trace, duration)
        }
        (None, Some(path)) => {
            // A file the user named: a mistake to fix, exit code 2.
            let text = std::fs::read_to_string(path).map_err(|e| {
                crate::fatal::InvalidConfiguration(format!(
                    "cannot read trace {}: {e}",
                    path.display()
                ))
            })?;
            let trace = parse_trace(&path.display().to_string(), &text)?;
            let natural = trace.natural_duration();
            (path.display().to_string(), trace, natural)
        }
        (None, None) => anyhow::bail!("give --scenario NAME or --trace FILE"),
    };
    let duration = args.duration.map_or(natural, |d| d.as_secs_f64()).ceil() as u64;
    if duration == 0 {
        anyhow::bail!("nothing to simulate: the duration is 0");
    }
    let mut config = config_from_args(&args, duration)?;
    config.thresholds = thresholds;
    let out = args.out.clone();
    let total = (config.warm_up_seconds + duration) * policies.len() as u64;
    let started = Instant::now();
    tracing::info!(trace = %name, duration_seconds = duration, policies = %args.policies, "simulating");
    let (summary, runs) = tokio::task::spawn_blocking(move || {
        let mut progress = Progress::new(total);
        let result = simulate(&name, &trace, &config, &policies, &mut |s| {
            progress.advance(s)
        });
        progress.finish();
        result
    })
    .await
    .context("the simulation thread failed")?;
    let written = write_outputs(&out, &summary, &runs)?;
    print!("{}", summary::table(&summary));
    println!(
        "simulated {} s x {} policies in {:.1} s; wrote {}",
        summary.duration_seconds,
        summary.policies.len(),
        started.elapsed().as_secs_f64(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// A progress bar on a terminal, shown once a run has taken a second.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    terminal: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            bar: None,
            total,
            done: 0,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn advance(&mut self, seconds: u64) {
        self.done += seconds;
        if self.bar.is_none() && self.terminal && self.started.elapsed() >= Duration::from_secs(1) {
            let bar = indicatif::ProgressBar::new(self.total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} simulated seconds ({eta} left)",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
