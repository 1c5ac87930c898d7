//! The one loop behind every watch of the server (the kube inventory's
//! reflectors, the accelerator inventory, the followed ConfigMaps): it
//! hands each event on, says when the initial list is done, and logs
//! failures; the watcher itself re-lists after errors, with backoff.

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The API server's answer code of a failed list or watch, if it answered.
pub(crate) fn watch_error_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => match k {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::NoResourceVersion => None,
    }
}

/// Drives one watch until `shutdown`: every event goes to `on_event`. A
/// refusal for lack of permission (403) is logged once, with `permission`
/// (what to grant), until a list succeeds again, not on every retry of the
/// watcher's backoff; other failures are logged as warnings.
pub(crate) fn drive_watch<K, S>(
    resource: &'static str,
    stream: S,
    permission: String,
    shutdown: CancellationToken,
    mut on_event: impl FnMut(watcher::Event<K>) + Send + 'static,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut forbidden_logged = false;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                None => return,
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        forbidden_logged = false;
                        tracing::info!(resource, "initial list done");
                    }
                    on_event(event);
                }
                Some(Err(e)) if watch_error_code(&e) == Some(403) => {
                    if forbidden_logged {
                        tracing::debug!(resource, error = %e, "list/watch still forbidden; retrying");
                    } else {
                        forbidden_logged = true;
                        tracing::error!(
                            resource,
                            %permission,
                            error = %e,
                            "the API server refused to list or watch for lack of permission: grant the server's service account this permission; logged once, retried with backoff"
                        );
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(resource, error = %e, "watch failed; retrying")
                }
            }
        }
    })
}
