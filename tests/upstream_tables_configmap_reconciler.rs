//! Issue 30, must-show 5: upstream WVA's
//! `internal/controller/configmap_reconciler_test.go` (15 cases, b08b1c7)
//! replayed against this server's pure reconciler of the thresholds
//! ConfigMaps (`inventory::namespace_config`: `ThresholdsReconciler`,
//! `NamespacePolicy`) and its scale-to-zero configuration
//! (`ScaleToZeroConfig`). The kube source feeds the reconciler the
//! ConfigMaps and Namespace metadata its reflectors hold; here the test
//! feeds it the objects of each upstream case. Upstream's "reconcile" is
//! one call of `reconcile` with the ConfigMaps present after the case's
//! steps; its datastore's "tracked namespace" (a namespace holding a
//! VariantAutoscaling) is `NamespacePolicy::with_tracked`.

use std::collections::BTreeMap;
use std::time::Duration;

use wva_metrics_server::inventory::namespace_config::{
    ConfigMapData, NamespacePolicy, ThresholdsReconciler, CONFIG_ENABLED_LABEL, EXCLUDE_ANNOTATION,
};
use wva_metrics_server::saturation::ScaleToZeroConfig;

const SYSTEM: &str = "workload-variant-autoscaler-system";
const TEST_NS: &str = "test-namespace";
/// The ConfigMap's name as upstream's chart sets it
/// (`SATURATION_CONFIG_MAP_NAME`).
const NAME: &str = "workload-variant-autoscaler-wva-saturation-scaling-config";
const MODEL: &str = "some/model";

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn cm<'a>(namespace: &'a str, data: &'a BTreeMap<String, String>) -> ConfigMapData<'a> {
    ConfigMapData {
        namespace,
        name: NAME,
        resource_version: "1",
        data: Some(data),
    }
}

/// Namespace metadata: (name, labels, annotations).
type Meta = (
    &'static str,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

fn ns(name: &'static str, label: bool, excluded: bool) -> Meta {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    if label {
        labels.insert(CONFIG_ENABLED_LABEL.to_owned(), "true".to_owned());
    }
    if excluded {
        annotations.insert(EXCLUDE_ANNOTATION.to_owned(), "true".to_owned());
    }
    (name, labels, annotations)
}

fn policy(namespaces: &[Meta], tracked: &[&str], watch: Option<&str>) -> NamespacePolicy {
    NamespacePolicy::from_namespaces(namespaces.iter().map(|(n, l, a)| (*n, Some(l), Some(a))))
        .with_tracked(tracked.iter().copied())
        .with_watch_namespace(watch)
}

/// "Reconcile - Global ConfigMaps": the global thresholds ConfigMap
/// (kvCacheThreshold 0.75, queueLengthThreshold 5) is in force.
#[test]
fn global_saturation_configmap() {
    let d = data(&[(
        "default",
        "kvCacheThreshold: 0.75\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.10\nqueueSpareTrigger: 3",
    )]);
    let mut r = ThresholdsReconciler::named(SYSTEM, NAME);
    let out = r.reconcile(&[cm(SYSTEM, &d)], &policy(&[], &[], None));
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let t = out.config.default_thresholds();
    assert_eq!(
        (t.kv_cache_threshold, t.queue_length_threshold),
        (0.75, 5.0)
    );
    // The default name is not read when the chart names another.
    let mut default_name = ThresholdsReconciler::new(SYSTEM);
    let out = default_name.reconcile(&[cm(SYSTEM, &d)], &policy(&[], &[], None));
    assert_eq!(out.config.default_thresholds().kv_cache_threshold, 0.80);
}

/// "Reconcile - Global ConfigMaps": the global scale-to-zero ConfigMap, a
/// `default` entry and a `model1` entry (on, 10m).
#[test]
fn global_scale_to_zero_configmap() {
    let d = data(&[
        (
            "default",
            "enable_scale_to_zero: true\nretention_period: 5m",
        ),
        (
            "model1",
            "model_id: model1\nenable_scale_to_zero: true\nretention_period: 10m",
        ),
    ]);
    let (config, errors) = ScaleToZeroConfig::from_configmap_data(&d);
    assert!(errors.is_empty(), "{errors:?}");
    let m1 = config.for_model("model1", TEST_NS);
    assert_eq!((m1.enabled, m1.retention), (true, Duration::from_secs(600)));
    let other = config.for_model("other", TEST_NS);
    assert_eq!(
        (other.enabled, other.retention),
        (true, Duration::from_secs(300))
    );
}

const LOCAL: &str =
    "kvCacheThreshold: 0.60\nqueueLengthThreshold: 10\nkvSpareTrigger: 0.15\nqueueSpareTrigger: 5";

/// "Reconcile - Namespace-Local ConfigMaps": a tracked namespace's own
/// ConfigMap applies there; an untracked namespace's (kvCacheThreshold
/// 0.99) does not.
#[test]
fn namespace_local_configmaps_tracked_and_untracked() {
    let local = data(&[("default", LOCAL)]);
    let untracked = data(&[(
        "default",
        "kvCacheThreshold: 0.99\nqueueLengthThreshold: 99",
    )]);
    let namespaces = [
        ns(TEST_NS, false, false),
        ns("untracked-namespace", false, false),
    ];
    let mut r = ThresholdsReconciler::named(SYSTEM, NAME);
    let out = r.reconcile(
        &[cm(TEST_NS, &local), cm("untracked-namespace", &untracked)],
        &policy(&namespaces, &[TEST_NS], None),
    );
    let t = out.config.for_model(MODEL, TEST_NS);
    assert_eq!(
        (t.kv_cache_threshold, t.queue_length_threshold),
        (0.60, 10.0)
    );
    let u = out.config.for_model(MODEL, "untracked-namespace");
    assert_eq!(u.kv_cache_threshold, 0.80, "the global (built-in) value");
    assert_eq!(out.changed, [TEST_NS]);
}

/// "Reconcile - ConfigMap Deletion": the local ConfigMap deleted, the
/// global one applies again; a ConfigMap that does not exist is no error.
#[test]
fn configmap_deletion_and_absence() {
    let global = data(&[("default", "kvCacheThreshold: 0.75\nkvSpareTrigger: 0.10")]);
    let local = data(&[("default", LOCAL)]);
    let p = policy(&[ns(TEST_NS, false, false)], &[TEST_NS], None);
    let mut r = ThresholdsReconciler::named(SYSTEM, NAME);
    let out = r.reconcile(&[cm(SYSTEM, &global), cm(TEST_NS, &local)], &p);
    assert_eq!(
        out.config.for_model(MODEL, TEST_NS).kv_cache_threshold,
        0.60
    );
    let out = r.reconcile(&[cm(SYSTEM, &global)], &p);
    assert_eq!(
        out.config.for_model(MODEL, TEST_NS).kv_cache_threshold,
        0.75
    );
    assert_eq!(out.changed, [TEST_NS]);
    // No ConfigMap at all: no error, the built-in defaults.
    let mut empty = ThresholdsReconciler::named(SYSTEM, NAME);
    let out = empty.reconcile(&[], &p);
    assert!(out.rejected.is_empty());
    assert_eq!(out.config.default_thresholds().kv_cache_threshold, 0.80);
}

/// "Namespace Tracking" (4 cases): tracked -> read; opt-in label -> read;
/// excluded, even tracked -> not read; plain -> not read.
#[test]
fn namespace_tracking() {
    let p = policy(
        &[
            ns("labeled-ns", true, false),
            ns("excluded-ns", false, true),
            ns("plain-ns", false, false),
        ],
        &["tracked-ns", "excluded-ns"],
        None,
    );
    assert!(p.local_config_allowed("tracked-ns"));
    assert!(p.local_config_allowed("labeled-ns"));
    assert!(!p.local_config_allowed("excluded-ns"));
    assert!(!p.local_config_allowed("plain-ns"));
}

/// "Single-Namespace Mode" (4 cases): WATCH_NAMESPACE's ConfigMaps are read
/// despite the exclusion annotation and without the label; another
/// excluded namespace's are not; the watched, excluded namespace's
/// ConfigMap (kvCacheThreshold 0.85) is in force there.
#[test]
fn single_namespace_mode() {
    let watched = "watched-namespace";
    let excluded_watched = policy(
        &[
            ns(watched, false, true),
            ns("non-watched-excluded", false, true),
        ],
        &[],
        Some(watched),
    );
    let plain_watched = policy(&[ns(watched, false, false)], &[], Some(watched));
    assert!(excluded_watched.local_config_allowed(watched));
    assert!(plain_watched.local_config_allowed(watched));
    assert!(!excluded_watched.local_config_allowed("non-watched-excluded"));
    let d = data(&[(
        "default",
        "kvCacheThreshold: 0.85\nqueueLengthThreshold: 15",
    )]);
    let mut r = ThresholdsReconciler::named(SYSTEM, NAME);
    let out = r.reconcile(&[cm(watched, &d)], &excluded_watched);
    let t = out.config.for_model(MODEL, watched);
    assert_eq!(
        (t.kv_cache_threshold, t.queue_length_threshold),
        (0.85, 15.0)
    );
}

/// "Error Handling": invalid YAML is handled without an error. Upstream
/// skips the bad entry and applies the others; here the whole version is
/// refused and reported once, the last good configuration (here none: the
/// defaults) staying in force (docs/wva-compatibility.md, "Thresholds
/// ConfigMap").
#[test]
fn invalid_saturation_config() {
    let bad = data(&[("default", "invalid: yaml: content: [[[")]);
    let mut r = ThresholdsReconciler::named(SYSTEM, NAME);
    let p = policy(&[], &[], None);
    let out = r.reconcile(&[cm(SYSTEM, &bad)], &p);
    assert_eq!(out.rejected.len(), 1);
    assert!(out.rejected[0].no_previous);
    assert_eq!(out.rejected[0].name, NAME);
    assert_eq!(out.config.default_thresholds().kv_cache_threshold, 0.80);
    // The same version again is not reported again.
    assert!(r.reconcile(&[cm(SYSTEM, &bad)], &p).rejected.is_empty());
}
