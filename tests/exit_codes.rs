//! The exit-code table of the README, one case per row and command: 0 for
//! success, 1 for a failure of the environment at run time, 2 for a
//! mistake in what the user gave (a flag, a variable, a file). Runs the
//! real binary; each case stops at start-up.

#![cfg(feature = "emulator")] // runs `emulate`

mod common;

use std::process::{Command, Output};

use common::{free_port, BIN};

/// Runs the binary with no cluster and no Prometheus in reach.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .env_remove("PROMETHEUS_URL")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", home.path().join("no-such-kubeconfig"))
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

const INVENTORY: &str = "apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: v, namespace: ns}
spec:
  scaleTargetRef: {kind: Deployment, name: d}
  modelID: m
  maxReplicas: 4
";

struct Case<'a> {
    what: &'a str,
    args: Vec<String>,
    env: Vec<(&'a str, &'a str)>,
    code: i32,
    /// Text the stderr must hold.
    says: &'a str,
}

fn check(cases: &[Case<'_>]) {
    for c in cases {
        let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
        let out = run(&args, &c.env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(c.code),
            "{}: {args:?}\n{stderr}",
            c.what
        );
        assert!(
            stderr.contains(c.says),
            "{}: wants {:?} in\n{stderr}",
            c.what,
            c.says
        );
        assert!(
            !stderr.contains("rejected the request") && !stderr.contains("panicked"),
            "{}: {stderr}",
            c.what
        );
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn success_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki").display().to_string();
    check(&[
        Case {
            what: "--version",
            args: strings(&["--version"]),
            env: vec![],
            code: 0,
            says: "",
        },
        Case {
            what: "crd",
            args: strings(&["crd"]),
            env: vec![],
            code: 0,
            says: "",
        },
        Case {
            what: "certs",
            args: strings(&[
                "certs",
                "--namespace",
                "wva-system",
                "--service",
                "wva-metrics-server",
                "--out",
                &out,
            ]),
            env: vec![],
            code: 0,
            says: "",
        },
        Case {
            what: "simulate --help",
            args: strings(&["simulate", "--help"]),
            env: vec![],
            code: 0,
            says: "",
        },
    ]);
    // `serve` exits 0 on SIGTERM and SIGINT:
    // first_hour::serve_exits_on_a_signal_with_its_log_pipe_closed.
}

#[test]
fn runtime_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let inv = format!("file:{}", inventory.display());
    // A port another process holds: the environment, not the flags, is at fault.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    check(&[
        Case {
            what: "serve on a port in use",
            args: strings(&[
                "serve",
                "--inventory",
                &inv,
                "--insecure-disable-auth",
                "--metrics-backend",
                "scrape",
                "--secure-port",
                &port,
            ]),
            env: vec![],
            code: 1,
            says: "error: cannot listen on 127.0.0.1:",
        },
        Case {
            what: "emulate on a port in use",
            args: strings(&["emulate", "--port", &port, "--model-name", "m"]),
            env: vec![],
            code: 1,
            says: "error: ",
        },
    ]);
}

#[test]
fn configuration_and_usage_mistakes_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(&inventory, INVENTORY).unwrap();
    let inv = format!("file:{}", inventory.display());
    let port = free_port().to_string();
    let serve = |extra: &[&str]| {
        let mut a = strings(&[
            "serve",
            "--inventory",
            &inv,
            "--insecure-disable-auth",
            "--secure-port",
            &port,
        ]);
        a.extend(strings(extra));
        a
    };
    let missing = dir.path().join("missing.crt").display().to_string();
    let bad_inventory = dir.path().join("bad.yaml");
    std::fs::write(&bad_inventory, INVENTORY.replace("modelID", "modelId")).unwrap();
    let bad_inv = format!("file:{}", bad_inventory.display());
    check(&[
        Case {
            what: "unknown flag",
            args: strings(&["serve", "--nonsense"]),
            env: vec![],
            code: 2,
            says: "unexpected argument",
        },
        Case {
            what: "the demo's --port on serve",
            args: strings(&["serve", "--port", "8443"]),
            env: vec![],
            code: 2,
            says: "'--secure-port'",
        },
        Case {
            what: "--insecure-disable-auth with the cluster inventory",
            args: strings(&[
                "serve",
                "--inventory",
                "kube",
                "--insecure-disable-auth",
                "--secure-port",
                &port,
            ]),
            env: vec![],
            code: 2,
            says: "--insecure-disable-auth is only allowed with --inventory file:",
        },
        Case {
            what: "no command",
            args: vec![],
            env: vec![],
            code: 2,
            says: "Usage",
        },
        Case {
            what: "PROMETHEUS_URL without a scheme",
            args: serve(&[]),
            env: vec![("PROMETHEUS_URL", "localhost:9090")],
            code: 2,
            says: "did you mean \"http://localhost:9090\"",
        },
        Case {
            what: "PROMETHEUS_URL not a URL",
            args: serve(&[]),
            env: vec![("PROMETHEUS_URL", "not a url")],
            code: 2,
            says: "not a URL",
        },
        Case {
            what: "PROMETHEUS_URL ftp",
            args: serve(&[]),
            env: vec![("PROMETHEUS_URL", "ftp://x")],
            code: 2,
            says: "must be an http:// or https:// URL",
        },
        Case {
            what: "no PROMETHEUS_URL",
            args: serve(&[]),
            env: vec![],
            code: 2,
            says: "--metrics-backend scrape",
        },
        Case {
            what: "missing --tls-cert-file",
            args: serve(&[
                "--metrics-backend",
                "scrape",
                "--tls-cert-file",
                &missing,
                "--tls-private-key-file",
                &missing,
            ]),
            env: vec![],
            code: 2,
            says: "missing.crt",
        },
        Case {
            what: "--leader-elect with a file inventory",
            args: serve(&["--metrics-backend", "scrape", "--leader-elect=true"]),
            env: vec![],
            code: 2,
            says: "--leader-elect needs --inventory kube",
        },
        Case {
            what: "a KEDA port without a client CA",
            args: serve(&["--metrics-backend", "scrape", "--keda-port", "0"]),
            env: vec![],
            code: 2,
            says: "--keda-port without --keda-client-ca-file",
        },
        Case {
            what: "Lease timings that cannot work",
            args: strings(&[
                "serve",
                "--inventory",
                "kube",
                "--metrics-backend",
                "scrape",
                "--leader-elect-lease-duration",
                "10s",
                "--leader-elect-renew-deadline",
                "15s",
            ]),
            env: vec![],
            code: 2,
            says: "must be shorter than --leader-elect-lease-duration",
        },
        Case {
            what: "a misspelled inventory key",
            args: strings(&[
                "serve",
                "--inventory",
                &bad_inv,
                "--insecure-disable-auth",
                "--metrics-backend",
                "scrape",
                "--secure-port",
                &port,
            ]),
            env: vec![],
            code: 2,
            says: "unknown field `modelId` of VariantAutoscaling, did you mean `modelID`?",
        },
        Case {
            what: "simulate: unknown scenario",
            args: strings(&["simulate", "--scenario", "nope"]),
            env: vec![],
            code: 2,
            says: "invalid value",
        },
        Case {
            what: "simulate: a trace file that does not exist",
            args: strings(&["simulate", "--trace", &missing]),
            env: vec![],
            code: 2,
            says: "cannot read trace",
        },
        Case {
            what: "certs: missing flag",
            args: strings(&["certs", "--out", "x"]),
            env: vec![],
            code: 2,
            says: "--namespace",
        },
    ]);
    // The --leader-elect mistake is found before anything starts.
    let args = serve(&["--metrics-backend", "scrape", "--leader-elect=true"]);
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("inventory loaded") && !stderr.contains("serving"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
