//! Every PromQL expression of the Grafana dashboard and of the alerting
//! rules, evaluated by a real Prometheus that scrapes a running `serve`
//! (kube inventory against the in-process API server, three emulated vLLM
//! replicas, delegated authentication with Prometheus' token) and the
//! emulators: none errors, every metric they name is one the server
//! exports, and the core panels return the numbers of the set-up. The rules
//! also pass `promtool check rules`, and their alerts fire on the series
//! they are meant for (`promtool test rules`).

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::apiserver::{three_replica_llama, ApiServer};
use common::{eventually, free_port, http_client, wait_http_ok, Server};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOKEN: &str = "prometheus-k8s-token";
const RATE_INTERVAL: &str = "20s";

fn dashboard() -> Value {
    let path =
        Path::new(ROOT).join("deploy/components/monitoring/dashboards/wva-metrics-server.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rules() -> Value {
    let path = Path::new(ROOT).join("deploy/components/monitoring/prometheusrule.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// (where, expression) of every panel target, with Grafana's variables
/// replaced the way Grafana does with "All" selected.
fn dashboard_expressions() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?} {}", p["title"].as_str().unwrap(), t["refId"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    // label_values(EXPR, LABEL) of the template variables, as the query
    // Grafana sends for it.
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: unexpected query {q}", v["name"]));
        let (expr, label) = inner.rsplit_once(',').unwrap();
        out.push((
            format!("variable {}", v["name"].as_str().unwrap()),
            format!("group by ({}) ({expr})", label.trim()),
        ));
    }
    out.into_iter().map(|(w, e)| (w, substitute(&e))).collect()
}

fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", ".*")
        .replace("$variant", ".*")
        .replace("$model", ".*")
        .replace("$job", ".*")
}

fn rule_expressions() -> Vec<(String, String)> {
    let r = rules();
    let mut out = Vec::new();
    for g in r["spec"]["groups"].as_array().unwrap() {
        for rule in g["rules"].as_array().unwrap() {
            out.push((
                format!("alert {}", rule["alert"].as_str().unwrap()),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// A Prometheus on a loopback port scraping `serve` over HTTPS (its CA, a
/// bearer token) and the emulators, every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(server: &Server, emulator_ports: &[u16]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let targets: Vec<String> = emulator_ports
            .iter()
            .map(|p| format!("'127.0.0.1:{p}'"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             - job_name: wva-metrics-server\n  scheme: https\n  metrics_path: /metrics\n\
             \x20 authorization:\n    credentials: {TOKEN}\n\
             \x20 tls_config:\n    ca_file: {}\n\
             \x20 static_configs:\n  - targets: ['127.0.0.1:{}']\n\
             - job_name: vllm\n  static_configs:\n  - targets: [{}]\n    labels:\n      namespace: llm\n",
            server.ca_path().display(),
            server.port,
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test installs the Debian package)");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_http_ok(&format!("http://127.0.0.1:{port}/-/ready"), "prometheus").await;
        p
    }

    /// An instant query: Ok(result) or Err(the error Prometheus gave).
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let r = http_client()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let body: Value = r.json().await.map_err(|e| format!("bad body: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits (60 s at most) until `promql` returns at least one series.
    async fn wait_data(&self, what: &str, promql: &str) -> Vec<Value> {
        eventually(Duration::from_secs(60), what, || async {
            self.query(promql).await.ok().filter(|r| !r.is_empty())
        })
        .await
    }
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().unwrap().parse().unwrap()
}

/// Metric names the expression refers to (identifiers of the server's own
/// families: wva_*, process_*).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_') {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let quoted = start > 0 && (bytes[start - 1] == '"' || bytes[start - 1] == '$');
            if !quoted && (word.starts_with("wva_") || word.starts_with("process_")) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The families of an OpenMetrics page, with the sample names each allows.
fn exported_names(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// The family names the code registers (`registry.register("name", ...)`
/// anywhere under src/).
fn registered_names() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices(".register(") {
                    let rest = &text[i..];
                    let Some(open) = rest.find('"') else { continue };
                    let name: String = rest[open + 1..].chars().take_while(|c| *c != '"').collect();
                    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        out.insert(name);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&Path::new(ROOT).join("src"), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_expression_evaluates_against_a_running_server() {
    let api = ApiServer::start().await;
    let emulators = three_replica_llama(&api).await;
    api.add_token(TOKEN, "system:serviceaccount:monitoring:prometheus-k8s");
    let server = Server::start_kube(&api, &[], &[]).await;
    let authed = |path: &str| {
        server
            .client
            .get(format!("{}{path}", server.base))
            .bearer_auth(TOKEN)
    };
    let values = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama-decode";
    eventually(
        Duration::from_secs(30),
        "a decision for llama-decode",
        || async {
            let r = authed(values).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let prometheus = Prometheus::start(&server, &ports).await;
    // Prometheus scrapes serve's /metrics with its token (authorized by a SubjectAccessReview).
    let up = prometheus
        .wait_data(
            "prometheus to scrape serve",
            "up{job=\"wva-metrics-server\"} == 1",
        )
        .await;
    assert_eq!(up.len(), 1);

    // Traffic for the request panels: values, discovery, and a 404.
    for _ in 0..20 {
        for path in [
            values,
            "/apis/external.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/no_such_metric",
        ] {
            let _ = authed(path).send().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The core panels return data, with the numbers of this set-up.
    let dash = dashboard_expressions();
    let expr_of = |title: &str, ref_id: &str| -> String {
        dash.iter()
            .find(|(w, _)| w.contains(title) && w.ends_with(&format!("\"{ref_id}\"")))
            .unwrap_or_else(|| panic!("no panel {title} {ref_id}"))
            .1
            .clone()
    };
    let ready = prometheus
        .wait_data("ready replicas", &expr_of("Replicas per variant", "A"))
        .await;
    assert_eq!(ready[0]["metric"]["variant_name"], "llama");
    let ready = prometheus
        .wait_data("ready replicas", &expr_of("Replicas per variant", "B"))
        .await;
    assert_eq!(value(&ready[0]), 3.0, "three ready replicas: {ready:?}");
    let age = prometheus
        .wait_data("sample age", &expr_of("Age of the newest sample", "A"))
        .await;
    assert_eq!(age[0]["metric"]["model_id"], "m");
    assert!(
        (0.0..30.0).contains(&value(&age[0])),
        "the emulators are scraped every 500 ms: {age:?}"
    );
    let duration = prometheus
        .wait_data("fetch duration", &expr_of("Fetch cycle duration", "A"))
        .await;
    assert!(value(&duration[0]) > 0.0, "{duration:?}");
    let requests = eventually(Duration::from_secs(60), "request rate", || async {
        let r = prometheus
            .query(&expr_of("Requests by route and code", "A"))
            .await
            .ok()?;
        r.iter()
            .any(|s| s["metric"]["code"] == "200" && value(s) > 0.0)
            .then_some(r)
    })
    .await;
    assert!(
        requests.iter().any(|s| s["metric"]["code"] == "404"),
        "the 404s are counted: {requests:?}"
    );
    let memory = prometheus
        .wait_data("resident memory", &expr_of("Resident memory", "A"))
        .await;
    assert!(value(&memory[0]) > 1e6, "{memory:?}");
    prometheus
        .wait_data(
            "API server calls",
            &expr_of("API server calls by budget", "A"),
        )
        .await;
    prometheus
        .wait_data("status writes", &expr_of("Status writes and Events", "A"))
        .await;
    // Prometheus' scrapes and the requests above carry one token: after the
    // first review the token cache answers.
    let hits = eventually(Duration::from_secs(60), "token cache hits", || async {
        let r = prometheus
            .query(&expr_of("Cache hit ratio", "A"))
            .await
            .ok()?;
        r.into_iter()
            .find(|s| s["metric"]["cache"] == "token" && value(s) > 0.5)
    })
    .await;
    assert!(value(&hits) <= 1.0, "{hits:?}");
    let namespaces = prometheus
        .wait_data("the namespace variable", &{
            dash.iter()
                .find(|(w, _)| w == "variable namespace")
                .unwrap()
                .1
                .clone()
        })
        .await;
    assert_eq!(namespaces[0]["metric"]["namespace"], "llm");

    // No expression errors, dashboard or rule.
    let mut errors = Vec::new();
    let all: Vec<(String, String)> = dash.iter().cloned().chain(rule_expressions()).collect();
    assert!(all.len() >= 40, "{} expressions", all.len());
    for (what, expr) in &all {
        if let Err(e) = prometheus.query(expr).await {
            errors.push(format!("{what}: {e}\n  {expr}"));
        }
    }
    assert!(
        errors.is_empty(),
        "expressions Prometheus refuses:\n{}",
        errors.join("\n")
    );

    // Every wva_*/process_* name they use is a family serve exports.
    let page = authed("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported = exported_names(&page);
    assert!(exported.contains("wva_desired_replicas"), "{page}");
    // A family without samples yet (no error so far, no KEDA connection) is
    // not on the page: those must at least be registered by the code.
    let registered = registered_names();
    assert!(
        registered.contains("wva_status_writes_pending"),
        "{registered:?}"
    );
    let mut unknown = BTreeSet::new();
    for (what, expr) in &all {
        for name in metric_names(expr) {
            let family = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if !exported.contains(&name) && !registered.contains(family) {
                unknown.insert(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics serve does not export: {unknown:?}"
    );
}

fn promtool() -> PathBuf {
    std::env::var_os("PROMTOOL").map_or_else(|| "promtool".into(), PathBuf::from)
}

/// The rule groups of the PrometheusRule, as a plain rules file.
fn rules_file(dir: &Path) -> PathBuf {
    let spec = &rules()["spec"];
    let path = dir.join("rules.yaml");
    std::fs::write(&path, serde_norway::to_string(spec).unwrap()).unwrap();
    path
}

#[test]
fn promtool_accepts_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = rules_file(dir.path());
    let out = Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .expect("promtool is installed (Debian package prometheus, installed by scripts/test)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let count = rule_expressions().len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
    // Each alert has a runbook section in docs/troubleshooting.md.
    let troubleshooting =
        std::fs::read_to_string(Path::new(ROOT).join("docs/troubleshooting.md")).unwrap();
    for g in rules()["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            let runbook = r["annotations"]["runbook"].as_str().unwrap();
            assert_eq!(
                runbook,
                format!("docs/troubleshooting.md#{}", alert.to_lowercase())
            );
            assert!(
                troubleshooting.contains(&format!("### {alert}\n")),
                "docs/troubleshooting.md has no runbook section for {alert}"
            );
        }
    }
}

#[test]
fn alerts_fire_on_the_series_they_are_meant_for() {
    let dir = tempfile::tempdir().unwrap();
    rules_file(dir.path());
    let tests = Path::new(ROOT).join("tests/fixtures/alerts-test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts-test.yaml")).unwrap();
    let out = Command::new(promtool())
        .current_dir(dir.path())
        .args(["test", "rules", "alerts-test.yaml"])
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
