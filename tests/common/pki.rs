//! Test PKI and TLS clients: CAs and client certificates made with rcgen,
//! HTTPS clients that present them, raw TLS connections, and `serve` with
//! kube inventory against the in-process API server.

use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::apiserver::ApiServer;
use super::{eventually, free_port, make_pki, serve_args, Proc};

/// A raw TLS stream over TCP, as [`tls_connect`] returns it.
pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A certificate authority: its certificate (PEM) and what signs with it.
pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

/// A fresh self-signed CA with common name `name`.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A client certificate (CN, O) signed by `ca`: (cert PEM, key PEM).
pub fn client_cert(ca: &Ca, cn: &str, org: Option<&str>) -> (String, String) {
    let mut subject = vec![(DnType::CommonName, cn)];
    if let Some(o) = org {
        subject.push((DnType::OrganizationName, o));
    }
    client_cert_with_subject(ca, &subject)
}

/// A client certificate signed by `ca` with exactly these subject attributes: (cert PEM, key PEM).
pub fn client_cert_with_subject(ca: &Ca, subject: &[(DnType, &str)]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An HTTPS client (10 s timeout) trusting only `server_ca`, presenting `identity` (cert PEM, key PEM) when given.
pub fn client(server_ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    client_with_timeout(server_ca, identity, Duration::from_secs(10))
}

/// As [`client`], with the given request timeout.
pub fn client_with_timeout(
    server_ca: &str,
    identity: Option<&(String, String)>,
    timeout: Duration,
) -> reqwest::Client {
    wva_metrics_server::certs::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
        .timeout(timeout);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A rustls client configuration (ring provider, no client auth) trusting only the CAs in `ca_pem`.
pub fn rustls_config(ca_pem: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A raw TLS connection to `127.0.0.1:port` as "localhost", trusting `ca_pem` and offering `alpn`.
pub async fn tls_connect(ca_pem: &[u8], port: u16, alpn: &[u8]) -> std::io::Result<TlsStream> {
    let mut cfg = rustls_config(ca_pem);
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// Waits (30 s at most) until `{base}/readyz` answers 200 to `client`.
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    eventually(Duration::from_secs(30), "serve to become ready", || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
}

/// A `serve --inventory kube --metrics-backend scrape` process on the in-process API server.
pub struct KubeServe {
    pub proc: Proc,
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// The PEM of the CA that signed the serving certificate.
    pub server_ca: String,
}

/// Starts `serve --inventory kube --metrics-backend scrape` with `extra` flags, its
/// certificates, kubeconfig and `serve.log` in `dir`, and waits until it is ready.
pub async fn serve_kube(api: &ApiServer, dir: &Path, extra: &[&str]) -> KubeServe {
    let pki = make_pki(dir);
    let kubeconfig = api.write_kubeconfig(dir);
    let port = free_port();
    let port_s = port.to_string();
    let mut args = serve_args(&port_s, &pki.cert_path, &pki.key_path);
    args.extend(["--inventory", "kube", "--metrics-backend", "scrape"]);
    args.extend_from_slice(extra);
    let proc = Proc::spawn_with(
        "serve",
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        Some(&dir.join("serve.log")),
    );
    let base = format!("https://127.0.0.1:{port}");
    wait_ready(&client(&pki.ca_pem, None), &base).await;
    KubeServe {
        proc,
        base,
        server_ca: pki.ca_pem,
    }
}

/// A `serve` (as [`serve_kube`]) behind a front proxy, as the aggregator
/// reaches it: the front proxy's CA is made and written to `dir`, and
/// `--scrape-interval 500ms --requestheader-client-ca-file` come before
/// `extra`.
pub struct FrontProxyServe {
    pub serve: KubeServe,
    /// Signs the front proxy's client certificate (`client_cert`).
    pub front_proxy: Ca,
    /// The server's PKI, kubeconfig and serve.log.
    pub dir: tempfile::TempDir,
}

pub async fn serve_behind_front_proxy(api: &ApiServer, extra: &[&str]) -> FrontProxyServe {
    let dir = tempfile::tempdir().unwrap();
    let front_proxy = ca("front-proxy-ca");
    let fp_path = dir.path().join("front-proxy-ca.crt");
    std::fs::write(&fp_path, &front_proxy.pem).unwrap();
    let mut args = vec![
        "--scrape-interval",
        "500ms",
        "--requestheader-client-ca-file",
        fp_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let serve = serve_kube(api, dir.path(), &args).await;
    FrontProxyServe {
        serve,
        front_proxy,
        dir,
    }
}
