//! Latency objectives per model, where upstream WVA keeps them: its
//! service-class ConfigMap (`<release>-workload-variant-autoscaler-service-classes-config`),
//! one key per class (`premium.yaml`, ...), each
//! `{name, priority, data: [{model, slo-ttft, slo-tpot}]}` in milliseconds,
//! with `model: default/default` as the fallback entry. Parsing only (pure).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Name of the service-class ConfigMap upstream's controller reads in its
/// namespace (its Helm chart prefixes `<release>-workload-variant-autoscaler-`).
pub const CONFIGMAP_NAME: &str = "service-classes-config";
/// The entry that applies to models no class names.
pub(crate) const DEFAULT_MODEL: &str = "default/default";

/// A model's latency objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SloObjective {
    /// Time to first token (p95), seconds.
    pub(crate) ttft_seconds: f64,
    /// Time per output token, seconds (reported; the sizing is by TTFT).
    pub(crate) tpot_seconds: f64,
}

impl Default for SloObjective {
    /// The built-in objective when neither a service class nor a threshold
    /// key names one: TTFT 2 s, TPOT 100 ms.
    fn default() -> Self {
        SloObjective {
            ttft_seconds: 2.0,
            tpot_seconds: 0.1,
        }
    }
}

/// Why a service class could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ServiceClassError {
    #[error("service class {key:?}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassDoc {
    name: String,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    data: Vec<ClassEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassEntry {
    model: String,
    #[serde(rename = "slo-ttft")]
    slo_ttft: Option<f64>,
    #[serde(rename = "slo-tpot", alias = "slo-itl")]
    slo_tpot: Option<f64>,
}

/// The objectives of every model named by a service class.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServiceClasses {
    /// model -> (priority, class name, objective); the class with the
    /// lowest priority number (upstream: 1 is the highest) wins.
    by_model: BTreeMap<String, (i64, String, SloObjective)>,
}

impl ServiceClasses {
    /// Reads the ConfigMap's data (key -> YAML document).
    pub(crate) fn from_data<'a>(
        data: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ServiceClassError> {
        let mut out = ServiceClasses::default();
        for (key, text) in data {
            let doc: ClassDoc =
                serde_norway::from_str(text).map_err(|e| ServiceClassError::Invalid {
                    key: key.to_owned(),
                    message: e.to_string(),
                })?;
            for e in doc.data {
                let ms = |v: Option<f64>, field: &str| -> Result<Option<f64>, ServiceClassError> {
                    match v {
                        Some(v) if !(v.is_finite() && v > 0.0) => Err(ServiceClassError::Invalid {
                            key: key.to_owned(),
                            message: format!(
                                "model {:?}: {field} must be a positive number of milliseconds, got {v}",
                                e.model
                            ),
                        }),
                        v => Ok(v.map(|v| v / 1000.0)),
                    }
                };
                let builtin = SloObjective::default();
                let objective = SloObjective {
                    ttft_seconds: ms(e.slo_ttft, "slo-ttft")?.unwrap_or(builtin.ttft_seconds),
                    tpot_seconds: ms(e.slo_tpot, "slo-tpot")?.unwrap_or(builtin.tpot_seconds),
                };
                let better = out
                    .by_model
                    .get(&e.model)
                    .is_none_or(|(p, _, _)| doc.priority < *p);
                if better {
                    out.by_model
                        .insert(e.model.clone(), (doc.priority, doc.name.clone(), objective));
                }
            }
        }
        Ok(out)
    }

    /// A file: the whole ConfigMap (`kind: ConfigMap` with `data`), or its
    /// `data` mapping (class key -> YAML document).
    pub(crate) fn from_yaml_str(text: &str) -> Result<Self, ServiceClassError> {
        let invalid = |message: String| ServiceClassError::Invalid {
            key: "(file)".to_owned(),
            message,
        };
        let value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let data = match value.get("kind").and_then(|k| k.as_str()) {
            Some("ConfigMap") => value.get("data").cloned().unwrap_or_default(),
            Some(other) => return Err(invalid(format!("kind {other:?} is not ConfigMap"))),
            None => value,
        };
        let map = match data {
            serde_norway::Value::Mapping(m) => m,
            serde_norway::Value::Null => return Ok(ServiceClasses::default()),
            other => return Err(invalid(format!("not a mapping of class keys: {other:?}"))),
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in &map {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                return Err(invalid(format!(
                    "every key and value is a string (a class's YAML document), got {k:?}: {v:?}"
                )));
            };
            entries.push((k, v));
        }
        Self::from_data(entries)
    }

    /// The objective of `model_id`: its class's, else `default/default`'s.
    pub(crate) fn for_model(&self, model_id: &str) -> Option<SloObjective> {
        self.by_model
            .get(model_id)
            .or_else(|| self.by_model.get(DEFAULT_MODEL))
            .map(|(_, _, o)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREMIUM: &str = "name: Premium\npriority: 1\ndata:\n  - model: default/default\n    slo-tpot: 24\n    slo-ttft: 500\n  - model: meta/llama0-70b\n    slo-tpot: 80\n    slo-ttft: 500\n";
    const FREEMIUM: &str = "name: Freemium\npriority: 10\ndata:\n  - model: ibm/granite-13b\n    slo-tpot: 200\n    slo-ttft: 2000\n  - model: meta/llama0-70b\n    slo-tpot: 150\n    slo-ttft: 1500\n";

    #[test]
    fn the_highest_priority_class_wins_and_default_default_is_the_fallback() {
        let c = ServiceClasses::from_data([("premium.yaml", PREMIUM), ("freemium.yaml", FREEMIUM)])
            .unwrap();
        let o = |m: &str| c.for_model(m).map(|o| (o.ttft_seconds, o.tpot_seconds));
        assert_eq!(o("meta/llama0-70b"), Some((0.5, 0.08)));
        assert_eq!(o("ibm/granite-13b"), Some((2.0, 0.2)));
        assert_eq!(o("other/model"), Some((0.5, 0.024)));
        // Order of keys does not matter.
        let d = ServiceClasses::from_data([("freemium.yaml", FREEMIUM), ("premium.yaml", PREMIUM)])
            .unwrap();
        assert_eq!(c, d);
        let f = ServiceClasses::from_data([("freemium.yaml", FREEMIUM)]).unwrap();
        assert_eq!(f.for_model("other/model"), None);
    }

    #[test]
    fn files_hold_the_configmap_or_its_data() {
        let cm = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: service-classes-config\ndata:\n  premium.yaml: |\n{}",
            PREMIUM.lines().map(|l| format!("    {l}\n")).collect::<String>()
        );
        let a = ServiceClasses::from_yaml_str(&cm).unwrap();
        assert_eq!(
            a.for_model("meta/llama0-70b").map(|o| o.ttft_seconds),
            Some(0.5)
        );
        let data = format!(
            "premium.yaml: |\n{}",
            PREMIUM
                .lines()
                .map(|l| format!("  {l}\n"))
                .collect::<String>()
        );
        assert_eq!(ServiceClasses::from_yaml_str(&data).unwrap(), a);
        assert!(ServiceClasses::from_yaml_str("kind: Secret\n").is_err());
        assert!(ServiceClasses::from_yaml_str("premium.yaml: 5\n").is_err());
    }

    #[test]
    fn bad_classes_are_named() {
        let e = ServiceClasses::from_data([(
            "x.yaml",
            "name: X\ndata:\n  - model: m\n    slo-ttft: -5\n",
        )])
        .unwrap_err();
        assert!(
            e.to_string().contains("x.yaml") && e.to_string().contains("slo-ttft"),
            "{e}"
        );
        let e = ServiceClasses::from_data([(
            "y.yaml",
            "name: Y\ndata:\n  - model: m\n    slo-tft: 5\n",
        )])
        .unwrap_err();
        assert!(
            e.to_string().contains("y.yaml") && e.to_string().contains("slo-tft"),
            "{e}"
        );
    }
}
