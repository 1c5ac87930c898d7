//! What a client certificate chain proves: checked once per connection
//! (the caller keeps the verdict), never for more than a bounded number of
//! signature checks.
//!
//! The handshake accepts any chain (see [`super::handshake`]); a hostile
//! one could otherwise make every request pay for a long path search (a
//! leaf and 100 self-signed "intermediates" named like the client CA cost
//! webpki its whole budget of 100 signature checks, twice per request).
//! [`precheck`] refuses, before any signature is checked, a chain that is
//! longer than [`MAX_CHAIN_CERTIFICATES`], that holds a self-issued
//! intermediate, or two intermediates with the same subject. What passes
//! has at most one intermediate per issuer name, so path building is a
//! line: per certificate one check against the intermediate of that name
//! and one per trust anchor of that name, at most
//! [`MAX_CHAIN_CERTIFICATES`] x (1 + anchors with one name) per CA.

use rustls::pki_types::{CertificateDer, UnixTime};

use super::authn::{self, UserInfo};
use super::AuthConfig;

/// The longest chain looked at: the leaf and four intermediates. Kubernetes
/// client certificates come straight from a CA, or with one intermediate.
pub(crate) const MAX_CHAIN_CERTIFICATES: usize = 5;

/// What a chain proves under one trust configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Verdict {
    /// The chain verifies against the request-header CA and its common
    /// name is allowed: the front proxy's headers name the user.
    pub(crate) front_proxy: bool,
    /// The user the chain proves against the client CA.
    pub(crate) client_user: Option<UserInfo>,
    /// Why it proves less (for the log).
    pub(crate) failures: Vec<String>,
}

impl Verdict {
    /// A chain not verified at all.
    pub(crate) fn refused(reason: String) -> Self {
        Verdict {
            front_proxy: false,
            client_user: None,
            failures: vec![reason],
        }
    }
}

/// Refuses chains whose verification could cost more than the bound,
/// without checking a signature.
pub(crate) fn precheck(certs: &[CertificateDer<'_>]) -> Result<(), String> {
    if certs.len() > MAX_CHAIN_CERTIFICATES {
        return Err(format!(
            "the client certificate chain has {} certificates, more than {MAX_CHAIN_CERTIFICATES}",
            certs.len()
        ));
    }
    let mut subjects: Vec<Vec<u8>> = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate {i} of the client chain does not parse: {e}"))?;
        if i == 0 {
            continue;
        }
        let subject = cert.subject().as_raw();
        if subject == cert.issuer().as_raw() {
            return Err(format!(
                "certificate {i} of the client chain is self-issued: an intermediate never is"
            ));
        }
        if subjects.iter().any(|s| s == subject) {
            return Err(format!(
                "certificate {i} of the client chain has the subject of an earlier intermediate"
            ));
        }
        subjects.push(subject.to_vec());
    }
    Ok(())
}

/// Verifies a chain that passed [`precheck`] against the configured CAs.
/// CPU work (signature checks): run it off the request threads.
pub(crate) fn verify(config: &AuthConfig, certs: &[CertificateDer<'_>]) -> Verdict {
    let mut verdict = Verdict::default();
    let Some((leaf, intermediates)) = certs.split_first() else {
        return verdict;
    };
    let now = UnixTime::now();
    if let Some(rh) = &config.request_header {
        match rh.ca.verify_client_cert(leaf, intermediates, now) {
            Ok(_) => {
                let cn = authn::common_name(leaf).unwrap_or_default();
                if rh.names.name_allowed(&cn) {
                    verdict.front_proxy = true;
                } else {
                    verdict.failures.push(format!(
                        "the front-proxy certificate's common name {cn:?} is not in the allowed names"
                    ));
                }
            }
            Err(e) => verdict.failures.push(format!(
                "the client certificate does not verify against the request-header CA: {e}"
            )),
        }
    }
    if let Some(ca) = &config.client_ca {
        match ca.verify_client_cert(leaf, intermediates, now) {
            Ok(_) => verdict.client_user = authn::user_from_certificate(leaf),
            Err(e) => verdict.failures.push(format!(
                "the client certificate does not verify against the client CA: {e}"
            )),
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>) -> CertificateDer<'static> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "alice");
        let key = KeyPair::generate().unwrap();
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    /// A self-signed certificate named `cn` (what a flood sends as
    /// "intermediates").
    fn self_signed(cn: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        ca_params(cn).self_signed(&key).unwrap().der().clone()
    }

    /// An intermediate `cn` signed by `issuer`, and its issuer handle.
    fn intermediate(
        cn: &str,
        issuer: &Issuer<'_, KeyPair>,
    ) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let p = ca_params(cn);
        let der = p.signed_by(&key, issuer).unwrap().der().clone();
        (der, Issuer::new(p, key))
    }

    #[test]
    fn precheck_bounds_the_chain_before_any_signature() {
        let root_key = KeyPair::generate().unwrap();
        let root = Issuer::new(ca_params("client-ca"), root_key);
        let (i1, i1_issuer) = intermediate("int-1", &root);
        let (i2, i2_issuer) = intermediate("int-2", &i1_issuer);
        let (i1_again, _) = intermediate("int-1", &root);
        let leaf_of_root = leaf(&root);
        let leaf_of_i2 = leaf(&i2_issuer);
        let flood: Vec<_> = std::iter::once(leaf_of_root.clone())
            .chain((0..100).map(|_| self_signed("client-ca")))
            .collect();
        let too_long: Vec<_> = std::iter::once(leaf_of_root.clone())
            .chain((0..MAX_CHAIN_CERTIFICATES).map(|i| self_signed(&format!("x{i}"))))
            .collect();
        let cases: Vec<(&str, Vec<CertificateDer<'static>>, Option<&str>)> = vec![
            ("a leaf alone", vec![leaf_of_root.clone()], None),
            (
                "a leaf and two intermediates",
                vec![leaf_of_i2, i2, i1.clone()],
                None,
            ),
            ("a leaf and 100 self-signed", flood, Some("more than 5")),
            ("one over the bound", too_long, Some("6 certificates")),
            (
                "a self-signed intermediate",
                vec![leaf_of_root.clone(), self_signed("client-ca")],
                Some("self-issued"),
            ),
            (
                "two intermediates of one name",
                vec![leaf_of_root.clone(), i1, i1_again],
                Some("subject of an earlier"),
            ),
            (
                "not a certificate",
                vec![
                    leaf_of_root,
                    CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]),
                ],
                Some("does not parse"),
            ),
        ];
        for (what, chain, want) in cases {
            match (precheck(&chain), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{what}: {e}"),
                (got, _) => panic!("{what}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn verify_proves_the_client_ca_user_through_an_intermediate() {
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("users-ca");
        let root_pem = root_params.self_signed(&root_key).unwrap().pem();
        let root = Issuer::new(root_params, root_key);
        let (int, int_issuer) = intermediate("users-int", &root);
        let chain = vec![leaf(&int_issuer), int];
        let config = AuthConfig {
            request_header: None,
            client_ca: Some(super::super::handshake::ca_verifier(root_pem.as_bytes()).unwrap()),
        };
        assert_eq!(precheck(&chain), Ok(()));
        let v = verify(&config, &chain);
        assert_eq!(v.client_user.map(|u| u.name).as_deref(), Some("alice"));
        assert!(!v.front_proxy);
        // Without the intermediate the leaf does not verify.
        let v = verify(&config, &chain[..1]);
        assert!(v.client_user.is_none());
        assert!(v.failures[0].contains("client CA"), "{:?}", v.failures);
    }
}
