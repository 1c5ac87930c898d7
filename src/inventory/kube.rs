//! `--inventory kube`: variants, scale targets, pods, namespaces (metadata
//! only) and the thresholds ConfigMaps from the cluster, through kube-rs
//! reflectors (list + watch, no polling). Every change rebuilds the snapshot
//! (an event that changes nothing the source keeps, such as our own status
//! write coming back, is not a change: [`super::changes`])
//! with the same [`resolve_with`] the file source uses, after a short
//! debounce. Namespaces annotated `wva.llmd.ai/exclude: "true"` are left
//! out; the thresholds follow the global ConfigMap and the namespace-local
//! ones of opted-in namespaces ([`super::namespace_config`]).

mod events;
mod rbac;
mod thresholds;
mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::crd::VariantAutoscaling;
use super::namespace_config::{NamespacePolicy, ThresholdsReconciler};
use super::pods::PodRecord;
use super::projection::{Project, ProjectionStore};
use super::resolve::{resolve_with, InventoryObjects, ResolveOptions};
use super::store::InventoryStore;
use super::variants::VariantRecord;
use super::workloads::WorkloadRecord;
use crate::saturation::scale_to_zero::ScaleToZeroConfig;
use crate::saturation::ThresholdConfig;

use events::{object_ref, publish_warning, EVENT_REPORTER};
pub use rbac::required_rbac;
pub use rbac::RbacRule;
use thresholds::{spawn_thresholds_loop, ThresholdsLoop};
use watch::{keep_all, reflect, spawn_reflector, spawn_watch, Sources};

/// How long a burst of changes is collected before the snapshot is rebuilt.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where to watch.
#[derive(Debug, Clone, Default)]
pub(crate) struct KubeInventoryConfig {
    /// Namespaces whose variants are served; empty = all.
    pub(crate) namespaces: Vec<String>,
    /// Namespace of the thresholds ConfigMap (the server's own, `POD_NAMESPACE`).
    pub(crate) own_namespace: String,
    /// `CONTROLLER_INSTANCE`: serve only variants labelled for this instance.
    pub(crate) controller_instance: Option<String>,
    /// Counts ConfigMap versions refused at run time (see [`register_config_rejections`]).
    pub(crate) config_rejections: Option<Family<ConfigRejectionLabels, Counter>>,
    /// Name of the thresholds ConfigMaps (`SATURATION_CONFIG_MAP_NAME`).
    pub(crate) thresholds_configmap: String,
    /// Upstream's `WATCH_NAMESPACE`: its namespace-local ConfigMaps are read
    /// whatever its metadata.
    pub(crate) watch_namespace: Option<String>,
    /// The scale-to-zero configuration in force: namespace-local
    /// `wva-model-scale-to-zero-config` ConfigMaps are added to it by the
    /// same rules as the thresholds' (the global one is followed elsewhere).
    pub(crate) scale_to_zero: Option<Arc<ArcSwap<ScaleToZeroConfig>>>,
}

/// Labels of `wva_config_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ConfigRejectionLabels {
    pub(crate) namespace: String,
    pub(crate) configmap: String,
}

/// Registers `wva_config_rejected_total`: thresholds ConfigMap versions
/// refused at run time (the last good configuration stayed in force).
pub(crate) fn register_config_rejections(
    registry: &mut prometheus_client::registry::Registry,
) -> Family<ConfigRejectionLabels, Counter> {
    let family = Family::<ConfigRejectionLabels, Counter>::default();
    registry.register(
        "wva_config_rejected",
        "Thresholds ConfigMap versions refused; the last good configuration stays in force",
        family.clone(),
    );
    family
}

/// The projections of one watched kind, shared between its watch task and
/// the rebuild loop.
type Projected<K, R> = Arc<Mutex<ProjectionStore<K, R>>>;

/// The stores of every watched kind.
#[derive(Clone)]
struct Stores {
    vas: Projected<VariantAutoscaling, VariantRecord>,
    hpas: Store<HorizontalPodAutoscaler>,
    scaled_objects: Option<Store<DynamicObject>>,
    /// Workloads and pods as projections, not typed objects
    /// ([`super::projection`]).
    deployments: Projected<Deployment, WorkloadRecord>,
    stateful_sets: Projected<StatefulSet, WorkloadRecord>,
    replica_sets: Projected<ReplicaSet, WorkloadRecord>,
    pods: Projected<Pod, PodRecord>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// The objects of a reflector store that `keep` accepts, shared, not copied.
fn collect<K>(store: &Store<K>, keep: &dyn Fn(&K) -> bool) -> Vec<Arc<K>>
where
    K: Clone + Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut all = store.state();
    all.retain(|o| keep(o));
    all
}

/// The projections of namespaces that `keep` accepts.
fn projected<K, R>(store: &Projected<K, R>, keep: impl Fn(&str) -> bool) -> Vec<Arc<R>>
where
    K: Resource,
    R: Project<K>,
{
    store.lock().unwrap_or_else(|p| p.into_inner()).items(keep)
}

/// The namespace policy (exclusion, opt-in) from the namespaces' metadata.
fn namespace_policy(store: &Store<PartialObjectMeta<Namespace>>) -> NamespacePolicy {
    let state = store.state();
    NamespacePolicy::from_namespaces(state.iter().map(|n| {
        (
            n.metadata.name.as_deref().unwrap_or_default(),
            n.metadata.labels.as_ref(),
            n.metadata.annotations.as_ref(),
        )
    }))
}

impl Stores {
    fn objects(&self, namespaces: &HashSet<String>) -> InventoryObjects {
        let policy = namespace_policy(&self.namespaces);
        let ns_ok = |ns: Option<&str>| {
            ns.is_none_or(|n| policy.is_managed(n))
                && (namespaces.is_empty() || ns.is_some_and(|n| namespaces.contains(n)))
        };
        let meta_ok = |m: &kube::api::ObjectMeta| ns_ok(m.namespace.as_deref());
        let mut workloads = projected(&self.deployments, |n| ns_ok(Some(n)));
        workloads.extend(projected(&self.stateful_sets, |n| ns_ok(Some(n))));
        workloads.extend(projected(&self.replica_sets, |n| ns_ok(Some(n))));
        InventoryObjects {
            variant_autoscalings: projected(&self.vas, |n| ns_ok(Some(n))),
            horizontal_pod_autoscalers: collect(&self.hpas, &|o| meta_ok(o.meta())),
            scaled_objects: self
                .scaled_objects
                .as_ref()
                .map(|s| collect(s, &|o| meta_ok(o.meta())))
                .unwrap_or_default(),
            workloads,
            pods: projected(&self.pods, |n| ns_ok(Some(n))),
        }
    }
}

/// Starts the reflectors, the rebuild loop and the thresholds watch.
pub(crate) async fn start(
    client: Client,
    config: KubeInventoryConfig,
    store: Arc<InventoryStore>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let changed = Arc::new(Notify::new());
    let config_changed = Arc::new(Notify::new());
    let mut sources = Sources::new(Arc::clone(&changed));
    let mut tasks = Vec::new();
    let wc = watcher::Config::default;

    macro_rules! watch {
        ($name:literal, $api:expr, $strip:expr) => {{
            let (reader, stream) = reflect($api, wc(), $strip);
            tasks.push(spawn_reflector(
                $name,
                stream,
                &mut sources,
                vec![Arc::clone(&changed)],
                true,
                shutdown.clone(),
            ));
            reader
        }};
    }
    let hpas = watch!(
        "horizontalpodautoscalers",
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        keep_all
    );
    // Workloads and pods: each event is projected as it arrives
    // ([`super::projection`]); no typed object is kept. A Deployment keeps
    // its replica counts and the few engine parameters V2 reads from the
    // pod template, a ReplicaSet its owning Deployment.
    macro_rules! project {
        ($name:literal, $kind:ty) => {
            project!($name, $kind, vec![Arc::clone(&changed)])
        };
        ($name:literal, $kind:ty, $notify:expr) => {{
            let store: Projected<$kind, _> = Arc::new(Mutex::new(ProjectionStore::new()));
            let events = Arc::clone(&store);
            let stream = watcher(Api::<$kind>::all(client.clone()), wc()).default_backoff();
            tasks.push(spawn_watch(
                $name,
                stream,
                &mut sources,
                $notify,
                shutdown.clone(),
                move |event| {
                    events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .apply(event)
                },
            ));
            store
        }};
    }
    // VariantAutoscalings: without the status, which is ours, so that our
    // own status writes coming back change nothing.
    // A VariantAutoscaling also changes which namespaces' local
    // ConfigMaps are read (upstream tracks the namespaces that hold one).
    let vas = project!(
        "variantautoscalings",
        VariantAutoscaling,
        vec![Arc::clone(&changed), Arc::clone(&config_changed)]
    );
    let deployments = project!("deployments", Deployment);
    let stateful_sets = project!("statefulsets", StatefulSet);
    let replica_sets = project!("replicasets", ReplicaSet);
    let pods = project!("pods", Pod);

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
                vec![Arc::clone(&changed)],
                true,
                shutdown.clone(),
            ));
            Some(reader)
        }
        Err(e) => {
            tracing::info!(error = %e, "KEDA ScaledObjects are not served by this cluster; annotated ScaledObjects are not watched");
            None
        }
    };

    // Namespaces, metadata only: a change can exclude variants and switch
    // namespace-local thresholds on or off.
    let (namespaces, stream) = reflect(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        wc(),
        keep_all,
    );
    tasks.push(spawn_reflector(
        "namespaces",
        stream,
        &mut sources,
        vec![Arc::clone(&changed), Arc::clone(&config_changed)],
        true,
        shutdown.clone(),
    ));
    // The thresholds ConfigMaps of every namespace, by name: the global one
    // in the server's namespace and the namespace-local ones.
    let (configmaps, stream) = reflect(
        Api::<ConfigMap>::all(client.clone()),
        wc().fields(&format!("metadata.name={}", config.thresholds_configmap)),
        keep_all,
    );
    tasks.push(spawn_reflector(
        "configmaps",
        stream,
        &mut sources,
        vec![Arc::clone(&config_changed)],
        // Every version counts: a refused one is reported by its resourceVersion.
        false,
        shutdown.clone(),
    ));
    // Namespace-local scale-to-zero ConfigMaps, read by the same rules.
    let zero_configmaps = match &config.scale_to_zero {
        Some(_) => {
            let (store, stream) = reflect(
                Api::<ConfigMap>::all(client.clone()),
                wc().fields(&format!(
                    "metadata.name={}",
                    crate::saturation::scale_to_zero::CONFIGMAP_NAME
                )),
                keep_all,
            );
            tasks.push(spawn_reflector(
                "configmaps (scale to zero)",
                stream,
                &mut sources,
                vec![Arc::clone(&config_changed)],
                true,
                shutdown.clone(),
            ));
            Some(store)
        }
        None => None,
    };
    let reporter = Reporter {
        controller: EVENT_REPORTER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    tasks.push(spawn_thresholds_loop(
        ThresholdsLoop {
            configmaps,
            namespaces: namespaces.clone(),
            reconciler: ThresholdsReconciler::named(
                &config.own_namespace,
                &config.thresholds_configmap,
            ),
            vas: Arc::clone(&vas),
            watch_namespace: config.watch_namespace.clone(),
            own_namespace: config.own_namespace.clone(),
            scale_to_zero: config.scale_to_zero.clone().zip(zero_configmaps),
            thresholds,
            rejections: config.config_rejections.clone(),
            recorder: recorder.clone(),
        },
        config_changed,
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
        namespaces,
    };
    let options = ResolveOptions {
        controller_instance: config.controller_instance.clone(),
    };
    let mut warned: HashSet<(String, String)> = HashSet::new();
    let namespaces: HashSet<String> = config.namespaces.iter().cloned().collect();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            let pending = sources.pending();
            if !pending.is_empty() {
                store.set_pending(pending);
                continue;
            }
            let (snapshot, problems) = resolve_with(&stores.objects(&namespaces), &options);
            let mut still = HashSet::new();
            let mut events = Vec::new();
            for p in &problems {
                // Every rebuild sees the same problems: say each once.
                let key = (p.object.clone(), p.reason.clone());
                still.insert(key.clone());
                if warned.contains(&key) {
                    continue;
                }
                tracing::warn!(object = %p.object, reason = %p.reason, outcome = p.outcome(), "cluster object not used as written");
                if let Some(object) = &p.defaulted {
                    events.push((object_ref(object), p.reason.clone()));
                }
            }
            warned = still;
            tracing::debug!(
                variants = snapshot.variants().len(),
                pods = snapshot.pods().len(),
                "inventory rebuilt"
            );
            store.publish(snapshot);
            // After publishing: the API server's answer must not delay the inventory.
            for (reference, note) in events {
                publish_warning(&recorder, &reference, "InvalidField", &note).await;
            }
        }
    }));
    tasks
}
