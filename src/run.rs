//! Wires the parts together: inventory source, metrics backend, fetcher,
//! decision engine and HTTPS server. `serve` and `demo` share this path.
//! The flag groups' wiring lives beside this file in `src/run/`: the
//! configuration files, kube clients and Lease, authentication, TLS, the
//! metrics backend and the KEDA port; this file assembles them.

mod auth;
mod backend;
mod checks;
mod clients;
mod config_files;
mod keda;
mod signal;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::discovery::DiscoveryDocuments;
use crate::cli::{InventorySource, ServeArgs};
use crate::collector::fetcher::{CycleOutcome, FetchSchedule, Fetcher};
use crate::collector::{FreshnessPolicy, MetricsBackend, MetricsCache};
use crate::decision::publish::DecisionPublisher;
use crate::decision::DecisionEngine;
use crate::inventory::InventoryStore;
use crate::saturation::{PercentageAnalyzer, ScaleToZeroConfig, ThresholdConfig};
use crate::server::auth::Auth;
use crate::server::{self, App, AppState, ServerLimits, StackConfig};
use crate::telemetry::Telemetry;

use auth::build_auth;
pub use checks::check_before_start;
use clients::{build_kube_clients, start_leader_election};
pub use config_files::load_scale_to_zero;
use config_files::{
    follow_scale_to_zero_configmap, follow_service_classes_configmap, watch_thresholds_file,
};
pub(crate) use config_files::{load_service_classes, load_thresholds, load_thresholds_named};
pub use keda::{keda_client_auth, start_keda};
pub use signal::shutdown_signal;
#[cfg(feature = "emulator")]
pub(crate) use tls::tls_config;
pub use tls::ServingCert;

/// The parts a server is made of, before it runs.
pub struct Components {
    pub(crate) inventory: Arc<InventoryStore>,
    pub(crate) backend: Arc<dyn MetricsBackend>,
    pub(crate) thresholds: Arc<ArcSwap<ThresholdConfig>>,
    /// `wva-model-scale-to-zero-config` (shared by the backend and the decisions).
    pub(crate) scale_to_zero: Arc<ArcSwap<ScaleToZeroConfig>>,
    pub(crate) fetch_interval: Duration,
    pub(crate) freshness: FreshnessPolicy,
    pub(crate) registry: Registry,
    pub(crate) telemetry: Telemetry,
    /// Status write-back to the cluster: client and minimum interval per object.
    pub(crate) status_writer: Option<(kube::Client, Duration)>,
    /// Whether this replica leads (holds the Lease); None: no election, it writes.
    pub(crate) leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// Authentication and authorization; None only when explicitly disabled.
    pub(crate) auth: Option<Arc<Auth>>,
    /// The HPA controller's tolerance band (`--hpa-tolerance`).
    pub(crate) hpa_tolerance: crate::hpa::Tolerances,
    /// Free accelerators for the V2 limiter (`--accelerator-inventory`).
    pub(crate) accelerators: Option<Arc<dyn crate::inventory::accelerators::AcceleratorInventory>>,
    /// `--limiter-on-v2`: the limiter on V2 models too (an extension).
    pub(crate) v2_limiter: bool,
    /// Latency objectives per model (`analyzerName: slo`).
    pub(crate) service_classes: Arc<ArcSwap<crate::saturation::slo::ServiceClasses>>,
}

/// A running server.
pub struct RunningServer {
    /// The bound address (the demo prints it).
    #[cfg(feature = "emulator")]
    pub(crate) addr: SocketAddr,
    pub(crate) engine: Arc<DecisionEngine>,
    pub tasks: Vec<JoinHandle<()>>,
    /// The server's metrics, for listeners started beside it (the KEDA port).
    pub(crate) telemetry: Telemetry,
}

impl RunningServer {
    /// Waits for every task to end (after the shutdown token is cancelled).
    pub(crate) async fn join(self) {
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

/// Builds the components of `serve` from its flags, once
/// [`check_before_start`] has passed them (the caller runs it first, before
/// any task or file watch starts; it is not repeated here).
pub async fn components_from_args(
    args: &ServeArgs,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Components> {
    let freshness = args.metrics.checked_freshness()?;
    crate::config_file::refuse_inapplicable(args).map_err(crate::fatal::CommandError::invalid)?;
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

    let (backend, fetch_interval) =
        backend::metrics_backend(args, &telemetry, &scale_to_zero, shutdown, tasks)?;
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

/// Where and how the HTTPS server listens.
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
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
    let served: Vec<&str> = [
        (groups.external, "external.metrics.k8s.io/v1beta1"),
        (groups.custom, "custom.metrics.k8s.io (v1beta1, v1beta2)"),
    ]
    .into_iter()
    .filter_map(|(on, group)| on.then_some(group))
    .collect();
    tracing::info!(address = %local, "serving {} over HTTPS", served.join(" and "));
    Ok(RunningServer {
        #[cfg(feature = "emulator")]
        addr: local,
        engine,
        tasks,
        telemetry,
    })
}
