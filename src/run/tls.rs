//! The serving certificate: files (reloaded when they rotate) or a
//! self-signed one generated at start.

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::server;

/// The serving certificate from files, or a self-signed one (logged) when
/// none are given.
pub(crate) fn serving_certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<server::tls::CertifiedKeyPem> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(server::tls::load_pem_files(cert, key)?),
        _ => {
            let (pem, _certificate_pem) = server::tls::self_signed(&[])?;
            tracing::warn!(
                "no --tls-cert-file given: serving a self-signed certificate generated at start"
            );
            Ok(pem)
        }
    }
}

/// Where the serving certificate comes from.
pub enum ServingCert {
    /// Files, reloaded when they change.
    Files(Arc<server::tls::ReloadingCert>),
    /// Generated at start.
    SelfSigned(server::tls::CertifiedKeyPem),
}

impl ServingCert {
    /// From `--tls-cert-file`/`--tls-private-key-file` (watched for rotation),
    /// or self-signed (logged) when none are given.
    pub fn from_args(
        files: Option<(&Path, &Path)>,
        shutdown: &CancellationToken,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<Self> {
        match files {
            Some((cert, key)) => {
                let resolver = server::tls::ReloadingCert::load(cert, key)?;
                tasks.push(resolver.watch(cert.to_owned(), key.to_owned(), shutdown.clone()));
                Ok(ServingCert::Files(resolver))
            }
            None => Ok(ServingCert::SelfSigned(serving_certificate(None, None)?)),
        }
    }

    /// A TLS configuration serving this certificate, treating client
    /// certificates as `client_auth` says.
    pub fn config(
        &self,
        client_auth: server::tls::ClientAuth<'_>,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(match self {
            ServingCert::Files(r) => server::tls::server_config(Arc::clone(r), client_auth)?,
            ServingCert::SelfSigned(pem) => server::tls::server_config(
                server::tls::ReloadingCert::fixed(pem.clone())?,
                client_auth,
            )?,
        })
    }
}

/// TLS from files, or a self-signed certificate (logged) when none are given.
#[cfg(feature = "emulator")]
pub(crate) fn tls_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let pem = serving_certificate(cert, key)?;
    let cert = server::tls::ReloadingCert::fixed(pem)?;
    Ok(server::tls::server_config(
        cert,
        server::tls::ClientAuth::Optional,
    )?)
}
