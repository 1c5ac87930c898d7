//! `wva-metrics-server crd` prints exactly the CRD that deploy/ installs.

use std::process::Command;

#[test]
fn crd_command_matches_the_deployed_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/crd-variantautoscaling.yaml"
    );
    let deployed = std::fs::read_to_string(path).unwrap();
    assert!(
        printed == deployed,
        "deploy/crd-variantautoscaling.yaml is out of date: run `cargo run -- crd > deploy/crd-variantautoscaling.yaml`"
    );
    let crd: serde_json::Value = serde_norway::from_str(&printed).unwrap();
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Target",
            "Model",
            "Min",
            "Max",
            "Optimized",
            "MetricsReady",
            "Age"
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert!(spec["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .unwrap()
        .contains("self.minReplicas <= self.maxReplicas"));
    assert_eq!(spec["properties"]["minReplicas"]["minimum"], 0.0);
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
}
