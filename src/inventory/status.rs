//! Writes each VariantAutoscaling's decision and conditions back to its
//! status subresource, and records Events on changes.
//!
//! Only a change is written (times aside), at most once per interval per
//! object. Writes are server-side apply with one field manager and force,
//! so that several server replicas writing the same decision converge
//! instead of fighting over fields.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::crd::{OptimizedAlloc, VariantAutoscaling, VariantAutoscalingStatus};
use super::snapshot::{Variant, VariantSource};
use crate::decision::{DecisionEngine, DecisionError};
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

    fn to_status(&self, now: &Time) -> VariantAutoscalingStatus {
        VariantAutoscalingStatus {
            desired_optimized_alloc: Some(OptimizedAlloc {
                num_replicas: self.num_replicas,
                accelerator: self.accelerator.clone(),
                last_run_time: Some(now.clone()),
            }),
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

/// Writes statuses after fetch cycles.
pub struct StatusWriter {
    client: Client,
    engine: Arc<DecisionEngine>,
    min_interval: Duration,
    recorder: Recorder,
    last: HashMap<(String, String), (DesiredStatus, Instant)>,
    /// Whether this replica holds the leader Lease (see `crate::leader`).
    leading: tokio::sync::watch::Receiver<bool>,
    /// What a follower would have written: once it leads, Events compare
    /// against it, so that a change the old leader reported is not reported
    /// again.
    followed: HashMap<(String, String), DesiredStatus>,
}

impl StatusWriter {
    pub fn new(client: Client, engine: Arc<DecisionEngine>, min_interval: Duration) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            engine,
            min_interval,
            last: HashMap::new(),
            leading: crate::leader::always_leading(),
            followed: HashMap::new(),
        }
    }

    /// Writes only while `leading` says this replica leads.
    pub fn with_leader(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }

    /// Runs after every notification until shutdown.
    pub fn spawn(mut self, cycles: Arc<Notify>, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = cycles.notified() => {}
                }
                self.write_changes().await;
            }
        })
    }

    async fn write_changes(&mut self) {
        let snapshot = self.engine.inventory().load();
        let now = std::time::SystemTime::now();
        let mut keys: Vec<_> = snapshot.models().map(|(k, _)| k.clone()).collect();
        keys.sort();
        for key in keys {
            let outcome = self.engine.decide_model(&snapshot, &key, now);
            for v in snapshot
                .model_variants(&key)
                .filter(|v| v.source == VariantSource::VariantAutoscaling)
            {
                let (decided, has_metrics, reason) = match &outcome {
                    Ok(o) => {
                        let d = o.decisions.iter().find(|d| d.variant.name == v.name);
                        (
                            Ok(d.map(|d| d.desired)),
                            o.has_metrics(),
                            d.map(|d| d.reason),
                        )
                    }
                    Err(e) => (Err(e.clone()), false, None),
                };
                let desired = desired_status(v, &decided, has_metrics).with_reason(v, reason);
                self.write_one(v, desired).await;
            }
        }
        let live: std::collections::HashSet<(String, String)> = snapshot
            .variants()
            .iter()
            .map(|v| (v.namespace.clone(), v.name.clone()))
            .collect();
        self.last.retain(|k, _| live.contains(k));
        self.followed.retain(|k, _| live.contains(k));
    }

    async fn write_one(&mut self, v: &Variant, desired: DesiredStatus) {
        let key = (v.namespace.clone(), v.name.clone());
        if !*self.leading.borrow() {
            // Not the leader: no write, no Event. Forget what we wrote, so
            // that we write everything once on becoming leader again.
            self.last.remove(&key);
            self.followed.insert(key, desired);
            return;
        }
        let previous = self.last.get(&key);
        if previous.is_some_and(|(d, _)| *d == desired) {
            return;
        }
        if previous.is_some_and(|(_, at)| at.elapsed() < self.min_interval) {
            return;
        }
        let now = Time(jiff::Timestamp::now());
        let status = desired.to_status(&now);
        let api: Api<VariantAutoscaling> = Api::namespaced(self.client.clone(), &v.namespace);
        let patch = serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1",
            "kind": "VariantAutoscaling",
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&v.name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(namespace = %v.namespace, variant = %v.name, replicas = desired.num_replicas, "status written");
                let seen = previous
                    .map(|(d, _)| d.clone())
                    .or_else(|| self.followed.remove(&key));
                self.record_events(v, seen, &desired).await;
                self.last.insert(key, (desired, Instant::now()));
            }
            Err(e) => {
                tracing::warn!(namespace = %v.namespace, variant = %v.name, error = %e, "cannot write status")
            }
        }
    }

    /// One Event per change: a scaling decision, or metrics becoming unavailable.
    async fn record_events(
        &self,
        v: &Variant,
        previous: Option<DesiredStatus>,
        now: &DesiredStatus,
    ) {
        let reference = VariantAutoscaling::object_ref_for(&v.namespace, &v.name);
        let metrics = |d: &DesiredStatus| d.conditions.get(1).cloned();
        let mut events = Vec::new();
        if previous.as_ref().map(|p| p.num_replicas) != Some(now.num_replicas) {
            events.push(Event {
                type_: EventType::Normal,
                reason: "ScalingDecision".into(),
                note: Some(format!("desired replicas {}", now.num_replicas)),
                action: "Decide".into(),
                secondary: None,
            });
        }
        if let Some((_, status, reason, message)) = metrics(now) {
            if status == "False" && previous.as_ref().and_then(metrics) != metrics(now) {
                events.push(Event {
                    type_: EventType::Warning,
                    reason: "MetricsUnavailable".into(),
                    note: Some(format!("{reason}: {message}")),
                    action: "Decide".into(),
                    secondary: None,
                });
            }
        }
        for e in events {
            if let Err(err) = self.recorder.publish(&e, &reference).await {
                tracing::debug!(error = %err, "cannot record event");
            }
        }
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
            metric_labels: Default::default(),
        };
        v.compute_metric_labels();
        v
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
}
