//! The KEDA external-scaler port of `serve`, beside the HTTPS server.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RunningServer, ServingCert};
use crate::cli::ServeArgs;
use crate::server;

/// Checks the KEDA flags before anything starts: a KEDA port that would
/// serve anyone is refused unless explicitly asked for.
pub fn keda_client_auth(args: &ServeArgs) -> anyhow::Result<crate::keda::KedaClientAuth> {
    args.keda
        .client_auth()
        .map_err(|e| crate::fatal::CommandError::invalid(e.to_string()).into())
}

/// Starts the KEDA external-scaler gRPC service next to a running server.
pub async fn start_keda(
    args: &ServeArgs,
    port: u16,
    certificate: &ServingCert,
    running: &RunningServer,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    use crate::keda::KedaClientAuth;
    let addr = SocketAddr::new(
        args.keda
            .keda_bind_address
            .unwrap_or(args.listen.bind_address),
        port,
    );
    let client_auth = keda_client_auth(args)?;
    let tls = match &client_auth {
        KedaClientAuth::InsecurePlaintext => {
            tracing::warn!("--keda-plaintext --keda-insecure-disable-client-auth: the KEDA gRPC service runs without TLS and without client authentication; use it only behind a proxy or mesh that does both");
            None
        }
        KedaClientAuth::InsecureTls => {
            tracing::warn!("--keda-insecure-disable-client-auth: ANY CLIENT THAT REACHES THE KEDA PORT CAN READ EVERY NAMESPACE'S DECISIONS");
            Some(certificate.config(server::tls::ClientAuth::None)?)
        }
        KedaClientAuth::ClientCa(ca) => Some(certificate.config(
            server::tls::ClientAuth::Required(ca, &args.keda.keda_client_allowed_names),
        )?),
    };
    let listener = server::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the KEDA scaler"))?;
    let local = listener.local_addr()?;
    let scaler = crate::keda::KedaScaler::new(Arc::clone(&running.engine), shutdown.clone());
    let limits = args.keda.limits(&args.limits);
    tracing::info!(address = %local, tls = tls.is_some(), client_ca = args.keda.keda_client_ca_file.is_some(), ?limits, "serving the KEDA external scaler (gRPC)");
    let telemetry = running.telemetry.clone();
    Ok(tokio::spawn(crate::keda::serve(
        listener, tls, scaler, limits, telemetry, shutdown,
    )))
}
