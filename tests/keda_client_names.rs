//! `--keda-client-allowed-names` (issue 28): on the KEDA port a client
//! certificate must come from the KEDA client CA *and* name an allowed
//! identity (common name, or a DNS or URI subject alternative name); another
//! certificate of the same CA is refused at the handshake, and the refusal
//! is logged with the names it carried. Real TLS against a real `serve`.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pki::ca;
use common::{free_port, two_model_inventory, Emulator, Server};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client certificate of `ca` with common name `cn` and these URI SANs:
/// (cert PEM, key PEM).
fn client_cert(ca: &common::pki::Ca, cn: &str, uris: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
        .collect();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    (
        p.signed_by(&key, &ca.issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

/// Whether the KEDA port completes an HTTP/2 exchange with this client
/// certificate: it answers the preface with SETTINGS (accepted), or closes
/// the connection with an alert (refused).
async fn accepted(port: u16, server_ca: &str, identity: &(String, String)) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // TLS 1.3: the client may finish its side before the server has
    // judged its certificate; the refusal shows on the first read.
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if tls.write_all(&hello).await.is_err() {
        return false;
    }
    let mut head = [0u8; 9];
    match tokio::time::timeout(Duration::from_secs(20), tls.read_exact(&mut head)).await {
        Ok(Ok(_)) => head[3] == 0x4,
        Ok(Err(_)) => false,
        Err(_) => panic!("the KEDA port neither answered nor closed within 20 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_client_names_are_accepted_on_the_keda_port() {
    wva_metrics_server::certs::install_crypto_provider();
    let mut emulators = Vec::new();
    for (model, kv) in [
        ("meta/llama-3.1-8b", 0.20),
        ("meta/llama-3.1-8b", 0.30),
        ("meta/llama-3.1-8b", 0.25),
        ("mistral-7b", 0.75),
        ("mistral-7b", 0.76),
    ] {
        emulators.push(Emulator::start(model, kv, 1.0).await);
    }
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, two_model_inventory(&ports)).unwrap();
    let inv = format!("file:{}", inv.display());
    let client_ca = ca("keda-client-ca");
    let ca_path = dir.path().join("keda-client-ca.crt");
    std::fs::write(&ca_path, &client_ca.pem).unwrap();
    let spiffe = "spiffe://cluster.local/ns/keda/sa/keda-operator";
    let allowed = format!("keda-operator,{spiffe}");
    let port = free_port();
    let port_s = port.to_string();
    let server = Server::start_with(
        dir,
        &[
            "--inventory",
            &inv,
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "1s",
            "--keda-port",
            &port_s,
            "--keda-client-ca-file",
            ca_path.to_str().unwrap(),
            "--keda-client-allowed-names",
            &allowed,
        ],
        &[],
        true,
    )
    .await;
    let server_ca = std::fs::read_to_string(server.ca_path()).unwrap();
    let cases = [
        (
            "the allowed common name",
            client_cert(&client_ca, "keda-operator", &[]),
            true,
        ),
        (
            "an allowed URI SAN",
            client_cert(&client_ca, "anything", &[spiffe]),
            true,
        ),
        (
            "another name from the same CA",
            client_cert(&client_ca, "mallory", &[]),
            false,
        ),
        (
            "a SAN that only looks alike",
            client_cert(
                &client_ca,
                "mallory",
                &["spiffe://cluster.local/ns/other/sa/keda-operator"],
            ),
            false,
        ),
        (
            "the allowed name from another CA",
            client_cert(&ca("other-ca"), "keda-operator", &[]),
            false,
        ),
    ];
    for (what, identity, want) in &cases {
        assert_eq!(accepted(port, &server_ca, identity).await, *want, "{what}");
    }
    let log = common::eventually(Duration::from_secs(10), "the refusal logged", || async {
        let log = server.log();
        log.contains("none of its names is in --keda-client-allowed-names")
            .then_some(log)
    })
    .await;
    assert!(
        log.contains("mallory"),
        "the refused names are logged: {log}"
    );
}
