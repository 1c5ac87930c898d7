//! Command-line interface.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "wva-metrics-server",
    version,
    about = "Kubernetes external metrics API that answers wva_desired_ratio from live vLLM saturation metrics"
)]
pub struct Cli {
    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true, env = "LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io/v1beta1 over HTTPS.
    Serve(Box<ServeArgs>),
    /// Run everything on loopback with emulated vLLM replicas and a scripted load: no cluster, no Prometheus.
    Demo(DemoArgs),
    /// Run one emulated vLLM replica that serves vLLM-format /metrics.
    Emulate(EmulateArgs),
    /// Print the VariantAutoscaling CRD (YAML) generated from the server's types.
    Crd,
    /// Write a CA, a serving certificate for the Service and apiservice.yaml with its caBundle.
    Certs(CertsArgs),
    /// Replay a load trace offline through the real analysis and the HPA's algorithm, per policy, in virtual time; print a table and write summary.json and report.html.
    Simulate(Box<SimulateArgs>),
}

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
pub struct DemoArgs {
    /// Port of the HTTPS API on 127.0.0.1.
    #[arg(long, default_value_t = 8443)]
    pub port: u16,
    /// Seconds per phase of the scripted load (ramp up, hold, ramp down).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub phase: Duration,
    /// Stop after one full script (up, down, to zero and, when the load returns, back from zero) instead of repeating it.
    #[arg(long)]
    pub once: bool,
    /// Which saturation analysis decides: v1 (percentages) or v2 (tokens,
    /// `analyzerName: saturation`).
    #[arg(long, value_enum, default_value = "v1")]
    pub analyzer: DemoAnalyzer,
    /// Scale-to-zero retention period of the demo's model: after the ramp down the load stops, and once no
    /// request has completed for this long the model goes to 0 replicas; the next ramp brings it back
    /// through the emulated endpoint picker's queue.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub retention: Duration,
}

/// The analysis the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoAnalyzer {
    V1,
    V2,
}

#[derive(Debug, Args, Clone)]
pub struct EmulateArgs {
    /// Port of the plain-HTTP /metrics endpoint.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Model name reported in the `model_name` label.
    #[arg(long)]
    pub model_name: String,
    /// KV-cache usage, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub kv: f64,
    /// Requests waiting.
    #[arg(long, default_value_t = 0.0)]
    pub waiting: f64,
    /// Requests running.
    #[arg(long, default_value_t = 0.0)]
    pub running: f64,
    /// Requests completed per second: drives vllm:request_success_total and the token counters
    /// (default: running / 2). Also `request_rate` in POST /admin/state.
    #[arg(long, value_parser = parse_request_rate)]
    pub request_rate: Option<f64>,
    /// KV-cache blocks reported in `vllm:cache_config_info` (`num_gpu_blocks`).
    #[arg(long, default_value_t = crate::emulator::render::NUM_GPU_BLOCKS, value_parser = clap::value_parser!(u64).range(1..))]
    pub num_gpu_blocks: u64,
    /// Tokens per KV-cache block reported in `vllm:cache_config_info` (`block_size`).
    #[arg(long, default_value_t = crate::emulator::render::BLOCK_SIZE, value_parser = clap::value_parser!(u64).range(1..))]
    pub block_size: u64,
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

#[derive(Debug, Args, Clone)]
#[command(group(clap::ArgGroup::new("load").required(true).args(["scenario", "trace"])))]
pub struct SimulateArgs {
    /// Built-in load scenario: diurnal, burst, ramp or idle-then-burst.
    #[arg(long, value_parser = ["diurnal", "burst", "ramp", "idle-then-burst"])]
    pub scenario: Option<String>,
    /// Load trace CSV: `timestamp_seconds,requests_per_second[,avg_input_tokens,avg_output_tokens]` or the Azure LLM trace layout `TIMESTAMP,ContextTokens,GeneratedTokens`.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Virtual time to simulate (default: 24h for diurnal, 2h for the other scenarios, the trace's length for a file).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Comma-separated policies: v1 (this server, percentage analysis), v2 (this server, token-based analysis), chain (V1 behind controller -> Prometheus -> adapter).
    #[arg(long, default_value = crate::simulate::policy::DEFAULT_POLICIES)]
    pub policies: String,
    /// Thresholds file (as for `serve`); its `default` entry, or the entry of --model-id/--namespace, applies.
    #[arg(long)]
    pub saturation_config: Option<PathBuf>,
    /// Model ID whose thresholds apply.
    #[arg(long, default_value = "simulated-model")]
    pub model_id: String,
    /// Namespace whose thresholds apply.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Time-to-first-token objective: a minute whose p95 is above it is an SLO-violation minute.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub slo_ttft: Duration,
    /// Output directory for summary.json, report.html and charts/*.svg.
    #[arg(long, default_value = "simulate-out")]
    pub out: PathBuf,
    /// Time run first at the trace's first-minute load and not counted, so that the trace starts on a cluster settled for its load (0s: it starts at --min-replicas).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub warm_up: Duration,
    /// Seed of the arrival generator: the same seed gives the same summary.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// HPA minReplicas.
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    /// HPA maxReplicas.
    #[arg(long, default_value_t = 20)]
    pub max_replicas: u32,
    /// Time from pod creation to Ready.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub startup_delay: Duration,
    /// HPA sync period (--horizontal-pod-autoscaler-sync-period).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub hpa_sync_period: Duration,
    /// HPA tolerance (--horizontal-pod-autoscaler-tolerance).
    #[arg(long, default_value_t = 0.1)]
    pub hpa_tolerance: f64,
    /// HPA behavior.scaleDown.stabilizationWindowSeconds.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub scale_down_stabilization: Duration,
    /// HPA behavior.scaleUp.stabilizationWindowSeconds.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub scale_up_stabilization: Duration,
    /// How often this server's collector refreshes (v1, v2).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub fetch_interval: Duration,
    /// v2: give the analysis no mean prompt/output tokens per request (as when the metrics lack vLLM's request-token histograms; by default v2 gets the last minute's means, as the Prometheus backend computes them).
    #[arg(long)]
    pub v2_without_token_means: bool,
    /// chain: Prometheus scrape interval of the replicas.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub chain_scrape_interval: Duration,
    /// chain: the controller's reconcile interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub chain_controller_interval: Duration,
    /// chain: the scrape of the controller's output before the adapter serves it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub chain_adapter_interval: Duration,
    /// Replica model: num_gpu_blocks.
    #[arg(long, default_value_t = 2048)]
    pub num_gpu_blocks: u32,
    /// Replica model: tokens per KV block.
    #[arg(long, default_value_t = 16)]
    pub block_size: u32,
    /// Replica model: --max-num-seqs.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: u32,
    /// Replica model: prompt tokens prefilled per second.
    #[arg(long, default_value_t = 8000.0)]
    pub prefill_tokens_per_second: f64,
    /// Replica model: tokens generated per second per running sequence.
    #[arg(long, default_value_t = 40.0)]
    pub decode_tokens_per_second: f64,
    /// Cost of one replica for one hour (the variantCost scale).
    #[arg(long, default_value_t = 10.0)]
    pub cost_per_replica_hour: f64,
}
