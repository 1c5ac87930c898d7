//! `--inventory file:PATH`: variants, targets and pods from a multi-document
//! YAML file of real Kubernetes objects, reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::resolve::{resolve_with, InventoryObjects, ResolveOptions};
use super::store::InventoryStore;

/// How often the file's modification time is checked. Polling the metadata
/// (instead of inotify) also sees the symlink swap of a mounted ConfigMap.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the inventory file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryFileError {
    #[error("cannot read inventory file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("inventory file {path}, document {index}: {message}")]
    Document {
        path: PathBuf,
        index: usize,
        message: String,
    },
}

/// Parses the YAML text into typed objects. Documents of other kinds are
/// skipped with a log line; a document that claims a known kind but does not
/// fit its type is an error naming the document.
pub fn parse_objects(path: &Path, text: &str) -> Result<InventoryObjects, InventoryFileError> {
    let mut objects = InventoryObjects::default();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = index + 1;
        let doc_err = |message: String| InventoryFileError::Document {
            path: path.to_owned(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| doc_err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| doc_err("has no `kind`".to_owned()))?
            .to_owned();
        fn typed<T: serde::de::DeserializeOwned>(
            v: serde_yaml::Value,
            kind: &str,
        ) -> Result<T, String> {
            serde_yaml::from_value(v).map_err(|e| format!("not a valid {kind}: {e}"))
        }
        match kind.as_str() {
            "VariantAutoscaling" => objects
                .variant_autoscalings
                .push(typed(value, &kind).map_err(doc_err)?),
            "Deployment" => objects
                .deployments
                .push(typed(value, &kind).map_err(doc_err)?),
            "StatefulSet" => objects
                .stateful_sets
                .push(typed(value, &kind).map_err(doc_err)?),
            "ReplicaSet" => objects
                .replica_sets
                .push(typed(value, &kind).map_err(doc_err)?),
            "Pod" => objects.pods.push(typed(value, &kind).map_err(doc_err)?),
            "HorizontalPodAutoscaler" => objects
                .horizontal_pod_autoscalers
                .push(typed(value, &kind).map_err(doc_err)?),
            "ScaledObject" => objects
                .scaled_objects
                .push(typed(value, &kind).map_err(doc_err)?),
            other => {
                tracing::info!(path = %path.display(), document = index, kind = other, "skipping document of a kind the inventory does not use");
            }
        }
    }
    Ok(objects)
}

/// Reads, parses and resolves the file, then publishes the snapshot.
pub fn load_into(path: &Path, store: &InventoryStore) -> Result<(), InventoryFileError> {
    load_into_with(path, store, &ResolveOptions::default())
}

/// [`load_into`] with resolve options (controller-instance filtering).
pub fn load_into_with(
    path: &Path,
    store: &InventoryStore,
    options: &ResolveOptions,
) -> Result<(), InventoryFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let objects = parse_objects(path, &text)?;
    let (snapshot, problems) = resolve_with(&objects, options);
    for p in &problems {
        tracing::warn!(object = %p.object, reason = %p.reason, outcome = p.outcome(), "inventory object not used as written");
    }
    tracing::info!(
        path = %path.display(),
        variants = snapshot.variants().len(),
        pods = snapshot.pods().len(),
        "inventory loaded"
    );
    store.publish(snapshot);
    Ok(())
}

/// Loads the file once (an error here stops start-up), then reloads it in the
/// background whenever its modification time or size changes. A reload that
/// fails keeps the previous inventory and logs why.
pub async fn watch_file(
    path: PathBuf,
    store: Arc<InventoryStore>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, InventoryFileError> {
    watch_file_with(path, store, ResolveOptions::default(), shutdown).await
}

/// [`watch_file`] with resolve options (controller-instance filtering).
pub async fn watch_file_with(
    path: PathBuf,
    store: Arc<InventoryStore>,
    options: ResolveOptions,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, InventoryFileError> {
    load_into_with(&path, &store, &options)?;
    let mut last = stamp(&path);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELOAD_CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            if let Err(e) = load_into_with(&path, &store, &options) {
                tracing::error!(error = %e, "inventory reload failed; keeping the previous inventory");
            }
        }
    }))
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
