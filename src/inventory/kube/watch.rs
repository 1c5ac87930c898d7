//! The watch tasks of the kube inventory: one per watched kind (on the
//! shared loop of `kube_client::watch`), each marking its source synced
//! after the initial list and waking the rebuild on every change and on
//! its first sync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::Stream;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::rbac::required_rbac;
use crate::inventory::changes::{fingerprint, key_of, ChangeFilter, Observed};

/// Sync state of one reflector.
struct Source {
    name: &'static str,
    synced: AtomicBool,
}

/// Every watched source and the inventory rebuild they wake. The rebuild
/// publishes only once every source has synced, so each source's first
/// sync wakes it, whatever else the source wakes on a change: the last
/// list to finish is what lets the inventory publish.
pub(super) struct Sources {
    list: Vec<Arc<Source>>,
    rebuild: Arc<Notify>,
}

impl Sources {
    pub(super) fn new(rebuild: Arc<Notify>) -> Self {
        Sources {
            list: Vec::new(),
            rebuild,
        }
    }

    /// The names of the sources whose initial list is not done yet.
    pub(super) fn pending(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|s| !s.synced.load(Ordering::Acquire))
            .map(|s| s.name.to_owned())
            .collect()
    }
}

/// Drives one reflector: applies events to its store, marks the source
/// synced after the initial list, and wakes the rebuild on every change.
/// With `only_changes`, an event that leaves the object as the store keeps
/// it (a new `resourceVersion` alone, as after one of our own status
/// writes, whose status is stripped) wakes nothing ([`super::changes`]).
pub(super) fn spawn_reflector<K, S>(
    name: &'static str,
    stream: S,
    sources: &mut Sources,
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
/// after the initial list, wakes `changed` on every change and the
/// inventory rebuild (besides `changed`) when the source first becomes
/// synced.
pub(super) fn spawn_watch<K, S>(
    name: &'static str,
    stream: S,
    sources: &mut Sources,
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
    sources.list.push(Arc::clone(&source));
    let rebuild = Arc::clone(&sources.rebuild);
    crate::kube_client::watch::drive_watch(
        name,
        stream,
        watch_permission(name),
        shutdown,
        move |event| {
            let first_sync = matches!(event, watcher::Event::InitDone)
                && !source.synced.swap(true, Ordering::AcqRel);
            if observe(event) || first_sync {
                changed.iter().for_each(|c| c.notify_one());
            }
            if first_sync {
                // The first complete list lets the rebuild run.
                rebuild.notify_one();
            }
        },
    )
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

pub(super) fn reflect<K>(
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

pub(super) fn keep_all<K>(_: &mut K) {}
