//! Upstream WVA's settings, so that an upstream install's environment and
//! config file work unchanged (issue 30):
//!
//! - its config file (`--config-file`, default `/etc/wva/config.yaml`,
//!   where its Helm chart mounts `config.yaml`): YAML of `KEY: value`, the
//!   keys being the names of the environment variables (upstream reads it
//!   with viper). A key that is the environment variable of one of `serve`'s
//!   flags becomes that flag's default, so that precedence is upstream's:
//!   flags, then environment, then the file, then built-in defaults. A key
//!   upstream knows that has no equivalent here, a key upstream does not
//!   know, or a bad value is refused at start (exit code 2) naming the
//!   file, the line and the key;
//! - the settings of [`crate::cli::UpstreamArgs`]: each honoured (mapped
//!   onto ours) or refused at start with a message naming it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cli::{ServeArgs, DEFAULT_CONFIG_FILE};

/// Keys upstream WVA's config loader reads (internal/config/loader.go at
/// b08b1c7). Those that are the environment variable of one of our flags
/// are taken; the others are refused by name.
pub(crate) const UPSTREAM_KEYS: &[&str] = &[
    "METRICS_BIND_ADDRESS",
    "HEALTH_PROBE_BIND_ADDRESS",
    "LEADER_ELECT",
    "LEADER_ELECTION_ID",
    "LEADER_ELECTION_LEASE_DURATION",
    "LEADER_ELECTION_RENEW_DEADLINE",
    "LEADER_ELECTION_RETRY_PERIOD",
    "REST_CLIENT_TIMEOUT",
    "METRICS_SECURE",
    "ENABLE_HTTP2",
    "WATCH_NAMESPACE",
    "V",
    "WEBHOOK_CERT_PATH",
    "WEBHOOK_CERT_NAME",
    "WEBHOOK_CERT_KEY",
    "METRICS_CERT_PATH",
    "METRICS_CERT_NAME",
    "METRICS_CERT_KEY",
    "WVA_SCALE_TO_ZERO",
    "WVA_LIMITED_MODE",
    "SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY",
    "EPP_METRIC_READER_BEARER_TOKEN",
    "GLOBAL_OPT_INTERVAL",
    "PROMETHEUS_BASE_URL",
    "PROMETHEUS_BEARER_TOKEN",
    "PROMETHEUS_TOKEN_PATH",
    "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY",
    "PROMETHEUS_CA_CERT_PATH",
    "PROMETHEUS_CLIENT_CERT_PATH",
    "PROMETHEUS_CLIENT_KEY_PATH",
    "PROMETHEUS_SERVER_NAME",
    "PROMETHEUS_METRICS_CACHE_TTL",
    "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL",
    "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL",
    "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD",
    "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD",
    "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD",
];

/// One `KEY: value` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSetting {
    /// Upper case (viper's keys are case-insensitive).
    pub(crate) key: String,
    /// The value as text (`true`, `60s`, `https://...`).
    pub(crate) value: String,
    /// 1-based line of the key.
    pub(crate) line: usize,
}

/// Why the config file cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ConfigFileError {
    #[error("config file {path}: cannot read it: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: not YAML of KEY: value: {reason}")]
    Syntax { path: String, reason: String },
    #[error("config file {path} line {line}: {key}: {reason}")]
    Key {
        path: String,
        line: usize,
        key: String,
        reason: String,
    },
}

/// The settings of the file's text (empty values count as unset, as an
/// empty environment variable does). Pure.
pub(crate) fn parse(path: &str, text: &str) -> Result<Vec<FileSetting>, ConfigFileError> {
    let syntax = |reason: String| ConfigFileError::Syntax {
        path: path.to_owned(),
        reason,
    };
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let map = match value {
        serde_norway::Value::Null => return Ok(Vec::new()),
        serde_norway::Value::Mapping(m) => m,
        other => {
            return Err(syntax(format!(
                "the document is {}, not a mapping",
                kind_of(&other)
            )))
        }
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(syntax(format!("a key is not text: {k:?}")));
        };
        let line = line_of(text, key);
        let value = match v {
            serde_norway::Value::Null => continue,
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Number(n) => n.to_string(),
            serde_norway::Value::String(s) => s,
            _ => {
                return Err(ConfigFileError::Key {
                    path: path.to_owned(),
                    line,
                    key: key.to_owned(),
                    reason: "the value is a list or mapping; upstream WVA's keys take text".into(),
                })
            }
        };
        if value.trim().is_empty() {
            continue;
        }
        out.push(FileSetting {
            key: key.to_ascii_uppercase(),
            value,
            line,
        });
    }
    Ok(out)
}

fn kind_of(v: &serde_norway::Value) -> &'static str {
    match v {
        serde_norway::Value::Sequence(_) => "a list",
        serde_norway::Value::String(_) => "text",
        serde_norway::Value::Number(_) => "a number",
        serde_norway::Value::Bool(_) => "a boolean",
        _ => "not a mapping",
    }
}

/// The 1-based line where `key` is declared at the top level.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_end();
            !t.starts_with([' ', '\t', '#'])
                && t.trim_start_matches(['"', '\''])
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

/// The config file `argv` names (`--config-file X` or `--config-file=X`
/// after `serve`), else the default path; and whether it was named.
pub(crate) fn config_file_of(argv: &[OsString]) -> (PathBuf, bool) {
    let mut args = argv.iter().filter_map(|a| a.to_str());
    while let Some(a) = args.next() {
        if a == "--config-file" {
            if let Some(p) = args.next() {
                return (PathBuf::from(p), true);
            }
        } else if let Some(p) = a.strip_prefix("--config-file=") {
            return (PathBuf::from(p), true);
        }
    }
    (PathBuf::from(DEFAULT_CONFIG_FILE), false)
}

/// Reads the config file: None when it is the default path and absent.
pub(crate) fn read(path: &Path, named: bool) -> Result<Option<Vec<FileSetting>>, ConfigFileError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&shown, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => Ok(None),
        Err(e) => Err(ConfigFileError::Read {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

/// `serve`'s command with the file's settings as the defaults of the flags
/// whose environment variable each names. Every value is checked with its
/// flag's parser here, so that an error names the file, line and key.
pub(crate) fn with_file_defaults(
    mut serve: clap::Command,
    path: &Path,
    settings: &[FileSetting],
) -> Result<clap::Command, ConfigFileError> {
    let shown = path.display().to_string();
    for s in settings {
        let key_error = |reason: String| ConfigFileError::Key {
            path: shown.clone(),
            line: s.line,
            key: s.key.clone(),
            reason,
        };
        let arg = serve
            .get_arguments()
            .find(|a| {
                a.get_env()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e == s.key)
            })
            .cloned();
        let Some(arg) = arg else {
            return Err(key_error(if UPSTREAM_KEYS.contains(&s.key.as_str()) {
                "an upstream WVA setting that has no equivalent in this server: remove it (docs/wva-compatibility.md lists what each does here)".to_owned()
            } else {
                "not a setting upstream WVA's config file has: check the spelling".to_owned()
            }));
        };
        let long = arg.get_long().unwrap_or_default().to_owned();
        let check = clap::Command::new("check")
            .no_binary_name(true)
            .arg(arg.clone().env(None).required(false))
            .try_get_matches_from([format!("--{long}={}", s.value)]);
        if let Err(e) = check {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let reason = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            return Err(key_error(reason));
        }
        let value: &'static str = Box::leak(s.value.clone().into_boxed_str());
        serve = serve.mut_arg(arg.get_id().clone(), |a| a.default_value(value));
    }
    Ok(serve)
}

/// The settings of [`crate::cli::UpstreamArgs`] that map onto our own
/// flags, applied; or the first that cannot apply, named.
pub(crate) fn apply_upstream_settings(args: &mut ServeArgs) -> Result<(), String> {
    let u = args.upstream.clone();
    if let Some(ns) = u
        .watch_namespace
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        match args.inventory.watch_namespaces.as_slice() {
            [] => args.inventory.watch_namespaces = vec![ns.to_owned()],
            [only] if only == ns => {}
            other => {
                return Err(format!(
                    "WATCH_NAMESPACE (--watch-namespace) {ns:?} and --watch-namespaces {other:?} disagree: give one of them"
                ))
            }
        }
    }
    if let Some(selector) = u
        .wva_node_selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        crate::k8s::selector::LabelSelector::parse(selector).map_err(|e| {
            format!(
                "WVA_NODE_SELECTOR (--wva-node-selector) {selector:?} is not a label selector: {e}"
            )
        })?;
    }
    if u.wva_limited_mode {
        args.inventory.accelerator_inventory = true;
    }
    Ok(())
}

/// The upstream settings that cannot apply here, refused when `serve`
/// starts (exit code 2), each named with why.
pub fn refuse_inapplicable(args: &ServeArgs) -> Result<(), String> {
    let u = &args.upstream;
    if u.epp_metric_reader_bearer_token
        .as_deref()
        .is_some_and(|t| !t.trim().is_empty())
    {
        return Err("EPP_METRIC_READER_BEARER_TOKEN is set, and this server does not scrape the endpoint picker with a token: it reads the endpoint picker's queues from Prometheus, or from --epp-metrics-url with --metrics-backend scrape; unset it".to_owned());
    }
    if let Some(n) = u.scale_from_zero_engine_max_concurrency.as_deref() {
        return Err(format!(
            "SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY={n:?} sizes upstream WVA's scale-from-zero worker pool, which this server does not have (scale from zero is decided in memory on every request): unset it"
        ));
    }
    if let Some(selector) = u
        .wva_node_selector
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        if !args.inventory.accelerator_inventory {
            return Err(format!(
                "WVA_NODE_SELECTOR (--wva-node-selector) {selector:?} limits the Nodes whose GPUs the limiter counts, and the GPU inventory is off: add --accelerator-inventory (or WVA_LIMITED_MODE=true), or unset it"
            ));
        }
    }
    Ok(())
}
