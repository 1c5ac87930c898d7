//! The closed loop of one policy, in virtual time (one-second ticks, the
//! replicas advanced in sub-steps): load -> replicas -> the metrics the
//! collector (or Prometheus) holds -> the policy's decision -> the HPA ->
//! pods that become ready after a start-up delay -> load spread over the
//! ready pods. No clock and no sleeping: a day runs in seconds.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::emulator::replica_model::{ReplicaModel, ReplicaParams, Request};
use crate::hpa::{
    external_metric_proposal, served_milli, BehaviorState, HpaBehavior, ScaleState, Tolerances,
};
use crate::saturation::{
    decide_acted_on, HpaView, ModelInput, ReplicaLoad, SaturationAnalyzer, SaturationThresholds,
    VariantState,
};

use super::policy::{DataPath, Policy};
use super::trace::{Arrivals, Trace};

/// The span of the collector's (and `max_over_time`'s) peak window.
const PEAK_WINDOW: u64 = 60;
/// Phases (seconds into their period) of the independent processes, so
/// that they do not all tick at the same instant as no real cluster does.
const HPA_PHASE: u64 = 3;
const CONTROLLER_PHASE: u64 = 7;
const ADAPTER_PHASE: u64 = 11;

/// Everything a run depends on besides the trace and the policy.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub duration_seconds: u64,
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
    /// Time-to-first-token objective (p95 per minute), seconds.
    pub slo_ttft: f64,
    pub cost_per_replica_hour: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            duration_seconds: 3600,
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
            slo_ttft: 2.0,
            cost_per_replica_hour: 10.0,
        }
    }
}

/// One simulated minute of one policy.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Minute {
    /// Requests that arrived.
    pub arrivals: u32,
    /// Mean pods (ready or starting): what is paid for.
    pub replicas: f64,
    pub ready_replicas: f64,
    /// p95 of the times to first token that went out this minute.
    pub ttft_p95: Option<f64>,
    /// Mean KV-cache usage over ready pods.
    pub kv_usage: Option<f64>,
}

/// The outcome of one policy.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    pub name: String,
    pub minutes: Vec<Minute>,
    pub requests: u64,
    pub interrupted_requests: u64,
    pub scale_events: u32,
    pub max_replicas: u32,
    pub replica_seconds: f64,
    /// Every time to first token (for the overall percentiles).
    pub ttfts: Vec<f32>,
}

struct Pod {
    model: ReplicaModel,
    ready_at: u64,
    /// (end of second, kv, waiting), the last `PEAK_WINDOW` seconds.
    samples: VecDeque<(u64, f64, f64)>,
}

impl Pod {
    /// The peak over the window ending at `now` of the samples a scraper
    /// with this period and phase took: what `max_over_time(...[1m])` (or
    /// the collector's window) holds at `now`.
    fn peak(&self, now: u64, period: u64, phase: u64) -> Option<(f64, f64)> {
        let period = period.max(1);
        let from = now.saturating_sub(PEAK_WINDOW);
        self.samples
            .iter()
            .filter(|&&(at, _, _)| at > from && at <= now && at % period == phase % period)
            .fold(None, |acc, &(_, kv, q)| match acc {
                None => Some((kv, q)),
                Some((k, w)) => Some((f64::max(k, kv), f64::max(w, q))),
            })
    }
}

/// The running state of one policy's cluster.
struct Cluster<'a> {
    config: &'a SimConfig,
    policy: &'a Policy,
    pods: Vec<Pod>,
    spec: u32,
    gateway: VecDeque<Request>,
    behavior: BehaviorState,
    /// Chain: the controller's last output and what the adapter last saw.
    controller_output: Option<u32>,
    adapter_value: Option<u32>,
    interrupted: u64,
    scale_events: u32,
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

    /// The decision the analysis makes at `now` from samples taken every
    /// `period` seconds: the server's code path (`decide_acted_on`).
    fn decide(&self, analyzer: &Arc<dyn SaturationAnalyzer>, now: u64, period: u64) -> u32 {
        let replicas: Vec<ReplicaLoad> = self
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.ready_at <= now)
            .filter_map(|(i, p)| {
                p.peak(now, period, 0).map(|(kv, queue)| ReplicaLoad {
                    pod: format!("pod-{i}"),
                    variant: "sim".to_owned(),
                    kv,
                    queue,
                })
            })
            .collect();
        let scale = self.scale_state(now);
        let variants = [VariantState {
            name: "sim".to_owned(),
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
        let decision = decide_acted_on(
            analyzer.as_ref(),
            &ModelInput {
                replicas: &replicas,
                variants: &variants,
                thresholds: &self.config.thresholds,
            },
            &hpas,
        );
        decision.targets.first().map_or(self.spec, |t| t.desired)
    }

    /// The chain's controller and adapter ticks, then the HPA's sync.
    fn control(&mut self, now: u64) {
        if let DataPath::Chain(delays) = self.policy.path {
            if now % delays.controller.max(1) == CONTROLLER_PHASE % delays.controller.max(1) {
                self.controller_output =
                    Some(self.decide(&self.policy.analyzer, now, delays.scrape));
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
            DataPath::OnDemand => {
                Some(self.decide(&self.policy.analyzer, now, self.config.fetch_interval))
            }
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
        self.scale_events += 1;
        self.spec = spec;
        while (self.pods.len() as u32) < spec {
            self.pods.push(Pod {
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
    let mut cluster = Cluster {
        config,
        policy,
        pods: Vec::new(),
        spec: 0,
        gateway: VecDeque::new(),
        behavior: BehaviorState::new(0.0, initial),
        controller_output: None,
        adapter_value: None,
        interrupted: 0,
        scale_events: 0,
    };
    // The workload starts settled at its initial size.
    cluster.set_spec(initial, 0);
    for pod in &mut cluster.pods {
        pod.ready_at = 0;
    }
    cluster.scale_events = 0;

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
        max_replicas: initial,
        replica_seconds: 0.0,
        ttfts: Vec::new(),
    };
    let mut minute = MinuteAccumulator::default();
    for now in 0..config.duration_seconds {
        cluster.control(now);
        let ready = cluster.ready(now);
        if ready > 0 {
            while let Some(r) = cluster.gateway.pop_front() {
                cluster.dispatch(r, now);
            }
        }
        batch.clear();
        arrivals.until((now + 1) as f64, &mut batch);
        minute.arrivals += batch.len() as u32;
        run.requests += batch.len() as u64;
        for &r in &batch {
            cluster.dispatch(r, now);
        }
        for pod in cluster.pods.iter_mut().filter(|p| p.ready_at <= now) {
            for s in 0..substeps {
                let t = now as f64 + f64::from(s) * dt;
                pod.model.step(t, dt, |f| {
                    let ttft = f.ttft();
                    minute.ttfts.push(ttft);
                    run.ttfts.push(ttft as f32);
                });
            }
            let state = pod.model.reported_state();
            pod.samples.push_back((now + 1, state.kv, state.waiting));
            while pod
                .samples
                .front()
                .is_some_and(|&(at, _, _)| at + PEAK_WINDOW < now + 1)
            {
                pod.samples.pop_front();
            }
            minute.kv_sum += state.kv;
            minute.kv_samples += 1;
        }
        minute.pod_seconds += cluster.pods.len() as f64;
        minute.ready_seconds += f64::from(ready);
        run.replica_seconds += cluster.pods.len() as f64;
        run.max_replicas = run.max_replicas.max(cluster.pods.len() as u32);
        minute.seconds += 1;
        if (now + 1) % 60 == 0 || now + 1 == config.duration_seconds {
            if now + 1 == config.duration_seconds {
                // Requests never served by the end: their wait so far is a
                // lower bound of their time to first token.
                let end = (now + 1) as f64;
                let unserved = cluster
                    .gateway
                    .iter()
                    .map(|r| r.arrival)
                    .chain(cluster.pods.iter().flat_map(|p| p.model.waiting_arrivals()))
                    .map(|a| end - a)
                    .collect::<Vec<_>>();
                for w in unserved {
                    minute.ttfts.push(w);
                    run.ttfts.push(w as f32);
                }
            }
            run.minutes.push(minute.finish());
        }
        if (now + 1) % 600 == 0 {
            progress(600);
        }
    }
    progress(config.duration_seconds % 600);
    run.interrupted_requests = cluster.interrupted;
    run.scale_events = cluster.scale_events;
    run
}

#[derive(Default)]
struct MinuteAccumulator {
    seconds: u32,
    arrivals: u32,
    pod_seconds: f64,
    ready_seconds: f64,
    kv_sum: f64,
    kv_samples: u32,
    ttfts: Vec<f64>,
}

impl MinuteAccumulator {
    fn finish(&mut self) -> Minute {
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
pub fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::policy::{parse_policies, ChainDelays};
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
        for name in ["v1", "chain"] {
            let run = run_policy(&config, &policy(name), &rates(&[(0.0, 0.0)]), &mut |_| {});
            assert_eq!(run.requests, 0);
            assert_eq!(run.scale_events, 0, "{name}");
            assert_eq!(run.max_replicas, 2, "{name}");
            assert!(run
                .minutes
                .iter()
                .all(|m| m.replicas == 2.0 && m.ttft_p95.is_none()));
            assert_eq!(run.minutes.len(), 30);
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
        let trace = rates(&[(0.0, 8.0)]);
        let a = run_policy(&config, &policy("v1"), &trace, &mut |_| {});
        let b = run_policy(&config, &policy("v1"), &trace, &mut |_| {});
        assert_eq!(a.minutes, b.minutes);
        assert_eq!(a.ttfts, b.ttfts);
        let c = run_policy(
            &SimConfig { seed: 2, ..config },
            &policy("v1"),
            &trace,
            &mut |_| {},
        );
        assert_ne!(a.ttfts, c.ttfts);
    }

    #[test]
    fn peaks_follow_the_scrape_period_and_window() {
        let mut pod = Pod {
            model: ReplicaModel::new(ReplicaParams::default()),
            ready_at: 0,
            samples: VecDeque::new(),
        };
        for at in 1..=120u64 {
            // kv rises each second; a queue spike at second 50.
            let q = if at == 50 { 9.0 } else { 0.0 };
            pod.samples.push_back((at, at as f64 / 1000.0, q));
        }
        // Every second: the newest sample and the spike within 60 s.
        assert_eq!(pod.peak(100, 1, 0), Some((0.1, 9.0)));
        // Prometheus every 15 s saw 45, 60, 75, 90 (not 50); newest is 90.
        assert_eq!(pod.peak(100, 15, 0), Some((0.09, 0.0)));
        // The window has moved past the spike.
        assert_eq!(pod.peak(111, 1, 0), Some((0.111, 0.0)));
    }
}
