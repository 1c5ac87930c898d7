//! Issue 30, must-show 5: upstream WVA's
//! `internal/collector/source/pod_va_mapper_test.go` (9 cases, b08b1c7):
//! which VariantAutoscaling a pod's metrics belong to, through Pod ->
//! ReplicaSet -> Deployment -> the VariantAutoscaling whose
//! `scaleTargetRef` names it. Replayed against this server's resolution
//! (`inventory::resolve`) of the same objects written as an inventory file:
//! a pod of a variant is a replica of it in the snapshot, any other pod is
//! none. (This server also maps a pod by its `llm-d.ai/variant` label, which
//! upstream does not have; these cases do not set it.)

use std::collections::BTreeMap;
use std::path::Path;

use wva_metrics_server::inventory::file::parse_objects;
use wva_metrics_server::inventory::resolve;

fn va(name: &str, namespace: &str, deployment: &str) -> String {
    format!(
        "apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {deployment}}}\n  modelID: org/model\n"
    )
}

fn deployment(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{replicas: 1, selector: {{matchLabels: {{app: {name}}}}}, template: {{metadata: {{labels: {{app: {name}}}}}}}}}\nstatus: {{replicas: 1, readyReplicas: 1}}\n"
    )
}

fn replica_set(name: &str, namespace: &str, deployment: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: {deployment}, uid: u-{name}, controller: true}}]\n"
    )
}

/// A ready pod owned by ReplicaSet `rs` (none: a standalone pod).
fn pod(name: &str, namespace: &str, rs: Option<&str>) -> String {
    let owner = rs.map_or(String::new(), |rs| {
        format!("  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: {rs}, uid: u-{name}, controller: true}}]\n")
    });
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  annotations: {{prometheus.io/port: \"8000\"}}\n{owner}status: {{podIP: 10.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
    )
}

/// The variant each pod resolves to: "namespace/pod" -> variant name.
fn mapping(documents: &[String]) -> BTreeMap<String, String> {
    let yaml = documents.join("---\n");
    let objects = parse_objects(Path::new("pod-va-mapper.yaml"), &yaml).unwrap();
    let (snapshot, _problems) = resolve(&objects);
    snapshot
        .pods()
        .iter()
        .map(|p| (p.key.clone(), p.variant.to_string()))
        .collect()
}

fn found(m: &BTreeMap<String, String>, key: &str) -> Option<String> {
    m.get(key).cloned()
}

#[test]
fn finds_the_va_through_owner_references() {
    let m = mapping(&[
        deployment("llama-deploy", "default"),
        va("llama-va", "default", "llama-deploy"),
        replica_set("llama-deploy-abc123", "default", "llama-deploy"),
        pod(
            "llama-deploy-abc123-xyz",
            "default",
            Some("llama-deploy-abc123"),
        ),
    ]);
    assert_eq!(
        found(&m, "default/llama-deploy-abc123-xyz").as_deref(),
        Some("llama-va")
    );
    // "should return consistent results for repeated lookups": the same
    // objects resolve the same way again.
    let again = mapping(&[
        deployment("llama-deploy", "default"),
        va("llama-va", "default", "llama-deploy"),
        replica_set("llama-deploy-abc123", "default", "llama-deploy"),
        pod(
            "llama-deploy-abc123-xyz",
            "default",
            Some("llama-deploy-abc123"),
        ),
    ]);
    assert_eq!(m, again);
}

#[test]
fn unknown_pod_and_deployment_without_va_map_to_nothing() {
    // "no matching deployment": nothing at all.
    assert!(mapping(&[]).is_empty());
    // "deployment has no matching VA".
    let m = mapping(&[
        deployment("orphan-deploy", "default"),
        replica_set("orphan-deploy-abc123", "default", "orphan-deploy"),
        pod(
            "orphan-deploy-abc123-xyz",
            "default",
            Some("orphan-deploy-abc123"),
        ),
    ]);
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn a_va_in_another_namespace_does_not_match() {
    let m = mapping(&[
        deployment("llama-deploy", "default"),
        va("llama-va", "production", "llama-deploy"),
        replica_set("llama-deploy-abc123", "default", "llama-deploy"),
        pod(
            "llama-deploy-abc123-xyz",
            "default",
            Some("llama-deploy-abc123"),
        ),
    ]);
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn several_deployments_one_va() {
    let mut docs = Vec::new();
    for name in ["deploy-a", "deploy-b", "deploy-c"] {
        docs.push(deployment(name, "default"));
        docs.push(replica_set(&format!("{name}-rs"), "default", name));
    }
    docs.push(va("va-b", "default", "deploy-b"));
    docs.push(pod("deploy-b-pod-xyz", "default", Some("deploy-b-rs")));
    docs.push(pod("deploy-a-pod-xyz", "default", Some("deploy-a-rs")));
    let m = mapping(&docs);
    assert_eq!(
        found(&m, "default/deploy-b-pod-xyz").as_deref(),
        Some("va-b")
    );
    assert_eq!(found(&m, "default/deploy-a-pod-xyz"), None);
}

/// "should return empty when deployment no longer exists": upstream drops
/// the pod once the Deployment leaves its map. Here the pod still maps to
/// the VariantAutoscaling naming that Deployment while its ReplicaSet says
/// so, and the variant has no target state: its decision holds until the
/// Deployment is back (docs/wva-compatibility.md, "Upstream test tables").
#[test]
fn deployment_gone() {
    let with = [
        deployment("removable-deploy", "default"),
        va("removable-va", "default", "removable-deploy"),
        replica_set("removable-deploy-rs", "default", "removable-deploy"),
        pod(
            "removable-deploy-pod-xyz",
            "default",
            Some("removable-deploy-rs"),
        ),
    ];
    let key = "default/removable-deploy-pod-xyz";
    assert_eq!(found(&mapping(&with), key).as_deref(), Some("removable-va"));
    let without: Vec<String> = with[1..].to_vec();
    let objects = parse_objects(Path::new("gone.yaml"), &without.join("---\n")).unwrap();
    let (snapshot, _) = resolve(&objects);
    let variant = snapshot
        .variants_in("default")
        .find(|v| v.name == "removable-va")
        .expect("the variant stays");
    assert!(
        variant.target.is_none(),
        "no target state without the Deployment"
    );
}

#[test]
fn a_pod_without_a_replicaset_owner_maps_to_nothing() {
    let m = mapping(&[
        deployment("standalone-deploy", "default"),
        va("standalone-va", "default", "standalone-deploy"),
        pod("standalone-pod", "default", None),
    ]);
    assert!(m.is_empty(), "{m:?}");
}

#[test]
fn the_same_deployment_name_in_two_namespaces() {
    let m = mapping(&[
        deployment("shared-deploy", "namespace-a"),
        deployment("shared-deploy", "namespace-b"),
        va("va-a", "namespace-a", "shared-deploy"),
        va("va-b", "namespace-b", "shared-deploy"),
        replica_set("shared-deploy-rs-a", "namespace-a", "shared-deploy"),
        replica_set("shared-deploy-rs-b", "namespace-b", "shared-deploy"),
        pod(
            "shared-deploy-pod-a",
            "namespace-a",
            Some("shared-deploy-rs-a"),
        ),
        pod(
            "shared-deploy-pod-b",
            "namespace-b",
            Some("shared-deploy-rs-b"),
        ),
    ]);
    assert_eq!(
        found(&m, "namespace-a/shared-deploy-pod-a").as_deref(),
        Some("va-a")
    );
    assert_eq!(
        found(&m, "namespace-b/shared-deploy-pod-b").as_deref(),
        Some("va-b")
    );
}
