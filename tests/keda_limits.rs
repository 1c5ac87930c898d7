//! The KEDA port against hostile or careless clients, over real sockets:
//! it refuses to start open to anyone, closes connections that never ask
//! or stay idle, caps open connections and StreamIsActive streams per
//! connection, and counts what it closed in /metrics.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use rustls::pki_types::pem::PemObject;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    eventually, free_port, make_client_pki, two_model_inventory, ClientPki, Emulator, Server, BIN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `serve` with `args` and waits (30 s at most) for it to exit.
fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_open_keda_port_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "").unwrap();
    let inv = format!("file:{}", inv.display());
    let port = free_port().to_string();
    let keda = free_port().to_string();
    let base = [
        "--inventory",
        inv.as_str(),
        "--insecure-disable-auth",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        port.as_str(),
        "--keda-port",
        keda.as_str(),
    ];

    // A configuration mistake: exit 2, the README's exit-code table.
    let (code, err) = serve_exit(&base);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--keda-client-ca-file"),
        "names the client CA flag: {err}"
    );
    assert!(err.contains("--keda-insecure-disable-client-auth"), "{err}");

    let (code, err) = serve_exit(&[&base[..], &["--keda-plaintext"]].concat());
    assert_eq!(
        code,
        Some(2),
        "plaintext is no client authentication either: {err}"
    );
    assert!(err.contains("--keda-client-ca-file"), "{err}");

    let (code, err) = serve_exit(
        &[
            &base[..],
            &["--keda-plaintext", "--keda-client-ca-file", "/dev/null"],
        ]
        .concat(),
    );
    assert_eq!(code, Some(2), "a usage error: {err}");
    assert!(
        err.contains("--keda-plaintext") && err.contains("--keda-client-ca-file"),
        "{err}"
    );
}

/// A TLS client of the KEDA port with `client`'s certificate, ALPN h2.
fn connector(server_ca: &str, client: &ClientPki) -> tokio_rustls::TlsConnector {
    wva_metrics_server::certs::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(client.cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(port: u16, c: &tokio_rustls::TlsConnector) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    c.connect(name, tcp).await
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK, literal without indexing, name from the static table.
fn literal_indexed_name(index: u8, value: &str) -> Vec<u8> {
    assert!(index < 15 && value.len() < 127);
    let mut out = vec![index, value.len() as u8];
    out.extend_from_slice(value.as_bytes());
    out
}

/// The HEADERS block of a gRPC call to `path` with no message.
fn grpc_headers(path: &str) -> Vec<u8> {
    let mut h = vec![0x83, 0x87]; // :method POST, :scheme https
    h.extend(literal_indexed_name(4, path)); // :path
    h.extend(literal_indexed_name(1, "localhost")); // :authority
    h.extend([0x0f, 0x10, 16]); // content-type (static index 31)
    h.extend_from_slice(b"application/grpc");
    h.extend([0x00, 2]);
    h.extend_from_slice(b"te");
    h.extend([8]);
    h.extend_from_slice(b"trailers");
    h
}

/// Reads frames until the server closes the connection (60 s at most);
/// acknowledges its SETTINGS when `ack` (a client that has sent its whole
/// preface). Returns the frame types seen.
async fn frames_until_closed(tls: &mut Tls, ack: bool) -> Vec<u8> {
    let mut kinds = Vec::new();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if tls.read_exact(&mut head).await.is_err() {
                return;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if tls.read_exact(&mut payload).await.is_err() {
                return;
            }
            kinds.push(head[3]);
            if ack && head[3] == 0x4 && head[4] & 0x1 == 0 {
                let _ = tls.write_all(&frame(0x4, 0x1, 0, &[])).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the server closes the connection");
    kinds
}

async fn closed_count(s: &Server, reason: &str) -> u64 {
    let text = s.text("/metrics").await;
    let prefix = format!("wva_keda_connections_closed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

struct Keda {
    server: Server,
    port: u16,
    client: ClientPki,
    _emulators: Vec<Emulator>,
}

async fn start(extra: &[&str]) -> Keda {
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
    let client = make_client_pki(dir.path(), "keda-operator");
    let ca = client.ca_path.display().to_string();
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec![
        "--inventory",
        &inv,
        "--metrics-backend",
        "scrape",
        "--scrape-interval",
        "1s",
        "--keda-port",
        &port_s,
        "--keda-client-ca-file",
        &ca,
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with(dir, &args, &[], true).await;
    Keda {
        server,
        port,
        client,
        _emulators: emulators,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_ask_or_go_idle_are_closed() {
    let k = start(&["--header-read-timeout", "1s", "--idle-timeout", "2s"]).await;
    let server_ca = std::fs::read_to_string(k.server.ca_path()).unwrap();
    let c = connector(&server_ca, &k.client);

    // Stops inside the HTTP/2 preface.
    let mut stuck = connect(k.port, &c).await.unwrap();
    stuck.write_all(&PREFACE[..16]).await.unwrap();
    let kinds = frames_until_closed(&mut stuck, false).await;
    assert!(
        !kinds.contains(&0x1),
        "no response to a request never sent: {kinds:?}"
    );
    let n = eventually(
        Duration::from_secs(10),
        "a header_timeout close counted",
        || async { Some(closed_count(&k.server, "header_timeout").await).filter(|n| *n >= 1) },
    )
    .await;
    assert_eq!(n, 1);
    assert_eq!(closed_count(&k.server, "idle_timeout").await, 0);

    // A whole request, answered, then nothing: closed for idleness with GOAWAY.
    let mut idle = connect(k.port, &c).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    hello.extend(frame(
        0x1,
        0x5,
        1,
        &grpc_headers("/externalscaler.ExternalScaler/GetMetricSpec"),
    ));
    idle.write_all(&hello).await.unwrap();
    let kinds = frames_until_closed(&mut idle, true).await;
    assert!(kinds.contains(&0x1), "the request was answered: {kinds:?}");
    assert!(kinds.contains(&0x7), "GOAWAY before closing: {kinds:?}");
    eventually(
        Duration::from_secs(10),
        "an idle_timeout close counted",
        || async { Some(closed_count(&k.server, "idle_timeout").await).filter(|n| *n == 1) },
    )
    .await;
    assert_eq!(
        closed_count(&k.server, "header_timeout").await,
        1,
        "the answered connection was not closed as one that never asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_capped() {
    let k = start(&["--max-connections", "3", "--header-read-timeout", "60s"]).await;
    let server_ca = std::fs::read_to_string(k.server.ca_path()).unwrap();
    let c = connector(&server_ca, &k.client);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tls = connect(k.port, &c).await.unwrap();
        tls.write_all(PREFACE).await.unwrap();
        held.push(tls);
    }
    for _ in 0..5 {
        assert!(
            connect(k.port, &c).await.is_err(),
            "a fourth connection is closed at once"
        );
    }
    let n = eventually(Duration::from_secs(10), "refusals counted", || async {
        Some(closed_count(&k.server, "max_connections").await).filter(|n| *n >= 5)
    })
    .await;
    assert_eq!(n, 5);
    let log = k.server.log();
    let logged = log.matches("too many open connections").count();
    assert!(
        (1..5).contains(&logged),
        "refusals are logged, at most once a second: {logged} lines"
    );
    // One held connection goes away: a new one is served again.
    drop(held.pop());
    eventually(
        Duration::from_secs(10),
        "a connection after one closed",
        || async { connect(k.port, &c).await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_streams_are_bounded_per_connection() {
    let k = start(&["--keda-max-streams-per-connection", "2"]).await;
    k.server
        .wait_value(
            "llm-a",
            "wva_desired_replicas",
            "target_name=llama-decode",
            "2",
        )
        .await;
    let args = [
        format!("{ROOT}/tests/keda_client.py"),
        "--address".into(),
        format!("127.0.0.1:{}", k.port),
        "--ca".into(),
        k.server.ca_path().display().to_string(),
        "--cert".into(),
        k.client.cert_path.display().to_string(),
        "--key".into(),
        k.client.key_path.display().to_string(),
        "--proto-dir".into(),
        format!("{ROOT}/proto"),
        "--namespace".into(),
        "llm-a".into(),
        "--metadata".into(),
        "variantName=llama-a100".into(),
        "--streams".into(),
        "4".into(),
        "streams".into(),
    ];
    let out = tokio::task::block_in_place(|| {
        Command::new(common::python()).args(&args).output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(answer["open"], 2, "{answer}");
    assert_eq!(
        answer["errors"],
        serde_json::json!(["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]),
        "{answer}"
    );
}

/// Runs tests/keda_client.py with `args` and returns its last JSON line.
fn python(args: &[String]) -> serde_json::Value {
    let out = Command::new(common::python()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certs_command_issues_a_keda_client_certificate_the_port_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let status = Command::new(BIN)
        .args([
            "certs",
            "--namespace",
            "wva-system",
            "--service",
            "wva-metrics-server",
            "--keda-client",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "").unwrap();
    let inv = format!("file:{}", inv.display());
    let port = free_port().to_string();
    let keda = free_port();
    let path = |f: &str| out.join(f).display().to_string();
    let _serve = common::Proc::spawn_with(
        "serve",
        &[
            "serve",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port,
            "--inventory",
            &inv,
            "--insecure-disable-auth",
            "--metrics-backend",
            "scrape",
            "--tls-cert-file",
            &path("tls.crt"),
            "--tls-private-key-file",
            &path("tls.key"),
            "--keda-port",
            &keda.to_string(),
            "--keda-client-ca-file",
            &path("keda-client-ca.crt"),
        ],
        &[],
        Some(&dir.path().join("serve.log")),
    );
    let call = |with_cert: bool| {
        let mut a = vec![
            format!("{ROOT}/tests/keda_client.py"),
            "--address".into(),
            format!("127.0.0.1:{keda}"),
            "--ca".into(),
            path("ca.crt"),
            "--server-name".into(),
            "wva-metrics-server.wva-system.svc".into(),
            "--proto-dir".into(),
            format!("{ROOT}/proto"),
            "--namespace".into(),
            "llm".into(),
            "--metadata".into(),
            "variantName=v".into(),
        ];
        if with_cert {
            a.extend([
                "--cert".into(),
                path("keda-client.crt"),
                "--key".into(),
                path("keda-client.key"),
            ]);
        }
        a.push("spec".into());
        tokio::task::block_in_place(|| python(&a))
    };
    let answer = eventually(Duration::from_secs(30), "the KEDA port to answer", || {
        let a = call(true);
        async move { (a["code"] != "UNAVAILABLE").then_some(a) }
    })
    .await;
    assert_eq!(
        answer["spec"][0]["metricName"], "wva_desired_replicas",
        "{answer}"
    );
    let refused = call(false);
    assert_eq!(
        refused["code"], "UNAVAILABLE",
        "no client certificate: {refused}"
    );
}
