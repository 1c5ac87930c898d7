//! Client certificates at the TLS handshake of the API port are optional
//! (kubelet probes and Prometheus come without one) and are not judged
//! there: the handshake only proves the client holds the certificate's key.
//! Whether the chain is trusted, and for what, is decided against the CAs in
//! force, once per connection (see [`super::chain`]), so that a CA change
//! needs no new TLS configuration. The KEDA port requires a certificate of
//! its CA at the handshake, with an allowed name ([`NamedClientCert`]).

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
pub(crate) struct OptionalClientCert {
    provider: Arc<CryptoProvider>,
}

impl OptionalClientCert {
    pub(crate) fn new() -> Arc<Self> {
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

/// A required client certificate: verified by `inner` (the CA), then its
/// common name or a DNS/URI subject alternative name must be one of
/// `allowed` (the KEDA port's `--keda-client-allowed-names`), so that
/// another certificate the same CA issued is not enough.
pub(crate) struct NamedClientCert {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

/// Refused names are logged at most once a second.
static REFUSED_NAME_LOG: crate::server::log_limit::LogLimiter =
    crate::server::log_limit::LogLimiter::new(std::time::Duration::from_secs(1));

impl std::fmt::Debug for NamedClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedClientCert")
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl NamedClientCert {
    /// `inner` alone when `allowed` is empty (any name the CA signed).
    pub(crate) fn wrap(
        inner: Arc<dyn ClientCertVerifier>,
        allowed: &[String],
    ) -> Arc<dyn ClientCertVerifier> {
        let allowed: Vec<String> = allowed.iter().filter(|n| !n.is_empty()).cloned().collect();
        if allowed.is_empty() {
            return inner;
        }
        Arc::new(NamedClientCert { inner, allowed })
    }
}

/// The names a client certificate answers to: its common name, then its
/// DNS and URI subject alternative names. Empty when it does not parse.
pub(crate) fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = super::authn::common_name(der).into_iter().collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::URI(u) => names.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    names
}

impl ClientCertVerifier for NamedClientCert {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = certificate_names(end_entity);
        if names.iter().any(|n| self.allowed.contains(n)) {
            return Ok(verified);
        }
        if let Some(suppressed) = REFUSED_NAME_LOG.allow() {
            tracing::warn!(
                names = ?names,
                allowed = ?self.allowed,
                suppressed,
                "client certificate refused: none of its names is in --keda-client-allowed-names (further refusals within a second are only counted)"
            );
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
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
pub(crate) fn ca_verifier(pem: &[u8]) -> Result<Arc<dyn ClientCertVerifier>, CaError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair, SanType};

    fn ca() -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "keda-client-ca");
        let pem = p.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(p, key))
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>, cn: &str, sans: Vec<SanType>) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn only_allowed_names_of_the_ca_pass() {
        let (pem, issuer) = ca();
        let (_, other) = ca();
        let allowed = [
            "keda-operator".to_owned(),
            "spiffe://c/ns/keda/sa/op".to_owned(),
        ];
        let v = NamedClientCert::wrap(ca_verifier(pem.as_bytes()).unwrap(), &allowed);
        let uri = |u: &str| SanType::URI(u.to_owned().try_into().unwrap());
        let dns = |d: &str| SanType::DnsName(d.to_owned().try_into().unwrap());
        let cases = [
            ("allowed CN", leaf(&issuer, "keda-operator", vec![]), true),
            (
                "allowed URI SAN",
                leaf(&issuer, "x", vec![uri("spiffe://c/ns/keda/sa/op")]),
                true,
            ),
            (
                "DNS SAN named like the CN",
                leaf(&issuer, "x", vec![dns("keda-operator")]),
                true,
            ),
            (
                "another name",
                leaf(&issuer, "mallory", vec![uri("spiffe://c/ns/x/sa/op")]),
                false,
            ),
            (
                "allowed CN, other CA",
                leaf(&other, "keda-operator", vec![]),
                false,
            ),
        ];
        for (what, cert, want) in cases {
            assert_eq!(
                v.verify_client_cert(&cert, &[], UnixTime::now()).is_ok(),
                want,
                "{what}: names {:?}",
                certificate_names(&cert)
            );
        }
        // No names configured: any certificate of the CA.
        let any = NamedClientCert::wrap(ca_verifier(pem.as_bytes()).unwrap(), &[String::new()]);
        assert!(any
            .verify_client_cert(&leaf(&issuer, "mallory", vec![]), &[], UnixTime::now())
            .is_ok());
    }
}
