//! Saturation thresholds and the `wva-saturation-scaling-config` ConfigMap
//! that sets them: a `default` entry plus per-model overrides.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// Name of the ConfigMap that holds the thresholds.
pub const CONFIGMAP_NAME: &str = "wva-saturation-scaling-config";

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
}

impl Default for SaturationThresholds {
    fn default() -> Self {
        SaturationThresholds {
            kv_cache_threshold: 0.80,
            queue_length_threshold: 5.0,
            kv_spare_trigger: 0.10,
            queue_spare_trigger: 3.0,
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
    #[error("entry {key:?}: {message}")]
    Entry { key: String, message: String },
    #[error("saturation config is not a YAML mapping of entries: {0}")]
    NotAMapping(String),
}

impl SaturationThresholds {
    pub fn validate(&self) -> Result<(), ThresholdError> {
        for (field, value) in [
            ("kvCacheThreshold", self.kv_cache_threshold),
            ("queueLengthThreshold", self.queue_length_threshold),
            ("kvSpareTrigger", self.kv_spare_trigger),
            ("queueSpareTrigger", self.queue_spare_trigger),
        ] {
            if !value.is_finite() {
                return Err(ThresholdError::NotFinite { field, value });
            }
        }
        let (spare, threshold) = (self.kv_spare_trigger, self.kv_cache_threshold);
        if !(0.0 <= spare && spare <= threshold && threshold <= 1.0) {
            return Err(ThresholdError::KvOrder { spare, threshold });
        }
        let (spare, threshold) = (self.queue_spare_trigger, self.queue_length_threshold);
        if !(0.0 <= spare && spare <= threshold) {
            return Err(ThresholdError::QueueOrder { spare, threshold });
        }
        Ok(())
    }
}

/// One entry of the ConfigMap: the fields it sets, and for overrides the
/// model and namespace it applies to.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    kv_cache_threshold: Option<f64>,
    queue_length_threshold: Option<f64>,
    kv_spare_trigger: Option<f64>,
    queue_spare_trigger: Option<f64>,
    #[serde(rename = "model_id", alias = "modelID", alias = "modelId")]
    model_id: Option<String>,
    namespace: Option<String>,
}

impl Entry {
    fn over(&self, base: SaturationThresholds) -> SaturationThresholds {
        SaturationThresholds {
            kv_cache_threshold: self.kv_cache_threshold.unwrap_or(base.kv_cache_threshold),
            queue_length_threshold: self
                .queue_length_threshold
                .unwrap_or(base.queue_length_threshold),
            kv_spare_trigger: self.kv_spare_trigger.unwrap_or(base.kv_spare_trigger),
            queue_spare_trigger: self.queue_spare_trigger.unwrap_or(base.queue_spare_trigger),
        }
    }
}

/// The thresholds in force: a default and validated per-model overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThresholdConfig {
    default: SaturationThresholds,
    overrides: HashMap<(String, String), SaturationThresholds>,
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
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_yaml::from_str::<Entry>(v).map_err(|e| e.to_string()),
                )
            })
            .collect();
        Self::from_entries(entries)
    }

    /// Parses a YAML file holding the same data: a mapping of entries (each
    /// a YAML string or a nested mapping), or a whole ConfigMap object.
    pub fn from_yaml_str(s: &str) -> Result<(Self, Vec<ThresholdError>), ThresholdError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(s).map_err(|e| ThresholdError::NotAMapping(e.to_string()))?;
        let doc = match doc.get("kind").and_then(|k| k.as_str()) {
            Some("ConfigMap") => doc.get("data").cloned().unwrap_or_default(),
            _ => doc,
        };
        let map = doc
            .as_mapping()
            .ok_or_else(|| ThresholdError::NotAMapping("the document is not a mapping".into()))?;
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key = k
                .as_str()
                .ok_or_else(|| ThresholdError::NotAMapping(format!("key {k:?} is not a string")))?
                .to_owned();
            let entry = match v {
                serde_yaml::Value::String(text) => serde_yaml::from_str::<Entry>(text),
                other => serde_yaml::from_value::<Entry>(other.clone()),
            }
            .map_err(|e| e.to_string());
            entries.push((key, entry));
        }
        Ok(Self::from_entries(entries))
    }

    fn from_entries(entries: Vec<(String, Result<Entry, String>)>) -> (Self, Vec<ThresholdError>) {
        let mut errors = Vec::new();
        let reject = |key: &str, message: String| ThresholdError::Entry {
            key: key.to_owned(),
            message,
        };
        let mut default = SaturationThresholds::default();
        if let Some((key, parsed)) = entries.iter().find(|(k, _)| k == "default") {
            match parsed {
                Ok(e) if e.model_id.is_some() || e.namespace.is_some() => errors.push(reject(
                    key,
                    "the default entry cannot name a model or namespace".into(),
                )),
                Ok(e) => {
                    let t = e.over(default);
                    match t.validate() {
                        Ok(()) => default = t,
                        Err(err) => errors.push(reject(key, err.to_string())),
                    }
                }
                Err(m) => errors.push(reject(key, m.clone())),
            }
        }
        let mut overrides = HashMap::new();
        for (key, parsed) in entries.iter().filter(|(k, _)| k != "default") {
            let e = match parsed {
                Ok(e) => e,
                Err(m) => {
                    errors.push(reject(key, m.clone()));
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
                        errors.push(reject(
                            key,
                            "an override is keyed {modelID}#{namespace} or names model_id and namespace".into(),
                        ));
                        continue;
                    }
                },
                _ => {
                    errors.push(reject(
                        key,
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
                Err(err) => errors.push(reject(key, err.to_string())),
            }
        }
        (ThresholdConfig { default, overrides }, errors)
    }

    /// The thresholds of one model in one namespace.
    pub fn for_model(&self, model_id: &str, namespace: &str) -> SaturationThresholds {
        // The common case, without building a lookup key per request.
        if self.overrides.is_empty() {
            return self.default;
        }
        self.overrides
            .get(&(model_id.to_owned(), namespace.to_owned()))
            .copied()
            .unwrap_or(self.default)
    }

    pub fn default_thresholds(&self) -> SaturationThresholds {
        self.default
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
