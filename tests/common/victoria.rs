//! A real single-node VictoriaMetrics (Debian package `victoria-metrics`)
//! on a free loopback port, scraping `emulate` replicas itself every
//! second (its Prometheus-compatible scrape config), with a temporary data
//! dir. It is killed when dropped, also when a test fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::prometheus::Target;
use super::{eventually, free_port, http_client, wait_http_ok};

pub struct VictoriaServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for VictoriaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl VictoriaServer {
    /// Starts VictoriaMetrics and waits until it has every target's series.
    pub async fn start(targets: &[Target]) -> VictoriaServer {
        let dir = tempfile::tempdir().unwrap();
        let mut y = String::from(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: vllm\n  static_configs:\n",
        );
        for t in targets {
            y.push_str(&format!(
                "  - targets: ['127.0.0.1:{}']\n    labels:\n      namespace: {}\n      pod: {}\n",
                t.port, t.namespace, t.pod
            ));
        }
        let config = dir.path().join("scrape.yml");
        std::fs::write(&config, y).unwrap();
        let port = free_port();
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg(format!("-promscrape.config={}", config.display()))
            // By default the newest 30 s are hidden from queries (to wait
            // for late samples): our queries want the newest sample.
            .arg("-search.latencyOffset=0s")
            .arg("-loggerLevel=WARN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics is installed (scripts/test installs the Debian package)");
        let v = VictoriaServer { child, port, dir };
        wait_http_ok(
            &format!("{}/health", v.url()),
            "victoria-metrics to be ready",
        )
        .await;
        let want = targets.len();
        let url = v.url();
        eventually(
            Duration::from_secs(60),
            "victoria-metrics to have every target's series",
            || {
                let url = url.clone();
                async move {
                    let r = http_client()
                        .get(format!("{url}/api/v1/query"))
                        .query(&[("query", "count(vllm:num_requests_waiting)")])
                        .send()
                        .await
                        .ok()?;
                    let v: serde_json::Value = r.json().await.ok()?;
                    let n: usize = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
                    (n >= want).then_some(())
                }
            },
        )
        .await;
        v
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
