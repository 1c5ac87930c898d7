//! `wva-metrics-server certs` makes a working PKI for the Service, and the
//! server picks up a replaced certificate without a restart.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::{
    eventually, free_port, make_pki, pki, serve_args, variant_yaml, Emulator, Proc, ONE_VARIANT,
};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

const HOST: &str = "wva-metrics-server.wva-system.svc";

fn certs(out: &std::path::Path) {
    let status = Command::new(common::BIN)
        .args([
            "certs",
            "--namespace",
            "wva-system",
            "--service",
            "wva-metrics-server",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    // Captured, not inherited: its log would interleave with test results.
    assert!(
        status.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A client that trusts only `ca_pem` and resolves the Service name to loopback.
fn client_for(ca_pem: &str, port: u16) -> reqwest::Client {
    wva_metrics_server::certs::install_crypto_provider();
    let tls = pki::rustls_config(ca_pem.as_bytes());
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// `serve` without auth on a free port with this certificate and key, over a
/// one-variant inventory in `dir` scraped from a fresh emulator.
async fn serve_with_cert(dir: &Path, cert: &Path, key: &Path) -> (Proc, Emulator, u16) {
    let emulator = Emulator::start("m", 0.1, 0.0).await;
    let inv = dir.join("inventory.yaml");
    std::fs::write(&inv, variant_yaml(&ONE_VARIANT, &[emulator.port])).unwrap();
    let port = free_port();
    let port_s = port.to_string();
    let inv = format!("file:{}", inv.display());
    let mut args = serve_args(&port_s, cert, key);
    args.extend([
        "--inventory",
        &inv,
        "--metrics-backend",
        "scrape",
        "--insecure-disable-auth",
    ]);
    (Proc::spawn("serve", &args), emulator, port)
}

#[tokio::test]
async fn certs_command_writes_a_pki_the_server_and_apiservice_use() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    for f in [
        "ca.crt",
        "ca.key",
        "tls.crt",
        "tls.key",
        "apiservice.yaml",
        "apiservice-custom.yaml",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} written");
    }
    // The custom metrics APIServices: v1beta2 and v1beta1, same Service and CA.
    let custom_text = std::fs::read_to_string(dir.path().join("apiservice-custom.yaml")).unwrap();
    let custom: Vec<APIService> = serde_norway::Deserializer::from_str(&custom_text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = custom
        .iter()
        .map(|a| a.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "v1beta2.custom.metrics.k8s.io",
            "v1beta1.custom.metrics.k8s.io"
        ]
    );
    for a in &custom {
        let spec = a.spec.as_ref().unwrap();
        assert_eq!(spec.group.as_deref(), Some("custom.metrics.k8s.io"));
        let svc = spec.service.as_ref().unwrap();
        assert_eq!(svc.name.as_deref(), Some("wva-metrics-server"));
        assert!(spec.ca_bundle.is_some());
    }
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let api: APIService = serde_norway::from_str(
        &std::fs::read_to_string(dir.path().join("apiservice.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        api.metadata.name.as_deref(),
        Some("v1beta1.external.metrics.k8s.io")
    );
    let spec = api.spec.unwrap();
    assert_eq!(
        (spec.group.as_deref(), spec.version.as_deref()),
        (Some("external.metrics.k8s.io"), Some("v1beta1"))
    );
    let svc = spec.service.unwrap();
    assert_eq!(
        (svc.namespace.as_deref(), svc.name.as_deref(), svc.port),
        (Some("wva-system"), Some("wva-metrics-server"), Some(443))
    );
    assert_eq!(
        spec.ca_bundle.unwrap().0,
        ca.as_bytes(),
        "caBundle is the CA"
    );

    // The server, with these files, is trusted for the Service's DNS name by a client that trusts the CA.
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (_serve, _emulator, port) = serve_with_cert(dir.path(), &cert, &key).await;
    let client = client_for(&ca, port);
    eventually(
        Duration::from_secs(20),
        "an HTTPS answer for the Service name",
        || async {
            client
                .get(format!(
                    "https://{HOST}:{port}/apis/external.metrics.k8s.io/v1beta1"
                ))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        },
    )
    .await;
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca);
    assert!(std::fs::read_to_string(dir.path().join("apiservice.yaml"))
        .unwrap()
        .contains(&bundle));
}

#[tokio::test]
async fn replaced_certificate_files_are_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pki(dir.path());
    let new_dir = tempfile::tempdir().unwrap();
    let new = make_pki(new_dir.path());
    let (_serve, _emulator, port) =
        serve_with_cert(dir.path(), &old.cert_path, &old.key_path).await;
    let url = format!("https://127.0.0.1:{port}/livez");
    let ok = |ca: String| {
        let url = url.clone();
        async move {
            common::https_client(&ca)
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    eventually(
        Duration::from_secs(20),
        "the old certificate served",
        || async { ok(old.ca_pem.clone()).await.then_some(()) },
    )
    .await;
    assert!(
        !ok(new.ca_pem.clone()).await,
        "the new CA does not sign the old certificate"
    );

    // Rotate: the files are replaced in place (as a Secret update does).
    std::fs::copy(&new.key_path, &old.key_path).unwrap();
    std::fs::copy(&new.cert_path, &old.cert_path).unwrap();
    eventually(
        Duration::from_secs(15),
        "new connections to see the new certificate",
        || async { ok(new.ca_pem.clone()).await.then_some(()) },
    )
    .await;
    assert!(
        !ok(old.ca_pem.clone()).await,
        "the old certificate is no longer served"
    );
}
