//! Which namespaces are managed and which thresholds apply in each, with
//! upstream WVA's semantics:
//!
//! - a namespace annotated `wva.llmd.ai/exclude: "true"` is not managed at
//!   all (its variants are not served);
//! - the thresholds ConfigMap (`wva-saturation-scaling-config`, or the
//!   name `SATURATION_CONFIG_MAP_NAME` gives) in another namespace replaces
//!   the global one (in the server's own namespace) for the models of that
//!   namespace when upstream's `configmap_reconciler.go` would read it:
//!   the namespace is `WATCH_NAMESPACE` (whatever its metadata), or it is
//!   not excluded and either holds a VariantAutoscaling or is labelled
//!   `wva.llmd.ai/config-enabled: "true"`.
//!
//! Pure: the kube source feeds it the ConfigMaps and namespace metadata its
//! reflectors hold; file mode feeds it the ConfigMaps of a directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::saturation::CONFIGMAP_NAME;
use crate::saturation::{LocatedThresholdError, ThresholdConfig, ThresholdError};

/// Namespace label that opts a namespace into namespace-local ConfigMaps.
pub const CONFIG_ENABLED_LABEL: &str = "wva.llmd.ai/config-enabled";
/// Namespace annotation that takes a namespace out of management.
pub const EXCLUDE_ANNOTATION: &str = "wva.llmd.ai/exclude";

/// What the metadata of the namespaces says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePolicy {
    excluded: BTreeSet<String>,
    config_enabled: BTreeSet<String>,
    /// Namespaces that hold a VariantAutoscaling (upstream tracks them).
    tracked: BTreeSet<String>,
    /// `WATCH_NAMESPACE`: its ConfigMaps are read whatever its metadata.
    watch_namespace: Option<String>,
}

fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| v.trim() == "true")
}

impl NamespacePolicy {
    /// From (name, labels, annotations) of every namespace.
    pub fn from_namespaces<'a>(
        namespaces: impl IntoIterator<
            Item = (
                &'a str,
                Option<&'a BTreeMap<String, String>>,
                Option<&'a BTreeMap<String, String>>,
            ),
        >,
    ) -> Self {
        let mut p = NamespacePolicy::default();
        for (name, labels, annotations) in namespaces {
            if is_true(annotations.and_then(|a| a.get(EXCLUDE_ANNOTATION))) {
                p.excluded.insert(name.to_owned());
            }
            if is_true(labels.and_then(|l| l.get(CONFIG_ENABLED_LABEL))) {
                p.config_enabled.insert(name.to_owned());
            }
        }
        p
    }

    /// With the namespaces that hold a VariantAutoscaling.
    pub fn with_tracked<'a>(mut self, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        self.tracked = namespaces.into_iter().map(str::to_owned).collect();
        self
    }

    /// With upstream's single-namespace mode (`WATCH_NAMESPACE`).
    pub fn with_watch_namespace(mut self, namespace: Option<&str>) -> Self {
        self.watch_namespace = namespace.map(str::to_owned);
        self
    }

    /// Whether variants of this namespace are served.
    pub fn is_managed(&self, namespace: &str) -> bool {
        !self.excluded.contains(namespace)
    }

    /// Whether a ConfigMap in this namespace may replace the global one:
    /// upstream's three rules, in its order (`WATCH_NAMESPACE` first, then
    /// exclusion, then a VariantAutoscaling in it, then the opt-in label).
    pub fn local_config_allowed(&self, namespace: &str) -> bool {
        if self.watch_namespace.as_deref() == Some(namespace) {
            return true;
        }
        self.is_managed(namespace)
            && (self.tracked.contains(namespace) || self.config_enabled.contains(namespace))
    }
}

/// A thresholds ConfigMap as the reconciler needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigMapData<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Changes with every version of the object.
    pub resource_version: &'a str,
    pub data: Option<&'a BTreeMap<String, String>>,
}

/// A ConfigMap version that was refused: the previous good configuration of
/// its namespace stays in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRejection {
    pub(crate) namespace: String,
    pub name: String,
    pub(crate) errors: Vec<ThresholdError>,
    /// True when the namespace has no good version yet, so the global
    /// configuration (or the built-in defaults) applies there.
    pub no_previous: bool,
}

/// The outcome of one reconciliation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reconciled {
    pub config: ThresholdConfig,
    /// Versions refused now (each version is reported once).
    pub rejected: Vec<ConfigRejection>,
    /// Namespaces whose local config changed (installed, replaced, dropped).
    pub changed: Vec<String>,
}

/// Keeps the last good configuration of every namespace across versions of
/// the ConfigMaps.
#[derive(Debug, Clone, Default)]
pub struct ThresholdsReconciler {
    own_namespace: String,
    /// The ConfigMap's name (`SATURATION_CONFIG_MAP_NAME`).
    name: String,
    last_good: HashMap<String, (String, ThresholdConfig)>,
    reported: HashMap<String, String>,
}

impl ThresholdsReconciler {
    pub fn new(own_namespace: &str) -> Self {
        Self::named(own_namespace, CONFIGMAP_NAME)
    }

    /// For ConfigMaps of this name (`SATURATION_CONFIG_MAP_NAME`).
    pub fn named(own_namespace: &str, name: &str) -> Self {
        ThresholdsReconciler {
            own_namespace: own_namespace.to_owned(),
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// The ConfigMaps' name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The configuration in force for these ConfigMaps and namespaces.
    pub fn reconcile(
        &mut self,
        configmaps: &[ConfigMapData<'_>],
        policy: &NamespacePolicy,
    ) -> Reconciled {
        let mut out = Reconciled::default();
        let mut present = BTreeSet::new();
        for cm in configmaps.iter().filter(|c| c.name == self.name) {
            let ns = cm.namespace;
            if ns != self.own_namespace && !policy.local_config_allowed(ns) {
                continue;
            }
            present.insert(ns.to_owned());
            if self
                .last_good
                .get(ns)
                .is_some_and(|(rv, _)| rv == cm.resource_version)
            {
                continue;
            }
            let empty = BTreeMap::new();
            let (config, errors) = ThresholdConfig::from_configmap_data(cm.data.unwrap_or(&empty));
            if errors.is_empty() {
                self.reported.remove(ns);
                self.last_good
                    .insert(ns.to_owned(), (cm.resource_version.to_owned(), config));
                out.changed.push(ns.to_owned());
            } else if self.reported.get(ns).map(String::as_str) != Some(cm.resource_version) {
                self.reported
                    .insert(ns.to_owned(), cm.resource_version.to_owned());
                out.rejected.push(ConfigRejection {
                    namespace: ns.to_owned(),
                    name: cm.name.to_owned(),
                    errors,
                    no_previous: !self.last_good.contains_key(ns),
                });
            }
        }
        // Deleted ConfigMaps, and namespaces that opted out or were excluded:
        // the global config (or, for the global one, the defaults) applies.
        let gone: Vec<String> = self
            .last_good
            .keys()
            .filter(|ns| !present.contains(*ns))
            .cloned()
            .collect();
        for ns in gone {
            self.last_good.remove(&ns);
            self.reported.remove(&ns);
            out.changed.push(ns);
        }
        let mut config = self
            .last_good
            .get(&self.own_namespace)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        let mut locals: Vec<(&String, &ThresholdConfig)> = self
            .last_good
            .iter()
            .filter(|(ns, _)| **ns != self.own_namespace)
            .map(|(ns, (_, c))| (ns, c))
            .collect();
        locals.sort_by(|a, b| a.0.cmp(b.0));
        for (ns, local) in locals {
            config = config.with_namespace_local(ns, local.clone());
        }
        out.changed.sort();
        out.changed.dedup();
        out.config = config;
        out
    }
}

/// A problem in one file of a thresholds directory.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DirectoryFileError {
    /// Index of the file in the input.
    pub(crate) file: usize,
    pub(crate) error: LocatedThresholdError,
}

/// File mode's counterpart of the cluster: the thresholds from a directory's
/// files (given as texts), each holding YAML documents. `ConfigMap`s named
/// `wva-saturation-scaling-config` and `Namespace`s are used, with the same
/// precedence as in a cluster: the ConfigMap in `own_namespace` (or without
/// a namespace) is the global one; one in a namespace whose `Namespace`
/// document carries the opt-in label (and not the exclude annotation)
/// replaces it there. Strict, as the single-file form: the first invalid
/// entry is an error with its line in its file.
#[cfg(test)]
pub(crate) fn thresholds_from_documents(
    files: &[&str],
    own_namespace: &str,
) -> Result<ThresholdConfig, DirectoryFileError> {
    thresholds_from_named_documents(files, own_namespace, CONFIGMAP_NAME, None)
}

/// [`thresholds_from_documents`] for ConfigMaps named `name`, with
/// `WATCH_NAMESPACE`; a namespace holding a VariantAutoscaling document
/// counts as tracked, as in a cluster.
pub(crate) fn thresholds_from_named_documents(
    files: &[&str],
    own_namespace: &str,
    name: &str,
    watch_namespace: Option<&str>,
) -> Result<ThresholdConfig, DirectoryFileError> {
    let at = |file: usize, line: usize, message: String| DirectoryFileError {
        file,
        error: LocatedThresholdError {
            line,
            error: ThresholdError::NotAMapping(message),
        },
    };
    // (name, labels, annotations) of the Namespace documents.
    type Meta = BTreeMap<String, String>;
    let mut namespaces: Vec<(String, Meta, Meta)> = Vec::new();
    // (file, first line of the document, namespace, parsed config)
    let mut configmaps: Vec<(usize, usize, String, ThresholdConfig)> = Vec::new();
    let mut tracked: BTreeSet<String> = BTreeSet::new();
    for (file, text) in files.iter().enumerate() {
        for (offset, doc) in documents(text) {
            let value: serde_norway::Value = serde_norway::from_str(doc).map_err(|e| {
                at(
                    file,
                    offset - 1 + e.location().map(|l| l.line()).unwrap_or(1),
                    e.to_string(),
                )
            })?;
            let meta = |field: &str| -> BTreeMap<String, String> {
                value
                    .get("metadata")
                    .and_then(|m| m.get(field))
                    .and_then(|v| serde_norway::from_value(v.clone()).ok())
                    .unwrap_or_default()
            };
            let text_of = |field: &str| {
                value
                    .get("metadata")
                    .and_then(|m| m.get(field))
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("Namespace") => {
                    namespaces.push((text_of("name"), meta("labels"), meta("annotations")))
                }
                Some("VariantAutoscaling") => {
                    tracked.insert(text_of("namespace"));
                }
                Some("ConfigMap") if text_of("name") == name => {
                    let config = ThresholdConfig::from_yaml_str_strict(doc).map_err(|e| {
                        DirectoryFileError {
                            file,
                            error: LocatedThresholdError {
                                line: offset - 1 + e.line,
                                error: e.error,
                            },
                        }
                    })?;
                    let ns = text_of("namespace");
                    let ns = if ns.is_empty() {
                        own_namespace.to_owned()
                    } else {
                        ns
                    };
                    configmaps.push((file, offset, ns, config));
                }
                _ => {}
            }
        }
    }
    let policy = NamespacePolicy::from_namespaces(
        namespaces
            .iter()
            .map(|(n, l, a)| (n.as_str(), Some(l), Some(a))),
    )
    .with_tracked(tracked.iter().map(String::as_str))
    .with_watch_namespace(watch_namespace);
    let mut global = ThresholdConfig::default();
    let mut locals = Vec::new();
    let mut seen = BTreeSet::new();
    for (file, offset, ns, config) in configmaps {
        if !seen.insert(ns.clone()) {
            return Err(at(
                file,
                offset,
                format!("a second {name} for namespace {ns:?}"),
            ));
        }
        if ns == own_namespace {
            global = config;
        } else if policy.local_config_allowed(&ns) {
            locals.push((ns, config));
        }
    }
    for (ns, config) in locals {
        global = global.with_namespace_local(&ns, config);
    }
    Ok(global)
}

/// The documents of a YAML stream with the line (1-based) each starts on.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let (mut start_byte, mut start_line) = (0usize, 1usize);
    let mut pos = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            docs.push((start_line, &text[start_byte..pos]));
            start_byte = pos + line.len();
            start_line = i + 2;
        }
        pos += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.retain(|(_, d)| !d.trim().is_empty());
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(default: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("default".to_owned(), default.to_owned())])
    }

    fn cm<'a>(ns: &'a str, rv: &'a str, d: &'a BTreeMap<String, String>) -> ConfigMapData<'a> {
        ConfigMapData {
            namespace: ns,
            name: CONFIGMAP_NAME,
            resource_version: rv,
            data: Some(d),
        }
    }

    fn policy(enabled: &[&str], excluded: &[&str]) -> NamespacePolicy {
        let on = BTreeMap::from([(CONFIG_ENABLED_LABEL.to_owned(), "true".to_owned())]);
        let ex = BTreeMap::from([(EXCLUDE_ANNOTATION.to_owned(), "true".to_owned())]);
        type Meta<'a> = Option<&'a BTreeMap<String, String>>;
        let mut all: Vec<(&str, Meta, Meta)> = Vec::new();
        for n in enabled {
            all.push((n, Some(&on), None));
        }
        for n in excluded {
            all.push((n, None, Some(&ex)));
        }
        NamespacePolicy::from_namespaces(all)
    }

    /// Upstream's three rules (configmap_reconciler.go
    /// shouldWatchNamespaceLocalConfigMap), in its order.
    #[test]
    fn local_configuration_follows_upstreams_three_rules() {
        // (case, labelled, excluded, has a VariantAutoscaling, WATCH_NAMESPACE, read)
        type Case<'a> = (&'a str, bool, bool, bool, Option<&'a str>, bool);
        let cases: &[Case] = &[
            ("nothing", false, false, false, None, false),
            ("a VariantAutoscaling", false, false, true, None, true),
            ("the label", true, false, false, None, true),
            ("both", true, false, true, None, true),
            (
                "excluded, with a VariantAutoscaling",
                false,
                true,
                true,
                None,
                false,
            ),
            ("excluded, labelled", true, true, false, None, false),
            ("WATCH_NAMESPACE", false, false, false, Some("team"), true),
            (
                "WATCH_NAMESPACE wins over exclusion",
                false,
                true,
                false,
                Some("team"),
                true,
            ),
            (
                "another WATCH_NAMESPACE",
                false,
                false,
                false,
                Some("other"),
                false,
            ),
        ];
        for (case, labelled, excluded, tracked, watch, read) in cases {
            let enabled: &[&str] = if *labelled { &["team"] } else { &[] };
            let excluded_ns: &[&str] = if *excluded { &["team"] } else { &[] };
            let tracked_ns: &[&str] = if *tracked { &["team"] } else { &[] };
            let p = policy(enabled, excluded_ns)
                .with_tracked(tracked_ns.iter().copied())
                .with_watch_namespace(*watch);
            assert_eq!(p.local_config_allowed("team"), *read, "{case}");
        }
    }

    #[test]
    fn precedence_table() {
        let global = data("kvCacheThreshold: 0.9");
        let local = data("kvCacheThreshold: 0.7");
        // (case, namespaces opted in, excluded, kv threshold in "team")
        let cases: &[(&str, &[&str], &[&str], f64)] = &[
            ("opted in: local wins", &["team"], &[], 0.7),
            ("not labelled: global applies", &[], &[], 0.9),
            (
                "labelled but excluded: global applies",
                &["team"],
                &["team"],
                0.9,
            ),
        ];
        for (name, enabled, excluded, kv) in cases {
            let mut r = ThresholdsReconciler::new("wva-system");
            let out = r.reconcile(
                &[cm("wva-system", "1", &global), cm("team", "2", &local)],
                &policy(enabled, excluded),
            );
            assert_eq!(
                out.config.for_model("m", "team").kv_cache_threshold,
                *kv,
                "{name}"
            );
            assert_eq!(out.config.for_model("m", "other").kv_cache_threshold, 0.9);
        }
        let p = policy(&[], &["gone"]);
        assert!(!p.is_managed("gone") && p.is_managed("team"));
    }

    #[test]
    fn a_bad_version_keeps_the_last_good_one_and_is_reported_once() {
        let mut r = ThresholdsReconciler::new("wva-system");
        let p = policy(&["team"], &[]);
        let good = data("kvCacheThreshold: 0.7\nenableLimiter: false");
        let bad = data("kvCacheThreshold: 0.7\nkvCacheTreshold: 0.6");
        let out = r.reconcile(&[cm("team", "1", &good)], &p);
        assert!(out.rejected.is_empty());
        assert_eq!(out.config.for_model("m", "team").kv_cache_threshold, 0.7);
        let out = r.reconcile(&[cm("team", "2", &bad)], &p);
        assert_eq!(out.rejected.len(), 1);
        assert!(!out.rejected[0].no_previous);
        assert_eq!(out.rejected[0].errors[0].field(), Some("kvCacheTreshold"));
        assert_eq!(out.config.for_model("m", "team").kv_cache_threshold, 0.7);
        // The same bad version again (another reflector event): not reported twice.
        let out = r.reconcile(&[cm("team", "2", &bad)], &p);
        assert!(out.rejected.is_empty());
        assert_eq!(out.config.for_model("m", "team").kv_cache_threshold, 0.7);
        // Deleted: the global config (defaults here) applies again.
        let out = r.reconcile(&[], &p);
        assert_eq!(out.changed, ["team"]);
        assert_eq!(out.config.for_model("m", "team").kv_cache_threshold, 0.80);
    }

    #[test]
    fn a_directory_of_configmaps_follows_the_cluster_precedence() {
        let global = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\n  namespace: wva-system\ndata:\n  default: |\n    kvCacheThreshold: 0.9\n";
        let local = |ns: &str, kv: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\n  namespace: {ns}\ndata:\n  default: |\n    kvCacheThreshold: {kv}\n")
        };
        let namespaces = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels: {wva.llmd.ai/config-enabled: \"true\"}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shut\n  labels: {wva.llmd.ai/config-enabled: \"true\"}\n  annotations: {wva.llmd.ai/exclude: \"true\"}\n";
        let locals = [
            local("team", "0.7"),
            local("other", "0.6"),
            local("shut", "0.5"),
        ]
        .join("---\n");
        let c = thresholds_from_documents(&[global, &locals, namespaces], "wva-system").unwrap();
        let kv = |ns: &str| c.for_model("m", ns).kv_cache_threshold;
        assert_eq!(
            (kv("team"), kv("other"), kv("shut"), kv("x")),
            (0.7, 0.9, 0.9, 0.9)
        );

        // An error names its file and the line in that file: the typo sits
        // on line 8 of the second document, which starts on line 10.
        let bad = format!(
            "{}---\n{}",
            local("team", "0.7"),
            local("other", "0.6").replace("kvCacheThreshold", "kvCacheTreshold")
        );
        let err = thresholds_from_documents(&[global, &bad], "wva-system").unwrap_err();
        assert_eq!((err.file, err.error.line), (1, 17), "{err:?}");
        assert_eq!(err.error.error.field(), Some("kvCacheTreshold"));
    }
}
