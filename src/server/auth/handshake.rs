//! Client certificates at the TLS handshake are optional (kubelet probes and
//! Prometheus come without one) and are not judged there: the handshake
//! only proves the client holds the certificate's key. Whether the chain is
//! trusted, and for what, is decided per request against the CAs in force
//! then, so that a CA change needs no new TLS configuration.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Accepts any client certificate (or none); checks handshake signatures.
#[derive(Debug)]
pub struct OptionalClientCert {
    provider: Arc<CryptoProvider>,
}

impl OptionalClientCert {
    pub fn new() -> Arc<Self> {
        Arc::new(OptionalClientCert {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

impl ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a CA bundle cannot check client certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("not PEM: {0}")]
    NotPem(rustls::pki_types::pem::Error),
    #[error("not a CA certificate: {0}")]
    NotCa(rustls::Error),
    #[error("no certificate in the CA bundle")]
    Empty,
    #[error("cannot build a verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A chain check against the CA certificates in `pem` (client-auth usage).
/// The one builder of client-certificate verifiers: the API port's
/// per-request checks and the KEDA port's handshake (`--keda-client-ca-file`)
/// both use it.
pub fn ca_verifier(pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, CaError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.map_err(CaError::NotPem)?)
            .map_err(CaError::NotCa)?;
    }
    if roots.is_empty() {
        return Err(CaError::Empty);
    }
    Ok(WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()?)
}
