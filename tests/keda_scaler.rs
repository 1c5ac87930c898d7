//! The KEDA external scaler answered over real gRPC with mutual TLS to a
//! client that is not written in Rust (Python grpcio, stubs generated from
//! the repo's .proto), with the same decisions as the HTTP API.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, free_port, make_client_pki, two_model_inventory, Emulator, Server};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Scaler {
    server: Server,
    grpc_port: u16,
    emulators: Vec<Emulator>,
}

async fn start(extra: &[&str]) -> Scaler {
    let emulators = common::two_model_emulators().await;
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let (server, grpc_port) = start_over(&two_model_inventory(&ports), extra).await;
    Scaler {
        server,
        grpc_port,
        emulators,
    }
}

impl Scaler {
    fn client_args(&self, namespace: &str, metadata: &[&str], command: &str) -> Vec<String> {
        let mut a = vec![
            format!("{ROOT}/tests/keda_client.py"),
            "--address".into(),
            format!("127.0.0.1:{}", self.grpc_port),
            "--ca".into(),
            self.server.ca_path().display().to_string(),
            "--proto-dir".into(),
            format!("{ROOT}/proto"),
            "--namespace".into(),
            namespace.into(),
            "--cert".into(),
            self.server
                .dir
                .path()
                .join("client.crt")
                .display()
                .to_string(),
            "--key".into(),
            self.server
                .dir
                .path()
                .join("client.key")
                .display()
                .to_string(),
        ];
        for m in metadata {
            a.push("--metadata".into());
            a.push((*m).into());
        }
        a.push(command.into());
        a
    }

    /// Runs one client command and returns its JSON answer.
    fn call(&self, namespace: &str, metadata: &[&str], command: &str) -> serde_json::Value {
        self.call_with(self.client_args(namespace, metadata, command))
    }

    fn call_with(&self, args: Vec<String>) -> serde_json::Value {
        let out = Command::new(common::python()).args(args).output().expect(
            "python runs (scripts/test installs grpcio and grpcio-tools into target/test-venv)",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "keda_client.py failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_gets_the_same_decision_as_the_http_api() {
    let s = start(&[]).await;
    let sel = "target_name=llama-decode";
    s.server
        .wait_value("llm-a", "wva_desired_replicas", sel, "2")
        .await;
    let md = ["variantName=llama-a100"];
    let answer = tokio::task::block_in_place(|| s.call("llm-a", &md, "all"));
    let http = s
        .server
        .value("llm-a", "wva_desired_replicas", sel)
        .await
        .unwrap();
    assert_eq!(answer["spec"][0]["targetSize"], 1, "{answer}");
    assert_eq!(answer["spec"][0]["metricName"], "wva_desired_replicas");
    assert_eq!(
        answer["metrics"][0]["metricValue"].to_string(),
        http,
        "{answer}"
    );
    assert_eq!(answer["metrics"][0]["metricValueFloat"], 2.0);
    assert_eq!(answer["active"], true);

    // targetName + ratio; a namespace key naming the ScaledObject's own is fine.
    let answer = tokio::task::block_in_place(|| {
        s.call(
            "llm-b",
            &[
                "targetName=mistral-decode",
                "namespace=llm-b",
                "metric=desiredRatio",
            ],
            "metrics",
        )
    });
    assert_eq!(answer["metrics"][0]["metricValueFloat"], 1.5, "{answer}");
    let answer = tokio::task::block_in_place(|| s.call("llm-a", &md, "stream"));
    assert_eq!(answer["stream"], true, "{answer}");
}

/// A change reaches KEDA's `GetMetrics`. How fast is measured (printed
/// here, recorded in docs/benchmarks.md), not asserted: the client polls
/// until the expected value or its own generous timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_replica_changes_the_answer() {
    let s = start(&[]).await;
    s.server
        .wait_value(
            "llm-a",
            "wva_desired_replicas",
            "target_name=llama-decode",
            "2",
        )
        .await;
    let mut args = s.client_args("llm-a", &["variantName=llama-a100"], "watch");
    args.splice(1..1, ["--until".to_owned(), "4".to_owned()]);
    let mut child = Command::new(common::python())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.contains("\"ready\": 2.0"), "{ready}");
    // Saturate the three replicas together: the model scales up by one
    // (3 -> 4). Intermediate answers (one or two saturated) may show first.
    let changed_at = Instant::now();
    futures::future::join_all(
        s.emulators[..3]
            .iter()
            .map(|e| e.set_state(serde_json::json!({"kv": 0.95}))),
    )
    .await;
    let rest: Vec<String> =
        tokio::task::spawn_blocking(move || lines.map_while(Result::ok).collect())
            .await
            .unwrap();
    let lag = changed_at.elapsed();
    let _ = child.wait();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("{\"changed\": 4.0}"),
        "{rest:?}"
    );
    println!(
        "GetMetrics reached 4 {lag:?} after the replicas changed (scrape interval 1s): {rest:?}"
    );
}

/// `serve` over an inventory file holding `yaml`, scraped every second, with
/// the KEDA gRPC port (clients of a fresh client CA) and `extra` flags; and that port.
async fn start_over(yaml: &str, extra: &[&str]) -> (Server, u16) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, yaml).unwrap();
    let inv = format!("file:{}", path.display());
    let grpc_port = free_port();
    let grpc = grpc_port.to_string();
    let client = make_client_pki(dir.path(), "keda-operator");
    let client_ca = client.ca_path.display().to_string();
    let mut args = vec![
        "--inventory",
        &inv,
        "--metrics-backend",
        "scrape",
        "--scrape-interval",
        "1s",
        "--keda-port",
        &grpc,
        "--keda-client-ca-file",
        &client_ca,
    ];
    args.extend_from_slice(extra);
    (Server::start(dir, &args).await, grpc_port)
}

/// `StreamIsActive` beyond its first message: an inactive variant (0
/// replicas) says false, a change to it is pushed as true, and the value
/// is repeated as a keepalive while nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_active_pushes_changes_and_keepalives() {
    let emulator = Emulator::start("idle-model", 0.20, 1.0).await;
    let spec = |ready| common::VariantSpec {
        namespace: "llm-idle",
        variant: "idle",
        target: "idle-decode",
        model: "idle-model",
        min: 0,
        max: 4,
        ready,
    };
    let (server, grpc_port) = start_over(&common::variant_yaml(&spec(0), &[]), &[]).await;
    let path = server.dir.path().join("inventory.yaml");
    server
        .wait_value("llm-idle", "wva_desired_replicas", "variant_name=idle", "0")
        .await;
    let s = Scaler {
        server,
        grpc_port,
        emulators: vec![emulator],
    };
    let mut args = s.client_args("llm-idle", &["variantName=idle"], "stream");
    args.splice(
        1..1,
        ["--messages", "3", "--timeout", "60"].map(str::to_owned),
    );
    let mut child = Command::new(common::python())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["stream"], false, "0 replicas: inactive: {first}");

    // The Deployment gets a ready replica (the inventory file changes).
    std::fs::write(
        &path,
        common::variant_yaml(&spec(1), &[s.emulators[0].port]),
    )
    .unwrap();
    let rest: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
        lines
            .map_while(Result::ok)
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    })
    .await
    .unwrap();
    let _ = child.wait();
    let values: Vec<&serde_json::Value> = rest.iter().map(|m| &m["stream"]).collect();
    assert_eq!(
        values,
        [&serde_json::json!(true), &serde_json::json!(true)],
        "the change pushed, then the same value again as a keepalive: {rest:?}"
    );
    println!("StreamIsActive messages after the first: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_reads_only_its_own_namespace_and_only_with_a_client_certificate() {
    let s = start(&[]).await;
    s.server.wait_mistral_at_3().await;
    // A ScaledObject in llm-a asking for llm-b's variant.
    let a = tokio::task::block_in_place(|| {
        s.call(
            "llm-a",
            &["variantName=mistral-l40s", "namespace=llm-b"],
            "metrics",
        )
    });
    assert_eq!(a["code"], "PERMISSION_DENIED", "{a}");
    let details = a["details"].as_str().unwrap();
    assert!(
        details.contains("llm-b") && details.contains("llm-a"),
        "{a}"
    );
    // Without the namespace key, llm-b's variant is simply not in llm-a.
    let a =
        tokio::task::block_in_place(|| s.call("llm-a", &["variantName=mistral-l40s"], "metrics"));
    assert_eq!(a["code"], "NOT_FOUND", "{a}");
    // No scaledObjectRef namespace: refused, not defaulted from the metadata.
    let a = tokio::task::block_in_place(|| {
        s.call(
            "",
            &["variantName=mistral-l40s", "namespace=llm-b"],
            "metrics",
        )
    });
    assert_eq!(a["code"], "INVALID_ARGUMENT", "{a}");

    // The same call without a client certificate never gets an answer.
    let mut args = s.client_args("llm-b", &["variantName=mistral-l40s"], "metrics");
    let cert = args.iter().position(|a| a == "--cert").unwrap();
    args.drain(cert..cert + 4);
    let a = tokio::task::block_in_place(|| s.call_with(args));
    assert_eq!(a["code"], "UNAVAILABLE", "the TLS handshake fails: {a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_grpc_statuses_that_name_the_problem() {
    let mut s = start(&[
        "--metrics-stale-after",
        "3s",
        "--metrics-fresh-within",
        "1s",
    ])
    .await;
    s.server.wait_mistral_at_3().await;

    let a = tokio::task::block_in_place(|| {
        s.call("llm-a", &["variantName=no-such-variant"], "metrics")
    });
    assert_eq!(a["code"], "NOT_FOUND", "{a}");
    assert!(
        a["details"].as_str().unwrap().contains("no-such-variant"),
        "{a}"
    );
    assert!(a["details"].as_str().unwrap().contains("llm-a"), "{a}");

    let a = tokio::task::block_in_place(|| s.call("llm-a", &[], "metrics"));
    assert_eq!(a["code"], "INVALID_ARGUMENT", "{a}");
    assert!(
        a["details"].as_str().unwrap().contains("variantName"),
        "{a}"
    );
    let a = tokio::task::block_in_place(|| {
        s.call(
            "llm-a",
            &["variantName=llama-a100", "metric=cpu"],
            "metrics",
        )
    });
    assert_eq!(a["code"], "INVALID_ARGUMENT", "{a}");

    for e in &mut s.emulators[3..] {
        e.proc.stop();
    }
    let md = ["variantName=mistral-l40s"];
    let a = eventually(
        Duration::from_secs(15),
        "UNAVAILABLE for a stale model",
        || {
            let a = tokio::task::block_in_place(|| s.call("llm-b", &md, "metrics"));
            async move { (a["code"] == "UNAVAILABLE").then_some(a) }
        },
    )
    .await;
    let details = a["details"].as_str().unwrap();
    assert!(
        details.contains("mistral-7b") && details.contains("old"),
        "{a}"
    );
}

/// Every call is counted by method and gRPC code on /metrics
/// (`wva_keda_requests_total`, the dashboard's KEDA panel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_method_and_code() {
    let s = start(&[]).await;
    s.server.wait_mistral_at_3().await;
    for _ in 0..2 {
        let a = tokio::task::block_in_place(|| {
            s.call("llm-b", &["variantName=mistral-l40s"], "metrics")
        });
        assert_eq!(a["metrics"][0]["metricValueFloat"], 3.0, "{a}");
    }
    let a = tokio::task::block_in_place(|| {
        s.call("llm-a", &["variantName=no-such-variant"], "metrics")
    });
    assert_eq!(a["code"], "NOT_FOUND", "{a}");
    let page = s.server.text("/metrics").await;
    for want in [
        "wva_keda_requests_total{method=\"GetMetrics\",code=\"Ok\"} 2",
        "wva_keda_requests_total{method=\"GetMetrics\",code=\"NotFound\"} 1",
    ] {
        assert!(page.contains(want), "{want} not in:\n{page}");
    }
}
