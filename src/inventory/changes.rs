//! Which watch events change what the inventory is built from (pure, no I/O).
//!
//! The kube source rebuilds its whole snapshot after a change, which costs
//! time in proportion to the cluster (every object of every watched kind is
//! read again). Many watch events change nothing the snapshot reads: above
//! all the server's own status writes, each of which comes back as a
//! `MODIFIED` VariantAutoscaling with a new `resourceVersion` and nothing
//! else changed once the status is stripped. At 10,000 VariantAutoscalings
//! whose decisions all change, every write used to cost a rebuild over all
//! of them, and the writes slowed down to the pace of the rebuilds.
//!
//! [`ChangeFilter`] remembers a fingerprint of each object as the source
//! keeps it (after its strip function, without `resourceVersion` and
//! `managedFields`) and reports an event as a change only when that
//! fingerprint differs from the one seen before, when an object is deleted,
//! or when a (re-)list starts or completes.

use std::collections::HashMap;
use std::hash::Hasher;

use kube::Resource;
use serde::Serialize;

/// An object's identity within one watched kind: (namespace, name).
pub(crate) type ObjectKey = (String, String);

/// A watch event reduced to what the filter needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A (re-)list starts: the store will be replaced when it is done.
    Init,
    /// An object of the (re-)list.
    InitApply(ObjectKey, u64),
    /// The (re-)list is complete and the store replaced.
    InitDone,
    /// An object was added or modified (its fingerprint).
    Apply(ObjectKey, u64),
    Delete(ObjectKey),
}

/// Remembers the fingerprint of every object of one watched kind.
#[derive(Debug, Default)]
pub(crate) struct ChangeFilter {
    seen: HashMap<ObjectKey, u64>,
    /// The objects of a list in progress; they replace `seen` when it ends.
    listing: Option<HashMap<ObjectKey, u64>>,
}

impl ChangeFilter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether this event can change the snapshot (a rebuild is needed).
    /// Objects of a list in progress are not: the store is replaced only
    /// when the list is done, and that event is.
    pub(crate) fn observe(&mut self, event: Observed) -> bool {
        match event {
            Observed::Init => {
                self.listing = Some(HashMap::new());
                true
            }
            Observed::InitApply(key, fingerprint) => {
                self.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(key, fingerprint);
                false
            }
            Observed::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.seen = listed;
                }
                true
            }
            Observed::Apply(key, fingerprint) => {
                self.seen.insert(key, fingerprint) != Some(fingerprint)
            }
            Observed::Delete(key) => {
                self.seen.remove(&key);
                true
            }
        }
    }

    /// Objects remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// The key of an object.
pub(crate) fn key_of<K: Resource>(o: &K) -> ObjectKey {
    let meta = o.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A hash of everything in `o` but its `resourceVersion` and
/// `managedFields` (which change on every write, also on writes of fields
/// the source strips). Two objects with the same fingerprint build the
/// same snapshot. An object that cannot be serialized gets a fingerprint
/// of its own every time, so that it always counts as changed.
pub(crate) fn fingerprint<K: Resource + Serialize>(mut o: K) -> u64 {
    let meta = o.meta_mut();
    meta.resource_version = None;
    meta.managed_fields = None;
    let mut writer = HashWriter(std::hash::DefaultHasher::new());
    match serde_json::to_writer(&mut writer, &o) {
        Ok(()) => writer.0.finish(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot fingerprint a watched object; counted as changed");
            rand::random()
        }
    }
}

struct HashWriter(std::hash::DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::crd::{OptimizedAlloc, VariantAutoscaling, VariantAutoscalingStatus};
    use k8s_openapi::api::apps::v1::Deployment;

    fn key(name: &str) -> ObjectKey {
        ("llm".to_owned(), name.to_owned())
    }

    #[test]
    fn only_changed_fingerprints_deletes_and_list_ends_need_a_rebuild() {
        use Observed::*;
        let mut f = ChangeFilter::new();
        // (event, rebuild needed)
        let steps = [
            (Init, true),
            (InitApply(key("a"), 1), false),
            (InitApply(key("b"), 2), false),
            (InitDone, true),
            // Same fingerprint (a status write, a new resourceVersion): nothing.
            (Apply(key("a"), 1), false),
            (Apply(key("a"), 3), true),
            (Apply(key("a"), 3), false),
            // A new object.
            (Apply(key("c"), 4), true),
            (Apply(key("c"), 4), false),
            (Delete(key("c")), true),
            // Added again with the fingerprint it had before its deletion.
            (Apply(key("c"), 4), true),
            // A re-list (after 410 Gone): its objects replace what was seen.
            (Init, true),
            (InitApply(key("a"), 3), false),
            (InitDone, true),
            (Apply(key("a"), 3), false),
            // b and c were not in the re-list: seen again, they are changes.
            (Apply(key("b"), 2), true),
            (Apply(key("c"), 4), true),
        ];
        for (i, (event, rebuild)) in steps.into_iter().enumerate() {
            assert_eq!(f.observe(event.clone()), rebuild, "step {i}: {event:?}");
        }
        assert_eq!(f.len(), 3);
    }

    fn va(labels: &[(&str, &str)], model: &str) -> VariantAutoscaling {
        let mut v: VariantAutoscaling = serde_json::from_value(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": "v", "namespace": "llm", "resourceVersion": "7",
                         "managedFields": [{"manager": "wva-metrics-server", "operation": "Apply"}]},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "v"}, "modelID": model}
        }))
        .unwrap();
        v.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, val)| ((*k).to_owned(), (*val).to_owned()))
                .collect(),
        );
        v
    }

    #[test]
    fn resource_version_and_managed_fields_do_not_count_the_rest_does() {
        let base = va(&[("a", "1")], "m");
        let fp = fingerprint(base.clone());
        let mut rv = base.clone();
        rv.metadata.resource_version = Some("8".into());
        rv.metadata.managed_fields = None;
        assert_eq!(fingerprint(rv), fp);
        // What the server writes, stripped by the source before the filter
        // sees it, would count if it were kept: the source strips it.
        let mut with_status = base.clone();
        with_status.status = Some(VariantAutoscalingStatus {
            desired_optimized_alloc: Some(OptimizedAlloc {
                num_replicas: 3,
                accelerator: "H100".into(),
                last_run_time: None,
            }),
            conditions: vec![],
            actuation: None,
        });
        assert_ne!(fingerprint(with_status), fp);
        assert_ne!(fingerprint(va(&[("a", "2")], "m")), fp, "a label");
        assert_ne!(fingerprint(va(&[("a", "1")], "n")), fp, "the spec");
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("v".into());
        let d = fingerprint(deployment.clone());
        deployment.status = Some(Default::default());
        deployment.status.as_mut().unwrap().ready_replicas = Some(2);
        assert_ne!(fingerprint(deployment), d, "a Deployment's ready replicas");
    }
}
