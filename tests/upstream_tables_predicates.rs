//! Issue 30, must-show 5: upstream WVA's
//! `internal/controller/predicates_test.go` (12 cases, b08b1c7): which
//! VariantAutoscalings a controller manages (namespace exclusion,
//! single-namespace mode, controller instance). Upstream decides it in a
//! controller-runtime event predicate; here the same decisions are
//! `NamespacePolicy::is_managed` (served or not) and
//! `ResolveOptions::owns` (controller instance), which the tests below call.
//! Its "nil config" case is a Go nil pointer with no counterpart.

use std::collections::BTreeMap;

use wva_metrics_server::inventory::namespace_config::{NamespacePolicy, EXCLUDE_ANNOTATION};
use wva_metrics_server::inventory::resolve::ResolveOptions;

const INSTANCE_LABEL: &str = "wva.llmd.ai/controller-instance";

fn annotations(exclude: Option<&str>) -> BTreeMap<String, String> {
    exclude
        .map(|v| BTreeMap::from([(EXCLUDE_ANNOTATION.to_owned(), v.to_owned())]))
        .unwrap_or_default()
}

fn policy(namespaces: &[(&str, Option<&str>)], watch: Option<&str>) -> NamespacePolicy {
    let metadata: Vec<(&str, BTreeMap<String, String>)> = namespaces
        .iter()
        .map(|(n, exclude)| (*n, annotations(*exclude)))
        .collect();
    NamespacePolicy::from_namespaces(metadata.iter().map(|(n, a)| (*n, None, Some(a))))
        .with_watch_namespace(watch)
}

/// Multi-namespace mode (3 cases): a VA is managed unless its namespace is
/// annotated `wva.llmd.ai/exclude: "true"`; any other value does not
/// exclude. And "should fail open when namespace fetch fails": a namespace
/// the server has no metadata for is managed.
#[test]
fn multi_namespace_exclusion() {
    let p = policy(
        &[
            ("plain", None),
            ("excluded", Some("true")),
            ("not-true", Some("false")),
        ],
        None,
    );
    assert!(p.is_managed("plain"));
    assert!(!p.is_managed("excluded"));
    assert!(p.is_managed("not-true"));
    assert!(p.is_managed("unknown-namespace"), "fail open");
}

/// Single-namespace mode (3 cases). Upstream manages the watched namespace
/// even when it is annotated excluded (the watch flag overrides the
/// annotation); here an excluded namespace is not served even when it is
/// WATCH_NAMESPACE, though its ConfigMaps are read
/// (docs/wva-compatibility.md, "Upstream test tables"). The watched
/// namespace without the annotation is managed; another excluded one is
/// not.
#[test]
fn single_namespace_mode() {
    let watched = "watched-namespace";
    let p = policy(
        &[(watched, Some("true")), ("other-excluded", Some("true"))],
        Some(watched),
    );
    assert!(!p.is_managed(watched), "differs from upstream on purpose");
    assert!(p.local_config_allowed(watched));
    assert!(!p.is_managed("other-excluded"));
    let plain = policy(&[(watched, None)], Some(watched));
    assert!(plain.is_managed(watched));
}

/// Controller instance (4 cases): with CONTROLLER_INSTANCE set, only VAs
/// labelled with the same instance are managed, in every namespace mode;
/// without a label they are not. Unset, every VA is.
#[test]
fn controller_instance() {
    let labels = |v: Option<&str>| -> BTreeMap<String, String> {
        v.map(|v| BTreeMap::from([(INSTANCE_LABEL.to_owned(), v.to_owned())]))
            .unwrap_or_default()
    };
    let me = ResolveOptions {
        controller_instance: Some("instance-a".to_owned()),
    };
    assert!(me.owns(&labels(Some("instance-a"))));
    assert!(!me.owns(&labels(Some("instance-b"))));
    assert!(!me.owns(&labels(None)));
    // Single-namespace mode: the same filter (ownership does not depend on
    // the namespace); unset, everyone's.
    let unset = ResolveOptions {
        controller_instance: None,
    };
    assert!(unset.owns(&labels(None)) && unset.owns(&labels(Some("instance-b"))));
}
