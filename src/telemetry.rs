//! The server's own metrics (served at `/metrics`, OpenMetrics text) and the
//! tracing set-up.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the per-variant decision gauges (DESIGN section 7).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VariantLabels {
    pub(crate) variant_name: String,
    pub(crate) target_name: String,
    pub(crate) target_kind: String,
    pub(crate) namespace: String,
    pub(crate) accelerator_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScalingLabels {
    pub(crate) variant_name: String,
    pub(crate) namespace: String,
    pub(crate) direction: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectedLabels {
    pub(crate) backend: String,
    pub(crate) signal: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabels {
    pub(crate) backend: String,
    /// The scrape target kind or the PromQL signal name.
    pub(crate) query: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendErrorLabels {
    pub(crate) backend: String,
    pub(crate) query: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabels {
    pub(crate) namespace: String,
    pub(crate) model_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: String,
    pub(crate) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteOnly {
    pub(crate) route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionLabels {
    /// `https` or `keda`.
    pub(crate) port: String,
    /// Why the server closed it: `over_limit`, `no_request_head`, `idle`, `plain_http`.
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PortLabels {
    pub(crate) port: String,
}

/// Why the KEDA port closed a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConnectionCloseLabels {
    pub(crate) reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// What the `slo` analysis computed at its last decision of a model, so
/// that a user can read why it asked for its count: about the sized rate
/// over the rate one replica carries. Only models `slo` decided (not
/// through a fallback) have them.
#[derive(Clone, Default)]
pub(crate) struct SloGauges {
    pub(crate) arrivals: Family<ModelLabels, FloatGauge>,
    pub(crate) sized: Family<ModelLabels, FloatGauge>,
    pub(crate) backlog: Family<ModelLabels, FloatGauge>,
    pub(crate) request_seconds: Family<ModelLabels, FloatGauge>,
    pub(crate) sequence_tokens: Family<ModelLabels, FloatGauge>,
    pub(crate) prefill_seconds: Family<ModelLabels, FloatGauge>,
    pub(crate) startup_seconds: Family<ModelLabels, FloatGauge>,
    pub(crate) replica_rate: Family<VariantLabels, FloatGauge>,
}

impl SloGauges {
    fn register(&self, r: &mut Registry) {
        r.register(
            "wva_slo_arrivals_per_second",
            "Requests arriving per second as the slo analysis estimates them (completions plus queue growth)",
            self.arrivals.clone(),
        );
        r.register(
            "wva_slo_sized_requests_per_second",
            "Requests per second the slo analysis sized the model for: arrivals projected over the start-up delay plus the capacity held for the backlog",
            self.sized.clone(),
        );
        r.register(
            "wva_slo_backlog_requests",
            "Requests waiting in the model's replicas and the endpoint picker at the slo analysis' last decision",
            self.backlog.clone(),
        );
        r.register(
            "wva_slo_request_seconds",
            "Seconds a request spends in a replica, learned by the slo analysis from running over completions (Little's law)",
            self.request_seconds.clone(),
        );
        r.register(
            "wva_slo_sequence_tokens",
            "KV-cache tokens per sequence the slo analysis sizes with (prompt, half the output, half a block)",
            self.sequence_tokens.clone(),
        );
        r.register(
            "wva_slo_prefill_seconds",
            "Mean prefill seconds per request learned by the slo analysis (absent where vLLM does not report it)",
            self.prefill_seconds.clone(),
        );
        r.register(
            "wva_slo_startup_seconds",
            "Start-up delay of a new replica the slo analysis projects over (learned, else the default)",
            self.startup_seconds.clone(),
        );
        r.register(
            "wva_slo_replica_requests_per_second",
            "Requests per second one replica of the variant carries within the latency objective, as the slo analysis sized it",
            self.replica_rate.clone(),
        );
    }

    /// Removes a model's series (and its variants').
    pub(crate) fn remove(&self, model: &ModelLabels, variants: &[VariantLabels]) {
        for family in [
            &self.arrivals,
            &self.sized,
            &self.backlog,
            &self.request_seconds,
            &self.sequence_tokens,
            &self.prefill_seconds,
            &self.startup_seconds,
        ] {
            family.remove(model);
        }
        for v in variants {
            self.replica_rate.remove(v);
        }
    }
}

/// Every metric the server exports. Cloning is cheap: the families share
/// their storage.
#[derive(Clone)]
pub struct Telemetry {
    pub(crate) desired_replicas: Family<VariantLabels, Gauge>,
    pub(crate) current_replicas: Family<VariantLabels, Gauge>,
    pub(crate) desired_ratio: Family<VariantLabels, FloatGauge>,
    pub(crate) scaling_total: Family<ScalingLabels, Counter>,
    pub(crate) samples_rejected: Family<RejectedLabels, Counter>,
    pub(crate) backend_duration: Family<BackendLabels, Histogram>,
    pub(crate) backend_errors: Family<BackendErrorLabels, Counter>,
    pub(crate) sample_age: Family<ModelLabels, FloatGauge>,
    pub(crate) fetch_cycles: Family<ResultLabels, Counter>,
    pub(crate) fetch_cycle_duration: Gauge<f64, AtomicU64>,
    pub(crate) fetch_gap: Gauge<f64, AtomicU64>,
    pub(crate) connections_open: Family<PortLabels, Gauge>,
    pub(crate) connections_closed: Family<ConnectionLabels, Counter>,
    pub(crate) models_aging: Family<ModelLabels, Gauge>,
    pub(crate) http_requests: Family<RouteLabels, Counter>,
    pub(crate) http_duration: Family<RouteOnly, Histogram>,
    pub(crate) decisions_without_metrics: Family<ModelLabels, Counter>,
    pub(crate) tolerance_holds: Family<ScalingLabels, Counter>,
    pub(crate) keda_connections_closed: Family<ConnectionCloseLabels, Counter>,
    pub(crate) keda_open_connections: Gauge,
    /// Model decisions published, by the analysis that made them.
    pub(crate) analyzer_decisions: Family<AnalyzerLabels, Counter>,
    /// KEDA external scaler calls by method and gRPC code.
    pub(crate) keda_calls: Family<KedaCallLabels, Counter>,
    /// Authentication (TokenReview) and authorization (SubjectAccessReview) cache lookups.
    pub(crate) auth_cache: Family<AuthCacheLabels, Counter>,
    /// `analyzerName: slo` decisions taken by a fallback, by missing signal.
    pub(crate) slo_fallbacks: Family<SloFallbackLabels, Counter>,
    /// The `slo` analysis' quantities per model.
    pub(crate) slo: SloGauges,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AuthCacheLabels {
    /// `token` (TokenReview answers) or `access_review` (SubjectAccessReview answers).
    pub(crate) cache: String,
    /// `hit` (answered from the cache) or `miss` (the lookup ran a review).
    pub(crate) result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KedaCallLabels {
    /// The gRPC method: IsActive, StreamIsActive, GetMetricSpec, GetMetrics.
    pub(crate) method: String,
    /// The gRPC status code of the answer (`Ok`, `NotFound`, `Unavailable`, ...).
    pub(crate) code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SloFallbackLabels {
    pub(crate) namespace: String,
    pub(crate) model_id: String,
    /// The signal the `slo` analysis missed.
    pub(crate) missing: String,
    /// The analysis that decided instead.
    pub(crate) analyzer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AnalyzerLabels {
    pub(crate) namespace: String,
    pub(crate) model_id: String,
    pub(crate) analyzer: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// Creates the families and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let t = Telemetry {
            desired_replicas: Family::default(),
            current_replicas: Family::default(),
            desired_ratio: Family::default(),
            scaling_total: Family::default(),
            samples_rejected: Family::default(),
            backend_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            backend_errors: Family::default(),
            sample_age: Family::default(),
            fetch_cycles: Family::default(),
            fetch_cycle_duration: Gauge::default(),
            fetch_gap: Gauge::default(),
            connections_open: Family::default(),
            connections_closed: Family::default(),
            models_aging: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
            decisions_without_metrics: Family::default(),
            tolerance_holds: Family::default(),
            keda_connections_closed: Family::default(),
            keda_open_connections: Gauge::default(),
            analyzer_decisions: Family::default(),
            keda_calls: Family::default(),
            auth_cache: Family::default(),
            slo_fallbacks: Family::default(),
            slo: SloGauges::default(),
        };
        let r = registry;
        r.register(
            "wva_desired_replicas",
            "Desired replicas per variant",
            t.desired_replicas.clone(),
        );
        r.register(
            "wva_current_replicas",
            "Ready replicas per variant",
            t.current_replicas.clone(),
        );
        r.register(
            "wva_desired_ratio",
            "Desired over ready replicas per variant",
            t.desired_ratio.clone(),
        );
        r.register(
            "wva_replica_scaling",
            "Scaling decisions by direction and reason",
            t.scaling_total.clone(),
        );
        r.register(
            "wva_metrics_samples_rejected",
            "Samples rejected as NaN, infinite or out of range",
            t.samples_rejected.clone(),
        );
        r.register(
            "wva_backend_request_duration_seconds",
            "Latency of metrics backend requests",
            t.backend_duration.clone(),
        );
        r.register(
            "wva_backend_errors",
            "Failed metrics backend requests",
            t.backend_errors.clone(),
        );
        r.register(
            "wva_metrics_sample_age_seconds",
            "Age of the newest sample per model",
            t.sample_age.clone(),
        );
        r.register(
            "wva_fetch_cycles",
            "Background fetch cycles by result (ok, error)",
            t.fetch_cycles.clone(),
        );
        r.register(
            "wva_fetch_cycle_duration_seconds",
            "Duration of the last background fetch cycle",
            t.fetch_cycle_duration.clone(),
        );
        r.register(
            "wva_fetch_gap_seconds",
            "Gap between the starts of the last and the next scheduled fetch cycle",
            t.fetch_gap.clone(),
        );
        r.register(
            "wva_connections_open",
            "Open client connections per port",
            t.connections_open.clone(),
        );
        r.register(
            "wva_connections_closed_by_server",
            "Connections the server closed or refused, by port and reason",
            t.connections_closed.clone(),
        );
        r.register(
            "wva_model_metrics_aging",
            "1 while the newest sample of a model is older than --metrics-fresh-within (still used), else 0",
            t.models_aging.clone(),
        );
        r.register(
            "wva_http_requests",
            "HTTP requests by route and status code",
            t.http_requests.clone(),
        );
        r.register(
            "wva_http_request_duration_seconds",
            "HTTP request latency by route",
            t.http_duration.clone(),
        );
        r.register(
            "wva_decisions_without_metrics",
            "Decisions that held replicas because no replica reported metrics",
            t.decisions_without_metrics.clone(),
        );
        r.register(
            "wva_tolerance_holds",
            "Decision cycles in which a variant held because every move its HPA acts on (outside the tolerance band) was unsafe or out of bounds",
            t.tolerance_holds.clone(),
        );
        r.register(
            "wva_keda_connections_closed",
            "KEDA port connections closed by the server, by reason (max_connections, handshake_timeout, header_timeout, idle_timeout)",
            t.keda_connections_closed.clone(),
        );
        r.register(
            "wva_keda_open_connections",
            "Open connections on the KEDA port",
            t.keda_open_connections.clone(),
        );
        r.register(
            "wva_analyzer_decisions",
            "Model decisions published by the background decision loop, by analyzer (saturation-v1: percentage based, saturation-v2: token based, slo: sized to the latency objective)",
            t.analyzer_decisions.clone(),
        );
        r.register(
            "wva_keda_requests",
            "KEDA external scaler calls by method and gRPC code (StreamIsActive: the opening of the stream)",
            t.keda_calls.clone(),
        );
        r.register(
            "wva_auth_cache_lookups",
            "Lookups of the authentication (cache=token) and authorization (cache=access_review) caches by result: hit, or miss (a review was sent)",
            t.auth_cache.clone(),
        );
        r.register(
            "wva_slo_fallback_decisions",
            "Decisions of models with analyzerName slo taken by another analysis because a signal the slo analysis needs is missing, by missing signal and deciding analyzer",
            t.slo_fallbacks.clone(),
        );
        t.slo.register(r);
        r.register_collector(Box::new(ProcessCollector));
        t
    }

    /// A registry and telemetry not shared with anything, for tests and tools.
    pub fn standalone() -> (Registry, Self) {
        let mut registry = Registry::default();
        let t = Telemetry::new(&mut registry);
        (registry, t)
    }

    /// Records one background fetch cycle: whether it succeeded, how long
    /// it took and the gap until the next one.
    pub(crate) fn record_cycle(&self, ok: bool, duration: Duration, next_gap: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.fetch_cycles
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        self.fetch_cycle_duration.set(duration.as_secs_f64());
        self.fetch_gap.set(next_gap.as_secs_f64());
    }

    /// Counts one rejected sample and logs it.
    pub(crate) fn reject_sample(
        &self,
        backend: &str,
        signal: &str,
        reason: &str,
        pod: &str,
        value: f64,
    ) {
        tracing::warn!(backend, signal, reason, pod, value, "sample rejected");
        self.samples_rejected
            .get_or_create(&RejectedLabels {
                backend: backend.to_owned(),
                signal: signal.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// `process_resident_memory_bytes` and `process_open_fds`, read from
/// `/proc/self` at each scrape (the names every Prometheus client library
/// uses, so that dashboards for other processes apply). Where `/proc` is
/// missing (not Linux) the metrics are left out rather than reported as 0.
#[derive(Debug)]
struct ProcessCollector;

impl ProcessCollector {
    fn resident_bytes() -> Option<i64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: i64 = line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    fn open_fds() -> Option<i64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        Some(entries.count() as i64)
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let samples = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Self::resident_bytes(),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                Self::open_fds(),
            ),
        ];
        for (name, help, value) in samples {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// Sets up structured logging: `RUST_LOG` style filter, JSON when asked.
///
/// A log line that cannot be written (stderr is a pipe whose reader went
/// away, as with `serve 2>&1 | head`) is dropped: tracing-subscriber's
/// default reports such a failure with `eprintln!`, which panics on a
/// closed stderr, and the panic killed whatever task was logging (the
/// signal handler among them, so SIGTERM was never acted on).
pub fn init_tracing(json: bool) {
    // RUST_LOG first; else upstream WVA's LOG_LEVEL, which its chart sets.
    let (filter, unknown_level) = match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(_) => {
            let (level, unknown) = upstream_log_level(std::env::var("LOG_LEVEL").ok().as_deref());
            (tracing_subscriber::EnvFilter::new(level), unknown)
        }
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless, so its error is ignored.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Some(value) = unknown_level {
        tracing::warn!(log_level = %value, "LOG_LEVEL is not one of debug, info, warn, error: logging at info (set RUST_LOG for finer filters)");
    }
}

/// The log level when `RUST_LOG` is unset: upstream WVA's `LOG_LEVEL`
/// (`debug`, `info`, `warn`, `error`, any case; its Helm chart sets it),
/// else `info`. A value upstream does not know is `info` there too; it is
/// returned as the second element so that it can be warned about.
pub fn upstream_log_level(value: Option<&str>) -> (&'static str, Option<String>) {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return ("info", None);
    };
    match value.to_ascii_lowercase().as_str() {
        "debug" => ("debug", None),
        "info" => ("info", None),
        "warn" => ("warn", None),
        "error" => ("error", None),
        _ => ("info", Some(value.to_owned())),
    }
}

/// Writes a line to stdout, ignoring a failure: a reader that went away
/// (`demo | head`) must not panic the task that prints, as `println!`
/// would. For the progress lines of `demo` and the results of short
/// commands.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n"));
    let _ = out.flush();
}

/// Writes a line to stderr, ignoring a failure (see [`print_line`]).
pub fn eprint_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// `println!` that never panics: [`print_line`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::telemetry::print_line(format_args!($($arg)*))
    };
}
