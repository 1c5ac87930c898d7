//! The Prometheus backend against a real VictoriaMetrics (scraping
//! `emulate` replicas itself) behind an authenticating loopback proxy, as
//! multi-tenant stores (Mimir, Cortex, Thanos with a tenancy proxy,
//! VictoriaMetrics cluster behind vmauth) sit behind one: the proxy
//! forwards only requests with the required tenant header, basic auth,
//! extra header or client certificate, and answers 401/403 otherwise. A
//! refused request is an error naming the option to fix.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use rustls::pki_types::pem::PemObject;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::prometheus::Target;
use common::victoria::VictoriaServer;
use common::{two_model_inventory, Emulator};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wva_metrics_server::collector::prometheus::config::HeaderSource;
use wva_metrics_server::collector::prometheus::{PrometheusBackend, PrometheusConfig};
use wva_metrics_server::collector::{CollectorError, MetricsBackend, MetricsCache};
use wva_metrics_server::inventory::{resolve, InventorySnapshot};
use wva_metrics_server::telemetry::Telemetry;

/// What the proxy requires: a header with this exact value (name
/// case-insensitive). Missing: 401; wrong value: 403.
#[derive(Clone, Debug)]
struct Requirement {
    header: &'static str,
    value: String,
}

struct AuthProxy {
    port: u16,
    /// Requests forwarded and refused.
    counts: Arc<Mutex<(usize, usize)>>,
}

impl AuthProxy {
    async fn start(
        upstream: u16,
        required: Option<Requirement>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> AuthProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new((0, 0)));
        let c = Arc::clone(&counts);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (required, c, tls) = (required.clone(), Arc::clone(&c), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        // The handshake fails without a client certificate
                        // that chains to the proxy's client CA.
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(tcp).await {
                                proxy_one(s, upstream, required, c).await;
                            }
                        }
                        None => proxy_one(tcp, upstream, required, c).await,
                    }
                });
            }
        });
        AuthProxy { port, counts }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn counts(&self) -> (usize, usize) {
        *self.counts.lock().unwrap()
    }
}

/// Reads one request, checks it, and forwards it to the store with
/// `Connection: close` (so that every request of a kept-alive client
/// connection is checked, one per connection).
async fn proxy_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    upstream: u16,
    required: Option<Requirement>,
    counts: Arc<Mutex<(usize, usize)>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let Ok(n) = client.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = client.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if let Some(r) = &required {
        let refusal = match header(r.header) {
            None => Some("401 Unauthorized"),
            Some(v) if v != r.value => Some("403 Forbidden"),
            Some(_) => None,
        };
        if let Some(status) = refusal {
            counts.lock().unwrap().1 += 1;
            let body = format!("{status}: {} required\n", r.header);
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
    }
    counts.lock().unwrap().0 += 1;
    // Forward with `Connection: close` in place of the client's own.
    let mut forwarded: String = head
        .lines()
        .filter(|l| {
            !l.is_empty()
                && !l
                    .split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    forwarded.push_str("connection: close\r\n\r\n");
    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    if up.write_all(forwarded.as_bytes()).await.is_err()
        || up.write_all(&buf[head_end..]).await.is_err()
    {
        return;
    }
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer).await;
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}

/// Batched queries in one fetch cycle (one per signal, whatever the fleet).
const QUERIES: usize = wva_metrics_server::collector::prometheus::queries::QuerySignal::ALL.len();

const LLAMA: &str = "meta/llama-3.1-8b";
const MISTRAL: &str = "mistral-7b";

/// The two worked examples' replicas, their scrape targets and inventory.
async fn replicas() -> (Vec<Emulator>, Vec<Target>, InventorySnapshot) {
    let mut emulators = Vec::new();
    let mut targets = Vec::new();
    let specs = [
        (LLAMA, "llm-a", "llama-decode", 0.20),
        (LLAMA, "llm-a", "llama-decode", 0.30),
        (LLAMA, "llm-a", "llama-decode", 0.25),
        (MISTRAL, "llm-b", "mistral-decode", 0.75),
        (MISTRAL, "llm-b", "mistral-decode", 0.76),
    ];
    for (i, (model, ns, deployment, kv)) in specs.into_iter().enumerate() {
        let e = Emulator::start(model, kv, 1.0).await;
        let index = if i < 3 { i } else { i - 3 };
        targets.push(Target {
            port: e.port,
            namespace: ns.into(),
            pod: format!("{deployment}-{index}"),
        });
        emulators.push(e);
    }
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let yaml = two_model_inventory(&ports);
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), &yaml)
            .unwrap();
    (emulators, targets, resolve(&objects).0)
}

fn backend(url: String, tune: impl FnOnce(&mut PrometheusConfig)) -> PrometheusBackend {
    let (_, telemetry) = Telemetry::standalone();
    let mut config = PrometheusConfig {
        url,
        query_timeout: Duration::from_secs(10),
        ..PrometheusConfig::default()
    };
    tune(&mut config);
    PrometheusBackend::new(config, telemetry).unwrap()
}

/// A fetch cycle that reaches the store: every replica of both models is
/// updated from VictoriaMetrics' answers.
async fn fetches_all(b: &PrometheusBackend, snap: &InventorySnapshot) {
    let cache = MetricsCache::new();
    let report = b
        .fetch_cycle(snap, &cache)
        .await
        .expect("the store answers through the proxy");
    assert_eq!(report.replicas_updated, 5, "{report:?}");
}

/// A refused cycle: a permanent error (not retried) whose message names
/// `option`.
async fn refused(b: &PrometheusBackend, snap: &InventorySnapshot, status: &str, option: &str) {
    let e = b
        .fetch_cycle(snap, &MetricsCache::new())
        .await
        .expect_err("the proxy refuses");
    assert!(
        matches!(e, CollectorError::Rejected { .. }),
        "401/403 are not retried: {e:?}"
    );
    let m = e.to_string();
    assert!(m.contains(status) && m.contains(option), "{m}");
}

#[tokio::test]
async fn tenant_header_basic_auth_and_extra_headers_pass_an_authenticating_proxy() {
    let (_emulators, targets, snap) = replicas().await;
    let vm = VictoriaServer::start(&targets).await;
    // Straight to VictoriaMetrics: the same data the proxied runs see.
    fetches_all(&backend(vm.url(), |_| {}), &snap).await;

    // Tenant header (Mimir/Cortex: X-Scope-OrgID).
    let tenant = AuthProxy::start(
        vm.port,
        Some(Requirement {
            header: "X-Scope-OrgID",
            value: "team-a".into(),
        }),
        None,
    )
    .await;
    fetches_all(
        &backend(tenant.url("http"), |c| c.tenant = Some("team-a".into())),
        &snap,
    )
    .await;
    refused(
        &backend(tenant.url("http"), |_| {}),
        &snap,
        "401",
        "no credentials are configured",
    )
    .await;
    refused(
        &backend(tenant.url("http"), |c| c.tenant = Some("team-b".into())),
        &snap,
        "403",
        "PROMETHEUS_TENANT",
    )
    .await;
    // Thanos' header name, set through PROMETHEUS_TENANT_HEADER.
    let thanos = AuthProxy::start(
        vm.port,
        Some(Requirement {
            header: "THANOS-TENANT",
            value: "t1".into(),
        }),
        None,
    )
    .await;
    fetches_all(
        &backend(thanos.url("http"), |c| {
            c.tenant = Some("t1".into());
            c.tenant_header = "THANOS-TENANT".into();
        }),
        &snap,
    )
    .await;

    // Basic auth with the password from a file.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    // base64("wva:s3cret")
    let basic = AuthProxy::start(
        vm.port,
        Some(Requirement {
            header: "authorization",
            value: "Basic d3ZhOnMzY3JldA==".into(),
        }),
        None,
    )
    .await;
    let with_password = |c: &mut PrometheusConfig| {
        c.basic_auth_username = Some("wva".into());
        c.basic_auth_password_file = Some(password.clone());
    };
    fetches_all(&backend(basic.url("http"), with_password), &snap).await;
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    refused(
        &backend(basic.url("http"), |c| {
            c.basic_auth_username = Some("wva".into());
            c.basic_auth_password_file = Some(wrong.clone());
        }),
        &snap,
        "403",
        "PROMETHEUS_BASIC_AUTH_USERNAME",
    )
    .await;

    // An extra header whose value comes from a file (a mounted Secret).
    let key = dir.path().join("api-key");
    std::fs::write(&key, "k-123\n").unwrap();
    let keyed = AuthProxy::start(
        vm.port,
        Some(Requirement {
            header: "X-Api-Key",
            value: "k-123".into(),
        }),
        None,
    )
    .await;
    let with_key = backend(keyed.url("http"), |c| {
        c.headers = vec![("X-Api-Key".into(), HeaderSource::File(key.clone()))]
    });
    fetches_all(&with_key, &snap).await;
    // Rotated in place: the next cycle sends the new value (refused here).
    std::fs::write(&key, "k-456").unwrap();
    refused(&with_key, &snap, "403", "PROMETHEUS_HEADERS").await;
    let (forwarded, refusals) = keyed.counts();
    assert_eq!(
        (forwarded, refusals),
        (QUERIES, QUERIES),
        "each query is refused once, not retried"
    );
}

#[tokio::test]
async fn a_client_certificate_passes_an_mtls_proxy() {
    wva_metrics_server::certs::install_crypto_provider();
    let (_emulators, targets, snap) = replicas().await;
    let vm = VictoriaServer::start(&targets).await;
    let dir = tempfile::tempdir().unwrap();
    // One CA signs the proxy's serving certificate and our client
    // certificate; another CA's certificate is refused.
    let pki = common::make_pki(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = common::make_pki(other_dir.path());
    let read_certs = |p: &std::path::Path| {
        rustls::pki_types::CertificateDer::pem_slice_iter(&std::fs::read(p).unwrap())
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&pki.ca_path) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&std::fs::read(&pki.key_path).unwrap())
            .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&pki.cert_path), key)
        .unwrap();
    let proxy = AuthProxy::start(
        vm.port,
        None,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))),
    )
    .await;
    let url = proxy.url("https");
    let ca = pki.ca_path.clone();
    fetches_all(
        &backend(url.clone(), |c| {
            c.ca_cert_path = Some(ca.clone());
            c.client_cert_path = Some(pki.cert_path.clone());
            c.client_key_path = Some(pki.key_path.clone());
        }),
        &snap,
    )
    .await;
    // No client certificate, or one from another CA: no request gets through.
    for (cert, key) in [
        (None, None),
        (Some(other.cert_path.clone()), Some(other.key_path.clone())),
    ] {
        let b = backend(url.clone(), |c| {
            c.ca_cert_path = Some(ca.clone());
            c.client_cert_path = cert;
            c.client_key_path = key;
            c.query_timeout = Duration::from_secs(2);
        });
        assert!(b.fetch_cycle(&snap, &MetricsCache::new()).await.is_err());
    }
    assert_eq!(
        proxy.counts(),
        (QUERIES, 0),
        "only the first cycle's queries got through"
    );
    // A key that does not match the certificate is refused at start, naming both options.
    let (_, telemetry) = Telemetry::standalone();
    let e = PrometheusBackend::new(
        PrometheusConfig {
            url,
            client_cert_path: Some(pki.cert_path.clone()),
            client_key_path: Some(pki.ca_path.clone()),
            ..PrometheusConfig::default()
        },
        telemetry,
    )
    .expect_err("a CA certificate is no private key");
    assert!(e.to_string().contains("PROMETHEUS_CLIENT_KEY_PATH"), "{e}");
}
