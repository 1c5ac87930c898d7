//! The thresholds loop of the kube inventory: the global and
//! namespace-local thresholds ConfigMaps (and namespace-local scale-to-zero
//! ConfigMaps) put in force after every change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::events::publish_warning;
use super::{namespace_policy, projected, ConfigRejectionLabels, Projected, DEBOUNCE};
use crate::inventory::crd::VariantAutoscaling;
use crate::inventory::namespace_config::{ConfigMapData, NamespacePolicy, ThresholdsReconciler};
use crate::inventory::variants::VariantRecord;
use crate::saturation::scale_to_zero::ScaleToZeroConfig;
use crate::saturation::ThresholdConfig;

/// What the thresholds loop works with.
pub(super) struct ThresholdsLoop {
    pub(super) configmaps: Store<ConfigMap>,
    /// Namespaces holding a VariantAutoscaling have their local ConfigMaps read.
    pub(super) vas: Projected<VariantAutoscaling, VariantRecord>,
    pub(super) watch_namespace: Option<String>,
    pub(super) own_namespace: String,
    /// The scale-to-zero configuration and the ConfigMaps of that name.
    pub(super) scale_to_zero: Option<(Arc<ArcSwap<ScaleToZeroConfig>>, Store<ConfigMap>)>,
    pub(super) namespaces: Store<PartialObjectMeta<Namespace>>,
    pub(super) reconciler: ThresholdsReconciler,
    pub(super) thresholds: Arc<ArcSwap<ThresholdConfig>>,
    pub(super) rejections: Option<Family<ConfigRejectionLabels, Counter>>,
    pub(super) recorder: Recorder,
}

/// Recomputes the thresholds after every change of the ConfigMaps or the
/// namespaces. A ConfigMap version that does not validate keeps the last
/// good configuration of its namespace and is reported once (log, Event on
/// the ConfigMap, `wva_config_rejected_total`); a deleted one restores the
/// global configuration (for the global one: the defaults).
pub(super) fn spawn_thresholds_loop(
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
pub(super) fn update_local_scale_to_zero(
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
