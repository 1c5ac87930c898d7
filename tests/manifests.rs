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
    serde_norway::Deserializer::from_str(&text)
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
    let (path, cm) = docs
        .iter()
        .find(|(_, d)| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == wva_metrics_server::saturation::CONFIGMAP_NAME
        })
        .unwrap();
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
        // tests/dashboard_expressions.rs evaluates every expression against
        // a running server's /metrics.
        "wva_http_requests_total",
        "wva_metrics_sample_age_seconds",
        "wva_fetch_cycles_total",
        "wva_backend_errors_total",
        "wva_tolerance_holds_total",
        "wva_decisions_without_metrics_total",
        "wva_status_writes_pending",
        "wva_status_writes_total",
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

/// Every directory under deploy/, apiservice/ and overlays/ that holds a
/// kustomization.yaml, sorted.
fn kustomization_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if dir.join("kustomization.yaml").is_file() {
            out.push(dir.to_owned());
        }
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    for top in ["deploy", "apiservice", "overlays"] {
        walk(&Path::new(ROOT).join(top), &mut out);
    }
    out.sort();
    out
}

fn kustomization(dir: &Path) -> Value {
    serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
        .unwrap_or_else(|e| panic!("{}/kustomization.yaml: {e}", dir.display()))
}

fn listed(k: &Value, field: &str) -> Vec<String> {
    k[field]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// kubectl (`KUBECTL` overrides, to try another version). scripts/test
/// installs it (Debian package kubernetes-client); there is no fallback.
fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

fn run_kustomize(dir: &Path) -> Result<Vec<Value>, String> {
    let out = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{} kustomize` ({e}): scripts/test installs kubectl (Debian package kubernetes-client)",
                kubectl()
            )
        });
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect())
}

/// The kubectl of Debian 12 (kubernetes-client 1.20) embeds kustomize
/// v2.0.3, which predates components (kustomize v3.7). With it, a
/// kustomization that uses components is rendered as what it means: its
/// resources plus the components' resources (exact because a component here
/// may only hold `resources`, checked in `components_only_add_resources`).
fn render(dir: &Path) -> Vec<Value> {
    match run_kustomize(dir) {
        Ok(docs) => docs,
        Err(e)
            if e.contains("unknown field \"components\"")
                || e.contains("kind should be Kustomization") =>
        {
            eprintln!(
                "NOTE: {} kustomize predates kustomize components; rendering {} as its resources plus its components' resources",
                kubectl(),
                dir.display()
            );
            let k = kustomization(dir);
            if k["kind"] == "Component" {
                return listed(&k, "resources")
                    .iter()
                    .flat_map(|r| documents(&dir.join(r)))
                    .collect();
            }
            let mut docs = Vec::new();
            for r in listed(&k, "resources") {
                let p = dir.join(&r);
                if p.is_dir() {
                    docs.extend(render(&p));
                } else {
                    docs.extend(documents(&p));
                }
            }
            for c in listed(&k, "components") {
                docs.extend(render(&dir.join(c)));
            }
            docs
        }
        Err(e) => panic!("kubectl kustomize {} failed: {e}", dir.display()),
    }
}

fn rel(dir: &Path) -> String {
    dir.strip_prefix(ROOT).unwrap().display().to_string()
}

/// Kinds that exist in every cluster (built-in API groups).
fn is_builtin(api_version: &str) -> bool {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    [
        "",
        "apps",
        "policy",
        "autoscaling",
        "batch",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "networking.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
    ]
    .contains(&group)
}

#[test]
fn every_manifest_is_listed_in_its_kustomization() {
    let dirs = kustomization_dirs();
    assert!(dirs.len() >= 5, "{dirs:?}");
    for dir in &dirs {
        let k = kustomization(dir);
        let listed: BTreeSet<String> = listed(&k, "resources")
            .into_iter()
            .filter(|r| !dir.join(r).is_dir())
            .collect();
        for r in &listed {
            let p = dir.join(r);
            assert!(p.is_file(), "{} lists missing {r}", rel(dir));
            assert!(!documents(&p).is_empty());
        }
        let present: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
            .collect();
        assert_eq!(listed, present, "{}: every manifest is listed", rel(dir));
    }
}

#[test]
fn components_only_add_resources() {
    for dir in kustomization_dirs() {
        let k = kustomization(&dir);
        if k["kind"] != "Component" {
            continue;
        }
        let keys: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
        for key in keys {
            assert!(
                ["apiVersion", "kind", "resources"].contains(&key),
                "{}: a component here only adds resources (found `{key}`)",
                rel(&dir)
            );
        }
    }
}

/// The install rules, on what `kubectl kustomize` renders:
/// - every namespace a kustomization puts objects into is created by it (or
///   is kube-system);
/// - the APIService is alone in its own kustomization, which no other
///   kustomization includes: Certificates and the server come first, the
///   APIService last, through scripts/install-apiservice;
/// - deploy/ needs nothing but built-in kinds and its own CRD (no
///   Prometheus Operator), and the monitoring objects come from an optional
///   component that overlays/with-monitoring adds.
#[test]
fn kustomizations_render_and_follow_the_install_rules() {
    let mut rendered = std::collections::BTreeMap::new();
    for dir in kustomization_dirs() {
        let docs = render(&dir);
        assert!(!docs.is_empty(), "{} renders nothing", rel(&dir));
        rendered.insert(rel(&dir), (kustomization(&dir), docs));
    }
    let names = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    for (dir, (k, docs)) in &rendered {
        if k["kind"] == "Component" {
            continue;
        }
        let created: BTreeSet<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "Namespace")
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        for d in docs {
            if let Some(ns) = d["metadata"]["namespace"].as_str() {
                assert!(
                    ns == "kube-system" || created.contains(ns),
                    "{dir}: {} {} goes into namespace {ns}, which this kustomization does not create",
                    d["kind"],
                    d["metadata"]["name"]
                );
            }
        }
        let apiservices = docs.iter().filter(|d| d["kind"] == "APIService").count();
        if apiservices > 0 {
            assert!(
                [
                    ("apiservice/cert-manager-apiservice", 1, 1),
                    ("apiservice/cert-manager-apiservice-custom", 2, 2)
                ]
                .contains(&(dir.as_str(), apiservices, docs.len())),
                "{dir}: the APIServices are registered alone, last ({apiservices} of {} documents)",
                docs.len()
            );
        }
    }
    let (_, deploy) = &rendered["deploy"];
    let own_crds: BTreeSet<String> = deploy
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| d["spec"]["group"].as_str().unwrap().to_owned())
        .collect();
    for d in deploy {
        let api_version = d["apiVersion"].as_str().unwrap();
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        assert!(
            is_builtin(api_version) || own_crds.contains(group),
            "deploy/ has {} {api_version}, a kind a cluster without that operator rejects: move it into a component",
            d["kind"]
        );
    }
    let (_, monitoring) = &rendered["deploy/components/monitoring"];
    let monitoring_names = names(monitoring);
    assert_eq!(
        monitoring_names,
        BTreeSet::from([
            "ConfigMap/wva-metrics-server-dashboard".to_owned(),
            "PrometheusRule/wva-metrics-server".to_owned(),
            "ServiceMonitor/wva-metrics-server".to_owned()
        ])
    );
    let (_, overlay) = &rendered["overlays/with-monitoring"];
    let expected: BTreeSet<String> = names(deploy).union(&monitoring_names).cloned().collect();
    assert_eq!(
        names(overlay),
        expected,
        "overlays/with-monitoring = deploy/ + monitoring"
    );

    let (_, certs) = &rendered["apiservice/cert-manager"];
    assert!(certs.iter().any(|d| d["kind"] == "Certificate"));
    // The namespace both install paths create is the same object.
    let ns = |docs: &[Value]| docs.iter().find(|d| d["kind"] == "Namespace").cloned();
    assert_eq!(ns(certs), ns(deploy));
}

/// Documentation never registers the APIService with a bare `kubectl apply`:
/// only scripts/install-apiservice, which checks the owner and the server first.
#[test]
fn docs_register_the_apiservice_only_through_the_owner_check() {
    let mut files = vec![
        Path::new(ROOT).join("README.md"),
        Path::new(ROOT).join("apiservice/README.md"),
    ];
    for e in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let script =
        std::fs::read_to_string(Path::new(ROOT).join("scripts/install-apiservice")).unwrap();
    let apply_at = script.rfind("kubectl apply").unwrap();
    for check in [
        // The owner check runs for every APIService of the manifest.
        "kubectl get apiservice \"$name\"",
        "get endpointslices",
    ] {
        let at = script
            .find(check)
            .unwrap_or_else(|| panic!("install-apiservice lacks `{check}`"));
        assert!(
            at < apply_at,
            "install-apiservice checks `{check}` before it applies"
        );
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let registers =
                line.contains("apiservice.yaml") || line.contains("cert-manager-apiservice");
            assert!(
                !(line.contains("kubectl apply") && registers),
                "{}:{}: registers the APIService without scripts/install-apiservice: {line}",
                f.display(),
                n + 1
            );
        }
    }
}

#[test]
fn dockerfile_builds_the_readme_binary() {
    let docker = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked"));
    // The image holds the server, not the emulator, demo and fleet
    // generator (cargo feature `emulator`, on by default).
    let build = docker
        .lines()
        .find(|l| l.starts_with("RUN cargo build"))
        .unwrap();
    assert!(
        build.contains("--no-default-features") && build.contains("--bin wva-metrics-server"),
        "{build}"
    );
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
    // binary: the build context must hold the declared benches, examples
    // and tests.
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[example]]", "examples"),
        ("[[test]]", "tests"),
    ] {
        if manifest.contains(section) {
            assert!(
                docker.contains(&format!("COPY {dir} ./{dir}")),
                "Cargo.toml declares {section}: the Dockerfile must copy {dir}/"
            );
        }
    }
    assert!(
        manifest.contains("default = [\"emulator\"]"),
        "the README's demo needs the emulator feature on by default"
    );
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
        .map(|l| l.split('#').next().unwrap_or(l))
    {
        assert!(
            Path::new(ROOT).join(link).is_file(),
            "README links missing {link}"
        );
    }
}
