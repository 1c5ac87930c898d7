//! The scalers of the variants' targets: the replica bounds of every HPA
//! and ScaledObject, the annotations that make a scaler a variant, and the
//! HPA controller's tolerances.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::DynamicObject;
use kube::ResourceExt;

use super::*;
use super::{
    parse_cost, InventoryObjects, ResolveProblem, MANAGED_ANNOTATION, MODEL_ID_ANNOTATION,
    VARIANT_COST_ANNOTATION,
};
use crate::hpa::parse_tolerance;

/// (minReplicas, maxReplicas) of every HPA and ScaledObject, by the target
/// it scales, annotated or not: a ScaledObject's over the HPA KEDA made
/// for it. Values out of range are left out (the defaults apply).
pub(super) fn scaler_bounds(objects: &InventoryObjects) -> HashMap<TargetKey, (u32, u32)> {
    let mut out = HashMap::new();
    for h in &objects.horizontal_pod_autoscalers {
        let Some(spec) = h.spec.as_ref() else {
            continue;
        };
        let (Ok(min), Ok(max)) = (
            u32::try_from(spec.min_replicas.unwrap_or(1)),
            u32::try_from(spec.max_replicas),
        ) else {
            continue;
        };
        out.insert(
            (
                h.namespace().unwrap_or_default(),
                spec.scale_target_ref.kind.clone(),
                spec.scale_target_ref.name.clone(),
            ),
            (min, max),
        );
    }
    for so in &objects.scaled_objects {
        let spec = so.data.get("spec");
        let int = |k: &str, default: i64| {
            spec.and_then(|s| s.get(k))
                .and_then(|v| v.as_i64())
                .unwrap_or(default)
        };
        let target = spec.and_then(|s| s.get("scaleTargetRef"));
        let text = |k: &str| target.and_then(|t| t.get(k)).and_then(|v| v.as_str());
        let (Ok(min), Ok(max), Some(name)) = (
            u32::try_from(int("minReplicaCount", SCALED_OBJECT_DEFAULT_MIN)),
            u32::try_from(int("maxReplicaCount", SCALED_OBJECT_DEFAULT_MAX)),
            text("name"),
        ) else {
            continue;
        };
        out.insert(
            (
                so.namespace().unwrap_or_default(),
                text("kind").unwrap_or("Deployment").to_owned(),
                name.to_owned(),
            ),
            (min, max),
        );
    }
    out
}

/// A variant declared by an annotated HPA or ScaledObject.
pub(super) struct AnnotatedScaler {
    source: VariantSource,
    namespace: String,
    name: String,
    model_id: String,
    cost: Option<String>,
    accelerator: String,
    min: i64,
    max: i64,
    target_kind: String,
    target_name: String,
}

/// What the annotations of a managed scaler say: model, cost, accelerator.
pub(super) struct ScalerAnnotations {
    model_id: String,
    cost: Option<String>,
    accelerator: String,
}

/// None when the object is not managed; Err when it is but cannot be used.
pub(super) fn annotated(meta: &kube::api::ObjectMeta) -> Option<Result<ScalerAnnotations, String>> {
    let a = meta.annotations.as_ref()?;
    if a.get(MANAGED_ANNOTATION).map(|v| v.trim()) != Some("true") {
        return None;
    }
    let model = match a.get(MODEL_ID_ANNOTATION).map(|m| m.trim()) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => {
            return Some(Err(format!(
                "annotated {MANAGED_ANNOTATION}: \"true\" but has no {MODEL_ID_ANNOTATION}"
            )))
        }
    };
    let accelerator = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(ACCELERATOR_LABEL))
        .or_else(|| a.get(ACCELERATOR_LABEL))
        .cloned()
        .unwrap_or_default();
    Some(Ok(ScalerAnnotations {
        model_id: model,
        cost: a.get(VARIANT_COST_ANNOTATION).cloned(),
        accelerator,
    }))
}

pub(super) fn scaler_from_hpa(
    h: &HorizontalPodAutoscaler,
) -> Option<Result<AnnotatedScaler, String>> {
    let ScalerAnnotations {
        model_id,
        cost,
        accelerator,
    } = match annotated(&h.metadata)? {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let spec = h.spec.as_ref();
    Some(Ok(AnnotatedScaler {
        source: VariantSource::HorizontalPodAutoscaler,
        namespace: h.namespace().unwrap_or_default(),
        name: h.name_any(),
        model_id,
        cost,
        accelerator,
        min: i64::from(spec.and_then(|s| s.min_replicas).unwrap_or(1)),
        max: i64::from(spec.map(|s| s.max_replicas).unwrap_or(0)),
        target_kind: spec
            .map(|s| s.scale_target_ref.kind.clone())
            .unwrap_or_default(),
        target_name: spec
            .map(|s| s.scale_target_ref.name.clone())
            .unwrap_or_default(),
    }))
}

pub(super) fn scaler_from_scaled_object(
    so: &DynamicObject,
) -> Option<Result<AnnotatedScaler, String>> {
    let ScalerAnnotations {
        model_id,
        cost,
        accelerator,
    } = match annotated(&so.metadata)? {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let spec = so.data.get("spec");
    let int = |k: &str, default: i64| {
        spec.and_then(|s| s.get(k))
            .and_then(|v| v.as_i64())
            .unwrap_or(default)
    };
    let target = spec.and_then(|s| s.get("scaleTargetRef"));
    let text = |k: &str| {
        target
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    Some(Ok(AnnotatedScaler {
        source: VariantSource::ScaledObject,
        namespace: so.namespace().unwrap_or_default(),
        name: so.name_any(),
        model_id,
        cost,
        accelerator,
        min: int("minReplicaCount", SCALED_OBJECT_DEFAULT_MIN),
        max: int("maxReplicaCount", SCALED_OBJECT_DEFAULT_MAX),
        target_kind: text("kind").unwrap_or_else(|| "Deployment".to_owned()),
        target_name: text("name").unwrap_or_default(),
    }))
}

impl AnnotatedScaler {
    pub(super) fn into_variant(
        self,
        targets: &TargetIndex,
    ) -> Result<(Variant, Option<String>), String> {
        if self.namespace.is_empty() {
            return Err("metadata.namespace is missing".to_owned());
        }
        if self.target_name.is_empty() {
            return Err("scaleTargetRef has no name".to_owned());
        }
        let (cost, warning) = parse_cost(self.cost.as_deref(), VARIANT_COST_ANNOTATION);
        let bound = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| format!("{what} {v} is out of range"))
        };
        let (min, max) = (
            bound(self.min, "minimum replicas")?,
            bound(self.max, "maximum replicas")?,
        );
        if min > max {
            return Err(format!(
                "minimum replicas {min} is greater than maximum replicas {max}"
            ));
        }
        let target = targets.state(&self.namespace, &self.target_kind, &self.target_name);
        let engine = targets.engine(&self.namespace, &self.target_kind, &self.target_name);
        let mut v = Variant {
            namespace: self.namespace,
            name: self.name,
            model_id: self.model_id,
            target_kind: self.target_kind,
            target_name: self.target_name,
            accelerator: self.accelerator,
            cost,
            min_replicas: min,
            max_replicas: max,
            source: self.source,
            target,
            engine,
            hpa_scale_up_tolerance: None,
            hpa_scale_down_tolerance: None,
            metric_labels: Default::default(),
        };
        v.compute_metric_labels();
        Ok((v, warning))
    }
}

/// (namespace, kind, name) of a scale target.
pub(super) type TargetKey = (String, String, String);

/// `behavior.scaleUp/scaleDown.tolerance` of every HPA that sets one, by
/// the target it scales. A tolerance the HPA controller would reject is
/// reported and left out, so the controller default applies to that side.
pub(super) fn hpa_tolerances(
    hpas: &[Arc<HorizontalPodAutoscaler>],
    problems: &mut Vec<ResolveProblem>,
) -> HashMap<TargetKey, (Option<f64>, Option<f64>)> {
    let mut out = HashMap::new();
    for h in hpas {
        let Some(spec) = h.spec.as_ref() else {
            continue;
        };
        let Some(behavior) = spec.behavior.as_ref() else {
            continue;
        };
        let mut side = |rules: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>,
                        field: &str| {
            let text = &rules?.tolerance.as_ref()?.0;
            match parse_tolerance(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(ResolveProblem {
                        object: format!(
                            "HorizontalPodAutoscaler {}/{}",
                            h.namespace().unwrap_or_default(),
                            h.name_any()
                        ),
                        reason: format!("{field}: {e}; the default tolerance applies"),
                        defaulted: None,
                    });
                    None
                }
            }
        };
        let up = side(
            behavior.scale_up.as_ref(),
            "spec.behavior.scaleUp.tolerance",
        );
        let down = side(
            behavior.scale_down.as_ref(),
            "spec.behavior.scaleDown.tolerance",
        );
        if up.is_some() || down.is_some() {
            out.insert(
                (
                    h.namespace().unwrap_or_default(),
                    spec.scale_target_ref.kind.clone(),
                    spec.scale_target_ref.name.clone(),
                ),
                (up, down),
            );
        }
    }
    out
}
