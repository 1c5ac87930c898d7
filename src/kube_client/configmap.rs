//! Follows one ConfigMap by name with a watch: the global scale-to-zero
//! configuration, the service classes and the aggregator's
//! `extension-apiserver-authentication` are read this way. (The thresholds
//! ConfigMaps, global and namespace-local, are read by a reflector of the
//! kube inventory, `inventory::kube`, which needs every namespace's.)

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Follows one ConfigMap by name, calling `on_change` with every version
/// (the watch re-lists on its own after errors, with backoff). Deletions
/// are not reported; see [`follow_configmap`].
pub(crate) fn watch_configmap(
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
pub(crate) fn follow_configmap(
    client: Client,
    namespace: &str,
    name: &'static str,
    shutdown: CancellationToken,
    on_change: impl Fn(Option<ConfigMap>) + Send + 'static,
) -> JoinHandle<()> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    let mut listed = false;
    super::watch::drive_watch(
        name,
        stream,
        format!("get, list, watch configmaps (API group core) in namespace {namespace}"),
        shutdown,
        move |event| match event {
            watcher::Event::Init => listed = false,
            watcher::Event::InitApply(cm) => {
                listed = true;
                on_change(Some(cm));
            }
            watcher::Event::InitDone => {
                if !listed {
                    on_change(None);
                }
            }
            watcher::Event::Apply(cm) => on_change(Some(cm)),
            watcher::Event::Delete(_) => on_change(None),
        },
    )
}
