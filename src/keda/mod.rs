//! KEDA's external-scaler gRPC service (`externalscaler.ExternalScaler`).
//! In clusters where KEDA owns `external.metrics.k8s.io`, KEDA calls this
//! instead of the APIService; the answers come from the same decisions.

mod calls;
pub(crate) mod metadata;
pub(crate) mod server;
pub(crate) mod service;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use server::KedaLimits;
pub(crate) use service::KedaScaler;

use crate::telemetry::Telemetry;

/// Code generated from `proto/externalscaler.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub(crate) mod proto {
    include!(concat!(env!("OUT_DIR"), "/externalscaler.rs"));
}

/// How KEDA's clients are authenticated on the KEDA port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KedaClientAuth {
    /// Client certificates signed by the CA in this file (mTLS).
    ClientCa(std::path::PathBuf),
    /// TLS without client certificates: explicitly insecure.
    InsecureTls,
    /// No TLS at all (a mesh or proxy in front does TLS and client
    /// authentication): explicitly insecure.
    InsecurePlaintext,
}

/// Why the KEDA flags do not make a safe configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KedaConfigError {
    #[error(
        "--keda-port without --keda-client-ca-file would serve every namespace's decisions to anyone \
         who reaches the port: give --keda-client-ca-file (the CA of KEDA's client certificate), or \
         --keda-insecure-disable-client-auth to accept that"
    )]
    NoClientCa,
    #[error(
        "--keda-plaintext cannot check client certificates: it excludes --keda-client-ca-file"
    )]
    PlaintextWithClientCa,
}

/// The client authentication the flags ask for. Pure.
pub(crate) fn client_auth(
    client_ca: Option<&std::path::Path>,
    plaintext: bool,
    insecure_disable_client_auth: bool,
) -> Result<KedaClientAuth, KedaConfigError> {
    match (client_ca, plaintext, insecure_disable_client_auth) {
        (Some(_), true, _) => Err(KedaConfigError::PlaintextWithClientCa),
        (Some(ca), false, _) => Ok(KedaClientAuth::ClientCa(ca.to_owned())),
        (None, _, false) => Err(KedaConfigError::NoClientCa),
        (None, true, true) => Ok(KedaClientAuth::InsecurePlaintext),
        (None, false, true) => Ok(KedaClientAuth::InsecureTls),
    }
}

/// Serves the scaler on `listener` until `shutdown`: over TLS with `tls`,
/// or in plain text when `tls` is None (for set-ups that terminate TLS in
/// front of the pod), within `limits`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    scaler: KedaScaler,
    limits: KedaLimits,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let counted = calls::CountedScaler::new(scaler, telemetry.keda_calls.clone());
    let service = proto::external_scaler_server::ExternalScalerServer::new(counted)
        .max_decoding_message_size(limits.max_message_bytes);
    server::serve(listener, tls, service, limits, telemetry, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn client_auth_from_flags() {
        let ca = Some(Path::new("/ca.crt"));
        let mtls = Ok(KedaClientAuth::ClientCa("/ca.crt".into()));
        let cases = [
            (ca, false, false, mtls.clone()),
            (ca, false, true, mtls),
            (ca, true, false, Err(KedaConfigError::PlaintextWithClientCa)),
            (ca, true, true, Err(KedaConfigError::PlaintextWithClientCa)),
            (None, false, false, Err(KedaConfigError::NoClientCa)),
            (None, true, false, Err(KedaConfigError::NoClientCa)),
            (None, false, true, Ok(KedaClientAuth::InsecureTls)),
            (None, true, true, Ok(KedaClientAuth::InsecurePlaintext)),
        ];
        for (ca, plain, insecure, want) in cases {
            assert_eq!(
                client_auth(ca, plain, insecure),
                want,
                "{ca:?} {plain} {insecure}"
            );
        }
        assert!(KedaConfigError::NoClientCa
            .to_string()
            .contains("--keda-client-ca-file"));
    }
}
