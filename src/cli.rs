//! Command-line interface.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Where variants come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventorySource {
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
pub enum BackendKind {
    /// Query Prometheus (batched PromQL, cached).
    Prometheus,
    /// Scrape every ready pod's /metrics directly.
    Scrape,
}

/// Parses durations such as `2s`, `500ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (like 2s, 500ms, 1m): {e}"))
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
    pub authentication: AuthenticationArgs,
    #[command(flatten)]
    pub authorization: AuthorizationArgs,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub decisions: DecisionArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub scrape: ScrapeArgs,
    #[command(flatten)]
    pub keda: KedaArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub kube_api: KubeApiArgs,
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
#[command(next_help_heading = "Authentication")]
pub struct AuthenticationArgs {
    /// CA bundle that signs the front proxy's (aggregator's) client certificate.
    #[arg(long, value_name = "FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Common names allowed as front proxy (comma list; empty = any signed by the CA).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_allowed_names: Vec<String>,
    /// Headers that carry the user name.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub requestheader_username_headers: Vec<String>,
    /// Headers that carry the user's UID (empty: none).
    #[arg(long, value_delimiter = ',')]
    pub requestheader_uid_headers: Vec<String>,
    /// Headers that carry the groups.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub requestheader_group_headers: Vec<String>,
    /// Header prefixes that carry extra user information.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// CA bundle for direct client certificates (user = CN, groups = O).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Do not read kube-system/extension-apiserver-authentication when no requestheader flag is given.
    #[arg(long)]
    pub authentication_skip_lookup: bool,
    /// How long a TokenReview answer (accepted or rejected token) is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// Standalone only (--inventory file:): serve everyone without authentication or authorization.
    #[arg(long)]
    pub insecure_disable_auth: bool,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Authorization")]
pub struct AuthorizationArgs {
    /// Paths served without authentication or authorization.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/livez,/readyz")]
    pub authorization_always_allow_paths: Vec<String>,
    /// How long an allowing SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Inventory")]
pub struct InventoryArgs {
    /// Where variants come from: `kube` or `file:PATH`.
    #[arg(long, default_value = "kube")]
    pub inventory: InventorySource,
    /// The server's own namespace: where the thresholds ConfigMap lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "wva-system")]
    pub namespace: String,
    /// With --inventory kube: serve variants of these namespaces only (comma list; empty = all).
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Serve only VariantAutoscalings (and annotated HPAs/ScaledObjects) labelled
    /// `wva.llmd.ai/controller-instance` with this value; items carry `controller_instance`.
    /// Unset: all are served. Upstream WVA's name for it is CONTROLLER_INSTANCE.
    #[arg(long, env = "CONTROLLER_INSTANCE", value_parser = parse_controller_instance)]
    pub controller_instance: Option<String>,
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
    pub saturation_config: Option<PathBuf>,
    /// Scale to zero: YAML in the shape of the wva-model-scale-to-zero-config ConfigMap data (or the whole
    /// ConfigMap): a `default` entry and per-model entries with `model_id`, optional `namespace`,
    /// `enable_scale_to_zero` and `retention_period`. Models no entry decides for follow --scale-to-zero.
    /// Invalid: exit code 2. With --inventory kube the ConfigMap in --namespace replaces it while it exists.
    #[arg(long, value_name = "FILE")]
    pub scale_to_zero_config: Option<PathBuf>,
    /// Latency objectives for `analyzerName: slo`: YAML in the shape of upstream WVA's service-classes-config
    /// ConfigMap data (or the whole ConfigMap): one key per class, each `{name, priority, data: [{model,
    /// slo-ttft, slo-tpot}]}` in milliseconds, `model: default/default` as the fallback. Invalid: exit code 2.
    /// With --inventory kube the ConfigMap service-classes-config in --namespace replaces it while it exists.
    #[arg(long, value_name = "FILE")]
    pub service_classes_config: Option<PathBuf>,
    /// Scale to zero for models no entry of the scale-to-zero configuration decides for (upstream WVA's
    /// WVA_SCALE_TO_ZERO): true or false.
    #[arg(
        long,
        env = "WVA_SCALE_TO_ZERO",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        require_equals = true,
        action = clap::ArgAction::Set,
        default_missing_value = "true",
        value_parser = parse_scale_to_zero
    )]
    pub scale_to_zero: bool,
    /// The cluster's `--horizontal-pod-autoscaler-tolerance`: a move whose
    /// usage ratio is within 1 ± this is ignored by the HPA, so such moves
    /// are widened to the smallest safe one outside it, or held. An HPA's
    /// `behavior.scaleUp/scaleDown.tolerance` overrides it for its target.
    #[arg(long, default_value = "0.1", value_parser = parse_hpa_tolerance)]
    pub hpa_tolerance: f64,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Metrics backend and freshness")]
pub struct MetricsArgs {
    /// Where vLLM metrics come from.
    #[arg(long, value_enum, default_value_t = BackendKind::Prometheus)]
    pub metrics_backend: BackendKind,
    /// Samples up to this age are fresh; older ones still decide, but the model is reported as aging (log, wva_model_metrics_aging).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD", default_value = "1m", value_parser = parse_duration)]
    pub metrics_fresh_within: Duration,
    /// A replica whose newest sample is older no longer steers decisions; a model with no younger sample (or whose backend has not been reached for longer) is answered 503 naming its age.
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD", default_value = "2m", value_parser = parse_duration)]
    pub metrics_stale_after: Duration,
    /// A replica's cached sample older than this is dropped from memory (the model stays 503 until new data arrives).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD", default_value = "5m", value_parser = parse_duration)]
    pub metrics_unavailable_after: Duration,
}

/// The Prometheus backend's settings. Every one has the environment form
/// the WVA seeds (and upstream WVA) use; a few upstream names are hidden
/// aliases that our names win over.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Prometheus backend")]
pub struct PrometheusArgs {
    /// Prometheus (or Thanos querier, Mimir, VictoriaMetrics) API base URL. Required with --metrics-backend prometheus.
    #[arg(long, env = "PROMETHEUS_URL", value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Upstream WVA's name for --prometheus-url (PROMETHEUS_BASE_URL); --prometheus-url/PROMETHEUS_URL win.
    #[arg(long, env = "PROMETHEUS_BASE_URL", value_name = "URL", hide = true)]
    pub prometheus_base_url: Option<String>,
    /// PEM CA bundle that signs the store's certificate (https).
    #[arg(long, env = "PROMETHEUS_CA_CERT_PATH", value_name = "FILE")]
    pub prometheus_ca_cert: Option<PathBuf>,
    /// File holding a bearer token sent as `Authorization: Bearer`, re-read at every query (rotating service-account tokens).
    #[arg(long, env = "PROMETHEUS_BEARER_TOKEN_FILE", value_name = "FILE")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Upstream WVA's inline token (PROMETHEUS_BEARER_TOKEN): refused, so that a manifest copied from upstream
    /// does not run without the credential it meant; the token belongs in a Secret file (--prometheus-bearer-token-file).
    #[arg(
        long,
        env = "PROMETHEUS_BEARER_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub prometheus_bearer_token: Option<String>,
    /// Upstream WVA's TLS server name override (PROMETHEUS_SERVER_NAME): refused, not supported.
    #[arg(long, env = "PROMETHEUS_SERVER_NAME", hide = true)]
    pub prometheus_server_name: Option<String>,
    /// Upstream WVA's name for --prometheus-bearer-token-file (PROMETHEUS_TOKEN_PATH), which wins.
    #[arg(long, env = "PROMETHEUS_TOKEN_PATH", value_name = "FILE", hide = true)]
    pub prometheus_token_path: Option<PathBuf>,
    /// Accept any certificate from the store (upstream WVA's PROMETHEUS_TLS_INSECURE_SKIP_VERIFY); logged loudly.
    #[arg(
        long,
        env = "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        require_equals = true,
        action = clap::ArgAction::Set,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub prometheus_tls_insecure_skip_verify: bool,
    /// Bound of one fetch cycle's queries, retries included.
    #[arg(long, env = "PROMETHEUS_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub prometheus_query_timeout: Duration,
    /// Shortest gap between two Prometheus fetch cycles (default 1s); the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, env = "METRICS_FETCH_INTERVAL", value_parser = parse_positive_duration)]
    pub metrics_fetch_interval: Option<Duration>,
    /// Upstream WVA's name for --metrics-fetch-interval, which wins.
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL", value_parser = parse_positive_duration, hide = true)]
    pub prometheus_metrics_cache_fetch_interval: Option<Duration>,
    /// No effect (requests never refresh metrics on the network); accepted
    /// with a warning so that existing manifests keep starting.
    #[arg(long, env = "METRICS_CACHE_TTL", value_parser = parse_positive_duration, hide = true)]
    pub metrics_cache_ttl: Option<Duration>,
    /// Upstream WVA's name for --metrics-cache-ttl (no effect either).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_TTL", value_parser = parse_positive_duration, hide = true)]
    pub prometheus_metrics_cache_ttl: Option<Duration>,
    /// Only `true` is accepted: metrics are fetched in the background only, so that no request waits on Prometheus.
    #[arg(
        long,
        env = "METRICS_BACKGROUND_FETCH",
        value_name = "BOOL",
        default_value = "true",
        require_equals = true,
        action = clap::ArgAction::Set,
        value_parser = parse_bool,
        hide = true
    )]
    pub metrics_background_fetch: bool,
    /// Extra header sent to the metrics store with every query, repeatable: `Name: value`, or
    /// `Name=@/path/file` to read the value from a file (a mounted Secret) at every query.
    /// Adds to --prometheus-headers.
    #[arg(long = "prometheus-header", value_name = "HEADER")]
    pub prometheus_header: Vec<String>,
    /// Extra headers, one per line, in the form of --prometheus-header (the environment form; both add up).
    #[arg(long, env = "PROMETHEUS_HEADERS", value_name = "LINES")]
    pub prometheus_headers: Option<String>,
    /// Tenant (org) id sent in --prometheus-tenant-header.
    #[arg(long, env = "PROMETHEUS_TENANT")]
    pub prometheus_tenant: Option<String>,
    /// Header that carries the tenant: X-Scope-OrgID for Mimir and Cortex; THANOS-TENANT for Thanos.
    #[arg(long, env = "PROMETHEUS_TENANT_HEADER", default_value = crate::collector::prometheus::config::DEFAULT_TENANT_HEADER)]
    pub prometheus_tenant_header: String,
    /// User of HTTP basic auth to the metrics store.
    #[arg(long, env = "PROMETHEUS_BASIC_AUTH_USERNAME")]
    pub prometheus_basic_auth_username: Option<String>,
    /// File holding the basic-auth password, re-read at every query.
    #[arg(long, env = "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", value_name = "FILE")]
    pub prometheus_basic_auth_password_file: Option<PathBuf>,
    /// PEM client certificate for mTLS to the metrics store.
    #[arg(long, env = "PROMETHEUS_CLIENT_CERT_PATH", value_name = "FILE")]
    pub prometheus_client_cert: Option<PathBuf>,
    /// PEM private key of --prometheus-client-cert (unencrypted).
    #[arg(long, env = "PROMETHEUS_CLIENT_KEY_PATH", value_name = "FILE")]
    pub prometheus_client_key: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Scrape backend")]
pub struct ScrapeArgs {
    /// Shortest gap between two scrape cycles over every ready pod; the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub scrape_interval: Duration,
    /// Timeout of one scrape.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub scrape_timeout: Duration,
    /// The llm-d endpoint picker's /metrics URL, scraped every cycle with --metrics-backend scrape for its
    /// flow-control queues (inference_extension_flow_control_queue_size/_bytes): scale from zero and V2's
    /// scheduler queue. With Prometheus they are queried there instead.
    #[arg(long, value_name = "URL")]
    pub epp_metrics_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "KEDA external scaler")]
pub struct KedaArgs {
    /// Port of the KEDA external-scaler gRPC service (off unless set).
    #[arg(long)]
    pub keda_port: Option<u16>,
    /// Address of the KEDA gRPC service (default: --bind-address).
    #[arg(long)]
    pub keda_bind_address: Option<IpAddr>,
    /// Require KEDA to present a client certificate signed by this CA (its tlsClientCert).
    /// Required with --keda-port unless --keda-insecure-disable-client-auth is given.
    #[arg(long, value_name = "FILE")]
    pub keda_client_ca_file: Option<PathBuf>,
    /// Accept only KEDA client certificates whose common name, or one of whose DNS or URI
    /// subject alternative names, is in this comma list (empty: any certificate the
    /// --keda-client-ca-file CA signed).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAMES",
        requires = "keda_client_ca_file"
    )]
    pub keda_client_allowed_names: Vec<String>,
    /// Serve the KEDA gRPC service without TLS (only behind a TLS-terminating proxy or mesh,
    /// which then authenticates clients; needs --keda-insecure-disable-client-auth).
    #[arg(long, conflicts_with = "keda_client_ca_file")]
    pub keda_plaintext: bool,
    /// Serve the KEDA gRPC service to any client, without client certificates: every
    /// client that reaches the port can read every namespace's decisions.
    #[arg(long)]
    pub keda_insecure_disable_client_auth: bool,
    /// At most this many open StreamIsActive streams per KEDA connection; more are refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 512)]
    pub keda_max_streams_per_connection: u32,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Status write-back and leader election")]
pub struct StatusArgs {
    /// With --inventory kube: write each VariantAutoscaling's decision and conditions to its status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub update_status: bool,
    /// At most one status write per VariantAutoscaling per this interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub status_min_interval: Duration,
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
    pub leader_elect_renew_deadline: Duration,
    /// Gap between two attempts to acquire or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Name of the Lease.
    #[arg(long, default_value = "wva-metrics-server")]
    pub leader_elect_resource_name: String,
    /// Namespace of the Lease (default: --namespace).
    #[arg(long)]
    pub leader_elect_resource_namespace: Option<String>,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Connection and request limits")]
pub struct LimitsArgs {
    /// Requests beyond this many in flight are answered 503 at once.
    #[arg(long, default_value_t = 1024, value_parser = parse_positive_count)]
    pub max_concurrent_requests: usize,
    /// A client must send a complete request head within this time: after the TLS handshake (HTTP/1 and HTTP/2 alike), and for each later HTTP/1 request once it starts.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (kube-apiserver closes idle connections after 90s too).
    #[arg(long, default_value = "90s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Open connections beyond this many are closed at once (logged at most once per second, counted in /metrics).
    #[arg(long, default_value_t = 4096, value_parser = parse_positive_count)]
    pub max_connections: usize,
    /// A request that takes longer is answered 504.
    #[arg(long, default_value = "30s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Kubernetes API client")]
pub struct KubeApiArgs {
    /// Calls per second to the API server, sustained (watches not counted). Status writes, Events and list calls share it; TokenReviews and SubjectAccessReviews have a budget of their own of the same size.
    #[arg(long, default_value = "20", value_parser = parse_kube_api_qps)]
    pub kube_api_qps: f64,
    /// Calls to the API server allowed at once above --kube-api-qps before calls wait.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,
}

/// A boolean flag value: true/false (also 1/0, yes/no), any case.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean: use true or false")),
    }
}

/// `--scale-to-zero` / `WVA_SCALE_TO_ZERO`: `true` or `false` only (as
/// documented for the variable).
fn parse_scale_to_zero(s: &str) -> Result<bool, String> {
    crate::saturation::scale_to_zero::env_enabled(Some(s)).map_err(|e| e.to_string())
}

/// A count above zero.
pub fn parse_positive_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("{s:?}: must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// A duration above zero (a zero timeout or interval would spin or fail everything).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s.trim())?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// `--kube-api-qps`: a finite number above 0.
pub fn parse_kube_api_qps(s: &str) -> Result<f64, String> {
    let qps: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    crate::kube_client::RateLimitSettings { qps, burst: 1 }
        .validate()
        .map(|()| qps)
        .map_err(|e| e.to_string())
}

/// A tolerance: a finite decimal >= 0 (or a quantity such as `50m`).
pub fn parse_request_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of requests per second"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "{s:?}: the request rate must be a finite number >= 0"
        ))
    }
}

pub fn parse_hpa_tolerance(s: &str) -> Result<f64, String> {
    crate::hpa::parse_tolerance(s).map_err(|e| e.to_string())
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

/// A controller instance is a label value: it must be one to match labels.
fn parse_controller_instance(s: &str) -> Result<String, String> {
    let ok = s.len() <= 63
        && !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid label value (up to 63 of [A-Za-z0-9-_.], starting and ending alphanumeric)"
        ))
    }
}

/// A string setting with surrounding blanks removed; blank is unset (an
/// empty variable in a manifest keeps the default).
fn non_blank(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Ours over upstream WVA's name for the same setting: when both are set,
/// ours wins and a warning names both.
fn over_upstream<T: std::fmt::Debug + PartialEq>(
    ours: Option<T>,
    upstream: Option<T>,
    names: (&str, &str),
) -> Option<T> {
    match (ours, upstream) {
        (Some(v), Some(u)) => {
            if v != u {
                tracing::warn!(
                    ours = names.0,
                    upstream = names.1,
                    used = ?v,
                    ignored = ?u,
                    "both {} and upstream WVA's {} are set; {} wins",
                    names.0,
                    names.1,
                    names.0
                );
            }
            Some(v)
        }
        (None, Some(u)) => {
            tracing::info!(
                ours = names.0,
                upstream = names.1,
                "reading {} from upstream WVA's {}",
                names.0,
                names.1
            );
            Some(u)
        }
        (v, None) => v,
    }
}

impl PrometheusArgs {
    /// The backend's configuration from the flags and their variables
    /// (clap has applied flag > variable > default), with upstream WVA's
    /// names under ours. Header specs are parsed here; what needs the
    /// whole picture is left to [`PrometheusConfig::validate`].
    pub fn config(
        &self,
    ) -> Result<
        crate::collector::prometheus::PrometheusConfig,
        crate::collector::prometheus::ConfigError,
    > {
        use crate::collector::prometheus::config::{option, parse_header};
        let mut headers = Vec::new();
        if let Some(lines) = &self.prometheus_headers {
            for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
                headers.push(parse_header(option::HEADERS, line)?);
            }
        }
        for spec in &self.prometheus_header {
            headers.push(parse_header(option::HEADER, spec)?);
        }
        let blank_path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        if non_blank(&self.prometheus_bearer_token).is_some() {
            return Err(crate::collector::prometheus::ConfigError {
                variable: option::BEARER_TOKEN,
                value: "<redacted>".to_owned(),
                reason: "an inline token is not supported: put it in a file (a mounted Secret) and set \
                         --prometheus-bearer-token-file (PROMETHEUS_BEARER_TOKEN_FILE), which is re-read as it rotates"
                    .to_owned(),
            });
        }
        if let Some(name) = non_blank(&self.prometheus_server_name) {
            return Err(crate::collector::prometheus::ConfigError {
                variable: option::SERVER_NAME,
                value: name,
                reason: "overriding the TLS server name is not supported: use a --prometheus-url whose host \
                         the store's certificate names"
                    .to_owned(),
            });
        }
        Ok(crate::collector::prometheus::PrometheusConfig {
            url: over_upstream(
                non_blank(&self.prometheus_url),
                non_blank(&self.prometheus_base_url),
                ("PROMETHEUS_URL", "PROMETHEUS_BASE_URL"),
            )
            .unwrap_or_default(),
            ca_cert_path: blank_path(&self.prometheus_ca_cert),
            bearer_token_file: over_upstream(
                blank_path(&self.prometheus_bearer_token_file),
                blank_path(&self.prometheus_token_path),
                ("PROMETHEUS_BEARER_TOKEN_FILE", "PROMETHEUS_TOKEN_PATH"),
            ),
            query_timeout: self.prometheus_query_timeout,
            cache_ttl: over_upstream(
                self.metrics_cache_ttl,
                self.prometheus_metrics_cache_ttl,
                ("METRICS_CACHE_TTL", "PROMETHEUS_METRICS_CACHE_TTL"),
            ),
            background_fetch: self.metrics_background_fetch,
            fetch_interval: over_upstream(
                self.metrics_fetch_interval,
                self.prometheus_metrics_cache_fetch_interval,
                (
                    "METRICS_FETCH_INTERVAL",
                    "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL",
                ),
            )
            .unwrap_or(crate::collector::prometheus::PrometheusConfig::default().fetch_interval),
            tls_insecure_skip_verify: self.prometheus_tls_insecure_skip_verify,
            headers,
            tenant: non_blank(&self.prometheus_tenant),
            tenant_header: self.prometheus_tenant_header.trim().to_owned(),
            basic_auth_username: non_blank(&self.prometheus_basic_auth_username),
            basic_auth_password_file: blank_path(&self.prometheus_basic_auth_password_file),
            client_cert_path: blank_path(&self.prometheus_client_cert),
            client_key_path: blank_path(&self.prometheus_client_key),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers_accept_and_refuse() {
        for (text, want) in [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            (" 1 ", Some(true)),
            ("yes", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("No", Some(false)),
            ("", None),
            ("sure", None),
            ("on", None),
        ] {
            assert_eq!(parse_bool(text).ok(), want, "{text:?}");
        }
        // WVA_SCALE_TO_ZERO is stricter: true or false only.
        assert_eq!(parse_scale_to_zero("True"), Ok(true));
        assert!(parse_scale_to_zero("1")
            .unwrap_err()
            .contains("WVA_SCALE_TO_ZERO"));
        for (text, want) in [
            ("1", Some(1)),
            ("4096", Some(4096)),
            ("0", None),
            ("-1", None),
            ("x", None),
        ] {
            assert_eq!(parse_positive_count(text).ok(), want, "{text:?}");
        }
        for (text, want) in [
            ("1s", Some(1000)),
            ("500ms", Some(500)),
            (" 2s ", Some(2000)),
            ("0s", None),
            ("soon", None),
        ] {
            assert_eq!(
                parse_positive_duration(text).ok().map(|d| d.as_millis()),
                want,
                "{text:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Upstream WVA's settings (issue 30): an upstream install's environment and
// config file work unchanged. Each is honoured, or refused at start naming it
// (exit code 2); what each does here is in docs/wva-compatibility.md.
// ---------------------------------------------------------------------------

/// Where upstream WVA's Helm chart mounts its config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/wva/config.yaml";

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Upstream WVA settings")]
pub struct UpstreamArgs {
    /// Upstream WVA's config file: YAML of KEY: value, the names of the environment variables
    /// (PROMETHEUS_BASE_URL, GLOBAL_OPT_INTERVAL, ...). Precedence: flags, then environment, then this
    /// file, then defaults. The default path is read when it exists; a path given here must exist.
    /// An unknown key or a bad value: exit code 2, naming the file, line and key.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_FILE)]
    pub config_file: PathBuf,
    /// Name of the saturation thresholds ConfigMap, in --namespace (global) and in namespaces
    /// with namespace-local configuration (upstream WVA's SATURATION_CONFIG_MAP_NAME; its Helm
    /// chart prefixes the release name).
    #[arg(long, env = "SATURATION_CONFIG_MAP_NAME", default_value = crate::saturation::CONFIGMAP_NAME, value_parser = parse_configmap_name)]
    pub saturation_config_map_name: String,
    /// Upstream WVA's single-namespace mode (WATCH_NAMESPACE, its --watch-namespace): serve the
    /// variants of this namespace only (as --watch-namespaces with one entry), and read this
    /// namespace's namespace-local ConfigMaps whatever its labels.
    #[arg(long, env = "WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Upstream WVA's WVA_NODE_SELECTOR: a label selector that limits the Nodes whose GPUs the
    /// limiter counts (--accelerator-inventory), to shard GPUs between WVA instances.
    #[arg(long, env = "WVA_NODE_SELECTOR", value_name = "SELECTOR")]
    pub wva_node_selector: Option<String>,
    /// Upstream WVA's WVA_LIMITED_MODE: true turns on --accelerator-inventory (upstream collects
    /// the cluster's GPU inventory in limited mode; its decisions stay those of unlimited mode).
    #[arg(
        long,
        env = "WVA_LIMITED_MODE",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        require_equals = true,
        action = clap::ArgAction::Set,
        default_missing_value = "true",
        value_parser = parse_bool
    )]
    pub wva_limited_mode: bool,
    /// Upstream WVA's EPP_METRIC_READER_BEARER_TOKEN (a token to scrape the endpoint picker's
    /// metrics): refused when not empty; this server reads the endpoint picker's queue from
    /// Prometheus (--metrics-backend prometheus).
    #[arg(
        long,
        env = "EPP_METRIC_READER_BEARER_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub epp_metric_reader_bearer_token: Option<String>,
    /// Upstream WVA's SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY (workers of its scale-from-zero
    /// loop): refused; scale from zero is decided in memory on every request, with no workers to size.
    #[arg(long, env = "SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY", hide = true)]
    pub scale_from_zero_engine_max_concurrency: Option<String>,
    /// Upstream WVA's GLOBAL_OPT_INTERVAL: checked as a duration and, as upstream at b08b1c7 does
    /// (its loop runs every 30 s whatever the value), not used; answers here are computed on demand.
    #[arg(long, env = "GLOBAL_OPT_INTERVAL", value_parser = parse_positive_duration, hide = true)]
    pub global_opt_interval: Option<Duration>,
    /// Upstream WVA's PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL: checked as a duration and otherwise
    /// not needed (this server's cache drops a pod's metrics when the pod leaves the inventory).
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL", value_parser = parse_positive_duration, hide = true)]
    pub prometheus_metrics_cache_cleanup_interval: Option<Duration>,
    /// Extension of upstream: `enableLimiter: true` in a V2 model's own entry (`analyzerName: saturation`,
    /// global, per model or namespace-local) caps its scale-ups by free accelerators too. Upstream applies
    /// the limiter on the V1 path only, from the global `default` entry, which is what happens without this.
    #[arg(long)]
    pub limiter_on_v2: bool,
}

/// A ConfigMap name: a DNS subdomain (lowercase alphanumerics, '-' and '.', at most 253).
pub fn parse_configmap_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a ConfigMap name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        ))
    }
}
