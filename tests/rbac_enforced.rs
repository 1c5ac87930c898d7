//! The shipped RBAC is exactly what kube mode uses (issue 28): the server
//! runs against the in-process API server with an authorizer that enforces
//! the rules deploy/ grants its service account (parsed from the YAML,
//! resourceNames and `metadata.name` field selectors included, plus the
//! built-in roles deploy/ binds), and every call it makes is allowed, while
//! calls outside the rules (ConfigMaps not by name, `update` or `get` on
//! status, nodes without the accelerator-inventory variant) are refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::apiserver::{ApiServer, RbacRequest, RbacRule};
use common::{eventually, Server};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SA_NAMESPACE: &str = "wva-system";
const SA_NAME: &str = "wva-metrics-server";
const WAIT: Duration = Duration::from_secs(60);

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The documents of a kustomization directory's own resources (deploy/ and
/// its components list only files).
fn kustomization_documents(dir: &Path) -> Vec<Value> {
    let k: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| documents(&dir.join(r.as_str().unwrap())))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules of the built-in roles deploy/ binds (as Kubernetes ships them,
/// reduced to what matters here), and discovery, which every
/// authenticated user has (system:discovery).
fn builtin_rules(kind: &str, name: &str) -> Option<Vec<Value>> {
    match (kind, name) {
        ("ClusterRole", "system:auth-delegator") => Some(vec![
            json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}),
            json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}),
        ]),
        ("Role", "extension-apiserver-authentication-reader") => Some(vec![json!({
            "apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": ["extension-apiserver-authentication"],
            "verbs": ["get", "list", "watch"]
        })]),
        _ => None,
    }
}

fn discovery() -> RbacRule {
    RbacRule {
        namespace: None,
        non_resource_urls: [
            "/api",
            "/api/*",
            "/apis",
            "/apis/*",
            "/version",
            "/version/",
        ]
        .map(str::to_owned)
        .to_vec(),
        verbs: vec!["get".into()],
        ..Default::default()
    }
}

/// Every rule `docs` grant the server's service account.
fn granted_rules(docs: &[Value]) -> Vec<RbacRule> {
    let role_rules = |kind: &str, name: &str, namespace: Option<&str>| -> Vec<Value> {
        if let Some(b) = builtin_rules(kind, name) {
            return b;
        }
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && (kind == "ClusterRole" || d["metadata"]["namespace"].as_str() == namespace)
            })
            .unwrap_or_else(|| panic!("{kind} {name} is bound but neither shipped nor built in"));
        role["rules"].as_array().cloned().unwrap_or_default()
    };
    let mut rules = vec![discovery()];
    for b in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let ours = b["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == SA_NAME && s["namespace"] == SA_NAMESPACE
        });
        if !ours {
            continue;
        }
        let binding_ns = (b["kind"] == "RoleBinding")
            .then(|| b["metadata"]["namespace"].as_str().unwrap().to_owned());
        let role_kind = b["roleRef"]["kind"].as_str().unwrap();
        let role_name = b["roleRef"]["name"].as_str().unwrap();
        for r in role_rules(role_kind, role_name, binding_ns.as_deref()) {
            rules.push(RbacRule {
                namespace: binding_ns.clone(),
                api_groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                resource_names: strings(&r["resourceNames"]),
                non_resource_urls: strings(&r["nonResourceURLs"]),
                verbs: strings(&r["verbs"]),
            });
        }
    }
    rules
}

fn deploy_rules() -> Vec<RbacRule> {
    granted_rules(&kustomization_documents(&Path::new(ROOT).join("deploy")))
}

fn deploy_with_accelerators_rules() -> Vec<RbacRule> {
    let mut docs = kustomization_documents(&Path::new(ROOT).join("deploy"));
    docs.extend(kustomization_documents(
        &Path::new(ROOT).join("deploy/components/accelerator-inventory"),
    ));
    granted_rules(&docs)
}

fn request(method: &str, path: &str, query: &[(&str, &str)]) -> RbacRequest {
    let q: BTreeMap<String, String> = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    common::apiserver::rbac_request(&method.parse().unwrap(), path, &q)
}

fn populate(api: &ApiServer) {
    api.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llama", "namespace": "llm"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "llama"}},
                 "template": {"metadata": {"labels": {"app": "llama"}}, "spec": {"containers": []}}},
        "status": {"replicas": 2, "readyReplicas": 2}
    }));
    api.apply(json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "llama", "namespace": "llm", "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"},
                 "modelID": "m", "minReplicas": 1, "maxReplicas": 10}
    }));
}

/// The pure authorizer against the shipped rules: the calls kube mode
/// makes are allowed, their near misses are not.
#[test]
fn the_shipped_rules_allow_what_the_server_calls_and_nothing_near_it() {
    let rules = deploy_rules();
    let allows = |r: &RbacRequest| rules.iter().any(|rule| rule.allows(r));
    let thresholds = [(
        "fieldSelector",
        "metadata.name=wva-saturation-scaling-config",
    )];
    let scale_to_zero = [(
        "fieldSelector",
        "metadata.name=wva-model-scale-to-zero-config",
    )];
    let auth_cm = [(
        "fieldSelector",
        "metadata.name=extension-apiserver-authentication",
    )];
    let cases: &[(&str, RbacRequest, bool)] = &[
        (
            "thresholds ConfigMaps by name, every namespace",
            request("GET", "/api/v1/configmaps", &thresholds),
            true,
        ),
        (
            "thresholds ConfigMaps watched by name",
            request(
                "GET",
                "/api/v1/configmaps",
                &[thresholds[0], ("watch", "true")],
            ),
            true,
        ),
        (
            "scale-to-zero ConfigMap in the server's namespace",
            request(
                "GET",
                "/api/v1/namespaces/wva-system/configmaps",
                &scale_to_zero,
            ),
            true,
        ),
        (
            "front-proxy CA ConfigMap",
            request("GET", "/api/v1/namespaces/kube-system/configmaps", &auth_cm),
            true,
        ),
        (
            "status by server-side apply",
            request(
                "PATCH",
                "/apis/llmd.ai/v1alpha1/namespaces/llm/variantautoscalings/llama/status",
                &[],
            ),
            true,
        ),
        (
            "Events",
            request("POST", "/apis/events.k8s.io/v1/namespaces/llm/events", &[]),
            true,
        ),
        (
            "SubjectAccessReview",
            request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                &[],
            ),
            true,
        ),
        (
            "Lease",
            request(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/wva-system/leases/wva-metrics-server",
                &[],
            ),
            true,
        ),
        (
            "every ConfigMap",
            request("GET", "/api/v1/configmaps", &[]),
            false,
        ),
        (
            "another ConfigMap by name",
            request(
                "GET",
                "/api/v1/configmaps",
                &[("fieldSelector", "metadata.name=kube-root-ca.crt")],
            ),
            false,
        ),
        // Namespace-local scale-to-zero ConfigMaps (upstream's namespace
        // rules), listed across namespaces by name.
        (
            "namespace-local scale-to-zero ConfigMap",
            request("GET", "/api/v1/namespaces/llm/configmaps", &scale_to_zero),
            true,
        ),
        (
            "scale-to-zero ConfigMaps in every namespace, by name",
            request("GET", "/api/v1/configmaps", &scale_to_zero),
            true,
        ),
        (
            "update on status",
            request(
                "PUT",
                "/apis/llmd.ai/v1alpha1/namespaces/llm/variantautoscalings/llama/status",
                &[],
            ),
            false,
        ),
        (
            "get on status",
            request(
                "GET",
                "/apis/llmd.ai/v1alpha1/namespaces/llm/variantautoscalings/llama/status",
                &[],
            ),
            false,
        ),
        ("nodes", request("GET", "/api/v1/nodes", &[]), false),
        ("secrets", request("GET", "/api/v1/secrets", &[]), false),
        (
            "Lease elsewhere",
            request(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/llm/leases/x",
                &[],
            ),
            false,
        ),
    ];
    for (what, r, want) in cases {
        assert_eq!(allows(r), *want, "{what}: {r:?}");
    }
    let with_nodes = deploy_with_accelerators_rules();
    let nodes = request("GET", "/api/v1/nodes", &[("watch", "1")]);
    assert!(
        with_nodes.iter().any(|rule| rule.allows(&nodes)),
        "the component grants nodes"
    );
}

/// kube mode under the shipped rules: every call allowed, and each kind of
/// call the server makes was made (lists and watches of every source, the
/// ConfigMaps by name, a status PATCH, Events, the Lease, a TokenReview and
/// a SubjectAccessReview).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_mode_runs_under_exactly_the_shipped_rbac() {
    let api = ApiServer::start().await;
    populate(&api);
    api.enforce_rbac(deploy_rules());
    api.add_token("reader-token", "reader");
    let server = Server::start_kube(&api, &[], &[]).await;
    eventually(WAIT, "the status written", || async {
        api.object("variantautoscalings", "llm", "llama")
            .is_some_and(|o| o["status"]["desiredOptimizedAlloc"]["numReplicas"].is_number())
            .then_some(())
    })
    .await;
    // A request with a token: a TokenReview and a SubjectAccessReview.
    let r = server
        .client
        .get(format!(
            "{}/apis/external.metrics.k8s.io/v1beta1",
            server.base
        ))
        .bearer_auth("reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let made = |verb: &str, resource: &str, name: Option<&str>| {
        api.rbac_allowed().iter().any(|r| {
            r.verb == verb
                && r.resource == resource
                && (name.is_none() || r.name.as_deref() == name)
        })
    };
    eventually(WAIT, "an Event sent", || async {
        made("create", "events", None).then_some(())
    })
    .await;
    let expected: &[(&str, &str, Option<&str>)] = &[
        ("list", "variantautoscalings", None),
        ("watch", "variantautoscalings", None),
        ("list", "horizontalpodautoscalers", None),
        ("list", "deployments", None),
        ("list", "statefulsets", None),
        ("list", "replicasets", None),
        ("list", "pods", None),
        ("list", "namespaces", None),
        ("list", "configmaps", Some("wva-saturation-scaling-config")),
        ("list", "configmaps", Some("wva-model-scale-to-zero-config")),
        (
            "list",
            "configmaps",
            Some("extension-apiserver-authentication"),
        ),
        ("patch", "variantautoscalings/status", Some("llama")),
        ("create", "events", None),
        ("create", "tokenreviews", None),
        ("create", "subjectaccessreviews", None),
    ];
    for (verb, resource, name) in expected {
        assert!(
            made(verb, resource, *name),
            "no allowed {verb} {resource} {name:?}: {:#?}",
            api.rbac_allowed()
        );
    }
    assert_eq!(api.rbac_refused(), [], "calls outside the shipped RBAC");
    let log = server.log();
    assert!(!log.contains("lack of permission"), "{log}");
}

/// `--accelerator-inventory` needs nodes: refused under the default rules
/// (and the server says which permission), allowed with the component's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_granted_only_by_the_accelerator_inventory_component() {
    let api = ApiServer::start().await;
    populate(&api);
    api.enforce_rbac(deploy_rules());
    let server = Server::launch_kube(&api, &["--accelerator-inventory"], &[]);
    eventually(WAIT, "the nodes list refused", || async {
        api.rbac_refused()
            .iter()
            .any(|r| r.resource == "nodes" && r.verb == "list")
            .then_some(())
    })
    .await;
    assert!(
        api.rbac_refused().iter().all(|r| r.resource == "nodes"),
        "{:?}",
        api.rbac_refused()
    );
    eventually(WAIT, "the missing permission logged", || async {
        server.log().contains("lack of permission").then_some(())
    })
    .await;
    drop(server);

    let api = ApiServer::start().await;
    populate(&api);
    api.enforce_rbac(deploy_with_accelerators_rules());
    // As the component turns it on: the environment, not the flag.
    let server = Server::start_kube(&api, &[], &[("WVA_ACCELERATOR_INVENTORY", "true")]).await;
    eventually(WAIT, "nodes listed", || async {
        api.rbac_allowed()
            .iter()
            .any(|r| r.resource == "nodes" && r.verb == "list")
            .then_some(())
    })
    .await;
    assert_eq!(api.rbac_refused(), [], "calls outside the shipped RBAC");
    drop(server);
}

/// The ConfigMaps granted by name are exactly the ones the code follows.
#[test]
fn configmap_names_follow_the_names_the_code_uses() {
    let granted: std::collections::BTreeSet<String> = deploy_rules()
        .iter()
        .filter(|r| r.resources.iter().any(|x| x == "configmaps"))
        .flat_map(|r| {
            assert!(
                !r.resource_names.is_empty(),
                "ConfigMaps only by name: {r:?}"
            );
            r.resource_names.clone()
        })
        .collect();
    let used: std::collections::BTreeSet<String> = [
        wva_metrics_server::saturation::CONFIGMAP_NAME,
        wva_metrics_server::saturation::scale_to_zero::CONFIGMAP_NAME,
        wva_metrics_server::saturation::slo::objective::CONFIGMAP_NAME,
        wva_metrics_server::server::auth::cluster::NAME,
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(granted, used);
}
