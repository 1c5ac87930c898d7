//! deploy/ ships the server closed: the KEDA port with mutual TLS and a
//! NetworkPolicy that admits only KEDA's namespace to it, and /metrics
//! scraped with Prometheus' token under a ClusterRole that grants exactly
//! `get /metrics`.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every document of every YAML file under deploy/ (any layout).
fn deploy_documents() -> Vec<Value> {
    fn walk(dir: &Path, out: &mut Vec<Value>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                for d in serde_norway::Deserializer::from_str(&text) {
                    let v: Value = serde::Deserialize::deserialize(d).unwrap();
                    if !v.is_null() {
                        out.push(v);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(ROOT).join("deploy"), &mut out);
    out
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str, name: &str) -> T {
    let d = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/ has no {kind} {name}"));
    serde_json::from_value(d.clone()).unwrap()
}

#[test]
fn the_keda_port_requires_client_certificates() {
    let docs = deploy_documents();
    let d: Deployment = one(&docs, "Deployment", "wva-metrics-server");
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.iter().any(|a| a.starts_with("--keda-port")));
    let ca = args
        .iter()
        .find_map(|a| a.strip_prefix("--keda-client-ca-file="))
        .expect("--keda-port comes with --keda-client-ca-file");
    assert!(
        !args.iter().any(|a| a.starts_with("--keda-insecure")),
        "{args:?}"
    );
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| ca.starts_with(&format!("{}/", m.mount_path)))
        .expect("the client CA file is mounted");
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert!(volume.secret.is_some(), "from a Secret");
}

#[test]
fn only_kedas_namespace_reaches_the_keda_port() {
    let docs = deploy_documents();
    let np: NetworkPolicy = one(&docs, "NetworkPolicy", "wva-metrics-server");
    let spec = np.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
        "wva-metrics-server"
    );
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    let rules = spec.ingress.unwrap();
    let port_of = |r: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        r.ports
            .iter()
            .flatten()
            .map(|p| format!("{:?}", p.port))
            .collect::<Vec<_>>()
    };
    let grpc: Vec<_> = rules
        .iter()
        .filter(|r| port_of(r).iter().any(|p| p.contains("9443")))
        .collect();
    assert_eq!(grpc.len(), 1, "one rule for the KEDA port");
    let from = grpc[0]
        .from
        .as_ref()
        .expect("the KEDA port is not open to all");
    assert_eq!(from.len(), 1);
    let ns = from[0].namespace_selector.as_ref().unwrap();
    assert_eq!(
        ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "keda"
    );
    assert!(from[0].ip_block.is_none());
    // The HTTPS port stays reachable (the aggregator, probes, Prometheus):
    // every request on it is authenticated and authorized.
    assert!(rules
        .iter()
        .any(|r| r.from.is_none() && port_of(r).iter().any(|p| p.contains("6443"))));
}

#[test]
fn prometheus_scrapes_metrics_with_its_token_and_a_role_for_exactly_that() {
    let docs = deploy_documents();
    let sm = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    let endpoint = sm["spec"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "/metrics")
        .unwrap();
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );

    let role: ClusterRole = one(&docs, "ClusterRole", "wva-metrics-server-metrics-reader");
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].non_resource_urls.as_deref(),
        Some(&["/metrics".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get"]);
    assert!(rules[0].resources.is_none() && rules[0].api_groups.is_none());
    let binding: ClusterRoleBinding = one(
        &docs,
        "ClusterRoleBinding",
        "wva-metrics-server-metrics-reader",
    );
    assert_eq!(binding.role_ref.name, "wva-metrics-server-metrics-reader");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(subject.kind, "ServiceAccount");
}

/// The KEDA port accepts only KEDA's operator, and the cert-manager example
/// keeps every signing key in KEDA's namespace: namespaced Issuers only, and
/// no Certificate (so no private key) in the server's namespace.
#[test]
fn keda_clients_are_named_and_the_example_ca_stays_in_kedas_namespace() {
    let docs = deploy_documents();
    let d: Deployment = one(&docs, "Deployment", "wva-metrics-server");
    let args = d.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.iter()
            .any(|a| a == "--keda-client-allowed-names=keda-operator"),
        "{args:?}"
    );
    let example = Path::new(ROOT).join("deploy/examples/keda-mtls-cert-manager.yaml");
    let text = std::fs::read_to_string(&example).unwrap();
    let example: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    assert!(example.iter().all(|d| d["kind"] != "ClusterIssuer"));
    for d in &example {
        assert_eq!(d["metadata"]["namespace"], "keda", "{d}");
        if d["kind"] == "Certificate" {
            assert_eq!(d["spec"]["issuerRef"]["kind"], "Issuer", "{d}");
        }
    }
    let client = example
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == "wva-keda-client")
        .unwrap();
    assert_eq!(client["spec"]["commonName"], "keda-operator");
}

/// By default the API port admits every pod (docs/security.md says why);
/// overlays/restricted-api-port admits only the control plane's CIDR and
/// Prometheus' namespace to it, and leaves the KEDA rule as it is.
#[test]
fn the_api_port_is_open_by_default_and_restricted_by_the_overlay() {
    let docs = deploy_documents();
    let base: NetworkPolicy = one(&docs, "NetworkPolicy", "wva-metrics-server");
    let base_rules = base.spec.unwrap().ingress.unwrap();
    let port = |r: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        r.ports.as_ref().unwrap()[0].port.clone()
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(port(&base_rules[0]), Some(IntOrString::Int(6443)));
    assert!(base_rules[0].from.is_none(), "open by default");

    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let out = std::process::Command::new(&kubectl)
        .arg("kustomize")
        .arg(Path::new(ROOT).join("overlays/restricted-api-port"))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {kubectl} kustomize ({e}): scripts/test installs kubectl")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rendered: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect();
    let restricted: NetworkPolicy = one(&rendered, "NetworkPolicy", "wva-metrics-server");
    let rules = restricted.spec.unwrap().ingress.unwrap();
    assert_eq!(port(&rules[0]), Some(IntOrString::Int(6443)));
    let from = rules[0].from.as_ref().expect("restricted");
    assert!(from
        .iter()
        .any(|p| p.ip_block.as_ref().is_some_and(|b| !b.cidr.is_empty())));
    assert!(from.iter().any(|p| p
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .is_some_and(
            |l| l.get("kubernetes.io/metadata.name").map(String::as_str) == Some("monitoring")
        )));
    assert_eq!(rules[1], base_rules[1], "the KEDA rule is unchanged");
}
