//! The accelerator inventory of the GPU limiter (`enableLimiter: true`):
//! GPUs allocatable on nodes by accelerator type, minus what scheduled pods
//! request, from two reflectors that keep only the fields needed.
//!
//! Facts as upstream WVA's GPU-operator discovery has them: a node's type
//! is its `<vendor>/gpu.product` label (vendors nvidia.com, amd.com,
//! intel.com), shortened to the model ("NVIDIA-H100-SXM5-80GB" -> "H100")
//! so that it matches the variants' accelerator label; its capacity is
//! `status.allocatable["<vendor>/gpu"]`; a pod uses the sum of its
//! containers' `<vendor>/gpu` requests (or the largest init container's)
//! once it is scheduled on a node, until it succeeds or fails.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the GPU limiter (`enableLimiter`) knows of the cluster: the
/// accelerators free per type, and how many each replica of a variant takes.
pub trait AcceleratorInventory: Send + Sync {
    /// Free accelerators per type (allocatable on nodes minus what running
    /// and pending pods request); None until the inventory has synced.
    fn free_by_type(&self) -> Option<BTreeMap<String, u32>>;
    /// Accelerators per type on the nodes (allocatable, nothing subtracted):
    /// upstream's limiter counts as used only the WVA variants' replicas.
    /// None until synced, or when unknown.
    fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
        None
    }
    /// GPUs one pod of `namespace/pod` requests, when known.
    fn pod_gpus(&self, namespace: &str, pod: &str) -> Option<u32>;
}

/// GPU vendors whose resources and product labels are read.
pub(crate) const VENDORS: [&str; 3] = ["nvidia.com", "amd.com", "intel.com"];

/// The short accelerator name of a product label value.
pub fn normalize_accelerator_name(full: &str) -> String {
    let parts: Vec<&str> = full.split('-').collect();
    if parts.len() < 2 {
        return full.to_owned();
    }
    match parts[0].to_ascii_uppercase().as_str() {
        "NVIDIA" | "AMD" => parts[1].to_owned(),
        "INTEL" if parts.len() >= 3 => format!("{}-{}", parts[1], parts[2]),
        // Any other first word is taken for a vendor too, as upstream does:
        // NVIDIA's older product labels ("Tesla-T4") name the model second.
        _ => parts[1].to_owned(),
    }
}

/// Whole GPUs of a quantity ("8", "8000m"); None when not a number.
fn gpus_of(q: &str) -> Option<u32> {
    let milli = crate::k8s::quantity::parse_milli(q).ok()?;
    u32::try_from((milli / 1000).max(0)).ok()
}

/// A node's accelerator type and allocatable GPUs, if it has any.
pub(crate) fn node_gpus(node: &Node) -> Option<(String, u32)> {
    let labels = node.metadata.labels.as_ref()?;
    let allocatable = node.status.as_ref()?.allocatable.as_ref()?;
    VENDORS.iter().find_map(|vendor| {
        let product = labels.get(&format!("{vendor}/gpu.product"))?;
        let count = allocatable
            .get(&format!("{vendor}/gpu"))
            .and_then(|q| gpus_of(&q.0))?;
        Some((normalize_accelerator_name(product), count))
    })
}

fn container_gpus(c: &Container) -> u32 {
    let Some(resources) = c.resources.as_ref() else {
        return 0;
    };
    // The API server defaults an extended resource's request to its limit
    // (GPUs are usually written as limits only); objects from a file have
    // not been through that defaulting.
    VENDORS
        .iter()
        .filter_map(|v| {
            let name = format!("{v}/gpu");
            resources
                .requests
                .as_ref()
                .and_then(|r| r.get(&name))
                .or_else(|| resources.limits.as_ref().and_then(|l| l.get(&name)))
                .and_then(|q| gpus_of(&q.0))
        })
        .sum()
}

/// GPUs a pod requests: its containers together, or its largest init
/// container (init containers run one after another, before the others).
pub(crate) fn pod_gpus(pod: &Pod) -> u32 {
    pod.spec.as_ref().map_or(0, pod_spec_gpus)
}

/// [`pod_gpus`] of a pod spec (also a workload's pod template).
pub(crate) fn pod_spec_gpus(spec: &k8s_openapi::api::core::v1::PodSpec) -> u32 {
    let regular: u32 = spec.containers.iter().map(container_gpus).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(container_gpus)
        .max()
        .unwrap_or(0);
    regular.max(init)
}

/// Whether a pod holds its GPUs: scheduled, not finished.
pub(crate) fn pod_holds_gpus(pod: &Pod) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    scheduled && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Free GPUs per accelerator type: allocatable on the nodes of that type
/// minus what the pods scheduled on them request (never below 0).
pub fn free_by_type<'a>(
    nodes: impl IntoIterator<Item = (&'a str, String, u32)>,
    pods: impl IntoIterator<Item = (&'a str, u32)>,
) -> BTreeMap<String, u32> {
    let mut type_of: HashMap<&str, String> = HashMap::new();
    let mut free: BTreeMap<String, i64> = BTreeMap::new();
    for (name, accelerator, allocatable) in nodes {
        *free.entry(accelerator.clone()).or_default() += i64::from(allocatable);
        type_of.insert(name, accelerator);
    }
    for (node, gpus) in pods {
        if let Some(t) = type_of.get(node) {
            *free.entry(t.clone()).or_default() -= i64::from(gpus);
        }
    }
    free.into_iter()
        .map(|(k, v)| (k, v.clamp(0, i64::from(u32::MAX)) as u32))
        .collect()
}

/// Keeps only what the limiter reads of a node: name, GPU product labels
/// and GPU allocatable.
fn strip_node(n: &mut Node) {
    n.spec = None;
    n.metadata.managed_fields = None;
    n.metadata.annotations = None;
    if let Some(labels) = n.metadata.labels.as_mut() {
        labels.retain(|k, _| k.ends_with("/gpu.product"));
    }
    if let Some(status) = n.status.as_mut() {
        let allocatable = status.allocatable.take().map(|mut a| {
            a.retain(|k, _| k.ends_with("/gpu"));
            a
        });
        *status = Default::default();
        status.allocatable = allocatable;
    }
}

/// Keeps only what the limiter reads of a pod: name, node, phase and GPU
/// requests.
fn strip_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    p.metadata.labels = None;
    p.metadata.owner_references = None;
    if let Some(status) = p.status.as_mut() {
        let phase = status.phase.take();
        *status = Default::default();
        status.phase = phase;
    }
    if let Some(spec) = p.spec.as_mut() {
        let keep = |c: &mut Container| {
            let requests = c.resources.take().and_then(|r| r.requests).map(|mut r| {
                r.retain(|k, _| k.ends_with("/gpu"));
                r
            });
            *c = Container {
                name: std::mem::take(&mut c.name),
                resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            };
        };
        spec.containers.iter_mut().for_each(keep);
        spec.init_containers.iter_mut().flatten().for_each(keep);
        *spec = k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name.take(),
            containers: std::mem::take(&mut spec.containers),
            init_containers: spec.init_containers.take(),
            ..Default::default()
        };
    }
}

/// The reflectors' stores, read by the decision engine's limiter.
#[derive(Clone)]
pub(crate) struct AcceleratorStore {
    nodes: Store<Node>,
    pods: Store<Pod>,
    synced: Arc<[std::sync::atomic::AtomicBool; 2]>,
}

impl AcceleratorInventory for AcceleratorStore {
    fn capacity_by_type(&self) -> Option<BTreeMap<String, u32>> {
        use std::sync::atomic::Ordering;
        if !self.synced.iter().all(|s| s.load(Ordering::Acquire)) {
            return None;
        }
        let nodes: Vec<(String, String, u32)> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let (t, c) = node_gpus(n)?;
                Some((n.metadata.name.clone()?, t, c))
            })
            .collect();
        Some(free_by_type(
            nodes.iter().map(|(n, t, c)| (n.as_str(), t.clone(), *c)),
            std::iter::empty(),
        ))
    }

    fn free_by_type(&self) -> Option<BTreeMap<String, u32>> {
        use std::sync::atomic::Ordering;
        if !self.synced.iter().all(|s| s.load(Ordering::Acquire)) {
            return None;
        }
        let nodes: Vec<(String, String, u32)> = self
            .nodes
            .state()
            .iter()
            .filter_map(|n| {
                let (t, c) = node_gpus(n)?;
                Some((n.metadata.name.clone()?, t, c))
            })
            .collect();
        let pods: Vec<(String, u32)> = self
            .pods
            .state()
            .iter()
            .filter(|p| pod_holds_gpus(p))
            .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, pod_gpus(p))))
            .collect();
        Some(free_by_type(
            nodes.iter().map(|(n, t, c)| (n.as_str(), t.clone(), *c)),
            pods.iter().map(|(n, g)| (n.as_str(), *g)),
        ))
    }

    fn pod_gpus(&self, namespace: &str, pod: &str) -> Option<u32> {
        let key = reflector::ObjectRef::new(pod).within(namespace);
        self.pods.get(&key).map(|p| pod_gpus(&p))
    }
}

/// Starts the Node and Pod reflectors of the limiter. `node_selector`
/// (upstream's `WVA_NODE_SELECTOR`) limits the Nodes counted, to shard GPUs
/// between instances.
pub(crate) fn start(
    client: Client,
    node_selector: Option<&str>,
    shutdown: CancellationToken,
) -> (AcceleratorStore, Vec<JoinHandle<()>>) {
    let node_config = match node_selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    let synced = Arc::new([
        std::sync::atomic::AtomicBool::new(false),
        std::sync::atomic::AtomicBool::new(false),
    ]);
    let (nodes, node_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let node_stream = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), node_config)
            .default_backoff()
            .modify(strip_node),
    );
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(strip_pod),
    );
    let tasks = vec![
        drive(
            "nodes (accelerators)",
            node_stream,
            Arc::clone(&synced),
            0,
            shutdown.clone(),
        ),
        drive(
            "pods (accelerators)",
            pod_stream,
            Arc::clone(&synced),
            1,
            shutdown,
        ),
    ];
    (
        AcceleratorStore {
            nodes,
            pods,
            synced,
        },
        tasks,
    )
}

fn drive<K, S>(
    name: &'static str,
    stream: S,
    synced: Arc<[std::sync::atomic::AtomicBool; 2]>,
    slot: usize,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    crate::kube_client::watch::drive_watch(
        name,
        stream,
        "--accelerator-inventory needs get, list, watch on nodes (API group core), which deploy/components/accelerator-inventory grants".to_owned(),
        shutdown,
        move |event| {
            if matches!(event, watcher::Event::InitDone) {
                synced[slot].store(true, std::sync::atomic::Ordering::Release);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerator_names_are_shortened_as_upstream() {
        for (full, short) in [
            ("NVIDIA-A100-PCIE-80GB", "A100"),
            ("NVIDIA-H100-SXM5-80GB", "H100"),
            ("AMD-MI300X-192G", "MI300X"),
            ("Intel-Gaudi-2-96GB", "Gaudi-2"),
            ("A100", "A100"),
            ("Acme-X1", "X1"),
            ("Tesla-T4", "T4"),
            ("Tesla-V100-SXM2-16GB", "V100"),
        ] {
            assert_eq!(normalize_accelerator_name(full), short, "{full}");
        }
    }

    fn node(yaml: &str) -> Node {
        serde_norway::from_str(yaml).unwrap()
    }

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn nodes_pods_and_free_gpus() {
        let n = node("metadata: {name: n1, labels: {nvidia.com/gpu.product: NVIDIA-H100-SXM5-80GB}}\nstatus: {allocatable: {nvidia.com/gpu: \"8\", cpu: \"64\"}}");
        assert_eq!(node_gpus(&n), Some(("H100".to_owned(), 8)));
        let cpu_only = node("metadata: {name: n2}\nstatus: {allocatable: {cpu: \"64\"}}");
        assert_eq!(node_gpus(&cpu_only), None);
        let p = pod("metadata: {name: p, namespace: ns}\nspec: {nodeName: n1, containers: [{name: a, resources: {requests: {nvidia.com/gpu: \"2\"}}}, {name: b, resources: {requests: {nvidia.com/gpu: \"1\"}}}], initContainers: [{name: i, resources: {requests: {nvidia.com/gpu: \"4\"}}}]}\nstatus: {phase: Running}");
        assert_eq!(pod_gpus(&p), 4, "the init container's 4 > 2 + 1");
        // A limit alone counts (the API server defaults the request to it);
        // a request, where given, wins.
        let limits = pod("metadata: {name: l}\nspec: {containers: [{name: a, resources: {limits: {nvidia.com/gpu: \"2\"}}}, {name: b, resources: {requests: {amd.com/gpu: \"1\"}, limits: {amd.com/gpu: \"3\"}}}]}");
        assert_eq!(pod_gpus(&limits), 3);
        assert!(pod_holds_gpus(&p));
        let done = pod(
            "metadata: {name: q}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Succeeded}",
        );
        assert!(!pod_holds_gpus(&done));
        let unscheduled =
            pod("metadata: {name: r}\nspec: {containers: []}\nstatus: {phase: Pending}");
        assert!(!pod_holds_gpus(&unscheduled));
        let free = free_by_type(
            [
                ("n1", "H100".to_owned(), 8),
                ("n2", "H100".to_owned(), 4),
                ("n3", "A100".to_owned(), 2),
            ],
            [("n1", 6), ("n2", 3), ("n3", 5), ("elsewhere", 1)],
        );
        assert_eq!(
            free,
            BTreeMap::from([("A100".to_owned(), 0), ("H100".to_owned(), 3)])
        );
    }

    #[test]
    fn stripping_keeps_only_what_the_limiter_reads() {
        let mut n = node("metadata: {name: n1, labels: {nvidia.com/gpu.product: NVIDIA-H100-SXM5-80GB, zone: a}, annotations: {x: y}}\nspec: {podCIDR: 10.0.0.0/24}\nstatus: {allocatable: {nvidia.com/gpu: \"8\", cpu: \"64\"}, capacity: {cpu: \"64\"}}");
        strip_node(&mut n);
        assert_eq!(node_gpus(&n), Some(("H100".to_owned(), 8)));
        assert_eq!(n.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert!(n.spec.is_none() && n.metadata.annotations.is_none());
        let status = n.status.as_ref().unwrap();
        assert!(status.capacity.is_none());
        assert_eq!(status.allocatable.as_ref().map(|a| a.len()), Some(1));
        let mut p = pod("metadata: {name: p, namespace: ns, labels: {a: b}}\nspec: {nodeName: n1, serviceAccountName: sa, containers: [{name: a, image: vllm, args: [--x], resources: {requests: {nvidia.com/gpu: \"2\", memory: 1Gi}}}]}\nstatus: {phase: Running, podIP: 10.0.0.1}");
        strip_pod(&mut p);
        assert_eq!(pod_gpus(&p), 2);
        assert!(pod_holds_gpus(&p));
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.service_account_name.is_none() && spec.containers[0].image.is_none());
        assert!(spec.containers[0].args.is_none());
        assert_eq!(
            spec.containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        assert!(p.status.as_ref().unwrap().pod_ip.is_none() && p.metadata.labels.is_none());
    }
}
