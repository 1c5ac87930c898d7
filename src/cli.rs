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

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
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
    /// Where variants come from: `kube` or `file:PATH`.
    #[arg(long, default_value = "kube")]
    pub inventory: InventorySource,
    /// The server's own namespace: where the thresholds ConfigMap lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "wva-system")]
    pub namespace: String,
    /// With --inventory kube: serve variants of these namespaces only (comma list; empty = all).
    #[arg(long, value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// With --inventory kube: write each VariantAutoscaling's decision and conditions to its status.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub update_status: bool,
    /// At most one status write per VariantAutoscaling per this interval.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub status_min_interval: Duration,
    /// Where vLLM metrics come from.
    #[arg(long, value_enum, default_value_t = BackendKind::Prometheus)]
    pub metrics_backend: BackendKind,
    /// Saturation thresholds: YAML in the shape of the wva-saturation-scaling-config ConfigMap data
    /// (or the whole ConfigMap); or a directory of ConfigMap and Namespace files, where a ConfigMap in an
    /// opted-in namespace replaces the one in --namespace for that namespace. Invalid: exit code 2. With --inventory file: a file is reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    pub saturation_config: Option<PathBuf>,
    /// Scale to zero: YAML in the shape of the wva-model-scale-to-zero-config ConfigMap data (or the whole
    /// ConfigMap): a `default` entry and per-model entries with `model_id`, optional `namespace`,
    /// `enable_scale_to_zero` and `retention_period`. Models no entry decides for follow WVA_SCALE_TO_ZERO.
    /// Invalid: exit code 2. With --inventory kube the ConfigMap in --namespace replaces it while it exists.
    #[arg(long, value_name = "FILE")]
    pub scale_to_zero_config: Option<PathBuf>,
    /// The llm-d endpoint picker's /metrics URL, scraped every cycle with --metrics-backend scrape for its
    /// flow-control queues (inference_extension_flow_control_queue_size/_bytes): scale from zero and V2's
    /// scheduler queue. With Prometheus they are queried there instead.
    #[arg(long, value_name = "URL")]
    pub epp_metrics_url: Option<String>,
    /// Serve only VariantAutoscalings (and annotated HPAs/ScaledObjects) labelled
    /// `wva.llmd.ai/controller-instance` with this value; items carry `controller_instance`.
    /// Unset: all are served. Upstream WVA's name for it is CONTROLLER_INSTANCE.
    #[arg(long, env = "CONTROLLER_INSTANCE", value_parser = parse_controller_instance)]
    pub controller_instance: Option<String>,
    /// Shortest gap between two scrape cycles over every ready pod; the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub scrape_interval: Duration,
    /// Timeout of one scrape.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,
    /// PEM serving certificate (chain). Without it a self-signed one is generated.
    #[arg(long, requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the serving certificate.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// Prometheus API base URL (overrides PROMETHEUS_URL).
    #[arg(long)]
    pub prometheus_url: Option<String>,
    /// Bound of one Prometheus query with retries (overrides PROMETHEUS_QUERY_TIMEOUT, default 30s).
    #[arg(long, value_parser = parse_duration)]
    pub prometheus_query_timeout: Option<Duration>,
    /// No effect (requests never refresh metrics on the network); accepted
    /// with a warning so that existing manifests keep starting.
    #[arg(long, value_parser = parse_duration, hide = true)]
    pub metrics_cache_ttl: Option<Duration>,
    /// Shortest gap between two Prometheus fetch cycles (overrides METRICS_FETCH_INTERVAL, default 1s); the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, value_parser = parse_duration)]
    pub metrics_fetch_interval: Option<Duration>,
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
    /// Paths served without authentication or authorization.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/livez,/readyz")]
    pub authorization_always_allow_paths: Vec<String>,
    /// How long a TokenReview answer (accepted or rejected token) is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authentication_token_webhook_cache_ttl: Duration,
    /// How long an allowing SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Standalone only (--inventory file:): serve everyone without authentication or authorization.
    #[arg(long)]
    pub insecure_disable_auth: bool,
    /// Samples up to this age are fresh; older ones still decide, but the model is reported as aging (log, wva_model_metrics_aging).
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub metrics_fresh_within: Duration,
    /// A replica whose newest sample is older no longer steers decisions; a model with no younger sample (or whose backend has not been reached for longer) is answered 503 naming its age.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub metrics_stale_after: Duration,
    /// A replica's cached sample older than this is dropped from memory (the model stays 503 until new data arrives).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub metrics_unavailable_after: Duration,
    /// Requests beyond this many in flight are answered 503 at once.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// A client must send a complete request head within this time: after the TLS handshake (HTTP/1 and HTTP/2 alike), and for each later HTTP/1 request once it starts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (kube-apiserver closes idle connections after 90s too).
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Open connections beyond this many are closed at once (logged at most once per second, counted in /metrics).
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// A request that takes longer is answered 504.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Which metrics API groups to serve: external (external.metrics.k8s.io/v1beta1) and custom (custom.metrics.k8s.io v1beta1 and v1beta2, Object metrics on the scale target). A group another component owns in the cluster can be left out.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "external,custom",
        env = "WVA_API_GROUPS"
    )]
    pub api_groups: Vec<ApiGroupName>,
    /// The cluster's `--horizontal-pod-autoscaler-tolerance`: a move whose
    /// usage ratio is within 1 ± this is ignored by the HPA, so such moves
    /// are widened to the smallest safe one outside it, or held. An HPA's
    /// `behavior.scaleUp/scaleDown.tolerance` overrides it for its target.
    #[arg(long, default_value = "0.1", value_parser = parse_hpa_tolerance)]
    pub hpa_tolerance: f64,
    /// Watch Nodes and Pods (only their GPU fields) so that models whose
    /// thresholds set `enableLimiter: true` (V2) have their scale-ups capped by
    /// the accelerators free per type. Needs list/watch on nodes. `--inventory kube` only.
    #[arg(long)]
    pub accelerator_inventory: bool,
    /// Extra header sent to the metrics store with every query, repeatable: `Name: value`, or
    /// `Name=@/path/file` to read the value from a file (a mounted Secret) at every query.
    /// Adds to PROMETHEUS_HEADERS (one header per line).
    #[arg(long = "prometheus-header", value_name = "HEADER")]
    pub prometheus_headers: Vec<String>,
    /// Tenant (org) id sent in --prometheus-tenant-header (overrides PROMETHEUS_TENANT).
    #[arg(long)]
    pub prometheus_tenant: Option<String>,
    /// Header that carries the tenant: X-Scope-OrgID (Mimir, Cortex) unless set; THANOS-TENANT for Thanos
    /// (overrides PROMETHEUS_TENANT_HEADER).
    #[arg(long)]
    pub prometheus_tenant_header: Option<String>,
    /// User of HTTP basic auth to the metrics store (overrides PROMETHEUS_BASIC_AUTH_USERNAME).
    #[arg(long)]
    pub prometheus_basic_auth_username: Option<String>,
    /// File holding the basic-auth password, re-read at every query (overrides PROMETHEUS_BASIC_AUTH_PASSWORD_FILE).
    #[arg(long, value_name = "FILE")]
    pub prometheus_basic_auth_password_file: Option<PathBuf>,
    /// PEM client certificate for mTLS to the metrics store (overrides PROMETHEUS_CLIENT_CERT_PATH).
    #[arg(long, value_name = "FILE")]
    pub prometheus_client_cert: Option<PathBuf>,
    /// PEM private key of --prometheus-client-cert (overrides PROMETHEUS_CLIENT_KEY_PATH).
    #[arg(long, value_name = "FILE")]
    pub prometheus_client_key: Option<PathBuf>,
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
    /// Calls per second to the API server, sustained (watches not counted). Status writes, Events and list calls share it; TokenReviews and SubjectAccessReviews have a budget of their own of the same size.
    #[arg(long, default_value = "20", value_parser = parse_kube_api_qps)]
    pub kube_api_qps: f64,
    /// Calls to the API server allowed at once above --kube-api-qps before calls wait.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,
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
