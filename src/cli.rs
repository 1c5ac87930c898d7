//! Command-line interface: `serve`'s flags in groups. The Prometheus
//! group, upstream WVA's settings and the value parsers live beside this
//! file in `src/cli/`.

mod auth;
mod prometheus;
mod upstream;
mod values;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::fatal::CommandError;

pub(crate) use auth::{AuthenticationArgs, AuthorizationArgs};
pub(crate) use prometheus::PrometheusArgs;
pub(crate) use upstream::UpstreamArgs;
pub(crate) use upstream::DEFAULT_CONFIG_FILE;
#[cfg(feature = "emulator")]
pub(crate) use values::parse_request_rate;
pub(crate) use values::{parse_bool, parse_duration, BoolFlag};
pub(crate) use values::{
    parse_controller_instance, parse_hpa_tolerance, parse_kube_api_qps, parse_positive_count,
    parse_positive_duration, parse_scale_to_zero,
};

/// Where variants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InventorySource {
    /// Watch the cluster.
    Kube,
    /// Read a multi-document YAML file of Kubernetes objects.
    File(PathBuf),
}

impl std::str::FromStr for InventorySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kube" => Ok(InventorySource::Kube),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(InventorySource::File(PathBuf::from(p))),
                _ => Err(format!(
                    "{s:?} is not an inventory source: use `kube` or `file:PATH`"
                )),
            },
        }
    }
}

/// A metrics API group this server can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiGroupName {
    External,
    Custom,
}

impl ApiGroupName {
    /// The served groups from a list of names (an empty list serves none,
    /// which `serve` refuses).
    pub fn served(names: &[ApiGroupName]) -> crate::api::discovery::ServedGroups {
        crate::api::discovery::ServedGroups {
            external: names.contains(&ApiGroupName::External),
            custom: names.contains(&ApiGroupName::Custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// Query Prometheus (batched PromQL, cached).
    Prometheus,
    /// Scrape every ready pod's /metrics directly.
    Scrape,
}

/// The flags of `serve`, in groups; `--help` shows each group under its
/// heading, in this order. A flag with an environment form names it in
/// `env`: a flag on the command line wins over its variable, the variable
/// over the default. Field names are the flags' ids (`--tls-cert-file` is
/// `tls.tls_cert_file`), so that ids stay unique across groups.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub(crate) authentication: AuthenticationArgs,
    #[command(flatten)]
    pub(crate) authorization: AuthorizationArgs,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub decisions: DecisionArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub(crate) scrape: ScrapeArgs,
    #[command(flatten)]
    pub keda: KedaArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub(crate) kube_api: KubeApiArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
}

/// The help headings of `serve`, in order (tests check `--help` against it).
pub const SERVE_HELP_HEADINGS: &[&str] = &[
    "Serving",
    "TLS",
    "Authentication",
    "Authorization",
    "Inventory",
    "Decisions",
    "Metrics backend and freshness",
    "Prometheus backend",
    "Scrape backend",
    "KEDA external scaler",
    "Status write-back and leader election",
    "Connection and request limits",
    "Kubernetes API client",
    "Upstream WVA settings",
];

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Serving")]
pub struct ListenArgs {
    /// Port of the HTTPS API.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Address to listen on (127.0.0.1 when --insecure-disable-auth is given).
    #[arg(
        long,
        default_value = "0.0.0.0",
        default_value_if("insecure_disable_auth", "true", "127.0.0.1")
    )]
    pub bind_address: IpAddr,
    /// Which metrics API groups to serve: external (external.metrics.k8s.io/v1beta1) and custom (custom.metrics.k8s.io v1beta1 and v1beta2, Object metrics on the scale target). A group another component owns in the cluster can be left out.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "external,custom",
        env = "WVA_API_GROUPS"
    )]
    pub api_groups: Vec<ApiGroupName>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// PEM serving certificate (chain), reloaded when it changes. Without it a self-signed one is generated.
    #[arg(long, value_name = "FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Inventory")]
pub struct InventoryArgs {
    /// Where variants come from: `kube` or `file:PATH`.
    #[arg(long, default_value = "kube")]
    pub(crate) inventory: InventorySource,
    /// The server's own namespace: where the thresholds ConfigMap lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "wva-system")]
    pub(crate) namespace: String,
    /// With --inventory kube: serve variants of these namespaces only (comma list; empty = all).
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Serve only VariantAutoscalings (and annotated HPAs/ScaledObjects) labelled
    /// `wva.llmd.ai/controller-instance` with this value; items carry `controller_instance`.
    /// Unset: all are served. Upstream WVA's name for it is CONTROLLER_INSTANCE.
    #[arg(long, env = "CONTROLLER_INSTANCE", value_parser = parse_controller_instance)]
    pub(crate) controller_instance: Option<String>,
    /// Watch Nodes and Pods (only their GPU fields) so that models whose
    /// thresholds set `enableLimiter: true` (V2) have their scale-ups capped by
    /// the accelerators free per type. Needs list/watch on nodes. `--inventory kube` only.
    #[arg(long, env = "WVA_ACCELERATOR_INVENTORY")]
    pub accelerator_inventory: bool,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Decisions")]
pub struct DecisionArgs {
    /// Saturation thresholds: YAML in the shape of the wva-saturation-scaling-config ConfigMap data
    /// (or the whole ConfigMap); or a directory of ConfigMap and Namespace files, where a ConfigMap in an
    /// opted-in namespace replaces the one in --namespace for that namespace. Invalid: exit code 2. With --inventory file: a file is reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub(crate) saturation_config: Option<PathBuf>,
    /// Scale to zero: YAML in the shape of the wva-model-scale-to-zero-config ConfigMap data (or the whole
    /// ConfigMap): a `default` entry and per-model entries with `model_id`, optional `namespace`,
    /// `enable_scale_to_zero` and `retention_period`. Models no entry decides for follow --scale-to-zero.
    /// Invalid: exit code 2. With --inventory kube the ConfigMap in --namespace replaces it while it exists.
    #[arg(long, value_name = "FILE")]
    pub(crate) scale_to_zero_config: Option<PathBuf>,
    /// Latency objectives for `analyzerName: slo`: YAML in the shape of upstream WVA's service-classes-config
    /// ConfigMap data (or the whole ConfigMap): one key per class, each `{name, priority, data: [{model,
    /// slo-ttft, slo-tpot}]}` in milliseconds, `model: default/default` as the fallback. Invalid: exit code 2.
    /// With --inventory kube the ConfigMap service-classes-config in --namespace replaces it while it exists.
    #[arg(long, value_name = "FILE")]
    pub(crate) service_classes_config: Option<PathBuf>,
    /// Scale to zero for models no entry of the scale-to-zero configuration decides for (upstream WVA's
    /// WVA_SCALE_TO_ZERO): true or false.
    #[arg(
        long,
        env = "WVA_SCALE_TO_ZERO",
        bool_flag = false,
        value_parser = parse_scale_to_zero
    )]
    pub scale_to_zero: bool,
    /// The cluster's `--horizontal-pod-autoscaler-tolerance`: a move whose
    /// usage ratio is within 1 ± this is ignored by the HPA, so such moves
    /// are widened to the smallest safe one outside it, or held. An HPA's
    /// `behavior.scaleUp/scaleDown.tolerance` overrides it for its target.
    #[arg(long, default_value = "0.1", value_parser = parse_hpa_tolerance)]
    pub(crate) hpa_tolerance: f64,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Metrics backend and freshness")]
pub struct MetricsArgs {
    /// Where vLLM metrics come from.
    #[arg(long, value_enum, default_value_t = BackendKind::Prometheus)]
    pub(crate) metrics_backend: BackendKind,
    /// Samples up to this age are fresh; older ones still decide, but the model is reported as aging (log, wva_model_metrics_aging).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD", default_value = "1m", value_parser = parse_duration)]
    pub(crate) metrics_fresh_within: Duration,
    /// A replica whose newest sample is older no longer steers decisions; a model with no younger sample (or whose backend has not been reached for longer) is answered 503 naming its age.
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD", default_value = "2m", value_parser = parse_duration)]
    pub(crate) metrics_stale_after: Duration,
    /// A replica's cached sample older than this is dropped from memory (the model stays 503 until new data arrives).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD", default_value = "5m", value_parser = parse_duration)]
    pub(crate) metrics_unavailable_after: Duration,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Scrape backend")]
pub(crate) struct ScrapeArgs {
    /// Shortest gap between two scrape cycles over every ready pod; the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub(crate) scrape_interval: Duration,
    /// Timeout of one scrape.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub(crate) scrape_timeout: Duration,
    /// The llm-d endpoint picker's /metrics URL, scraped every cycle with --metrics-backend scrape for its
    /// flow-control queues (inference_extension_flow_control_queue_size/_bytes): scale from zero and V2's
    /// scheduler queue. With Prometheus they are queried there instead.
    #[arg(long, value_name = "URL")]
    pub(crate) epp_metrics_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "KEDA external scaler")]
pub struct KedaArgs {
    /// Port of the KEDA external-scaler gRPC service (off unless set).
    #[arg(long)]
    pub keda_port: Option<u16>,
    /// Address of the KEDA gRPC service (default: --bind-address).
    #[arg(long)]
    pub(crate) keda_bind_address: Option<IpAddr>,
    /// Require KEDA to present a client certificate signed by this CA (its tlsClientCert).
    /// Required with --keda-port unless --keda-insecure-disable-client-auth is given.
    #[arg(long, value_name = "FILE")]
    pub(crate) keda_client_ca_file: Option<PathBuf>,
    /// Accept only KEDA client certificates whose common name, or one of whose DNS or URI
    /// subject alternative names, is in this comma list (empty: any certificate the
    /// --keda-client-ca-file CA signed).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAMES",
        requires = "keda_client_ca_file"
    )]
    pub(crate) keda_client_allowed_names: Vec<String>,
    /// Serve the KEDA gRPC service without TLS (only behind a TLS-terminating proxy or mesh,
    /// which then authenticates clients; needs --keda-insecure-disable-client-auth).
    #[arg(long, conflicts_with = "keda_client_ca_file")]
    pub(crate) keda_plaintext: bool,
    /// Serve the KEDA gRPC service to any client, without client certificates: every
    /// client that reaches the port can read every namespace's decisions.
    #[arg(long)]
    pub(crate) keda_insecure_disable_client_auth: bool,
    /// At most this many open StreamIsActive streams per KEDA connection; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 512)]
    pub(crate) keda_max_streams_per_connection: u32,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Status write-back and leader election")]
pub struct StatusArgs {
    /// With --inventory kube: write each VariantAutoscaling's decision and conditions to its status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub update_status: bool,
    /// At most one status write per VariantAutoscaling per this interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) status_min_interval: Duration,
    /// With --inventory kube: write status and Events only while holding a coordination.k8s.io
    /// Lease, so that several replicas have one writer (every replica keeps answering the API).
    /// Default: true with --inventory kube and --update-status (without status writes there is nothing to lead).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
    /// How long a Lease holds without renewal before another replica may take it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The leader stops writing when it could not renew for this long (less than the lease duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) leader_elect_renew_deadline: Duration,
    /// Gap between two attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(crate) leader_elect_retry_period: Duration,
    /// Name of the Lease.
    #[arg(long, default_value = "wva-metrics-server")]
    pub(crate) leader_elect_resource_name: String,
    /// Namespace of the Lease (default: --namespace).
    #[arg(long)]
    pub(crate) leader_elect_resource_namespace: Option<String>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Connection and request limits")]
pub struct LimitsArgs {
    /// Requests beyond this many in flight are answered 503 at once.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive_count)]
    pub(crate) max_concurrent_requests: usize,
    /// A client must send a complete request head within this time: after the TLS handshake (HTTP/1 and HTTP/2 alike), and for each later HTTP/1 request once it starts.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub(crate) header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (kube-apiserver closes idle connections after 90s too).
    #[arg(long, default_value = "90s", value_parser = parse_positive_duration)]
    pub(crate) idle_timeout: Duration,
    /// Open connections beyond this many are closed at once (logged at most once per second, counted in /metrics).
    #[arg(long, default_value_t = 4096, value_parser = parse_positive_count)]
    pub(crate) max_connections: usize,
    /// A request that takes longer is answered 504.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub(crate) request_timeout: Duration,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Kubernetes API client")]
pub(crate) struct KubeApiArgs {
    /// Calls per second to the API server, sustained (watches not counted). Status writes, Events and list calls share it; TokenReviews and SubjectAccessReviews have a budget of their own of the same size.
    #[arg(long, default_value = "20", value_parser = parse_kube_api_qps)]
    pub(crate) kube_api_qps: f64,
    /// Calls to the API server allowed at once above --kube-api-qps before calls wait.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) kube_api_burst: u32,
}

#[derive(Debug, Args, Clone)]
pub struct CertsArgs {
    /// Namespace of the Service.
    #[arg(long)]
    pub namespace: String,
    /// Name of the Service.
    #[arg(long)]
    pub service: String,
    /// Directory to write ca.crt, ca.key, tls.crt, tls.key and apiservice.yaml into.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace files that exist in --out (by default `certs` refuses: a new CA no longer matches the Secret and caBundle made from the old one).
    #[arg(long)]
    pub force: bool,
    /// Also write a CA for KEDA's client certificates and one client certificate
    /// (keda-client-ca.crt, keda-client.crt, keda-client.key) for the KEDA port's mTLS.
    #[arg(long)]
    pub keda_client: bool,
}

impl MetricsArgs {
    /// The age thresholds of samples.
    pub fn freshness(&self) -> crate::collector::FreshnessPolicy {
        crate::collector::FreshnessPolicy {
            fresh: self.metrics_fresh_within,
            stale: self.metrics_stale_after,
            unavailable: self.metrics_unavailable_after,
        }
    }

    /// [`Self::freshness`], refused unless fresh <= stale <= unavailable.
    pub(crate) fn checked_freshness(
        &self,
    ) -> Result<crate::collector::FreshnessPolicy, CommandError> {
        let freshness = self.freshness();
        freshness.validate().map_err(CommandError::invalid)?;
        Ok(freshness)
    }
}

impl TlsArgs {
    /// The serving certificate and key files, both or neither (a
    /// self-signed certificate); one without the other is refused (the
    /// config file can set one alone, which clap's `requires` does not see).
    pub fn files(&self) -> Result<Option<(&Path, &Path)>, CommandError> {
        match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(CommandError::invalid(
                "--tls-cert-file needs --tls-private-key-file (give both, or neither for a self-signed certificate)",
            )),
            (None, Some(_)) => Err(CommandError::invalid(
                "--tls-private-key-file needs --tls-cert-file (give both, or neither for a self-signed certificate)",
            )),
        }
    }
}

impl KedaArgs {
    /// How the KEDA port authenticates its clients; a port that would
    /// serve anyone is refused unless explicitly asked for.
    pub(crate) fn client_auth(
        &self,
    ) -> Result<crate::keda::KedaClientAuth, crate::keda::KedaConfigError> {
        crate::keda::client_auth(
            self.keda_client_ca_file.as_deref(),
            self.keda_plaintext,
            self.keda_insecure_disable_client_auth,
        )
    }

    /// The KEDA port's limits: its own stream bound, and the connection
    /// and request limits it shares with the HTTPS port.
    pub(crate) fn limits(&self, shared: &LimitsArgs) -> crate::keda::KedaLimits {
        crate::keda::KedaLimits {
            header_read_timeout: shared.header_read_timeout,
            idle_timeout: shared.idle_timeout,
            max_connections: shared.max_connections,
            max_streams_per_connection: self.keda_max_streams_per_connection,
            max_concurrent_requests: shared.max_concurrent_requests,
            request_timeout: shared.request_timeout,
            ..crate::keda::KedaLimits::default()
        }
    }
}

impl StatusArgs {
    /// The Lease election's settings (the Lease in `own_namespace` unless
    /// --leader-elect-resource-namespace says otherwise), checked.
    pub(crate) fn leader_config(
        &self,
        own_namespace: &str,
    ) -> Result<crate::leader::LeaderConfig, crate::leader::LeaderConfigError> {
        let config = crate::leader::LeaderConfig {
            lease_name: self.leader_elect_resource_name.clone(),
            namespace: self
                .leader_elect_resource_namespace
                .clone()
                .unwrap_or_else(|| own_namespace.to_owned()),
            identity: crate::leader::default_identity(),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        };
        config.validate()?;
        Ok(config)
    }
}

impl KubeApiArgs {
    /// The client-side budget of each kube client.
    pub(crate) fn rate_limit(&self) -> crate::kube_client::RateLimitSettings {
        crate::kube_client::RateLimitSettings {
            qps: self.kube_api_qps,
            burst: self.kube_api_burst,
        }
    }
}

impl LimitsArgs {
    /// The request-path limits (concurrency, timeout).
    pub fn stack(&self) -> crate::server::StackConfig {
        crate::server::StackConfig {
            max_concurrent_requests: self.max_concurrent_requests,
            request_timeout: self.request_timeout,
        }
    }

    /// The connection limits of the HTTPS port.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        crate::server::ServerLimits {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            ..Default::default()
        }
    }
}
