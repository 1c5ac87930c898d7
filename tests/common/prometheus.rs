//! A real Prometheus server (Debian package `prometheus`) on a free loopback
//! port, with a temporary config and data dir, scraping `emulate` replicas
//! every second. It is killed when dropped, also when a test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, http_client, wait_http_ok};

/// A scrape target: an emulator port and the labels Kubernetes service
/// discovery would attach.
#[derive(Clone, Debug)]
pub struct Target {
    pub port: u16,
    pub namespace: String,
    pub pod: String,
}

pub struct PrometheusServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    targets: Vec<Target>,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PrometheusServer {
    /// Starts Prometheus and waits until it has scraped every target once.
    pub async fn start(targets: &[Target]) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let mut p = PrometheusServer {
            child: None,
            port: free_port(),
            dir,
            targets: targets.to_vec(),
        };
        p.write_config();
        p.spawn();
        p.wait_ready().await;
        let want = targets.len();
        if want > 0 {
            p.wait_series("vllm:num_requests_waiting", want).await;
        }
        p
    }

    /// The server's Prometheus backend: default settings, a 10 s query
    /// timeout, its own telemetry.
    pub fn backend(&self) -> wva_metrics_server::collector::prometheus::PrometheusBackend {
        use wva_metrics_server::collector::prometheus::{PrometheusBackend, PrometheusConfig};
        let (_, telemetry) = wva_metrics_server::telemetry::Telemetry::standalone();
        PrometheusBackend::new(
            PrometheusConfig {
                url: self.url(),
                query_timeout: Duration::from_secs(10),
                ..PrometheusConfig::default()
            },
            telemetry,
        )
        .expect("a Prometheus backend for a loopback URL")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn query_log(&self) -> PathBuf {
        self.dir.path().join("query.log")
    }

    fn write_config(&self) {
        let mut y = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n  query_log_file: {}\nscrape_configs:\n- job_name: vllm\n  static_configs:\n",
            self.query_log().display()
        );
        for t in &self.targets {
            y.push_str(&format!(
                "  - targets: ['127.0.0.1:{}']\n    labels:\n      namespace: {}\n      pod: {}\n",
                t.port, t.namespace, t.pod
            ));
        }
        std::fs::write(self.dir.path().join("prometheus.yml"), y).unwrap();
    }

    fn spawn(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test installs the Debian package)");
        self.child = Some(child);
    }

    /// Kills Prometheus (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        wait_http_ok(&format!("{}/-/ready", self.url()), "prometheus to be ready").await;
    }

    /// Instant query; returns the result vector.
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let r = http_client()
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await;
        let Ok(r) = r else { return Vec::new() };
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `metric` has at least `count` series.
    pub async fn wait_series(&self, metric: &str, count: usize) {
        let what = format!("{count} series of {metric} in prometheus");
        eventually(Duration::from_secs(30), &what, || async {
            (self.query(metric).await.len() >= count).then_some(())
        })
        .await;
    }

    /// The PromQL texts in the query log, oldest first.
    pub fn logged_queries(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.query_log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["params"]["query"].as_str().map(str::to_owned))
            .collect()
    }
}
