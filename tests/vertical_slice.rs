//! The vertical slice end to end: `emulate` processes serve vLLM metrics,
//! `serve --inventory file:... --metrics-backend scrape` scrapes them and
//! answers the external metrics API over real HTTPS.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use common::{two_model_inventory, Emulator, Server};

const SINGLE: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// Two models in two namespaces, as in the issue: one that should scale
/// down (3 -> 2) and one that should scale up (2 -> 3).
async fn two_models() -> (Server, Vec<Emulator>) {
    let mut emulators = Vec::new();
    for (kv, waiting) in [(0.20, 1.0), (0.30, 1.0), (0.25, 1.0)] {
        emulators.push(Emulator::start("meta/llama-3.1-8b", kv, waiting).await);
    }
    for (kv, waiting) in [(0.75, 2.0), (0.76, 2.0)] {
        emulators.push(Emulator::start("mistral-7b", kv, waiting).await);
    }
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    let yaml = two_model_inventory(&ports);
    std::fs::write(&inventory, yaml).unwrap();
    let inv = format!("file:{}", inventory.display());
    let server = Server::start(
        dir,
        &[
            "--inventory",
            &inv,
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "500ms",
        ],
    )
    .await;
    (server, emulators)
}

#[tokio::test]
async fn decisions_match_the_worked_examples() {
    let (s, _emulators) = two_models().await;
    let sel = "target_name=llama-decode";
    s.wait_value("llm-a", "wva_desired_replicas", sel, "2")
        .await;
    assert_eq!(
        s.value("llm-a", "wva_desired_ratio", sel).await.as_deref(),
        Some("666m")
    );
    assert_eq!(
        s.value("llm-a", "wva_current_replicas", sel)
            .await
            .as_deref(),
        Some("3")
    );
    // Legacy alias and case-insensitive names answer the same.
    assert_eq!(
        s.value("llm-a", "inferno_desired_ratio", sel)
            .await
            .as_deref(),
        Some("666m")
    );
    assert_eq!(
        s.value("llm-a", "WVA_Desired_Ratio", sel).await.as_deref(),
        Some("666m")
    );

    let sel = "target_name=mistral-decode";
    s.wait_value("llm-b", "wva_desired_replicas", sel, "3")
        .await;
    assert_eq!(
        s.value("llm-b", "wva_desired_ratio", sel).await.as_deref(),
        Some("1500m")
    );
    assert_eq!(
        s.value("llm-b", "wva_current_replicas", sel)
            .await
            .as_deref(),
        Some("2")
    );

    // The whole item, as the HPA reads it.
    let (status, body) = s
        .get(&format!(
            "{SINGLE}/namespaces/llm-a/wva_desired_ratio?labelSelector=variant_name%3Dllama-a100"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "ExternalMetricValueList");
    assert_eq!(body["apiVersion"], "external.metrics.k8s.io/v1beta1");
    let item = &body["items"][0];
    assert_eq!(item["metricName"], "wva_desired_ratio");
    assert_eq!(item["metricLabels"]["target_name"], "llama-decode");
    assert_eq!(item["metricLabels"]["target_kind"], "Deployment");
    assert_eq!(item["metricLabels"]["variant_name"], "llama-a100");
    assert_eq!(item["metricLabels"]["exported_namespace"], "llm-a");
    assert_eq!(item["metricLabels"]["accelerator_type"], "A100");
    assert_eq!(item["metricLabels"]["model_id"], "meta/llama-3.1-8b");
    assert!(item["timestamp"].as_str().unwrap().ends_with('Z'));

    // An empty selector selects every variant of the namespace (here one).
    let (status, body) = s
        .get(&format!("{SINGLE}/namespaces/llm-b/wva_desired_replicas"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_gets_a_status_and_bad_samples_are_rejected() {
    let (s, emulators) = two_models().await;
    s.wait_value(
        "llm-a",
        "wva_desired_replicas",
        "target_name=llama-decode",
        "2",
    )
    .await;

    let cases: [(&str, u16, &str, &str); 6] = [
        (
            "/namespaces/llm-a/wva_desired_ratio?labelSelector=target_name%20in%20(",
            400,
            "BadRequest",
            "target_name in (",
        ),
        (
            "/namespaces/llm-a/wva_no_such_metric",
            404,
            "NotFound",
            "wva_no_such_metric",
        ),
        (
            "/namespaces/llm-a/wva_desired_ratio?labelSelector=target_name%3Dnope",
            404,
            "NotFound",
            "target_name=nope",
        ),
        (
            "/namespaces/empty-ns/wva_desired_ratio?labelSelector=target_name%3Dllama-decode",
            404,
            "NotFound",
            "empty-ns",
        ),
        ("/nonsense/path", 404, "NotFound", "nonsense"),
        (
            "/namespaces/llm-a/wva_desired_ratio?labelSelector=a%3D%3D%3Db",
            400,
            "BadRequest",
            "labelSelector",
        ),
    ];
    for (path, code, reason, mention) in cases {
        let (status, body) = s.get(&format!("{SINGLE}{path}")).await;
        assert_eq!(status, code, "{path}: {body}");
        assert_eq!(body["kind"], "Status", "{path}");
        assert_eq!(body["apiVersion"], "v1", "{path}");
        assert_eq!(body["status"], "Failure", "{path}");
        assert_eq!(body["reason"], reason, "{path}");
        assert_eq!(body["code"], code, "{path}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(mention),
            "{path}: message {message:?} should mention {mention:?}"
        );
    }
    // The no-match message names namespace and selector.
    let (_, body) = s
        .get(&format!(
            "{SINGLE}/namespaces/llm-a/wva_desired_ratio?labelSelector=target_name%3Dnope"
        ))
        .await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("llm-a") && message.contains("target_name=nope"),
        "{message}"
    );

    // Unknown top-level path and a write method.
    let (status, body) = s.get("/api/v1/pods").await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("NotFound")));
    let r = s
        .client
        .post(format!(
            "{}{SINGLE}/namespaces/llm-a/wva_desired_ratio",
            s.base
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "MethodNotAllowed");

    // Every llama replica reports kv 1.7: the samples are rejected and
    // counted, and each replica keeps its last good value, so the decision
    // stays 2. (Accepted, 1.7 would make all three saturated: 4.)
    for e in &emulators[..3] {
        e.set_state(serde_json::json!({"kv": 1.7})).await;
    }
    let count = || async {
        let text = s.text("/metrics").await;
        rejected_count(&text, "kv_cache_usage", "out_of_range").unwrap_or(0.0)
    };
    let before = count().await;
    // Three scrape rounds of three rejected samples each: whatever round
    // was in flight when the state changed, two whole ones saw 1.7 everywhere.
    common::eventually(
        std::time::Duration::from_secs(30),
        "three rounds of rejected kv 1.7 samples",
        || async { (count().await >= before + 9.0).then_some(()) },
    )
    .await;
    assert_eq!(
        s.value("llm-a", "wva_desired_replicas", "target_name=llama-decode")
            .await
            .as_deref(),
        Some("2")
    );
    let (status, _) = s.get(SINGLE).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn discovery_lists_the_served_metrics_and_curl_works() {
    let (s, _emulators) = two_models().await;
    let (status, body) = s.get(SINGLE).await;
    assert_eq!(status, 200);
    assert_eq!(body["kind"], "APIResourceList");
    let names: Vec<&str> = body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for want in [
        "wva_desired_ratio",
        "wva_desired_replicas",
        "wva_current_replicas",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let (status, body) = s.get("/apis").await;
    assert_eq!((status, body["kind"].as_str()), (200, Some("APIGroupList")));
    // The aggregator asks for aggregated discovery; a plain APIGroupList with a
    // plain JSON content type makes it fall back to legacy discovery.
    let r = s
        .client
        .get(format!("{}/apis", s.base))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "APIGroupList");
    let (status, body) = s.get("/apis/external.metrics.k8s.io").await;
    assert_eq!((status, body["kind"].as_str()), (200, Some("APIGroup")));
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(s.text(path).await, "ok", "{path}");
    }
    let (status, body) = s.get("/version").await;
    assert_eq!(status, 200);
    assert!(body["gitVersion"].as_str().unwrap().starts_with('v'));
    let (status, body) = s.get("/openapi/v2").await;
    assert_eq!((status, body["swagger"].as_str()), (200, Some("2.0")));

    // A real client other than ours: curl over HTTP/2 with the test CA.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(s.ca_path())
        .arg(format!(
            "{}{SINGLE}/namespaces/llm-a/wva_desired_replicas?labelSelector=target_name%3Dllama-decode",
            s.base
        ))
        .output()
        .expect("curl is installed (the test command installs it)");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["kind"], "ExternalMetricValueList");
}

/// Reads `wva_metrics_samples_rejected_total{...}` from the exposition text.
fn rejected_count(text: &str, signal: &str, reason: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with("wva_metrics_samples_rejected_total{"))
        .filter(|l| {
            l.contains(&format!("signal=\"{signal}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}
