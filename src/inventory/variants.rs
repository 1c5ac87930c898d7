//! VariantAutoscalings as the inventory keeps them: name, labels (shared
//! between objects with the same set) and spec, nothing of the status or
//! the rest of the metadata (pure, no I/O).
//!
//! A typed `VariantAutoscaling` took ~1.2 KB (its `ObjectMeta` inline); a
//! [`VariantRecord`] about a quarter. The status is the server's own
//! output: leaving it out makes the server's own status writes, which come
//! back as watch events, no change at all ([`super::projection`]).

use std::sync::Arc;

use super::crd::{VariantAutoscaling, VariantAutoscalingSpec};
use super::projection::{Interner, Labels, Project};

/// What resolution reads of a VariantAutoscaling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariantRecord {
    /// Empty when the object has none (only a file can say so).
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Box<str>,
    pub(crate) labels: Arc<Labels>,
    pub(crate) spec: VariantAutoscalingSpec,
}

impl VariantRecord {
    /// The namespace, None when the object has none.
    pub(crate) fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(&*self.namespace)
    }
}

impl Project<VariantAutoscaling> for VariantRecord {
    fn project(va: &VariantAutoscaling, interner: &mut Interner) -> Self {
        let meta = &va.metadata;
        VariantRecord {
            namespace: interner.namespace(meta.namespace.as_deref().unwrap_or_default()),
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: interner.labels(meta.labels.as_ref()),
            spec: va.spec.clone(),
        }
    }

    fn key(&self) -> (&Arc<str>, &str) {
        (&self.namespace, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::crd::{OptimizedAlloc, VariantAutoscalingStatus};
    use crate::inventory::projection::ProjectionStore;
    use kube::runtime::watcher::Event;

    fn va(rv: &str, labels: &str, model: &str) -> VariantAutoscaling {
        serde_norway::from_str(&format!(
            "metadata: {{name: v, namespace: llm, resourceVersion: \"{rv}\", labels: {{{labels}}}, annotations: {{note: x}}}}\nspec: {{scaleTargetRef: {{kind: Deployment, name: d}}, modelID: {model}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn our_own_status_writes_are_not_changes_the_spec_and_labels_are() {
        let mut store: ProjectionStore<VariantAutoscaling, VariantRecord> = ProjectionStore::new();
        assert!(!store.apply(Event::Init));
        assert!(!store.apply(Event::InitApply(va("1", "a: b", "m"))));
        assert!(store.apply(Event::InitDone));
        // The server's status write comes back with a new resourceVersion.
        let mut written = va("2", "a: b", "m");
        written.status = Some(VariantAutoscalingStatus {
            desired_optimized_alloc: Some(OptimizedAlloc {
                num_replicas: 3,
                accelerator: "H100".into(),
                last_run_time: None,
            }),
            conditions: vec![],
            actuation: None,
        });
        assert!(!store.apply(Event::Apply(written)), "status only");
        assert!(store.apply(Event::Apply(va("3", "a: c", "m"))), "a label");
        assert!(store.apply(Event::Apply(va("4", "a: c", "n"))), "the spec");
        let kept = store.items(|_| true);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].spec.model_id, "n");
        assert_eq!(kept[0].labels.get("a").map(String::as_str), Some("c"));
        assert_eq!(kept[0].namespace(), Some("llm"));
    }

    #[test]
    fn a_record_is_small() {
        let size = std::mem::size_of::<VariantRecord>();
        assert!(size <= 208, "{size}");
    }
}
