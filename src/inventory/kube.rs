//! `--inventory kube`: variants, scale targets, pods and the thresholds
//! ConfigMap from the cluster, through kube-rs reflectors (list + watch, no
//! polling). Every change rebuilds the snapshot with the same [`resolve`]
//! the file source uses, after a short debounce.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::crd::VariantAutoscaling;
use super::resolve::{resolve, InventoryObjects};
use super::store::InventoryStore;
use crate::saturation::{ThresholdConfig, CONFIGMAP_NAME};

/// How long a burst of changes is collected before the snapshot is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where to watch.
#[derive(Debug, Clone, Default)]
pub struct KubeInventoryConfig {
    /// Namespaces whose variants are served; empty = all.
    pub namespaces: Vec<String>,
    /// Namespace of the thresholds ConfigMap (the server's own, `POD_NAMESPACE`).
    pub own_namespace: String,
}

/// One (group, resource, verbs) the server needs; the ClusterRole in
/// deploy/ must grant each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacRule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What the kube inventory watches and writes.
pub fn required_rbac() -> Vec<RbacRule> {
    const WATCH: &[&str] = &["get", "list", "watch"];
    vec![
        RbacRule {
            api_group: "llmd.ai",
            resource: "variantautoscalings",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "autoscaling",
            resource: "horizontalpodautoscalers",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "keda.sh",
            resource: "scaledobjects",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "deployments",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "statefulsets",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "apps",
            resource: "replicasets",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "",
            resource: "pods",
            verbs: WATCH,
        },
        RbacRule {
            api_group: "",
            resource: "configmaps",
            verbs: WATCH,
        },
    ]
}

/// The stores of every watched kind.
#[derive(Clone)]
struct Stores {
    vas: Store<VariantAutoscaling>,
    hpas: Store<HorizontalPodAutoscaler>,
    scaled_objects: Option<Store<DynamicObject>>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

/// Sync state of one reflector.
struct Source {
    name: &'static str,
    synced: AtomicBool,
}

fn collect<K>(store: &Store<K>, keep: &dyn Fn(&K) -> bool) -> Vec<K>
where
    K: Clone + Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .iter()
        .filter(|o| keep(o))
        .map(|o| (**o).clone())
        .collect()
}

impl Stores {
    fn objects(&self, namespaces: &HashSet<String>) -> InventoryObjects {
        let ns_ok = |ns: Option<String>| {
            namespaces.is_empty() || ns.is_some_and(|n| namespaces.contains(&n))
        };
        InventoryObjects {
            variant_autoscalings: collect(&self.vas, &|o| ns_ok(o.namespace())),
            horizontal_pod_autoscalers: collect(&self.hpas, &|o| ns_ok(o.namespace())),
            scaled_objects: self
                .scaled_objects
                .as_ref()
                .map(|s| collect(s, &|o| ns_ok(o.namespace())))
                .unwrap_or_default(),
            deployments: collect(&self.deployments, &|o| ns_ok(o.namespace())),
            stateful_sets: collect(&self.stateful_sets, &|o| ns_ok(o.namespace())),
            replica_sets: collect(&self.replica_sets, &|o| ns_ok(o.namespace())),
            pods: collect(&self.pods, &|o| ns_ok(o.namespace())),
        }
    }
}

/// Drives one reflector: applies events to its store, marks the source
/// synced after the initial list, and wakes the rebuild on every change.
fn spawn_reflector<K, S>(
    name: &'static str,
    stream: S,
    sources: &mut Vec<Arc<Source>>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let source = Arc::new(Source {
        name,
        synced: AtomicBool::new(false),
    });
    sources.push(Arc::clone(&source));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                None => return,
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        source.synced.store(true, Ordering::Release);
                        tracing::info!(resource = name, "initial list done");
                    }
                    changed.notify_one();
                }
                // The watcher re-lists on its own (410 Gone, cut streams) with backoff.
                Some(Err(e)) => {
                    tracing::warn!(resource = name, error = %e, "watch failed; retrying")
                }
            }
        }
    })
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(strip));
    (reader, stream)
}

fn keep_all<K>(_: &mut K) {}

/// Pods: only metadata and the readiness the analysis needs are kept, to
/// bound memory.
fn strip_pod(p: &mut Pod) {
    p.spec = None;
    p.metadata.managed_fields = None;
    if let Some(s) = p.status.as_mut() {
        s.container_statuses = None;
        s.init_container_statuses = None;
    }
}

fn strip_replica_set(r: &mut ReplicaSet) {
    r.spec = None;
    r.status = None;
    r.metadata.managed_fields = None;
}

/// Starts the reflectors, the rebuild loop and the thresholds watch.
pub async fn start(
    client: Client,
    config: KubeInventoryConfig,
    store: Arc<InventoryStore>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let changed = Arc::new(Notify::new());
    let mut sources = Vec::new();
    let mut tasks = Vec::new();
    let wc = watcher::Config::default;

    macro_rules! watch {
        ($name:literal, $api:expr, $strip:expr) => {{
            let (reader, stream) = reflect($api, wc(), $strip);
            tasks.push(spawn_reflector(
                $name,
                stream,
                &mut sources,
                Arc::clone(&changed),
                shutdown.clone(),
            ));
            reader
        }};
    }
    let vas = watch!(
        "variantautoscalings",
        Api::<VariantAutoscaling>::all(client.clone()),
        keep_all
    );
    let hpas = watch!(
        "horizontalpodautoscalers",
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        keep_all
    );
    let deployments = watch!(
        "deployments",
        Api::<Deployment>::all(client.clone()),
        keep_all
    );
    let stateful_sets = watch!(
        "statefulsets",
        Api::<StatefulSet>::all(client.clone()),
        keep_all
    );
    let replica_sets = watch!(
        "replicasets",
        Api::<ReplicaSet>::all(client.clone()),
        strip_replica_set
    );
    let pods = watch!("pods", Api::<Pod>::all(client.clone()), strip_pod);

    // ScaledObjects only when KEDA's CRD is installed: a missing CRD must
    // not keep the server unready.
    let gvk = GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject");
    let resource = ApiResource::from_gvk(&gvk);
    let so_api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let scaled_objects = match so_api.list(&ListParams::default().limit(1)).await {
        Ok(_) => {
            let writer = reflector::store::Writer::new(resource.clone());
            let reader = writer.as_reader();
            let stream = reflector::reflector(writer, watcher(so_api, wc()).default_backoff());
            tasks.push(spawn_reflector(
                "scaledobjects",
                stream,
                &mut sources,
                Arc::clone(&changed),
                shutdown.clone(),
            ));
            Some(reader)
        }
        Err(e) => {
            tracing::info!(error = %e, "KEDA ScaledObjects are not served by this cluster; annotated ScaledObjects are not watched");
            None
        }
    };

    tasks.push(watch_thresholds(
        client.clone(),
        &config.own_namespace,
        thresholds,
        shutdown.clone(),
    ));

    let stores = Stores {
        vas,
        hpas,
        scaled_objects,
        deployments,
        stateful_sets,
        replica_sets,
        pods,
    };
    let namespaces: HashSet<String> = config.namespaces.iter().cloned().collect();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            let pending: Vec<String> = sources
                .iter()
                .filter(|s| !s.synced.load(Ordering::Acquire))
                .map(|s| s.name.to_owned())
                .collect();
            if !pending.is_empty() {
                store.set_pending(pending);
                continue;
            }
            let (snapshot, problems) = resolve(&stores.objects(&namespaces));
            for p in &problems {
                tracing::warn!(object = %p.object, reason = %p.reason, "cluster object skipped");
            }
            tracing::debug!(
                variants = snapshot.variants().len(),
                pods = snapshot.pods().len(),
                "inventory rebuilt"
            );
            store.publish(snapshot);
        }
    }));
    tasks
}

/// Follows the thresholds ConfigMap. A ConfigMap with any invalid entry
/// keeps the thresholds in force (and logs why); a deleted one (or one that
/// is gone when the watch re-lists) restores the thresholds the server
/// started with: the `--saturation-config` file, else the built-in ones.
fn watch_thresholds(
    client: Client,
    namespace: &str,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let ns = namespace.to_owned();
    let baseline = thresholds.load_full();
    follow_configmap(
        client,
        namespace,
        CONFIGMAP_NAME,
        shutdown,
        move |cm| match cm {
            Some(cm) => apply_thresholds(&cm, &thresholds, &ns),
            None => {
                if !Arc::ptr_eq(&thresholds.load_full(), &baseline) {
                    tracing::info!(
                        namespace = %ns,
                        configmap = CONFIGMAP_NAME,
                        "thresholds ConfigMap deleted; the thresholds the server started with apply again"
                    );
                    thresholds.store(Arc::clone(&baseline));
                }
            }
        },
    )
}

/// Follows one ConfigMap by name, calling `on_change` with every version
/// (the watch re-lists on its own after errors, with backoff). Deletions
/// are not reported; see [`follow_configmap`].
pub fn watch_configmap(
    client: Client,
    namespace: &str,
    name: &'static str,
    shutdown: CancellationToken,
    on_change: impl Fn(ConfigMap) + Send + 'static,
) -> JoinHandle<()> {
    follow_configmap(client, namespace, name, shutdown, move |cm| {
        if let Some(cm) = cm {
            on_change(cm)
        }
    })
}

/// Follows one ConfigMap by name: `on_change(Some(cm))` for every version,
/// `on_change(None)` when it is deleted, or found missing when the watch
/// lists (at start, and after a dropped watch, in which case a deletion
/// that happened meanwhile is seen this way).
pub fn follow_configmap(
    client: Client,
    namespace: &str,
    name: &'static str,
    shutdown: CancellationToken,
    on_change: impl Fn(Option<ConfigMap>) + Send + 'static,
) -> JoinHandle<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                None => return,
                Some(Ok(watcher::Event::Init)) => listed = false,
                Some(Ok(watcher::Event::InitApply(cm))) => {
                    listed = true;
                    on_change(Some(cm));
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if !listed {
                        on_change(None);
                    }
                }
                Some(Ok(watcher::Event::Apply(cm))) => on_change(Some(cm)),
                Some(Ok(watcher::Event::Delete(_))) => on_change(None),
                Some(Err(e)) => {
                    tracing::warn!(configmap = name, error = %e, "ConfigMap watch failed; retrying")
                }
            }
        }
    })
}

fn apply_thresholds(cm: &ConfigMap, thresholds: &ArcSwap<ThresholdConfig>, namespace: &str) {
    let empty = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    let (config, errors) = ThresholdConfig::from_configmap_data(data);
    if errors.is_empty() {
        tracing::info!(
            namespace,
            configmap = CONFIGMAP_NAME,
            "saturation thresholds updated"
        );
        thresholds.store(Arc::new(config));
    } else {
        for e in &errors {
            tracing::error!(namespace, configmap = CONFIGMAP_NAME, error = %e, "invalid saturation thresholds; keeping the previous ones");
        }
    }
}
