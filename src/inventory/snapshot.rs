//! The inventory as the request path sees it: an immutable snapshot of every
//! variant, the state of its scale target and its replica pods.
//!
//! Sources (a static file, the cluster's reflectors, the demo) build a new
//! snapshot whenever something changes and publish it to the
//! [`InventoryStore`](super::InventoryStore); handlers only ever read one.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Labels every served metric item carries; selectors are matched against them.
pub(crate) mod labels {
    pub(crate) const TARGET_NAME: &str = "target_name";
    pub(crate) const TARGET_KIND: &str = "target_kind";
    pub(crate) const VARIANT_NAME: &str = "variant_name";
    pub(crate) const NAMESPACE: &str = "namespace";
    pub(crate) const EXPORTED_NAMESPACE: &str = "exported_namespace";
    pub(crate) const ACCELERATOR_TYPE: &str = "accelerator_type";
    pub(crate) const MODEL_ID: &str = "model_id";
    /// Only with `CONTROLLER_INSTANCE` set, as upstream WVA labels its metrics.
    pub(crate) const CONTROLLER_INSTANCE: &str = "controller_instance";
}

/// Where a variant came from; decides nothing, but shows up in logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantSource {
    VariantAutoscaling,
    HorizontalPodAutoscaler,
    ScaledObject,
}

/// One variant of a model together with the observed state of its scale target.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub namespace: String,
    /// Variant name: the VariantAutoscaling's (or annotated scaler's) name.
    pub name: String,
    pub model_id: String,
    pub(crate) target_kind: String,
    pub target_name: String,
    pub accelerator: String,
    pub cost: f64,
    pub(crate) min_replicas: u32,
    pub(crate) max_replicas: u32,
    pub(crate) source: VariantSource,
    /// Observed target state; `None` when the target does not exist (yet).
    pub target: Option<TargetState>,
    /// The vLLM engine parameters of the target's pods (Deployments only),
    /// for V2's compute-bound capacity; None when unknown.
    pub(crate) engine: Option<crate::saturation::v2::EngineParams>,
    /// `behavior.scaleUp.tolerance` / `behavior.scaleDown.tolerance` of the
    /// HPA that scales this variant's target, when it sets them (Kubernetes
    /// 1.33+): the band that HPA applies instead of the controller default.
    pub(crate) hpa_scale_up_tolerance: Option<f64>,
    pub(crate) hpa_scale_down_tolerance: Option<f64>,
    /// The labels served with every metric item of this variant, precomputed
    /// once per snapshot so that the request path does not build them.
    pub(crate) metric_labels: BTreeMap<String, String>,
}

impl Variant {
    /// Builds the served label set from the other fields.
    pub(crate) fn compute_metric_labels(&mut self) {
        let mut l = BTreeMap::new();
        l.insert(labels::TARGET_NAME.to_owned(), self.target_name.clone());
        l.insert(labels::TARGET_KIND.to_owned(), self.target_kind.clone());
        l.insert(labels::VARIANT_NAME.to_owned(), self.name.clone());
        l.insert(labels::NAMESPACE.to_owned(), self.namespace.clone());
        l.insert(
            labels::EXPORTED_NAMESPACE.to_owned(),
            self.namespace.clone(),
        );
        l.insert(
            labels::ACCELERATOR_TYPE.to_owned(),
            self.accelerator.clone(),
        );
        l.insert(labels::MODEL_ID.to_owned(), self.model_id.clone());
        self.metric_labels = l;
    }

    /// Ready replicas of the target, 0 when the target is missing.
    pub(crate) fn ready_replicas(&self) -> u32 {
        self.target.map(|t| t.ready_replicas).unwrap_or(0)
    }
}

/// Replica counts of a Deployment or StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetState {
    /// `spec.replicas`: what the workload is asked to run.
    pub spec_replicas: u32,
    /// `status.replicas`: pods that exist.
    pub(crate) status_replicas: u32,
    /// `status.readyReplicas`: pods that serve.
    pub(crate) ready_replicas: u32,
}

/// Key of a pod in the metrics cache: `namespace/name` (see [`pod_key`]).
pub(crate) type PodKey = String;

/// Builds the cache key of a pod. Namespaces cannot contain `/`, so the key
/// is unambiguous.
pub fn pod_key(namespace: &str, pod: &str) -> PodKey {
    let mut k = String::with_capacity(namespace.len() + pod.len() + 1);
    k.push_str(namespace);
    k.push('/');
    k.push_str(pod);
    k
}

/// A pod serving a model, with what is needed to scrape it. The strings
/// pods have in common (namespace, variant, model, path) are shared: a
/// snapshot holds 100,000 of these at scale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPod {
    /// `namespace/name`: the key of this pod's entry in the metrics cache,
    /// and where the name is kept ([`ReplicaPod::name`]).
    pub key: String,
    pub(crate) namespace: Arc<str>,
    /// Name of the variant the pod belongs to.
    pub variant: Arc<str>,
    pub(crate) model_id: Arc<str>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: u16,
    pub(crate) path: Arc<str>,
    pub(crate) ready: bool,
    /// The pod's own labels, for label selectors on pods (custom metrics);
    /// shared with the other pods of the same label set.
    pub(crate) labels: Arc<BTreeMap<String, String>>,
}

impl ReplicaPod {
    /// A pod of `namespace` named `name`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        namespace: Arc<str>,
        name: &str,
        variant: Arc<str>,
        model_id: Arc<str>,
        ip: Option<IpAddr>,
        port: u16,
        path: Arc<str>,
        ready: bool,
        labels: Arc<BTreeMap<String, String>>,
    ) -> Self {
        ReplicaPod {
            key: pod_key(&namespace, name),
            namespace,
            variant,
            model_id,
            ip,
            port,
            path,
            ready,
            labels,
        }
    }

    /// The pod's name: the key after `namespace/`.
    pub(crate) fn name(&self) -> &str {
        self.key.get(self.namespace.len() + 1..).unwrap_or_default()
    }

    /// `http://ip:port/path` when the pod has an IP.
    pub(crate) fn scrape_url(&self) -> Option<String> {
        let ip = self.ip?;
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Some(format!("http://{host}:{}{}", self.port, self.path))
    }
}

/// Identifies a model within a namespace: the unit of saturation analysis.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelKey {
    pub(crate) namespace: String,
    pub(crate) model_id: String,
}

/// An immutable view of all variants and pods, with indexes for the request path.
#[derive(Debug, Default)]
pub struct InventorySnapshot {
    variants: Vec<Arc<Variant>>,
    pods: Vec<ReplicaPod>,
    by_namespace: HashMap<String, Vec<usize>>,
    /// namespace -> target name -> variants: the HPA asks for one target
    /// by `target_name=...`; a namespace may hold hundreds of variants.
    by_target: HashMap<String, HashMap<String, Vec<usize>>>,
    by_model: HashMap<ModelKey, ModelMembers>,
    /// namespace -> pod name -> position in `pods`: joins backend rows,
    /// which name pods by those two labels, without building keys.
    pod_positions: HashMap<String, NamespacePods>,
    /// Hashes pod names for `pod_positions`.
    name_hasher: foldhash::fast::RandomState,
    /// Which publish of the [`InventoryStore`](super::InventoryStore) this
    /// is (0 until published): readers that keep something computed from
    /// a snapshot keep this number, not the snapshot, so that a replaced
    /// snapshot is freed as soon as the store lets go of it.
    generation: u64,
}

/// Pod name -> position, with a fast hash: it is probed for every series
/// of every query (600,000 times a cycle at 100,000 pods).
/// A table of positions hashed by the pod's name, which stays in `pods`:
/// a map keyed by a copy of each name took ~6 MB at 100,000 pods.
#[derive(Debug, Default)]
struct NamespacePods {
    positions: hashbrown::HashTable<u32>,
}

/// The pods of one namespace by name ([`InventorySnapshot::pods_of_namespace`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PodPositions<'a> {
    positions: &'a hashbrown::HashTable<u32>,
    pods: &'a [ReplicaPod],
    hasher: &'a foldhash::fast::RandomState,
}

impl PodPositions<'_> {
    /// Position in [`InventorySnapshot::pods`] of the pod with this name.
    pub(crate) fn get(&self, name: &str) -> Option<usize> {
        use std::hash::BuildHasher;
        self.positions
            .find(self.hasher.hash_one(name), |&i| {
                self.pods.get(i as usize).is_some_and(|p| p.name() == name)
            })
            .map(|&i| i as usize)
    }
}

/// Indexes into the snapshot of one model's variants and pods.
#[derive(Debug, Default, Clone)]
pub(crate) struct ModelMembers {
    pub(crate) variants: Vec<usize>,
    pub(crate) pods: Vec<usize>,
}

impl InventorySnapshot {
    /// Builds the indexes. Variants are ordered by (namespace, name) so that
    /// answers list items in a stable order.
    pub(crate) fn new(mut variants: Vec<Variant>, pods: Vec<ReplicaPod>) -> Self {
        variants.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let variants: Vec<Arc<Variant>> = variants.into_iter().map(Arc::new).collect();
        let mut by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_target: HashMap<String, HashMap<String, Vec<usize>>> = HashMap::new();
        let mut by_model: HashMap<ModelKey, ModelMembers> = HashMap::new();
        let mut variant_model: HashMap<(&str, &str), ModelKey> = HashMap::new();
        for (i, v) in variants.iter().enumerate() {
            by_namespace.entry(v.namespace.clone()).or_default().push(i);
            by_target
                .entry(v.namespace.clone())
                .or_default()
                .entry(v.target_name.clone())
                .or_default()
                .push(i);
            let key = ModelKey {
                namespace: v.namespace.clone(),
                model_id: v.model_id.clone(),
            };
            variant_model.insert((&v.namespace, &v.name), key.clone());
            by_model.entry(key).or_default().variants.push(i);
        }
        let name_hasher = foldhash::fast::RandomState::default();
        let hash = |name: &str| std::hash::BuildHasher::hash_one(&name_hasher, name);
        let mut pod_positions: HashMap<String, NamespacePods> = HashMap::new();
        for (i, p) in pods.iter().enumerate() {
            // Positions fit in u32: a snapshot holds far fewer pods.
            let Ok(position) = u32::try_from(i) else {
                break;
            };
            if !pod_positions.contains_key(&*p.namespace) {
                pod_positions.insert(p.namespace.to_string(), NamespacePods::default());
            }
            if let Some(ns) = pod_positions.get_mut(&*p.namespace) {
                // A name seen before in the namespace: the later pod wins,
                // as a map insert did.
                match ns.positions.find_mut(hash(p.name()), |&j| {
                    pods.get(j as usize).is_some_and(|q| q.name() == p.name())
                }) {
                    Some(slot) => *slot = position,
                    None => {
                        ns.positions.insert_unique(hash(p.name()), position, |&j| {
                            pods.get(j as usize).map_or(0, |q| hash(q.name()))
                        });
                    }
                }
            }
            if let Some(key) = variant_model.get(&(&*p.namespace, &*p.variant)) {
                if let Some(members) = by_model.get_mut(key) {
                    members.pods.push(i);
                }
            }
        }
        InventorySnapshot {
            variants,
            pods,
            by_namespace,
            by_target,
            by_model,
            pod_positions,
            name_hasher,
            generation: 0,
        }
    }

    /// Which publish of the store this snapshot is (0 until published).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Numbers the snapshot as the store's `generation`-th publish.
    pub(super) fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// Position in [`InventorySnapshot::pods`] of the pod `namespace/name`.
    pub(crate) fn pod_position(&self, namespace: &str, name: &str) -> Option<usize> {
        self.pods_of_namespace(namespace)?.get(name)
    }

    /// The pods of one namespace by name, for joins that handle many rows
    /// of the same namespace in a row.
    pub(crate) fn pods_of_namespace(&self, namespace: &str) -> Option<PodPositions<'_>> {
        self.pod_positions.get(namespace).map(|ns| PodPositions {
            positions: &ns.positions,
            pods: &self.pods,
            hasher: &self.name_hasher,
        })
    }

    /// Whether a pod with this cache key (`namespace/name`) exists.
    pub(crate) fn has_pod_key(&self, key: &str) -> bool {
        key.split_once('/')
            .is_some_and(|(ns, name)| self.pod_position(ns, name).is_some())
    }

    /// Positions of a model's pods in [`InventorySnapshot::pods`].
    pub(crate) fn model_pod_positions(&self, key: &ModelKey) -> &[usize] {
        self.by_model.get(key).map_or(&[], |m| m.pods.as_slice())
    }

    pub fn variants(&self) -> &[Arc<Variant>] {
        &self.variants
    }

    pub fn pods(&self) -> &[ReplicaPod] {
        &self.pods
    }

    /// Variants of one namespace, in name order.
    pub fn variants_in(&self, namespace: &str) -> impl Iterator<Item = &Arc<Variant>> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(move |&i| &self.variants[i])
    }

    /// Variants of one namespace, in name order, narrowed to one scale
    /// target when `target_name` is given. Callers still match the full
    /// selector; this only skips variants that cannot match.
    pub(crate) fn variants_for_target<'a>(
        &'a self,
        namespace: &str,
        target_name: Option<&str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Variant>> + 'a> {
        match target_name {
            Some(target) => Box::new(
                self.by_target
                    .get(namespace)
                    .and_then(|t| t.get(target))
                    .into_iter()
                    .flatten()
                    .map(move |&i| &self.variants[i]),
            ),
            None => Box::new(self.variants_in(namespace)),
        }
    }

    /// Whether the snapshot has a variant of this model.
    pub(crate) fn has_model(&self, key: &ModelKey) -> bool {
        self.by_model.contains_key(key)
    }

    /// All models and their members.
    pub(crate) fn models(&self) -> impl Iterator<Item = (&ModelKey, &ModelMembers)> {
        self.by_model.iter()
    }

    /// The variants of a model, in name order.
    pub(crate) fn model_variants(&self, key: &ModelKey) -> impl Iterator<Item = &Arc<Variant>> {
        self.by_model
            .get(key)
            .into_iter()
            .flat_map(|m| m.variants.iter())
            .map(move |&i| &self.variants[i])
    }

    /// The pods of a model (ready or not).
    pub(crate) fn model_pods(&self, key: &ModelKey) -> impl Iterator<Item = &ReplicaPod> {
        self.by_model
            .get(key)
            .into_iter()
            .flat_map(|m| m.pods.iter())
            .map(move |&i| &self.pods[i])
    }

    /// Ready pods with an address: what a scraper should visit.
    pub(crate) fn scrape_targets(&self) -> impl Iterator<Item = &ReplicaPod> {
        self.pods.iter().filter(|p| p.ready && p.ip.is_some())
    }
}
