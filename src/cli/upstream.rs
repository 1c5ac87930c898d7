//! Upstream WVA's settings (issue 30): an upstream install's environment and
//! config file work unchanged. Each is honoured, or refused at start naming
//! it (exit code 2); what each does here is in docs/wva-compatibility.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{parse_bool, parse_configmap_name, parse_positive_duration, BoolFlag};

/// Where upstream WVA's Helm chart mounts its config file.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/wva/config.yaml";

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
    #[arg(long, env = "WVA_LIMITED_MODE", bool_flag = false, value_parser = parse_bool)]
    pub(crate) wva_limited_mode: bool,
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
    pub(crate) limiter_on_v2: bool,
}
