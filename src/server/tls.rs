//! The serving certificate: from files, or self-signed at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct CertifiedKeyPem {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Reads a PEM certificate chain and private key.
pub fn load_pem_files(cert: &Path, key: &Path) -> Result<CertifiedKeyPem, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate file", cert)?;
    let key_pem = read("private key file", key)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
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

/// The rustls server configuration: TLS 1.2 and 1.3 only, ALPN h2 and
/// http/1.1, no client certificate required at the handshake.
pub fn server_config(pem: CertifiedKeyPem) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_client_ca(pem, None)
}

/// As [`server_config`]; when `client_ca` is given, every client must
/// present a certificate that chains to it.
pub fn server_config_with_client_ca(
    pem: CertifiedKeyPem,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let pem_bytes = std::fs::read(path).map_err(|source| TlsError::Read {
                what: "client CA file",
                path: path.to_owned(),
                source,
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem_bytes.as_slice()).filter_map(Result::ok) {
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(pem.chain, pem.key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
