//! `--inventory kube`: variants, scale targets, pods, namespaces (metadata
//! only) and the thresholds ConfigMaps from the cluster, through kube-rs
//! reflectors (list + watch, no polling). Every change rebuilds the snapshot
//! (an event that changes nothing the source keeps, such as our own status
//! write coming back, is not a change: [`super::changes`])
//! with the same [`resolve_with`] the file source uses, after a short
//! debounce. Namespaces annotated `wva.llmd.ai/exclude: "true"` are left
//! out; the thresholds follow the global ConfigMap and the namespace-local
//! ones of opted-in namespaces ([`super::namespace_config`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::changes::{fingerprint, key_of, ChangeFilter, Observed};
use super::crd::VariantAutoscaling;
use super::namespace_config::{ConfigMapData, NamespacePolicy, ThresholdsReconciler};
use super::pods::PodRecord;
use super::projection::{Project, ProjectionStore};
use super::resolve::{resolve_with, InventoryObjects, ObjectRef, ResolveOptions};
use super::store::InventoryStore;
use super::variants::VariantRecord;
use super::workloads::WorkloadRecord;
use crate::saturation::scale_to_zero::ScaleToZeroConfig;
use crate::saturation::ThresholdConfig;

/// How long a burst of changes is collected before the snapshot is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where to watch.
#[derive(Debug, Clone, Default)]
pub struct KubeInventoryConfig {
    /// Namespaces whose variants are served; empty = all.
    pub namespaces: Vec<String>,
    /// Namespace of the thresholds ConfigMap (the server's own, `POD_NAMESPACE`).
    pub own_namespace: String,
    /// `CONTROLLER_INSTANCE`: serve only variants labelled for this instance.
    pub controller_instance: Option<String>,
    /// Counts ConfigMap versions refused at run time (see [`register_config_rejections`]).
    pub config_rejections: Option<Family<ConfigRejectionLabels, Counter>>,
    /// Name of the thresholds ConfigMaps (`SATURATION_CONFIG_MAP_NAME`).
    pub thresholds_configmap: String,
    /// Upstream's `WATCH_NAMESPACE`: its namespace-local ConfigMaps are read
    /// whatever its metadata.
    pub watch_namespace: Option<String>,
    /// The scale-to-zero configuration in force: namespace-local
    /// `wva-model-scale-to-zero-config` ConfigMaps are added to it by the
    /// same rules as the thresholds' (the global one is followed elsewhere).
    pub scale_to_zero: Option<Arc<ArcSwap<ScaleToZeroConfig>>>,
}

/// Labels of `wva_config_rejected_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigRejectionLabels {
    pub namespace: String,
    pub configmap: String,
}

/// Registers `wva_config_rejected_total`: thresholds ConfigMap versions
/// refused at run time (the last good configuration stayed in force).
pub fn register_config_rejections(
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

/// Name the server's Events are reported under.
const EVENT_REPORTER: &str = "wva-metrics-server";

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
        // Metadata only: the exclude annotation and the config-enabled label.
        RbacRule {
            api_group: "",
            resource: "namespaces",
            verbs: WATCH,
        },
    ]
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

/// Sync state of one reflector.
struct Source {
    name: &'static str,
    synced: AtomicBool,
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

/// Drives one reflector: applies events to its store, marks the source
/// synced after the initial list, and wakes the rebuild on every change.
/// With `only_changes`, an event that leaves the object as the store keeps
/// it (a new `resourceVersion` alone, as after one of our own status
/// writes, whose status is stripped) wakes nothing ([`super::changes`]).
fn spawn_reflector<K, S>(
    name: &'static str,
    stream: S,
    sources: &mut Vec<Arc<Source>>,
    changed: Vec<Arc<Notify>>,
    only_changes: bool,
    shutdown: CancellationToken,
) -> JoinHandle<()>
where
    K: Resource + Clone + serde::Serialize + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut filter = ChangeFilter::new();
    spawn_watch(name, stream, sources, changed, shutdown, move |event| {
        !only_changes
            || filter.observe(match event {
                watcher::Event::Init => Observed::Init,
                watcher::Event::InitApply(o) => Observed::InitApply(key_of(&o), fingerprint(o)),
                watcher::Event::InitDone => Observed::InitDone,
                watcher::Event::Apply(o) => Observed::Apply(key_of(&o), fingerprint(o)),
                watcher::Event::Delete(o) => Observed::Delete(key_of(&o)),
            })
    })
}

/// Drives one watch: hands every event to `observe` (which keeps what the
/// source needs and says whether it changed), marks the source synced
/// after the initial list, and wakes the rebuild on every change and when
/// the source first becomes synced.
fn spawn_watch<K, S>(
    name: &'static str,
    stream: S,
    sources: &mut Vec<Arc<Source>>,
    changed: Vec<Arc<Notify>>,
    shutdown: CancellationToken,
    mut observe: impl FnMut(watcher::Event<K>) -> bool + Send + 'static,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let source = Arc::new(Source {
        name,
        synced: AtomicBool::new(false),
    });
    sources.push(Arc::clone(&source));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // A 403 is said once (until the list succeeds again), not on every
        // retry of the watcher's backoff.
        let mut forbidden_logged = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                None => return,
                Some(Ok(event)) => {
                    let mut wake = false;
                    if matches!(event, watcher::Event::InitDone) {
                        forbidden_logged = false;
                        // The first complete list lets the rebuild run.
                        wake = !source.synced.swap(true, Ordering::AcqRel);
                        tracing::info!(resource = name, "initial list done");
                    }
                    if observe(event) || wake {
                        changed.iter().for_each(|c| c.notify_one());
                    }
                }
                // The watcher re-lists on its own (410 Gone, cut streams) with backoff.
                Some(Err(e)) if watch_error_code(&e) == Some(403) => {
                    if forbidden_logged {
                        tracing::debug!(resource = name, error = %e, "list/watch still forbidden; retrying");
                    } else {
                        forbidden_logged = true;
                        tracing::error!(
                            resource = name,
                            permission = %watch_permission(name),
                            error = %e,
                            "the API server refused to list or watch for lack of permission: grant the server's service account this permission (deploy/ ClusterRole); logged once, retried with backoff"
                        );
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(resource = name, error = %e, "watch failed; retrying")
                }
            }
        }
    })
}

/// The API server's answer code of a failed list or watch, if it answered.
pub(crate) fn watch_error_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => match k {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::NoResourceVersion => None,
    }
}

/// The permission a reflector of `resource` needs, as RBAC names it.
fn watch_permission(resource: &str) -> String {
    let group = required_rbac()
        .into_iter()
        .find(|r| r.resource == resource)
        .map_or("", |r| r.api_group);
    let group = if group.is_empty() { "core" } else { group };
    format!("get, list, watch {resource} (API group {group})")
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

/// Starts the reflectors, the rebuild loop and the thresholds watch.
pub async fn start(
    client: Client,
    config: KubeInventoryConfig,
    store: Arc<InventoryStore>,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let changed = Arc::new(Notify::new());
    let config_changed = Arc::new(Notify::new());
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
        // The inventory rebuild too: when this list is the last to finish,
        // its first sync is what lets the inventory publish (and the
        // server become ready).
        vec![Arc::clone(&config_changed), Arc::clone(&changed)],
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
                // The inventory rebuild too: it publishes only once every
                // source has synced, and this list may be the last.
                vec![Arc::clone(&config_changed), Arc::clone(&changed)],
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
            let pending: Vec<String> = sources
                .iter()
                .filter(|s| !s.synced.load(Ordering::Acquire))
                .map(|s| s.name.to_owned())
                .collect();
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

/// What the thresholds loop works with.
struct ThresholdsLoop {
    configmaps: Store<ConfigMap>,
    /// Namespaces holding a VariantAutoscaling have their local ConfigMaps read.
    vas: Projected<VariantAutoscaling, VariantRecord>,
    watch_namespace: Option<String>,
    own_namespace: String,
    /// The scale-to-zero configuration and the ConfigMaps of that name.
    scale_to_zero: Option<(Arc<ArcSwap<ScaleToZeroConfig>>, Store<ConfigMap>)>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    reconciler: ThresholdsReconciler,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    rejections: Option<Family<ConfigRejectionLabels, Counter>>,
    recorder: Recorder,
}

/// Recomputes the thresholds after every change of the ConfigMaps or the
/// namespaces. A ConfigMap version that does not validate keeps the last
/// good configuration of its namespace and is reported once (log, Event on
/// the ConfigMap, `wva_config_rejected_total`); a deleted one restores the
/// global configuration (for the global one: the defaults).
fn spawn_thresholds_loop(
    mut l: ThresholdsLoop,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            let tracked: HashSet<String> = projected(&l.vas, |_| true)
                .iter()
                .map(|va| va.namespace.to_string())
                .collect();
            let policy = namespace_policy(&l.namespaces)
                .with_tracked(tracked.iter().map(String::as_str))
                .with_watch_namespace(l.watch_namespace.as_deref());
            if let Some((zero, store)) = &l.scale_to_zero {
                update_local_scale_to_zero(zero, store, &policy, &l.own_namespace);
            }
            let state = l.configmaps.state();
            let cms: Vec<ConfigMapData<'_>> = state
                .iter()
                .map(|cm| ConfigMapData {
                    namespace: cm.metadata.namespace.as_deref().unwrap_or_default(),
                    name: cm.metadata.name.as_deref().unwrap_or_default(),
                    resource_version: cm.metadata.resource_version.as_deref().unwrap_or_default(),
                    data: cm.data.as_ref(),
                })
                .collect();
            let mut out = l.reconciler.reconcile(&cms, &policy);
            // In force first; logs and Events (which wait on the API server) after.
            let config = std::mem::take(&mut out.config);
            if !out.changed.is_empty() || *l.thresholds.load_full() != config {
                l.thresholds.store(Arc::new(config));
            }
            let refs: HashMap<String, ObjectReference> = state
                .iter()
                .map(|cm| (cm.namespace().unwrap_or_default(), cm.object_ref(&())))
                .collect();
            drop(cms);
            for k in &out.not_used {
                tracing::info!(namespace = %k.namespace, configmap = %l.reconciler.name(), entry = %k.entry, key = %k.key, "saturation config key not used by this server");
            }
            for r in &out.rejected {
                let reasons: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
                let reasons = reasons.join("; ");
                let kept = if r.no_previous {
                    "no previous valid version; the global thresholds apply"
                } else {
                    "keeping the previous ones"
                };
                tracing::error!(namespace = %r.namespace, configmap = %r.name, error = %reasons, "invalid saturation thresholds; {kept}");
                if let Some(family) = &l.rejections {
                    family
                        .get_or_create(&ConfigRejectionLabels {
                            namespace: r.namespace.clone(),
                            configmap: r.name.clone(),
                        })
                        .inc();
                }
                if let Some(reference) = refs.get(&r.namespace) {
                    let note = format!("{reasons} ({kept})");
                    publish_warning(&l.recorder, reference, "InvalidConfiguration", &note).await;
                }
            }
            for ns in &out.changed {
                tracing::info!(namespace = %ns, configmap = %l.reconciler.name(), "saturation thresholds updated");
            }
        }
    })
}

/// The namespace-local scale-to-zero ConfigMaps the policy allows, put in
/// force beside the global one (entries that do not parse are logged and
/// left out; the others apply, as with the global one).
fn update_local_scale_to_zero(
    zero: &ArcSwap<ScaleToZeroConfig>,
    store: &Store<ConfigMap>,
    policy: &NamespacePolicy,
    own_namespace: &str,
) {
    let mut locals = std::collections::BTreeMap::new();
    for cm in store.state() {
        let ns = cm.metadata.namespace.clone().unwrap_or_default();
        if ns == own_namespace || !policy.local_config_allowed(&ns) {
            continue;
        }
        let data = cm.data.clone().unwrap_or_default();
        let (parsed, errors) = ScaleToZeroConfig::from_configmap_data(&data);
        for e in &errors {
            tracing::error!(namespace = %ns, configmap = crate::saturation::scale_to_zero::CONFIGMAP_NAME, error = %e, "namespace-local scale-to-zero entry refused; the other entries apply");
        }
        locals.insert(ns, parsed);
    }
    let current = zero.load();
    let next = (**current).clone().with_namespace_locals(locals);
    if *current != std::sync::Arc::new(next.clone()) {
        let namespaces: Vec<String> = next
            .namespace_local_namespaces()
            .map(str::to_owned)
            .collect();
        zero.rcu(|c| (**c).clone().with_namespace_locals_of(&next));
        tracing::info!(
            ?namespaces,
            "namespace-local scale-to-zero configuration updated"
        );
    }
}

fn object_ref(o: &ObjectRef) -> ObjectReference {
    let api_version = match o.kind {
        "VariantAutoscaling" => "llmd.ai/v1alpha1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "ScaledObject" => "keda.sh/v1alpha1",
        _ => "v1",
    };
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(o.kind.to_owned()),
        namespace: Some(o.namespace.clone()),
        name: Some(o.name.clone()),
        ..Default::default()
    }
}

/// A Warning Event on an object; failing to record it is only logged.
async fn publish_warning(
    recorder: &Recorder,
    reference: &ObjectReference,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        // The API server limits an Event's note to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Configure".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::debug!(error = %e, "cannot record event");
    }
}
