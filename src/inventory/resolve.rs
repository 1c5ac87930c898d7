//! Turns Kubernetes objects into an [`InventorySnapshot`]: which variants
//! exist, what state their targets are in, and which pods serve them.
//!
//! Pure: the static file source and the cluster reflectors hand the same
//! typed objects to [`resolve`], so both follow one code path.

mod scalers;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::DynamicObject;
use kube::ResourceExt;

use super::crd::{ACCELERATOR_LABEL, DEFAULT_VARIANT_COST};
use super::pods::{PodIp, PodOwner, PodRecord, SCRAPE_PATH_ANNOTATION, SCRAPE_PORT_ANNOTATION};
#[cfg(feature = "emulator")]
use super::projection::{Interner, Project};
use super::variants::VariantRecord;
use super::workloads::{WorkloadKind, WorkloadRecord};
use crate::saturation::v2::EngineParams;
use scalers::{
    hpa_tolerances, scaler_bounds, scaler_from_hpa, scaler_from_scaled_object, TargetKey,
};

use super::snapshot::{labels, InventorySnapshot, ReplicaPod, TargetState, Variant, VariantSource};

/// Pod label that names the variant a pod belongs to.
pub(crate) const VARIANT_LABEL: &str = "llm-d.ai/variant";
/// vLLM's default HTTP port, used when a pod has no port annotation.
pub(crate) const DEFAULT_SCRAPE_PORT: u16 = 8000;
/// Upper bound used when a variant names no maximum: large but finite, so
/// that arithmetic on it cannot overflow.
pub(crate) const UNBOUNDED_MAX_REPLICAS: u32 = 10_000;

/// Annotation that marks an HPA or ScaledObject as a variant (newer WVA).
pub(crate) const MANAGED_ANNOTATION: &str = "llm-d.ai/managed";
/// Annotation naming the model of an annotated scaler.
pub(crate) const MODEL_ID_ANNOTATION: &str = "llm-d.ai/model-id";
/// Annotation with the cost of an annotated scaler's variant.
pub(crate) const VARIANT_COST_ANNOTATION: &str = "llm-d.ai/variant-cost";
/// Label that assigns a VariantAutoscaling (or annotated scaler) to one of
/// several controller instances (upstream WVA's multi-controller isolation).
pub(crate) const CONTROLLER_INSTANCE_LABEL: &str = "wva.llmd.ai/controller-instance";
/// KEDA's defaults for a ScaledObject without replica counts.
const SCALED_OBJECT_DEFAULT_MIN: i64 = 0;
const SCALED_OBJECT_DEFAULT_MAX: i64 = 100;

/// The objects an inventory is made of, shared with the source that keeps
/// them (a rebuild copies `Arc`s, not objects).
#[derive(Debug, Default, Clone)]
pub struct InventoryObjects {
    /// VariantAutoscalings as projected by the source ([`VariantRecord`]).
    pub(crate) variant_autoscalings: Vec<Arc<VariantRecord>>,
    /// HPAs; only those annotated `llm-d.ai/managed: "true"` become variants.
    pub(crate) horizontal_pod_autoscalers: Vec<Arc<HorizontalPodAutoscaler>>,
    /// KEDA ScaledObjects (untyped); only annotated ones become variants.
    pub(crate) scaled_objects: Vec<Arc<DynamicObject>>,
    /// Deployments, StatefulSets and ReplicaSets as projected by the
    /// source ([`WorkloadRecord`]), not typed objects.
    pub(crate) workloads: Vec<Arc<WorkloadRecord>>,
    /// Pods as projected by the source ([`PodRecord`]), not typed objects.
    pub(crate) pods: Vec<Arc<PodRecord>>,
}

/// Built by hand by `demo` (its inventory is made in memory).
#[cfg(feature = "emulator")]
impl InventoryObjects {
    /// Adds a typed VariantAutoscaling as its projection.
    pub(crate) fn add_variant_autoscaling(&mut self, va: &super::crd::VariantAutoscaling) {
        let mut interner = Interner::default();
        self.variant_autoscalings
            .push(Arc::new(VariantRecord::project(va, &mut interner)));
    }

    /// Adds a typed Pod as its projection (for sources that build Pods).
    pub(crate) fn add_pod(&mut self, pod: &k8s_openapi::api::core::v1::Pod) {
        let mut interner = Interner::default();
        self.pods
            .push(Arc::new(PodRecord::project(pod, &mut interner)));
    }

    /// Adds a typed Deployment, StatefulSet or ReplicaSet as its projection.
    pub(crate) fn add_workload<K>(&mut self, object: &K)
    where
        WorkloadRecord: Project<K>,
    {
        let mut interner = Interner::default();
        self.workloads
            .push(Arc::new(WorkloadRecord::project(object, &mut interner)));
    }
}

/// Something in the objects that could not be used, said once per object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveProblem {
    pub(crate) object: String,
    pub(crate) reason: String,
    /// Set when the object was used anyway, with a default in place of the
    /// field the reason names (a warning, for example an unparsable
    /// `variantCost`, which upstream WVA also reads as 10); None when the
    /// object was skipped.
    pub(crate) defaulted: Option<ObjectRef>,
}

/// Kind, namespace and name of an object, for Events about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectRef {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ResolveProblem {
    /// What the object became: used with a default, or skipped.
    pub(crate) fn outcome(&self) -> &'static str {
        if self.defaulted.is_some() {
            "used with a default value"
        } else {
            "skipped"
        }
    }
}

/// How objects become variants beyond what the objects say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// `CONTROLLER_INSTANCE`: when set, only VariantAutoscalings and
    /// annotated scalers labelled `wva.llmd.ai/controller-instance` with this
    /// value are variants, and their items carry `controller_instance`.
    /// When unset, every one is served, as before.
    pub controller_instance: Option<String>,
}

impl ResolveOptions {
    /// Whether an object with these labels belongs to this instance.
    pub fn owns(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match &self.controller_instance {
            None => true,
            Some(me) => labels.get(CONTROLLER_INSTANCE_LABEL) == Some(me),
        }
    }
}

/// Builds the snapshot. Objects that cannot be used are skipped and reported.
pub fn resolve(objects: &InventoryObjects) -> (InventorySnapshot, Vec<ResolveProblem>) {
    resolve_with(objects, &ResolveOptions::default())
}

/// [`resolve`] with options (controller-instance filtering).
pub(crate) fn resolve_with(
    objects: &InventoryObjects,
    options: &ResolveOptions,
) -> (InventorySnapshot, Vec<ResolveProblem>) {
    let mut problems = Vec::new();
    let targets = TargetIndex::new(objects);
    let bounds = scaler_bounds(objects);

    let mut variants = Vec::with_capacity(objects.variant_autoscalings.len());
    for va in objects
        .variant_autoscalings
        .iter()
        .filter(|va| options.owns(&va.labels))
    {
        let object = format!("VariantAutoscaling {}/{}", va.namespace, va.name);
        match variant_from_va(va, &targets, &bounds) {
            Ok((v, warning)) => {
                if let Some(reason) = warning {
                    problems.push(ResolveProblem {
                        object,
                        reason,
                        defaulted: Some(ObjectRef {
                            kind: "VariantAutoscaling",
                            namespace: v.namespace.clone(),
                            name: v.name.clone(),
                        }),
                    });
                }
                variants.push(v)
            }
            Err(reason) => problems.push(ResolveProblem {
                object,
                reason,
                defaulted: None,
            }),
        }
    }

    // Annotated scalers: a VariantAutoscaling wins over a scaler for the same
    // target, and a ScaledObject over an HPA (KEDA drives its own HPA).
    let mut taken: std::collections::HashSet<(String, String, String)> = variants
        .iter()
        .map(|v| {
            (
                v.namespace.clone(),
                v.target_kind.clone(),
                v.target_name.clone(),
            )
        })
        .collect();
    let scalers = objects
        .scaled_objects
        .iter()
        .filter(|so| options.owns(so.labels()))
        .filter_map(|so| {
            scaler_from_scaled_object(so).map(|r| {
                (
                    format!(
                        "ScaledObject {}/{}",
                        so.namespace().unwrap_or_default(),
                        so.name_any()
                    ),
                    r,
                )
            })
        })
        .chain(
            objects
                .horizontal_pod_autoscalers
                .iter()
                .filter(|h| options.owns(h.labels()))
                .filter_map(|h| {
                    scaler_from_hpa(h).map(|r| {
                        (
                            format!(
                                "HorizontalPodAutoscaler {}/{}",
                                h.namespace().unwrap_or_default(),
                                h.name_any()
                            ),
                            r,
                        )
                    })
                }),
        )
        .collect::<Vec<_>>();
    for (object, scaler) in scalers {
        match scaler.and_then(|s| s.into_variant(&targets)) {
            Ok((v, warning)) => {
                if let Some(reason) = warning {
                    problems.push(ResolveProblem {
                        object: object.clone(),
                        reason,
                        defaulted: Some(ObjectRef {
                            kind: match v.source {
                                VariantSource::ScaledObject => "ScaledObject",
                                _ => "HorizontalPodAutoscaler",
                            },
                            namespace: v.namespace.clone(),
                            name: v.name.clone(),
                        }),
                    });
                }
                let key = (
                    v.namespace.clone(),
                    v.target_kind.clone(),
                    v.target_name.clone(),
                );
                if taken.insert(key) {
                    variants.push(v);
                } else {
                    tracing::debug!(%object, "scale target already has a variant; annotated scaler ignored");
                }
            }
            Err(reason) => problems.push(ResolveProblem {
                object,
                reason,
                defaulted: None,
            }),
        }
    }

    if let Some(instance) = &options.controller_instance {
        for v in &mut variants {
            v.metric_labels
                .insert(labels::CONTROLLER_INSTANCE.to_owned(), instance.clone());
        }
    }

    // The tolerance band of the HPA scaling each target, when it sets one.
    let tolerances = hpa_tolerances(&objects.horizontal_pod_autoscalers, &mut problems);
    for v in &mut variants {
        let key = (
            v.namespace.clone(),
            v.target_kind.clone(),
            v.target_name.clone(),
        );
        if let Some(&(up, down)) = tolerances.get(&key) {
            v.hpa_scale_up_tolerance = up;
            v.hpa_scale_down_tolerance = down;
        }
    }

    // Which variants scale which target, to map pods found by owner chain.
    let mut by_target: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (i, v) in variants.iter().enumerate() {
        by_target
            .entry((&v.namespace, &v.target_kind, &v.target_name))
            .or_default()
            .push(i);
    }
    let by_name: HashMap<(&str, &str), usize> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.namespace.as_str(), v.name.as_str()), i))
        .collect();
    // The strings a variant's pods share, made once per variant.
    let shared: Vec<SharedNames> = variants.iter().map(SharedNames::of).collect();
    let default_path: Arc<str> = Arc::from(DEFAULT_SCRAPE_PATH);

    // At most one replica per pod: no doubling growth (a third of a
    // 100,000-pod vector spare, and both copies alive while it grew).
    let mut pods = Vec::with_capacity(objects.pods.len());
    for pod in &objects.pods {
        let ns: &str = &pod.namespace;
        let variant = match pod.labels.get(VARIANT_LABEL) {
            Some(name) => by_name.get(&(ns, name.as_str())).copied(),
            None => targets.owner_target(pod).and_then(|(kind, name)| {
                by_target
                    .get(&(ns, kind, name))
                    .and_then(|vs| vs.first().copied())
            }),
        };
        let Some(variant) = variant else { continue };
        match replica_pod(pod, &shared[variant], &default_path) {
            Ok(p) => pods.push(p),
            Err(reason) => problems.push(ResolveProblem {
                object: format!("Pod {}/{}", ns, pod.name),
                reason,
                defaulted: None,
            }),
        }
    }

    pods.shrink_to_fit();
    (InventorySnapshot::new(variants, pods), problems)
}

/// The variant of a VariantAutoscaling, and a warning when a field was
/// replaced by its default.
fn variant_from_va(
    va: &VariantRecord,
    targets: &TargetIndex,
    bounds: &HashMap<TargetKey, (u32, u32)>,
) -> Result<(Variant, Option<String>), String> {
    let namespace = va
        .namespace()
        .ok_or_else(|| "metadata.namespace is missing".to_owned())?
        .to_owned();
    let spec = &va.spec;
    if spec.model_id.is_empty() {
        return Err("spec.modelID is empty".to_owned());
    }
    let (cost, warning) = parse_cost(spec.variant_cost.as_deref(), "spec.variantCost");
    // Upstream's CRD has no minReplicas/maxReplicas (its API server prunes
    // them): then the bounds of the HPA or ScaledObject scaling the target.
    let scaler = bounds.get(&(
        va.namespace.to_string(),
        spec.scale_target_ref.kind.clone(),
        spec.scale_target_ref.name.clone(),
    ));
    let clamp = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let min = non_negative(
        spec.min_replicas,
        scaler.map_or(1, |b| clamp(b.0)),
        "spec.minReplicas",
    )?;
    let max = non_negative(
        spec.max_replicas,
        scaler.map_or(UNBOUNDED_MAX_REPLICAS as i32, |b| clamp(b.1)),
        "spec.maxReplicas",
    )?;
    if min > max {
        return Err(format!(
            "spec.minReplicas {min} is greater than spec.maxReplicas {max}"
        ));
    }
    let kind = spec.scale_target_ref.kind.clone();
    let name = spec.scale_target_ref.name.clone();
    let target = targets.state(&namespace, &kind, &name);
    let (namespace_of_target, kind_of_target, name_of_target) =
        (namespace.clone(), kind.clone(), name.clone());
    let mut v = Variant {
        accelerator: va
            .labels
            .get(ACCELERATOR_LABEL)
            .cloned()
            .unwrap_or_default(),
        namespace,
        name: va.name.to_string(),
        model_id: spec.model_id.clone(),
        target_kind: kind,
        target_name: name,
        cost,
        min_replicas: min,
        max_replicas: max,
        source: VariantSource::VariantAutoscaling,
        target,
        engine: targets.engine(&namespace_of_target, &kind_of_target, &name_of_target),
        hpa_scale_up_tolerance: None,
        hpa_scale_down_tolerance: None,
        metric_labels: Default::default(),
    };
    v.compute_metric_labels();
    Ok((v, warning))
}

/// A variant's cost. An unparsable (or negative, or non-finite) cost is read
/// as the default 10, as upstream WVA does, with a warning: dropping the
/// variant would stop it from being served at all.
fn parse_cost(cost: Option<&str>, field: &str) -> (f64, Option<String>) {
    match cost.map(str::trim) {
        None | Some("") => (DEFAULT_VARIANT_COST, None),
        Some(s) => match s.parse::<f64>() {
            Ok(c) if c.is_finite() && c >= 0.0 => (c, None),
            _ => (
                DEFAULT_VARIANT_COST,
                Some(format!(
                    "{field} {s:?} is not a non-negative decimal; using the default cost {DEFAULT_VARIANT_COST}"
                )),
            ),
        },
    }
}

fn non_negative(value: Option<i32>, default: i32, field: &str) -> Result<u32, String> {
    let v = value.unwrap_or(default);
    u32::try_from(v).map_err(|_| format!("{field} {v} is negative"))
}

/// A variant's namespace, name and model, shared by its pods' records.
struct SharedNames {
    namespace: Arc<str>,
    name: Arc<str>,
    model_id: Arc<str>,
}

impl SharedNames {
    fn of(v: &Variant) -> Self {
        SharedNames {
            namespace: v.namespace.as_str().into(),
            name: v.name.as_str().into(),
            model_id: v.model_id.as_str().into(),
        }
    }
}

/// The path vLLM serves its metrics on when a pod does not annotate one.
const DEFAULT_SCRAPE_PATH: &str = "/metrics";

fn replica_pod(
    pod: &PodRecord,
    variant: &SharedNames,
    default_path: &Arc<str>,
) -> Result<ReplicaPod, String> {
    let port = match pod.scrape_port.as_deref() {
        None => DEFAULT_SCRAPE_PORT,
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("annotation {SCRAPE_PORT_ANNOTATION}={p:?} is not a port"))?,
    };
    let path = match pod.scrape_path.as_deref() {
        Some(DEFAULT_SCRAPE_PATH) | None => Arc::clone(default_path),
        Some(p) if p.starts_with('/') => Arc::from(p),
        Some(p) => {
            return Err(format!(
                "annotation {SCRAPE_PATH_ANNOTATION}={p:?} must start with '/'"
            ))
        }
    };
    let ip = match &pod.ip {
        PodIp::Missing => None,
        PodIp::Ip(ip) => Some(*ip),
        PodIp::Invalid(s) => return Err(format!("status.podIP {s:?} is not an IP address")),
    };
    Ok(ReplicaPod::new(
        Arc::clone(&variant.namespace),
        &pod.name,
        Arc::clone(&variant.name),
        Arc::clone(&variant.model_id),
        ip,
        port,
        path,
        pod.ready,
        Arc::clone(&pod.labels),
    ))
}

/// Scale targets and ReplicaSet owners, indexed by namespace, kind and name.
struct TargetIndex<'a> {
    /// (namespace, kind, name) -> the workload's projection, borrowed:
    /// the projection already holds counts, engine and owner.
    workloads: HashMap<(&'a str, WorkloadKind, &'a str), &'a WorkloadRecord>,
}

impl<'a> TargetIndex<'a> {
    fn new(objects: &'a InventoryObjects) -> Self {
        TargetIndex {
            workloads: objects
                .workloads
                .iter()
                .map(|w| ((&*w.namespace, w.kind, &*w.name), &**w))
                .collect(),
        }
    }

    fn get(&self, namespace: &str, kind: WorkloadKind, name: &str) -> Option<&'a WorkloadRecord> {
        self.workloads.get(&(namespace, kind, name)).copied()
    }

    /// Replica counts of a Deployment or StatefulSet target.
    fn state(&self, namespace: &str, kind: &str, name: &str) -> Option<TargetState> {
        let kind = match kind {
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            _ => return None,
        };
        self.get(namespace, kind, name).map(|w| w.state)
    }

    /// Engine parameters of a Deployment target (upstream reads
    /// Deployments only; a StatefulSet's variant has none).
    fn engine(&self, namespace: &str, kind: &str, name: &str) -> Option<EngineParams> {
        if kind != "Deployment" {
            return None;
        }
        self.get(namespace, WorkloadKind::Deployment, name)?
            .engine
            .as_deref()
            .cloned()
    }

    /// The scale target owning a pod: Pod -> ReplicaSet -> Deployment, or
    /// Pod -> StatefulSet. When the ReplicaSet itself is not known, its name
    /// minus the pod's `pod-template-hash` suffix is the Deployment's name,
    /// which is how the Deployment controller names ReplicaSets.
    fn owner_target<'p>(&'p self, pod: &'p PodRecord) -> Option<(&'static str, &'p str)> {
        match pod.owner.as_ref()? {
            PodOwner::StatefulSet(name) => Some(("StatefulSet", name)),
            PodOwner::ReplicaSet(rs) => {
                let known = self
                    .get(&pod.namespace, WorkloadKind::ReplicaSet, rs)
                    .and_then(|r| r.owner_deployment.as_deref());
                if let Some(d) = known {
                    return Some(("Deployment", d));
                }
                let hash = pod.labels.get("pod-template-hash")?;
                let name = rs.strip_suffix(hash.as_str())?.strip_suffix('-')?;
                Some(("Deployment", name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> InventoryObjects {
        crate::inventory::file::parse_objects(std::path::Path::new("test.yaml"), yaml).unwrap()
    }

    const BASE: &str = r#"
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: llama-a100, namespace: llm, labels: {inference.optimization/acceleratorName: A100}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama}
  modelID: meta/llama
  variantCost: "20.5"
  maxReplicas: 8
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: llama, namespace: llm}
spec: {replicas: 3, selector: {matchLabels: {app: llama}}, template: {metadata: {labels: {app: llama}}}}
status: {replicas: 3, readyReplicas: 2}
---
apiVersion: v1
kind: Pod
metadata:
  name: by-label
  namespace: llm
  labels: {llm-d.ai/variant: llama-a100}
  annotations: {prometheus.io/port: "9000"}
status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: llama-7d9f-abcde
  namespace: llm
  labels: {pod-template-hash: 7d9f}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: llama-7d9f, uid: u1, controller: true}]
status: {podIP: "fd00::1", conditions: [{type: Ready, status: "False"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: llm}
status: {podIP: 10.0.0.9}
"#;

    /// The engine parameters of a Deployment target reach its variant, in
    /// both forms and from `command` or `args`; the stripped Deployment the
    /// kube source keeps gives the same parameters and no pod template.
    #[test]
    fn engine_parameters_of_deployment_targets() {
        let yaml = r#"
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: a, namespace: llm}
spec: {scaleTargetRef: {kind: Deployment, name: a}, modelID: m}
---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: b, namespace: llm}
spec: {scaleTargetRef: {kind: Deployment, name: b}, modelID: m}
---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: s, namespace: llm}
spec: {scaleTargetRef: {kind: StatefulSet, name: s}, modelID: m}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: a
  namespace: llm
  annotations: {kubectl.kubernetes.io/last-applied-configuration: "{...}"}
  labels: {app: a}
spec:
  replicas: 2
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers:
      - name: vllm
        image: vllm/vllm-openai
        args: ["--model", "m", "--max-num-batched-tokens=2048", "--max-num-seqs", "64"]
        resources: {requests: {nvidia.com/gpu: "2"}}
      - name: sidecar
        image: envoy
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: llm}
spec:
  selector: {matchLabels: {app: b}}
  template:
    spec:
      containers:
      - name: vllm
        command: ["/bin/sh", "-c", "vllm serve m --max-num-seqs=32 --max-num-batched-tokens 1024"]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: s, namespace: llm}
spec:
  serviceName: s
  selector: {matchLabels: {app: s}}
  template:
    spec:
      containers: [{name: vllm, args: ["--max-num-seqs=8"]}]
"#;
        let objs = objects(yaml);
        let engines = |objs: &InventoryObjects| -> Vec<Option<(u64, u64, u32)>> {
            let (snap, problems) = resolve(objs);
            assert!(problems.is_empty(), "{problems:?}");
            let mut vs: Vec<_> = snap
                .variants()
                .iter()
                .map(|v| (v.name.clone(), v.engine.clone()))
                .collect();
            vs.sort_by(|a, b| a.0.cmp(&b.0));
            vs.into_iter()
                .map(|(_, e)| {
                    e.map(|e| (e.max_num_batched_tokens, e.max_num_seqs, e.gpus_per_replica))
                })
                .collect()
        };
        let want = vec![Some((2048, 64, 2)), Some((1024, 32, 1)), None];
        assert_eq!(engines(&objs), want);
        // Replica counts come with the projection.
        let (snap, _) = resolve(&objs);
        let a = snap.variants().iter().find(|v| v.name == "a").unwrap();
        assert_eq!(a.target.map(|t| t.spec_replicas), Some(2));
        // A Deployment without containers runs vLLM's defaults.
        assert_eq!(
            crate::inventory::workloads::deployment_engine(
                &k8s_openapi::api::apps::v1::Deployment::default()
            ),
            EngineParams::default()
        );
    }

    #[test]
    fn variants_targets_and_pods_resolve() {
        let (snap, problems) = resolve(&objects(BASE));
        assert!(problems.is_empty(), "{problems:?}");
        let v = &snap.variants()[0];
        assert_eq!(
            (v.namespace.as_str(), v.name.as_str(), v.model_id.as_str()),
            ("llm", "llama-a100", "meta/llama")
        );
        assert_eq!((v.cost, v.min_replicas, v.max_replicas), (20.5, 1, 8));
        assert_eq!(v.accelerator, "A100");
        assert_eq!(
            v.target,
            Some(TargetState {
                spec_replicas: 3,
                status_replicas: 3,
                ready_replicas: 2
            })
        );
        assert_eq!(v.metric_labels["target_name"], "llama");
        assert_eq!(v.metric_labels["exported_namespace"], "llm");
        let pods: Vec<(&str, bool, u16, Option<String>)> = snap
            .pods()
            .iter()
            .map(|p| (p.name(), p.ready, p.port, p.scrape_url()))
            .collect();
        assert_eq!(
            pods,
            [
                (
                    "by-label",
                    true,
                    9000,
                    Some("http://10.0.0.1:9000/metrics".to_owned())
                ),
                (
                    "llama-7d9f-abcde",
                    false,
                    8000,
                    Some("http://[fd00::1]:8000/metrics".to_owned())
                ),
            ]
        );
        assert_eq!(snap.scrape_targets().count(), 1);
    }

    #[test]
    fn unusable_objects_are_reported_not_fatal() {
        let bad = [
            ("modelID: \"\"", "spec.modelID is empty"),
            (
                "modelID: m\n  minReplicas: 5\n  maxReplicas: 2",
                "greater than",
            ),
            ("modelID: m\n  minReplicas: -1", "negative"),
        ];
        for (fields, reason) in bad {
            let yaml = format!(
                "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: n}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  {fields}\n"
            );
            let (snap, problems) = resolve(&objects(&yaml));
            assert!(snap.variants().is_empty(), "{fields}");
            assert!(
                problems[0].reason.contains(reason),
                "{fields}: {problems:?}"
            );
        }
    }

    #[test]
    fn an_unparsable_cost_is_the_default_with_a_warning() {
        // (variantCost, cost used, warned)
        let cases = [
            ("\"cheap\"", 10.0, true),
            ("\"-3\"", 10.0, true),
            ("\"NaN\"", 10.0, true),
            ("\" 7.5 \"", 7.5, false),
            ("\"\"", 10.0, false),
        ];
        for (cost, used, warned) in cases {
            let yaml = format!(
                "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: n}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: d}}\n  modelID: m\n  variantCost: {cost}\n"
            );
            let (snap, problems) = resolve(&objects(&yaml));
            assert_eq!(snap.variants().len(), 1, "{cost}: the variant is served");
            assert_eq!(snap.variants()[0].cost, used, "{cost}");
            assert_eq!(problems.len(), usize::from(warned), "{cost}: {problems:?}");
            if warned {
                assert!(problems[0].reason.contains("spec.variantCost"));
                assert_eq!(
                    problems[0].defaulted,
                    Some(ObjectRef {
                        kind: "VariantAutoscaling",
                        namespace: "n".into(),
                        name: "v".into()
                    })
                );
            }
        }
    }

    #[test]
    fn controller_instance_filters_variants_and_labels_items() {
        let yaml = |name: &str, label: &str| {
            format!(
                "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: {name}, namespace: n{label}}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: {name}}}\n  modelID: m\n"
            )
        };
        let text = [
            yaml("mine", ", labels: {wva.llmd.ai/controller-instance: a}"),
            yaml("theirs", ", labels: {wva.llmd.ai/controller-instance: b}"),
            yaml("unlabelled", ""),
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: hpa-mine\n  namespace: n\n  labels: {wva.llmd.ai/controller-instance: a}\n  annotations: {llm-d.ai/managed: \"true\", llm-d.ai/model-id: m}\nspec:\n  scaleTargetRef: {kind: Deployment, name: other}\n  maxReplicas: 3\n".to_owned(),
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: hpa-unlabelled\n  namespace: n\n  annotations: {llm-d.ai/managed: \"true\", llm-d.ai/model-id: m}\nspec:\n  scaleTargetRef: {kind: Deployment, name: third}\n  maxReplicas: 3\n".to_owned(),
        ]
        .join("---\n");
        let objs = objects(&text);
        let names = |snap: &InventorySnapshot| {
            let mut n: Vec<String> = snap.variants().iter().map(|v| v.name.clone()).collect();
            n.sort();
            n
        };
        let (all, _) = resolve(&objs);
        assert_eq!(
            names(&all),
            ["hpa-mine", "hpa-unlabelled", "mine", "theirs", "unlabelled"]
        );
        assert!(all
            .variants()
            .iter()
            .all(|v| !v.metric_labels.contains_key(labels::CONTROLLER_INSTANCE)));
        let options = ResolveOptions {
            controller_instance: Some("a".into()),
        };
        let (mine, _) = resolve_with(&objs, &options);
        assert_eq!(names(&mine), ["hpa-mine", "mine"]);
        assert!(mine
            .variants()
            .iter()
            .all(|v| v.metric_labels[labels::CONTROLLER_INSTANCE] == "a"));
    }

    #[test]
    fn annotated_scalers_become_variants() {
        let yaml = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: granite-hpa
  namespace: llm
  annotations: {llm-d.ai/managed: "true", llm-d.ai/model-id: ibm/granite, llm-d.ai/variant-cost: "7.5"}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: granite}
  minReplicas: 2
  maxReplicas: 9
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: plain-hpa, namespace: llm}
spec:
  scaleTargetRef: {kind: Deployment, name: other}
  maxReplicas: 3
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: loser-hpa
  namespace: llm
  annotations: {llm-d.ai/managed: "true", llm-d.ai/model-id: m}
spec:
  scaleTargetRef: {kind: Deployment, name: keda-target}
  maxReplicas: 3
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: keda-so
  namespace: llm
  annotations: {llm-d.ai/managed: "true", llm-d.ai/model-id: m}
spec:
  scaleTargetRef: {name: keda-target}
  maxReplicaCount: 5
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: no-model
  namespace: llm
  annotations: {llm-d.ai/managed: "true"}
spec:
  scaleTargetRef: {kind: Deployment, name: x}
  maxReplicas: 3
"#;
        let (snap, problems) = resolve(&objects(yaml));
        let got: Vec<(&str, &str, u32, u32, f64, VariantSource)> = snap
            .variants()
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.model_id.as_str(),
                    v.min_replicas,
                    v.max_replicas,
                    v.cost,
                    v.source,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "granite-hpa",
                    "ibm/granite",
                    2,
                    9,
                    7.5,
                    VariantSource::HorizontalPodAutoscaler
                ),
                ("keda-so", "m", 0, 5, 10.0, VariantSource::ScaledObject),
            ],
            "the ScaledObject wins over the HPA of the same target; unannotated HPAs are ignored"
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].reason.contains("llm-d.ai/model-id"),
            "{problems:?}"
        );
    }

    #[test]
    fn hpa_behavior_tolerances_reach_the_variant_they_scale() {
        let yaml = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: granite-hpa
  namespace: llm
  annotations: {llm-d.ai/managed: "true", llm-d.ai/model-id: ibm/granite}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: granite}
  maxReplicas: 30
  behavior:
    scaleUp: {tolerance: "0.02"}
    scaleDown: {tolerance: 50m}
---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: llama-a100, namespace: llm}
spec:
  scaleTargetRef: {kind: Deployment, name: llama}
  modelID: llama
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: llama, namespace: llm}
spec:
  scaleTargetRef: {kind: Deployment, name: llama}
  maxReplicas: 30
  behavior:
    scaleUp: {tolerance: "-1"}
    scaleDown: {tolerance: "0.2"}
---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: plain, namespace: llm}
spec:
  scaleTargetRef: {kind: Deployment, name: plain}
  modelID: plain
"#;
        let (snap, problems) = resolve(&objects(yaml));
        let got: Vec<(&str, Option<f64>, Option<f64>)> = snap
            .variants()
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.hpa_scale_up_tolerance,
                    v.hpa_scale_down_tolerance,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("granite-hpa", Some(0.02), Some(0.05)),
                ("llama-a100", None, Some(0.2)),
                ("plain", None, None),
            ]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].object, "HorizontalPodAutoscaler llm/llama");
        assert!(
            problems[0]
                .reason
                .contains("spec.behavior.scaleUp.tolerance: tolerance \"-1\""),
            "{problems:?}"
        );
    }

    #[test]
    fn missing_target_resolves_to_none() {
        let yaml = "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: n}\nspec:\n  scaleTargetRef: {kind: Deployment, name: absent}\n  modelID: m\n";
        let (snap, _) = resolve(&objects(yaml));
        assert_eq!(snap.variants()[0].target, None);
        assert_eq!(snap.variants()[0].ready_replicas(), 0);
    }
}
