//! Test harness: real processes (`serve`, `emulate`) on loopback, real
//! certificates, a real HTTPS client. Every wait is a bounded poll.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wva-metrics-server");

/// A child process killed when dropped, also when a test fails.
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_with(name, args, &[], None)
    }

    /// Spawns with extra environment variables, and the log in `log` when
    /// given. Without `log` the process still logs to a file (under cargo's
    /// per-target temporary directory, see [`log_path`]): server logs
    /// interleaved with test results made `cargo test` output unreadable.
    pub fn spawn_with(name: &str, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Proc {
        let path = match log {
            Some(path) => path.to_owned(),
            None => log_path(name),
        };
        let stderr = Stdio::from(
            std::fs::File::create(&path)
                .unwrap_or_else(|e| panic!("cannot create log {}: {e}", path.display())),
        );
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
            log: path,
        }
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh log file for a child process: `target/tmp/test-logs/<name>-<n>-<pid>.log`
/// (kept after the run, so that a failed test's logs can be read).
pub fn log_path(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{name}-{n}-{}.log", std::process::id()))
}

/// A free loopback port. The socket is closed before use, so another process
/// could take it; on these single-tenant test machines that does not happen
/// in practice, and callers wait for the port to answer anyway.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// Polls `f` every 100 ms until it returns Some or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (30 s at most) until a plain-HTTP GET of `url` answers 200.
pub async fn wait_http_ok(url: &str, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        http_client()
            .get(url)
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
}

/// The inventory of the two worked examples: `llama-decode` in `llm-a`
/// (3 ready replicas on the first three ports) and `mistral-decode` in
/// `llm-b` (2 ready replicas on the next two).
pub fn two_model_inventory(ports: &[u16]) -> String {
    let llama = VariantSpec {
        namespace: "llm-a",
        variant: "llama-a100",
        target: "llama-decode",
        model: "meta/llama-3.1-8b",
        min: 1,
        max: 10,
        ready: 3,
    };
    let mistral = VariantSpec {
        namespace: "llm-b",
        variant: "mistral-l40s",
        target: "mistral-decode",
        model: "mistral-7b",
        min: 1,
        max: 10,
        ready: 2,
    };
    variant_yaml(&llama, &ports[..3]) + &variant_yaml(&mistral, &ports[3..5])
}

/// A CA and a serving certificate for 127.0.0.1/localhost, written to `dir`.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

pub fn make_pki(dir: &Path) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wva-test-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wva-metrics-server");
    let cert = params.signed_by(&key, &issuer).unwrap();

    let ca_path = dir.join("ca.crt");
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        ca_path,
        cert_path,
        key_path,
    }
}

/// An HTTPS client that trusts only the test CA.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    wva_metrics_server::certs::install_crypto_provider();
    let mut tls = pki::rustls_config(ca_pem.as_bytes());
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        // Below the shortest `--idle-timeout` a test gives the server (2 s):
        // a pooled connection the server is closing for idleness just as
        // the client reuses it fails the request (seen once in CI on
        // connections.rs' idle test, whose counter fetch reused one).
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// The start of a `serve` command line: on 127.0.0.1:`port` with this serving certificate and key.
pub fn serve_args<'a>(port: &'a str, cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    vec![
        "serve",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
    ]
}

/// A plain HTTP client (for emulators).
pub fn http_client() -> reqwest::Client {
    wva_metrics_server::certs::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The body of a GET of `url` (plain HTTP), None on any failure: for the
/// bounded waits that poll an endpoint until it says what they wait for.
pub async fn text_of(client: &reqwest::Client, url: &str) -> Option<String> {
    client.get(url).send().await.ok()?.text().await.ok()
}

/// A running `serve` process and a client for it.
pub struct Server {
    pub proc: Proc,
    pub port: u16,
    pub client: reqwest::Client,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` with real certificates and the given extra flags, and
    /// waits until it answers `/readyz`.
    pub async fn start(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::start_with(dir, extra, &[], false).await
    }

    /// As [`Server::start`], with environment variables, and the log written
    /// to `serve.log` in the directory when `log` is set.
    pub async fn start_with(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
        log: bool,
    ) -> Server {
        let server = Self::launch(dir, extra, env, log);
        server.wait_ready().await;
        server
    }

    /// Waits (30 s at most) until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        self.wait_ok("/readyz", "serve to become ready").await;
    }

    /// Waits (30 s at most) until the server answers `/healthz` 200: it
    /// listens, whether or not its metrics source answers (for servers
    /// whose source is down at start, which are not ready).
    pub async fn wait_listening(&self) {
        self.wait_ok("/healthz", "serve to listen").await;
    }

    /// Waits (30 s at most) until `path` answers 200.
    async fn wait_ok(&self, path: &str, what: &str) {
        let url = format!("{}{path}", self.base);
        eventually(Duration::from_secs(30), what, || {
            let c = self.client.clone();
            let url = url.clone();
            async move {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                }
            }
        })
        .await;
    }

    /// Fetch cycles finished so far (`wva_fetch_cycles_total`, any result).
    pub async fn fetch_cycles(&self) -> u64 {
        counter_sum(&self.text("/metrics").await, "wva_fetch_cycles_total")
    }

    /// Waits (60 s at most) until `n` more fetch cycles have finished: the
    /// bounded wait before asserting that something did NOT happen ("no
    /// further write"), instead of a fixed sleep that a loaded machine
    /// may not fill with the cycles it assumes.
    pub async fn wait_fetch_cycles(&self, n: u64) {
        let start = self.fetch_cycles().await;
        let what = format!("{n} more fetch cycles (from {start})");
        eventually(Duration::from_secs(60), &what, || async {
            (self.fetch_cycles().await >= start + n).then_some(())
        })
        .await;
    }

    /// Starts `serve` as [`Server::start_with`] does, without waiting for
    /// it to become ready (for tests of readiness itself).
    /// Launches `serve` against the in-process API server as a cluster
    /// would run it: kube inventory (KUBECONFIG written for `api`), scrape
    /// backend every 500 ms and `--namespace wva-system`, unless `extra`
    /// names its own; `env` adds variables. Not waited for: [`Self::start_kube`].
    pub fn launch_kube(api: &apiserver::ApiServer, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path()).display().to_string();
        let mut args = vec!["--inventory", "kube", "--metrics-backend", "scrape"];
        if !extra.contains(&"--namespace") {
            args.extend_from_slice(&["--namespace", "wva-system"]);
        }
        if !extra.contains(&"--scrape-interval") {
            args.extend_from_slice(&["--scrape-interval", "500ms"]);
        }
        args.extend_from_slice(extra);
        let mut env = env.to_vec();
        env.push(("KUBECONFIG", &kubeconfig));
        Self::launch(dir, &args, &env, true)
    }

    /// [`Self::launch_kube`], then waits until `/readyz` answers 200.
    pub async fn start_kube(
        api: &apiserver::ApiServer,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let server = Self::launch_kube(api, extra, env);
        server.wait_ready().await;
        server
    }

    pub fn launch(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
        log: bool,
    ) -> Server {
        let pki = make_pki(dir.path());
        let port = free_port();
        let port_s = port.to_string();
        let mut args = serve_args(&port_s, &pki.cert_path, &pki.key_path);
        args.extend_from_slice(extra);
        // Standalone servers (file inventory) have no cluster to delegate
        // authentication to: the tests run them with it explicitly off.
        if extra.iter().any(|a| a.starts_with("file:")) {
            args.push("--insecure-disable-auth");
        }
        let log_path = dir.path().join("serve.log");
        let proc = Proc::spawn_with("serve", &args, env, log.then_some(log_path.as_path()));
        let client = https_client(&pki.ca_pem);
        let base = format!("https://127.0.0.1:{port}");
        Server {
            proc,
            port,
            client,
            base,
            dir,
        }
    }

    /// Starts `serve` over an inventory file holding `yaml`, with the
    /// given extra flags.
    pub async fn with_inventory(yaml: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(&path, yaml).unwrap();
        let inv = format!("file:{}", path.display());
        let mut args = vec!["--inventory", inv.as_str()];
        args.extend_from_slice(extra);
        Server::start(dir, &args).await
    }

    /// As [`Server::with_inventory`], for an inventory whose pods (or
    /// Prometheus) do not answer: such a server is not ready (no fetch
    /// reached its source), so this waits for it to listen instead.
    pub async fn with_unreachable_source(yaml: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.yaml");
        std::fs::write(&path, yaml).unwrap();
        let inv = format!("file:{}", path.display());
        let mut args = vec!["--inventory", inv.as_str()];
        args.extend_from_slice(extra);
        let server = Server::launch(dir, &args, &[], false);
        server.wait_listening().await;
        server
    }

    /// The log of a server started with `log` set.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// GET a path; returns the status and the parsed JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// The single item value of a values request, when it answers 200 with exactly one item.
    pub async fn value(&self, namespace: &str, metric: &str, selector: &str) -> Option<String> {
        let path = format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?labelSelector={}",
            urlencode(selector)
        );
        let (status, body) = self.get(&path).await;
        if status != 200 {
            return None;
        }
        let items = body["items"].as_array()?;
        if items.len() != 1 {
            return None;
        }
        items[0]["value"].as_str().map(str::to_owned)
    }

    /// Waits until mistral-decode (llm-b) of [`two_model_inventory`] answers its worked-example 3 replicas.
    pub async fn wait_mistral_at_3(&self) {
        self.wait_value(
            "llm-b",
            "wva_desired_replicas",
            "target_name=mistral-decode",
            "3",
        )
        .await;
    }

    /// Waits until `metric` for `selector` answers `want`.
    pub async fn wait_value(&self, namespace: &str, metric: &str, selector: &str, want: &str) {
        let what = format!("{metric}{{{selector}}} in {namespace} to be {want}");
        eventually(Duration::from_secs(20), &what, || async {
            (self.value(namespace, metric, selector).await.as_deref() == Some(want)).then_some(())
        })
        .await;
    }
}

/// The five replicas of [`two_model_inventory`] as fresh emulators: llama
/// (KV .20/.30/.25, desired 2 of 3) and mistral (KV .75/.76, desired 3 of 2).
pub async fn two_model_emulators() -> Vec<Emulator> {
    let mut emulators = Vec::new();
    for (model, kv, q) in [
        ("meta/llama-3.1-8b", 0.20, 1.0),
        ("meta/llama-3.1-8b", 0.30, 1.0),
        ("meta/llama-3.1-8b", 0.25, 1.0),
        ("mistral-7b", 0.75, 2.0),
        ("mistral-7b", 0.76, 2.0),
    ] {
        emulators.push(Emulator::start(model, kv, q).await);
    }
    emulators
}

/// `serve` over a file inventory of one variant (ns/v, target d, model m,
/// one ready replica) scraped from a fresh emulator, with `extra` flags.
pub async fn one_variant_server(extra: &[&str]) -> (Server, Emulator) {
    let emulator = Emulator::start("m", 0.2, 1.0).await;
    let s = Server::with_inventory(&variant_yaml(&ONE_VARIANT, &[emulator.port]), extra).await;
    (s, emulator)
}

/// One variant: ns/v, target d, model m, 1 to 4 replicas, 1 ready.
pub const ONE_VARIANT: VariantSpec<'static> = VariantSpec {
    namespace: "ns",
    variant: "v",
    target: "d",
    model: "m",
    min: 1,
    max: 4,
    ready: 1,
};

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An `emulate` process on a free loopback port.
pub struct Emulator {
    pub proc: Proc,
    pub port: u16,
}

impl Emulator {
    pub async fn start(model: &str, kv: f64, waiting: f64) -> Emulator {
        Self::start_on(free_port(), model, kv, waiting).await
    }

    /// Starts with extra `emulate` flags (for example `--num-gpu-blocks`).
    pub async fn start_with(model: &str, kv: f64, waiting: f64, extra: &[&str]) -> Emulator {
        Self::launch(free_port(), model, kv, waiting, extra).await
    }

    /// Starts on a given port (to restart a stopped replica where Prometheus expects it).
    pub async fn start_on(port: u16, model: &str, kv: f64, waiting: f64) -> Emulator {
        Self::launch(port, model, kv, waiting, &[]).await
    }

    async fn launch(port: u16, model: &str, kv: f64, waiting: f64, extra: &[&str]) -> Emulator {
        let (port_s, kv_s, waiting_s) = (port.to_string(), kv.to_string(), waiting.to_string());
        let mut args = vec![
            "emulate",
            "--port",
            &port_s,
            "--model-name",
            model,
            "--kv",
            &kv_s,
            "--waiting",
            &waiting_s,
            "--running",
            "1",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::spawn("emulate", &args);
        wait_http_ok(
            &format!("http://127.0.0.1:{port}/metrics"),
            "emulator to answer",
        )
        .await;
        Emulator { proc, port }
    }

    /// Changes the emulated state through its admin endpoint.
    pub async fn set_state(&self, state: serde_json::Value) {
        let r = http_client()
            .post(format!("http://127.0.0.1:{}/admin/state", self.port))
            .json(&state)
            .send()
            .await
            .expect("admin request");
        assert_eq!(r.status(), 200, "emulator rejected state {state}");
    }
}

/// One variant of a test inventory.
pub struct VariantSpec<'a> {
    pub namespace: &'a str,
    pub variant: &'a str,
    pub target: &'a str,
    pub model: &'a str,
    pub min: u32,
    pub max: u32,
    /// Spec and ready replicas of the Deployment.
    pub ready: u32,
}

/// YAML of one variant: a VariantAutoscaling, its Deployment and one Pod per port.
pub fn variant_yaml(spec: &VariantSpec<'_>, ports: &[u16]) -> String {
    let VariantSpec {
        namespace,
        variant,
        target,
        model,
        min,
        max,
        ready,
    } = *spec;
    let mut y = format!(
        r#"---
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata:
  name: {variant}
  namespace: {namespace}
  labels:
    inference.optimization/acceleratorName: A100
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {target}
  modelID: {model}
  variantCost: "10.0"
  minReplicas: {min}
  maxReplicas: {max}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {target}
  namespace: {namespace}
spec:
  replicas: {ready}
  selector:
    matchLabels:
      app: {target}
  template:
    metadata:
      labels:
        app: {target}
status:
  replicas: {ready}
  readyReplicas: {ready}
"#
    );
    for (i, port) in ports.iter().enumerate() {
        y.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {target}-{i}
  namespace: {namespace}
  labels:
    app: {target}
    llm-d.ai/variant: {variant}
  annotations:
    prometheus.io/port: "{port}"
status:
  podIP: 127.0.0.1
  conditions:
  - type: Ready
    status: "True"
"#
        ));
    }
    y
}
pub mod apiserver;
pub mod openapi;
pub mod pki;
pub mod prometheus;

/// A client CA and one client certificate it signs (for mTLS on the KEDA
/// port), written to `dir` as `client-ca.crt`, `client.crt`, `client.key`.
pub struct ClientPki {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_client_pki(dir: &Path, client_cn: &str) -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wva-test-client-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, client_cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = ClientPki {
        ca_path: dir.join("client-ca.crt"),
        cert_path: dir.join("client.crt"),
        key_path: dir.join("client.key"),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    std::fs::write(&pki.ca_path, ca.pem()).unwrap();
    std::fs::write(&pki.cert_path, &pki.cert_pem).unwrap();
    std::fs::write(&pki.key_path, &pki.key_pem).unwrap();
    pki
}

/// The Python interpreter with the test clients' packages (grpcio,
/// kubernetes): `WVA_TEST_PYTHON` as scripts/test sets it, else the venv it
/// creates under target/, else `python3`.
pub fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("WVA_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    "python3".into()
}
pub mod victoria;

/// The sum over every series of counter `name` in a Prometheus text page
/// (0 when the page has none).
pub fn counter_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
