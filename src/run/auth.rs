//! Authentication and authorization of `serve`, assembled from the
//! configuration its flag groups build.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::server::auth::{cluster, Auth};

/// Authentication from the flags, or from the cluster's
/// extension-apiserver-authentication ConfigMap when none are given.
pub(super) fn build_auth(
    args: &ServeArgs,
    client: kube::Client,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Arc<Auth>> {
    let config = args.authentication.config()?;
    let settings = args.authorization.settings(&args.authentication);
    let auth = Arc::new(Auth::new(config, client.clone(), settings)?);
    if args.authentication.follows_cluster() {
        tasks.push(cluster::watch(client, Arc::clone(&auth), shutdown.clone()));
    }
    Ok(auth)
}
