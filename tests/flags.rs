//! Every flag of every subcommand changes behaviour, and a test shows it:
//! the tables of [`FLAG_TESTS`] (one per command, read against clap's
//! command tree) name that test for each flag (a new flag without an entry
//! fails `every_flag_has_a_test_that_shows_what_it_changes`). For `serve`,
//! here too: `--help` groups the flags under their headings; each
//! environment variable does exactly what its flag does; precedence is
//! flag > variable > default, and our variable > upstream WVA's name; a
//! bad value is an error that names the flag, the value and, when it came
//! from there, the variable. The flags no other test covered are
//! exercised at the end, on a real `serve`.

mod common;

use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use common::apiserver::{three_replica_llama, ApiServer};
use common::pki::{ca, client, client_cert, serve_behind_front_proxy, serve_kube, FrontProxyServe};
use common::{eventually, free_port, two_model_inventory, Server};
use serde_json::{json, Value};
use wva_metrics_server::cli::{ServeArgs, SERVE_HELP_HEADINGS};
use wva_metrics_server::command::{parse_cli, Cli, Command as Sub};

const BIN: &str = env!("CARGO_BIN_EXE_wva-metrics-server");

/// The tests of this file set process environment variables (clap reads
/// them from the process) and start processes that inherit it: one at a time.
static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The program's name: the key of the top-level flags in [`FLAG_TESTS`].
const TOP: &str = "wva-metrics-server";

/// Per command (the top level, then each subcommand), its flags and for
/// each the test that shows what it changes (`file::function`). Several
/// rows per flag are fine. A global flag is listed once, at the top level.
const FLAG_TESTS: &[(&str, &[(&str, &str)])] = &[
    (TOP, TOP_FLAG_TESTS),
    ("serve", SERVE_FLAG_TESTS),
    ("demo", DEMO_FLAG_TESTS),
    ("emulate", EMULATE_FLAG_TESTS),
    ("crd", &[]),
    ("certs", CERTS_FLAG_TESTS),
    ("simulate", SIMULATE_FLAG_TESTS),
];

/// The commands that exist only with the `emulator` cargo feature (without
/// it they take any arguments and say they are not built).
const EMULATOR_COMMANDS: &[&str] = &["demo", "emulate"];

#[rustfmt::skip]
const TOP_FLAG_TESTS: &[(&str, &str)] = &[
    ("--log-json", "flags.rs::log_json_writes_the_fatal_error_as_a_json_line"),
    ("--version", "subcommand_flags.rs::version_prints_the_package_version"),
];

/// `serve`: the flags whose environment form is the one tests set are also
/// covered by `environment_variables_do_what_their_flags_do`, which shows
/// the two are the same.
const SERVE_FLAG_TESTS: &[(&str, &str)] = &[
    // Serving.
    ("--secure-port", "first_hour.rs::insecure_disable_auth_listens_on_loopback_by_default"),
    ("--bind-address", "first_hour.rs::insecure_disable_auth_listens_on_loopback_by_default"),
    ("--bind-address", "first_hour.rs::an_explicit_bind_address_still_wins"),
    ("--api-groups", "custom_metrics.rs::api_groups_choose_what_is_served"),
    // TLS.
    ("--tls-cert-file", "certs.rs::replaced_certificate_files_are_served_without_restart"),
    ("--tls-private-key-file", "certs.rs::replaced_certificate_files_are_served_without_restart"),
    // Authentication.
    ("--requestheader-client-ca-file", "auth.rs::front_proxy_headers_are_trusted_only_from_the_allowed_proxy"),
    ("--requestheader-allowed-names", "auth.rs::front_proxy_headers_are_trusted_only_from_the_allowed_proxy"),
    ("--requestheader-username-headers", "flags.rs::request_path_flags_change_what_clients_get"),
    ("--requestheader-uid-headers", "auth_identity.rs::identities_are_the_ones_kubernetes_would_give"),
    ("--requestheader-group-headers", "flags.rs::request_path_flags_change_what_clients_get"),
    ("--requestheader-extra-headers-prefix", "flags.rs::request_path_flags_change_what_clients_get"),
    ("--client-ca-file", "auth_delegation.rs::client_ca_file_flag_authenticates_x509_users"),
    ("--authentication-skip-lookup", "flags.rs::status_leader_and_lookup_flags_turn_parts_off"),
    ("--authentication-token-webhook-cache-ttl", "auth_caches.rs::one_review_per_token_and_ttl_then_a_fresh_one"),
    ("--insecure-disable-auth", "first_hour.rs::insecure_disable_auth_listens_on_loopback_by_default"),
    // Authorization.
    ("--authorization-always-allow-paths", "flags.rs::request_path_flags_change_what_clients_get"),
    ("--authorization-webhook-cache-authorized-ttl", "auth_delegation.rs::allowed_reviews_are_reused_until_the_ttl_and_a_slow_api_server_gives_503"),
    ("--authorization-webhook-cache-unauthorized-ttl", "auth.rs::denials_name_who_and_what_and_reviews_are_cached"),
    // Inventory.
    ("--inventory", "file_reload.rs::the_inventory_file_is_reloaded_and_a_broken_version_keeps_the_last_good_one"),
    ("--inventory", "kube_inventory.rs::variants_follow_the_cluster"),
    ("--namespace", "scale_to_zero.rs::the_configmap_is_followed_in_kube_mode"),
    ("--watch-namespaces", "kube_sources.rs::watch_namespaces_limits_the_variants_served"),
    ("--controller-instance", "namespace_config.rs::controller_instance_serves_only_its_variants_and_labels_items"),
    ("--accelerator-inventory", "v2_limiter.rs::two_models_share_the_free_gpus_by_saturation_and_the_limited_one_says_so"),
    // Decisions.
    ("--saturation-config", "file_reload.rs::the_saturation_config_file_is_reloaded_and_a_bad_version_is_refused"),
    ("--scale-to-zero-config", "first_hour.rs::a_bad_scale_to_zero_config_names_file_line_and_key"),
    ("--scale-to-zero-config", "scale_to_zero.rs::idle_for_the_retention_period_goes_to_zero_and_back_scrape"),
    ("--service-classes-config", "slo_analyzer.rs::a_bad_service_classes_file_is_refused_at_start"),
    ("--scale-to-zero", "scale_to_zero.rs::the_configmap_is_followed_in_kube_mode"),
    ("--hpa-tolerance", "hpa_tolerance.rs::a_move_the_hpa_would_ignore_is_held_and_counted"),
    // Metrics backend and freshness.
    ("--metrics-backend", "prometheus_backend.rs::same_decisions_as_the_scrape_backend"),
    ("--metrics-fresh-within", "prometheus_backend.rs::stale_model_answers_503_and_recovers"),
    ("--metrics-stale-after", "prometheus_backend.rs::stale_model_answers_503_and_recovers"),
    ("--metrics-unavailable-after", "outage.rs::prometheus_killed_and_restarted"),
    // Prometheus backend: the run-time PrometheusConfig is built from the
    // flags in `cli::PrometheusArgs::config` (checked here against the
    // variables); the tests named show what each of its fields does.
    ("--prometheus-url", "first_hour.rs::no_prometheus_url_says_how_to_do_without_prometheus"),
    ("--prometheus-url", "prometheus_backend.rs::same_decisions_as_the_scrape_backend"),
    ("--prometheus-base-url", "flags.rs::precedence_is_flag_then_variable_then_upstream_name_then_default"),
    ("--prometheus-ca-cert", "prometheus_errors.rs::an_https_prometheus_is_trusted_through_the_ca_file_only"),
    ("--prometheus-bearer-token-file", "prometheus_errors.rs::the_bearer_token_file_is_sent_and_reread_every_cycle"),
    ("--prometheus-bearer-token", "flags.rs::bad_values_name_the_flag_the_value_and_the_variable"),
    ("--prometheus-server-name", "flags.rs::bad_values_name_the_flag_the_value_and_the_variable"),
    ("--prometheus-metrics-cache-fetch-interval", "flags.rs::precedence_is_flag_then_variable_then_upstream_name_then_default"),
    ("--prometheus-token-path", "flags.rs::precedence_is_flag_then_variable_then_upstream_name_then_default"),
    ("--prometheus-tls-insecure-skip-verify", "prometheus_errors.rs::an_https_prometheus_is_trusted_through_the_ca_file_only"),
    ("--prometheus-query-timeout", "prometheus_backend.rs::prometheus_slower_than_the_query_timeout_gives_503_not_hung_requests"),
    ("--metrics-fetch-interval", "flags.rs::metrics_fetch_interval_sets_the_pace_of_cycles"),
    ("--metrics-fetch-interval", "scale_to_zero.rs::zero_and_back_through_prometheus"),
    ("--metrics-cache-ttl", "prometheus_backend.rs::queries_per_cycle_do_not_grow_with_variants"),
    ("--prometheus-metrics-cache-ttl", "flags.rs::precedence_is_flag_then_variable_then_upstream_name_then_default"),
    ("--metrics-background-fetch", "flags.rs::bad_values_name_the_flag_the_value_and_the_variable"),
    ("--prometheus-header", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-header", "flags.rs::precedence_is_flag_then_variable_then_upstream_name_then_default"),
    ("--prometheus-headers", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-tenant", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-tenant-header", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-basic-auth-username", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-basic-auth-password-file", "metrics_stores.rs::tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy"),
    ("--prometheus-client-cert", "metrics_stores.rs::a_client_certificate_passes_an_mtls_proxy"),
    ("--prometheus-client-key", "metrics_stores.rs::a_client_certificate_passes_an_mtls_proxy"),
    // Scrape backend.
    ("--scrape-interval", "flags.rs::scrape_interval_sets_the_pace_of_cycles"),
    ("--scrape-timeout", "outage.rs::scraped_pods_that_accept_and_never_answer"),
    ("--epp-metrics-url", "scale_to_zero.rs::queued_requests_bring_a_model_back_from_zero_scrape"),
    // KEDA.
    ("--keda-port", "deploy_security.rs::the_keda_port_requires_client_certificates"),
    ("--keda-bind-address", "flags.rs::keda_bind_address_moves_the_grpc_port"),
    ("--keda-client-ca-file", "deploy_security.rs::the_keda_port_requires_client_certificates"),
    ("--keda-client-allowed-names", "keda_client_names.rs::only_allowed_client_names_are_accepted_on_the_keda_port"),
    ("--keda-plaintext", "keda_limits.rs::an_open_keda_port_is_refused_at_start"),
    ("--keda-insecure-disable-client-auth", "keda_limits.rs::an_open_keda_port_is_refused_at_start"),
    ("--keda-max-streams-per-connection", "keda_limits.rs::stream_is_active_streams_are_bounded_per_connection"),
    // Status write-back and leader election.
    ("--update-status", "flags.rs::status_leader_and_lookup_flags_turn_parts_off"),
    ("--status-min-interval", "kube_inventory.rs::status_receives_the_decision_once_per_change"),
    ("--leader-elect", "flags.rs::status_leader_and_lookup_flags_turn_parts_off"),
    ("--leader-elect-lease-duration", "leader_election.rs::one_replica_writes_and_another_takes_over_when_it_dies"),
    ("--leader-elect-renew-deadline", "leader_election.rs::one_replica_writes_and_another_takes_over_when_it_dies"),
    ("--leader-elect-retry-period", "leader_election.rs::one_replica_writes_and_another_takes_over_when_it_dies"),
    ("--leader-elect-resource-name", "flags.rs::request_path_flags_change_what_clients_get"),
    ("--leader-elect-resource-namespace", "flags.rs::request_path_flags_change_what_clients_get"),
    // Connection and request limits.
    ("--max-concurrent-requests", "auth_delegation.rs::overload_is_shed_as_503_and_service_resumes"),
    ("--header-read-timeout", "connections.rs::silent_clients_after_the_handshake_are_closed"),
    ("--idle-timeout", "connections.rs::idle_keep_alive_connections_are_closed"),
    ("--max-connections", "connections.rs::connections_beyond_the_cap_are_closed_at_once"),
    ("--request-timeout", "flags.rs::request_path_flags_change_what_clients_get"),
    // Kubernetes API client.
    ("--kube-api-qps", "api_budget.rs::calls_to_the_api_server_stay_within_qps_and_burst"),
    ("--kube-api-burst", "api_budget.rs::calls_to_the_api_server_stay_within_qps_and_burst"),
    // Upstream WVA settings (issue 30).
    ("--config-file", "upstream_settings.rs::the_helm_charts_config_file_sets_prometheus_and_the_cache_as_upstream_reads_it"),
    ("--config-file", "upstream_settings.rs::config_file_errors_name_the_file_the_line_and_the_key"),
    ("--saturation-config-map-name", "upstream_settings.rs::saturation_config_map_name_reads_the_charts_prefixed_configmap"),
    ("--watch-namespace", "upstream_settings.rs::settings_that_apply_map_onto_the_servers_own"),
    ("--watch-namespace", "namespace_local_rules.rs::watch_namespace_reads_its_local_configmaps_without_a_label"),
    ("--wva-node-selector", "upstream_settings.rs::wva_node_selector_limits_the_nodes_the_limiter_counts"),
    ("--wva-limited-mode", "upstream_settings.rs::settings_that_apply_map_onto_the_servers_own"),
    ("--epp-metric-reader-bearer-token", "upstream_settings.rs::settings_that_cannot_apply_are_refused_at_start_naming_them"),
    ("--scale-from-zero-engine-max-concurrency", "upstream_settings.rs::settings_that_cannot_apply_are_refused_at_start_naming_them"),
    ("--global-opt-interval", "upstream_settings.rs::the_helm_charts_config_file_sets_prometheus_and_the_cache_as_upstream_reads_it"),
    ("--prometheus-metrics-cache-cleanup-interval", "upstream_settings.rs::the_helm_charts_config_file_sets_prometheus_and_the_cache_as_upstream_reads_it"),
    ("--limiter-on-v2", "v2_limiter.rs::two_models_share_the_free_gpus_by_saturation_and_the_limited_one_says_so"),
];

#[rustfmt::skip]
const DEMO_FLAG_TESTS: &[(&str, &str)] = &[
    ("--port", "demo.rs::demo_answers_the_readme_requests"),
    ("--phase", "demo.rs::phase_sets_the_pace_of_the_scripted_load"),
    ("--once", "demo.rs::retention_decides_when_the_model_goes_to_zero_and_once_ends_the_demo"),
    ("--analyzer", "v2_analyzer.rs::demo_runs_with_v2"),
    ("--retention", "demo.rs::retention_decides_when_the_model_goes_to_zero_and_once_ends_the_demo"),
];

#[rustfmt::skip]
const EMULATE_FLAG_TESTS: &[(&str, &str)] = &[
    ("--port", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--bind-address", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--model-name", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--kv", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--waiting", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--running", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--request-rate", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--num-gpu-blocks", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--block-size", "subcommand_flags.rs::emulate_flags_set_what_its_metrics_say"),
    ("--prefill-tokens-per-second", "subcommand_flags.rs::emulate_prefill_throughput_sets_the_prefill_time"),
];

#[rustfmt::skip]
const CERTS_FLAG_TESTS: &[(&str, &str)] = &[
    ("--namespace", "subcommand_flags.rs::certs_names_the_service_in_the_certificate_and_the_apiservices"),
    ("--service", "subcommand_flags.rs::certs_names_the_service_in_the_certificate_and_the_apiservices"),
    ("--out", "subcommand_flags.rs::certs_names_the_service_in_the_certificate_and_the_apiservices"),
    ("--force", "first_hour.rs::certs_refuses_to_overwrite_without_force"),
    ("--keda-client", "keda_limits.rs::the_certs_command_issues_a_keda_client_certificate_the_port_accepts"),
    ("--keda-client", "subcommand_flags.rs::certs_names_the_service_in_the_certificate_and_the_apiservices"),
];

/// `simulate`: one table-driven test runs each flag away from a base run
/// and names the number of the summary it moves (and checks that its table
/// has every flag of `simulate`).
#[rustfmt::skip]
const SIMULATE_FLAG_TESTS: &[(&str, &str)] = &[
    ("--scenario", SIMULATE_EVERY_FLAG),
    ("--trace", SIMULATE_EVERY_FLAG),
    ("--duration", SIMULATE_EVERY_FLAG),
    ("--policies", SIMULATE_EVERY_FLAG),
    ("--saturation-config", SIMULATE_EVERY_FLAG),
    ("--model-id", SIMULATE_EVERY_FLAG),
    ("--namespace", SIMULATE_EVERY_FLAG),
    ("--slo-ttft", SIMULATE_EVERY_FLAG),
    ("--out", SIMULATE_EVERY_FLAG),
    ("--out", "simulate.rs::a_short_scenario_prints_a_table_and_writes_summary_and_report"),
    ("--warm-up", SIMULATE_EVERY_FLAG),
    ("--seed", SIMULATE_EVERY_FLAG),
    ("--seed", "simulate.rs::zero_load_gives_no_violations_replicas_at_min_and_the_same_summary_per_seed"),
    ("--min-replicas", SIMULATE_EVERY_FLAG),
    ("--max-replicas", SIMULATE_EVERY_FLAG),
    ("--startup-delay", SIMULATE_EVERY_FLAG),
    ("--hpa-sync-period", SIMULATE_EVERY_FLAG),
    ("--hpa-tolerance", SIMULATE_EVERY_FLAG),
    ("--scale-down-stabilization", SIMULATE_EVERY_FLAG),
    ("--scale-up-stabilization", SIMULATE_EVERY_FLAG),
    ("--fetch-interval", SIMULATE_EVERY_FLAG),
    ("--v2-without-token-means", SIMULATE_EVERY_FLAG),
    ("--chain-scrape-interval", SIMULATE_EVERY_FLAG),
    ("--chain-controller-interval", SIMULATE_EVERY_FLAG),
    ("--chain-adapter-interval", SIMULATE_EVERY_FLAG),
    ("--num-gpu-blocks", SIMULATE_EVERY_FLAG),
    ("--block-size", SIMULATE_EVERY_FLAG),
    ("--max-num-seqs", SIMULATE_EVERY_FLAG),
    ("--prefill-tokens-per-second", SIMULATE_EVERY_FLAG),
    ("--decode-tokens-per-second", SIMULATE_EVERY_FLAG),
    ("--cost-per-replica-hour", SIMULATE_EVERY_FLAG),
];

const SIMULATE_EVERY_FLAG: &str = "simulate.rs::every_flag_moves_a_number_of_the_summary";

/// Each `--help` heading of `serve` with its flags, in order.
const HELP_GROUPS: &[(&str, &[&str])] = &[
    ("Options", &["--log-json"]),
    (
        "Serving",
        &["--secure-port", "--bind-address", "--api-groups"],
    ),
    ("TLS", &["--tls-cert-file", "--tls-private-key-file"]),
    (
        "Authentication",
        &[
            "--requestheader-client-ca-file",
            "--requestheader-allowed-names",
            "--requestheader-username-headers",
            "--requestheader-uid-headers",
            "--requestheader-group-headers",
            "--requestheader-extra-headers-prefix",
            "--client-ca-file",
            "--authentication-skip-lookup",
            "--authentication-token-webhook-cache-ttl",
            "--insecure-disable-auth",
        ],
    ),
    (
        "Authorization",
        &[
            "--authorization-always-allow-paths",
            "--authorization-webhook-cache-authorized-ttl",
            "--authorization-webhook-cache-unauthorized-ttl",
        ],
    ),
    (
        "Inventory",
        &[
            "--inventory",
            "--namespace",
            "--watch-namespaces",
            "--controller-instance",
            "--accelerator-inventory",
        ],
    ),
    (
        "Decisions",
        &[
            "--saturation-config",
            "--scale-to-zero-config",
            "--service-classes-config",
            "--scale-to-zero",
            "--hpa-tolerance",
        ],
    ),
    (
        "Metrics backend and freshness",
        &[
            "--metrics-backend",
            "--metrics-fresh-within",
            "--metrics-stale-after",
            "--metrics-unavailable-after",
        ],
    ),
    (
        "Prometheus backend",
        &[
            "--prometheus-url",
            "--prometheus-ca-cert",
            "--prometheus-bearer-token-file",
            "--prometheus-tls-insecure-skip-verify",
            "--prometheus-query-timeout",
            "--metrics-fetch-interval",
            "--prometheus-header",
            "--prometheus-headers",
            "--prometheus-tenant",
            "--prometheus-tenant-header",
            "--prometheus-basic-auth-username",
            "--prometheus-basic-auth-password-file",
            "--prometheus-client-cert",
            "--prometheus-client-key",
        ],
    ),
    (
        "Scrape backend",
        &["--scrape-interval", "--scrape-timeout", "--epp-metrics-url"],
    ),
    (
        "KEDA external scaler",
        &[
            "--keda-port",
            "--keda-bind-address",
            "--keda-client-ca-file",
            "--keda-client-allowed-names",
            "--keda-plaintext",
            "--keda-insecure-disable-client-auth",
            "--keda-max-streams-per-connection",
        ],
    ),
    (
        "Status write-back and leader election",
        &[
            "--update-status",
            "--status-min-interval",
            "--leader-elect",
            "--leader-elect-lease-duration",
            "--leader-elect-renew-deadline",
            "--leader-elect-retry-period",
            "--leader-elect-resource-name",
            "--leader-elect-resource-namespace",
        ],
    ),
    (
        "Connection and request limits",
        &[
            "--max-concurrent-requests",
            "--header-read-timeout",
            "--idle-timeout",
            "--max-connections",
            "--request-timeout",
        ],
    ),
    (
        "Kubernetes API client",
        &["--kube-api-qps", "--kube-api-burst"],
    ),
    (
        "Upstream WVA settings",
        &[
            "--config-file",
            "--saturation-config-map-name",
            "--watch-namespace",
            "--wva-node-selector",
            "--wva-limited-mode",
            "--limiter-on-v2",
        ],
    ),
];

/// The long names of every `serve` flag, hidden ones included, and the
/// global `--log-json`.
fn serve_flags() -> Vec<(String, Option<String>)> {
    let mut command = Cli::command();
    command.build();
    let serve = command
        .find_subcommand("serve")
        .expect("a serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            (long != "help").then(|| {
                (
                    format!("--{long}"),
                    a.get_env().map(|e| e.to_string_lossy().into_owned()),
                )
            })
        })
        .collect()
}

/// Every flag of the program, read from clap's command tree: (command,
/// `--long` (or `-s`, or `<ID>` for a positional argument), its
/// environment variable). The top level's flags are under
/// [`TOP`]; a subcommand's exclude the global ones it inherits.
fn cli_flags() -> Vec<(String, String, Option<String>)> {
    let mut command = Cli::command();
    command.build();
    // `--long`, else `-s`, else `<ID>` for a positional argument.
    let long_flags = |c: &clap::Command, globals: bool| -> Vec<(String, Option<String>)> {
        c.get_arguments()
            .filter(|a| globals || !a.is_global_set())
            .filter(|a| a.get_long() != Some("help"))
            .map(|a| {
                let name = match (a.get_long(), a.get_short()) {
                    (Some(long), _) => format!("--{long}"),
                    (None, Some(short)) => format!("-{short}"),
                    (None, None) => format!("<{}>", a.get_id().as_str().to_uppercase()),
                };
                (name, a.get_env().map(|e| e.to_string_lossy().into_owned()))
            })
            .collect()
    };
    let mut all: Vec<(String, String, Option<String>)> = long_flags(&command, true)
        .into_iter()
        .map(|(f, e)| (TOP.to_owned(), f, e))
        .collect();
    for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
        all.extend(
            long_flags(sub, false)
                .into_iter()
                .map(|(f, e)| (sub.get_name().to_owned(), f, e)),
        );
    }
    all
}

#[test]
fn every_flag_has_a_test_that_shows_what_it_changes() {
    let flags = cli_flags();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let built = |command: &str| cfg!(feature = "emulator") || !EMULATOR_COMMANDS.contains(&command);
    let table = |command: &str| {
        FLAG_TESTS
            .iter()
            .find(|(c, _)| *c == command)
            .map(|(_, t)| *t)
    };
    // Every command has a table (a new subcommand needs one, even empty).
    let mut command = Cli::command();
    command.build();
    for sub in command.get_subcommands().filter(|c| c.get_name() != "help") {
        assert!(
            table(sub.get_name()).is_some(),
            "FLAG_TESTS has no table for `{}`",
            sub.get_name()
        );
    }
    let missing: Vec<String> = flags
        .iter()
        .filter(|(c, _, _)| built(c))
        .filter(|(c, f, _)| !table(c).unwrap_or_default().iter().any(|(t, _)| t == f))
        .map(|(c, f, _)| format!("{c} {f}"))
        .collect();
    assert!(
        missing.is_empty(),
        "flags without a test in FLAG_TESTS (write one, or remove the flag): {missing:?}"
    );
    for (command, rows) in FLAG_TESTS {
        if !built(command) {
            continue;
        }
        for (flag, test) in *rows {
            assert!(
                flags.iter().any(|(c, f, _)| c == command && f == flag),
                "FLAG_TESTS names `{command} {flag}`, which the program no longer has"
            );
            let (file, function) = test.split_once("::").expect("file::function");
            let text = std::fs::read_to_string(root.join(file))
                .unwrap_or_else(|e| panic!("{command} {flag}: tests/{file}: {e}"));
            let at = text
                .find(&format!("fn {function}("))
                .unwrap_or_else(|| panic!("{command} {flag}: no fn {function} in tests/{file}"));
            // A test, not a helper.
            let before = &text[..at];
            let attribute = before.rfind("#[").map(|i| &before[i..]).unwrap_or_default();
            assert!(
                attribute.starts_with("#[test]") || attribute.starts_with("#[tokio::test"),
                "{command} {flag}: tests/{file}::{function} is not a test that runs (helper or #[ignore])"
            );
        }
    }
}

#[test]
fn help_lists_each_flag_under_its_heading_in_order() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with("Usage") {
            groups.push((line.trim_end_matches(':').to_owned(), Vec::new()));
        } else if let Some(flag) = line.trim_start().strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if line.starts_with("      --") || line.starts_with("  -h, --") {
                if let Some((_, flags)) = groups.last_mut() {
                    flags.push(format!("--{name}"));
                }
            }
        }
    }
    let want: Vec<(String, Vec<String>)> = HELP_GROUPS
        .iter()
        .map(|(h, fs)| (h.to_string(), fs.iter().map(|f| f.to_string()).collect()))
        .collect();
    assert_eq!(groups, want, "{help}");
    // The program's own list of headings is the same, in the same order.
    let headings: Vec<&str> = HELP_GROUPS.iter().skip(1).map(|(h, _)| *h).collect();
    assert_eq!(headings, SERVE_HELP_HEADINGS);
    // Every flag not hidden is in a group; the hidden ones are the aliases kept for old manifests.
    let listed: Vec<&str> = HELP_GROUPS
        .iter()
        .flat_map(|(_, fs)| fs.iter().copied())
        .collect();
    let hidden: Vec<String> = serve_flags()
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| !listed.contains(&f.as_str()))
        .collect();
    assert_eq!(
        hidden,
        [
            "--prometheus-base-url",
            "--prometheus-bearer-token",
            "--prometheus-server-name",
            "--prometheus-token-path",
            "--prometheus-metrics-cache-fetch-interval",
            "--metrics-cache-ttl",
            "--prometheus-metrics-cache-ttl",
            "--metrics-background-fetch",
            "--epp-metric-reader-bearer-token",
            "--scale-from-zero-engine-max-concurrency",
            "--global-opt-interval",
            "--prometheus-metrics-cache-cleanup-interval"
        ]
    );
}

/// Sets the variables for the duration of `f`, then removes them.
fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let out = f();
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    out
}

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// `serve` parsed from `flags` with `vars` in the environment.
fn parse(flags: &[&str], vars: &[(&str, &str)]) -> Result<Cli, clap::Error> {
    let mut argv = vec!["wva-metrics-server", "serve"];
    argv.extend_from_slice(flags);
    with_env(vars, || parse_cli(argv, process_env))
}

fn serve_args(cli: &Cli) -> &ServeArgs {
    match &cli.command {
        Sub::Serve(a) => a,
        other => panic!("{other:?}"),
    }
}

/// What `serve` runs with: the whole parse, and the run-time structures
/// built from it (the Prometheus backend's configuration, the scale-to-zero
/// fallback, the limits and freshness).
fn runtime(cli: &Cli) -> String {
    let a = serve_args(cli);
    let stz = wva_metrics_server::run::load_scale_to_zero(None, a.decisions.scale_to_zero)
        .unwrap()
        .env_enabled();
    format!(
        "{cli:?}\n{:?}\nscale_to_zero={stz}\n{:?} {:?} {:?}",
        a.prometheus.config(),
        a.limits.stack(),
        a.limits.server_limits().idle_timeout,
        a.metrics.freshness(),
    )
}

/// Every variable, set alone, gives what its flag gives; both differ from
/// the default. Every flag with a variable is in the table.
#[test]
fn environment_variables_do_what_their_flags_do() {
    let _lock = ENV_LOCK.blocking_lock();
    // (flag form, variable, value)
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--log-json"], "LOG_JSON", "true"),
        (
            &["--metrics-fresh-within", "30s"],
            "PROMETHEUS_METRICS_CACHE_FRESH_THRESHOLD",
            "30s",
        ),
        (
            &["--metrics-stale-after", "90s"],
            "PROMETHEUS_METRICS_CACHE_STALE_THRESHOLD",
            "90s",
        ),
        (
            &["--metrics-unavailable-after", "10m"],
            "PROMETHEUS_METRICS_CACHE_UNAVAILABLE_THRESHOLD",
            "10m",
        ),
        (
            &["--prometheus-metrics-cache-fetch-interval", "3s"],
            "PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL",
            "3s",
        ),
        (
            &["--prometheus-bearer-token", "secret"],
            "PROMETHEUS_BEARER_TOKEN",
            "secret",
        ),
        (
            &["--prometheus-server-name", "prom.example"],
            "PROMETHEUS_SERVER_NAME",
            "prom.example",
        ),
        (&["--api-groups", "external"], "WVA_API_GROUPS", "external"),
        (&["--namespace", "team-a"], "POD_NAMESPACE", "team-a"),
        (
            &["--controller-instance", "blue"],
            "CONTROLLER_INSTANCE",
            "blue",
        ),
        (&["--scale-to-zero"], "WVA_SCALE_TO_ZERO", "true"),
        (
            &["--prometheus-url", "https://thanos:9091"],
            "PROMETHEUS_URL",
            "https://thanos:9091",
        ),
        (
            &["--prometheus-base-url", "https://up:9090"],
            "PROMETHEUS_BASE_URL",
            "https://up:9090",
        ),
        (
            &["--prometheus-ca-cert", "/etc/ca.pem"],
            "PROMETHEUS_CA_CERT_PATH",
            "/etc/ca.pem",
        ),
        (
            &["--prometheus-bearer-token-file", "/run/t"],
            "PROMETHEUS_BEARER_TOKEN_FILE",
            "/run/t",
        ),
        (
            &["--prometheus-token-path", "/run/u"],
            "PROMETHEUS_TOKEN_PATH",
            "/run/u",
        ),
        (
            &["--prometheus-tls-insecure-skip-verify"],
            "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY",
            "true",
        ),
        (
            &["--prometheus-query-timeout", "5s"],
            "PROMETHEUS_QUERY_TIMEOUT",
            "5s",
        ),
        (
            &["--metrics-fetch-interval", "1m"],
            "METRICS_FETCH_INTERVAL",
            "1m",
        ),
        (&["--metrics-cache-ttl", "30s"], "METRICS_CACHE_TTL", "30s"),
        (
            &["--prometheus-metrics-cache-ttl", "40s"],
            "PROMETHEUS_METRICS_CACHE_TTL",
            "40s",
        ),
        (
            &["--metrics-background-fetch=false"],
            "METRICS_BACKGROUND_FETCH",
            "false",
        ),
        (
            &["--prometheus-headers", "X-A: 1\nX-B=@/run/b"],
            "PROMETHEUS_HEADERS",
            "X-A: 1\nX-B=@/run/b",
        ),
        (
            &["--prometheus-tenant", "team-a"],
            "PROMETHEUS_TENANT",
            "team-a",
        ),
        (
            &["--prometheus-tenant-header", "THANOS-TENANT"],
            "PROMETHEUS_TENANT_HEADER",
            "THANOS-TENANT",
        ),
        (
            &["--prometheus-basic-auth-username", "wva"],
            "PROMETHEUS_BASIC_AUTH_USERNAME",
            "wva",
        ),
        (
            &["--prometheus-basic-auth-password-file", "/run/p"],
            "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
            "/run/p",
        ),
        (
            &["--prometheus-client-cert", "/run/c"],
            "PROMETHEUS_CLIENT_CERT_PATH",
            "/run/c",
        ),
        (
            &["--prometheus-client-key", "/run/k"],
            "PROMETHEUS_CLIENT_KEY_PATH",
            "/run/k",
        ),
        // Upstream WVA's settings (issue 30).
        (
            &["--saturation-config-map-name", "wva-x-config"],
            "SATURATION_CONFIG_MAP_NAME",
            "wva-x-config",
        ),
        (
            &["--watch-namespace", "team-a"],
            "WATCH_NAMESPACE",
            "team-a",
        ),
        (
            &["--wva-node-selector", "shard=a"],
            "WVA_NODE_SELECTOR",
            "shard=a",
        ),
        (&["--wva-limited-mode=true"], "WVA_LIMITED_MODE", "true"),
        (
            &["--epp-metric-reader-bearer-token", "t"],
            "EPP_METRIC_READER_BEARER_TOKEN",
            "t",
        ),
        (
            &["--scale-from-zero-engine-max-concurrency", "10"],
            "SCALE_FROM_ZERO_ENGINE_MAX_CONCURRENCY",
            "10",
        ),
        (
            &["--global-opt-interval", "60s"],
            "GLOBAL_OPT_INTERVAL",
            "60s",
        ),
        (
            &["--prometheus-metrics-cache-cleanup-interval", "1m"],
            "PROMETHEUS_METRICS_CACHE_CLEANUP_INTERVAL",
            "1m",
        ),
        (
            &["--accelerator-inventory"],
            "WVA_ACCELERATOR_INVENTORY",
            "true",
        ),
    ];
    let with_env: Vec<(String, String)> = serve_flags()
        .into_iter()
        .filter_map(|(f, e)| e.map(|e| (f, e)))
        .collect();
    for (flag, var) in &with_env {
        assert!(
            cases
                .iter()
                .any(|(f, v, _)| f[0].split('=').next() == Some(flag) && v == var),
            "{flag} ({var}) is not in the table"
        );
    }
    assert_eq!(with_env.len(), cases.len(), "{with_env:?}");
    // The other subcommands have no variables of their own (LOG_JSON, global,
    // is above): one added needs its cases, parsed with its subcommand.
    let others: Vec<(String, String, Option<String>)> = cli_flags()
        .into_iter()
        .filter(|(c, _, e)| e.is_some() && c != "serve" && c != TOP)
        .collect();
    assert!(
        others.is_empty(),
        "variables outside `serve` without a case here: {others:?}"
    );
    let default = runtime(&parse(&[], &[]).unwrap());
    for (flags, var, value) in cases {
        let by_flag = runtime(&parse(flags, &[]).unwrap());
        let by_var = runtime(&parse(&[], &[(var, value)]).unwrap_or_else(|e| panic!("{var}: {e}")));
        assert_eq!(by_flag, by_var, "{var}={value:?} vs {flags:?}");
        assert_ne!(by_flag, default, "{flags:?} changes nothing");
    }
    // The variables reach the run-time structures, not only the parse.
    let cli = parse(
        &[],
        &[
            ("PROMETHEUS_QUERY_TIMEOUT", "5s"),
            ("METRICS_FETCH_INTERVAL", "1m"),
        ],
    )
    .unwrap();
    let config = serve_args(&cli).prometheus.config().unwrap();
    assert_eq!(config.query_timeout, Duration::from_secs(5));
    assert_eq!(config.fetch_interval, Duration::from_secs(60));
    let cli = parse(&[], &[("WVA_SCALE_TO_ZERO", "TRUE")]).unwrap();
    assert!(serve_args(&cli).decisions.scale_to_zero);
}

#[test]
fn precedence_is_flag_then_variable_then_upstream_name_then_default() {
    let _lock = ENV_LOCK.blocking_lock();
    let config = |flags: &[&str], vars: &[(&str, &str)]| {
        serve_args(&parse(flags, vars).unwrap())
            .prometheus
            .config()
            .unwrap()
    };
    // flag > variable > upstream name > default (none).
    let url = |flags: &[&str], vars: &[(&str, &str)]| config(flags, vars).url;
    let both = [
        ("PROMETHEUS_URL", "http://ours"),
        ("PROMETHEUS_BASE_URL", "http://upstream"),
    ];
    assert_eq!(
        url(&["--prometheus-url", "http://flag"], &both),
        "http://flag"
    );
    assert_eq!(url(&[], &both), "http://ours");
    assert_eq!(url(&[], &both[1..]), "http://upstream");
    assert_eq!(url(&[], &[]), "");
    // A blank variable is unset: the upstream name (or the default) applies.
    assert_eq!(
        url(
            &[],
            &[
                ("PROMETHEUS_URL", "  "),
                ("PROMETHEUS_BASE_URL", "http://upstream")
            ]
        ),
        "http://upstream"
    );
    assert_eq!(
        url(
            &[],
            &[
                ("PROMETHEUS_BASE_URL", " "),
                ("PROMETHEUS_URL", "http://ours")
            ]
        ),
        "http://ours"
    );
    let interval = config(&[], &[("METRICS_FETCH_INTERVAL", "")]).fetch_interval;
    assert_eq!(interval, Duration::from_secs(1));
    assert!(!parse(&[], &[("LOG_JSON", "")]).unwrap().log_json);
    let token = |vars: &[(&str, &str)]| config(&[], vars).bearer_token_file;
    assert_eq!(
        token(&[
            ("PROMETHEUS_TOKEN_PATH", "/up"),
            ("PROMETHEUS_BEARER_TOKEN_FILE", "/ours")
        ]),
        Some("/ours".into())
    );
    assert_eq!(
        token(&[("PROMETHEUS_TOKEN_PATH", "/up")]),
        Some("/up".into())
    );
    let fetch = |vars: &[(&str, &str)]| config(&[], vars).fetch_interval;
    assert_eq!(
        fetch(&[
            ("PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL", "30s"),
            ("METRICS_FETCH_INTERVAL", "5s")
        ]),
        Duration::from_secs(5)
    );
    assert_eq!(
        fetch(&[("PROMETHEUS_METRICS_CACHE_FETCH_INTERVAL", "30s")]),
        Duration::from_secs(30)
    );
    let ttl = |vars: &[(&str, &str)]| config(&[], vars).cache_ttl;
    assert_eq!(
        ttl(&[
            ("PROMETHEUS_METRICS_CACHE_TTL", "30s"),
            ("METRICS_CACHE_TTL", "5s")
        ]),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        ttl(&[("PROMETHEUS_METRICS_CACHE_TTL", "30s")]),
        Some(Duration::from_secs(30))
    );
    // Flags over variables for the rest too.
    let c = config(
        &[
            "--prometheus-tenant",
            "flag",
            "--prometheus-query-timeout",
            "7s",
        ],
        &[
            ("PROMETHEUS_TENANT", "var"),
            ("PROMETHEUS_QUERY_TIMEOUT", "5s"),
        ],
    );
    assert_eq!(
        (c.tenant.as_deref(), c.query_timeout),
        (Some("flag"), Duration::from_secs(7))
    );
    // --prometheus-header adds to PROMETHEUS_HEADERS (variable's first).
    let c = config(
        &["--prometheus-header", "X-C: 3"],
        &[("PROMETHEUS_HEADERS", "X-A: 1\n\n X-B: 2\n")],
    );
    let names: Vec<&str> = c.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-A", "X-B", "X-C"]);
    // The defaults.
    let c = config(&[], &[]);
    assert_eq!(
        (
            c.query_timeout,
            c.fetch_interval,
            c.tenant_header.as_str(),
            c.tls_insecure_skip_verify
        ),
        (
            Duration::from_secs(30),
            Duration::from_secs(1),
            "X-Scope-OrgID",
            false
        )
    );
}

#[test]
fn bad_values_name_the_flag_the_value_and_the_variable() {
    let _lock = ENV_LOCK.blocking_lock();
    // (flags, variables, what the error must say, whether it names a variable)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let parse_errors: &[Case] = &[
        (
            &["--prometheus-query-timeout", "soon"],
            &[],
            &["--prometheus-query-timeout", "soon"],
        ),
        (
            &[],
            &[("PROMETHEUS_QUERY_TIMEOUT", "soon")],
            &[
                "--prometheus-query-timeout",
                "'soon'",
                "environment variable PROMETHEUS_QUERY_TIMEOUT",
            ],
        ),
        (
            &[],
            &[("METRICS_FETCH_INTERVAL", "0s")],
            &[
                "--metrics-fetch-interval",
                "0s",
                "greater than zero",
                "METRICS_FETCH_INTERVAL",
            ],
        ),
        (
            &[],
            &[("WVA_SCALE_TO_ZERO", "yes")],
            &["--scale-to-zero", "yes", "WVA_SCALE_TO_ZERO"],
        ),
        (
            &[],
            &[("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "sure")],
            &[
                "--prometheus-tls-insecure-skip-verify",
                "sure",
                "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY",
            ],
        ),
        (
            &[],
            &[("METRICS_BACKGROUND_FETCH", "maybe")],
            &[
                "--metrics-background-fetch",
                "maybe",
                "METRICS_BACKGROUND_FETCH",
            ],
        ),
        (
            &[],
            &[("PROMETHEUS_METRICS_CACHE_TTL", "soon")],
            &[
                "--prometheus-metrics-cache-ttl",
                "soon",
                "PROMETHEUS_METRICS_CACHE_TTL",
            ],
        ),
        (
            &[],
            &[("CONTROLLER_INSTANCE", "-blue-")],
            &["--controller-instance", "-blue-", "CONTROLLER_INSTANCE"],
        ),
        (
            &[],
            &[("WVA_API_GROUPS", "internal")],
            &["--api-groups", "internal", "WVA_API_GROUPS"],
        ),
        (
            &[],
            &[("LOG_JSON", "maybe")],
            &["--log-json", "maybe", "LOG_JSON"],
        ),
        (
            &["--max-connections", "0"],
            &[],
            &["--max-connections", "'0'", "at least 1"],
        ),
        (
            &["--max-concurrent-requests", "many"],
            &[],
            &["--max-concurrent-requests", "many"],
        ),
        (
            &["--request-timeout", "0s"],
            &[],
            &["--request-timeout", "0s"],
        ),
        (&["--kube-api-qps", "0"], &[], &["--kube-api-qps", "0"]),
        (&["--hpa-tolerance", "x"], &[], &["--hpa-tolerance", "x"]),
        (
            &["--secure-port", "70000"],
            &[],
            &["--secure-port", "70000"],
        ),
        (
            &["--inventory", "files:/x"],
            &[],
            &["--inventory", "files:/x", "file:PATH"],
        ),
    ];
    for (flags, vars, want) in parse_errors {
        let e = parse(flags, vars).expect_err("a bad value").to_string();
        for w in *want {
            assert!(e.contains(w), "{flags:?} {vars:?}: {e:?} lacks {w:?}");
        }
        if vars.is_empty() {
            assert!(!e.contains("environment variable"), "{e}");
        }
    }
    // A value given on the command line is the one reported, even when the variable is set too.
    let e = parse(
        &["--prometheus-query-timeout", "later"],
        &[("PROMETHEUS_QUERY_TIMEOUT", "5s")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("later") && !e.contains("environment variable"),
        "{e}"
    );

    // Checked when the backend's configuration is assembled (start-up, exit 1).
    let url = ("PROMETHEUS_URL", "http://127.0.0.1:9090");
    let config_errors: &[Case] = &[
        (
            &[],
            &[url, ("PROMETHEUS_BEARER_TOKEN", "s3cr3t")],
            &[
                "PROMETHEUS_BEARER_TOKEN",
                "<redacted>",
                "--prometheus-bearer-token-file",
            ],
        ),
        (
            &[],
            &[url, ("PROMETHEUS_SERVER_NAME", "prom.example")],
            &["PROMETHEUS_SERVER_NAME", "prom.example", "not supported"],
        ),
        (
            &["--prometheus-header", "Authorization: Bearer x"],
            &[url],
            &["--prometheus-header", "Authorization"],
        ),
        (
            &[],
            &[url, ("PROMETHEUS_HEADERS", "no separator")],
            &["--prometheus-headers (PROMETHEUS_HEADERS)", "no separator"],
        ),
        (
            &["--prometheus-url", "ftp://x"],
            &[],
            &["--prometheus-url (PROMETHEUS_URL)", "ftp://x"],
        ),
        (
            &[],
            &[url, ("PROMETHEUS_CA_CERT_PATH", "/nonexistent/ca.pem")],
            &[
                "--prometheus-ca-cert (PROMETHEUS_CA_CERT_PATH)",
                "/nonexistent/ca.pem",
                "no such file",
            ],
        ),
        (
            &["--prometheus-basic-auth-username", "wva"],
            &[url],
            &[
                "PROMETHEUS_BASIC_AUTH_PASSWORD_FILE",
                "--prometheus-basic-auth-password-file",
            ],
        ),
        (
            &["--metrics-background-fetch=false"],
            &[url],
            &["METRICS_BACKGROUND_FETCH", "false", "not supported"],
        ),
        (
            &[],
            &[
                url,
                ("PROMETHEUS_TENANT", "t"),
                ("PROMETHEUS_TENANT_HEADER", "not a header"),
            ],
            &[
                "--prometheus-tenant-header (PROMETHEUS_TENANT_HEADER)",
                "not a header",
            ],
        ),
    ];
    for (flags, vars, want) in config_errors {
        let cli = parse(flags, vars).unwrap();
        let e = serve_args(&cli)
            .prometheus
            .config()
            .and_then(|c| c.validate())
            .expect_err("a bad setting")
            .to_string();
        for w in *want {
            assert!(e.contains(w), "{flags:?} {vars:?}: {e:?} lacks {w:?}");
        }
        assert!(
            !e.contains("s3cr3t"),
            "a token never appears in a message: {e}"
        );
    }
}

/// The binary reports a bad variable the same way (exit 2, clap's usage
/// error), and a refused setting found at start names flag and variable.
#[test]
fn the_binary_names_the_bad_variable() {
    let _lock = ENV_LOCK.blocking_lock();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("PROMETHEUS_URL")
            .env_remove("LOG_JSON")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["serve"], &[("PROMETHEUS_QUERY_TIMEOUT", "soon")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("'soon'")
            && err.contains("--prometheus-query-timeout")
            && err.contains("PROMETHEUS_QUERY_TIMEOUT"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, two_model_inventory(&[1; 5])).unwrap();
    let inventory = format!("file:{}", inventory.display());
    let (code, err) = run(
        &[
            "serve",
            "--inventory",
            &inventory,
            "--insecure-disable-auth",
            "--secure-port",
            "0",
        ],
        &[
            ("PROMETHEUS_URL", "http://127.0.0.1:1"),
            ("PROMETHEUS_CLIENT_CERT_PATH", "/nonexistent/c.pem"),
        ],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(
        err.contains("--prometheus-client-cert (PROMETHEUS_CLIENT_CERT_PATH)")
            && err.contains("/nonexistent/c.pem"),
        "{err}"
    );
}

/// `--log-json` / `LOG_JSON=true`: the fatal error is one JSON line.
#[test]
fn log_json_writes_the_fatal_error_as_a_json_line() {
    let _lock = ENV_LOCK.blocking_lock();
    let run = |args: &[&str], vars: &[(&str, &str)]| {
        let mut all = vec![
            "serve",
            "--inventory",
            "file:/nonexistent/inventory.yaml",
            "--insecure-disable-auth",
            "--metrics-backend",
            "scrape",
        ];
        all.extend_from_slice(args);
        let out = Command::new(BIN)
            .args(&all)
            .env_remove("LOG_JSON")
            .envs(vars.iter().copied())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let fatal_json = |err: &str| -> Option<Value> {
        err.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["fields"]["message"] == "fatal" || v["message"] == "fatal")
    };
    for (args, vars) in [
        (&["--log-json"][..], &[][..]),
        (&[][..], &[("LOG_JSON", "true")][..]),
    ] {
        let err = run(args, vars);
        let line = fatal_json(&err).unwrap_or_else(|| panic!("no JSON fatal line: {err}"));
        assert!(
            line["fields"]["error"]
                .as_str()
                .unwrap_or_default()
                .contains("/nonexistent/inventory.yaml"),
            "{line}"
        );
    }
    let err = run(&[], &[]);
    assert!(fatal_json(&err).is_none(), "{err}");
    assert!(
        err.contains("error: ") && err.contains("/nonexistent/inventory.yaml"),
        "{err}"
    );
}

const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama-decode";

/// One `serve` against the in-process API server with the flags no other
/// test covered: front-proxy header names, always-allowed paths, the
/// request timeout and the Lease's name and namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_path_flags_change_what_clients_get() {
    let _lock = ENV_LOCK.lock().await;
    let api = ApiServer::start().await;
    let _emulators = three_replica_llama(&api).await;
    let FrontProxyServe {
        serve,
        front_proxy,
        dir: _dir,
    } = serve_behind_front_proxy(
        &api,
        &[
            "--requestheader-username-headers",
            "X-User",
            "--requestheader-group-headers",
            "X-Groups",
            "--requestheader-extra-headers-prefix",
            "X-Extra-",
            "--authorization-always-allow-paths",
            "/readyz,/metrics",
            "--request-timeout",
            "1s",
            "--leader-elect-resource-name",
            "custom-lease",
            "--leader-elect-resource-namespace",
            "leases",
        ],
    )
    .await;
    let anonymous = client(&serve.server_ca, None);
    let status = |path: &str| {
        let c = anonymous.clone();
        let url = format!("{}{path}", serve.base);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    // --authorization-always-allow-paths: /metrics is open, /healthz (open by default) is not.
    assert_eq!(status("/metrics").await, 200);
    assert_eq!(status("/healthz").await, 403);

    // Front-proxy header names: the user, groups and extras come from the
    // named headers; the default names are ignored.
    let proxy = client(
        &serve.server_ca,
        Some(&client_cert(&front_proxy, "front-proxy-client", None)),
    );
    let url = format!("{}{PATH}", serve.base);
    let request = |user: &str| {
        proxy
            .get(&url)
            .header("X-User", user)
            .header("X-Groups", "team-a")
            .header("X-Extra-Scopes", "s1")
            .header("X-Remote-User", "mallory")
            .header("X-Remote-Group", "system:masters")
            .send()
    };
    // (The first answers may come before the first decision.)
    eventually(
        Duration::from_secs(10),
        "alice's request answered",
        || async { (request("alice").await.ok()?.status() == 200).then_some(()) },
    )
    .await;
    let review = api
        .access_reviews()
        .into_iter()
        .find(|r| r["spec"]["user"] == "alice")
        .expect("a review for the user of X-User");
    let groups = review["spec"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(groups.contains(&json!("team-a")), "{review}");
    assert!(!groups.contains(&json!("system:masters")), "{review}");
    assert_eq!(review["spec"]["extra"]["scopes"], json!(["s1"]), "{review}");
    assert!(
        !api.access_reviews()
            .iter()
            .any(|r| r["spec"]["user"] == "mallory"),
        "X-Remote-User is not a user header here"
    );

    // --request-timeout 1s: a review that takes 3s (inside its own 2s bound
    // it would be a 503) ends the request at 1s with a 504 Status. (A new
    // user: alice's review is cached.)
    api.delay_reviews(Duration::from_secs(3));
    let r = request("carol").await.unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status", "{body}");
    api.delay_reviews(Duration::ZERO);

    // --leader-elect-resource-name/-namespace: the Lease is there, not at the default.
    eventually(
        Duration::from_secs(20),
        "the Lease leases/custom-lease",
        || async { api.object("leases", "leases", "custom-lease").map(|_| ()) },
    )
    .await;
    assert!(api
        .object("leases", "wva-system", "wva-metrics-server")
        .is_none());
}

/// `serve --inventory kube` over three replicas of a model, with the
/// cluster's `extension-apiserver-authentication` naming `users_ca` as its
/// client CA.
async fn kube_serve_with_client_ca(
    users_ca: &str,
    extra: &[&str],
) -> (
    ApiServer,
    Vec<common::Emulator>,
    tempfile::TempDir,
    common::pki::KubeServe,
) {
    let api = ApiServer::start().await;
    let emulators = three_replica_llama(&api).await;
    api.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {"client-ca-file": users_ca}}));
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--scrape-interval", "500ms", "--status-min-interval", "1s"];
    args.extend_from_slice(extra);
    let serve = serve_kube(&api, dir.path(), &args).await;
    (api, emulators, dir, serve)
}

/// `--leader-elect=false` writes status without a Lease; `--update-status=false`
/// writes neither (the Lease follows it); `--authentication-skip-lookup`
/// ignores the cluster's client CA (auth_delegation.rs shows it used otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_leader_and_lookup_flags_turn_parts_off() {
    let _lock = ENV_LOCK.lock().await;
    let users = ca("users-ca");

    let (api, _emulators, _dir, serve) =
        kube_serve_with_client_ca(&users.pem, &["--leader-elect=false"]).await;
    eventually(Duration::from_secs(20), "a status write", || async {
        (!api.status_patches().is_empty()).then_some(())
    })
    .await;
    assert!(api
        .object("leases", "wva-system", "wva-metrics-server")
        .is_none());
    drop(serve);

    let (api, _emulators, _dir, serve) = kube_serve_with_client_ca(
        &users.pem,
        &["--update-status=false", "--authentication-skip-lookup"],
    )
    .await;
    // bob's certificate is signed by the cluster's client CA, which is not
    // looked up: the request is anonymous, which the API server denies.
    let bob = client(&serve.server_ca, Some(&client_cert(&users, "bob", None)));
    let r = bob
        .get(format!("{}{PATH}", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(!api
        .access_reviews()
        .iter()
        .any(|r| r["spec"]["user"] == "bob"));
    // Decisions are made (the first server wrote after its first cycles),
    // but nothing is written and no Lease is taken: wait for three more
    // fetch cycles, read from /metrics with a token the API server knows.
    api.add_token("metrics-token", "metrics-reader");
    let reader = client(&serve.server_ca, None);
    let cycles = || async {
        let text = reader
            .get(format!("{}/metrics", serve.base))
            .bearer_auth("metrics-token")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(common::counter_sum(&text, "wva_fetch_cycles_total"))
    };
    let start = eventually(Duration::from_secs(20), "/metrics with a token", cycles).await;
    eventually(
        Duration::from_secs(60),
        "three more fetch cycles",
        || async { cycles().await.filter(|n| *n >= start + 3) },
    )
    .await;
    assert!(
        api.status_patches().is_empty(),
        "{:?}",
        api.status_patches()
    );
    assert!(api
        .object("leases", "wva-system", "wva-metrics-server")
        .is_none());
    drop(serve);
}

/// `--keda-bind-address`: the gRPC port listens there, not on --bind-address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_bind_address_moves_the_grpc_port() {
    let _lock = ENV_LOCK.lock().await;
    let keda = free_port().to_string();
    // Port 1: no pod answers, so the server is not ready; it listens.
    let server = Server::with_unreachable_source(
        &two_model_inventory(&[1; 5]),
        &[
            "--metrics-backend",
            "scrape",
            "--keda-port",
            &keda,
            "--keda-bind-address",
            "127.0.0.2",
            "--keda-plaintext",
            "--keda-insecure-disable-client-auth",
        ],
    )
    .await;
    let port: u16 = keda.parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "the KEDA port on 127.0.0.2",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.2", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing on --bind-address (127.0.0.1)"
    );
    drop(server);
}

/// The shipped Deployment's arguments and literal environment, and the
/// forms manifests written for earlier versions (or for upstream WVA) use,
/// still parse to what they meant.
#[test]
fn existing_manifests_keep_working() {
    let _lock = ENV_LOCK.blocking_lock();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/deployment.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let deployment: Value = serde_norway::from_str(&text).unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let vars: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert!(vars.iter().any(|(k, _)| *k == "PROMETHEUS_URL"), "{vars:?}");
    let mut argv = vec!["wva-metrics-server"];
    argv.extend_from_slice(&args);
    let cli = with_env(&vars, || parse_cli(argv, process_env))
        .unwrap_or_else(|e| panic!("deploy/deployment.yaml: {e}"));
    assert!(cli.log_json);
    let a = serve_args(&cli);
    assert_eq!(a.keda.keda_port, Some(9443));
    assert_eq!(
        a.prometheus.config().unwrap().url,
        "http://prometheus-k8s.monitoring.svc:9090"
    );

    // Older forms: a bare boolean flag, a boolean with a separate value,
    // the no-op cache TTL, upstream's variables.
    let cli = parse(
        &[
            "--update-status",
            "false",
            "--leader-elect",
            "--metrics-cache-ttl",
            "30s",
        ],
        &[
            ("PROMETHEUS_BASE_URL", "http://upstream:9090"),
            ("PROMETHEUS_TOKEN_PATH", "/var/run/token"),
            ("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "true"),
            ("METRICS_BACKGROUND_FETCH", "true"),
        ],
    )
    .unwrap();
    let a = serve_args(&cli);
    assert!(!a.status.update_status);
    assert_eq!(a.status.leader_elect, Some(true));
    let c = a.prometheus.config().unwrap();
    assert_eq!(c.url, "http://upstream:9090");
    assert_eq!(c.bearer_token_file, Some("/var/run/token".into()));
    assert!(c.tls_insecure_skip_verify && c.background_fetch);
    assert_eq!(c.cache_ttl, Some(Duration::from_secs(30)));
    // `--log-json` before or after the subcommand.
    let cli = with_env(&[], || {
        parse_cli(["wva-metrics-server", "--log-json", "serve"], process_env)
    })
    .unwrap();
    assert!(cli.log_json);
}

/// `--scrape-interval` sets the pace of scrape cycles: while a server at
/// 200ms runs 15 cycles (about 3s; the default 2s would run two), one at
/// 1h runs no more than its first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_interval_sets_the_pace_of_cycles() {
    let _lock = ENV_LOCK.lock().await;
    let inventory = two_model_inventory(&[1; 5]);
    let flags =
        |interval: &'static str| ["--metrics-backend", "scrape", "--scrape-interval", interval];
    // Nothing answers (port 1, or no Prometheus): not ready, listening.
    let slow = Server::with_unreachable_source(&inventory, &flags("1h")).await;
    let fast = Server::with_unreachable_source(&inventory, &flags("200ms")).await;
    eventually(Duration::from_secs(30), "15 cycles at 200ms", || async {
        (fast.fetch_cycles().await >= 15).then_some(())
    })
    .await;
    let slow_cycles = slow.fetch_cycles().await;
    assert!(slow_cycles <= 1, "{slow_cycles} cycles at 1h");
}

/// `--metrics-fetch-interval` sets the pace of Prometheus fetch cycles in
/// the same way (a store that refuses connections: each cycle fails within
/// its 100ms query timeout and the next waits for the interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_fetch_interval_sets_the_pace_of_cycles() {
    let _lock = ENV_LOCK.lock().await;
    let inventory = two_model_inventory(&[1; 5]);
    let url = format!("http://127.0.0.1:{}", free_port());
    let flags = |interval: &'static str| {
        vec![
            "--prometheus-url",
            url.as_str(),
            "--prometheus-query-timeout",
            "100ms",
            "--metrics-fetch-interval",
            interval,
        ]
    };
    // Nothing answers (port 1, or no Prometheus): not ready, listening.
    let slow = Server::with_unreachable_source(&inventory, &flags("1h")).await;
    let fast = Server::with_unreachable_source(&inventory, &flags("200ms")).await;
    eventually(Duration::from_secs(30), "15 cycles at 200ms", || async {
        (fast.fetch_cycles().await >= 15).then_some(())
    })
    .await;
    let slow_cycles = slow.fetch_cycles().await;
    assert!(slow_cycles <= 1, "{slow_cycles} cycles at 1h");
}
