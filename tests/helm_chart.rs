//! The Helm chart (charts/wva-metrics-server) with a real Helm binary:
//! `helm lint --strict` and `helm template` for the default values and every
//! values file under the chart's ci/, what each of them renders, the same
//! objects as the kustomize install for the same settings, and clear
//! failures for values that contradict each other or break the schema.
//!
//! Helm comes from scripts/test (`WVA_TEST_HELM`, else target/test-helm/helm,
//! else `helm` on the PATH); kubectl renders the kustomizations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RELEASE: &str = "wva-metrics-server";
const NAMESPACE: &str = "wva-system";

fn chart() -> PathBuf {
    Path::new(ROOT).join("charts/wva-metrics-server")
}

fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("WVA_TEST_HELM") {
        return p.into();
    }
    let local = Path::new(ROOT).join("target/test-helm/helm");
    if local.is_file() {
        return local;
    }
    "helm".into()
}

/// Runs helm; Ok(stdout) on success, Err(stderr) otherwise.
fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/test installs Helm into target/test-helm",
                helm().display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}

fn parse_documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `helm template` of the chart with these values files and `--set`s.
fn template(values: &[&Path], sets: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart();
    let mut args = vec![
        "template".to_owned(),
        RELEASE.to_owned(),
        chart.display().to_string(),
        "--namespace".to_owned(),
        NAMESPACE.to_owned(),
        "--include-crds".to_owned(),
    ];
    for v in values {
        args.push("--values".to_owned());
        args.push(v.display().to_string());
    }
    for s in sets {
        args.push("--set".to_owned());
        args.push((*s).to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_helm(&args).map(|out| parse_documents(&out, "helm template output"))
}

fn values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn ci(name: &str) -> PathBuf {
    chart().join("ci").join(name)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "rendered {} {} is not a valid object: {e}",
            v["kind"], v["metadata"]["name"]
        )
    })
}

/// Every built-in kind the chart renders parses into its typed struct
/// (unknown fields and wrong types fail), so a rendered manifest is one the
/// API server accepts in shape.
fn check_types(docs: &[Value]) {
    for d in docs {
        match d["kind"].as_str().unwrap() {
            "Deployment" => drop(typed::<Deployment>(d)),
            "Service" => drop(typed::<Service>(d)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(d)),
            "ConfigMap" => drop(typed::<ConfigMap>(d)),
            "Secret" => drop(typed::<Secret>(d)),
            "Namespace" => drop(typed::<Namespace>(d)),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(d)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(d)),
            "ClusterRole" => drop(typed::<ClusterRole>(d)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(d)),
            "Role" => drop(typed::<Role>(d)),
            "RoleBinding" => drop(typed::<RoleBinding>(d)),
            "APIService" => drop(typed::<APIService>(d)),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(d)),
            "Certificate" | "Issuer" | "ServiceMonitor" | "PrometheusRule" => {}
            other => panic!("unexpected kind {other} rendered"),
        }
    }
}

fn container(docs: &[Value]) -> Value {
    find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn env(docs: &[Value]) -> BTreeMap<String, String> {
    container(docs)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The volume (from the pod spec) mounted at the directory of `file`.
fn volume_of(docs: &[Value], file: &str) -> Value {
    let c = container(docs);
    let dir = Path::new(file)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .unwrap_or_else(|| panic!("nothing is mounted at {dir} for {file}"));
    find(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("volume {} is not defined", mount["name"]))
        .clone()
}

/// `serve --help`, for checking that every rendered flag exists.
fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lint_and_template_pass_for_the_defaults_and_every_values_file() {
    let files = values_files();
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "prometheus-tenant-mtls-values.yaml",
        "direct-scrape-values.yaml",
        "keda-client-ca-values.yaml",
        "ha-leader-election-values.yaml",
    ] {
        assert!(names.contains(needed), "ci/{needed} is missing: {names:?}");
    }
    let help = serve_help();
    let chart = chart().display().to_string();
    let mut cases: Vec<Option<&Path>> = vec![None];
    cases.extend(files.iter().map(|f| Some(f.as_path())));
    for values in cases {
        let label = values.map_or("default values".to_owned(), |v| v.display().to_string());
        let mut lint = vec!["lint", "--strict", chart.as_str()];
        let path;
        if let Some(v) = values {
            path = v.display().to_string();
            lint.extend(["--values", path.as_str()]);
        }
        let out = run_helm(&lint).unwrap_or_else(|e| panic!("helm lint --strict, {label}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "{label}: {out}");
        let docs = template(values.as_slice(), &[])
            .unwrap_or_else(|e| panic!("helm template, {label}: {e}"));
        check_types(&docs);
        // Exactly one object per kind and name, and every namespaced one in the release namespace.
        let all = kinds(&docs);
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(
            unique.len(),
            all.len(),
            "{label}: duplicate objects {all:?}"
        );
        for d in &docs {
            if let Some(ns) = d["metadata"]["namespace"].as_str() {
                assert!(
                    ns == NAMESPACE || ns == "kube-system",
                    "{label}: {} in {ns}",
                    d["metadata"]["name"]
                );
            }
        }
        // The container runs only flags the server knows.
        for a in args(&docs).iter().filter(|a| a.starts_with("--")) {
            let flag = a.split('=').next().unwrap();
            let known = help.match_indices(flag).any(|(i, _)| {
                !help[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            assert!(known, "{label}: the chart passes unknown flag {flag}");
        }
    }
}

#[test]
fn default_values_generate_a_certificate_the_apiservice_trusts() {
    let docs = template(&[], &[]).unwrap();
    let secret = find(&docs, "Secret", "wva-metrics-server-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let apiservice = find(&docs, "APIService", "v1beta1.external.metrics.k8s.io");
    assert_eq!(
        apiservice["spec"]["caBundle"], secret["data"]["ca.crt"],
        "the APIService's caBundle is the CA of the generated certificate"
    );
    assert_eq!(apiservice["spec"]["service"]["name"], RELEASE);
    assert_eq!(apiservice["spec"]["service"]["namespace"], NAMESPACE);
    // The serving certificate names the Service and is signed by that CA.
    let secret: Secret = typed(secret);
    let data = secret.data.unwrap();
    let cert_pem = &data["tls.crt"].0;
    let ca_pem = &data["ca.crt"].0;
    let (_, cert) = x509_parser::pem::parse_x509_pem(cert_pem).unwrap();
    let cert = cert.parse_x509().unwrap();
    let (_, ca) = x509_parser::pem::parse_x509_pem(ca_pem).unwrap();
    let ca = ca.parse_x509().unwrap();
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        sans.iter()
            .any(|n| n.contains("wva-metrics-server.wva-system.svc")),
        "{sans:?}"
    );
    assert_eq!(
        cert.issuer().to_string(),
        ca.subject().to_string(),
        "the serving certificate is issued by the CA in caBundle"
    );
    assert!(ca.is_ca());
    // No KEDA port unless asked for, the thresholds ConfigMap the server reads.
    let service: Service = typed(find(&docs, "Service", RELEASE));
    let ports: Vec<String> = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    assert_eq!(ports, ["https"]);
    find(&docs, "ConfigMap", "wva-saturation-scaling-config");
    assert!(!args(&docs).iter().any(|a| a.starts_with("--keda")));
}

#[test]
fn prometheus_values_set_tenant_mtls_and_the_store_ca() {
    let docs = template(&[&ci("prometheus-tenant-mtls-values.yaml")], &[]).unwrap();
    let env = env(&docs);
    assert_eq!(
        env["PROMETHEUS_URL"],
        "https://mimir-query-frontend.mimir.svc:8080/prometheus"
    );
    assert_eq!(env["PROMETHEUS_TENANT"], "team-a");
    assert_eq!(env["PROMETHEUS_TENANT_HEADER"], "X-Scope-OrgID");
    assert_eq!(env["PROMETHEUS_QUERY_TIMEOUT"], "20s");
    assert_eq!(
        env["PROMETHEUS_HEADERS"],
        "X-Request-Source: wva-metrics-server"
    );
    assert!(args(&docs).contains(&"--metrics-backend=prometheus".to_owned()));
    // The client certificate and key come from the named Secret ...
    let client = volume_of(&docs, &env["PROMETHEUS_CLIENT_CERT_PATH"]);
    assert_eq!(client["secret"]["secretName"], "wva-metrics-store-client");
    assert!(env["PROMETHEUS_CLIENT_CERT_PATH"].ends_with("/tls.crt"));
    assert!(env["PROMETHEUS_CLIENT_KEY_PATH"].ends_with("/tls.key"));
    assert_eq!(volume_of(&docs, &env["PROMETHEUS_CLIENT_KEY_PATH"]), client);
    // Basic auth: the user, and the password file from the named Secret.
    assert_eq!(env["PROMETHEUS_BASIC_AUTH_USERNAME"], "123456");
    let password = volume_of(&docs, &env["PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"]);
    assert_eq!(
        password["secret"]["secretName"],
        "wva-metrics-store-password"
    );
    assert!(env["PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"].ends_with("/password"));
    // ... and the store's CA from a ConfigMap holding the PEM of the values file.
    let ca = volume_of(&docs, &env["PROMETHEUS_CA_CERT_PATH"]);
    let cm = find(
        &docs,
        "ConfigMap",
        ca["configMap"]["name"].as_str().unwrap(),
    );
    assert!(env["PROMETHEUS_CA_CERT_PATH"].ends_with("/ca.crt"));
    let pem = cm["data"]["ca.crt"].as_str().unwrap();
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("the store CA is a PEM certificate");
}

#[test]
fn direct_scrape_values_run_without_prometheus() {
    let docs = template(&[&ci("direct-scrape-values.yaml")], &[]).unwrap();
    let a = args(&docs);
    assert!(a.contains(&"--metrics-backend=scrape".to_owned()), "{a:?}");
    assert!(a.contains(&"--scrape-interval=5s".to_owned()), "{a:?}");
    assert!(a
        .iter()
        .any(|x| x.starts_with("--epp-metrics-url=http://gaie-inference-scheduling-epp")));
    let env = env(&docs);
    assert!(
        !env.keys().any(|k| k.starts_with("PROMETHEUS_")),
        "no store settings with the scrape backend: {env:?}"
    );
    assert_eq!(env["WVA_SCALE_TO_ZERO"], "true");
}

#[test]
fn keda_values_open_the_grpc_port_with_the_client_ca_only_to_keda() {
    let values = ci("keda-client-ca-values.yaml");
    let docs = template(&[&values], &[]).unwrap();
    assert!(
        !docs.iter().any(|d| d["kind"] == "APIService"),
        "KEDA owns external.metrics.k8s.io here: no APIService"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "wva-metrics-server-external-metrics-reader"),
        "no HPA read grant without the APIService"
    );
    let a = args(&docs);
    assert!(a.contains(&"--keda-port=9443".to_owned()), "{a:?}");
    let ca_flag = a
        .iter()
        .find_map(|x| x.strip_prefix("--keda-client-ca-file="))
        .expect("--keda-client-ca-file");
    let ca_volume = volume_of(&docs, ca_flag);
    let secret = find(
        &docs,
        "Secret",
        ca_volume["secret"]["secretName"].as_str().unwrap(),
    );
    let values_text = std::fs::read_to_string(&values).unwrap();
    let values: Value = serde_norway::from_str(&values_text).unwrap();
    assert_eq!(
        secret["stringData"]["ca.crt"].as_str().unwrap().trim(),
        values["keda"]["clientCA"]["caCert"]
            .as_str()
            .unwrap()
            .trim()
    );
    // gRPC on the Service; on the NetworkPolicy only from the keda namespace.
    let service = find(&docs, "Service", RELEASE);
    assert!(service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "grpc" && p["port"] == 9443));
    let np = find(&docs, "NetworkPolicy", RELEASE);
    let keda_rule = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 9443)
        .expect("an ingress rule for the KEDA port");
    assert_eq!(
        keda_rule["from"],
        serde_json::json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}])
    );
}

#[test]
fn ha_values_run_two_replicas_under_a_lease() {
    let docs = template(&[&ci("ha-leader-election-values.yaml")], &[]).unwrap();
    let deployment = find(&docs, "Deployment", RELEASE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let a = args(&docs);
    for want in [
        "--leader-elect-lease-duration=15s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=2s",
    ] {
        assert!(a.contains(&want.to_owned()), "{want} missing: {a:?}");
    }
    assert!(!a.contains(&"--leader-elect=false".to_owned()));
    let role = find(&docs, "Role", "wva-metrics-server-leader-election");
    assert_eq!(role["rules"][0]["resources"][0], "leases");
    assert_eq!(
        find(&docs, "PodDisruptionBudget", RELEASE)["spec"]["minAvailable"],
        1
    );
    // cert-manager issues the certificate and injects all three APIServices' caBundle.
    let certificate = find(&docs, "Certificate", "wva-metrics-server-tls");
    assert_eq!(
        certificate["spec"]["dnsNames"][0],
        "wva-metrics-server.wva-system.svc"
    );
    for name in [
        "v1beta1.external.metrics.k8s.io",
        "v1beta2.custom.metrics.k8s.io",
        "v1beta1.custom.metrics.k8s.io",
    ] {
        let s = find(&docs, "APIService", name);
        assert_eq!(
            s["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "wva-system/wva-metrics-server-tls"
        );
        assert!(s["spec"].get("caBundle").is_none());
    }
    // The API port restricted to the given CIDR and namespace.
    let np = find(&docs, "NetworkPolicy", RELEASE);
    let api_rule = &np["spec"]["ingress"][0];
    assert_eq!(api_rule["ports"][0]["port"], 6443);
    assert_eq!(
        api_rule["from"],
        serde_json::json!([
            {"ipBlock": {"cidr": "10.0.0.0/8"}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ])
    );
    find(&docs, "ServiceMonitor", RELEASE);
    find(&docs, "PrometheusRule", RELEASE);
    find(&docs, "ConfigMap", "wva-metrics-server-dashboard");
}

#[test]
fn contradicting_or_wrong_values_fail_with_a_message_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["certificates.mode=none"],
            "register an APIService, but certificates.mode is none",
        ),
        (
            &[
                "certificates.mode=existingSecret",
                "certificates.existingSecret=mine",
            ],
            "certificates.caBundle is empty",
        ),
        (
            &["certificates.mode=existingSecret"],
            "certificates.existingSecret names no Secret",
        ),
        (&["keda.enabled=true"], "keda.enabled requires mutual TLS"),
        (
            &["leaderElection.enabled=false"],
            "every replica would write VariantAutoscaling status",
        ),
        (
            &["podDisruptionBudget.minAvailable=2"],
            "podDisruptionBudget.minAvailable (2) is not below replicaCount (2)",
        ),
        (
            &["replicaCount=1"],
            "podDisruptionBudget.minAvailable (1) is not below replicaCount (1)",
        ),
        (&["inventory.mode=file"], "inventory.file is empty"),
        (
            &["wva.prometheus.baseURL="],
            "wva.prometheus.baseURL is empty",
        ),
        (
            &[
                "wva.prometheus.basicAuth.username=u",
                "wva.prometheus.basicAuth.passwordSecret.name=p",
                "wva.prometheus.bearerTokenFile=/t",
            ],
            "choose one",
        ),
        // The schema names the wrong value.
        (&["replicaCount=two"], "/replicaCount"),
        (&["metricsBackend=graphite"], "/metricsBackend"),
        (&["keda.port=70000"], "/keda/port"),
        (
            &["wva.prometheus.baseurl=http://x"],
            "'baseurl' not allowed",
        ),
        (&["certificates.mode=selfsigned"], "/certificates/mode"),
        (
            &["wva.prometheus.baseURL=prometheus:9090"],
            "/wva/prometheus/baseURL",
        ),
        (
            &["networkPolicy.api.allowedCIDRs={10.0.0.0}"],
            "/networkPolicy/api/allowedCIDRs/0",
        ),
        (
            &["leaderElection.leaseDuration=15"],
            "/leaderElection/leaseDuration",
        ),
    ];
    for (sets, message) in cases {
        match template(&[], sets) {
            Ok(_) => {
                panic!("helm template --set {sets:?} succeeded; it must fail with {message:?}")
            }
            Err(e) => assert!(
                e.contains(message),
                "--set {sets:?}: the error does not say {message:?}:\n{e}"
            ),
        }
    }
    // Each contradiction resolved the way its message says renders.
    for sets in [
        &["certificates.mode=none", "apiService.external=false"][..],
        &[
            "leaderElection.enabled=false",
            "replicaCount=1",
            "podDisruptionBudget.enabled=false",
        ],
        &["keda.enabled=true", "keda.clientCA.existingSecret=keda-ca"],
    ] {
        template(&[], sets).unwrap_or_else(|e| panic!("--set {sets:?}: {e}"));
    }
}

#[test]
fn an_upstream_wva_values_file_carries_over() {
    let values = Path::new(ROOT).join("tests/fixtures/helm/upstream-wva-values.yaml");
    let docs = template(&[&values], &[]).unwrap();
    let env = env(&docs);
    assert_eq!(
        env["PROMETHEUS_URL"],
        "https://thanos-querier.openshift-monitoring.svc.cluster.local:9091"
    );
    assert_eq!(env["PROMETHEUS_TLS_INSECURE_SKIP_VERIFY"], "true");
    assert_eq!(
        env["PROMETHEUS_CA_CERT_PATH"],
        "/etc/ssl/certs/prometheus-ca.crt"
    );
    assert_eq!(env["WVA_SCALE_TO_ZERO"], "true");
    assert_eq!(env["CONTROLLER_INSTANCE"], "shard-a");
    let a = args(&docs);
    assert!(
        a.contains(&"--watch-namespaces=wva-system".to_owned()),
        "{a:?}"
    );
    let image = container(&docs)["image"].as_str().unwrap().to_owned();
    assert_eq!(image, "ghcr.io/example/wva-metrics-server:v0.5.0");
    assert_eq!(container(&docs)["imagePullPolicy"], "Always");
    // Prometheus' ServiceAccount may read /metrics.
    let binding = find(
        &docs,
        "ClusterRoleBinding",
        "wva-metrics-server-metrics-reader",
    );
    assert_eq!(
        binding["subjects"][0],
        serde_json::json!({"kind": "ServiceAccount", "name": "kube-prometheus-stack-prometheus",
                           "namespace": "openshift-user-workload-monitoring"})
    );
    // The thresholds, with the override, as the server parses them.
    let cm: ConfigMap = typed(find(&docs, "ConfigMap", "wva-saturation-scaling-config"));
    assert_eq!(cm.immutable, Some(true));
    let (config, errors) =
        wva_metrics_server::saturation::ThresholdConfig::from_configmap_data(&cm.data.unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(config.default_thresholds().kv_cache_threshold, 0.75);
    // NOTES names the upstream values this chart ignores.
    let notes = run_helm(&[
        "install",
        RELEASE,
        &chart().display().to_string(),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--values",
        &values.display().to_string(),
    ])
    .unwrap();
    assert!(
        notes.contains("Ignored upstream WVA values")
            && notes.contains("wva.reconcileInterval")
            && notes.contains("hpa"),
        "{notes}"
    );
    assert!(notes.contains("kubectl get apiservice v1beta1.external.metrics.k8s.io"));
}

// ---- The same objects as the kustomize install ----

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// `kubectl kustomize DIR`; with the kustomize of Debian's kubectl (v2.0.3,
/// before components) a Component or a kustomization with components is
/// rendered as its resources plus its components' resources, which is what
/// it means here (tests/manifests.rs: components only add resources).
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} kustomize: {e}", kubectl()));
    if out.status.success() {
        return parse_documents(&String::from_utf8_lossy(&out.stdout), "kustomize output");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field \"components\"")
            || err.contains("kind should be Kustomization"),
        "kubectl kustomize {}: {err}",
        dir.display()
    );
    let k: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let list = |field: &str| -> Vec<String> {
        k[field]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let mut docs = Vec::new();
    for r in list("resources").into_iter().chain(list("components")) {
        let p = dir.join(r);
        if p.is_dir() {
            docs.extend(kustomize(&p));
        } else {
            docs.extend(parse_documents(
                &std::fs::read_to_string(&p).unwrap(),
                "manifest",
            ));
        }
    }
    docs
}

/// Names the chart derives from the release where kustomize has fixed ones.
const RENAMES: &[(&str, &str)] = &[
    (
        "wva-metrics-server-external-metrics-reader",
        "wva-external-metrics-reader",
    ),
    (
        "wva-metrics-server-external-metrics-reader:horizontal-pod-autoscaler",
        "wva-external-metrics-reader:horizontal-pod-autoscaler",
    ),
];

/// Removes what Helm generates and kustomize does not: the release's labels
/// (instance, managed-by, chart, version; also in selectors), the
/// app.kubernetes.io/* labels on objects kustomize leaves unlabelled, and
/// the renames above; numbers compare as numbers (0 and 0.0) and ConfigMap
/// data that is YAML compares as YAML (0.80 and 0.8 are one threshold).
fn normalise(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in [
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/version",
                    "helm.sh/chart",
                ] {
                    m.remove(k);
                }
                for (_, x) in m.iter_mut() {
                    strip(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            // kustomize writes the CRD's `minimum: 0.0` as 0: one number.
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    *v = serde_json::json!(f);
                }
            }
            Value::String(s) => {
                for (from, to) in RENAMES {
                    if s == from {
                        *s = (*to).to_owned();
                    }
                }
            }
            _ => {}
        }
    }
    strip(&mut v);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.retain(|k, _| !k.starts_with("app.kubernetes.io/"));
        if labels.is_empty() {
            v["metadata"].as_object_mut().unwrap().remove("labels");
        }
    }
    if v["kind"] == "ConfigMap" {
        if let Some(data) = v["data"].as_object_mut() {
            for (_, x) in data.iter_mut() {
                let parsed: Option<Value> = x.as_str().and_then(|s| serde_norway::from_str(s).ok());
                if let Some(p) = parsed.filter(Value::is_object) {
                    *x = p;
                }
            }
        }
    }
    v
}

fn by_identity(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for d in docs {
        let d = normalise(d);
        let id = format!(
            "{} {}/{}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["namespace"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap()
        );
        if let Some(previous) = out.insert(id.clone(), d.clone()) {
            // Both install paths create the namespace: the same object.
            assert_eq!(previous, d, "{id} rendered twice, differently");
        }
    }
    out
}

/// Every (group, resource, name, verb) a rule list grants; `*` for all names.
#[test]
fn chart_renders_the_objects_of_the_kustomize_install_for_the_same_settings() {
    let root = Path::new(ROOT);
    let mut kustomized = Vec::new();
    for dir in [
        "overlays/with-monitoring",
        "apiservice/cert-manager",
        "apiservice/cert-manager-apiservice",
    ] {
        kustomized.extend(kustomize(&root.join(dir)));
    }
    let kustomized = by_identity(kustomized);
    let charted = by_identity(template(&[&ci("kustomize-equivalent-values.yaml")], &[]).unwrap());
    let k_ids: BTreeSet<&String> = kustomized.keys().collect();
    let c_ids: BTreeSet<&String> = charted.keys().collect();
    assert_eq!(
        k_ids, c_ids,
        "the chart and the kustomize install render different objects"
    );
    assert!(k_ids.len() >= 25, "{k_ids:?}");
    for (id, k) in &kustomized {
        let c = &charted[id];
        assert_eq!(
            k,
            c,
            "{id} differs between kustomize (left) and the chart (right):\nkustomize: {}\nchart: {}",
            serde_json::to_string_pretty(k).unwrap(),
            serde_json::to_string_pretty(c).unwrap()
        );
    }
}

#[test]
fn chart_copies_nothing_by_hand_from_deploy() {
    // The CRD, the rules and the dashboard are links into deploy/: one source.
    for (link, target) in [
        (
            "crds/variantautoscaling.yaml",
            "deploy/crd-variantautoscaling.yaml",
        ),
        (
            "files/prometheusrule.yaml",
            "deploy/components/monitoring/prometheusrule.yaml",
        ),
        (
            "files/dashboard-configmap.yaml",
            "deploy/components/monitoring/dashboard.yaml",
        ),
    ] {
        let p = chart().join(link);
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{link} is a symbolic link"
        );
        assert_eq!(
            std::fs::canonicalize(&p).unwrap(),
            std::fs::canonicalize(Path::new(ROOT).join(target)).unwrap()
        );
    }
    // The dashboard file for import and the sidecar ConfigMap hold the same dashboard.
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("deploy/components/monitoring/dashboards/wva-metrics-server.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let cm: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("deploy/components/monitoring/dashboard.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let embedded: Value =
        serde_json::from_str(cm["data"]["wva-metrics-server.json"].as_str().unwrap()).unwrap();
    assert_eq!(file, embedded);
}
