//! Abuse and fault tests: slow and oversize requests (overload is in
//! tests/auth_delegation.rs, where slow reviews keep requests in flight). Each checks
//! the Status answer and that normal service follows. Loopback only,
//! bounded in time.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::pki::{self, TlsStream};
use common::{one_variant_server, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALUES: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/wva_desired_replicas";

/// A raw TLS connection to the server, offering HTTP/1.1.
async fn tls_connect(s: &Server) -> TlsStream {
    let pem = std::fs::read(s.ca_path()).unwrap();
    pki::tls_connect(&pem, s.port, b"http/1.1").await.unwrap()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (s, _e) =
        one_variant_server(&["--metrics-backend", "scrape", "--header-read-timeout", "1s"]).await;
    let mut tls = tls_connect(&s).await;
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for b in request.iter() {
        if tls.write_all(&[*b]).await.is_err() || tls.flush().await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !closed {
        // The server may have answered 408 and closed: read until EOF (bounded).
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut buf)).await;
        closed = read.is_ok();
        if !buf.is_empty() {
            let head = String::from_utf8_lossy(&buf);
            assert!(
                !head.starts_with("HTTP/1.1 200"),
                "a slow request must not be served: {head}"
            );
        }
    }
    assert!(
        closed,
        "the connection is closed after the header read timeout"
    );
    println!(
        "slow client cut off after {:?} (header read timeout 1s)",
        started.elapsed()
    );
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200, "service continues");
}

#[tokio::test]
async fn oversize_requests_get_clean_errors() {
    let (s, _e) = one_variant_server(&["--metrics-backend", "scrape"]).await;
    // Oversize headers: 431. Over HTTP/1.1 the answer is a status line;
    // (HTTP/2 would reset the stream instead, which proves nothing here).
    let http1 = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(s.ca_path()).unwrap()).unwrap(),
        )
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http1
        .get(format!("{}/healthz", s.base))
        .header("X-Big", "a".repeat(100 * 1024))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    assert_eq!(r.status(), 431);
    // Headers just under the limit are served.
    let r = http1
        .get(format!("{}/healthz", s.base))
        .header("X-Big", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Oversize URI: 414 Status.
    let long = format!("{VALUES}?labelSelector=a%3D{}", "b".repeat(10 * 1024));
    let (status, body) = s.get(&long).await;
    assert_eq!(status, 414);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "RequestURITooLong");
    // A body on GET is ignored.
    let r = s
        .client
        .get(format!("{}{VALUES}", s.base))
        .body("{\"unexpected\": true}")
        .send()
        .await
        .unwrap();
    assert!(r.status() == 200 || r.status() == 503, "{}", r.status());
    // Service continues.
    let (status, _) = s.get("/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(status, 200);
}

/// Each layer of the request stack answers in its own way: HEAD gets the
/// head of the GET answer (errors included) without a body, routing
/// answers unknown paths and methods with a Status, and telemetry counts
/// routed answers (`unmatched` for 404/405) but not those refused before
/// routing (414).
#[tokio::test]
async fn head_requests_and_stack_answers() {
    let (s, _e) = one_variant_server(&["--metrics-backend", "scrape"]).await;
    let head = |path: &str| s.client.head(format!("{}{path}", s.base)).send();
    let r = head("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 0, "HEAD has no body");
    let r = head("/apis/external.metrics.k8s.io/v1beta1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json",
        "the GET answer's head"
    );
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    let r = head("/no/such/path").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.bytes().await.unwrap().len(), 0, "errors too");

    let (status, body) = s.get("/no/such/path").await;
    assert_eq!(status, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    let r = s
        .client
        .delete(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "MethodNotAllowed");
    // A path that is not UTF-8 once decoded: 400 Status.
    let (status, body) = s.get("/apis/%ff").await;
    assert_eq!(status, 400);
    assert_eq!(body["reason"], "BadRequest");
    // An escaped slash routes as a slash.
    let (status, _) = s.get("/apis%2Fexternal.metrics.k8s.io%2Fv1beta1").await;
    assert_eq!(status, 200);
    let long = format!("{VALUES}?labelSelector=a%3D{}", "b".repeat(10 * 1024));
    assert_eq!(s.get(&long).await.0, 414);

    let metrics = s.text("/metrics").await;
    let count = |labels: &str| -> Option<u64> {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("wva_http_requests_total{{{labels}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(count(r#"route="unmatched",code="404""#), Some(2));
    assert_eq!(count(r#"route="unmatched",code="405""#), Some(1));
    assert_eq!(count(r#"route="healthz",code="200""#), Some(1));
    assert_eq!(count(r#"route="api_resource_list",code="200""#), Some(2));
    assert!(
        !metrics.contains(r#"code="414""#) && !metrics.contains(r#"code="400""#),
        "answers refused before routing are not counted: {metrics}"
    );
}
