//! The closed loop of one policy, in virtual time (one-second ticks, the
//! replicas advanced in sub-steps): load -> replicas -> the metrics the
//! collector (or Prometheus) holds -> the policy's decision -> the HPA ->
//! pods that become ready after a start-up delay -> load spread over the
//! ready pods. No clock and no sleeping: a day runs in seconds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::hpa::{
    external_metric_proposal, served_milli, BehaviorState, HpaBehavior, ScaleState, Tolerances,
};
use crate::saturation::analyzers::{AnalysisInput, Analyzers};
use crate::saturation::slo::{SloObjective, SloReplica};
use crate::saturation::v2::{self, ReplicaTokens, TokenVariant};
use crate::saturation::{
    AnalyzerKind, HpaView, PercentageAnalyzer, ReplicaLoad, SaturationAnalyzer,
    SaturationThresholds, VariantState,
};
use crate::simulate::replica_model::{ReplicaModel, ReplicaParams, Request};

use super::oracle::{oracle_replicas, reactive_replicas, Lookahead, REACTIVE_SPANS};
use super::policy::{Analysis, DataPath, Policy};
pub(crate) use super::sampling::percentile;
pub use super::sampling::Minute;
use super::sampling::{MinuteAccumulator, Pod, Sample, Window, PEAK_WINDOW};
use super::trace::{Arrivals, Trace};

/// Mixed into the seed of the warm-up's arrivals.
const WARM_SEED: u64 = 0x5741_524d_5550;
/// Phases (seconds into their period) of the independent processes, so
/// that they do not all tick at the same instant as no real cluster does.
const HPA_PHASE: u64 = 3;
const CONTROLLER_PHASE: u64 = 7;
const ADAPTER_PHASE: u64 = 11;
/// The variant, accelerator, model and namespace the analyses are told of.
const VARIANT: &str = "sim";
const ACCELERATOR: &str = "sim-gpu";
const MODEL_ID: &str = "simulated-model";
const NAMESPACE: &str = "default";

/// Virtual time as the wall-clock time the analyses date samples with.
fn virtual_time(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Everything a run depends on besides the trace and the policy.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub duration_seconds: u64,
    /// Seconds run before the trace at its first minute's rate, not
    /// counted: the cluster starts the trace settled for its load instead
    /// of at `min_replicas` under it (see [`Trace::warm_up`]).
    pub warm_up_seconds: u64,
    pub seed: u64,
    pub replica: ReplicaParams,
    /// Replica-model sub-steps per second.
    pub substeps: u32,
    /// Seconds from pod creation to Ready (image pull, weights, warm-up).
    pub startup_delay: u64,
    pub hpa_sync_period: u64,
    pub tolerances: Tolerances,
    pub behavior: HpaBehavior,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub thresholds: SaturationThresholds,
    /// The collector's refresh period for on-demand policies.
    pub fetch_interval: u64,
    /// V2 is given the mean prompt and generated tokens of the requests
    /// that finished in the last minute (as the Prometheus backend computes
    /// them). False: it is given none, as when the store lacks vLLM's
    /// request-token histograms; queued requests then add no demand.
    pub token_means: bool,
    /// Time-to-first-token objective (p95 per minute), seconds.
    pub slo_ttft: f64,
    pub cost_per_replica_hour: f64,
}

impl SimConfig {
    /// The KV cache every replica reports in `vllm:cache_config_info`.
    pub(crate) fn replica_cache(&self) -> v2::KvCacheConfig {
        v2::KvCacheConfig {
            num_gpu_blocks: u64::from(self.replica.num_gpu_blocks),
            block_size: u64::from(self.replica.block_size),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            duration_seconds: 3600,
            warm_up_seconds: 0,
            seed: 1,
            replica: ReplicaParams::default(),
            substeps: 4,
            startup_delay: 120,
            hpa_sync_period: 15,
            tolerances: Tolerances::default(),
            behavior: HpaBehavior::default(),
            min_replicas: 1,
            max_replicas: 20,
            thresholds: SaturationThresholds::default(),
            fetch_interval: 1,
            token_means: true,
            slo_ttft: 2.0,
            cost_per_replica_hour: 10.0,
        }
    }
}

/// The outcome of one policy.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    pub(crate) name: String,
    pub minutes: Vec<Minute>,
    pub(crate) requests: u64,
    pub(crate) interrupted_requests: u64,
    pub(crate) scale_events: u32,
    /// Every change of the scale target's replicas: (virtual second, new
    /// replicas).
    pub(crate) scale_history: Vec<(u64, u32)>,
    pub(crate) max_replicas: u32,
    pub(crate) replica_seconds: f64,
    /// Every time to first token (for the overall percentiles).
    pub(crate) ttfts: Vec<f32>,
}

/// The policy's analysis as a run holds it: the server's analyses (one
/// per run, with their own history) and the kind the policy selects, or
/// the oracle, or its reactive reference.
enum Decider {
    Analysis(AnalyzerKind, Box<Analyzers>),
    Oracle,
    Reactive,
}

impl Decider {
    fn new(analysis: &Analysis) -> Self {
        let (kind, v1): (AnalyzerKind, Arc<dyn SaturationAnalyzer>) = match analysis {
            Analysis::Percentage(a) => (AnalyzerKind::Percentage, Arc::clone(a)),
            Analysis::Tokens => (AnalyzerKind::Tokens, Arc::new(PercentageAnalyzer)),
            Analysis::Slo => (AnalyzerKind::Slo, Arc::new(PercentageAnalyzer)),
            Analysis::Oracle => return Decider::Oracle,
            Analysis::Reactive => return Decider::Reactive,
        };
        Decider::Analysis(kind, Box::new(Analyzers::new(v1)))
    }
}

/// The running state of one policy's cluster.
struct Cluster<'a> {
    config: &'a SimConfig,
    policy: &'a Policy,
    decider: Decider,
    pods: Vec<Pod>,
    spec: u32,
    gateway: VecDeque<Request>,
    behavior: BehaviorState,
    /// Chain: the controller's last output and what the adapter last saw.
    controller_output: Option<u32>,
    adapter_value: Option<u32>,
    interrupted: u64,
    scale_history: Vec<(u64, u32)>,
    created: u64,
    /// The arrivals the oracle (ahead) or the reactive reference (the last
    /// minute) knows; None for other policies.
    known: Option<Lookahead<'a>>,
}

impl Cluster<'_> {
    fn ready(&self, now: u64) -> u32 {
        self.pods.iter().filter(|p| p.ready_at <= now).count() as u32
    }

    fn scale_state(&self, now: u64) -> ScaleState {
        ScaleState {
            spec_replicas: self.spec,
            status_replicas: self.pods.len() as u32,
            ready_pods: self.ready(now),
        }
    }

    /// The decision the policy's analysis makes at `now` from samples
    /// taken every `period` seconds, by the server's code path:
    /// `Analyzers::decide` (V1, V2 or slo with its fallback), then the
    /// tolerance steps (the limiter apart: the simulated cluster has no
    /// accelerator inventory).
    fn decide(&self, now: u64, period: u64) -> u32 {
        let (kind, analyzers) = match &self.decider {
            Decider::Oracle | Decider::Reactive => return self.oracle(now),
            Decider::Analysis(kind, analyzers) => (*kind, analyzers),
        };
        let windows: Vec<(String, Window)> = self
            .pods
            .iter()
            .filter(|p| p.ready_at <= now)
            .filter_map(|p| {
                p.window(now, period, 0)
                    .map(|w| (format!("pod-{:06}", p.id), w))
            })
            .collect();
        let scale = self.scale_state(now);
        let variants = [VariantState {
            name: VARIANT.to_owned(),
            cost: 10.0,
            min_replicas: self.config.min_replicas,
            max_replicas: self.config.max_replicas,
            spec_replicas: scale.spec_replicas,
            ready_replicas: scale.ready_pods,
        }];
        let hpas = [HpaView {
            scale,
            tolerances: self.config.tolerances,
        }];
        let loads: Vec<ReplicaLoad> = windows
            .iter()
            .map(|(pod, w)| ReplicaLoad {
                pod: pod.clone(),
                variant: VARIANT.to_owned(),
                kv: w.kv,
                queue: w.queue,
            })
            .collect();
        let cache = self.config.replica_cache();
        let means = |w: &Window| w.token_means.filter(|_| self.config.token_means);
        let tokens: Vec<ReplicaTokens> = windows
            .iter()
            .map(|(pod, w)| ReplicaTokens {
                pod: pod.clone(),
                variant: VARIANT.to_owned(),
                accelerator: ACCELERATOR.to_owned(),
                kv: w.kv,
                queue: w.queue,
                cache: Some(cache),
                avg_input_tokens: means(w).map(|m| m.0),
                avg_output_tokens: means(w).map(|m| m.1),
                // Reduces only the scheduler queue, which simulate has none of.
                prefix_cache_hit_rate: None,
                sampled_at: virtual_time(now),
            })
            .collect();
        let slo: Vec<SloReplica> = windows
            .iter()
            .map(|(pod, w)| SloReplica {
                pod: pod.clone(),
                variant: VARIANT.to_owned(),
                kv: w.kv,
                waiting: w.queue,
                waiting_latest: Some(w.queue_latest),
                running: Some(w.running),
                completion_rate: w.completion_rate,
                avg_prompt_tokens: w.token_means.map(|m| m.0),
                avg_output_tokens: w.token_means.map(|m| m.1),
                avg_prefill_seconds: w.prefill_seconds,
                cache: Some(cache),
            })
            .collect();
        let token_variants = [TokenVariant {
            state: variants[0].clone(),
            accelerator: ACCELERATOR.to_owned(),
            engine: None,
        }];
        let mut decided = analyzers.decide(
            kind,
            &AnalysisInput {
                namespace: NAMESPACE,
                model_id: MODEL_ID,
                loads: &loads,
                tokens: &tokens,
                slo: &slo,
                variants: &variants,
                token_variants: &token_variants,
                thresholds: &self.config.thresholds,
                objective: SloObjective {
                    ttft_seconds: self.config.slo_ttft,
                    ..SloObjective::default()
                },
                scheduler_queue: None,
                hpas: &hpas,
            },
            virtual_time(now),
        );
        decided.step(&variants, &hpas);
        decided.targets.first().map_or(self.spec, |t| t.desired)
    }

    /// The oracle: the replicas the next start-up delay's arrivals need
    /// (plus a sync period, so that what it asks for is ready in time), by
    /// the replica model's own parameters; the reactive reference: what the
    /// arrivals so far need, by the same rules.
    fn oracle(&self, now: u64) -> u32 {
        let Some(known) = &self.known else {
            return self.spec;
        };
        let waiting: usize =
            self.pods.iter().map(|p| p.model.waiting()).sum::<usize>() + self.gateway.len();
        let (requests, _) = known.requests.as_slices();
        let (params, ttft) = (&self.config.replica, self.config.slo_ttft);
        let need = if matches!(self.decider, Decider::Reactive) {
            reactive_replicas(params, ttft, requests, now as f64, waiting as f64)
        } else {
            let horizon = self.config.startup_delay + self.config.hpa_sync_period;
            oracle_replicas(
                params,
                ttft,
                requests,
                now as f64,
                horizon as f64,
                waiting as f64,
            )
        };
        need.clamp(self.config.min_replicas.max(1), self.config.max_replicas)
    }

    /// The chain's controller and adapter ticks, then the HPA's sync.
    fn control(&mut self, now: u64) {
        if let DataPath::Chain(delays) = self.policy.path {
            if now % delays.controller.max(1) == CONTROLLER_PHASE % delays.controller.max(1) {
                self.controller_output = Some(self.decide(now, delays.scrape));
            }
            if now % delays.adapter.max(1) == ADAPTER_PHASE % delays.adapter.max(1) {
                self.adapter_value = self.controller_output;
            }
        }
        let sync = self.config.hpa_sync_period.max(1);
        if now % sync != HPA_PHASE % sync {
            return;
        }
        let scale = self.scale_state(now);
        let desired = match self.policy.path {
            DataPath::OnDemand => Some(self.decide(now, self.config.fetch_interval)),
            DataPath::Chain(_) => self.adapter_value,
        };
        // No value yet (the chain before its first output): the HPA gets an
        // error and keeps the replicas.
        let Some(desired) = desired else {
            return;
        };
        let served = served_milli(self.policy.target, desired, scale.ready_pods);
        let Ok(proposal) = external_metric_proposal(
            &[served],
            self.policy.target,
            &scale,
            &self.config.tolerances,
        ) else {
            return;
        };
        let next = self.behavior.next_replicas(
            &self.config.behavior,
            now as f64,
            self.spec,
            proposal.replicas,
            self.config.min_replicas,
            self.config.max_replicas,
        );
        self.set_spec(next, now);
    }

    fn set_spec(&mut self, spec: u32, now: u64) {
        if spec == self.spec {
            return;
        }
        self.scale_history.push((now, spec));
        self.spec = spec;
        while (self.pods.len() as u32) < spec {
            self.created += 1;
            self.pods.push(Pod {
                id: self.created,
                model: ReplicaModel::new(self.config.replica),
                ready_at: now + self.config.startup_delay,
                samples: VecDeque::new(),
            });
        }
        while (self.pods.len() as u32) > spec {
            // As a ReplicaSet does: not-ready pods go first, then the newest.
            let victim = self
                .pods
                .iter()
                .rposition(|p| p.ready_at > now)
                .unwrap_or(self.pods.len() - 1);
            let mut pod = self.pods.remove(victim);
            let (requeue, interrupted) = pod.model.drain();
            self.interrupted += interrupted as u64;
            // Not yet served: back to the gateway, in arrival order.
            for r in requeue.into_iter().rev() {
                self.gateway.push_front(r);
            }
        }
    }

    /// Sends `request` to the ready pod with the fewest requests (as a
    /// load-aware gateway does), or keeps it at the gateway.
    fn dispatch(&mut self, request: Request, now: u64) {
        let best = self
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.ready_at <= now)
            .min_by_key(|(_, p)| p.model.waiting() + p.model.running())
            .map(|(i, _)| i);
        match best {
            Some(i) => self.pods[i].model.enqueue(request),
            None => self.gateway.push_back(request),
        }
    }
}

/// Runs one policy over the trace. `progress` is told of simulated seconds
/// as they pass.
pub fn run_policy(
    config: &SimConfig,
    policy: &Policy,
    trace: &Trace,
    progress: &mut dyn FnMut(u64),
) -> PolicyRun {
    let initial = config.min_replicas.max(1).min(config.max_replicas.max(1));
    let warm = config.warm_up_seconds;
    let warm_trace = trace.warm_up();
    // The seconds of arrivals an oracle knows around the loop's time:
    // the oracle's reach a start-up delay, a sync period and the minute it
    // sizes ahead; the reactive reference's the minute behind.
    let reach = match policy.analysis {
        Analysis::Oracle => Some((
            0.0,
            (config.startup_delay + config.hpa_sync_period + 60) as f64,
        )),
        Analysis::Reactive => Some((-REACTIVE_SPANS[0], 0.0)),
        _ => None,
    };
    let known = reach.is_some().then(|| Lookahead {
        warm: Arrivals::new(&warm_trace, config.seed ^ WARM_SEED),
        trace: Arrivals::new(trace, config.seed),
        warm_end: warm as f64,
        reached: 0.0,
        requests: VecDeque::new(),
        scratch: Vec::new(),
    });
    let mut cluster = Cluster {
        config,
        policy,
        decider: Decider::new(&policy.analysis),
        pods: Vec::new(),
        spec: 0,
        gateway: VecDeque::new(),
        behavior: BehaviorState::new(0.0, initial),
        controller_output: None,
        adapter_value: None,
        interrupted: 0,
        scale_history: Vec::new(),
        created: 0,
        known,
    };
    // The workload starts settled at its initial size.
    cluster.set_spec(initial, 0);
    for pod in &mut cluster.pods {
        pod.ready_at = 0;
    }
    cluster.scale_history.clear();

    // Another stream than the trace's, so that the trace's requests do not
    // depend on the warm-up's length.
    let mut warm_arrivals = Arrivals::new(&warm_trace, config.seed ^ WARM_SEED);
    let mut arrivals = Arrivals::new(trace, config.seed);
    let mut batch = Vec::new();
    let substeps = config.substeps.max(1);
    let dt = 1.0 / f64::from(substeps);
    let mut run = PolicyRun {
        name: policy.name.to_owned(),
        minutes: Vec::new(),
        requests: 0,
        interrupted_requests: 0,
        scale_events: 0,
        scale_history: Vec::new(),
        max_replicas: initial,
        replica_seconds: 0.0,
        ttfts: Vec::new(),
    };
    let mut minute = MinuteAccumulator::default();
    let end = warm + config.duration_seconds;
    // Requests of the trace arrive from here (warm-up ones before).
    let trace_start = warm as f64;
    for now in 0..end {
        let measured = now >= warm;
        if now == warm && warm > 0 {
            // The trace starts: what the warm-up did is not counted.
            cluster.scale_history.clear();
            cluster.interrupted = 0;
            run.max_replicas = cluster.pods.len() as u32;
        }
        if let (Some(known), Some((behind, ahead))) = (&mut cluster.known, reach) {
            known.advance(now as f64 + behind, now as f64 + ahead);
        }
        cluster.control(now);
        let ready = cluster.ready(now);
        if ready > 0 {
            while let Some(r) = cluster.gateway.pop_front() {
                cluster.dispatch(r, now);
            }
        }
        batch.clear();
        if measured {
            arrivals.until((now + 1 - warm) as f64, &mut batch);
            for r in &mut batch {
                r.arrival += trace_start;
            }
            minute.arrivals += batch.len() as u32;
            run.requests += batch.len() as u64;
        } else {
            warm_arrivals.until((now + 1) as f64, &mut batch);
        }
        for &r in &batch {
            cluster.dispatch(r, now);
        }
        for pod in cluster.pods.iter_mut().filter(|p| p.ready_at <= now) {
            for s in 0..substeps {
                let t = now as f64 + f64::from(s) * dt;
                pod.model.step(t, dt, |f| {
                    if f.arrival >= trace_start {
                        let ttft = f.ttft();
                        minute.ttfts.push(ttft);
                        run.ttfts.push(ttft as f32);
                    }
                });
            }
            let state = pod.model.reported_state();
            pod.samples.push_back(Sample {
                at: now + 1,
                kv: state.kv,
                waiting: state.waiting,
                running: state.running,
                finished: pod.model.finished(),
            });
            while pod
                .samples
                .front()
                .is_some_and(|s| s.at + PEAK_WINDOW < now + 1)
            {
                pod.samples.pop_front();
            }
            if measured {
                minute.kv_sum += state.kv;
                minute.kv_samples += 1;
            }
        }
        if (now + 1) % 600 == 0 {
            progress(600);
        }
        if !measured {
            continue;
        }
        minute.pod_seconds += cluster.pods.len() as f64;
        minute.ready_seconds += f64::from(ready);
        run.replica_seconds += cluster.pods.len() as f64;
        run.max_replicas = run.max_replicas.max(cluster.pods.len() as u32);
        minute.seconds += 1;
        if (now + 1 - warm) % 60 == 0 || now + 1 == end {
            if now + 1 == end {
                // Requests never served by the end: their wait so far is a
                // lower bound of their time to first token.
                let end = (now + 1) as f64;
                let unserved = cluster
                    .gateway
                    .iter()
                    .map(|r| r.arrival)
                    .chain(cluster.pods.iter().flat_map(|p| p.model.waiting_arrivals()))
                    .filter(|&a| a >= trace_start)
                    .map(|a| end - a)
                    .collect::<Vec<_>>();
                for w in unserved {
                    minute.ttfts.push(w);
                    run.ttfts.push(w as f32);
                }
            }
            run.minutes.push(minute.finish());
        }
    }
    progress(end % 600);
    run.interrupted_requests = cluster.interrupted;
    run.scale_events = cluster.scale_history.len() as u32;
    run.scale_history = cluster.scale_history;
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::policy::{parse_policies, ChainDelays};
    use crate::simulate::replica_model::FinishedCounters;
    use crate::simulate::trace::RatePoint;

    fn rates(points: &[(f64, f64)]) -> Trace {
        Trace::Rates(
            points
                .iter()
                .map(|&(at, rps)| RatePoint {
                    at,
                    requests_per_second: rps,
                    input_tokens: 512,
                    output_tokens: 256,
                })
                .collect(),
        )
    }

    fn policy(name: &str) -> Policy {
        parse_policies(name, ChainDelays::default())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.95), Some(95.0));
        assert_eq!(percentile(&mut [3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&mut [], 0.95), None);
    }

    #[test]
    fn zero_load_stays_at_min_with_no_violations() {
        let config = SimConfig {
            duration_seconds: 1800,
            min_replicas: 2,
            ..Default::default()
        };
        for name in ["v1", "v2", "chain", "slo", "oracle", "reactive"] {
            let run = run_policy(&config, &policy(name), &rates(&[(0.0, 0.0)]), &mut |_| {});
            assert_eq!(run.requests, 0);
            assert_eq!(run.scale_events, 0, "{name}");
            assert_eq!(run.max_replicas, 2, "{name}");
            assert!(run
                .minutes
                .iter()
                .all(|m| m.replicas == 2.0 && m.ttft_p95.is_none()));
            assert_eq!(run.minutes.len(), 30);
            let summary = crate::simulate::summarize(&run, config.slo_ttft, 10.0);
            assert_eq!(summary.slo_violation_minutes, 0, "{name}");
            assert_eq!(summary.replica_minutes, 60.0, "{name}");
        }
    }

    #[test]
    fn overload_scales_up_and_fresh_data_reacts_before_the_chain() {
        // 1 replica, then 20 req/s from minute 5: far beyond one replica.
        let config = SimConfig {
            duration_seconds: 1800,
            startup_delay: 60,
            ..Default::default()
        };
        let trace = rates(&[(0.0, 1.0), (300.0, 20.0)]);
        let v1 = run_policy(&config, &policy("v1"), &trace, &mut |_| {});
        let chain = run_policy(&config, &policy("chain"), &trace, &mut |_| {});
        assert!(v1.max_replicas >= 4, "v1 reached {}", v1.max_replicas);
        assert!(
            chain.max_replicas >= 4,
            "chain reached {}",
            chain.max_replicas
        );
        // The first minute with more than one replica: v1 no later than the chain.
        let first_up = |r: &PolicyRun| r.minutes.iter().position(|m| m.replicas > 1.0);
        let (a, b) = (first_up(&v1), first_up(&chain));
        assert!(a.is_some() && a <= b, "v1 {a:?} chain {b:?}");
        // The same seed gives the same requests to both.
        assert_eq!(v1.requests, chain.requests);
    }

    #[test]
    fn same_seed_same_run() {
        let config = SimConfig {
            duration_seconds: 900,
            ..Default::default()
        };
        // Enough load to scale, so that the decisions (and V2's k2 history)
        // take part.
        let trace = rates(&[(0.0, 8.0), (300.0, 14.0)]);
        for name in ["v1", "v2", "chain", "slo", "oracle", "reactive"] {
            let p = policy(name);
            let a = run_policy(&config, &p, &trace, &mut |_| {});
            // The same Policy value again: a run keeps no state in it.
            let b = run_policy(&config, &p, &trace, &mut |_| {});
            assert!(a.scale_events > 0, "{name} scaled");
            assert_eq!(a.minutes, b.minutes, "{name}");
            assert_eq!(a.ttfts, b.ttfts, "{name}");
            assert_eq!(a.scale_history, b.scale_history, "{name}");
            assert_eq!(
                crate::simulate::summarize(&a, 2.0, 10.0),
                crate::simulate::summarize(&b, 2.0, 10.0),
                "{name}"
            );
            let c = run_policy(
                &SimConfig {
                    seed: 2,
                    ..config.clone()
                },
                &p,
                &trace,
                &mut |_| {},
            );
            assert_ne!(a.ttfts, c.ttfts, "{name}");
        }
    }

    #[test]
    fn a_warm_up_starts_the_trace_settled_and_is_not_counted() {
        // 12 req/s from the start: two or three replicas' worth. Without a
        // warm-up the single starting replica queues for minutes; with one,
        // the trace meets a cluster already sized for it.
        let trace = rates(&[(0.0, 12.0)]);
        for name in ["v1", "v2", "chain"] {
            let cold = SimConfig {
                duration_seconds: 1200,
                ..Default::default()
            };
            let warm = SimConfig {
                warm_up_seconds: 1800,
                ..cold.clone()
            };
            let c = run_policy(&cold, &policy(name), &trace, &mut |_| {});
            let w = run_policy(&warm, &policy(name), &trace, &mut |_| {});
            let (sc, sw) = (
                crate::simulate::summarize(&c, 2.0, 10.0),
                crate::simulate::summarize(&w, 2.0, 10.0),
            );
            assert!(sc.slo_violation_minutes > 0, "{name} cold {sc:?}");
            assert_eq!(sw.slo_violation_minutes, 0, "{name} warm {sw:?}");
            // Counted from the trace's start only: 20 minutes, the same
            // requests either way (the warm-up draws its own).
            assert_eq!((c.minutes.len(), w.minutes.len()), (20, 20));
            assert_eq!(c.requests, w.requests, "{name}");
            assert!(w.minutes[0].replicas >= 2.0, "{name} {:?}", w.minutes[0]);
        }
    }

    #[test]
    fn v2_sizes_a_load_step_in_few_syncs_where_v1_steps_one_replica() {
        // 1 req/s, then 20 req/s from minute 5: about four replicas' worth
        // at the default thresholds (a replica serves about 6 req/s below
        // 80 % KV). V2 scales by the missing capacity (demand includes the
        // queued prompts), bounded by the HPA's +max(100 %, 4 pods) per
        // 15 s; V1 moves one replica per decision.
        let config = SimConfig {
            duration_seconds: 1200,
            startup_delay: 60,
            ..Default::default()
        };
        let trace = rates(&[(0.0, 1.0), (300.0, 20.0)]);
        let v1 = run_policy(&config, &policy("v1"), &trace, &mut |_| {});
        let v2 = run_policy(&config, &policy("v2"), &trace, &mut |_| {});
        let steps = |r: &PolicyRun| {
            let mut prev = 1;
            r.scale_history
                .iter()
                .map(|&(_, n)| {
                    let d = i64::from(n) - i64::from(prev);
                    prev = n;
                    d
                })
                .collect::<Vec<_>>()
        };
        let reach = |r: &PolicyRun, n: u32| r.scale_history.iter().find(|h| h.1 >= n).map(|h| h.0);
        assert!(
            steps(&v1).iter().all(|d| d.abs() == 1),
            "{:?}",
            v1.scale_history
        );
        assert!(steps(&v2).iter().any(|&d| d >= 4), "{:?}", v2.scale_history);
        // Four replicas: V2 within two HPA syncs of the step's first
        // decision, V1 a minute later at least.
        let (a, b) = (reach(&v2, 4), reach(&v1, 4));
        assert!(
            a.is_some_and(|a| a <= 300 + 3 * 15),
            "v2 {:?}",
            v2.scale_history
        );
        assert!(
            b.is_some_and(|b| Some(b) >= a.map(|a| a + 60)),
            "v1 {:?}",
            v1.scale_history
        );
        // Its queue drained sooner: fewer minutes over the SLO.
        let (s1, s2) = (
            crate::simulate::summarize(&v1, config.slo_ttft, 10.0),
            crate::simulate::summarize(&v2, config.slo_ttft, 10.0),
        );
        assert!(
            s2.slo_violation_minutes < s1.slo_violation_minutes,
            "v2 {s2:?} v1 {s1:?}"
        );
        assert_eq!(v1.requests, v2.requests);

        // Without the mean prompt tokens (no request-token histograms)
        // the queue adds no demand: V2 waits for its pending pods before it
        // adds more, and reaches four replicas more than a minute later.
        let blind = run_policy(
            &SimConfig {
                token_means: false,
                ..config.clone()
            },
            &policy("v2"),
            &trace,
            &mut |_| {},
        );
        let c = reach(&blind, 4);
        assert!(
            c.is_some_and(|c| Some(c) >= a.map(|a| a + 60)),
            "without means {:?}",
            blind.scale_history
        );
    }

    /// The oracle reads the arrivals ahead from the same streams the loop
    /// draws from: the requests it sees are the ones that then arrive.
    #[test]
    fn the_oracle_sees_the_requests_that_then_arrive() {
        let trace = rates(&[(0.0, 3.0), (120.0, 9.0)]);
        let warm_trace = trace.warm_up();
        let mut ahead = Lookahead {
            warm: Arrivals::new(&warm_trace, 7 ^ WARM_SEED),
            trace: Arrivals::new(&trace, 7),
            warm_end: 60.0,
            reached: 0.0,
            requests: VecDeque::new(),
            scratch: Vec::new(),
        };
        ahead.advance(0.0, 400.0);
        let seen: Vec<f64> = ahead.requests.iter().map(|r| r.arrival).collect();
        let mut warm = Arrivals::new(&warm_trace, 7 ^ WARM_SEED);
        let mut main = Arrivals::new(&trace, 7);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // The loop draws second by second.
        for now in 0..400u64 {
            if now < 60 {
                warm.until((now + 1) as f64, &mut a);
            } else {
                main.until((now + 1 - 60) as f64, &mut b);
            }
        }
        let expected: Vec<f64> = a
            .iter()
            .map(|r| r.arrival)
            .chain(b.iter().map(|r| r.arrival + 60.0))
            .collect();
        assert_eq!(seen, expected);
        // Forgetting the past keeps what is ahead.
        ahead.advance(200.0, 400.0);
        assert!(ahead.requests.iter().all(|r| r.arrival >= 200.0));
        assert_eq!(
            ahead.requests.len(),
            expected.iter().filter(|&&t| t >= 200.0).count()
        );
    }

    /// The oracle's count for a known minute: 30 req/s of 512/256 tokens on
    /// default replicas: 648 tokens per sequence (50.6 in the cache), 6.46 s
    /// each; p95 rule: N + 1.645 sqrt N <= 50.6, N = 40.2, 6.21 req/s per
    /// replica: 5 replicas (60 req/s: 10).
    #[test]
    fn the_oracle_sizes_for_clumps_in_a_minute() {
        use crate::simulate::oracle::clump_replicas;
        let p = ReplicaParams::default();
        let steady: Vec<Request> = (0..60)
            .map(|i| Request {
                arrival: f64::from(i),
                input_tokens: 512,
                output_tokens: 16,
            })
            .collect();
        // One a second: no clump beyond one replica.
        assert_eq!(clump_replicas(&p, 2.0, &steady), 1);
        // 58 prompts of 2,288 tokens within a second at 30 s (a minute of
        // Azure's code trace): 16.6 s of prefill, finished within 1 + 2 s
        // less the longest prefill (0.29 s) on 7 replicas.
        let mut clumped = steady.clone();
        clumped.extend((0..58).map(|i| Request {
            arrival: 30.0 + f64::from(i) / 60.0,
            input_tokens: 2288,
            output_tokens: 16,
        }));
        clumped.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        assert_eq!(clump_replicas(&p, 2.0, &clumped), 7);
        assert!(oracle_replicas(&p, 2.0, &clumped, 0.0, 0.0, 0.0) >= 7);
        // The same clump of 5 in a minute of 118 may be late (p95): 1.
        let mut small = steady.clone();
        small.extend(
            clumped
                .iter()
                .filter(|r| r.input_tokens == 2288)
                .take(5)
                .copied(),
        );
        small.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        let padded: Vec<Request> = small
            .iter()
            .copied()
            .chain((0..53).map(|i| Request {
                arrival: 0.5 + f64::from(i),
                input_tokens: 512,
                output_tokens: 16,
            }))
            .collect();
        let mut padded = padded;
        padded.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
        assert_eq!(clump_replicas(&p, 2.0, &padded), 1);
    }

    #[test]
    fn the_oracle_sizes_a_known_minute() {
        let reqs: Vec<Request> = (0..1800)
            .map(|i| Request {
                arrival: i as f64 / 30.0,
                input_tokens: 512,
                output_tokens: 256,
            })
            .collect();
        let p = ReplicaParams::default();
        assert_eq!(oracle_replicas(&p, 2.0, &reqs, 0.0, 0.0, 0.0), 5);
        // Twice the rate.
        let twice: Vec<Request> = (0..3600)
            .map(|i| Request {
                arrival: i as f64 / 60.0,
                input_tokens: 512,
                output_tokens: 256,
            })
            .collect();
        assert_eq!(oracle_replicas(&p, 2.0, &twice, 0.0, 0.0, 0.0), 10);
        // Nothing ahead: nothing needed.
        assert_eq!(oracle_replicas(&p, 2.0, &[], 0.0, 135.0, 0.0), 0);
        // A minute ahead within the horizon counts.
        let later: Vec<Request> = reqs
            .iter()
            .map(|r| Request {
                arrival: r.arrival + 120.0,
                ..*r
            })
            .collect();
        assert_eq!(oracle_replicas(&p, 2.0, &later, 0.0, 135.0, 0.0), 5);
        assert_eq!(oracle_replicas(&p, 2.0, &later, 0.0, 45.0, 0.0), 0);
    }

    /// The reactive reference sizes from what has arrived: the minute
    /// before `now` and its last 15 s, never a request after `now`.
    #[test]
    fn the_reactive_reference_sizes_what_has_arrived() {
        let p = ReplicaParams::default();
        let at = |from: f64, to: f64, per_second: f64| -> Vec<Request> {
            let n = ((to - from) * per_second).round() as usize;
            (0..n)
                .map(|i| Request {
                    arrival: from + i as f64 / per_second,
                    input_tokens: 512,
                    output_tokens: 256,
                })
                .collect()
        };
        // 30 req/s for the minute before 60 s: 5 replicas (as the oracle's
        // known minute).
        let steady = at(0.0, 60.0, 30.0);
        assert_eq!(reactive_replicas(&p, 2.0, &steady, 60.0, 0.0), 5);
        // What arrives after now is not seen, however much.
        let mut with_future = steady.clone();
        with_future.extend(at(60.0, 120.0, 90.0));
        assert_eq!(reactive_replicas(&p, 2.0, &with_future, 60.0, 0.0), 5);
        assert_eq!(oracle_replicas(&p, 2.0, &with_future, 60.0, 0.0, 0.0), 15);
        // A step to 60 req/s in the last 15 s: the minute averages 37.5
        // req/s (7 replicas), the quarter sees 60 (10).
        let mut step = at(0.0, 45.0, 30.0);
        step.extend(at(45.0, 60.0, 60.0));
        assert_eq!(reactive_replicas(&p, 2.0, &step, 60.0, 0.0), 10);
        // The backlog adds its drain within the objective: 60 waiting over
        // 2 s is 30 req/s more.
        assert_eq!(reactive_replicas(&p, 2.0, &steady, 60.0, 60.0), 10);
        // Nothing in the last minute: nothing needed.
        assert_eq!(reactive_replicas(&p, 2.0, &steady, 200.0, 0.0), 0);
    }

    /// On a load step the oracle's replicas are asked for a start-up delay
    /// before it lands; the reactive reference's only once it has landed,
    /// within a sync period and its 15-s window, and it pays violation
    /// minutes for it where the oracle does not.
    #[test]
    fn the_oracle_scales_before_a_step_and_the_reactive_reference_after() {
        let config = SimConfig {
            duration_seconds: 1500,
            ..Default::default()
        };
        let trace = rates(&[(0.0, 5.0), (600.0, 30.0)]);
        let oracle = run_policy(&config, &policy("oracle"), &trace, &mut |_| {});
        let reactive = run_policy(&config, &policy("reactive"), &trace, &mut |_| {});
        let first_above =
            |r: &PolicyRun, n: u32| r.scale_history.iter().find(|h| h.1 > n).map(|h| h.0);
        // Five req/s take one or two replicas; the step needs five.
        let (o, r) = (first_above(&oracle, 2), first_above(&reactive, 2));
        assert!(
            o.is_some_and(|o| (600 - config.startup_delay - 60..600).contains(&o)),
            "oracle {:?}",
            oracle.scale_history
        );
        assert!(
            r.is_some_and(|r| (600..=600 + 2 * config.hpa_sync_period + 15).contains(&r)),
            "reactive {:?}",
            reactive.scale_history
        );
        let (so, sr) = (
            crate::simulate::summarize(&oracle, config.slo_ttft, 10.0),
            crate::simulate::summarize(&reactive, config.slo_ttft, 10.0),
        );
        assert_eq!(so.slo_violation_minutes, 0, "{so:?}");
        assert!(sr.slo_violation_minutes >= 2, "{sr:?}");
        assert_eq!(oracle.requests, reactive.requests);
    }

    #[test]
    fn windows_follow_the_scrape_period_and_window() {
        let mut pod = Pod {
            id: 1,
            model: ReplicaModel::new(ReplicaParams::default()),
            ready_at: 0,
            samples: VecDeque::new(),
        };
        for at in 1..=120u64 {
            // kv rises each second; a queue spike at second 50; one request
            // of 500 prompt and 100 generated tokens finishes every second
            // up to 80, then one of 1000 and 10 per second.
            let q = if at == 50 { 9.0 } else { 0.0 };
            let (n, prompt, generated) = if at <= 80 {
                (at, at * 500, at * 100)
            } else {
                (at, 80 * 500 + (at - 80) * 1000, 80 * 100 + (at - 80) * 10)
            };
            pod.samples.push_back(Sample {
                at,
                kv: at as f64 / 1000.0,
                waiting: q,
                running: 0.0,
                finished: FinishedCounters {
                    requests: n,
                    prompt_tokens: prompt,
                    generation_tokens: generated,
                    prefill_micros: prompt * 125,
                },
            });
        }
        let peaks = |w: Option<Window>| w.map(|w| (w.kv, w.queue));
        let means = |w: Option<Window>| w.and_then(|w| w.token_means);
        // Every second: the newest sample and the spike within 60 s.
        assert_eq!(peaks(pod.window(100, 1, 0)), Some((0.1, 9.0)));
        // Prometheus every 15 s saw 45, 60, 75, 90 (not 50); newest is 90.
        assert_eq!(peaks(pod.window(100, 15, 0)), Some((0.09, 0.0)));
        // The window has moved past the spike.
        assert_eq!(peaks(pod.window(111, 1, 0)), Some((0.111, 0.0)));
        // Means from the first and last samples of the window: 41..=80 all
        // 500/100 tokens.
        assert_eq!(means(pod.window(80, 1, 0)), Some((500.0, 100.0)));
        // 41..=100: 40 s of 500/100 and 20 s of 1000/10 over 59 requests
        // (42..=100 finished after the first sample).
        let w = means(pod.window(100, 1, 0)).unwrap();
        let want = (
            (39.0 * 500.0 + 20.0 * 1000.0) / 59.0,
            (39.0 * 100.0 + 20.0 * 10.0) / 59.0,
        );
        assert!(
            (w.0 - want.0).abs() < 1e-9 && (w.1 - want.1).abs() < 1e-9,
            "{w:?} {want:?}"
        );
        // One request finished per second: the completion rate over the
        // window's first and last samples.
        assert_eq!(
            pod.window(100, 1, 0).and_then(|w| w.completion_rate),
            Some(1.0)
        );
        // One sample in the window: no rate, no mean.
        assert_eq!(
            pod.window(100, 60, 40).and_then(|w| w.completion_rate),
            None
        );
        assert_eq!(means(pod.window(100, 60, 40)), None);
        assert_eq!(peaks(pod.window(100, 60, 40)), Some((0.1, 0.0)));
    }
}
