//! The status and Events a decision implies (pure: nothing is sent here).

use super::*;

/// The status one decision implies, before times are stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DesiredStatus {
    pub(crate) num_replicas: i32,
    pub(crate) accelerator: String,
    /// (type, status, reason, message) of each condition.
    pub(crate) conditions: Vec<(String, String, String, String)>,
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
pub(crate) const MIN_ACCELERATOR_CHARS: usize = 2;

/// The status of a variant given its model's outcome. Pure.
pub(crate) fn desired_status(
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
pub(crate) fn tolerance_hold_condition(
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
    pub(crate) fn with_reason(mut self, v: &Variant, reason: Option<TargetReason>) -> Self {
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
    pub(crate) fn has_accelerator(&self) -> bool {
        self.accelerator.chars().count() >= MIN_ACCELERATOR_CHARS
    }

    /// `analyzerName: slo` fell back to another analysis: the
    /// OptimizationReady condition says which signal was missing and who
    /// decided instead (reason `SLOFallback`).
    pub(crate) fn with_slo_fallback(
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

    pub(crate) fn to_status(&self, now: &Time) -> VariantAutoscalingStatus {
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
pub(crate) type Key = (String, String);

/// How far a written status is from the desired one, to rank pending
/// writes: a status never written by this process first, then by replicas
/// apart (a one-replica change outranks any change of conditions alone),
/// then by conditions that differ.
pub(crate) fn status_distance(written: Option<&DesiredStatus>, desired: &DesiredStatus) -> u64 {
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
pub(crate) fn events_for(previous: Option<&DesiredStatus>, now: &DesiredStatus) -> Vec<Event> {
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

/// The desired status of every VariantAutoscaling of `snapshot` (the one
/// the sweep decided), from the sweep's decision of its model.
pub(crate) fn planned_statuses(
    sweep: &crate::decision::Sweep,
    snapshot: &crate::inventory::InventorySnapshot,
) -> Vec<(Key, DesiredStatus)> {
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
pub(crate) fn variant_status(
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
