//! Follows one ConfigMap by name with a watch: the thresholds, the
//! scale-to-zero configuration and the aggregator's
//! `extension-apiserver-authentication` are all read this way.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
