//! The published inventory: the latest snapshot and a change signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::snapshot::InventorySnapshot;

/// Holds the current [`InventorySnapshot`]. Sources publish, readers load;
/// a load is one atomic pointer read, so the request path never waits on a
/// source that is busy rebuilding.
#[derive(Debug)]
pub struct InventoryStore {
    current: ArcSwap<InventorySnapshot>,
    generation: watch::Sender<u64>,
    /// The generation the last publish gave its snapshot.
    published: AtomicU64,
    synced: AtomicBool,
    /// Sources still loading, named for `/readyz`.
    pending: Mutex<Vec<String>>,
}

impl Default for InventoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InventoryStore {
    /// An empty, not yet synced store.
    pub fn new() -> Self {
        InventoryStore {
            current: ArcSwap::from_pointee(InventorySnapshot::default()),
            generation: watch::channel(0).0,
            published: AtomicU64::new(0),
            synced: AtomicBool::new(false),
            pending: Mutex::new(vec!["inventory".to_owned()]),
        }
    }

    /// The current snapshot.
    pub(crate) fn load(&self) -> Arc<InventorySnapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot (numbered with the next generation) and marks
    /// the store synced.
    pub fn publish(&self, mut snapshot: InventorySnapshot) {
        snapshot.set_generation(self.published.fetch_add(1, Ordering::AcqRel) + 1);
        self.current.store(Arc::new(snapshot));
        self.set_pending(Vec::new());
        self.synced.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    /// True once a source has published a complete view.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Names the sources that have not finished their initial load.
    pub(crate) fn set_pending(&self, pending: Vec<String>) {
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = pending;
    }

    /// The sources still loading (empty once synced).
    pub(crate) fn pending(&self) -> Vec<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver that sees a new value after every publish.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
