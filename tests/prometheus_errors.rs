//! How the Prometheus backend treats Prometheus' answers: a bad query
//! (`bad_data`, any 4xx) fails fast, one attempt per query; unavailability
//! (5xx, `errorType` other than `bad_data`) is retried until the deadline
//! and succeeds when Prometheus recovers; the bearer token is read from
//! `PROMETHEUS_BEARER_TOKEN_FILE` on every cycle (projected tokens rotate);
//! an HTTPS Prometheus is trusted through `PROMETHEUS_CA_CERT_PATH` only.
//! The Prometheus here is a small in-process HTTP(S) server whose answers
//! the test chooses and which records every request.

mod common;

/// Batched queries per fetch cycle.
const QUERIES: usize = wva_metrics_server::collector::prometheus::queries::QuerySignal::ALL.len();

use rustls::pki_types::pem::PemObject;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wva_metrics_server::collector::prometheus::{PrometheusBackend, PrometheusConfig};
use wva_metrics_server::collector::{CollectorError, MetricsBackend, MetricsCache};
use wva_metrics_server::inventory::{resolve, InventorySnapshot};
use wva_metrics_server::telemetry::Telemetry;

/// What the fake Prometheus answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// An empty vector.
    Ok,
    /// 400 with Prometheus' `bad_data` error (a query it cannot parse).
    BadData,
    /// 404 with a text body: a wrong URL path or a proxy in between.
    NotFoundText,
    /// 503 with Prometheus' `unavailable` error.
    Unavailable,
    /// 502 with a text body, as a load balancer answers.
    BadGatewayText,
}

#[derive(Default)]
struct Log {
    /// Authorization header of each request, in order.
    authorization: Vec<Option<String>>,
}

struct FakePrometheus {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    /// Requests to fail with `Unavailable` before answering `answer`.
    fail_first: Arc<Mutex<usize>>,
    log: Arc<Mutex<Log>>,
}

impl FakePrometheus {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> FakePrometheus {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let fake = FakePrometheus {
            port,
            answer: Arc::new(Mutex::new(Answer::Ok)),
            fail_first: Arc::new(Mutex::new(0)),
            log: Arc::new(Mutex::new(Log::default())),
        };
        let (answer, fail_first, log) = (
            Arc::clone(&fake.answer),
            Arc::clone(&fake.fail_first),
            Arc::clone(&fake.log),
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let (answer, fail_first, log) = (
                    Arc::clone(&answer),
                    Arc::clone(&fail_first),
                    Arc::clone(&log),
                );
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_one(stream, answer, fail_first, log).await;
                            }
                        }
                        None => serve_one(tcp, answer, fail_first, log).await,
                    }
                });
            }
        });
        fake
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().authorization.len()
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.log.lock().unwrap().authorization.clone()
    }
}

/// Reads one request (head and body) and writes the chosen answer.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: Arc<Mutex<Answer>>,
    fail_first: Arc<Mutex<usize>>,
    log: Arc<Mutex<Log>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
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
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    log.lock()
        .unwrap()
        .authorization
        .push(header("authorization"));
    let chosen = {
        let mut left = fail_first.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            Answer::Unavailable
        } else {
            *answer.lock().unwrap()
        }
    };
    let (status, content_type, body) = match chosen {
        Answer::Ok => (
            "200 OK",
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
        ),
        Answer::BadData => (
            "400 Bad Request",
            "application/json",
            r#"{"status":"error","errorType":"bad_data","error":"1:1: parse error: unexpected character"}"#,
        ),
        Answer::NotFoundText => ("404 Not Found", "text/plain", "404 page not found"),
        Answer::Unavailable => (
            "503 Service Unavailable",
            "application/json",
            r#"{"status":"error","errorType":"unavailable","error":"TSDB not ready"}"#,
        ),
        Answer::BadGatewayText => ("502 Bad Gateway", "text/html", "<html>Bad Gateway</html>"),
    };
    let r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(r.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn snapshot() -> InventorySnapshot {
    let y = "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: ns}\nspec:\n  scaleTargetRef: {kind: Deployment, name: d}\n  modelID: m\n";
    let objects =
        wva_metrics_server::inventory::file::parse_objects(std::path::Path::new("t"), y).unwrap();
    resolve(&objects).0
}

fn backend(
    url: String,
    tune: impl FnOnce(&mut PrometheusConfig),
) -> (
    PrometheusBackend,
    Telemetry,
    prometheus_client::registry::Registry,
) {
    let (registry, telemetry) = Telemetry::standalone();
    let mut config = PrometheusConfig {
        url,
        query_timeout: Duration::from_secs(3),
        ..PrometheusConfig::default()
    };
    tune(&mut config);
    let b = PrometheusBackend::new(config, telemetry.clone()).unwrap();
    (b, telemetry, registry)
}

/// `wva_backend_errors_total{kind}` summed over queries.
fn errors_of_kind(registry: &prometheus_client::registry::Registry, kind: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("wva_backend_errors_total{") && l.contains(&format!("kind=\"{kind}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn bad_queries_fail_fast_and_unavailability_is_retried() {
    let fake = FakePrometheus::start(None).await;
    let (b, _, registry) = backend(format!("http://127.0.0.1:{}", fake.port), |_| {});
    let snap = snapshot();
    let cache = MetricsCache::new();

    let r = b.fetch_cycle(&snap, &cache).await.expect("a healthy cycle");
    assert_eq!(r.requests, QUERIES);
    assert_eq!(fake.requests(), QUERIES, "one attempt per query");

    // Permanent: Prometheus' bad_data, and a 4xx that is not an API answer.
    for (answer, kind) in [
        (Answer::BadData, "bad_data"),
        (Answer::NotFoundText, "status"),
    ] {
        fake.set(answer);
        let before = fake.requests();
        let e = b
            .fetch_cycle(&snap, &cache)
            .await
            .expect_err("a failed cycle");
        assert!(
            matches!(e, CollectorError::Rejected { .. }),
            "{answer:?}: {e:?}"
        );
        assert_eq!(
            fake.requests() - before,
            QUERIES,
            "{answer:?}: one attempt per query, no retry"
        );
        assert!(
            errors_of_kind(&registry, kind) >= QUERIES as f64,
            "{answer:?} counted as {kind}"
        );
    }

    // Transient: retried until the deadline (3 s, first backoff 200 ms).
    for answer in [Answer::Unavailable, Answer::BadGatewayText] {
        fake.set(answer);
        let before = fake.requests();
        let e = b
            .fetch_cycle(&snap, &cache)
            .await
            .expect_err("a failed cycle");
        assert!(
            matches!(
                e,
                CollectorError::Unreachable { .. } | CollectorError::Timeout { .. }
            ),
            "{answer:?}: {e:?}"
        );
        assert!(
            fake.requests() - before >= 12,
            "{answer:?}: every query retried at least once ({} requests)",
            fake.requests() - before
        );
    }

    // Prometheus recovers while a cycle retries: the cycle succeeds.
    fake.set(Answer::Ok);
    *fake.fail_first.lock().unwrap() = QUERIES;
    let before = fake.requests();
    let r = b
        .fetch_cycle(&snap, &cache)
        .await
        .expect("retries reach the recovered Prometheus");
    assert_eq!(r.requests, QUERIES);
    assert!(
        fake.requests() - before > QUERIES,
        "the failed attempts were retried"
    );
}

#[tokio::test]
async fn the_bearer_token_file_is_sent_and_reread_every_cycle() {
    let fake = FakePrometheus::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let path = token.clone();
    let (b, _, _) = backend(format!("http://127.0.0.1:{}", fake.port), move |c| {
        c.bearer_token_file = Some(path);
    });
    let snap = snapshot();
    let cache = MetricsCache::new();
    b.fetch_cycle(&snap, &cache).await.unwrap();
    // The kubelet rotates the projected token.
    std::fs::write(&token, "second-token").unwrap();
    b.fetch_cycle(&snap, &cache).await.unwrap();
    let seen = fake.authorizations();
    assert_eq!(seen.len(), 2 * QUERIES);
    assert!(
        seen[..QUERIES]
            .iter()
            .all(|a| a.as_deref() == Some("Bearer first-token")),
        "{seen:?}"
    );
    assert!(
        seen[QUERIES..]
            .iter()
            .all(|a| a.as_deref() == Some("Bearer second-token")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn an_https_prometheus_is_trusted_through_the_ca_file_only() {
    wva_metrics_server::certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = common::make_pki(dir.path());
    let certs: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(&std::fs::read(&pki.cert_path).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&std::fs::read(&pki.key_path).unwrap())
            .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let fake = FakePrometheus::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await;
    let url = format!("https://127.0.0.1:{}", fake.port);
    let snap = snapshot();
    let cache = MetricsCache::new();

    let ca = pki.ca_path.clone();
    let (trusted, _, _) = backend(url.clone(), move |c| c.ca_cert_path = Some(ca));
    let r = trusted
        .fetch_cycle(&snap, &cache)
        .await
        .expect("TLS verified with the CA file");
    assert_eq!(r.requests, QUERIES);

    // Without the CA file the certificate is not trusted: no answer is used.
    let (untrusted, _, _) = backend(url, |c| c.query_timeout = Duration::from_secs(1));
    let served = fake.requests();
    assert!(untrusted.fetch_cycle(&snap, &cache).await.is_err());
    assert_eq!(
        fake.requests(),
        served,
        "no request got through an untrusted TLS session"
    );

    // --prometheus-tls-insecure-skip-verify (PROMETHEUS_TLS_INSECURE_SKIP_VERIFY):
    // the same untrusted certificate is accepted.
    let (insecure, _, _) = backend(format!("https://127.0.0.1:{}", fake.port), |c| {
        c.tls_insecure_skip_verify = true
    });
    let r = insecure
        .fetch_cycle(&snap, &cache)
        .await
        .expect("any certificate accepted when told to");
    assert_eq!(r.requests, QUERIES);

    // A CA path that is not PEM is refused when the backend is built.
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let (_, telemetry) = Telemetry::standalone();
    let e = PrometheusBackend::new(
        PrometheusConfig {
            url: format!("https://127.0.0.1:{}", fake.port),
            ca_cert_path: Some(bad.clone()),
            ..PrometheusConfig::default()
        },
        telemetry,
    )
    .expect_err("a bad CA file is an error");
    assert!(
        e.to_string().contains("not-a-ca.pem"),
        "names the file: {e}"
    );
}
