//! Saturation thresholds and the `wva-saturation-scaling-config` ConfigMap
//! that sets them: a `default` entry plus per-model overrides.
//!
//! Entries are read key by key rather than through a derived deserializer:
//! every key upstream WVA's ConfigMaps carry is implemented here (the V1
//! thresholds, `analyzerName`, the V2 keys, `enableLimiter`), and a key
//! nobody defines is a typo that must be named with its line, so each key
//! gets its own check and message.

mod entry;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use entry::{locate, Entry, EntryProblem, Rejection};
pub(crate) use entry::{locate_entry, yaml_inline};

/// Name of the ConfigMap that holds the thresholds.
pub const CONFIGMAP_NAME: &str = "wva-saturation-scaling-config";

/// The keys that select and tune the token-based analysis (V2), and the
/// objective-sized one (`slo`).
const V2_KEYS: &[&str] = &[
    "analyzerName",
    "scaleUpThreshold",
    "scaleDownBoundary",
    "enableLimiter",
    "sloTtftMs",
    "sloTpotMs",
    "sloHeadroom",
];

/// Which analysis decides a model: upstream's `analyzerName: saturation`
/// selects the token-based one, `slo` this server's objective-sized one;
/// anything else (absent, empty, another name) keeps the percentage-based
/// V1, as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalyzerKind {
    #[default]
    Percentage,
    Tokens,
    Slo,
}

impl AnalyzerKind {
    pub(crate) fn from_config_name(name: &str) -> Self {
        match name {
            "saturation" => AnalyzerKind::Tokens,
            "slo" => AnalyzerKind::Slo,
            _ => AnalyzerKind::Percentage,
        }
    }

    /// The name served in the `analyzer` label and counted in `/metrics`.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            AnalyzerKind::Percentage => "saturation-v1",
            AnalyzerKind::Tokens => "saturation-v2",
            AnalyzerKind::Slo => "slo",
        }
    }
}

/// The largest `sloHeadroom`: replicas for ten times the rate sized for is
/// a typo, not a policy.
const MAX_SLO_HEADROOM: f64 = 9.0;

/// The threshold keys this server implements.
const THRESHOLD_KEYS: &[&str] = &[
    "kvCacheThreshold",
    "queueLengthThreshold",
    "kvSpareTrigger",
    "queueSpareTrigger",
];
/// Keys naming the model of an override (upstream spells it `model_id`).
const MODEL_ID_KEYS: &[&str] = &["model_id", "modelID", "modelId"];
const NAMESPACE_KEY: &str = "namespace";

/// The four numbers of the V1 analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaturationThresholds {
    /// A replica at or above this KV-cache usage is saturated.
    pub kv_cache_threshold: f64,
    /// A replica with this many waiting requests or more is saturated.
    pub queue_length_threshold: f64,
    /// Scale up when the mean spare KV capacity falls below this.
    pub kv_spare_trigger: f64,
    /// Scale up when the mean spare queue capacity falls below this.
    pub queue_spare_trigger: f64,
    /// `analyzerName`: which analysis decides the model.
    #[serde(default)]
    pub analyzer: AnalyzerKind,
    /// V2: required capacity = demand / scaleUpThreshold - anticipated supply.
    #[serde(default = "default_scale_up_threshold")]
    pub scale_up_threshold: f64,
    /// V2: spare capacity = supply - demand / scaleDownBoundary.
    #[serde(default = "default_scale_down_boundary")]
    pub scale_down_boundary: f64,
    /// V2: cap scale-ups by the accelerators free in the cluster.
    #[serde(default)]
    pub enable_limiter: bool,
    /// `slo`: the model's TTFT objective in milliseconds, over the service
    /// class's.
    #[serde(default)]
    pub slo_ttft_ms: Option<f64>,
    /// `slo`: the model's TPOT objective in milliseconds.
    #[serde(default)]
    pub slo_tpot_ms: Option<f64>,
    /// `slo`: spare capacity held against a rise no analysis sees coming,
    /// as a fraction of the rate sized for (0.5: replicas for 1.5 times
    /// it; 0, the default: none).
    #[serde(default)]
    pub slo_headroom: f64,
}

fn default_scale_up_threshold() -> f64 {
    0.85
}

fn default_scale_down_boundary() -> f64 {
    0.70
}

impl Default for SaturationThresholds {
    fn default() -> Self {
        SaturationThresholds {
            kv_cache_threshold: 0.80,
            queue_length_threshold: 5.0,
            kv_spare_trigger: 0.10,
            queue_spare_trigger: 3.0,
            analyzer: AnalyzerKind::Percentage,
            scale_up_threshold: default_scale_up_threshold(),
            scale_down_boundary: default_scale_down_boundary(),
            enable_limiter: false,
            slo_ttft_ms: None,
            slo_tpot_ms: None,
            slo_headroom: 0.0,
        }
    }
}

/// Why thresholds or an entry of the ConfigMap were rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    #[error("{field} must be a finite number, got {value}")]
    NotFinite { field: &'static str, value: f64 },
    #[error("thresholds must satisfy 0 <= kvSpareTrigger ({spare}) <= kvCacheThreshold ({threshold}) <= 1")]
    KvOrder { spare: f64, threshold: f64 },
    #[error("thresholds must satisfy 0 <= queueSpareTrigger ({spare}) <= queueLengthThreshold ({threshold})")]
    QueueOrder { spare: f64, threshold: f64 },
    #[error("entry {key:?}{}: {message}", field.as_ref().map(|f| format!(", key {f:?}")).unwrap_or_default())]
    Entry {
        key: String,
        /// The key inside the entry at fault, when one is.
        field: Option<String>,
        message: String,
    },
    #[error("thresholds must satisfy 0 < scaleDownBoundary ({boundary}) < scaleUpThreshold ({threshold}) <= 1")]
    V2Order { boundary: f64, threshold: f64 },
    #[error("{field} must be a positive number of milliseconds, got {value}")]
    NotPositive { field: &'static str, value: f64 },
    #[error("{field} must be a number from {min} to {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("saturation config is not a YAML mapping of entries: {0}")]
    NotAMapping(String),
}

impl ThresholdError {
    /// The key inside an entry this error is about, if any.
    #[cfg(test)]
    pub(crate) fn field(&self) -> Option<&str> {
        match self {
            ThresholdError::Entry { field, .. } => field.as_deref(),
            ThresholdError::NotFinite { field, .. } | ThresholdError::OutOfRange { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

/// A problem in a thresholds file, with the line of the file it is on
/// (1-based, counted from the top of the file, not from the entry).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct LocatedThresholdError {
    pub(crate) line: usize,
    pub(crate) error: ThresholdError,
}

impl SaturationThresholds {
    pub(crate) fn validate(&self) -> Result<(), ThresholdError> {
        for (field, value) in [
            ("kvCacheThreshold", self.kv_cache_threshold),
            ("queueLengthThreshold", self.queue_length_threshold),
            ("kvSpareTrigger", self.kv_spare_trigger),
            ("queueSpareTrigger", self.queue_spare_trigger),
            ("scaleUpThreshold", self.scale_up_threshold),
            ("scaleDownBoundary", self.scale_down_boundary),
        ] {
            if !value.is_finite() {
                return Err(ThresholdError::NotFinite { field, value });
            }
        }
        for (field, value) in [
            ("sloTtftMs", self.slo_ttft_ms),
            ("sloTpotMs", self.slo_tpot_ms),
        ] {
            if let Some(value) = value.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(ThresholdError::NotPositive { field, value });
            }
        }
        // NaN is in no range: refused here too.
        if !(0.0..=MAX_SLO_HEADROOM).contains(&self.slo_headroom) {
            return Err(ThresholdError::OutOfRange {
                field: "sloHeadroom",
                value: self.slo_headroom,
                min: 0.0,
                max: MAX_SLO_HEADROOM,
            });
        }
        let (spare, threshold) = (self.kv_spare_trigger, self.kv_cache_threshold);
        if !(0.0 <= spare && spare <= threshold && threshold <= 1.0) {
            return Err(ThresholdError::KvOrder { spare, threshold });
        }
        let (spare, threshold) = (self.queue_spare_trigger, self.queue_length_threshold);
        if !(0.0 <= spare && spare <= threshold) {
            return Err(ThresholdError::QueueOrder { spare, threshold });
        }
        let (boundary, threshold) = (self.scale_down_boundary, self.scale_up_threshold);
        if !(0.0 < boundary && boundary < threshold && threshold <= 1.0) {
            return Err(ThresholdError::V2Order {
                boundary,
                threshold,
            });
        }
        Ok(())
    }
}

/// The thresholds in force: a default and validated per-model overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThresholdConfig {
    default: SaturationThresholds,
    overrides: HashMap<(String, String), SaturationThresholds>,
    /// Namespace-local configs (upstream's `wva-saturation-scaling-config`
    /// in an opted-in namespace): each replaces this one, as a whole, for
    /// the models of its namespace.
    namespace_local: BTreeMap<String, ThresholdConfig>,
}

impl ThresholdConfig {
    /// Builds the config from ConfigMap data. Entries that do not parse or
    /// validate are skipped and returned as errors; they never stop the
    /// others from applying. Overrides are keyed `{modelID}#{namespace}` or
    /// name `model_id` and `namespace` in their body (ConfigMap keys cannot
    /// hold the `/` of most model IDs).
    pub fn from_configmap_data(data: &BTreeMap<String, String>) -> (Self, Vec<ThresholdError>) {
        let entries = data
            .iter()
            .map(|(k, v)| (k.clone(), Entry::parse_text(v)))
            .collect();
        let (config, rejected) = Self::from_entries(entries);
        (config, rejected.iter().map(Rejection::error).collect())
    }

    /// Parses a YAML file holding the same data: a mapping of entries (each
    /// a YAML string or a nested mapping), or a whole ConfigMap object.
    /// Lenient: rejected entries are returned beside the config.
    pub fn from_yaml_str(s: &str) -> Result<(Self, Vec<ThresholdError>), ThresholdError> {
        let (config, rejected) = Self::from_yaml_entries(s).map_err(|e| e.error)?;
        Ok((config, rejected.iter().map(Rejection::error).collect()))
    }

    /// Parses a thresholds file strictly, for start-up: the first entry that
    /// does not parse or validate is an error naming its line in the file
    /// and the key.
    pub fn from_yaml_str_strict(s: &str) -> Result<Self, LocatedThresholdError> {
        let (config, rejected) = Self::from_yaml_entries(s)?;
        match rejected.into_iter().min_by_key(|r| locate(s, r)) {
            None => Ok(config),
            Some(r) => Err(LocatedThresholdError {
                line: locate(s, &r),
                error: r.error(),
            }),
        }
    }

    fn from_yaml_entries(s: &str) -> Result<(Self, Vec<Rejection>), LocatedThresholdError> {
        let at = |line: usize, message: String| LocatedThresholdError {
            line,
            error: ThresholdError::NotAMapping(message),
        };
        let doc: serde_norway::Value = serde_norway::from_str(s).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            at(line, e.to_string())
        })?;
        let doc = match doc.get("kind").and_then(|k| k.as_str()) {
            Some("ConfigMap") => doc.get("data").cloned().unwrap_or_default(),
            _ => doc,
        };
        let map = match &doc {
            serde_norway::Value::Mapping(m) => m,
            serde_norway::Value::Null => return Ok((ThresholdConfig::default(), Vec::new())),
            _ => return Err(at(1, "the document is not a mapping".into())),
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key = k
                .as_str()
                .ok_or_else(|| at(1, format!("key {k:?} is not a string")))?
                .to_owned();
            let entry = match v {
                serde_norway::Value::String(text) => Entry::parse_text(text),
                other => Entry::parse_value(other),
            };
            entries.push((key, entry));
        }
        Ok(Self::from_entries(entries))
    }

    fn from_entries(entries: Vec<(String, Result<Entry, EntryProblem>)>) -> (Self, Vec<Rejection>) {
        let mut rejected = Vec::new();
        let reject = |key: &str, field: Option<String>, message: String| Rejection {
            key: key.to_owned(),
            problem: EntryProblem {
                field,
                message,
                line_in_entry: None,
            },
        };
        let mut default = SaturationThresholds::default();
        if let Some((key, parsed)) = entries.iter().find(|(k, _)| k == "default") {
            match parsed {
                Ok(e) if e.model_id.is_some() || e.namespace.is_some() => rejected.push(reject(
                    key,
                    Some(
                        if e.model_id.is_some() {
                            "model_id"
                        } else {
                            NAMESPACE_KEY
                        }
                        .to_owned(),
                    ),
                    "the default entry cannot name a model or namespace".into(),
                )),
                Ok(e) => {
                    let t = e.over(default);
                    match t.validate() {
                        Ok(()) => default = t,
                        Err(err) => rejected.push(reject(key, e.field_of(&err), err.to_string())),
                    }
                }
                Err(p) => rejected.push(Rejection {
                    key: key.clone(),
                    problem: p.clone(),
                }),
            }
        }
        let mut overrides = HashMap::new();
        for (key, parsed) in entries.iter().filter(|(k, _)| k != "default") {
            let e = match parsed {
                Ok(e) => e,
                Err(p) => {
                    rejected.push(Rejection {
                        key: key.clone(),
                        problem: p.clone(),
                    });
                    continue;
                }
            };
            let target = match (&e.model_id, &e.namespace) {
                (Some(m), Some(ns)) if !m.is_empty() && !ns.is_empty() => (m.clone(), ns.clone()),
                (None, None) => match key.rsplit_once('#') {
                    Some((m, ns)) if !m.is_empty() && !ns.is_empty() => {
                        (m.to_owned(), ns.to_owned())
                    }
                    _ => {
                        rejected.push(reject(
                            key,
                            None,
                            "an override is keyed {modelID}#{namespace} or names model_id and namespace".into(),
                        ));
                        continue;
                    }
                },
                (m, _) => {
                    rejected.push(reject(
                        key,
                        Some(
                            if m.is_none() {
                                "model_id"
                            } else {
                                NAMESPACE_KEY
                            }
                            .to_owned(),
                        ),
                        "an override needs both model_id and namespace".into(),
                    ));
                    continue;
                }
            };
            let t = e.over(default);
            match t.validate() {
                Ok(()) => {
                    overrides.insert(target, t);
                }
                Err(err) => rejected.push(reject(key, e.field_of(&err), err.to_string())),
            }
        }
        (
            ThresholdConfig {
                default,
                overrides,
                namespace_local: BTreeMap::new(),
            },
            rejected,
        )
    }

    /// The thresholds of one model in one namespace: the namespace-local
    /// config when the namespace has one, else this one.
    pub fn for_model(&self, model_id: &str, namespace: &str) -> SaturationThresholds {
        let config = if self.namespace_local.is_empty() {
            self
        } else {
            self.namespace_local.get(namespace).unwrap_or(self)
        };
        // The common case, without building a lookup key per request.
        if config.overrides.is_empty() {
            return config.default;
        }
        config
            .overrides
            .get(&(model_id.to_owned(), namespace.to_owned()))
            .copied()
            .unwrap_or(config.default)
    }

    pub fn default_thresholds(&self) -> SaturationThresholds {
        self.default
    }

    /// This config with `local` in force for the models of `namespace`
    /// (replacing this config there as a whole, as upstream does).
    pub fn with_namespace_local(mut self, namespace: &str, local: ThresholdConfig) -> Self {
        let mut local = local;
        local.namespace_local.clear();
        self.namespace_local.insert(namespace.to_owned(), local);
        self
    }

    /// This config without a namespace-local config for `namespace`.
    pub fn without_namespace_local(mut self, namespace: &str) -> Self {
        self.namespace_local.remove(namespace);
        self
    }

    /// Namespaces that have a namespace-local config in force.
    pub(crate) fn namespace_local_namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespace_local.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn validation_table() {
        let d = SaturationThresholds::default();
        let cases = [
            (d, true),
            (
                SaturationThresholds {
                    kv_cache_threshold: 1.2,
                    ..d
                },
                false,
            ),
            (
                SaturationThresholds {
                    kv_spare_trigger: 0.9,
                    ..d
                },
                false,
            ),
            (
                SaturationThresholds {
                    kv_spare_trigger: -0.1,
                    ..d
                },
                false,
            ),
            (
                SaturationThresholds {
                    queue_spare_trigger: 6.0,
                    ..d
                },
                false,
            ),
            (
                SaturationThresholds {
                    queue_length_threshold: f64::NAN,
                    ..d
                },
                false,
            ),
            (
                SaturationThresholds {
                    kv_spare_trigger: 0.0,
                    queue_spare_trigger: 0.0,
                    ..d
                },
                true,
            ),
        ];
        for (t, ok) in cases {
            assert_eq!(t.validate().is_ok(), ok, "{t:?}");
        }
    }

    #[test]
    fn overrides_merge_over_default_in_both_forms() {
        let (c, errors) = ThresholdConfig::from_configmap_data(&data(&[
            ("default", "kvCacheThreshold: 0.85\nqueueLengthThreshold: 6"),
            ("llama-8b#prod", "kvCacheThreshold: 0.7"),
            (
                "llama-override",
                "model_id: meta/llama-3.1-8b\nnamespace: llm\nqueueSpareTrigger: 2",
            ),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.default_thresholds().kv_cache_threshold, 0.85);
        let t = c.for_model("llama-8b", "prod");
        assert_eq!((t.kv_cache_threshold, t.queue_length_threshold), (0.7, 6.0));
        let t = c.for_model("meta/llama-3.1-8b", "llm");
        assert_eq!((t.kv_cache_threshold, t.queue_spare_trigger), (0.85, 2.0));
        assert_eq!(c.for_model("other", "prod"), c.default_thresholds());
    }

    #[test]
    fn invalid_entries_are_rejected_with_reasons_and_valid_ones_kept() {
        let (c, errors) = ThresholdConfig::from_configmap_data(&data(&[
            ("default", "kvCacheThreshold: 2"),
            ("a#ns", "kvSpareTrigger: 0.05"),
            ("b#ns", "kvCacheThreshold: oops"),
            ("c#ns", "colour: blue"),
            ("no-target", "kvCacheThreshold: 0.5"),
            ("half", "model_id: x\nkvCacheThreshold: 0.5"),
        ]));
        assert_eq!(c.default_thresholds(), SaturationThresholds::default());
        assert_eq!(c.for_model("a", "ns").kv_spare_trigger, 0.05);
        let keys: Vec<String> = errors
            .iter()
            .map(|e| match e {
                ThresholdError::Entry { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(keys, ["default", "b#ns", "c#ns", "half", "no-target"]);
        assert!(
            errors[0].to_string().contains("kvCacheThreshold"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn upstream_v2_keys_take_effect_per_entry() {
        let (c, errors) = ThresholdConfig::from_configmap_data(&data(&[
            (
                "default",
                "kvCacheThreshold: 0.95\nenableLimiter: false\nanalyzerName: \"\"",
            ),
            (
                "llama",
                "model_id: meta/llama\nnamespace: llm\nanalyzerName: saturation\nscaleUpThreshold: 0.9\nscaleDownBoundary: 0.6\nenableLimiter: true",
            ),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let d = c.default_thresholds();
        assert_eq!(d.kv_cache_threshold, 0.95);
        assert_eq!(
            (d.analyzer, d.enable_limiter),
            (AnalyzerKind::Percentage, false)
        );
        assert_eq!((d.scale_up_threshold, d.scale_down_boundary), (0.85, 0.70));
        let l = c.for_model("meta/llama", "llm");
        assert_eq!(l.kv_cache_threshold, 0.95);
        assert_eq!((l.analyzer, l.enable_limiter), (AnalyzerKind::Tokens, true));
        assert_eq!((l.scale_up_threshold, l.scale_down_boundary), (0.9, 0.6));
        // The slo analysis's headroom merges over the default like the rest.
        let (c, errors) = ThresholdConfig::from_configmap_data(&data(&[
            ("default", "analyzerName: slo\nsloHeadroom: 0.25"),
            ("m#ns", "sloHeadroom: 0"),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.default_thresholds().slo_headroom, 0.25);
        let m = c.for_model("m", "ns");
        assert_eq!((m.analyzer, m.slo_headroom), (AnalyzerKind::Slo, 0.0));
        assert_eq!(SaturationThresholds::default().slo_headroom, 0.0);
        // Any other analyzer name keeps V1, as upstream.
        for name in ["", "percentage", "Saturation", "saturation-v2"] {
            let (c, errors) = ThresholdConfig::from_configmap_data(&data(&[(
                "default",
                &format!("analyzerName: {name:?}"),
            )]));
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(
                c.default_thresholds().analyzer,
                AnalyzerKind::Percentage,
                "{name}"
            );
        }
        // Out of order V2 bounds, a non-boolean limiter and a headroom out
        // of 0..=9 (or not a number) are refused.
        for (text, field) in [
            (
                "scaleUpThreshold: 0.6\nscaleDownBoundary: 0.7",
                "scaleUpThreshold",
            ),
            ("enableLimiter: yes-please", "enableLimiter"),
            ("sloHeadroom: -0.1", "sloHeadroom"),
            ("sloHeadroom: 12", "sloHeadroom"),
            ("sloHeadroom: .nan", "sloHeadroom"),
            ("sloHeadroom: lots", "sloHeadroom"),
        ] {
            let (_, errors) = ThresholdConfig::from_configmap_data(&data(&[("default", text)]));
            assert_eq!(errors.len(), 1, "{text}");
            assert_eq!(errors[0].field(), Some(field), "{text}: {}", errors[0]);
        }
    }

    #[test]
    fn strict_file_errors_name_the_line_in_the_file_and_the_key() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\ndata:\n  default: |\n    kvCacheThreshold: 0.80\n    # a comment\n    kvCacheTreshold: 0.7\n";
        let cases: &[(&str, &str, usize, Option<&str>)] = &[
            // (name, text, line, key)
            (
                "typo in a ConfigMap block entry",
                cm,
                9,
                Some("kvCacheTreshold"),
            ),
            (
                "wrong type in a nested entry",
                "default:\n  queueLengthThreshold: 5\nm#ns:\n  kvSpareTrigger: lots\n",
                4,
                Some("kvSpareTrigger"),
            ),
            (
                "validation names the key the entry sets",
                "m#ns: |\n  queueLengthThreshold: 5\n  kvSpareTrigger: 0.9\n",
                3,
                Some("kvSpareTrigger"),
            ),
            (
                "syntax error inside a block entry",
                "default: |\n  kvCacheThreshold: 0.8\n  queueLengthThreshold: [5\n",
                4,
                None,
            ),
            (
                "override without a target",
                "default: {}\n\nlonely: |\n  kvCacheThreshold: 0.5\n",
                3,
                None,
            ),
            (
                "first error in file order wins",
                "z#ns: |\n  colour: blue\na#ns: |\n  kvCacheThreshold: 2\n",
                2,
                Some("colour"),
            ),
        ];
        for (name, text, line, key) in cases {
            let err = ThresholdConfig::from_yaml_str_strict(text).expect_err(name);
            assert_eq!(err.line, *line, "{name}: {err}");
            assert_eq!(err.error.field(), *key, "{name}: {err}");
        }
        let ok = ThresholdConfig::from_yaml_str_strict(
            "default: |\n  kvCacheThreshold: 0.9\n  enableLimiter: true\n",
        )
        .unwrap();
        assert_eq!(ok.default_thresholds().kv_cache_threshold, 0.9);
        let err = ThresholdConfig::from_yaml_str_strict("a: [1\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn namespace_local_config_replaces_the_global_one_for_its_namespace() {
        let (global, _) = ThresholdConfig::from_configmap_data(&data(&[
            ("default", "kvCacheThreshold: 0.85"),
            ("m#a", "kvCacheThreshold: 0.6"),
        ]));
        let (local, _) =
            ThresholdConfig::from_configmap_data(&data(&[("default", "queueLengthThreshold: 9")]));
        let c = global.clone().with_namespace_local("a", local);
        // The local one replaces the global one as a whole: neither its
        // default nor its override for namespace a applies there.
        let t = c.for_model("m", "a");
        assert_eq!(
            (t.kv_cache_threshold, t.queue_length_threshold),
            (0.80, 9.0)
        );
        assert_eq!(c.for_model("m", "b").kv_cache_threshold, 0.85);
        let c = c.without_namespace_local("a");
        assert_eq!(c.for_model("m", "a").kv_cache_threshold, 0.6);
    }

    #[test]
    fn file_forms() {
        let (c, e) = ThresholdConfig::from_yaml_str(
            "default: |\n  kvCacheThreshold: 0.75\nm#ns:\n  queueLengthThreshold: 8\n",
        )
        .unwrap();
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.default_thresholds().kv_cache_threshold, 0.75);
        assert_eq!(c.for_model("m", "ns").queue_length_threshold, 8.0);
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\ndata:\n  default: |\n    kvSpareTrigger: 0.2\n";
        let (c, e) = ThresholdConfig::from_yaml_str(cm).unwrap();
        assert!(e.is_empty());
        assert_eq!(c.default_thresholds().kv_spare_trigger, 0.2);
        assert!(ThresholdConfig::from_yaml_str("- a\n- b\n").is_err());
        assert!(ThresholdConfig::from_yaml_str("{{{{").is_err());
    }
}
