//! Issue 30, must-show 5: upstream WVA's `internal/config/loader_test.go`
//! (18 tests) and `config_test.go` (9 tests) at b08b1c7, replayed against
//! this server's reading of the same config file and environment
//! (`command::parse_cli`, `config_file`) and of the same thresholds and
//! scale-to-zero ConfigMaps (`ThresholdConfig`, `ScaleToZeroConfig`).
//!
//! Cases about settings this server does not have (`METRICS_BIND_ADDRESS`,
//! `HEALTH_PROBE_BIND_ADDRESS`, `LEADER_ELECT`, `LEADER_ELECTION_*`) are
//! replayed as what happens here: the key is refused at start, named, with
//! its file and line. Cases about Go data races (thread-safe reads and
//! updates) and about runtime changes of the config file's ConfigMap have
//! no counterpart; docs/wva-compatibility.md ("Upstream test tables") says
//! why, case by case.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use wva_metrics_server::cli::ServeArgs;
use wva_metrics_server::command::{parse_cli, Command};
use wva_metrics_server::config_file;
use wva_metrics_server::saturation::{ScaleToZeroConfig, ThresholdConfig};

/// clap reads the environment of the process: tests that set it run one at
/// a time.
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `serve`'s parsed flags for `args` with `env` set for the parse, and
/// `config` (if any) written as the config file (`--config-file`).
fn serve(
    args: &[&str],
    env: &[(&str, &str)],
    config: Option<&str>,
) -> Result<Box<ServeArgs>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("config.yaml");
    let path_arg = path.to_string_lossy().into_owned();
    let mut argv = vec!["wva-metrics-server", "serve"];
    if let Some(text) = config {
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        argv.extend(["--config-file", path_arg.as_str()]);
    }
    argv.extend_from_slice(args);
    let _lock = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let parsed = parse_cli(argv, |k| std::env::var(k).ok());
    for (k, _) in env {
        std::env::remove_var(k);
    }
    match parsed.map_err(|e| e.to_string())?.command {
        Command::Serve(a) => Ok(a),
        _ => Err("not serve".into()),
    }
}

fn base_url(a: &ServeArgs) -> Option<&str> {
    a.prometheus.prometheus_base_url.as_deref()
}

/// loader_test.go: TestLoad_FlagsPrecedence, TestLoad_EnvPrecedence,
/// TestLoad_FilePrecedence. Upstream shows precedence on
/// METRICS_BIND_ADDRESS, which this server does not have (one port serves
/// the API, health and metrics); the same precedence on
/// PROMETHEUS_BASE_URL, a key both read from the file.
#[test]
fn loader_flag_env_file_precedence() {
    let file = Some("PROMETHEUS_BASE_URL: \"https://file-value:9090\"\n");
    let env = [("PROMETHEUS_BASE_URL", "https://env-value:9090")];
    let flag = ["--prometheus-base-url", "https://flag-value:9090"];
    let a = serve(&flag, &env, file).unwrap();
    assert_eq!(base_url(&a), Some("https://flag-value:9090"), "flag wins");
    let a = serve(&[], &env, file).unwrap();
    assert_eq!(
        base_url(&a),
        Some("https://env-value:9090"),
        "env over file"
    );
    let a = serve(&[], &[], file).unwrap();
    assert_eq!(base_url(&a), Some("https://file-value:9090"), "the file");
    // Upstream's own key: refused here, named with its file and line.
    let err = serve(
        &[],
        &[],
        Some("# bind\nMETRICS_BIND_ADDRESS: \"file-value\"\n"),
    )
    .unwrap_err();
    assert!(
        err.contains("line 2: METRICS_BIND_ADDRESS") && err.contains("no equivalent"),
        "{err}"
    );
}

/// TestLoad_Defaults, TestLoad_NoConfigFile,
/// TestLoad_Validation_OptimizationInterval: no file, no environment.
/// Upstream's defaults are MetricsAddr "0", ProbeAddr ":8081", leader
/// election off and a 60 s interval; here no file at the default path is
/// no error, leader election is decided later from the inventory mode
/// (unset), and GLOBAL_OPT_INTERVAL is unset (it is read and not used, as
/// at b08b1c7, where the loop runs every 30 s whatever its value).
#[test]
fn loader_defaults_without_a_file() {
    let a = serve(&[], &[], None).unwrap();
    assert_eq!(a.upstream.config_file, Path::new("/etc/wva/config.yaml"));
    assert_eq!(base_url(&a), None);
    assert_eq!(a.status.leader_elect, None);
    assert_eq!(a.upstream.global_opt_interval, None);
    // A zero or negative interval is refused, as upstream's validation
    // requires a positive one.
    let err = serve(&[], &[], Some("GLOBAL_OPT_INTERVAL: \"0s\"\n")).unwrap_err();
    assert!(err.contains("GLOBAL_OPT_INTERVAL"), "{err}");
}

/// TestLoad_PrometheusConfigRequired: upstream refuses to load without a
/// Prometheus URL; so does this server's Prometheus backend (the default
/// `--metrics-backend`), whose configuration is refused naming the setting.
#[test]
fn loader_prometheus_url_required() {
    let a = serve(&[], &[], None).unwrap();
    let config = a.prometheus.config().unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("required with --metrics-backend prometheus"),
        "{err}"
    );
    // With the file's URL it validates.
    let a = serve(
        &[],
        &[],
        Some("PROMETHEUS_BASE_URL: \"https://prometheus:9090\"\n"),
    )
    .unwrap();
    assert!(a.prometheus.config().unwrap().validate().is_ok());
}

/// TestLoad_PrometheusConfigFromEnv and TestLoad_PrometheusConfigFromFile.
#[test]
fn loader_prometheus_url_from_env_and_from_file() {
    let a = serve(
        &[],
        &[("PROMETHEUS_BASE_URL", "https://prometheus-env:9090")],
        None,
    )
    .unwrap();
    assert_eq!(base_url(&a), Some("https://prometheus-env:9090"));
    let a = serve(
        &[],
        &[],
        Some("PROMETHEUS_BASE_URL: \"https://prometheus-file:9090\"\n"),
    )
    .unwrap();
    assert_eq!(base_url(&a), Some("https://prometheus-file:9090"));
}

/// TestLoad_OptimizationIntervalFromFile: GLOBAL_OPT_INTERVAL "30s".
#[test]
fn loader_optimization_interval_from_file() {
    let a = serve(&[], &[], Some("GLOBAL_OPT_INTERVAL: \"30s\"\n")).unwrap();
    assert_eq!(
        a.upstream.global_opt_interval,
        Some(Duration::from_secs(30))
    );
}

/// TestLoad_FeatureFlagsFromFile: scale to zero on, limited mode off, and
/// SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY 5, which parses and is then
/// refused at start (no worker pool here), naming the setting.
#[test]
fn loader_feature_flags_from_file() {
    let a = serve(
        &[],
        &[],
        Some(
            "PROMETHEUS_BASE_URL: \"https://prometheus:9090\"\nWVA_SCALE_TO_ZERO: \"true\"\nWVA_LIMITED_MODE: \"false\"\nSCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY: \"5\"\n",
        ),
    )
    .unwrap();
    assert!(a.decisions.scale_to_zero);
    assert!(!a.inventory.accelerator_inventory, "limited mode off");
    assert_eq!(
        a.upstream.scale_from_zero_engine_max_concurrency.as_deref(),
        Some("5")
    );
    let refusal = config_file::refuse_inapplicable(&a).unwrap_err();
    assert!(
        refusal.contains("SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY=\"5\""),
        "{refusal}"
    );
}

/// TestLoad_PrometheusCacheConfigFromFile: PROMETHEUS_METRICS_CACHE_TTL 60s.
#[test]
fn loader_cache_ttl_from_file() {
    let a = serve(
        &[],
        &[],
        Some("PROMETHEUS_BASE_URL: \"https://prometheus:9090\"\nPROMETHEUS_METRICS_CACHE_TTL: \"60s\"\n"),
    )
    .unwrap();
    assert_eq!(
        a.prometheus.prometheus_metrics_cache_ttl,
        Some(Duration::from_secs(60))
    );
}

/// TestLoad_MissingConfigFile: a named file that does not exist is an error.
#[test]
fn loader_missing_named_config_file() {
    let err = serve(
        &["--config-file", "/nonexistent/path/config.yaml"],
        &[],
        None,
    )
    .unwrap_err();
    assert!(err.contains("/nonexistent/path/config.yaml"), "{err}");
}

/// TestLoad_ConfigFromFile: every value upstream checks, as read here. The
/// EPP token parses and is refused at start (this server reads the endpoint
/// picker's queues without a token).
#[test]
fn loader_config_from_file() {
    let a = serve(
        &[],
        &[],
        Some(
            "PROMETHEUS_BASE_URL: \"https://prometheus-file:9090\"\nGLOBAL_OPT_INTERVAL: \"120s\"\nWVA_SCALE_TO_ZERO: \"true\"\nEPP_METRIC_READER_BEARER_TOKEN: \"test-token\"\nPROMETHEUS_TLS_INSECURE_SKIP_VERIFY: \"true\"\nPROMETHEUS_CA_CERT_PATH: \"/custom/ca.crt\"\n",
        ),
    )
    .unwrap();
    assert_eq!(base_url(&a), Some("https://prometheus-file:9090"));
    assert_eq!(
        a.upstream.global_opt_interval,
        Some(Duration::from_secs(120))
    );
    assert!(a.decisions.scale_to_zero);
    assert_eq!(
        a.upstream.epp_metric_reader_bearer_token.as_deref(),
        Some("test-token")
    );
    assert!(a.prometheus.prometheus_tls_insecure_skip_verify);
    assert_eq!(
        a.prometheus.prometheus_ca_cert.as_deref(),
        Some(Path::new("/custom/ca.crt"))
    );
    let refusal = config_file::refuse_inapplicable(&a).unwrap_err();
    assert!(
        refusal.contains("EPP_METRIC_READER_BEARER_TOKEN"),
        "{refusal}"
    );
}

/// TestLoad_BoolPrecedence (4 subtests, LEADER_ELECT) and
/// TestLoad_DurationPrecedence (4 subtests, LEADER_ELECTION_LEASE_DURATION):
/// upstream's leader-election settings have no environment or file form
/// here (`--leader-elect`, `--leader-elect-lease-duration` are flags), so
/// the file's key is refused by name; the flags keep flag > default.
#[test]
fn loader_leader_election_keys_are_refused_and_the_flags_work() {
    for key in [
        "LEADER_ELECT: \"true\"",
        "LEADER_ELECTION_LEASE_DURATION: \"30s\"",
    ] {
        let err = serve(&[], &[], Some(&format!("{key}\n"))).unwrap_err();
        let name = key.split(':').next().unwrap_or_default();
        assert!(
            err.contains(&format!("line 1: {name}")) && err.contains("no equivalent"),
            "{err}"
        );
    }
    let a = serve(&["--leader-elect=false"], &[], None).unwrap();
    assert_eq!(a.status.leader_elect, Some(false));
    let a = serve(&["--leader-elect=true"], &[], None).unwrap();
    assert_eq!(a.status.leader_elect, Some(true));
    let a = serve(&["--leader-elect-lease-duration", "45s"], &[], None).unwrap();
    assert_eq!(
        a.status.leader_elect_lease_duration,
        Duration::from_secs(45)
    );
    let a = serve(&[], &[], None).unwrap();
    assert_eq!(
        a.status.leader_elect_lease_duration,
        Duration::from_secs(15)
    );
}

fn thresholds(entries: &[(&str, &str)]) -> ThresholdConfig {
    let data: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let (config, errors) = ThresholdConfig::from_configmap_data(&data);
    assert!(errors.is_empty(), "{errors:?}");
    config
}

fn scale_to_zero(entries: &[(&str, &str)]) -> ScaleToZeroConfig {
    let data: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let (config, errors) = ScaleToZeroConfig::from_configmap_data(&data);
    assert!(errors.is_empty(), "{errors:?}");
    config
}

const GLOBAL: &str =
    "kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.10\nqueueSpareTrigger: 3\n";
/// Upstream's namespace-local entry has `queueSpareTrigger: 5` over
/// `queueLengthThreshold: 3`, which this server refuses (a trigger above its
/// threshold is never met: tests/upstream_tables_saturation_scaling.rs,
/// `stricter_than_upstreams_validate`); the replay uses 3.
const UPSTREAM_LOCAL: &str =
    "kvCacheThreshold: 0.70\nqueueLengthThreshold: 3\nkvSpareTrigger: 0.20\nqueueSpareTrigger: 5\n";
const LOCAL: &str =
    "kvCacheThreshold: 0.70\nqueueLengthThreshold: 3\nkvSpareTrigger: 0.20\nqueueSpareTrigger: 3\n";

#[test]
fn upstreams_local_entry_is_refused_here() {
    let data = BTreeMap::from([("default".to_owned(), UPSTREAM_LOCAL.to_owned())]);
    let (_, errors) = ThresholdConfig::from_configmap_data(&data);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains("queueSpareTrigger (5)"));
}

/// config_test.go: TestConfig_NamespaceAwareResolutionPrecedence (3
/// subtests): no local config gives the global one; a local one replaces it
/// for its namespace (thresholds and scale to zero), the global one
/// unchanged; the empty namespace gives the global one.
#[test]
fn config_namespace_aware_resolution_precedence() {
    let model = "model1";
    let ns = "test-namespace";
    let global = thresholds(&[("default", GLOBAL)]);
    let global_s2z = scale_to_zero(&[(
        "model1",
        "model_id: model1\nenable_scale_to_zero: true\nretention_period: 10m\n",
    )]);
    // 1. No namespace-local config.
    assert_eq!(global.for_model(model, ns).kv_cache_threshold, 0.80);
    let s = global_s2z.for_model(model, ns);
    assert_eq!((s.enabled, s.retention), (true, Duration::from_secs(600)));
    // 2. Namespace-local config takes precedence.
    let with_local = global
        .clone()
        .with_namespace_local(ns, thresholds(&[("default", LOCAL)]));
    let t = with_local.for_model(model, ns);
    assert_eq!(
        (t.kv_cache_threshold, t.queue_length_threshold),
        (0.70, 3.0)
    );
    let s2z = global_s2z.clone().with_namespace_locals(BTreeMap::from([(
        ns.to_owned(),
        scale_to_zero(&[(
            "model1",
            "model_id: model1\nenable_scale_to_zero: false\nretention_period: 5m\n",
        )]),
    )]));
    let s = s2z.for_model(model, ns);
    assert_eq!((s.enabled, s.retention), (false, Duration::from_secs(300)));
    assert_eq!(
        with_local.for_model(model, "elsewhere").kv_cache_threshold,
        0.80,
        "global unchanged"
    );
    // 3. The empty namespace: the global config.
    assert_eq!(with_local.for_model(model, "").kv_cache_threshold, 0.80);
    assert_eq!(with_local.default_thresholds().kv_cache_threshold, 0.80);
}

/// TestConfig_NamespaceConfigDeletion: removing the local config falls back
/// to the global one, thresholds and scale to zero.
#[test]
fn config_namespace_config_deletion() {
    let (model, ns) = ("model1", "test-namespace");
    let with_local = thresholds(&[("default", GLOBAL)])
        .with_namespace_local(ns, thresholds(&[("default", LOCAL)]));
    assert_eq!(with_local.for_model(model, ns).kv_cache_threshold, 0.70);
    let removed = with_local.without_namespace_local(ns);
    assert_eq!(removed.for_model(model, ns).kv_cache_threshold, 0.80);
    let global_s2z = scale_to_zero(&[(
        "model1",
        "model_id: model1\nenable_scale_to_zero: true\nretention_period: 10m\n",
    )]);
    let with_local_s2z = global_s2z.clone().with_namespace_locals(BTreeMap::from([(
        ns.to_owned(),
        scale_to_zero(&[(
            "model1",
            "model_id: model1\nenable_scale_to_zero: false\nretention_period: 5m\n",
        )]),
    )]));
    assert!(!with_local_s2z.for_model(model, ns).enabled);
    let removed_s2z = with_local_s2z.with_namespace_locals(BTreeMap::new());
    let s = removed_s2z.for_model(model, ns);
    assert_eq!((s.enabled, s.retention), (true, Duration::from_secs(600)));
}

/// TestConfig_MultipleNamespaces: each namespace its own config, the global
/// one unchanged. Upstream's entries omit the spare triggers (zero there);
/// here they take the defaults, which the kv values below do not involve.
#[test]
fn config_multiple_namespaces() {
    let config = thresholds(&[(
        "default",
        "kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\n",
    )])
    .with_namespace_local(
        "namespace1",
        thresholds(&[(
            "default",
            "kvCacheThreshold: 0.70\nqueueLengthThreshold: 3\n",
        )]),
    )
    .with_namespace_local(
        "namespace2",
        thresholds(&[(
            "default",
            "kvCacheThreshold: 0.90\nqueueLengthThreshold: 7\n",
        )]),
    );
    let kv = |ns: &str| config.for_model("m", ns).kv_cache_threshold;
    assert_eq!(
        (kv("namespace1"), kv("namespace2"), kv("")),
        (0.70, 0.90, 0.80)
    );
    assert_eq!(
        config.for_model("m", "namespace2").queue_length_threshold,
        7.0
    );
}
