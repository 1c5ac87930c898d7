//! Watched objects kept as projections: only what resolution reads of each
//! object, never the typed object (pure, no I/O).
//!
//! A reflector store keeps every watched object whole. At 100,000 pods and
//! 10,000 Deployments the typed objects were most of the server's memory
//! (a `Pod` is 2,176 bytes inline before its heap data, a stripped
//! `Deployment` still ~3 KB), and each rebuild of the snapshot copied them
//! all once more. A [`ProjectionStore`] maps each watch event straight to
//! its projection ([`Project`]) and keeps those, with a reflector store's
//! relist semantics; handing them out clones `Arc`s, not objects.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::Arc;

use hashbrown::HashTable;

use kube::runtime::watcher;
use kube::Resource;

/// A set of labels, shared between the objects that carry the same one
/// (the pods of one ReplicaSet).
pub(crate) type Labels = BTreeMap<String, String>;

/// What the inventory keeps of an object of kind `K`.
pub(crate) trait Project<K>: PartialEq + Sized {
    /// The projection of `object`, sharing strings through `interner`.
    fn project(object: &K, interner: &mut Interner) -> Self;
    /// (namespace, name): the object's identity within its kind.
    fn key(&self) -> (&Arc<str>, &str);
}

/// Shares equal namespaces and label sets between projections.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    namespaces: HashSet<Arc<str>>,
    label_sets: HashSet<Arc<Labels>>,
    /// Entries after the last prune; the next prune comes at twice as many.
    pruned_at: usize,
}

impl Interner {
    pub(crate) fn namespace(&mut self, namespace: &str) -> Arc<str> {
        if let Some(n) = self.namespaces.get(namespace) {
            return Arc::clone(n);
        }
        let n: Arc<str> = namespace.into();
        self.namespaces.insert(Arc::clone(&n));
        self.maybe_prune();
        n
    }

    pub(crate) fn labels(&mut self, labels: Option<&Labels>) -> Arc<Labels> {
        let empty = Labels::new();
        let labels = labels.unwrap_or(&empty);
        if let Some(l) = self.label_sets.get(labels) {
            return Arc::clone(l);
        }
        let l = Arc::new(labels.clone());
        self.label_sets.insert(Arc::clone(&l));
        self.maybe_prune();
        l
    }

    /// Distinct namespaces and label sets held.
    pub(crate) fn len(&self) -> usize {
        self.namespaces.len() + self.label_sets.len()
    }

    /// Forgets entries no projection uses any more (only the interner
    /// holds them), once the sets have doubled since the last time: a
    /// long-lived watch sees label sets come and go (every rollout has a
    /// new `pod-template-hash`).
    fn maybe_prune(&mut self) {
        if self.len() < (2 * self.pruned_at).max(1024) {
            return;
        }
        self.namespaces.retain(|n| Arc::strong_count(n) > 1);
        self.label_sets.retain(|l| Arc::strong_count(l) > 1);
        self.pruned_at = self.len();
    }
}

/// Projections by namespace and name. A table of the projections
/// themselves, hashed by their key, rather than a map from a copy of the
/// key: at 100,000 pods the copies of names took ~9 MB.
#[derive(Debug)]
struct ProjectionTable<R> {
    table: HashTable<Arc<R>>,
}

impl<R> Default for ProjectionTable<R> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

/// Hashes a (namespace, name) key; one hasher per store, so that the
/// table being listed and the kept one agree.
type KeyHasher = foldhash::fast::RandomState;

impl<R> ProjectionTable<R> {
    fn get<K>(&self, hasher: &KeyHasher, namespace: &str, name: &str) -> Option<&Arc<R>>
    where
        R: Project<K>,
    {
        self.table.find(hasher.hash_one((namespace, name)), |r| {
            same_key::<K, R>(r, namespace, name)
        })
    }

    /// Inserts the projection, or replaces the one with the same key when
    /// it differs; true when the table changed.
    fn insert<K>(&mut self, hasher: &KeyHasher, record: R) -> bool
    where
        R: Project<K>,
    {
        let (namespace, name) = record.key();
        let hash = hasher.hash_one((&**namespace, name));
        if let Some(slot) = self
            .table
            .find_mut(hash, |r| same_key::<K, R>(r, namespace, name))
        {
            if **slot == record {
                return false;
            }
            *slot = Arc::new(record);
            return true;
        }
        self.table.insert_unique(hash, Arc::new(record), |r| {
            let (ns, name) = r.key();
            hasher.hash_one((&**ns, name))
        });
        true
    }

    fn remove<K>(&mut self, hasher: &KeyHasher, namespace: &str, name: &str) -> bool
    where
        R: Project<K>,
    {
        let hash = hasher.hash_one((namespace, name));
        match self
            .table
            .find_entry(hash, |r| same_key::<K, R>(r, namespace, name))
        {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether both hold the same projections.
    fn same_as<K>(&self, other: &Self, hasher: &KeyHasher) -> bool
    where
        R: Project<K>,
    {
        self.table.len() == other.table.len()
            && self.table.iter().all(|r| {
                let (namespace, name) = r.key();
                other
                    .get::<K>(hasher, namespace, name)
                    .is_some_and(|o| **o == **r)
            })
    }
}

fn same_key<K, R: Project<K>>(r: &R, namespace: &str, name: &str) -> bool {
    let (ns, n) = r.key();
    n == name && **ns == *namespace
}

/// The projections of one watch, kept the way a reflector store keeps
/// objects. A (re-)list (`Init`, `InitApply`..., `InitDone`) is collected
/// aside and replaces the projections when it is done, so that objects
/// deleted while the watch was down are gone afterwards and readers never
/// see half a list.
#[derive(Debug)]
pub(crate) struct ProjectionStore<K, R> {
    items: ProjectionTable<R>,
    listing: Option<ProjectionTable<R>>,
    hasher: KeyHasher,
    interner: Interner,
    kind: PhantomData<fn(&K)>,
}

impl<K, R> Default for ProjectionStore<K, R> {
    fn default() -> Self {
        Self {
            items: ProjectionTable::default(),
            listing: None,
            hasher: KeyHasher::default(),
            interner: Interner::default(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource, R: Project<K>> ProjectionStore<K, R> {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Applies one watch event; true when the projections changed (a
    /// rebuild is needed). An update that leaves the projection as it was
    /// (a new `resourceVersion`, a container restart count, the status the
    /// server itself wrote) is not a change.
    pub(crate) fn apply(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = Some(ProjectionTable::default());
                false
            }
            watcher::Event::InitApply(object) => {
                let record = R::project(&object, &mut self.interner);
                self.listing
                    .get_or_insert_with(ProjectionTable::default)
                    .insert::<K>(&self.hasher, record);
                false
            }
            watcher::Event::InitDone => match self.listing.take() {
                Some(listed) => {
                    let changed = !listed.same_as::<K>(&self.items, &self.hasher);
                    self.items = listed;
                    changed
                }
                // A list without its start: nothing to replace.
                None => true,
            },
            watcher::Event::Apply(object) => {
                let record = R::project(&object, &mut self.interner);
                self.items.insert::<K>(&self.hasher, record)
            }
            watcher::Event::Delete(object) => {
                let meta = object.meta();
                self.items.remove::<K>(
                    &self.hasher,
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                )
            }
        }
    }

    /// The projections whose namespace passes `keep`, in no particular order.
    pub(crate) fn items(&self, keep: impl Fn(&str) -> bool) -> Vec<Arc<R>> {
        self.items
            .table
            .iter()
            .filter(|r| keep(r.key().0))
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.table.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_namespaces_and_label_sets_are_shared() {
        let mut interner = Interner::default();
        let x = Labels::from([("app".into(), "x".into())]);
        let y = Labels::from([("app".into(), "y".into())]);
        let (a, b, c) = (
            interner.labels(Some(&x)),
            interner.labels(Some(&x)),
            interner.labels(Some(&y)),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let (n1, n2) = (interner.namespace("llm"), interner.namespace("llm"));
        assert!(Arc::ptr_eq(&n1, &n2));
        assert_eq!(interner.len(), 3, "one namespace, two label sets");
    }

    #[test]
    fn unused_entries_are_pruned_once_the_sets_double() {
        let mut interner = Interner::default();
        let kept = interner.labels(Some(&Labels::from([("k".into(), "kept".into())])));
        for i in 0..5000 {
            interner.labels(Some(&Labels::from([("k".into(), i.to_string())])));
        }
        assert!(interner.len() < 2100, "{} entries", interner.len());
        let again = interner.labels(Some(&Labels::from([("k".into(), "kept".into())])));
        assert!(Arc::ptr_eq(&kept, &again), "a label set in use stays");
    }
}
