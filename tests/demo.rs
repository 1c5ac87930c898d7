//! `wva-metrics-server demo` answers within 15 s with the selector the
//! README gives, using curl as the client (the demo's certificate is
//! self-signed, hence -k).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, free_port, Proc};

fn curl(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "2", url])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::test]
async fn demo_answers_the_readme_requests() {
    let port = free_port();
    let _demo = Proc::spawn(
        "demo",
        &["demo", "--port", &port.to_string(), "--phase", "5s"],
    );
    let base = format!("https://127.0.0.1:{port}");
    let discovery = format!("{base}/apis/external.metrics.k8s.io/v1beta1");
    let list = eventually(
        Duration::from_secs(15),
        "the demo's discovery document",
        || {
            let d = discovery.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(&d))
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"wva_desired_ratio"), "{names:?}");

    // The selector of the README.
    let values = format!(
        "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-demo/wva_desired_ratio?labelSelector=target_name%3Dllama-8b-decode"
    );
    let body = eventually(
        Duration::from_secs(15),
        "a values answer from the demo",
        || {
            let v = values.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(&v))
                    .await
                    .ok()
                    .flatten()
                    .filter(|b| b["kind"] == "ExternalMetricValueList")
            }
        },
    )
    .await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["metricLabels"]["target_name"], "llama-8b-decode");
    assert_eq!(items[0]["metricLabels"]["namespace"], "llm-demo");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("llm-demo") && readme.contains("llama-8b-decode"),
        "README names the demo's namespace and target"
    );
    assert!(
        readme.contains("labelSelector=target_name%3Dllama-8b-decode"),
        "README gives the selector tested here"
    );
}
