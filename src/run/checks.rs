//! The checks of `serve`'s flags made before anything starts.

use crate::cli::{BackendKind, InventorySource, ServeArgs};

/// The checks of `serve`'s flags that need no file and no network, made
/// before anything starts: a mistake here is a configuration error (exit
/// code 2), never a runtime failure found after tasks started.
pub fn check_before_start(args: &ServeArgs) -> anyhow::Result<()> {
    let standalone = matches!(args.inventory.inventory, InventorySource::File(_));
    if standalone && args.status.leader_elect == Some(true) {
        return Err(crate::fatal::CommandError::invalid(
            "--leader-elect needs --inventory kube: a standalone server (--inventory file:) writes no status, so there is nothing to lead".to_owned(),
        )
        .into());
    }
    if args.authentication.insecure_disable_auth && !standalone {
        return Err(crate::fatal::CommandError::invalid(
            "--insecure-disable-auth is only allowed with --inventory file: (standalone mode)"
                .to_owned(),
        )
        .into());
    }
    args.tls.files()?;
    if args.metrics.metrics_backend == BackendKind::Prometheus {
        let config = args.prometheus.config()?;
        if !config.url.is_empty() {
            config.validate()?;
        }
    }
    args.metrics.checked_freshness()?;
    // The KEDA port's client authentication and the Lease timings are flag
    // mistakes (exit 2), found here before any client or task starts.
    if args.keda.keda_port.is_some() {
        super::keda_client_auth(args)?;
    }
    if !standalone {
        args.status
            .leader_config(&args.inventory.namespace)
            .map_err(|e| crate::fatal::CommandError::invalid(e.to_string()))?;
    }
    Ok(())
}
