//! The Prometheus backend's flags and the configuration they build.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::values::{parse_bool, parse_positive_duration, BoolFlag};

/// The Prometheus backend's settings. Every one has the environment form
/// the WVA seeds (and upstream WVA) use; a few upstream names are hidden
/// aliases that our names win over.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Prometheus backend")]
pub struct PrometheusArgs {
    /// Prometheus (or Thanos querier, Mimir, VictoriaMetrics) API base URL. Required with --metrics-backend prometheus.
    #[arg(long, env = "PROMETHEUS_URL", value_name = "URL")]
    pub(crate) prometheus_url: Option<String>,
    /// Upstream WVA's name for --prometheus-url (PROMETHEUS_BASE_URL); --prometheus-url/PROMETHEUS_URL win.
    #[arg(long, env = "PROMETHEUS_BASE_URL", value_name = "URL", hide = true)]
    pub prometheus_base_url: Option<String>,
    /// PEM CA bundle that signs the store's certificate (https).
    #[arg(long, env = "PROMETHEUS_CA_CERT_PATH", value_name = "FILE")]
    pub prometheus_ca_cert: Option<PathBuf>,
    /// File holding a bearer token sent as `Authorization: Bearer`, re-read at every query (rotating service-account tokens).
    #[arg(long, env = "PROMETHEUS_BEARER_TOKEN_FILE", value_name = "FILE")]
    pub(crate) prometheus_bearer_token_file: Option<PathBuf>,
    /// Upstream WVA's inline token (PROMETHEUS_BEARER_TOKEN): refused, so that a manifest copied from upstream
    /// does not run without the credential it meant; the token belongs in a Secret file (--prometheus-bearer-token-file).
    #[arg(
        long,
        env = "PROMETHEUS_BEARER_TOKEN",
        hide = true,
        hide_env_values = true
    )]
    pub(crate) prometheus_bearer_token: Option<String>,
    /// Upstream WVA's TLS server name override (PROMETHEUS_SERVER_NAME): refused, not supported.
    #[arg(long, env = "PROMETHEUS_SERVER_NAME", hide = true)]
    pub(crate) prometheus_server_name: Option<String>,
    /// Upstream WVA's name for --prometheus-bearer-token-file (PROMETHEUS_TOKEN_PATH), which wins.
    #[arg(long, env = "PROMETHEUS_TOKEN_PATH", value_name = "FILE", hide = true)]
    pub(crate) prometheus_token_path: Option<PathBuf>,
    /// Accept any certificate from the store (upstream WVA's PROMETHEUS_TLS_INSECURE_SKIP_VERIFY); logged loudly.
    #[arg(long, env = "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", bool_flag = false, value_parser = parse_bool)]
    pub prometheus_tls_insecure_skip_verify: bool,
    /// Bound of one fetch cycle's queries, retries included.
    #[arg(long, env = "PROMETHEUS_QUERY_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    pub(crate) prometheus_query_timeout: Duration,
    /// Shortest gap between two Prometheus fetch cycles (default 1s); the gap grows to 5x the last cycle's duration for large fleets.
    #[arg(long, env = "METRICS_FETCH_INTERVAL", value_parser = parse_positive_duration)]
    pub(crate) metrics_fetch_interval: Option<Duration>,
    /// Upstream WVA's name for --metrics-fetch-interval, which wins.
    #[arg(long, env = "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL", value_parser = parse_positive_duration, hide = true)]
    pub(crate) prometheus_metrics_cache_fetch_interval: Option<Duration>,
    /// No effect (requests never refresh metrics on the network); accepted
    /// with a warning so that existing manifests keep starting.
    #[arg(long, env = "METRICS_CACHE_TTL", value_parser = parse_positive_duration, hide = true)]
    pub(crate) metrics_cache_ttl: Option<Duration>,
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
    pub(crate) metrics_background_fetch: bool,
    /// Extra header sent to the metrics store with every query, repeatable: `Name: value`, or
    /// `Name=@/path/file` to read the value from a file (a mounted Secret) at every query.
    /// Adds to --prometheus-headers.
    #[arg(long = "prometheus-header", value_name = "HEADER")]
    pub(crate) prometheus_header: Vec<String>,
    /// Extra headers, one per line, in the form of --prometheus-header (the environment form; both add up).
    #[arg(long, env = "PROMETHEUS_HEADERS", value_name = "LINES")]
    pub(crate) prometheus_headers: Option<String>,
    /// Tenant (org) id sent in --prometheus-tenant-header.
    #[arg(long, env = "PROMETHEUS_TENANT")]
    pub(crate) prometheus_tenant: Option<String>,
    /// Header that carries the tenant: X-Scope-OrgID for Mimir and Cortex; THANOS-TENANT for Thanos.
    #[arg(long, env = "PROMETHEUS_TENANT_HEADER", default_value = crate::collector::prometheus::config::DEFAULT_TENANT_HEADER)]
    pub(crate) prometheus_tenant_header: String,
    /// User of HTTP basic auth to the metrics store.
    #[arg(long, env = "PROMETHEUS_BASIC_AUTH_USERNAME")]
    pub(crate) prometheus_basic_auth_username: Option<String>,
    /// File holding the basic-auth password, re-read at every query.
    #[arg(long, env = "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) prometheus_basic_auth_password_file: Option<PathBuf>,
    /// PEM client certificate for mTLS to the metrics store.
    #[arg(long, env = "PROMETHEUS_CLIENT_CERT_PATH", value_name = "FILE")]
    pub(crate) prometheus_client_cert: Option<PathBuf>,
    /// PEM private key of --prometheus-client-cert (unencrypted).
    #[arg(long, env = "PROMETHEUS_CLIENT_KEY_PATH", value_name = "FILE")]
    pub(crate) prometheus_client_key: Option<PathBuf>,
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
