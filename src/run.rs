//! Wires the parts together: inventory source, metrics backend, fetcher,
//! decision engine and HTTPS server. `serve` and `demo` share this path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::discovery::DiscoveryDocuments;
use crate::cli::{BackendKind, InventorySource, ServeArgs};
use crate::collector::fetcher::{CycleOutcome, FetchSchedule, Fetcher};
use crate::collector::prometheus::PrometheusBackend;
use crate::collector::scrape::{ScrapeBackend, ScrapeConfig};
use crate::collector::{FreshnessPolicy, MetricsBackend, MetricsCache};
use crate::decision::publish::DecisionPublisher;
use crate::decision::DecisionEngine;
use crate::inventory::InventoryStore;
use crate::saturation::{PercentageAnalyzer, ScaleToZeroConfig, ThresholdConfig};
use crate::server::auth::Auth;
use crate::server::{self, App, AppState, ServerLimits, StackConfig};
use crate::telemetry::Telemetry;

/// The parts a server is made of, before it runs.
pub struct Components {
    pub inventory: Arc<InventoryStore>,
    pub backend: Arc<dyn MetricsBackend>,
    pub thresholds: Arc<ArcSwap<ThresholdConfig>>,
    /// `wva-model-scale-to-zero-config` (shared by the backend and the decisions).
    pub scale_to_zero: Arc<ArcSwap<ScaleToZeroConfig>>,
    pub fetch_interval: Duration,
    pub freshness: FreshnessPolicy,
    pub registry: Registry,
    pub telemetry: Telemetry,
    /// Status write-back to the cluster: client and minimum interval per object.
    pub status_writer: Option<(kube::Client, Duration)>,
    /// Whether this replica leads (holds the Lease); None: no election, it writes.
    pub leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// Authentication and authorization; None only when explicitly disabled.
    pub auth: Option<Arc<Auth>>,
    /// The HPA controller's tolerance band (`--hpa-tolerance`).
    pub hpa_tolerance: crate::hpa::Tolerances,
    /// Free accelerators for the V2 limiter (`--accelerator-inventory`).
    pub accelerators: Option<Arc<dyn crate::inventory::accelerators::AcceleratorInventory>>,
    /// `--limiter-on-v2`: the limiter on V2 models too (an extension).
    pub v2_limiter: bool,
    /// Latency objectives per model (`analyzerName: slo`).
    pub service_classes: Arc<ArcSwap<crate::saturation::slo::ServiceClasses>>,
}

/// A running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub engine: Arc<DecisionEngine>,
    /// The PEM certificate clients should trust.
    pub certificate_pem: Option<String>,
    pub tasks: Vec<JoinHandle<()>>,
    /// The server's metrics, for listeners started beside it (the KEDA port).
    pub telemetry: Telemetry,
}

impl RunningServer {
    /// Waits for every task to end (after the shutdown token is cancelled).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits for every task to end, but once `shutdown` is cancelled for
    /// at most `drain` (plus a second for the tasks to notice): a task
    /// stuck on the network (a fetch cycle waiting on an unreachable
    /// Prometheus, a watch) must not keep the process from exiting on
    /// SIGTERM, or every rollout waits for the pod's grace period.
    pub async fn join_within(self, shutdown: &CancellationToken, drain: Duration) {
        let all = self.join();
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => return,
            _ = shutdown.cancelled() => {}
        }
        let bound = drain + Duration::from_secs(1);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!(
                timeout = ?bound,
                "tasks still running at the end of the drain timeout; exiting without them"
            );
        }
    }
}

/// A thresholds file given with `--saturation-config` that does not parse
/// or validate: `serve` stops with exit code 2 ([`exit_code_for`]).
#[derive(Debug, thiserror::Error)]
#[error("saturation config {}: {error}", path.display())]
pub struct SaturationConfigFileError {
    pub path: std::path::PathBuf,
    pub error: crate::saturation::LocatedThresholdError,
}

/// A `--scale-to-zero-config` file that does not parse or validate (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("scale-to-zero config {}: {error}", path.display())]
pub struct ScaleToZeroConfigFileError {
    pub path: std::path::PathBuf,
    pub error: crate::saturation::scale_to_zero::LocatedScaleToZeroError,
}

/// A `--service-classes-config` file that does not parse (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("service classes config {}: {error}", path.display())]
pub struct ServiceClassesFileError {
    pub path: std::path::PathBuf,
    pub error: crate::saturation::slo::objective::ServiceClassError,
}

/// Exit code 2 for configuration errors the user must fix in a file.
pub fn exit_code_for(error: &anyhow::Error) -> Option<u8> {
    (error.downcast_ref::<SaturationConfigFileError>().is_some()
        || error.downcast_ref::<ScaleToZeroConfigFileError>().is_some()
        || error.downcast_ref::<ServiceClassesFileError>().is_some())
    .then_some(2)
}

/// Loads `--service-classes-config` (nothing given: no classes, the
/// thresholds' keys or the built-in objective apply).
pub fn load_service_classes(
    path: Option<&Path>,
) -> anyhow::Result<crate::saturation::slo::ServiceClasses> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read service classes config {}", path.display()))?;
    Ok(
        crate::saturation::slo::ServiceClasses::from_yaml_str(&text).map_err(|error| {
            ServiceClassesFileError {
                path: path.to_owned(),
                error,
            }
        })?,
    )
}

/// `--inventory kube`: follows upstream's `service-classes-config`
/// ConfigMap in the server's namespace; a class that does not parse keeps
/// the last good classes (and says why); a deleted ConfigMap restores
/// `fallback` (the file, or nothing).
fn follow_service_classes_configmap(
    client: kube::Client,
    namespace: &str,
    classes: Arc<ArcSwap<crate::saturation::slo::ServiceClasses>>,
    fallback: crate::saturation::slo::ServiceClasses,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    use crate::saturation::slo::objective::CONFIGMAP_NAME;
    crate::kube_client::configmap::follow_configmap(
        client,
        namespace,
        CONFIGMAP_NAME,
        shutdown,
        move |cm| {
            let next = match cm {
                None => fallback.clone(),
                Some(cm) => {
                    let data = cm.data.unwrap_or_default();
                    match crate::saturation::slo::ServiceClasses::from_data(
                        data.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(configmap = CONFIGMAP_NAME, error = %e, "service classes refused; the last good ones stay in force");
                            return;
                        }
                    }
                }
            };
            if **classes.load() != next {
                tracing::info!(configmap = CONFIGMAP_NAME, "service classes updated");
                classes.store(Arc::new(next));
            }
        },
    )
}

/// Loads `--scale-to-zero-config` strictly (file, line and key on error),
/// with `--scale-to-zero` (`WVA_SCALE_TO_ZERO`) as the fallback of models
/// no entry decides for.
pub fn load_scale_to_zero(path: Option<&Path>, env: bool) -> anyhow::Result<ScaleToZeroConfig> {
    let config = match path {
        None => ScaleToZeroConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read scale-to-zero config {}", path.display()))?;
            ScaleToZeroConfig::from_yaml_str_strict(&text).map_err(|error| {
                ScaleToZeroConfigFileError {
                    path: path.to_owned(),
                    error,
                }
            })?
        }
    };
    Ok(config.with_env_enabled(env))
}

/// `--inventory kube`: follows the `wva-model-scale-to-zero-config`
/// ConfigMap in the server's namespace. Entries that do not parse are
/// skipped and logged (the others apply, as upstream does); a deleted
/// ConfigMap restores `fallback` (the file, or nothing).
fn follow_scale_to_zero_configmap(
    client: kube::Client,
    namespace: &str,
    config: Arc<ArcSwap<ScaleToZeroConfig>>,
    fallback: ScaleToZeroConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    use crate::saturation::scale_to_zero::CONFIGMAP_NAME;
    let env = fallback.env_enabled();
    crate::kube_client::configmap::follow_configmap(
        client,
        namespace,
        CONFIGMAP_NAME,
        shutdown,
        move |cm| {
            let next = match cm {
                None => fallback.clone(),
                Some(cm) => {
                    let data = cm.data.unwrap_or_default();
                    let (parsed, errors) = ScaleToZeroConfig::from_configmap_data(&data);
                    for e in &errors {
                        tracing::error!(configmap = CONFIGMAP_NAME, error = %e, "scale-to-zero entry refused; the other entries apply");
                    }
                    parsed.with_env_enabled(env)
                }
            };
            // Namespace-local configurations (kept by the kube inventory) stay.
            let next = next.with_namespace_locals_of(&config.load());
            if **config.load() != next {
                tracing::info!(
                    configmap = CONFIGMAP_NAME,
                    "scale-to-zero configuration updated"
                );
                config.rcu(|c| next.clone().with_namespace_locals_of(c));
            }
        },
    )
}

/// Loads the thresholds file, if any, strictly: any entry that does not
/// parse or validate stops start-up naming the file, line and key. Upstream
/// keys this server does not use are logged once. A directory holds
/// ConfigMap (and Namespace) files with the cluster's precedence between
/// the global and namespace-local ConfigMaps (`own_namespace` is global).
pub fn load_thresholds(
    path: Option<&Path>,
    own_namespace: &str,
) -> anyhow::Result<ThresholdConfig> {
    load_thresholds_named(path, own_namespace, crate::saturation::CONFIGMAP_NAME, None)
}

/// [`load_thresholds`] with upstream's `SATURATION_CONFIG_MAP_NAME` and
/// `WATCH_NAMESPACE` (a directory's ConfigMaps of that name are read).
pub fn load_thresholds_named(
    path: Option<&Path>,
    own_namespace: &str,
    configmap_name: &str,
    watch_namespace: Option<&str>,
) -> anyhow::Result<ThresholdConfig> {
    let Some(path) = path else {
        return Ok(ThresholdConfig::default());
    };
    let config = if path.is_dir() {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read saturation config directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut texts = Vec::with_capacity(files.len());
        for f in &files {
            texts.push(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read saturation config {}", f.display()))?,
            );
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let config = crate::inventory::namespace_config::thresholds_from_named_documents(
            &texts,
            own_namespace,
            configmap_name,
            watch_namespace,
        )
        .map_err(|e| SaturationConfigFileError {
            path: files[e.file].clone(),
            error: e.error,
        })?;
        for ns in config.namespace_local_namespaces() {
            tracing::info!(path = %path.display(), namespace = ns, "namespace-local saturation thresholds in force");
        }
        config
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read saturation config {}", path.display()))?;
        ThresholdConfig::from_yaml_str_strict(&text).map_err(|error| SaturationConfigFileError {
            path: path.to_owned(),
            error,
        })?
    };
    for (entry, key) in config.not_used_keys() {
        tracing::info!(path = %path.display(), entry, key, "saturation config key not used by this server");
    }
    Ok(config)
}

/// Standalone mode: reloads `--saturation-config` when its modification
/// time or size changes (the file is often a mounted ConfigMap, as the
/// ConfigMap is followed in a cluster). A version that does not load keeps
/// the previous thresholds and logs why.
fn watch_thresholds_file(
    path: std::path::PathBuf,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let stamp = |p: &Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut last = stamp(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::inventory::file::RELOAD_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            // At run time a rejected entry keeps the whole previous
            // configuration (as a changed ConfigMap does), rather than
            // silently falling back to defaults for it.
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| ThresholdConfig::from_yaml_str(&text).map_err(|e| e.to_string()))
                .and_then(|(config, rejected)| match rejected.first() {
                    None => Ok(config),
                    Some(e) => Err(e.to_string()),
                });
            match loaded {
                Ok(config) => {
                    tracing::info!(path = %path.display(), "saturation config reloaded");
                    thresholds.store(Arc::new(config));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "saturation config reload failed; keeping the previous thresholds")
                }
            }
        }
    })
}

/// The checks of `serve`'s flags that need no file and no network, made
/// before anything starts: a mistake here is a configuration error (exit
/// code 2), never a runtime failure found after tasks started.
pub fn check_before_start(args: &ServeArgs) -> anyhow::Result<()> {
    let standalone = matches!(args.inventory.inventory, InventorySource::File(_));
    if standalone && args.status.leader_elect == Some(true) {
        return Err(crate::fatal::InvalidConfiguration(
            "--leader-elect needs --inventory kube: a standalone server (--inventory file:) writes no status, so there is nothing to lead".to_owned(),
        )
        .into());
    }
    match (&args.tls.tls_cert_file, &args.tls.tls_private_key_file) {
        (Some(_), None) => {
            return Err(crate::fatal::InvalidConfiguration(
                "--tls-cert-file needs --tls-private-key-file (give both, or neither for a self-signed certificate)".to_owned(),
            )
            .into())
        }
        (None, Some(_)) => {
            return Err(crate::fatal::InvalidConfiguration(
                "--tls-private-key-file needs --tls-cert-file (give both, or neither for a self-signed certificate)".to_owned(),
            )
            .into())
        }
        _ => {}
    }
    if args.metrics.metrics_backend == BackendKind::Prometheus {
        let config = args.prometheus.config()?;
        if !config.url.is_empty() {
            config.validate()?;
        }
    }
    Ok(())
}

/// Builds the components of `serve` from its flags.
pub async fn components_from_args(
    args: &ServeArgs,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Components> {
    let freshness = args.metrics.freshness();
    freshness
        .validate()
        .map_err(crate::fatal::InvalidConfiguration)?;
    crate::config_file::refuse_inapplicable(args).map_err(crate::fatal::InvalidConfiguration)?;
    let thresholds = Arc::new(ArcSwap::from_pointee(load_thresholds_named(
        args.decisions.saturation_config.as_deref(),
        &args.inventory.namespace,
        &args.upstream.saturation_config_map_name,
        args.upstream.watch_namespace.as_deref(),
    )?));
    let scale_to_zero_file = load_scale_to_zero(
        args.decisions.scale_to_zero_config.as_deref(),
        args.decisions.scale_to_zero,
    )?;
    let scale_to_zero = Arc::new(ArcSwap::from_pointee(scale_to_zero_file.clone()));
    let service_classes_file =
        load_service_classes(args.decisions.service_classes_config.as_deref())?;
    let service_classes = Arc::new(ArcSwap::from_pointee(service_classes_file.clone()));
    let mut registry = Registry::default();
    let telemetry = Telemetry::new(&mut registry);

    let inventory = Arc::new(InventoryStore::new());
    let mut status_writer = None;
    let mut accelerators: Option<Arc<dyn crate::inventory::accelerators::AcceleratorInventory>> =
        None;
    let mut leader = None;
    let standalone = matches!(args.inventory.inventory, InventorySource::File(_));
    check_before_start(args)?;
    if args.authentication.insecure_disable_auth && !standalone {
        return Err(crate::fatal::InvalidConfiguration(
            "--insecure-disable-auth is only allowed with --inventory file: (standalone mode)"
                .to_owned(),
        )
        .into());
    }
    let clients = if !standalone || !args.authentication.insecure_disable_auth {
        Some(build_kube_clients(args, &mut registry).await.context(if standalone {
            "authentication and authorization are delegated to the cluster (TokenReview, SubjectAccessReview) \
             and no cluster is reachable (no in-cluster service account, no usable KUBECONFIG); for a standalone \
             run pass --insecure-disable-auth"
        } else {
            "--inventory kube needs a cluster: no in-cluster service account and no usable KUBECONFIG \
             (for a cluster-less run use --inventory file:PATH --insecure-disable-auth)"
        })?)
    } else {
        None
    };
    let client = clients.as_ref().map(|c| c.main.clone());
    let auth = match &clients {
        None => {
            tracing::warn!("--insecure-disable-auth: AUTHENTICATION AND AUTHORIZATION ARE OFF; every client can read every metric");
            if !args.listen.bind_address.is_loopback() {
                tracing::warn!(bind_address = %args.listen.bind_address, "--insecure-disable-auth with a --bind-address that is not loopback: the unauthenticated server is reachable from other hosts");
            }
            None
        }
        Some(clients) => {
            let auth = build_auth(args, clients.reviews.clone(), shutdown, tasks)?;
            auth.count_cache_lookups(&telemetry.auth_cache);
            Some(auth)
        }
    };
    match &args.inventory.inventory {
        InventorySource::File(path) => {
            let task = crate::inventory::file::watch_file_with(
                path.clone(),
                Arc::clone(&inventory),
                crate::inventory::resolve::ResolveOptions {
                    controller_instance: args.inventory.controller_instance.clone(),
                },
                shutdown.clone(),
            )
            .await?;
            tasks.push(task);
            if let Some(path) = &args.decisions.saturation_config {
                tasks.push(watch_thresholds_file(
                    path.clone(),
                    Arc::clone(&thresholds),
                    shutdown.clone(),
                ));
            }
        }
        InventorySource::Kube => {
            let client = client
                .clone()
                .context("--inventory kube needs a cluster client")?;
            if args.status.update_status {
                status_writer = Some((client.clone(), args.status.status_min_interval));
            }
            // The Lease only decides who writes status and Events: with status
            // updates off there is nothing to lead (and no Lease RBAC needed).
            if args
                .status
                .leader_elect
                .unwrap_or(args.status.update_status)
            {
                leader = Some(start_leader_election(
                    args,
                    client.clone(),
                    shutdown,
                    tasks,
                )?);
            }
            let config = crate::inventory::kube::KubeInventoryConfig {
                namespaces: args.inventory.watch_namespaces.clone(),
                own_namespace: args.inventory.namespace.clone(),
                controller_instance: args.inventory.controller_instance.clone(),
                config_rejections: Some(crate::inventory::kube::register_config_rejections(
                    &mut registry,
                )),
                thresholds_configmap: args.upstream.saturation_config_map_name.clone(),
                watch_namespace: args.upstream.watch_namespace.clone(),
                scale_to_zero: Some(Arc::clone(&scale_to_zero)),
            };
            if args.inventory.accelerator_inventory {
                let (store, reflectors) = crate::inventory::accelerators::start(
                    client.clone(),
                    args.upstream.wva_node_selector.as_deref(),
                    shutdown.clone(),
                );
                accelerators = Some(Arc::new(store));
                tasks.extend(reflectors);
            }
            tasks.push(follow_scale_to_zero_configmap(
                client.clone(),
                &args.inventory.namespace,
                Arc::clone(&scale_to_zero),
                scale_to_zero_file.clone(),
                shutdown.clone(),
            ));
            tasks.push(follow_service_classes_configmap(
                client.clone(),
                &args.inventory.namespace,
                Arc::clone(&service_classes),
                service_classes_file.clone(),
                shutdown.clone(),
            ));
            tasks.extend(
                crate::inventory::kube::start(
                    client,
                    config,
                    Arc::clone(&inventory),
                    Arc::clone(&thresholds),
                    shutdown.clone(),
                )
                .await,
            );
        }
    }

    let (backend, fetch_interval): (Arc<dyn MetricsBackend>, Duration) = match args
        .metrics
        .metrics_backend
    {
        BackendKind::Scrape => {
            let config = ScrapeConfig {
                timeout: args.scrape.scrape_timeout,
                ..ScrapeConfig::default()
            };
            (
                Arc::new(
                    ScrapeBackend::new(config, telemetry.clone())?
                        .with_scale_to_zero(Arc::clone(&scale_to_zero))
                        .with_epp_metrics_url(args.scrape.epp_metrics_url.clone()),
                ),
                args.scrape.scrape_interval,
            )
        }
        BackendKind::Prometheus => {
            let config = args.prometheus.config()?;
            if config.url.is_empty() {
                return Err(crate::fatal::InvalidConfiguration(
                    "no Prometheus to query: set --prometheus-url (PROMETHEUS_URL) to your Prometheus or Thanos \
                     querier, or use --metrics-backend scrape to scrape the pods' /metrics directly without Prometheus"
                        .to_owned(),
                )
                .into());
            }
            if config.cache_ttl.is_some() {
                tracing::warn!(
                    "--metrics-cache-ttl / METRICS_CACHE_TTL has no effect and will be removed: \
                     requests never refresh metrics on the network; the background fetcher keeps \
                     them current (see --metrics-fetch-interval and --metrics-stale-after)"
                );
            }
            let interval = config.fetch_interval;
            if args.scrape.epp_metrics_url.is_some() {
                tracing::warn!("--epp-metrics-url is used with --metrics-backend scrape only: with Prometheus the endpoint picker's queues are queried there");
            }
            config.validate()?;
            let backend = Arc::new(
                PrometheusBackend::new(config, telemetry.clone())?
                    .with_scale_to_zero(Arc::clone(&scale_to_zero)),
            );
            let check = Arc::clone(&backend);
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    checked = check.validate_metrics_availability() => {
                        if let Err(e) = checked {
                            tracing::warn!(error = %e, "cannot check which vLLM series Prometheus has");
                        }
                    }
                }
            }));
            (backend, interval)
        }
    };
    Ok(Components {
        leader,
        inventory,
        backend,
        thresholds,
        scale_to_zero,
        fetch_interval,
        freshness,
        registry,
        telemetry,
        status_writer,
        auth,
        hpa_tolerance: crate::hpa::Tolerances::uniform(args.decisions.hpa_tolerance),
        accelerators,
        v2_limiter: args.upstream.limiter_on_v2,
        service_classes,
    })
}

/// The kube clients of `serve`, each behind its own client-side budget of
/// `--kube-api-qps` / `--kube-api-burst` (watches not counted).
pub struct KubeClients {
    /// Inventory lists, status writes, Events.
    pub main: kube::Client,
    /// TokenReviews and SubjectAccessReviews: a budget of their own, so
    /// that authenticating an HPA request never queues behind a backlog of
    /// status writes.
    pub reviews: kube::Client,
}

/// Builds the kube clients from the inferred configuration (in-cluster
/// service account or KUBECONFIG). The only place clients are built.
pub async fn build_kube_clients(
    args: &ServeArgs,
    registry: &mut Registry,
) -> anyhow::Result<KubeClients> {
    use crate::kube_client::rate_limit::{retry_above_budget, BudgetMetrics};
    use crate::kube_client::{ApiBudget, ApiRateLimitLayer};
    let config = kube::Config::infer().await?;
    let settings = crate::kube_client::RateLimitSettings {
        qps: args.kube_api.kube_api_qps,
        burst: args.kube_api.kube_api_burst,
    };
    let metrics = BudgetMetrics::register(registry);
    let build = |name: &str, retry: bool| -> anyhow::Result<kube::Client> {
        let budget = ApiBudget::new(name, settings, Some(metrics.clone()))?;
        let mut config = config.clone();
        // kube's own retry would sit below the budget: off, and the same
        // policy goes above it instead, where each retry takes a token.
        config.default_retry = false;
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&ApiRateLimitLayer::<kube::client::Body>::new(budget))
            .with_layer(&retry_above_budget(retry))
            .build())
    };
    tracing::info!(
        qps = settings.qps,
        burst = settings.burst,
        "client-side rate limit of API server calls (budgets: main, reviews)"
    );
    // No retry inside a call of the main client: it would hold the status
    // sender inside one call for minutes; its callers retry themselves (the
    // status writer with backoff and coalescing, reflectors with the
    // watcher's backoff). Reviews retry (429/503/504) above their budget:
    // an HPA request waits on them, and a failed review is a failed request.
    Ok(KubeClients {
        main: build("main", false)?,
        reviews: build("reviews", true)?,
    })
}

/// Authentication from the flags, or from the cluster's
/// extension-apiserver-authentication ConfigMap when none are given.
fn build_auth(
    args: &ServeArgs,
    client: kube::Client,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Arc<Auth>> {
    use crate::server::auth::{
        cluster, handshake, AuthConfig, AuthzSettings, RequestHeaderAuth, RequestHeaderNames,
    };
    let read = |path: &Path,
                what: &str|
     -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let pem = std::fs::read(path).map_err(|e| {
            crate::fatal::InvalidConfiguration(format!(
                "cannot read {what} {}: {e}",
                path.display()
            ))
        })?;
        handshake::ca_verifier(&pem).map_err(|e| {
            crate::fatal::InvalidConfiguration(format!("{what} {}: {e}", path.display())).into()
        })
    };
    let request_header = match &args.authentication.requestheader_client_ca_file {
        Some(path) => Some(RequestHeaderAuth {
            ca: read(path, "--requestheader-client-ca-file")?,
            names: RequestHeaderNames {
                username: args.authentication.requestheader_username_headers.clone(),
                uid: args
                    .authentication
                    .requestheader_uid_headers
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
                group: args.authentication.requestheader_group_headers.clone(),
                extra_prefix: args
                    .authentication
                    .requestheader_extra_headers_prefix
                    .clone(),
                allowed_names: args
                    .authentication
                    .requestheader_allowed_names
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
            },
        }),
        None => None,
    };
    let client_ca = match &args.authentication.client_ca_file {
        Some(path) => Some(read(path, "--client-ca-file")?),
        None => None,
    };
    let from_flags = request_header.is_some() || client_ca.is_some();
    let settings = AuthzSettings {
        always_allow_paths: args.authorization.authorization_always_allow_paths.clone(),
        allow_ttl: args
            .authorization
            .authorization_webhook_cache_authorized_ttl,
        deny_ttl: args
            .authorization
            .authorization_webhook_cache_unauthorized_ttl,
        token_ttl: args.authentication.authentication_token_webhook_cache_ttl,
        ..AuthzSettings::default()
    };
    let auth = Arc::new(Auth::new(
        AuthConfig {
            request_header,
            client_ca,
        },
        client.clone(),
        settings,
    )?);
    if !from_flags && !args.authentication.authentication_skip_lookup {
        tasks.push(cluster::watch(client, Arc::clone(&auth), shutdown.clone()));
    }
    Ok(auth)
}

/// The serving certificate from files, or a self-signed one (logged) when
/// none are given, with the self-signed certificate's PEM for clients.
pub fn serving_certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<(server::tls::CertifiedKeyPem, Option<String>)> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok((server::tls::load_pem_files(cert, key)?, None)),
        _ => {
            let (pem, cert_pem) = server::tls::self_signed(&[])?;
            tracing::warn!(
                "no --tls-cert-file given: serving a self-signed certificate generated at start"
            );
            Ok((pem, Some(cert_pem)))
        }
    }
}

/// Where the serving certificate comes from.
pub enum ServingCert {
    /// Files, reloaded when they change.
    Files(Arc<server::tls::ReloadingCert>),
    /// Generated at start.
    SelfSigned(server::tls::CertifiedKeyPem),
}

impl ServingCert {
    /// From `--tls-cert-file`/`--tls-private-key-file` (watched for rotation),
    /// or self-signed (logged) when none are given; with the self-signed PEM.
    pub fn from_args(
        cert: Option<&Path>,
        key: Option<&Path>,
        shutdown: &CancellationToken,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<(Self, Option<String>)> {
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let resolver = server::tls::ReloadingCert::load(cert, key)?;
                tasks.push(resolver.watch(cert.to_owned(), key.to_owned(), shutdown.clone()));
                Ok((ServingCert::Files(resolver), None))
            }
            _ => {
                let (pem, cert_pem) = serving_certificate(None, None)?;
                Ok((ServingCert::SelfSigned(pem), cert_pem))
            }
        }
    }

    /// A TLS configuration serving this certificate, treating client
    /// certificates as `client_auth` says.
    pub fn config(
        &self,
        client_auth: server::tls::ClientAuth<'_>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(match self {
            ServingCert::Files(r) => server::tls::server_config(Arc::clone(r), client_auth)?,
            ServingCert::SelfSigned(pem) => server::tls::server_config(
                server::tls::ReloadingCert::fixed(pem.clone())?,
                client_auth,
            )?,
        })
    }
}

/// TLS from files, or a self-signed certificate (logged) when none are given.
pub fn tls_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Option<String>)> {
    let (pem, cert_pem) = serving_certificate(cert, key)?;
    let cert = server::tls::ReloadingCert::fixed(pem)?;
    let config = server::tls::server_config(cert, server::tls::ClientAuth::Optional)?;
    Ok((config, cert_pem))
}

/// Where and how the HTTPS server listens.
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
    /// The PEM certificate clients should trust, when self-signed.
    pub certificate_pem: Option<String>,
    pub stack: StackConfig,
    pub limits: ServerLimits,
    /// The metrics API groups served.
    pub groups: crate::api::discovery::ServedGroups,
}

/// Starts the fetcher and the HTTPS server.
pub async fn start(
    components: Components,
    listen: Listen,
    shutdown: CancellationToken,
    mut tasks: Vec<JoinHandle<()>>,
) -> anyhow::Result<RunningServer> {
    let Listen {
        addr,
        tls,
        certificate_pem,
        stack,
        limits,
        groups,
    } = listen;
    let Components {
        inventory,
        backend,
        thresholds,
        scale_to_zero,
        fetch_interval,
        freshness,
        mut registry,
        telemetry,
        status_writer,
        leader,
        auth,
        hpa_tolerance,
        accelerators,
        v2_limiter,
        service_classes,
    } = components;
    let cache = Arc::new(MetricsCache::new());
    let mut engine = DecisionEngine::new(
        Arc::clone(&inventory),
        Arc::clone(&cache),
        thresholds,
        Arc::new(PercentageAnalyzer),
        freshness,
    )
    .with_hpa_tolerance(hpa_tolerance)
    .with_scale_to_zero(scale_to_zero)
    .with_service_classes(service_classes);
    if let Some(accelerators) = accelerators {
        engine = engine.with_accelerators(accelerators);
    }
    engine = engine.with_v2_limiter(v2_limiter);
    let engine = Arc::new(engine);
    engine.counters().register(&mut registry);
    let publisher = DecisionPublisher::new(telemetry.clone());
    let sweeper = Arc::clone(&engine);
    let cycles = Arc::new(tokio::sync::Notify::new());
    if let Some((client, interval)) = status_writer {
        let mut writer = crate::writeback::StatusWriter::new(client, Arc::clone(&engine), interval)
            .with_metrics(&mut registry);
        if let Some(leading) = leader {
            writer = writer.with_leader(leading);
        }
        tasks.push(writer.spawn(Arc::clone(&cycles), shutdown.clone()));
    }
    let cycle_telemetry = telemetry.clone();
    let fetcher = Fetcher {
        backend,
        cache,
        inventory,
        schedule: FetchSchedule::with_floor(fetch_interval),
        freshness,
        on_cycle: Some(Box::new(move |outcome: &CycleOutcome| {
            cycle_telemetry.record_cycle(
                outcome.result.is_ok(),
                outcome.duration,
                outcome.next_gap,
            );
            // One sweep per fetch cycle: telemetry here, the status
            // write-back and the request path read the published sweep.
            let sweep = sweeper.sweep();
            publisher.publish(&sweep);
            cycles.notify_one();
        })),
    };
    tasks.push(tokio::spawn(fetcher.run(shutdown.clone())));

    let listener = server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let app = App::new(AppState {
        engine: Arc::clone(&engine),
        discovery: DiscoveryDocuments::build_for(groups),
        registry,
        telemetry: telemetry.clone(),
        auth,
    });
    tasks.push(tokio::spawn(server::serve(
        listener, tls, app, stack, limits, shutdown,
    )));
    tracing::info!(address = %local, "serving external.metrics.k8s.io/v1beta1 over HTTPS");
    Ok(RunningServer {
        addr: local,
        engine,
        certificate_pem,
        tasks,
        telemetry,
    })
}

/// Checks the KEDA flags before anything starts: a KEDA port that would
/// serve anyone is refused unless explicitly asked for.
pub fn keda_client_auth(args: &ServeArgs) -> anyhow::Result<crate::keda::KedaClientAuth> {
    Ok(crate::keda::client_auth(
        args.keda.keda_client_ca_file.as_deref(),
        args.keda.keda_plaintext,
        args.keda.keda_insecure_disable_client_auth,
    )?)
}

/// The KEDA port's limits from the flags it shares with the HTTPS port.
pub fn keda_limits(args: &ServeArgs) -> crate::keda::KedaLimits {
    crate::keda::KedaLimits {
        header_read_timeout: args.limits.header_read_timeout,
        idle_timeout: args.limits.idle_timeout,
        max_connections: args.limits.max_connections,
        max_streams_per_connection: args.keda.keda_max_streams_per_connection,
        max_concurrent_requests: args.limits.max_concurrent_requests,
        request_timeout: args.limits.request_timeout,
        ..crate::keda::KedaLimits::default()
    }
}

/// Starts the KEDA external-scaler gRPC service next to a running server.
pub async fn start_keda(
    args: &ServeArgs,
    port: u16,
    certificate: &ServingCert,
    running: &RunningServer,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    use crate::keda::KedaClientAuth;
    let addr = SocketAddr::new(
        args.keda
            .keda_bind_address
            .unwrap_or(args.listen.bind_address),
        port,
    );
    let client_auth = keda_client_auth(args)?;
    let tls = match &client_auth {
        KedaClientAuth::InsecurePlaintext => {
            tracing::warn!("--keda-plaintext --keda-insecure-disable-client-auth: the KEDA gRPC service runs without TLS and without client authentication; use it only behind a proxy or mesh that does both");
            None
        }
        KedaClientAuth::InsecureTls => {
            tracing::warn!("--keda-insecure-disable-client-auth: ANY CLIENT THAT REACHES THE KEDA PORT CAN READ EVERY NAMESPACE'S DECISIONS");
            Some(certificate.config(server::tls::ClientAuth::None)?)
        }
        KedaClientAuth::ClientCa(ca) => Some(certificate.config(
            server::tls::ClientAuth::Required(ca, &args.keda.keda_client_allowed_names),
        )?),
    };
    let listener = server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the KEDA scaler"))?;
    let local = listener.local_addr()?;
    let scaler = crate::keda::KedaScaler::new(Arc::clone(&running.engine), shutdown.clone());
    let limits = keda_limits(args);
    tracing::info!(address = %local, tls = tls.is_some(), client_ca = args.keda.keda_client_ca_file.is_some(), ?limits, "serving the KEDA external scaler (gRPC)");
    let telemetry = running.telemetry.clone();
    Ok(tokio::spawn(crate::keda::serve(
        listener, tls, scaler, limits, telemetry, shutdown,
    )))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives
/// while the spawned task waiting on it has not run yet must not take the
/// default action (terminate at once, without draining).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => tracing::info!("SIGINT received, shutting down"),
                _ = wait(terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupted, shutting down");
    }
}

/// Starts the Lease election of `--leader-elect`; the receiver says
/// whether this replica leads.
fn start_leader_election(
    args: &ServeArgs,
    client: kube::Client,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let config = crate::leader::LeaderConfig {
        lease_name: args.status.leader_elect_resource_name.clone(),
        namespace: args
            .status
            .leader_elect_resource_namespace
            .clone()
            .unwrap_or_else(|| args.inventory.namespace.clone()),
        identity: crate::leader::default_identity(),
        lease_duration: args.status.leader_elect_lease_duration,
        renew_deadline: args.status.leader_elect_renew_deadline,
        retry_period: args.status.leader_elect_retry_period,
    };
    config.validate()?;
    let (elector, leading) = crate::leader::LeaderElector::new(client, config);
    tasks.push(elector.spawn(shutdown.clone()));
    Ok(leading)
}
