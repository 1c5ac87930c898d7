//! The cluster side of `serve`: its kube clients, each behind its own
//! API budget, and the Lease election of `--leader-elect`.

use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;

/// The kube clients of `serve`, each behind its own client-side budget of
/// `--kube-api-qps` / `--kube-api-burst` (watches not counted).
pub(crate) struct KubeClients {
    /// Inventory lists, status writes, Events.
    pub(crate) main: kube::Client,
    /// TokenReviews and SubjectAccessReviews: a budget of their own, so
    /// that authenticating an HPA request never queues behind a backlog of
    /// status writes.
    pub(crate) reviews: kube::Client,
}

/// Builds the kube clients from the inferred configuration (in-cluster
/// service account or KUBECONFIG). The only place clients are built.
pub(crate) async fn build_kube_clients(
    args: &ServeArgs,
    registry: &mut Registry,
) -> anyhow::Result<KubeClients> {
    use crate::kube_client::rate_limit::{retry_above_budget, BudgetMetrics};
    use crate::kube_client::{ApiBudget, ApiRateLimitLayer};
    let config = kube::Config::infer().await?;
    let settings = args.kube_api.rate_limit();
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

/// Starts the Lease election of `--leader-elect`; the receiver says
/// whether this replica leads.
pub(super) fn start_leader_election(
    args: &ServeArgs,
    client: kube::Client,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    let config = args.status.leader_config(&args.inventory.namespace)?;
    let (elector, leading) = crate::leader::LeaderElector::new(client, config);
    tasks.push(elector.spawn(shutdown.clone()));
    Ok(leading)
}
