//! The configuration files of `serve` (thresholds, scale to zero, service
//! classes): loaded strictly at start (a mistake is exit code 2), followed
//! afterwards as a file or as the cluster's ConfigMap.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::fatal::CommandError;
use crate::saturation::{ScaleToZeroConfig, ThresholdConfig};

/// A thresholds file given with `--saturation-config` that does not parse
/// or validate: `serve` stops with exit code 2 (each of these file errors
/// is raised as a [`CommandError::Configuration`]).
#[derive(Debug, thiserror::Error)]
#[error("saturation config {}: {error}", path.display())]
pub(crate) struct SaturationConfigFileError {
    pub(crate) path: std::path::PathBuf,
    pub(crate) error: crate::saturation::LocatedThresholdError,
}

/// A `--scale-to-zero-config` file that does not parse or validate (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("scale-to-zero config {}: {error}", path.display())]
pub(crate) struct ScaleToZeroConfigFileError {
    pub(crate) path: std::path::PathBuf,
    pub(crate) error: crate::saturation::scale_to_zero::LocatedScaleToZeroError,
}

/// A `--service-classes-config` file that does not parse (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("service classes config {}: {error}", path.display())]
pub(crate) struct ServiceClassesFileError {
    pub(crate) path: std::path::PathBuf,
    pub(crate) error: crate::saturation::slo::objective::ServiceClassError,
}

/// Loads `--service-classes-config` (nothing given: no classes, the
/// thresholds' keys or the built-in objective apply).
pub(crate) fn load_service_classes(
    path: Option<&Path>,
) -> anyhow::Result<crate::saturation::slo::ServiceClasses> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read service classes config {}", path.display()))?;
    crate::saturation::slo::ServiceClasses::from_yaml_str(&text).map_err(|error| {
        CommandError::configuration(ServiceClassesFileError {
            path: path.to_owned(),
            error,
        })
    })
}

/// `--inventory kube`: follows upstream's `service-classes-config`
/// ConfigMap in the server's namespace; a class that does not parse keeps
/// the last good classes (and says why); a deleted ConfigMap restores
/// `fallback` (the file, or nothing).
pub(super) fn follow_service_classes_configmap(
    client: kube::Client,
    namespace: &str,
    classes: Arc<ArcSwap<crate::saturation::slo::ServiceClasses>>,
    fallback: crate::saturation::slo::ServiceClasses,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    use crate::saturation::slo::objective::CONFIGMAP_NAME;
    crate::kube_client::configmap::follow_configmap(
        client,
        namespace,
        CONFIGMAP_NAME,
        shutdown,
        move |cm| {
            let next = match cm {
                None => fallback.clone(),
                Some(cm) => {
                    let data = cm.data.unwrap_or_default();
                    match crate::saturation::slo::ServiceClasses::from_data(
                        data.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(configmap = CONFIGMAP_NAME, error = %e, "service classes refused; the last good ones stay in force");
                            return;
                        }
                    }
                }
            };
            if **classes.load() != next {
                tracing::info!(configmap = CONFIGMAP_NAME, "service classes updated");
                classes.store(Arc::new(next));
            }
        },
    )
}

/// Loads `--scale-to-zero-config` strictly (file, line and key on error),
/// with `--scale-to-zero` (`WVA_SCALE_TO_ZERO`) as the fallback of models
/// no entry decides for.
pub fn load_scale_to_zero(path: Option<&Path>, env: bool) -> anyhow::Result<ScaleToZeroConfig> {
    let config = match path {
        None => ScaleToZeroConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read scale-to-zero config {}", path.display()))?;
            ScaleToZeroConfig::from_yaml_str_strict(&text).map_err(|error| {
                CommandError::configuration(ScaleToZeroConfigFileError {
                    path: path.to_owned(),
                    error,
                })
            })?
        }
    };
    Ok(config.with_env_enabled(env))
}

/// `--inventory kube`: follows the `wva-model-scale-to-zero-config`
/// ConfigMap in the server's namespace. Entries that do not parse are
/// skipped and logged (the others apply, as upstream does); a deleted
/// ConfigMap restores `fallback` (the file, or nothing).
pub(super) fn follow_scale_to_zero_configmap(
    client: kube::Client,
    namespace: &str,
    config: Arc<ArcSwap<ScaleToZeroConfig>>,
    fallback: ScaleToZeroConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    use crate::saturation::scale_to_zero::CONFIGMAP_NAME;
    let env = fallback.env_enabled();
    crate::kube_client::configmap::follow_configmap(
        client,
        namespace,
        CONFIGMAP_NAME,
        shutdown,
        move |cm| {
            let next = match cm {
                None => fallback.clone(),
                Some(cm) => {
                    let data = cm.data.unwrap_or_default();
                    let (parsed, errors) = ScaleToZeroConfig::from_configmap_data(&data);
                    for e in &errors {
                        tracing::error!(configmap = CONFIGMAP_NAME, error = %e, "scale-to-zero entry refused; the other entries apply");
                    }
                    parsed.with_env_enabled(env)
                }
            };
            // Namespace-local configurations (kept by the kube inventory) stay.
            let next = next.with_namespace_locals_of(&config.load());
            if **config.load() != next {
                tracing::info!(
                    configmap = CONFIGMAP_NAME,
                    "scale-to-zero configuration updated"
                );
                config.rcu(|c| next.clone().with_namespace_locals_of(c));
            }
        },
    )
}

/// Loads the thresholds file, if any, strictly: any entry that does not
/// parse or validate stops start-up naming the file, line and key. A directory holds
/// ConfigMap (and Namespace) files with the cluster's precedence between
/// the global and namespace-local ConfigMaps (`own_namespace` is global).
pub(crate) fn load_thresholds(
    path: Option<&Path>,
    own_namespace: &str,
) -> anyhow::Result<ThresholdConfig> {
    load_thresholds_named(path, own_namespace, crate::saturation::CONFIGMAP_NAME, None)
}

/// [`load_thresholds`] with upstream's `SATURATION_CONFIG_MAP_NAME` and
/// `WATCH_NAMESPACE` (a directory's ConfigMaps of that name are read).
pub(crate) fn load_thresholds_named(
    path: Option<&Path>,
    own_namespace: &str,
    configmap_name: &str,
    watch_namespace: Option<&str>,
) -> anyhow::Result<ThresholdConfig> {
    let Some(path) = path else {
        return Ok(ThresholdConfig::default());
    };
    let config = if path.is_dir() {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read saturation config directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut texts = Vec::with_capacity(files.len());
        for f in &files {
            texts.push(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read saturation config {}", f.display()))?,
            );
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let config = crate::inventory::namespace_config::thresholds_from_named_documents(
            &texts,
            own_namespace,
            configmap_name,
            watch_namespace,
        )
        .map_err(|e| {
            CommandError::configuration(SaturationConfigFileError {
                path: files[e.file].clone(),
                error: e.error,
            })
        })?;
        for ns in config.namespace_local_namespaces() {
            tracing::info!(path = %path.display(), namespace = ns, "namespace-local saturation thresholds in force");
        }
        config
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read saturation config {}", path.display()))?;
        ThresholdConfig::from_yaml_str_strict(&text).map_err(|error| {
            CommandError::configuration(SaturationConfigFileError {
                path: path.to_owned(),
                error,
            })
        })?
    };
    Ok(config)
}

/// Standalone mode: reloads `--saturation-config` when its modification
/// time or size changes (the file is often a mounted ConfigMap, as the
/// ConfigMap is followed in a cluster). A version that does not load keeps
/// the previous thresholds and logs why.
pub(super) fn watch_thresholds_file(
    path: std::path::PathBuf,
    thresholds: Arc<ArcSwap<ThresholdConfig>>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    crate::file_watch::poll_files(
        vec![path.clone()],
        crate::file_watch::RELOAD_CHECK_INTERVAL,
        shutdown,
        move || {
            // At run time a rejected entry keeps the whole previous
            // configuration (as a changed ConfigMap does), rather than
            // silently falling back to defaults for it.
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| ThresholdConfig::from_yaml_str(&text).map_err(|e| e.to_string()))
                .and_then(|(config, rejected)| match rejected.first() {
                    None => Ok(config),
                    Some(e) => Err(e.to_string()),
                });
            match loaded {
                Ok(config) => {
                    tracing::info!(path = %path.display(), "saturation config reloaded");
                    thresholds.store(Arc::new(config));
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "saturation config reload failed; keeping the previous thresholds")
                }
            }
        },
    )
}
