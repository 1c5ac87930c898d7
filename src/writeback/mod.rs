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

pub mod queue;

use self::queue::{
    classify, retry_delay, EventGate, FailureClass, Next, Offered, Publish, SeriesCache,
    StatusQueue,
};
use crate::decision::{DecisionEngine, DecisionError};
use crate::inventory::crd::{OptimizedAlloc, VariantAutoscaling, VariantAutoscalingStatus};
use crate::inventory::snapshot::{Variant, VariantSource};
use crate::saturation::TargetReason;

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "wva-metrics-server";

/// The status one decision implies, before times are stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredStatus {
    pub num_replicas: i32,
    pub accelerator: String,
    /// (type, status, reason, message) of each condition.
    pub conditions: Vec<(String, String, String, String)>,
}

fn cond(kind: &str, ok: bool, reason: &str, message: String) -> (String, String, String, String) {
    let status = if ok { "True" } else { "False" };
    (
        kind.to_owned(),
        status.to_owned(),
        reason.to_owned(),
        message,
    )
}

/// `status.desiredOptimizedAlloc.accelerator`'s `minLength` in upstream's CRD.
pub const MIN_ACCELERATOR_CHARS: usize = 2;

/// The status of a variant given its model's outcome. Pure.
pub fn desired_status(
    v: &Variant,
    outcome: &Result<Option<u32>, DecisionError>,
    has_metrics: bool,
) -> DesiredStatus {
    let current = v.target.map(|t| t.spec_replicas).unwrap_or(0);
    let target = match &v.target {
        Some(_) => cond(
            "TargetResolved",
            true,
            "TargetFound",
            format!("{} {} found", v.target_kind, v.target_name),
        ),
        None => cond(
            "TargetResolved",
            false,
            "TargetNotFound",
            format!("{} {} does not exist", v.target_kind, v.target_name),
        ),
    };
    let (desired, metrics, ready) = match outcome {
        Ok(Some(d)) if has_metrics => (
            *d,
            cond(
                "MetricsAvailable",
                true,
                "MetricsFound",
                "saturation metrics of ready replicas are fresh".into(),
            ),
            cond(
                "OptimizationReady",
                true,
                "Optimized",
                format!("desired replicas {d}"),
            ),
        ),
        Ok(d) => (
            d.unwrap_or(current),
            cond(
                "MetricsAvailable",
                false,
                "MetricsMissing",
                "no ready replica reports vLLM metrics; holding".into(),
            ),
            cond(
                "OptimizationReady",
                true,
                "HoldingReplicas",
                "no metrics: holding at the current replicas".into(),
            ),
        ),
        Err(e @ DecisionError::Stale { .. }) => (
            current,
            cond("MetricsAvailable", false, "MetricsStale", e.to_string()),
            cond(
                "OptimizationReady",
                false,
                "MetricsStale",
                "no decision while metrics are stale".into(),
            ),
        ),
        Err(e) => (
            current,
            cond("MetricsAvailable", false, "PrometheusError", e.to_string()),
            cond("OptimizationReady", false, "NoDecision", e.to_string()),
        ),
    };
    let ready = if v.accelerator.chars().count() < MIN_ACCELERATOR_CHARS {
        cond(
            "OptimizationReady",
            false,
            "AcceleratorUnknown",
            format!(
                "no {} label (of at least {MIN_ACCELERATOR_CHARS} characters): desiredOptimizedAlloc is not written, as upstream WVA does and its CRD requires; the served metrics carry desired replicas {desired}",
                crate::inventory::crd::ACCELERATOR_LABEL
            ),
        )
    } else {
        ready
    };
    DesiredStatus {
        num_replicas: i32::try_from(desired).unwrap_or(i32::MAX),
        accelerator: v.accelerator.clone(),
        conditions: vec![target, metrics, ready],
    }
}

/// The `OptimizationReady` condition of a variant whose move is held
/// because the HPA would ignore it (inside its tolerance band) and every
/// larger move is unsafe or out of bounds. None for any other reason.
pub fn tolerance_hold_condition(
    v: &Variant,
    reason: TargetReason,
) -> Option<(String, String, String, String)> {
    let current = v.target.map(|t| t.spec_replicas).unwrap_or(0);
    let message = match reason {
        TargetReason::ToleranceHoldUp => format!(
            "the analysis asks for more replicas, but a one-replica step is inside the HPA's tolerance band and the smallest move outside it is above maxReplicas {}; holding at {current}",
            v.max_replicas
        ),
        TargetReason::ToleranceHoldDown => format!(
            "the analysis allows fewer replicas, but a one-replica step is inside the HPA's tolerance band and every move outside it would leave too little spare capacity or go below minReplicas {}; holding at {current}",
            v.min_replicas.max(1)
        ),
        _ => return None,
    };
    Some(cond(
        "OptimizationReady",
        true,
        "HeldByHPATolerance",
        message,
    ))
}

impl DesiredStatus {
    /// Replaces the `OptimizationReady` condition when the move is held by
    /// the HPA's tolerance band.
    pub fn with_reason(mut self, v: &Variant, reason: Option<TargetReason>) -> Self {
        if let Some(held) = reason.and_then(|r| tolerance_hold_condition(v, r)) {
            for c in &mut self.conditions {
                if c.0 == held.0 {
                    *c = held.clone();
                }
            }
        }
        self
    }

    /// Whether `desiredOptimizedAlloc` can be written: upstream's CRD
    /// requires an accelerator of at least 2 characters, and its
    /// controller skips the allocation of a VariantAutoscaling without one
    /// (writing only its conditions), as we do.
    pub fn has_accelerator(&self) -> bool {
        self.accelerator.chars().count() >= MIN_ACCELERATOR_CHARS
    }

    /// `analyzerName: slo` fell back to another analysis: the
    /// OptimizationReady condition says which signal was missing and who
    /// decided instead (reason `SLOFallback`).
    pub fn with_slo_fallback(
        mut self,
        fallback: Option<crate::saturation::slo::MissingSignal>,
        analyzer: &str,
    ) -> Self {
        let Some(missing) = fallback else {
            return self;
        };
        for c in &mut self.conditions {
            if c.0 == "OptimizationReady" && c.1 == "True" {
                c.2 = "SLOFallback".to_owned();
                c.3 = format!(
                    "{}; analyzerName slo is missing {}, {analyzer} decided",
                    c.3,
                    missing.as_str()
                );
            }
        }
        self
    }

    fn to_status(&self, now: &Time) -> VariantAutoscalingStatus {
        VariantAutoscalingStatus {
            desired_optimized_alloc: self.has_accelerator().then(|| OptimizedAlloc {
                num_replicas: self.num_replicas,
                accelerator: self.accelerator.clone(),
                last_run_time: Some(now.clone()),
            }),
            actuation: None,
            conditions: self
                .conditions
                .iter()
                .map(|(t, s, r, m)| Condition {
                    type_: t.clone(),
                    status: s.clone(),
                    reason: r.clone(),
                    message: m.clone(),
                    last_transition_time: now.clone(),
                    observed_generation: None,
                })
                .collect(),
        }
    }
}

/// An object's key: (namespace, name).
type Key = (String, String);

/// How far a written status is from the desired one, to rank pending
/// writes: a status never written by this process first, then by replicas
/// apart (a one-replica change outranks any change of conditions alone),
/// then by conditions that differ.
pub fn status_distance(written: Option<&DesiredStatus>, desired: &DesiredStatus) -> u64 {
    let Some(written) = written else {
        return u64::MAX;
    };
    let replicas = u64::from(written.num_replicas.abs_diff(desired.num_replicas));
    let conditions = written
        .conditions
        .iter()
        .zip(&desired.conditions)
        .filter(|(a, b)| a != b)
        .count()
        + written.conditions.len().abs_diff(desired.conditions.len());
    let accelerator = usize::from(written.accelerator != desired.accelerator);
    let minor = u64::try_from(conditions + accelerator)
        .unwrap_or(15)
        .min(15);
    replicas.saturating_mul(16).saturating_add(minor)
}

/// Events of one change from `previous` to `now`: a scaling decision, or
/// metrics becoming unavailable. Pure.
pub fn events_for(previous: Option<&DesiredStatus>, now: &DesiredStatus) -> Vec<Event> {
    let metrics = |d: &DesiredStatus| d.conditions.get(1).cloned();
    let mut events = Vec::new();
    if previous.map(|p| p.num_replicas) != Some(now.num_replicas) {
        events.push(Event {
            type_: EventType::Normal,
            reason: "ScalingDecision".into(),
            note: Some(format!("desired replicas {}", now.num_replicas)),
            action: "Decide".into(),
            secondary: None,
        });
    }
    if let Some((_, status, reason, message)) = metrics(now) {
        if status == "False" && previous.and_then(metrics) != metrics(now) {
            events.push(Event {
                type_: EventType::Warning,
                reason: "MetricsUnavailable".into(),
                note: Some(format!("{reason}: {message}")),
                action: "Decide".into(),
                secondary: None,
            });
        }
    }
    events
}

/// Writes in flight at once (each to a different object). One would do if
/// the API server answered within 1/QPS; a few keep the configured rate
/// reachable when it answers slower, and the rate limit still bounds them.
const SENDERS: usize = 4;

/// At most one Event per object and reason per this interval.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// An Event repeated within this long after the last of its series counts
/// in that series (client-go and kube-rs use the same 6 minutes).
pub const EVENT_SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// First retry of a failed write (409, 429, 5xx, no answer); doubles up to
/// [`RETRY_CAP`], with jitter.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// A write refused for a reason a retry will not fix soon (403 RBAC, 400,
/// 422) is tried again after this long (the permission may be granted).
const SLOW_RETRY: Duration = Duration::from_secs(60);

/// Label of the status writer's counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteResultLabels {
    pub result: String,
}

/// The status writer's metrics.
#[derive(Clone, Default)]
pub struct StatusMetrics {
    pending: Gauge,
    writes: Family<WriteResultLabels, Counter>,
    superseded: Counter,
    events: Family<WriteResultLabels, Counter>,
    allocations_skipped: Counter,
}

impl StatusMetrics {
    pub fn register(registry: &mut Registry) -> Self {
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
pub struct StatusWriter {
    client: Client,
    engine: Arc<DecisionEngine>,
    min_interval: Duration,
    reporter: Reporter,
    metrics: StatusMetrics,
    /// Whether this replica holds the leader Lease (see `crate::leader`).
    leading: tokio::sync::watch::Receiver<bool>,
}

impl StatusWriter {
    pub fn new(client: Client, engine: Arc<DecisionEngine>, min_interval: Duration) -> Self {
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
    pub fn with_leader(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }

    /// Exports the backlog and results in `registry`.
    pub fn with_metrics(mut self, registry: &mut Registry) -> Self {
        self.metrics = StatusMetrics::register(registry);
        self
    }

    /// Plans after every notification and sends until shutdown.
    pub fn spawn(self, cycles: Arc<Notify>, shutdown: CancellationToken) -> JoinHandle<()> {
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
        let snapshot = sweep.snapshot();
        let desired_all = planned_statuses(&sweep);
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

/// The desired status of every VariantAutoscaling of the sweep's snapshot,
/// from the sweep's decision of its model.
pub fn planned_statuses(sweep: &crate::decision::Sweep) -> Vec<(Key, DesiredStatus)> {
    let snapshot = sweep.snapshot();
    let mut desired_all = Vec::new();
    for (key, outcome) in &sweep.outcomes {
        for v in snapshot
            .model_variants(key)
            .filter(|v| v.source == VariantSource::VariantAutoscaling)
        {
            desired_all.push((
                (v.namespace.clone(), v.name.clone()),
                variant_status(v, outcome),
            ));
        }
    }
    desired_all
}

/// The status of one variant from its model's outcome: "has metrics" is
/// whichever analysis decided (V1 or V2) having had metrics to decide from.
pub fn variant_status(
    v: &Variant,
    outcome: &Result<crate::decision::ModelOutcome, DecisionError>,
) -> DesiredStatus {
    let (decided, has_metrics, reason, fallback) = match outcome {
        Ok(o) => {
            let d = o.decisions.iter().find(|d| d.variant.name == v.name);
            (
                Ok(d.map(|d| d.desired)),
                o.has_metrics(),
                d.map(|d| d.reason),
                o.slo_fallback.map(|m| (m, o.analyzer)),
            )
        }
        Err(e) => (Err(e.clone()), false, None, None),
    };
    desired_status(v, &decided, has_metrics)
        .with_reason(v, reason)
        .with_slo_fallback(fallback.map(|f| f.0), fallback.map_or("", |f| f.1))
}

struct Sender {
    client: Client,
    reporter: Reporter,
    /// Events sent in the last minutes, by object, reason and note.
    series: Mutex<SeriesCache<(String, String, String, String)>>,
    queue: SharedQueue,
    wake: Arc<Notify>,
    metrics: StatusMetrics,
    /// (namespace, name, reason) -> the minute of the last Event.
    gate: Mutex<EventGate<(String, String, String), Event>>,
    /// Permissions whose absence was logged already.
    forbidden_logged: Mutex<HashSet<&'static str>>,
    /// Variants whose missing accelerator label was logged already.
    no_accelerator_logged: Mutex<HashSet<Key>>,
    /// When deferred Events were last looked for: once a second is enough
    /// for a one-minute gate, and each look walks every gated object.
    events_checked: Mutex<Instant>,
    /// Whether this replica leads: the single place where writes are gated.
    leading: tokio::sync::watch::Receiver<bool>,
}

/// A lock over plain data that a panicking holder cannot leave half-updated.
fn plain<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Sender {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            self.send_due_events().await;
            let next = lock(&self.queue).next(Instant::now());
            // Deferred Events fall due without any new write: look again
            // at least every second.
            let wait_until = match next {
                Next::Send {
                    key,
                    desired,
                    attempt,
                } => {
                    self.write(key, desired, attempt).await;
                    continue;
                }
                Next::WaitUntil(t) => t.min(Instant::now() + Duration::from_secs(1)),
                Next::Idle => Instant::now() + Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(wait_until) => {}
            }
        }
    }

    /// The one place a status write is sent to the API server.
    async fn send_status(
        &self,
        namespace: &str,
        name: &str,
        desired: &DesiredStatus,
    ) -> Result<(), kube::Error> {
        let now = Time(jiff::Timestamp::now());
        let api: Api<VariantAutoscaling> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1",
            "kind": "VariantAutoscaling",
            "status": desired.to_status(&now),
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(name, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
    }

    async fn write(&self, key: Key, desired: DesiredStatus, attempt: u32) {
        let (namespace, name) = (&key.0, &key.1);
        if !*self.leading.borrow() {
            // A follower: the leader writes this. Recorded as written, so
            // that a takeover compares later changes against it.
            lock(&self.queue).mark_written(&key, desired, Instant::now());
            return;
        }
        if !desired.has_accelerator() {
            self.metrics.allocations_skipped.inc();
            if plain(&self.no_accelerator_logged).insert(key.clone()) {
                tracing::warn!(%namespace, variant = %name, label = crate::inventory::crd::ACCELERATOR_LABEL, "the VariantAutoscaling has no accelerator label: its status gets conditions only, no desiredOptimizedAlloc (upstream's CRD requires an accelerator); its metrics are served as usual");
            }
        }
        let result = self.send_status(namespace, name, &desired).await;
        let now = Instant::now();
        match result {
            Ok(()) => {
                tracing::debug!(%namespace, variant = %name, replicas = desired.num_replicas, "status written");
                self.metrics.write("ok");
                let previous = lock(&self.queue).mark_written(&key, desired.clone(), now);
                for event in events_for(previous.as_ref(), &desired) {
                    self.offer_event(namespace, name, event).await;
                }
            }
            Err(e) => {
                let (code, retry_after) = api_answer(&e);
                let retry_at = match classify(code, retry_after) {
                    FailureClass::Retry { retry_after } => {
                        let delay = retry_delay(
                            attempt,
                            RETRY_BASE,
                            RETRY_CAP,
                            rand::random::<f64>(),
                            retry_after,
                        );
                        tracing::warn!(%namespace, variant = %name, code, attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64, error = %e, "status write failed; retrying");
                        self.metrics.write("retry");
                        Some(now + delay)
                    }
                    FailureClass::Forbidden => {
                        self.forbidden(
                            "patch variantautoscalings/status (API group llmd.ai)",
                            namespace,
                            &e,
                        );
                        self.metrics.write("forbidden");
                        Some(now + SLOW_RETRY)
                    }
                    FailureClass::NotFound => {
                        // Deleted: the inventory drops it, and with it the planner's offers.
                        tracing::debug!(%namespace, variant = %name, "status not written: the VariantAutoscaling is gone");
                        self.metrics.write("not_found");
                        lock(&self.queue).mark_dropped(&key);
                        None
                    }
                    FailureClass::Rejected => {
                        tracing::warn!(%namespace, variant = %name, code, error = %e, "status write rejected by the API server");
                        self.metrics.write("rejected");
                        Some(now + SLOW_RETRY)
                    }
                };
                let mut queue = lock(&self.queue);
                if let Some(at) = retry_at {
                    queue.mark_failed(key, desired, attempt, at);
                }
                self.metrics
                    .pending
                    .set(i64::try_from(queue.backlog()).unwrap_or(i64::MAX));
                return;
            }
        }
        self.metrics
            .pending
            .set(i64::try_from(lock(&self.queue).backlog()).unwrap_or(i64::MAX));
    }

    /// A 403: the missing permission is logged once per process, not on
    /// every write.
    fn forbidden(&self, permission: &'static str, namespace: &str, e: &kube::Error) {
        if plain(&self.forbidden_logged).insert(permission) {
            tracing::error!(
                permission,
                %namespace,
                error = %e,
                "the API server refused a write for lack of permission: grant the server's service account this permission (deploy/ ClusterRole); logged once, retried every minute"
            );
        }
    }

    async fn offer_event(&self, namespace: &str, name: &str, event: Event) {
        let key = (namespace.to_owned(), name.to_owned(), event.reason.clone());
        let offered = plain(&self.gate).offer(key, event, Instant::now());
        match offered {
            (Some(event), _) => self.publish(namespace, name, &event).await,
            (None, replaced) => {
                self.metrics
                    .event(if replaced { "replaced" } else { "deferred" });
            }
        }
    }

    async fn send_due_events(&self) {
        let now = Instant::now();
        {
            let mut checked = plain(&self.events_checked);
            if now.saturating_duration_since(*checked) < Duration::from_secs(1) {
                return;
            }
            *checked = now;
        }
        plain(&self.series).expire(now);
        let due = plain(&self.gate).due(now);
        for ((namespace, name, _), event) in due {
            self.publish(&namespace, &name, &event).await;
        }
    }

    /// Sends one Event: a new Event object, or, when the same object had
    /// an Event of the same reason and note within [`EVENT_SERIES_TTL`], a
    /// series of that one (its count and last time), as Kubernetes' event
    /// recorder does. A failed one goes again at the end of the object's
    /// minute (409, 429, 5xx, no answer), unless a newer one replaces it.
    async fn publish(&self, namespace: &str, name: &str, event: &Event) {
        let key = (
            namespace.to_owned(),
            name.to_owned(),
            event.reason.clone(),
            event.note.clone().unwrap_or_default(),
        );
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), namespace);
        // At most two calls: a series whose Event the API server no
        // longer has (404) is created anew at once.
        for _ in 0..2 {
            let plan = plain(&self.series).plan(&key, Instant::now());
            let stamp = jiff::Timestamp::now();
            let result = match &plan {
                Publish::Create => {
                    let object = self.new_event(namespace, name, event, stamp);
                    let created = object.metadata.name.clone().unwrap_or_default();
                    api.create(&PostParams::default(), &object)
                        .await
                        .map(|_| created)
                }
                Publish::Repeat {
                    name: existing,
                    count,
                } => {
                    let patch = serde_json::json!({
                        "series": {"count": count, "lastObservedTime": MicroTime(stamp)}
                    });
                    api.patch(existing, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| existing.clone())
                }
            };
            let now = Instant::now();
            let e = match result {
                Ok(sent) => {
                    let mut series = plain(&self.series);
                    match plan {
                        Publish::Create => series.created(key, sent, now),
                        Publish::Repeat { count, .. } => series.repeated(&key, count, now),
                    }
                    self.metrics.event("sent");
                    return;
                }
                Err(e) => e,
            };
            let (code, retry_after) = api_answer(&e);
            if matches!(plan, Publish::Repeat { .. }) && code == Some(404) {
                plain(&self.series).forget(&key);
                continue;
            }
            self.metrics.event("failed");
            match classify(code, retry_after) {
                FailureClass::Forbidden => {
                    let permission = match plan {
                        Publish::Create => "create events (API group events.k8s.io)",
                        Publish::Repeat { .. } => "patch events (API group events.k8s.io)",
                    };
                    self.forbidden(permission, namespace, &e);
                }
                FailureClass::Retry { .. } => {
                    let gate_key = (namespace.to_owned(), name.to_owned(), event.reason.clone());
                    let again = Event {
                        type_: event.type_,
                        reason: event.reason.clone(),
                        note: event.note.clone(),
                        action: event.action.clone(),
                        secondary: event.secondary.clone(),
                    };
                    let kept = plain(&self.gate).retry(gate_key, again, now);
                    tracing::debug!(%namespace, variant = %name, reason = %event.reason, ?code, kept, error = %e, "cannot record event; trying again when its minute ends");
                }
                FailureClass::NotFound | FailureClass::Rejected => {
                    tracing::warn!(%namespace, variant = %name, reason = %event.reason, ?code, error = %e, "event refused by the API server");
                }
            }
            return;
        }
    }

    /// A new events.k8s.io/v1 Event about the VariantAutoscaling.
    fn new_event(
        &self,
        namespace: &str,
        name: &str,
        event: &Event,
        stamp: jiff::Timestamp,
    ) -> k8s_openapi::api::events::v1::Event {
        k8s_openapi::api::events::v1::Event {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(stamp)),
            regarding: Some(VariantAutoscaling::object_ref_for(namespace, name)),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(format!("{name}.{:x}", stamp.as_nanosecond())),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// The answer's code and `retryAfterSeconds` (None: no answer at all).
fn api_answer(e: &kube::Error) -> (Option<u16>, u32) {
    match e {
        kube::Error::Api(status) => (
            Some(status.code),
            status.details.as_ref().map_or(0, |d| d.retry_after_seconds),
        ),
        _ => (None, 0),
    }
}

impl VariantAutoscaling {
    /// An object reference for Events without the whole object at hand.
    pub fn object_ref_for(
        namespace: &str,
        name: &str,
    ) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(<VariantAutoscaling as Resource>::api_version(&()).into_owned()),
            kind: Some(<VariantAutoscaling as Resource>::kind(&()).into_owned()),
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::snapshot::TargetState;

    fn variant() -> Variant {
        let mut v = Variant {
            namespace: "llm".into(),
            name: "llama".into(),
            model_id: "m".into(),
            target_kind: "Deployment".into(),
            target_name: "llama".into(),
            accelerator: "A100".into(),
            cost: 10.0,
            min_replicas: 11,
            max_replicas: 13,
            source: VariantSource::VariantAutoscaling,
            target: Some(TargetState {
                spec_replicas: 12,
                status_replicas: 12,
                ready_replicas: 12,
            }),
            hpa_scale_up_tolerance: None,
            hpa_scale_down_tolerance: None,
            engine: None,
            metric_labels: Default::default(),
        };
        v.compute_metric_labels();
        v
    }

    /// A file inventory of one VariantAutoscaling on H100 with four ready
    /// pods, decided with `config`; every pod reports `kv` of a 1000 x 16
    /// token KV cache.
    fn file_engine_with_tokens(config: &str, kv: f64) -> DecisionEngine {
        use crate::collector::ReplicaMetrics;
        let mut yaml = "---\nkind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: ns, labels: {inference.optimization/acceleratorName: H100}}\nspec:\n  scaleTargetRef: {kind: Deployment, name: v-d}\n  modelID: m\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: v-d, namespace: ns}\nspec: {replicas: 4, selector: {}, template: {}}\nstatus: {replicas: 4, readyReplicas: 4}\n".to_owned();
        for i in 0..4 {
            yaml.push_str(&format!("---\nkind: Pod\napiVersion: v1\nmetadata: {{name: v-p{i}, namespace: ns, labels: {{llm-d.ai/variant: v}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"));
        }
        let store = Arc::new(crate::inventory::store::InventoryStore::new());
        let objects =
            crate::inventory::file::parse_objects(std::path::Path::new("t"), &yaml).unwrap();
        store.publish(crate::inventory::resolve(&objects).0);
        let (config, errors) = crate::saturation::ThresholdConfig::from_yaml_str(config).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let engine = DecisionEngine::new(
            store,
            Arc::new(crate::collector::MetricsCache::new()),
            Arc::new(arc_swap::ArcSwap::from_pointee(config)),
            Arc::new(crate::saturation::PercentageAnalyzer),
            crate::collector::FreshnessPolicy::default(),
        );
        for i in 0..4 {
            engine.cache().insert(
                crate::inventory::pod_key("ns", &format!("v-p{i}")),
                ReplicaMetrics {
                    model_name: "m".into(),
                    kv_usage: kv,
                    queue_waiting: 0.0,
                    running: None,
                    sampled_at: std::time::SystemTime::now(),
                    request_rate: None,
                    avg_prompt_tokens: Some(100.0),
                    avg_generation_tokens: Some(50.0),
                    prefix_cache_hit_rate: None,
                    kv_cache: Some(crate::saturation::v2::KvCacheConfig {
                        num_gpu_blocks: 1000,
                        block_size: 16,
                    }),
                    activity: None,
                },
            );
        }
        engine
    }

    /// Issue 29, item 1: a variant decided by V2 is written with
    /// `MetricsAvailable=True` and V2's replicas (it was written
    /// `MetricsMissing` and holding, because only V1's analysis counted).
    #[test]
    fn a_variant_decided_by_v2_has_metrics_and_v2s_replicas_in_its_status() {
        for (config, kv, analyzer, want) in [
            (
                "default: {analyzerName: saturation}",
                0.98,
                "saturation-v2",
                6,
            ),
            (
                "default: {analyzerName: saturation}",
                0.10,
                "saturation-v2",
                1,
            ),
            ("default: {}", 0.98, "saturation-v1", 5),
        ] {
            let engine = file_engine_with_tokens(config, kv);
            let decided = engine
                .decide(
                    "ns",
                    &crate::k8s::selector::LabelSelector::parse("").unwrap(),
                )
                .unwrap();
            assert_eq!(
                (decided[0].analyzer, decided[0].desired),
                (analyzer, want),
                "{config} kv {kv}"
            );
            let statuses = planned_statuses(&engine.sweep());
            assert_eq!(statuses.len(), 1);
            let ((ns, name), status) = &statuses[0];
            assert_eq!((ns.as_str(), name.as_str()), ("ns", "v"));
            assert_eq!(status.num_replicas, want as i32, "{config} kv {kv}");
            assert_eq!(status.accelerator, "H100");
            let metrics = &status.conditions[1];
            assert_eq!(
                (metrics.0.as_str(), metrics.1.as_str(), metrics.2.as_str()),
                ("MetricsAvailable", "True", "MetricsFound"),
                "{config} kv {kv}"
            );
            assert_eq!(status.conditions[2].2, "Optimized");
        }
    }

    #[test]
    fn held_moves_say_why_on_the_status() {
        let v = variant();
        let base = desired_status(&v, &Ok(Some(12)), true);
        for (reason, words) in [
            (
                TargetReason::ToleranceHoldUp,
                "above maxReplicas 13; holding at 12",
            ),
            (
                TargetReason::ToleranceHoldDown,
                "below minReplicas 11; holding at 12",
            ),
        ] {
            let s = base.clone().with_reason(&v, Some(reason));
            assert_eq!(s.num_replicas, 12);
            let (kind, status, why, message) = &s.conditions[2];
            assert_eq!(
                (kind.as_str(), status.as_str(), why.as_str()),
                ("OptimizationReady", "True", "HeldByHPATolerance")
            );
            assert!(message.contains(words), "{message}");
            assert_eq!(s.conditions[..2], base.conditions[..2]);
        }
        for reason in [
            None,
            Some(TargetReason::ScaleUp),
            Some(TargetReason::Steady),
        ] {
            assert_eq!(base.clone().with_reason(&v, reason), base);
        }
    }

    #[test]
    fn the_distance_ranks_replicas_over_conditions_and_unwritten_first() {
        let v = variant();
        let at = |n: u32, metrics: bool| desired_status(&v, &Ok(Some(n)), metrics);
        let d = |w: &DesiredStatus, n: &DesiredStatus| status_distance(Some(w), n);
        assert_eq!(status_distance(None, &at(12, true)), u64::MAX);
        assert_eq!(d(&at(12, true), &at(12, true)), 0);
        // Conditions alone (metrics found -> missing: two conditions differ).
        assert_eq!(d(&at(12, true), &at(12, false)), 2);
        // The replicas, and the OptimizationReady message that names them.
        assert_eq!(d(&at(12, true), &at(13, true)), 16 + 1);
        assert_eq!(d(&at(12, true), &at(2, true)), 160 + 1);
        assert_eq!(d(&at(2, true), &at(12, true)), 160 + 1);
        assert!(d(&at(12, true), &at(13, true)) > d(&at(12, true), &at(12, false)));
    }

    #[test]
    fn events_name_each_change_once() {
        let v = variant();
        let found = desired_status(&v, &Ok(Some(12)), true);
        let reasons = |p: Option<&DesiredStatus>, n: &DesiredStatus| -> Vec<String> {
            events_for(p, n).into_iter().map(|e| e.reason).collect()
        };
        assert_eq!(reasons(None, &found), ["ScalingDecision"]);
        assert!(reasons(Some(&found), &found).is_empty());
        let up = desired_status(&v, &Ok(Some(13)), true);
        assert_eq!(reasons(Some(&found), &up), ["ScalingDecision"]);
        let missing = desired_status(&v, &Ok(Some(12)), false);
        assert_eq!(reasons(Some(&found), &missing), ["MetricsUnavailable"]);
        assert!(reasons(Some(&missing), &missing).is_empty());
        assert_eq!(
            events_for(Some(&found), &up)[0].note.as_deref(),
            Some("desired replicas 13")
        );
    }
}
