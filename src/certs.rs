//! `wva-metrics-server certs`: a CA, a serving certificate for the
//! Service, and the APIService with the CA in its `caBundle`, so that an
//! install without cert-manager works the first time. Also the process's
//! rustls crypto provider ([`install_crypto_provider`]).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Installs rustls' `ring` provider as the process default. Only `ring` is
/// in the dependency tree; every TLS user (server, kube client, reqwest)
/// picks it up from here. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot generate certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "refusing to overwrite {}: a Secret or an APIService caBundle made from the existing files would no \
         longer match the new ones (the APIService then fails with FailedDiscoveryCheck); pass --force to \
         replace them, or choose another --out",
        existing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    WouldOverwrite { existing: Vec<PathBuf> },
}

/// What `certs` wrote.
#[derive(Debug)]
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub apiservice: PathBuf,
}

/// The DNS names the serving certificate covers.
pub(crate) fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn write(path: PathBuf, data: &str, private: bool) -> Result<PathBuf, CertsError> {
    let err = |source| CertsError::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&path, data).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(path)
}

/// The APIService for `service` in `namespace`, trusting `ca_pem`.
pub(crate) fn apiservice_yaml(service: &str, namespace: &str, ca_pem: &str) -> String {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1beta1.external.metrics.k8s.io\n  labels:\n    app.kubernetes.io/name: wva-metrics-server\nspec:\n  group: external.metrics.k8s.io\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  service:\n    name: {service}\n    namespace: {namespace}\n    port: 443\n  caBundle: {bundle}\n"
    )
}

/// The APIServices of custom.metrics.k8s.io (v1beta2, which the HPA
/// controller asks, and v1beta1) for `service` in `namespace`, trusting
/// `ca_pem`. A separate file from the external one: a cluster where
/// Prometheus Adapter still owns custom.metrics.k8s.io registers only the
/// external one (and the other way round where KEDA owns external).
pub(crate) fn custom_apiservices_yaml(service: &str, namespace: &str, ca_pem: &str) -> String {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    // The higher versionPriority is the version clients prefer.
    [("v1beta2", 200), ("v1beta1", 100)]
        .iter()
        .map(|(version, priority)| {
            format!(
                "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {version}.custom.metrics.k8s.io\n  labels:\n    app.kubernetes.io/name: wva-metrics-server\nspec:\n  group: custom.metrics.k8s.io\n  version: {version}\n  groupPriorityMinimum: 100\n  versionPriority: {priority}\n  service:\n    name: {service}\n    namespace: {namespace}\n    port: 443\n  caBundle: {bundle}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The files `certs` writes into `out`, in the order it writes them.
pub(crate) const FILE_NAMES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "tls.crt",
    "tls.key",
    "apiservice.yaml",
    "apiservice-custom.yaml",
];

/// [`generate_with`] without `overwrite` (the unit tests' shorthand).
#[cfg(test)]
pub(crate) fn generate(
    namespace: &str,
    service: &str,
    out: &Path,
) -> Result<CertFiles, CertsError> {
    generate_with(namespace, service, out, false)
}

/// Writes ca.crt, ca.key, tls.crt, tls.key and apiservice.yaml into `out`;
/// an existing one is refused, or with `overwrite` replaced (`--force`).
pub fn generate_with(
    namespace: &str,
    service: &str,
    out: &Path,
    overwrite: bool,
) -> Result<CertFiles, CertsError> {
    for (what, v) in [("namespace", namespace), ("service", service)] {
        if !is_dns_label(v) {
            return Err(CertsError::Invalid(format!(
                "--{what} {v:?} is not a valid Kubernetes name (lower-case letters, digits and '-', at most 63)"
            )));
        }
    }
    // Checked before anything is generated or written, so that a refusal
    // leaves the directory exactly as it was.
    let existing: Vec<PathBuf> = FILE_NAMES
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    if !existing.is_empty() && !overwrite {
        return Err(CertsError::WouldOverwrite { existing });
    }
    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.to_owned(),
        source,
    })?;
    let now = time_now();
    let (ca_params, ca_key, ca) = new_ca(
        &format!("{service}-ca"),
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ],
        now,
    )?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(service_names(service, namespace))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    let cert = params.signed_by(&key, &issuer)?;

    // The two custom.metrics.k8s.io APIServices (v1beta1, v1beta2).
    write(
        out.join("apiservice-custom.yaml"),
        &custom_apiservices_yaml(service, namespace, &ca.pem()),
        false,
    )?;
    Ok(CertFiles {
        ca_cert: write(out.join("ca.crt"), &ca.pem(), false)?,
        ca_key: write(out.join("ca.key"), &ca_key.serialize_pem(), true)?,
        tls_cert: write(out.join("tls.crt"), &cert.pem(), false)?,
        tls_key: write(out.join("tls.key"), &key.serialize_pem(), true)?,
        apiservice: write(
            out.join("apiservice.yaml"),
            &apiservice_yaml(service, namespace, &ca.pem()),
            false,
        )?,
    })
}

/// What `certs --keda-client` wrote besides the serving PKI.
#[derive(Debug)]
pub struct KedaClientFiles {
    /// The CA the server trusts on the KEDA port (`--keda-client-ca-file`).
    pub ca_cert: PathBuf,
    /// KEDA's client certificate and key (`tlsClientCert`, `tlsClientKey`).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A self-signed CA that signs leaf certificates only (path length 0),
/// valid ten years from `now`: its parameters (for an `Issuer`), key and
/// certificate.
fn new_ca(
    common_name: &str,
    key_usages: Vec<KeyUsagePurpose>,
    now: time::OffsetDateTime,
) -> Result<(CertificateParams, KeyPair, rcgen::Certificate), CertsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    ca_params.key_usages = key_usages;
    ca_params.not_before = now;
    ca_params.not_after = now + time::Duration::days(3650);
    let ca = ca_params.self_signed(&ca_key)?;
    Ok((ca_params, ca_key, ca))
}

/// Writes a CA of its own for KEDA's client certificates
/// (`keda-client-ca.crt`) and one client certificate it signs
/// (`keda-client.crt`, `keda-client.key`, client-auth usage, CN
/// `keda-operator`), so that the KEDA port can require mutual TLS without
/// cert-manager. The CA's key is not kept: issuing a new client certificate
/// means running this again and replacing both.
pub fn generate_keda_client(out: &Path) -> Result<KedaClientFiles, CertsError> {
    std::fs::create_dir_all(out).map_err(|source| CertsError::Write {
        path: out.to_owned(),
        source,
    })?;
    let now = time_now();
    let (ca_params, ca_key, ca) = new_ca(
        "wva-metrics-server-keda-client-ca",
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        now,
    )?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "keda-operator");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KedaClientFiles {
        ca_cert: write(out.join("keda-client-ca.crt"), &ca.pem(), false)?,
        client_cert: write(out.join("keda-client.crt"), &cert.pem(), false)?,
        client_key: write(out.join("keda-client.key"), &key.serialize_pem(), true)?,
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
