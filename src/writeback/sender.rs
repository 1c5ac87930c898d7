//! The sender: writes the queued statuses at the client's pace, furthest
//! from the decision first, with retries, and records Events.

use super::*;

pub(super) struct Sender {
    pub(super) client: Client,
    pub(super) reporter: Reporter,
    /// Events sent in the last minutes, by object, reason and note.
    pub(super) series: Mutex<SeriesCache<(String, String, String, String)>>,
    pub(super) queue: SharedQueue,
    pub(super) wake: Arc<Notify>,
    pub(super) metrics: StatusMetrics,
    /// (namespace, name, reason) -> the minute of the last Event.
    pub(super) gate: Mutex<EventGate<(String, String, String), Event>>,
    /// Permissions whose absence was logged already.
    pub(super) forbidden_logged: Mutex<HashSet<&'static str>>,
    /// Variants whose missing accelerator label was logged already.
    pub(super) no_accelerator_logged: Mutex<HashSet<Key>>,
    /// When deferred Events were last looked for: once a second is enough
    /// for a one-minute gate, and each look walks every gated object.
    pub(super) events_checked: Mutex<Instant>,
    /// Whether this replica leads: the single place where writes are gated.
    pub(super) leading: tokio::sync::watch::Receiver<bool>,
}

/// A lock over plain data that a panicking holder cannot leave half-updated.
fn plain<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Sender {
    pub(super) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
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
    pub(crate) fn object_ref_for(
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
