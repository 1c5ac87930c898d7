//! Connection limits on the HTTPS port: a client that completes the TLS
//! handshake and sends nothing (or half an HTTP/2 preface) is closed after
//! `--header-read-timeout`; an idle keep-alive connection after
//! `--idle-timeout`; connections beyond `--max-connections` at once; plain
//! HTTP gets a 400 that says to use https. `/healthz` answers throughout.
//! Every loop here is bounded and every socket is on loopback.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::pki::{self, TlsStream as Tls};
use common::{one_variant_server, Emulator, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn server(extra: &[&str]) -> (Server, Emulator) {
    let mut args = vec!["--metrics-backend", "scrape"];
    args.extend_from_slice(extra);
    one_variant_server(&args).await
}

/// A TLS connection offering `alpn`; None when the server closed it
/// before or during the handshake.
async fn tls_connect(s: &Server, alpn: &[u8]) -> Option<Tls> {
    let pem = std::fs::read(s.ca_path()).unwrap();
    let connect = pki::tls_connect(&pem, s.port, alpn);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()
}

async fn closed_within(tls: &mut Tls, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // HTTP/2 frames (SETTINGS, GOAWAY) may come first.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The value of a counter in the server's `/metrics` (0 when absent).
async fn counter(s: &Server, series: &str) -> f64 {
    let text = s.text("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn closed_series(reason: &str) -> String {
    format!("wva_connections_closed_by_server_total{{port=\"https\",reason=\"{reason}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_after_the_handshake_are_closed() {
    let (s, _e) = server(&["--header-read-timeout", "1s"]).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tls_connect(&s, b"http/1.1").await.expect("handshake"));
    }
    // Half an HTTP/2 preface, then nothing.
    let mut h2 = tls_connect(&s, b"h2").await.expect("h2 handshake");
    h2.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    h2.flush().await.unwrap();
    // The server keeps serving meanwhile.
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    for (i, c) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(10)).await,
            "silent connection {i} is closed"
        );
    }
    assert!(
        closed_within(&mut h2, Duration::from_secs(10)).await,
        "a half HTTP/2 preface is closed"
    );
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(counter(&s, &closed_series("no_request_head")).await >= 51.0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (s, _e) = server(&["--idle-timeout", "2s"]).await;
    let mut c = tls_connect(&s, b"http/1.1").await.expect("handshake");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut head))
        .await
        .expect("an answer")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // A keep-alive connection that asked once is not closed as "silent"
    // after the 10 s header timeout but after the 2 s idle timeout.
    assert!(
        closed_within(&mut c, Duration::from_secs(8)).await,
        "the idle connection is closed"
    );
    assert!(counter(&s, &closed_series("idle")).await >= 1.0);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let (s, _e) = server(&["--max-connections", "5", "--header-read-timeout", "30s"]).await;
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        match tls_connect(&s, b"http/1.1").await {
            Some(c) => open.push(c),
            None => refused += 1,
        }
    }
    // The test client's own pooled connection may hold one slot.
    assert!(
        (4..=5).contains(&open.len()),
        "{} admitted with a cap of 5",
        open.len()
    );
    assert_eq!(refused, 8 - open.len());
    drop(open);
    // Slots are freed: the server answers again, and counted the refusals.
    let body = common::eventually(
        Duration::from_secs(10),
        "service after the flood",
        || async {
            let r = s
                .client
                .get(format!("{}/metrics", s.base))
                .send()
                .await
                .ok()?;
            r.text().await.ok()
        },
    )
    .await;
    let refusals: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix(&closed_series("over_limit")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refusals >= 3.0, "{refusals} refusals counted");
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_a_400_that_says_https() {
    let (s, _e) = server(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.port))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes after answering")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert!(counter(&s, &closed_series("plain_http")).await >= 1.0);
}
