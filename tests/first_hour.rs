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
            // modelID is required: its absence is reported first, at spec.
            9,
            "spec",
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
    let server = Server::start_with(
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
    )
    .await;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
