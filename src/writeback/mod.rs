//! Writes each VariantAutoscaling's decision and conditions back to its
//! status subresource, and records Events on changes. Above `decision` (it
//! consumes decisions) and `inventory` (it reads the variants), so that the
//! inventory never depends on the decisions made from it.
//!
//! Only a change is written (times aside), at most once per interval per
//! object. Writes are server-side apply with one field manager and force,
//! so that several server replicas writing the same decision converge
//! instead of fighting over fields.
//!
//! At scale (thousands of decisions changing in one cycle) writes are
//! queued, one per object and always the latest ([`queue`]),
//! sent one at a time at the pace of the client's rate limit, furthest from
//! the decision first; Events are limited to one per object and reason per
//! minute. Failed writes are retried with backoff and jitter (409, 429,
//! 5xx; never before `Retry-After`); a 403 is logged once naming the
//! missing permission.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::PostParams;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) mod queue;
mod sender;
mod status;

use self::sender::Sender;
pub(crate) use self::status::*;

use self::queue::{
    classify, retry_delay, EventGate, FailureClass, Next, Offered, Publish, SeriesCache,
    StatusQueue,
};
use crate::decision::{DecisionEngine, DecisionError};
use crate::inventory::crd::{OptimizedAlloc, VariantAutoscaling, VariantAutoscalingStatus};
use crate::inventory::snapshot::{Variant, VariantSource};
use crate::saturation::TargetReason;

/// Field manager of every status write.
pub(crate) const FIELD_MANAGER: &str = "wva-metrics-server";

/// Writes in flight at once (each to a different object). One would do if
/// the API server answered within 1/QPS; a few keep the configured rate
/// reachable when it answers slower, and the rate limit still bounds them.
const SENDERS: usize = 4;

/// At most one Event per object and reason per this interval.
pub(crate) const EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// An Event repeated within this long after the last of its series counts
/// in that series (client-go and kube-rs use the same 6 minutes).
pub(crate) const EVENT_SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// First retry of a failed write (409, 429, 5xx, no answer); doubles up to
/// [`RETRY_CAP`], with jitter.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// A write refused for a reason a retry will not fix soon (403 RBAC, 400,
/// 422) is tried again after this long (the permission may be granted).
const SLOW_RETRY: Duration = Duration::from_secs(60);

/// Label of the status writer's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteResultLabels {
    pub(crate) result: String,
}

/// The status writer's metrics.
#[derive(Clone, Default)]
pub(crate) struct StatusMetrics {
    pending: Gauge,
    writes: Family<WriteResultLabels, Counter>,
    superseded: Counter,
    events: Family<WriteResultLabels, Counter>,
    allocations_skipped: Counter,
}

impl StatusMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = StatusMetrics::default();
        registry.register(
            "wva_status_writes_pending",
            "VariantAutoscaling status writes waiting to be sent (the backlog; one per object at most)",
            m.pending.clone(),
        );
        registry.register(
            "wva_status_writes",
            "VariantAutoscaling status writes by result (ok, retry, forbidden, not_found, rejected)",
            m.writes.clone(),
        );
        registry.register(
            "wva_status_writes_superseded",
            "Pending status writes replaced by a newer decision before they were sent (never sent)",
            m.superseded.clone(),
        );
        registry.register(
            "wva_status_allocations_skipped",
            "Status writes sent without desiredOptimizedAlloc because the VariantAutoscaling has no inference.optimization/acceleratorName label (upstream's CRD requires an accelerator of at least 2 characters; conditions are still written)",
            m.allocations_skipped.clone(),
        );
        registry.register(
            "wva_events",
            "Events by result (sent, deferred: waits for the per-object minute, replaced: a deferred one superseded and never sent, failed)",
            m.events.clone(),
        );
        m
    }

    fn write(&self, result: &str) {
        self.writes
            .get_or_create(&WriteResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    fn event(&self, result: &str) {
        self.events
            .get_or_create(&WriteResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

type SharedQueue = Arc<Mutex<StatusQueue<Key, DesiredStatus>>>;

fn lock(queue: &SharedQueue) -> std::sync::MutexGuard<'_, StatusQueue<Key, DesiredStatus>> {
    // The queue's maps stay consistent between statements; a panic in
    // another holder does not make them unusable.
    match queue.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Writes statuses after fetch cycles: a planner turns every cycle's
/// decisions into the latest desired status per VariantAutoscaling (queued,
/// coalesced), and one sender writes them, furthest from the decision
/// first, paced by the client's rate limit.
pub(crate) struct StatusWriter {
    client: Client,
    engine: Arc<DecisionEngine>,
    min_interval: Duration,
    reporter: Reporter,
    metrics: StatusMetrics,
    /// Whether this replica holds the leader Lease (see `crate::leader`).
    leading: tokio::sync::watch::Receiver<bool>,
}

impl StatusWriter {
    pub(crate) fn new(client: Client, engine: Arc<DecisionEngine>, min_interval: Duration) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        StatusWriter {
            reporter,
            client,
            engine,
            min_interval,
            metrics: StatusMetrics::default(),
            leading: crate::leader::always_leading(),
        }
    }

    /// Writes (and records Events) only while `leading` says this replica
    /// leads; a follower records what it would have written as written, so
    /// that on taking over it neither repeats the old leader's Events nor
    /// rewrites statuses that did not change since.
    pub(crate) fn with_leader(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }

    /// Exports the backlog and results in `registry`.
    pub(crate) fn with_metrics(mut self, registry: &mut Registry) -> Self {
        self.metrics = StatusMetrics::register(registry);
        self
    }

    /// Plans after every notification and sends until shutdown.
    pub(crate) fn spawn(self, cycles: Arc<Notify>, shutdown: CancellationToken) -> JoinHandle<()> {
        let queue: SharedQueue = Arc::new(Mutex::new(StatusQueue::new(
            self.min_interval,
            status_distance,
        )));
        let wake = Arc::new(Notify::new());
        let planner = Planner {
            engine: self.engine,
            queue: Arc::clone(&queue),
            wake: Arc::clone(&wake),
            metrics: self.metrics.clone(),
        };
        let sender = Arc::new(Sender {
            client: self.client,
            reporter: self.reporter,
            series: Mutex::new(SeriesCache::new(EVENT_SERIES_TTL)),
            queue,
            wake,
            metrics: self.metrics,
            gate: Mutex::new(EventGate::new(EVENT_INTERVAL)),
            forbidden_logged: Mutex::new(HashSet::new()),
            no_accelerator_logged: Mutex::new(HashSet::new()),
            events_checked: Mutex::new(Instant::now()),
            leading: self.leading,
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| tokio::spawn(Arc::clone(&sender).run(shutdown.clone())))
            .collect();
        tokio::spawn(async move {
            planner.run(cycles, shutdown).await;
            for s in senders {
                let _ = s.await;
            }
        })
    }
}

struct Planner {
    engine: Arc<DecisionEngine>,
    queue: SharedQueue,
    wake: Arc<Notify>,
    metrics: StatusMetrics,
}

impl Planner {
    async fn run(self, cycles: Arc<Notify>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = cycles.notified() => {}
            }
            self.plan();
            self.wake.notify_waiters();
            self.wake.notify_one();
        }
    }

    /// Offers every VariantAutoscaling's desired status, from the last
    /// sweep (the fetch cycle that notified), to the queue.
    fn plan(&self) {
        let Some(sweep) = self.engine.last_sweep() else {
            return;
        };
        // The sweep keeps its snapshot's generation, not the snapshot: when
        // the inventory was republished since, the next fetch cycle's sweep
        // decides the new one and is planned then.
        let Some(snapshot) = self.engine.snapshot_of(&sweep) else {
            tracing::debug!(
                generation = sweep.generation(),
                "inventory republished since the sweep; statuses planned after the next one"
            );
            return;
        };
        let desired_all = planned_statuses(&sweep, &snapshot);
        let live: HashSet<Key> = snapshot
            .variants()
            .iter()
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect();
        let mut queue = lock(&self.queue);
        let mut superseded = 0;
        for (key, desired) in desired_all {
            if queue.offer(key, desired) == Offered::Superseded {
                superseded += 1;
            }
        }
        queue.retain(|k| live.contains(k));
        self.metrics.superseded.inc_by(superseded);
        self.metrics
            .pending
            .set(i64::try_from(queue.backlog()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests;
