//! `wva-metrics-server demo`: the whole loop on loopback, with no cluster
//! and no Prometheus. Emulated vLLM replicas serve real `/metrics`; the
//! scrape backend reads them; the API answers over HTTPS; a scripted load
//! ramps up, holds and ramps down, then stops, so that the model scales to
//! zero after the retention period and comes back from zero through an
//! emulated endpoint picker's queue when the load returns; and the HPA's
//! own formula is applied to the emulated Deployment so that its replicas
//! really change.

/// `println!` that does not panic when stdout is gone (`demo | head`).
macro_rules! say {
    ($($arg:tt)*) => {
        crate::telemetry::print_line(format_args!($($arg)*))
    };
}

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::k8s::selector::LabelSelector;
use clap::Args;

use crate::cli::parse_duration;
use crate::collector::scrape::{ScrapeBackend, ScrapeConfig};
use crate::collector::FreshnessPolicy;
use crate::emulator::load::LoadModel;
use crate::emulator::{self, objects, EmulatorHandle, EmulatorOptions, ReplicaState};
use crate::inventory::{resolve, InventoryObjects, InventoryStore};
use crate::run::{self, Components};
use crate::saturation::{ScaleToZeroConfig, ThresholdConfig};
use crate::server::StackConfig;
use crate::telemetry::Telemetry;

/// `demo`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Port of the HTTPS API on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    pub(crate) port: u16,
    /// Seconds per phase of the scripted load (ramp up, hold, ramp down).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub(crate) phase: Duration,
    /// Stop after one full script (up, down, to zero and, when the load returns, back from zero) instead of repeating it.
    #[arg(long)]
    pub(crate) once: bool,
    /// Which saturation analysis decides: v1 (percentages) or v2 (tokens,
    /// `analyzerName: saturation`).
    #[arg(long, value_enum, default_value = "v1")]
    pub(crate) analyzer: DemoAnalyzer,
    /// Scale-to-zero retention period of the demo's model: after the ramp down the load stops, and once no
    /// request has completed for this long the model goes to 0 replicas; the next ramp brings it back
    /// through the emulated endpoint picker's queue.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub(crate) retention: Duration,
}

/// The analysis the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DemoAnalyzer {
    V1,
    V2,
}

/// Namespace of the demo's variant.
pub(crate) const NAMESPACE: &str = "llm-demo";
/// The demo's scale target (a Deployment).
pub(crate) const TARGET: &str = "llama-8b-decode";
/// The demo's VariantAutoscaling.
pub(crate) const VARIANT: &str = "llama-8b-a100";
/// Model served by the emulated replicas.
pub(crate) const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
/// minReplicas of the variant and of the demo's HPA (`HPAScaleToZero`, or
/// a KEDA ScaledObject with `minReplicaCount: 0`).
const MIN_REPLICAS: u32 = 0;
/// Replicas of the Deployment when the demo starts.
const START_REPLICAS: u32 = 1;
const MAX_REPLICAS: u32 = 6;
/// Peak arrival rate of the scripted load, requests per second.
const PEAK_RATE: f64 = 16.0;
/// The HPA's default tolerance: ratios within 10 % of 1 change nothing.
const HPA_TOLERANCE: f64 = 0.10;
/// The demo runs the HPA formula every 5 s (the real HPA: 15 s) to stay short.
const HPA_SYNC: Duration = Duration::from_secs(5);
/// A new replica becomes ready this long after it is added.
const STARTUP_DELAY: Duration = Duration::from_secs(4);

/// The emulated Deployment.
struct EmulatedDeployment {
    replicas: Vec<EmulatorHandle>,
    spec: u32,
    /// When each replica (by index) was asked for; it is ready after the start-up delay.
    started: Vec<Instant>,
}

impl EmulatedDeployment {
    fn ready(&self, now: Instant) -> u32 {
        let n = self
            .started
            .iter()
            .take(self.spec as usize)
            .filter(|t| now.duration_since(**t) >= STARTUP_DELAY)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn scale_to(&mut self, replicas: u32, now: Instant) {
        let replicas = replicas.clamp(MIN_REPLICAS, MAX_REPLICAS);
        for i in self.spec..replicas {
            if let Some(t) = self.started.get_mut(i as usize) {
                *t = now;
            }
        }
        self.spec = replicas;
    }

    /// The Kubernetes objects of the current state.
    fn objects(&self, now: Instant) -> InventoryObjects {
        let ready = self.ready(now);
        let va = objects::variant_autoscaling(&objects::VariantSpec {
            namespace: NAMESPACE,
            name: VARIANT,
            target: TARGET,
            model: MODEL,
            accelerator: "A100",
            cost: 10.0,
            min_replicas: MIN_REPLICAS,
            max_replicas: MAX_REPLICAS,
        });
        let deployment = objects::deployment(NAMESPACE, TARGET, self.spec, ready);
        let mut objects = InventoryObjects::default();
        if let Ok(va) = serde_json::from_value(va) {
            objects.add_variant_autoscaling(&va);
        }
        if let Ok(d) = serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(deployment)
        {
            objects.add_workload(&d);
        }
        for (i, r) in self.replicas.iter().enumerate().take(self.spec as usize) {
            let is_ready = now.duration_since(self.started[i]) >= STARTUP_DELAY;
            let pod = objects::pod(
                NAMESPACE,
                &format!("{TARGET}-{i}"),
                TARGET,
                VARIANT,
                is_ready,
                Some(r.addr().port()),
            );
            if let Ok(p) = serde_json::from_value(pod) {
                objects.add_pod(&p);
            }
        }
        objects
    }
}

/// Longest the idle phase waits for the Deployment to reach zero. A
/// replica counts as busy while a request waited on it within the last
/// minute (the analysis's window) or completed within the retention
/// period, so the model goes to zero about a minute after the load stops
/// (with a retention period up to a minute); this leaves room to spare.
const IDLE_LIMIT: Duration = Duration::from_secs(180);

/// Whether one run of the script is over at `t` into it: after at least
/// one idle phase, once the Deployment is at zero (a full cycle), or when
/// the idle phase has waited [`IDLE_LIMIT`] (plus the retention period) for that.
fn script_done(t: Duration, phase: Duration, retention: Duration, at_zero: bool) -> bool {
    let idle_from = phase * 3;
    (t >= phase * 4 && at_zero) || t >= idle_from + IDLE_LIMIT.max(phase) + retention
}

/// Arrival rate of the script at `t`: ramp up, hold, ramp down, then no
/// load at all until [`script_done`].
fn scripted_rate(t: Duration, phase: Duration) -> f64 {
    let p = phase.as_secs_f64().max(1.0);
    let x = t.as_secs_f64();
    let base = PEAK_RATE * 0.1;
    match x {
        x if x < p => base + (PEAK_RATE - base) * x / p,
        x if x < 2.0 * p => PEAK_RATE,
        x if x < 3.0 * p => PEAK_RATE - (PEAK_RATE - base) * (x - 2.0 * p) / p,
        _ => 0.0,
    }
}

/// The demo's scale-to-zero configuration: on, with `retention`.
fn demo_scale_to_zero(retention: Duration) -> anyhow::Result<ScaleToZeroConfig> {
    let (config, errors) = ScaleToZeroConfig::from_configmap_data(
        &[(
            "default".to_owned(),
            format!(
                "enable_scale_to_zero: true\nretention_period: \"{}ms\"",
                retention.as_millis().max(1)
            ),
        )]
        .into_iter()
        .collect(),
    );
    anyhow::ensure!(errors.is_empty(), "demo scale-to-zero config: {errors:?}");
    Ok(config)
}

/// The HPA's replica computation for a `Value: 1` target on `wva_desired_ratio`,
/// by the shared model of Kubernetes' replica calculator (band inclusive at
/// both ends, as the HPA has it).
pub(crate) fn hpa_replicas(ratio_milli: i64, ready: u32, current: u32) -> u32 {
    let scale = crate::hpa::ScaleState {
        spec_replicas: current,
        status_replicas: current,
        ready_pods: ready,
    };
    // The target is the constant 1, which the calculator always accepts.
    crate::hpa::external_metric_proposal(
        &[ratio_milli],
        crate::hpa::ExternalTarget::Value { milli: 1000 },
        &scale,
        &crate::hpa::Tolerances::uniform(HPA_TOLERANCE),
    )
    .map_or(current, |p| p.replicas)
}

/// The demo's thresholds: the built-in ones, with `analyzerName: saturation`
/// for `--analyzer v2` (the emulated replicas export `vllm:cache_config_info`).
fn demo_thresholds(analyzer: DemoAnalyzer) -> anyhow::Result<ThresholdConfig> {
    Ok(match analyzer {
        DemoAnalyzer::V1 => ThresholdConfig::default(),
        DemoAnalyzer::V2 => {
            let (config, errors) =
                ThresholdConfig::from_yaml_str("default: {analyzerName: saturation}")?;
            anyhow::ensure!(errors.is_empty(), "demo thresholds: {errors:?}");
            config
        }
    })
}

pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let load = LoadModel::default();
    let mut replicas = Vec::new();
    for _ in 0..MAX_REPLICAS {
        let h = emulator::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            EmulatorOptions {
                model_name: MODEL.to_owned(),
                state: ReplicaState {
                    kv: 0.0,
                    waiting: 0.0,
                    running: 0.0,
                },
                request_rate: Some(0.0),
            },
        )
        .await?;
        replicas.push(h);
    }
    // Stands in for the llm-d endpoint picker: reports the requests that
    // wait for a replica while the Deployment is at zero.
    let epp = emulator::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        EmulatorOptions {
            model_name: MODEL.to_owned(),
            state: ReplicaState::default(),
            request_rate: Some(0.0),
        },
    )
    .await?;
    epp.set_scheduler_queue(Some(0.0));
    let scale_to_zero = Arc::new(ArcSwap::from_pointee(demo_scale_to_zero(args.retention)?));
    let start = Instant::now();
    let long_ago = start.checked_sub(STARTUP_DELAY).unwrap_or(start);
    let mut deployment = EmulatedDeployment {
        started: vec![long_ago; replicas.len()],
        replicas,
        spec: START_REPLICAS,
    };

    let inventory = Arc::new(InventoryStore::new());
    inventory.publish(resolve(&deployment.objects(start)).0);
    let mut registry = Registry::default();
    let telemetry = Telemetry::new(&mut registry);
    let backend = Arc::new(
        ScrapeBackend::new(
            ScrapeConfig {
                timeout: Duration::from_secs(1),
                ..ScrapeConfig::default()
            },
            telemetry.clone(),
        )?
        .with_scale_to_zero(Arc::clone(&scale_to_zero))
        .with_epp_metrics_url(Some(format!("http://{}/metrics", epp.addr()))),
    );
    let components = Components {
        leader: None,
        inventory: Arc::clone(&inventory),
        backend,
        thresholds: Arc::new(ArcSwap::from_pointee(demo_thresholds(args.analyzer)?)),
        scale_to_zero,
        fetch_interval: Duration::from_secs(1),
        freshness: FreshnessPolicy::default(),
        registry,
        telemetry,
        status_writer: None,
        // The demo is standalone on loopback, with no cluster to delegate to.
        auth: None,
        hpa_tolerance: crate::hpa::Tolerances::default(),
        accelerators: None,
        v2_limiter: false,
        service_classes: Arc::default(),
    };
    let tls = run::tls_config(None, None)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listen = run::Listen {
        addr,
        tls,
        stack: StackConfig::default(),
        limits: crate::server::ServerLimits::default(),
        groups: crate::api::discovery::ServedGroups::default(),
    };
    let server = run::start(components, listen, shutdown.clone(), Vec::new()).await?;
    print_banner(server.addr, args.retention);

    let selector = LabelSelector::parse(&format!("target_name={TARGET}"))
        .map_err(|e| anyhow::anyhow!("demo selector: {e}"))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_hpa = Instant::now();
    let mut last_status = Instant::now();
    let mut script_start = start;
    let mut last_desired = None;
    let mut peak_replicas = deployment.spec;
    let mut returning_since: Option<Instant> = None;
    let mut last_queued = 0.0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        let in_script = now.duration_since(script_start);
        let at_zero = deployment.spec == 0 && last_desired == Some(0);
        if script_done(in_script, args.phase, args.retention, at_zero) {
            if at_zero {
                say!(
                    "demo: full cycle in {}s: {TARGET} went from {START_REPLICAS} to {peak_replicas} replicas and, idle for the {}s retention period, to 0",
                    in_script.as_secs(),
                    args.retention.as_secs_f64()
                );
            } else {
                say!(
                    "demo: {TARGET} is still at {} replicas {}s after the load stopped",
                    deployment.spec,
                    (in_script.saturating_sub(args.phase * 3)).as_secs()
                );
            }
            if args.once && !at_zero {
                say!("demo: script finished");
                shutdown.cancel();
                break;
            }
            say!("demo: script starts again");
            script_start = now;
            peak_replicas = deployment.spec;
            returning_since = at_zero.then_some(now);
            continue;
        }
        // The load came back to a model at zero: once a replica is ready
        // again, the round trip is complete.
        if let Some(since) = returning_since {
            if deployment.ready(now) >= 1 {
                say!(
                    "demo: back from zero: {TARGET} has a ready replica {}s after the load returned",
                    now.duration_since(since).as_secs()
                );
                returning_since = None;
                if args.once {
                    say!("demo: script finished");
                    shutdown.cancel();
                    break;
                }
            }
        }
        let rate = scripted_rate(in_script, args.phase);
        let ready = deployment.ready(now);
        let state = if rate > 0.0 {
            load.replica_state(rate, ready.max(1))
        } else {
            ReplicaState::default()
        };
        for (i, r) in deployment.replicas.iter().enumerate() {
            let serving = i < deployment.spec as usize
                && now.duration_since(deployment.started[i]) >= STARTUP_DELAY;
            r.set_state(if serving {
                state
            } else {
                ReplicaState::default()
            });
            // Completed requests follow the load: the idle phase is a
            // counter that stops, not a flag.
            r.set_request_rate(Some(if serving {
                rate / f64::from(ready.max(1))
            } else {
                0.0
            }));
        }
        // With no replica ready, arriving requests wait in the endpoint
        // picker's flow-control queue: the signal that brings the model back.
        let queued = if ready == 0 && rate > 0.0 {
            (rate * 2.0).ceil()
        } else {
            0.0
        };
        if queued > 0.0 && last_queued == 0.0 {
            say!("demo: load returns with {TARGET} at 0 replicas: the endpoint picker queues {queued} requests");
        }
        last_queued = queued;
        epp.set_scheduler_queue(Some(queued));
        inventory.publish(resolve(&deployment.objects(now)).0);

        let decision = server.engine.decide(NAMESPACE, &selector);
        last_desired = decision
            .as_ref()
            .ok()
            .and_then(|ds| ds.first())
            .map(|d| d.desired);
        if now.duration_since(last_hpa) >= HPA_SYNC {
            last_hpa = now;
            if let Ok(Some(d)) = decision.as_ref().map(|ds| ds.first()) {
                let proposed = hpa_replicas(d.ratio_milli, d.ready, deployment.spec);
                if proposed != deployment.spec {
                    say!(
                        "demo: HPA scales {TARGET} from {} to {}",
                        deployment.spec,
                        proposed.clamp(MIN_REPLICAS, MAX_REPLICAS)
                    );
                    deployment.scale_to(proposed, now);
                    peak_replicas = peak_replicas.max(deployment.spec);
                }
            }
        }
        if now.duration_since(last_status) >= Duration::from_secs(3) {
            last_status = now;
            match &decision {
                Ok(ds) => {
                    if let Some(d) = ds.first() {
                        say!(
                            "demo: t={:>4}s load={:>5.1} req/s kv={:.2} queue={:>4.1} desired={} ratio={:.3} replicas={} ready={}",
                            elapsed.as_secs(), rate, state.kv, state.waiting, d.desired,
                            d.ratio_milli as f64 / 1000.0, deployment.spec, ready
                        );
                    }
                }
                Err(e) => say!("demo: t={:>4}s no decision: {e}", elapsed.as_secs()),
            }
        }
    }
    for r in deployment.replicas {
        r.shutdown().await;
    }
    epp.shutdown().await;
    server.join().await;
    Ok(())
}

fn print_banner(addr: SocketAddr, retention: Duration) {
    let base = format!("https://{addr}");
    say!("wva-metrics-server demo: serving {base} (self-signed certificate, no authentication: loopback demo only)");
    say!("  namespace: {NAMESPACE}   scale target: Deployment/{TARGET}   variant: {VARIANT}   model: {MODEL}");
    say!(
        "  scale to zero: on, retention period {}s, minReplicas {MIN_REPLICAS}",
        retention.as_secs_f64()
    );
    say!("Try:");
    say!("  curl -sk {base}/apis/external.metrics.k8s.io/v1beta1");
    say!("  curl -sk '{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/wva_desired_ratio?labelSelector=target_name%3D{TARGET}'");
    say!("  curl -sk '{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/wva_desired_replicas?labelSelector=target_name%3D{TARGET}'");
    say!("  curl -sk {base}/metrics");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_scale_to_zero_config_is_on_with_the_retention() {
        let c = demo_scale_to_zero(Duration::from_millis(2500)).unwrap();
        let m = c.for_model(MODEL, NAMESPACE);
        assert!(m.enabled);
        assert_eq!(m.retention, Duration::from_millis(2500));
    }

    #[test]
    fn the_script_ramps_holds_ramps_down_and_stays_idle() {
        let p = Duration::from_secs(20);
        let base = PEAK_RATE * 0.1;
        let s = |secs: u64| scripted_rate(Duration::from_secs(secs), p);
        assert!((s(0) - base).abs() < 1e-9);
        assert!((s(10) - (base + PEAK_RATE) / 2.0).abs() < 1e-9);
        assert_eq!((s(20), s(39)), (PEAK_RATE, PEAK_RATE));
        assert!((s(50) - (base + PEAK_RATE) / 2.0).abs() < 1e-9);
        // No load after the ramp down, for as long as the idle phase lasts:
        // it does not wrap around into the next ramp by itself.
        for t in [60, 80, 120, 400] {
            assert_eq!(s(t), 0.0, "t={t}");
        }
    }

    #[test]
    fn one_run_ends_at_zero_or_at_the_idle_limit() {
        let retention = Duration::from_secs(20);
        for phase in [Duration::from_secs(20), Duration::from_secs(40)] {
            let four = phase * 4;
            let limit = phase * 3 + IDLE_LIMIT + retention;
            let table = [
                // (time into the script, at zero, done)
                (four - Duration::from_secs(1), true, false),
                (four, true, true),
                (four + Duration::from_secs(60), false, false),
                (limit - Duration::from_secs(1), false, false),
                (limit, false, true),
            ];
            for (t, back, done) in table {
                assert_eq!(
                    script_done(t, phase, retention, back),
                    done,
                    "phase {phase:?} t {t:?} back {back}"
                );
            }
        }
    }
}
