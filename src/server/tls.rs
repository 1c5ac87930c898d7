//! The serving certificate: from files, or self-signed at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("client CA file {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: super::auth::handshake::CaError,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct CertifiedKeyPem {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

/// Reads a PEM certificate chain and private key.
pub(crate) fn load_pem_files(cert: &Path, key: &Path) -> Result<CertifiedKeyPem, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate file", cert)?;
    let key_pem = read("private key file", key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .ok()
        .ok_or_else(|| TlsError::NoKey {
            path: key.to_owned(),
        })?;
    Ok(CertifiedKeyPem { chain, key })
}

/// A self-signed certificate for `localhost`, the loopback addresses and the
/// given extra names. Used when no certificate files are configured.
pub fn self_signed(extra_names: &[String]) -> Result<(CertifiedKeyPem, String), TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra_names.iter().cloned());
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)?;
    let pem = cert.pem();
    let key = PrivateKeyDer::try_from(signing_key.serialize_der())
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_owned())))?;
    Ok((
        CertifiedKeyPem {
            chain: vec![cert.der().clone()],
            key,
        },
        pem,
    ))
}

impl Clone for CertifiedKeyPem {
    fn clone(&self) -> Self {
        CertifiedKeyPem {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The certificate a listener serves: one made at start
/// ([`ReloadingCert::fixed`]), or the one currently in two PEM files,
/// following changes to them ([`ReloadingCert::load`] and
/// [`ReloadingCert::watch`]), so that a rotated certificate (a renewed
/// Secret) is used by new connections without a restart.
#[derive(Debug)]
pub struct ReloadingCert {
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
}

/// How often the files' modification times are checked.
pub(crate) const CERT_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

fn certified_key(pem: CertifiedKeyPem) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let key = provider.key_provider.load_private_key(pem.key)?;
    let ck = rustls::sign::CertifiedKey::new(pem.chain, key);
    // A rotation replaces two files one after the other: a half-replaced
    // pair is refused here (and the previous pair kept) instead of served.
    ck.keys_match()?;
    Ok(ck)
}

impl ReloadingCert {
    /// A certificate that never changes (a self-signed one made at start).
    pub fn fixed(pem: CertifiedKeyPem) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(ReloadingCert {
            current: arc_swap::ArcSwap::from_pointee(certified_key(pem)?),
        }))
    }

    /// Loads the pair once (an error here stops start-up).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let ck = certified_key(load_pem_files(cert, key)?)?;
        Ok(Arc::new(ReloadingCert {
            current: arc_swap::ArcSwap::from_pointee(ck),
        }))
    }

    /// Checks the files every [`CERT_RELOAD_CHECK`]; a new pair that does
    /// not load keeps the previous one and logs why.
    pub(crate) fn watch(
        self: &Arc<Self>,
        cert: PathBuf,
        key: PathBuf,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let paths = vec![cert.clone(), key.clone()];
        crate::file_watch::poll_files(paths, CERT_RELOAD_CHECK, shutdown, move || {
            match load_pem_files(&cert, &key).and_then(certified_key) {
                Ok(ck) => {
                    me.current.store(Arc::new(ck));
                    tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "new serving certificate not usable; keeping the previous one")
                }
            }
        })
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// How a listener treats client certificates.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    /// None asked for.
    None,
    /// Offered and optional; judged per request (the API port).
    Optional,
    /// Required, chaining to the CA in this file, and naming one of these
    /// (common name or DNS/URI SAN; empty: any name) (the KEDA port).
    Required(&'a Path, &'a [String]),
}

/// TLS 1.2/1.3 with the ring provider and the client-certificate policy;
/// the certificate is added by the caller.
fn config_builder(
    client_auth: ClientAuth<'_>,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    Ok(match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional => {
            builder.with_client_cert_verifier(super::auth::handshake::OptionalClientCert::new())
        }
        ClientAuth::Required(path, names) => builder.with_client_cert_verifier(
            super::auth::handshake::NamedClientCert::wrap(client_verifier(path)?, names),
        ),
    })
}

/// The one rustls server configuration of every listener (the API port,
/// the KEDA port): TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, serving
/// `cert`, treating client certificates as `client_auth` says.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_auth: ClientAuth<'_>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = config_builder(client_auth)?;
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verifier of a required client certificate, from the CA bundle at `path`.
fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "client CA file",
        path: path.to_owned(),
        source,
    })?;
    super::auth::handshake::ca_verifier(&pem).map_err(|source| TlsError::ClientCa {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The leaf certificate served now.
    fn serving(cert: &ReloadingCert) -> Vec<u8> {
        cert.current.load().cert[0].as_ref().to_vec()
    }

    /// Waits (bounded: 15 s) until `cert` serves `want`.
    async fn serves(cert: &ReloadingCert, want: &[u8]) -> bool {
        for _ in 0..300 {
            if serving(cert) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn leaf_der(pem_path: &Path) -> Vec<u8> {
        CertificateDer::pem_file_iter(pem_path)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[tokio::test]
    async fn a_rotated_pair_is_served_and_a_broken_one_keeps_the_last() {
        crate::certs::install_crypto_provider();
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let a = crate::certs::generate("ns", "svc", first.path()).unwrap();
        let b = crate::certs::generate("ns", "svc", second.path()).unwrap();
        let live = tempfile::tempdir().unwrap();
        let (cert, key) = (live.path().join("tls.crt"), live.path().join("tls.key"));
        std::fs::copy(&a.tls_cert, &cert).unwrap();
        std::fs::copy(&a.tls_key, &key).unwrap();
        let reloading = ReloadingCert::load(&cert, &key).unwrap();
        assert_eq!(serving(&reloading), leaf_der(&a.tls_cert));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = reloading.watch(cert.clone(), key.clone(), shutdown.clone());

        // Rotated: the new pair is served within a few checks.
        std::fs::copy(&b.tls_key, &key).unwrap();
        std::fs::copy(&b.tls_cert, &cert).unwrap();
        assert!(serves(&reloading, &leaf_der(&b.tls_cert)).await);

        // A certificate that does not parse keeps the pair served before.
        std::fs::write(&cert, "not a certificate").unwrap();
        for _ in 0..3 {
            tokio::time::sleep(CERT_RELOAD_CHECK).await;
        }
        assert_eq!(serving(&reloading), leaf_der(&b.tls_cert));

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}
