//! Polls files for changes: the one loop behind every file this server
//! reloads while it runs (the inventory file, the thresholds file, the
//! serving certificate). Polling the metadata rather than inotify also sees
//! the symlink swap of a mounted ConfigMap or Secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often reloaded files are checked.
pub(crate) const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What says a file changed: its modification time and size (None when it
/// cannot be read, so that a file that disappears and comes back counts).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths.iter().map(|p| stamp(p)).collect()
}

/// Checks `paths` every `every` and calls `on_change` when the
/// modification time or size of any of them differs from the previous
/// check (the first comparison is against their state when this is
/// called). Ends when `shutdown` is cancelled.
pub(crate) fn poll_files(
    paths: Vec<PathBuf>,
    every: Duration,
    shutdown: CancellationToken,
    mut on_change: impl FnMut() + Send + 'static,
) -> JoinHandle<()> {
    let mut last = stamps(&paths);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = stamps(&paths);
            if now != last {
                last = now;
                on_change();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Waits (bounded) until `calls` reaches `want`.
    async fn reaches(calls: &AtomicUsize, want: usize) -> bool {
        for _ in 0..2_000 {
            if calls.load(Ordering::SeqCst) >= want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    // Paused time: the checks run on the test clock, so "no call over 100
    // checks" is exact rather than a wall-clock wait.
    #[tokio::test(start_paused = true)]
    async fn a_change_of_any_file_is_seen_once_and_an_unchanged_file_never() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let shutdown = CancellationToken::new();
        let task = poll_files(
            vec![a.clone(), b.clone()],
            Duration::from_millis(10),
            shutdown.clone(),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        );
        // A size change of the first file.
        std::fs::write(&a, "one more").unwrap();
        assert!(reaches(&calls, 1).await, "change of a not seen");
        // The second file appearing.
        std::fs::write(&b, "two").unwrap();
        assert!(reaches(&calls, 2).await, "b appearing not seen");
        // Nothing changes for 100 checks: no further call.
        let seen = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), seen);
        assert_eq!(seen, 2);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the poller ends on shutdown")
            .unwrap();
    }
}
