//! The first mistakes a new user makes, run against the real binary: each
//! fatal error is printed once, says what to do, and configuration mistakes
//! exit with 2; `certs` does not overwrite a PKI; a standalone server with
//! authentication off listens on loopback only; a dead pod is logged when it
//! goes down and when it comes back, not every scrape.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{eventually, free_port, Emulator, Proc, Server, BIN};

/// Runs the binary to completion (these runs stop at start-up), with no
/// cluster configuration in reach.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("PROMETHEUS_URL")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env("HOME", home.path())
        .envs(env.iter().copied());
    let out = c.output().unwrap();
    drop(home);
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `error:` lines of a run: exactly one is expected.
fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{text}");
    assert!(errors[0].starts_with("error: "), "{text}");
    errors[0].to_owned()
}

const GOOD_INVENTORY: &str = "apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata:
  name: llama-a100
  namespace: llm
spec:
  scaleTargetRef:
    kind: Deployment
    name: llama
  modelID: meta/llama-3.1-8b
  minReplicas: 1
";

fn serve_file(text: &str) -> (Output, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, text).unwrap();
    let inv = format!("file:{}", path.display());
    let port = free_port().to_string();
    let out = run(
        &[
            "serve",
            "--inventory",
            &inv,
            "--metrics-backend",
            "scrape",
            "--insecure-disable-auth",
            "--secure-port",
            &port,
        ],
        &[],
    );
    (out, path, dir)
}

#[test]
fn an_inventory_file_with_a_mistake_stops_serve_with_exit_2_naming_file_line_and_field() {
    // (the mistake, the line, the field)
    let table = [
        (
            GOOD_INVENTORY.replace("minReplicas: 1", "minReplica: 1"),
            11,
            "spec.minReplica",
        ),
        (
            GOOD_INVENTORY.replace("llmd.ai/v1alpha1", "llm-d.ai/v1alpha1"),
            1,
            "apiVersion",
        ),
        (
            GOOD_INVENTORY.replace("minReplicas: 1", "minReplicas: -1"),
            11,
            "spec.minReplicas",
        ),
        (
            format!(
                "# a comment\n---\n{}",
                GOOD_INVENTORY.replace("modelID", "modelId")
            ),
            // modelID is required and `modelId` looks like it: the key
            // given is named, at its own line (the message suggests
            // `modelID`: tests/exit_codes.rs).
            12,
            "spec.modelId",
        ),
    ];
    for (text, line, field) in table {
        let (out, path, _dir) = serve_file(&text);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let e = error_line(&out);
        let want = format!(
            "inventory file {}, line {line}: field `{field}`",
            path.display()
        );
        assert!(e.contains(&want), "{e}\nwants: {want}");
    }
}

#[test]
fn a_missing_file_is_said_once() {
    let out = run(
        &[
            "serve",
            "--inventory",
            "file:/nonexistent/wva/inventory.yaml",
            "--metrics-backend",
            "scrape",
            "--insecure-disable-auth",
            "--secure-port",
            &free_port().to_string(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let e = error_line(&out);
    assert!(e.contains("/nonexistent/wva/inventory.yaml"), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
}

#[test]
fn no_prometheus_url_says_how_to_do_without_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD_INVENTORY).unwrap();
    let inv = format!("file:{}", path.display());
    let out = run(
        &[
            "serve",
            "--inventory",
            &inv,
            "--insecure-disable-auth",
            "--secure-port",
            &free_port().to_string(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = error_line(&out);
    assert!(
        e.contains("PROMETHEUS_URL") && e.contains("--prometheus-url"),
        "{e}"
    );
    assert!(e.contains("--metrics-backend scrape"), "{e}");
}

#[test]
fn no_cluster_is_one_line_that_says_what_to_do() {
    let out = run(&["serve", "--secure-port", &free_port().to_string()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = error_line(&out);
    assert!(
        e.contains("--inventory file:PATH --insecure-disable-auth"),
        "{e}"
    );
    // kube's error already holds its causes: each is said once.
    assert_eq!(e.matches("no-such-kubeconfig").count(), 1, "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
}

#[test]
fn certs_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pki");
    let out_s = out_dir.to_str().unwrap();
    let args = [
        "certs",
        "--namespace",
        "wva-system",
        "--service",
        "wva-metrics-server",
        "--out",
        out_s,
    ];
    let first = run(&args, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let ca = std::fs::read(out_dir.join("ca.crt")).unwrap();
    let key = std::fs::read(out_dir.join("ca.key")).unwrap();

    let again = run(&args, &[]);
    assert!(!again.status.success());
    let e = error_line(&again);
    assert!(
        e.contains("refusing to overwrite") && e.contains("--force"),
        "{e}"
    );
    assert!(
        e.contains(&out_dir.join("ca.key").display().to_string()),
        "{e}"
    );
    assert_eq!(
        std::fs::read(out_dir.join("ca.crt")).unwrap(),
        ca,
        "CA untouched"
    );
    assert_eq!(
        std::fs::read(out_dir.join("ca.key")).unwrap(),
        key,
        "CA key untouched"
    );

    let mut forced = args.to_vec();
    forced.push("--force");
    let replaced = run(&forced, &[]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_ne!(
        std::fs::read(out_dir.join("ca.crt")).unwrap(),
        ca,
        "--force replaced the CA"
    );
}

#[tokio::test]
async fn insecure_disable_auth_listens_on_loopback_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD_INVENTORY).unwrap();
    let inv = format!("file:{}", path.display());
    let port = free_port().to_string();
    let log = dir.path().join("serve.log");
    let _serve = Proc::spawn_with(
        "serve",
        &[
            "serve",
            "--inventory",
            &inv,
            "--metrics-backend",
            "scrape",
            "--insecure-disable-auth",
            "--secure-port",
            &port,
        ],
        &[],
        Some(&log),
    );
    let line = eventually(Duration::from_secs(30), "the serving log line", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .ok()?
                .lines()
                .find(|l| l.contains("serving external.metrics.k8s.io"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        line.contains(&format!("address=127.0.0.1:{port}")),
        "{line}"
    );
}

#[test]
fn an_explicit_bind_address_still_wins() {
    use clap::Parser;
    use wva_metrics_server::command::{Cli, Command};
    let serve = |extra: &[&str]| -> std::net::IpAddr {
        let mut args = vec!["wva-metrics-server", "serve"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Serve(a) => a.listen.bind_address,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(serve(&[]).to_string(), "0.0.0.0");
    assert_eq!(serve(&["--insecure-disable-auth"]).to_string(), "127.0.0.1");
    assert_eq!(
        serve(&["--insecure-disable-auth", "--bind-address", "0.0.0.0"]).to_string(),
        "0.0.0.0"
    );
    assert_eq!(
        serve(&["--bind-address", "::1", "--insecure-disable-auth"]).to_string(),
        "::1"
    );
}

/// A pod whose port answers nothing fails every scrape: the warning is
/// logged once, every failure is counted, and the recovery is logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pod_is_logged_when_it_changes_not_every_scrape() {
    let dead_port = free_port();
    let yaml = common::variant_yaml(
        &common::VariantSpec {
            namespace: "llm",
            variant: "llama-a100",
            target: "llama",
            model: "meta/llama-3.1-8b",
            min: 1,
            max: 4,
            ready: 1,
        },
        &[dead_port],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let inv = format!("file:{}", path.display());
    // Not ready while its only pod is dead: wait for it to listen.
    let server = Server::launch(
        dir,
        &[
            "--inventory",
            &inv,
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "100ms",
        ],
        &[],
        true,
    );
    server.wait_listening().await;
    let errors = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("wva_backend_errors_total{") && l.contains("backend=\"scrape\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    eventually(
        Duration::from_secs(30),
        "ten failed scrapes counted",
        || async { (errors(&server.text("/metrics").await) >= 10).then_some(()) },
    )
    .await;
    let failed_lines = |log: &str| log.lines().filter(|l| l.contains("scrape failed")).count();
    assert_eq!(failed_lines(&server.log()), 1, "{}", server.log());

    // The pod comes back: said once too.
    let _emulator = Emulator::start_on(dead_port, "meta/llama-3.1-8b", 0.3, 1.0).await;
    eventually(
        Duration::from_secs(30),
        "the recovery in the log",
        || async { server.log().contains("scrape succeeds again").then_some(()) },
    )
    .await;
    server.wait_fetch_cycles(5).await;
    let log = server.log();
    assert_eq!(log.matches("scrape succeeds again").count(), 1, "{log}");
    assert_eq!(failed_lines(&log), 1, "{log}");
}

/// A scale-to-zero file that does not parse stops `serve` with exit code 2,
/// naming the file, the line and the key; so does a `WVA_SCALE_TO_ZERO`
/// that is not a boolean (never a silent "off").
#[test]
fn a_bad_scale_to_zero_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, GOOD_INVENTORY).unwrap();
    let inv = format!("file:{}", inv.display());
    let stz = dir.path().join("scale-to-zero.yaml");
    std::fs::write(
        &stz,
        "default: |\n  enable_scale_to_zero: true\nllama: |\n  model_id: meta/llama-3.1-8b\n  retention_period: \"ten minutes\"\n",
    )
    .unwrap();
    let port = free_port().to_string();
    let stz_s = stz.display().to_string();
    let args = [
        "serve",
        "--inventory",
        &inv,
        "--metrics-backend",
        "scrape",
        "--insecure-disable-auth",
        "--secure-port",
        &port,
        "--scale-to-zero-config",
        &stz_s,
    ];
    let out = run(&args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = error_line(&out);
    let want = format!("scale-to-zero config {}: line 5:", stz.display());
    assert!(
        e.contains(&want) && e.contains("retention_period") && e.contains("\"llama\""),
        "{e}\nwants: {want}"
    );

    std::fs::write(&stz, "default:\n  enable_scale_to_zero: true\n").unwrap();
    let out = run(&args, &[("WVA_SCALE_TO_ZERO", "yes")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = error_line(&out);
    assert!(e.contains("WVA_SCALE_TO_ZERO=\"yes\""), "{e}");
}

/// One variant in `llm` whose one ready pod listens on `port`.
fn one_pod_inventory(port: u16) -> String {
    common::variant_yaml(
        &common::VariantSpec {
            namespace: "llm",
            variant: "llama-a100",
            target: "llama",
            model: "meta/llama-3.1-8b",
            min: 1,
            max: 4,
            ready: 1,
        },
        &[port],
    )
}

const VALUES: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama";

/// Launches `serve` over [`one_pod_inventory`] with `extra` flags, not
/// waiting for readiness (its source is down), only for it to listen.
async fn launch_over_one_pod(pod_port: u16, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, one_pod_inventory(pod_port)).unwrap();
    let inv = format!("file:{}", path.display());
    let mut args = vec!["--inventory", inv.as_str()];
    args.extend_from_slice(extra);
    let server = Server::launch(dir, &args, &[], true);
    server.wait_listening().await;
    server
}

/// The first log line about the source: the line holding `needle`, which
/// must be a WARN or ERROR line and come before any other line naming the
/// backend's failures.
fn first_line_with<'a>(log: &'a str, needle: &str) -> Option<&'a str> {
    log.lines().find(|l| l.contains(needle))
}

/// A Prometheus URL where nothing listens: the first log line about it
/// names the URL and "connection refused" (not URL-encoded PromQL), the
/// answers say "Prometheus at URL unreachable since T: connection
/// refused", and /readyz is not ready until a query answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_is_named_with_its_url_and_cause() {
    let prom_port = free_port();
    let url = format!("http://127.0.0.1:{prom_port}");
    let pod_port = free_port();
    let server = launch_over_one_pod(pod_port, &["--prometheus-url", &url]).await;
    let line = eventually(
        Duration::from_secs(30),
        "the unreachable-Prometheus line",
        || async { first_line_with(&server.log(), "Prometheus unreachable").map(str::to_owned) },
    )
    .await;
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains(&format!("url={url}")), "{line}");
    assert!(line.contains("cause=connection refused"), "{line}");
    // Nothing about the backend was logged before it, and nothing logged
    // carries URL-encoded PromQL.
    let log = server.log();
    let before: Vec<&str> = log
        .lines()
        .take_while(|l| !l.contains("Prometheus unreachable"))
        .filter(|l| l.contains("prometheus") || l.contains("Prometheus"))
        .collect();
    assert!(before.is_empty(), "{before:?}");
    assert!(
        !log.contains("%28") && !log.contains("query?query"),
        "{log}"
    );

    let want = format!("Prometheus at {url} unreachable since ");
    let (status, body) = server.get(VALUES).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&want) && message.ends_with(": connection refused"),
        "{message}"
    );
    assert!(!message.contains("not fetched yet"), "{message}");
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains(&want),
        "{body}"
    );
    // Discovery does not depend on it.
    let (status, _) = server.get("/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(status, 200);

    // Something that answers queries (empty vectors) comes up on the URL:
    // ready, and the recovery is logged.
    let answering = answer_empty_vectors(prom_port).await;
    server.wait_ready().await;
    eventually(Duration::from_secs(30), "the recovery line", || async {
        server
            .log()
            .contains("the metrics source answers again")
            .then_some(())
    })
    .await;
    assert_eq!(server.log().matches("Prometheus unreachable").count(), 1);
    answering.abort();
}

/// A minimal Prometheus query API on `port` that answers every query with
/// an empty vector.
async fn answer_empty_vectors(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the freed port");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut head = Vec::new();
                loop {
                    let n = match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return,
                    };
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let body =
                            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    })
}

/// `--metrics-backend scrape` with nothing listening on the pod's port:
/// the answer names the pod, its URL and the cause, /readyz is not ready;
/// once the pod answers, both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_never_answered_is_named_in_the_answer() {
    let pod_port = free_port();
    let server = launch_over_one_pod(
        pod_port,
        &["--metrics-backend", "scrape", "--scrape-interval", "200ms"],
    )
    .await;
    let message = eventually(Duration::from_secs(30), "a 503 naming the pod", || async {
        let (status, body) = server.get(VALUES).await;
        let m = body["message"].as_str().unwrap_or_default().to_owned();
        (status == 503 && m.contains("answered its /metrics")).then_some(m)
    })
    .await;
    assert!(
        message.contains("no ready pod of model \"meta/llama-3.1-8b\" in namespace \"llm\" answered its /metrics since "),
        "{message}"
    );
    assert!(
        message.contains(&format!("http://127.0.0.1:{pod_port}/metrics"))
            && message.contains("connection refused"),
        "{message}"
    );
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("answered its /metrics"),
        "{body}"
    );
    let _pod = Emulator::start_on(pod_port, "meta/llama-3.1-8b", 0.3, 1.0).await;
    server.wait_ready().await;
    eventually(
        Duration::from_secs(30),
        "a value once the pod answers",
        || async {
            let (status, body) = server.get(VALUES).await;
            (status == 200).then_some(body)
        },
    )
    .await;
}

/// `serve` whose stdout and stderr go to pipes that their readers closed
/// (as with `serve 2>&1 | head -2`) still exits on SIGTERM and on SIGINT, within
/// the drain timeout (10 s) and a margin.
#[test]
fn serve_exits_on_a_signal_with_its_log_pipe_closed() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(&path, one_pod_inventory(free_port())).unwrap();
        let inv = format!("file:{}", path.display());
        let port = free_port().to_string();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--inventory",
                &inv,
                "--insecure-disable-auth",
                "--metrics-backend",
                "scrape",
                "--scrape-interval",
                "100ms",
                "--secure-port",
                &port,
            ])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, reader) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        // Killed if the test fails.
        let mut guard = Proc {
            child,
            name: "serve".into(),
            log: dir.path().join("none"),
        };
        // Read up to the line saying it serves (bounded: the log's first
        // lines), then close the pipe, as `head` does.
        let mut lines = BufReader::new(reader);
        let mut line = String::new();
        for n in 0.. {
            line.clear();
            let read = lines.read_line(&mut line).unwrap();
            assert!(read > 0 && n < 100, "serve stopped before serving");
            if line.contains("serving external.metrics.k8s.io") {
                break;
            }
        }
        drop(lines);
        drop(stdout);
        // The signal: the server logs that it received it, into the
        // closed pipe (that write used to panic the signal task).
        let pid = guard.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = guard.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve ignored SIG{signal} with its log pipe closed"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(exit.code(), Some(0), "SIG{signal}: {exit:?}");
    }
}
