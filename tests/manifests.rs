//! Every manifest in deploy/ and apiservice/ parses into its typed
//! Kubernetes struct, the ClusterRole grants what the code watches and
//! writes, kustomizations render, the Dockerfile builds the README's
//! binary, and README links every guide.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml")
            && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            out.push(p);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, path: &Path) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{}: not a valid {}: {e}", path.display(), v["kind"]))
}

fn all_documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&Path::new(ROOT).join("deploy"), &mut files);
    yaml_files(&Path::new(ROOT).join("apiservice"), &mut files);
    files.sort();
    files
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

#[test]
fn every_document_parses_into_its_type() {
    let docs = all_documents();
    assert!(docs.len() > 15, "found {} documents", docs.len());
    for (path, d) in &docs {
        let kind = d["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", path.display()));
        match kind {
            "Namespace" => drop(typed::<Namespace>(d, path)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(d, path)),
            "ClusterRole" => drop(typed::<ClusterRole>(d, path)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(d, path)),
            "Role" => drop(typed::<Role>(d, path)),
            "RoleBinding" => drop(typed::<RoleBinding>(d, path)),
            "ConfigMap" => drop(typed::<ConfigMap>(d, path)),
            "Deployment" => drop(typed::<Deployment>(d, path)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(d, path)),
            "Service" => drop(typed::<Service>(d, path)),
            "HorizontalPodAutoscaler" => drop(typed::<HorizontalPodAutoscaler>(d, path)),
            "APIService" => drop(typed::<APIService>(d, path)),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(d, path)),
            "VariantAutoscaling" => drop(
                typed::<wva_metrics_server::inventory::VariantAutoscaling>(d, path),
            ),
            // CRDs of other projects: checked as dynamic objects.
            "NetworkPolicy" => drop(typed::<k8s_openapi::api::networking::v1::NetworkPolicy>(
                d, path,
            )),
            "ServiceMonitor"
            | "PrometheusRule"
            | "ScaledObject"
            | "Issuer"
            | "Certificate"
            | "ClusterIssuer"
            | "ClusterTriggerAuthentication" => {
                assert!(
                    d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
                    "{}",
                    path.display()
                );
                assert!(
                    d["spec"].is_object(),
                    "{}: {kind} without spec",
                    path.display()
                );
            }
            other => panic!("{}: unexpected kind {other}", path.display()),
        }
    }
}

#[test]
fn deployment_is_hardened_and_probed() {
    let docs = all_documents();
    let (path, d) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .unwrap();
    let d: Deployment = typed(d, path);
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/livez")
    );
    let resources = c.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    // The flags the container runs with exist.
    let args = c.args.clone().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let flag = a.split('=').next().unwrap();
        assert!(
            help.contains(flag),
            "deploy/deployment.yaml uses unknown flag {flag}"
        );
    }
}

#[test]
fn cluster_role_grants_what_the_code_needs() {
    let docs = all_documents();
    let (path, role) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "wva-metrics-server")
        .unwrap();
    let role: ClusterRole = typed(role, path);
    let rules = role.rules.unwrap_or_default();
    let grants = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|x| x == group))
                && r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for need in wva_metrics_server::inventory::kube::required_rbac() {
        for verb in need.verbs {
            assert!(
                grants(need.api_group, need.resource, verb),
                "ClusterRole lacks {verb} on {}/{}",
                need.api_group,
                need.resource
            );
        }
    }
}

#[test]
fn thresholds_configmap_is_valid() {
    let docs = all_documents();
    let (path, cm) = docs.iter().find(|(_, d)| d["kind"] == "ConfigMap").unwrap();
    let cm: ConfigMap = typed(cm, path);
    let (config, errors) =
        wva_metrics_server::saturation::ThresholdConfig::from_configmap_data(&cm.data.unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        config.default_thresholds(),
        wva_metrics_server::saturation::SaturationThresholds::default()
    );
}

#[test]
fn alerts_use_served_metric_names() {
    let docs = all_documents();
    let (_, rule) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "PrometheusRule")
        .unwrap();
    let known = [
        "wva_desired_replicas",
        "wva_current_replicas",
        "wva_desired_ratio",
        "wva_replica_scaling_total",
        "wva_metrics_samples_rejected_total",
        "aggregator_unavailable_apiservice",
    ];
    for r in rule["spec"]["groups"][0]["rules"].as_array().unwrap() {
        let expr = r["expr"].as_str().unwrap();
        assert!(
            known.iter().any(|k| expr.contains(k)),
            "alert {} uses no known metric: {expr}",
            r["alert"]
        );
        assert!(!expr.contains("inferno_"), "alerts use the wva_* names");
    }
}

/// Renders with kustomize or kubectl when one is installed; otherwise checks
/// what kustomize would: every resource listed exists and parses.
#[test]
fn kustomizations_render() {
    for dir in ["deploy", "apiservice", "apiservice/cert-manager"] {
        let dir = Path::new(ROOT).join(dir);
        let k: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
                .unwrap();
        let listed: BTreeSet<String> = k["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        for r in &listed {
            let p = dir.join(r);
            assert!(p.is_file(), "{} lists missing {r}", dir.display());
            assert!(!documents(&p).is_empty());
        }
        let present: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
            .collect();
        assert_eq!(
            listed,
            present,
            "{}: every manifest is listed",
            dir.display()
        );
        for tool in [["kustomize", "build"], ["kubectl", "kustomize"]] {
            if let Ok(out) = std::process::Command::new(tool[0])
                .args([tool[1]])
                .arg(&dir)
                .output()
            {
                assert!(
                    out.status.success(),
                    "{} failed: {}",
                    tool.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                break;
            }
        }
    }
}

#[test]
fn dockerfile_builds_the_readme_binary() {
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked"));
    assert!(docker.contains("target/release/wva-metrics-server"));
    assert!(docker.contains("USER 65532"), "non-root");
    assert!(docker.contains("EXPOSE 6443"));
    for copied in docker
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
    {
        for src in copied.split_whitespace().rev().skip(1) {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "Dockerfile copies missing {src}"
            );
        }
    }
    // Cargo loads every target declared in the manifest, even to build one
    // binary: the build context must hold the declared benches.
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    if manifest.contains("[[bench]]") {
        assert!(
            docker.contains("COPY benches ./benches"),
            "Cargo.toml declares benches: the Dockerfile must copy benches/"
        );
    }
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(readme.contains("cargo run --release") || readme.contains("cargo build --release"));
}

#[test]
fn readme_links_every_guide() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            assert!(
                readme.contains(&format!("docs/{name}")),
                "README does not link docs/{name}"
            );
        }
    }
    for link in readme
        .split("](")
        .skip(1)
        .filter_map(|s| s.split(')').next())
        .filter(|l| l.starts_with("docs/"))
    {
        assert!(
            Path::new(ROOT).join(link).is_file(),
            "README links missing {link}"
        );
    }
}
