//! Scale to zero (pure): the `wva-model-scale-to-zero-config` ConfigMap in
//! upstream WVA's shape, its precedence, and the policy applied to a model's
//! targets after the saturation analysis.
//!
//! The ConfigMap has a `default` entry and per-model overrides, each a YAML
//! mapping (or YAML text) with `model_id` (overrides only), optional
//! `namespace`, `enable_scale_to_zero` (boolean) and `retention_period`
//! (a Go duration such as `"10m"`). Per field: the override (with a
//! matching `namespace`, then one without), then `default`, then (for
//! `enable_scale_to_zero`) the `WVA_SCALE_TO_ZERO` environment variable,
//! then off; the retention period falls back to 10 minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::targets::{TargetReason, VariantState, VariantTarget};
use super::thresholds::{locate_entry, yaml_inline};

/// Name of the ConfigMap (in the server's namespace).
pub const CONFIGMAP_NAME: &str = "wva-model-scale-to-zero-config";
/// The environment variable that turns scale to zero on for models no
/// entry decides for.
pub(crate) const ENV_VAR: &str = "WVA_SCALE_TO_ZERO";
/// Retention period when no entry sets one (upstream's default).
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(600);
const DEFAULT_KEY: &str = "default";

/// One entry: each field unset inherits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ScaleToZeroEntry {
    pub(crate) enable: Option<bool>,
    pub(crate) retention: Option<Duration>,
}

/// What applies to one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelScaleToZero {
    pub enabled: bool,
    pub retention: Duration,
}

/// Why the scale-to-zero configuration (or an entry of it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleToZeroError {
    #[error("entry {key:?}{}: {message}", field.as_ref().map(|f| format!(", key {f:?}")).unwrap_or_default())]
    Entry {
        key: String,
        field: Option<String>,
        message: String,
        line_in_entry: Option<usize>,
    },
    #[error("scale-to-zero config is not a YAML mapping of entries: {0}")]
    NotAMapping(String),
    #[error("{ENV_VAR}={0:?} is not a boolean (true or false)")]
    Env(String),
}

/// A problem in a scale-to-zero file with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub(crate) struct LocatedScaleToZeroError {
    pub(crate) line: usize,
    pub(crate) error: ScaleToZeroError,
}

/// The configuration in force.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScaleToZeroConfig {
    default: ScaleToZeroEntry,
    /// (model_id, namespace) -> entry; namespace None matches every namespace.
    overrides: BTreeMap<(String, Option<String>), ScaleToZeroEntry>,
    /// `WVA_SCALE_TO_ZERO`.
    env_enabled: bool,
    /// Namespace-local configurations (upstream's ConfigMap of this name in
    /// a namespace it reads local configuration from): each replaces this
    /// one for its namespace, as upstream's does.
    namespace_local: BTreeMap<String, std::sync::Arc<ScaleToZeroConfig>>,
}

/// Reads `WVA_SCALE_TO_ZERO`: unset or empty is off; `true`/`false` in any
/// case; anything else is an error (never a silent "off").
pub(crate) fn env_enabled(value: Option<&str>) -> Result<bool, ScaleToZeroError> {
    match value.map(str::trim) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ScaleToZeroError::Env(v.to_owned())),
    }
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal
/// numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, such as
/// `"10m"`, `"1h30m"` or `"1.5h"`. A retention period must be positive.
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("retention period cannot be empty".into());
    }
    if s.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} has a number without a unit (ns, us, ms, s, m, h)"))?;
        if n == 0 {
            return Err(format!(
                "{text:?} is not a duration like \"10m\" or \"1h30m\""
            ));
        }
        let number: f64 = rest[..n]
            .parse()
            .map_err(|_| format!("{text:?}: {:?} is not a number", &rest[..n]))?;
        rest = &rest[n..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("{text:?} is too long"));
    }
    if total <= 0.0 {
        return Err(format!("retention period must be positive, got {text:?}"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A parsed entry with its target.
#[derive(Debug, Default)]
struct Parsed {
    model_id: Option<String>,
    namespace: Option<String>,
    entry: ScaleToZeroEntry,
}

fn entry_error(key: &str, field: Option<&str>, message: String) -> ScaleToZeroError {
    ScaleToZeroError::Entry {
        key: key.to_owned(),
        field: field.map(str::to_owned),
        message,
        line_in_entry: None,
    }
}

fn parse_value(key: &str, value: &serde_norway::Value) -> Result<Parsed, ScaleToZeroError> {
    let map = match value {
        serde_norway::Value::Null => return Ok(Parsed::default()),
        serde_norway::Value::Mapping(m) => m,
        other => {
            return Err(entry_error(
                key,
                None,
                format!(
                    "an entry is a mapping of model_id, namespace, enable_scale_to_zero and retention_period, got {}",
                    yaml_inline(other)
                ),
            ))
        }
    };
    let mut p = Parsed::default();
    for (k, v) in map {
        let Some(field) = k.as_str() else {
            return Err(entry_error(
                key,
                None,
                format!("key {} is not a string", yaml_inline(k)),
            ));
        };
        let text = || match v {
            serde_norway::Value::String(s) => Ok(s.clone()),
            other => Err(entry_error(
                key,
                Some(field),
                format!("must be a string, got {}", yaml_inline(other)),
            )),
        };
        match field {
            "model_id" => p.model_id = Some(text()?),
            "namespace" => p.namespace = Some(text()?).filter(|n| !n.is_empty()),
            "enable_scale_to_zero" => match v {
                serde_norway::Value::Bool(b) => p.entry.enable = Some(*b),
                serde_norway::Value::Null => {}
                other => {
                    return Err(entry_error(
                        key,
                        Some(field),
                        format!("must be true or false, got {}", yaml_inline(other)),
                    ))
                }
            },
            "retention_period" => {
                if !v.is_null() {
                    let d = parse_go_duration(&text()?)
                        .map_err(|m| entry_error(key, Some(field), m))?;
                    p.entry.retention = Some(d);
                }
            }
            other => return Err(entry_error(
                key,
                Some(other),
                "unknown key (known: model_id, namespace, enable_scale_to_zero, retention_period)"
                    .into(),
            )),
        }
    }
    Ok(p)
}

fn parse_text(key: &str, text: &str) -> Result<Parsed, ScaleToZeroError> {
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| ScaleToZeroError::Entry {
            key: key.to_owned(),
            field: None,
            message: e.to_string(),
            line_in_entry: e.location().map(|l| l.line()),
        })?;
    parse_value(key, &value)
}

impl ScaleToZeroConfig {
    /// This config with `WVA_SCALE_TO_ZERO`'s value as the fallback.
    pub(crate) fn with_env_enabled(mut self, enabled: bool) -> Self {
        self.env_enabled = enabled;
        self
    }

    pub fn env_enabled(&self) -> bool {
        self.env_enabled
    }

    /// This configuration with these namespace-local ones (replacing any before).
    pub fn with_namespace_locals(mut self, locals: BTreeMap<String, ScaleToZeroConfig>) -> Self {
        self.namespace_local = locals
            .into_iter()
            .map(|(ns, c)| (ns, std::sync::Arc::new(c)))
            .collect();
        self
    }

    /// This configuration with the namespace-local ones of `other` (a new
    /// global ConfigMap keeps the local ones in force).
    pub(crate) fn with_namespace_locals_of(mut self, other: &ScaleToZeroConfig) -> Self {
        self.namespace_local = other.namespace_local.clone();
        self
    }

    /// The namespaces with a local configuration.
    pub(crate) fn namespace_local_namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespace_local.keys().map(String::as_str)
    }

    /// What applies to `model_id` in `namespace`: its namespace's local
    /// configuration when there is one (`WVA_SCALE_TO_ZERO` still the
    /// fallback), else this one.
    pub fn for_model(&self, model_id: &str, namespace: &str) -> ModelScaleToZero {
        match self.namespace_local.get(namespace) {
            Some(local) => local.own_for_model(model_id, namespace, self.env_enabled),
            None => self.own_for_model(model_id, namespace, self.env_enabled),
        }
    }

    fn own_for_model(
        &self,
        model_id: &str,
        namespace: &str,
        env_enabled: bool,
    ) -> ModelScaleToZero {
        let exact = self
            .overrides
            .get(&(model_id.to_owned(), Some(namespace.to_owned())));
        let any = self.overrides.get(&(model_id.to_owned(), None));
        let pick = |f: fn(&ScaleToZeroEntry) -> Option<bool>| {
            exact
                .and_then(f)
                .or_else(|| any.and_then(f))
                .or_else(|| f(&self.default))
        };
        let enabled = pick(|e| e.enable).unwrap_or(env_enabled);
        let retention = exact
            .and_then(|e| e.retention)
            .or_else(|| any.and_then(|e| e.retention))
            .or(self.default.retention)
            .unwrap_or(DEFAULT_RETENTION);
        ModelScaleToZero { enabled, retention }
    }

    /// Whether any model could have scale to zero on (then the collectors
    /// fetch request counts).
    #[cfg(test)]
    pub(crate) fn any_enabled(&self) -> bool {
        self.env_enabled
            || self.default.enable == Some(true)
            || self.overrides.values().any(|e| e.enable == Some(true))
            || self.namespace_local.values().any(|l| l.any_enabled())
    }

    /// From ConfigMap data: entries that do not parse are skipped and
    /// returned as errors (the others apply).
    pub fn from_configmap_data(data: &BTreeMap<String, String>) -> (Self, Vec<ScaleToZeroError>) {
        let entries = data
            .iter()
            .map(|(k, v)| (k.clone(), parse_text(k, v)))
            .collect();
        Self::from_entries(entries)
    }

    /// From a file holding the ConfigMap's data (entries as YAML text or
    /// nested mappings) or the whole ConfigMap. Strict: the first problem is
    /// an error with its line in the file.
    pub(crate) fn from_yaml_str_strict(s: &str) -> Result<Self, LocatedScaleToZeroError> {
        let at = |line: usize, message: String| LocatedScaleToZeroError {
            line,
            error: ScaleToZeroError::NotAMapping(message),
        };
        let doc: serde_norway::Value = serde_norway::from_str(s)
            .map_err(|e| at(e.location().map(|l| l.line()).unwrap_or(1), e.to_string()))?;
        let doc = match doc.get("kind").and_then(|k| k.as_str()) {
            Some("ConfigMap") => doc.get("data").cloned().unwrap_or_default(),
            _ => doc,
        };
        let map = match &doc {
            serde_norway::Value::Mapping(m) => m.clone(),
            serde_norway::Value::Null => return Ok(ScaleToZeroConfig::default()),
            _ => return Err(at(1, "the document is not a mapping".into())),
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in &map {
            let key = k
                .as_str()
                .ok_or_else(|| at(1, format!("key {} is not a string", yaml_inline(k))))?
                .to_owned();
            let parsed = match v {
                serde_norway::Value::String(text) => parse_text(&key, text),
                other => parse_value(&key, other),
            };
            entries.push((key, parsed));
        }
        let (config, errors) = Self::from_entries(entries);
        let locate = |e: &ScaleToZeroError| match e {
            ScaleToZeroError::Entry {
                key,
                field,
                line_in_entry,
                ..
            } => locate_entry(s, key, field.as_deref(), *line_in_entry),
            _ => 1,
        };
        match errors.into_iter().min_by_key(|e| locate(e)) {
            None => Ok(config),
            Some(error) => Err(LocatedScaleToZeroError {
                line: locate(&error),
                error,
            }),
        }
    }

    fn from_entries(
        entries: Vec<(String, Result<Parsed, ScaleToZeroError>)>,
    ) -> (Self, Vec<ScaleToZeroError>) {
        let mut config = ScaleToZeroConfig::default();
        let mut errors = Vec::new();
        let mut owner: BTreeMap<(String, Option<String>), String> = BTreeMap::new();
        // Sorted by key, as upstream processes them: of two entries naming
        // the same model, the first key is used and the second refused.
        let mut entries = entries;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, parsed) in entries {
            let p = match parsed {
                Ok(p) => p,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if key == DEFAULT_KEY {
                if p.model_id.is_some() || p.namespace.is_some() {
                    let field = if p.model_id.is_some() {
                        "model_id"
                    } else {
                        "namespace"
                    };
                    errors.push(entry_error(
                        &key,
                        Some(field),
                        "the default entry cannot name a model or namespace".into(),
                    ));
                    continue;
                }
                config.default = p.entry;
                continue;
            }
            let Some(model_id) = p.model_id.filter(|m| !m.trim().is_empty()) else {
                errors.push(entry_error(
                    &key,
                    None,
                    "an override names its model with model_id".into(),
                ));
                continue;
            };
            let target = (model_id, p.namespace);
            if let Some(first) = owner.get(&target) {
                errors.push(entry_error(
                    &key,
                    Some("model_id"),
                    format!(
                        "model {:?}{} is already configured by entry {first:?}",
                        target.0,
                        target
                            .1
                            .as_ref()
                            .map(|n| format!(" in namespace {n:?}"))
                            .unwrap_or_default()
                    ),
                ));
                continue;
            }
            owner.insert(target.clone(), key);
            config.overrides.insert(target, p.entry);
        }
        (config, errors)
    }
}

/// What the policy knows of one model at decision time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelActivity {
    pub config: ModelScaleToZero,
    /// Ready replicas over all variants.
    pub ready: u32,
    /// Requests completed over the retention period plus requests in flight
    /// and waiting, over the model's ready replicas; None when a ready
    /// replica's counter history does not cover the retention period yet.
    pub requests: Option<f64>,
    /// Requests queued for the model in the endpoint picker's flow control
    /// (None: not known).
    pub scheduler_queue: Option<f64>,
}

/// What the policy did to a model's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroAction {
    /// Targets unchanged.
    None,
    /// Idle for the retention period: 0 on every variant.
    ScaledToZero,
    /// Idle, but a variant's minReplicas is above 0: every variant at its min.
    HeldAtMin,
    /// No ready replica and requests queued: 1 on the cheapest variant.
    FromZero,
    /// Scale to zero off, replicas running and every target at 0: 1 on the
    /// cheapest variant (upstream's minimum with scale to zero disabled).
    KeptOne,
}

impl ZeroAction {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            ZeroAction::None => "none",
            ZeroAction::ScaledToZero => "scaled_to_zero",
            ZeroAction::HeldAtMin => "idle_at_min",
            ZeroAction::FromZero => "scale_from_zero",
            ZeroAction::KeptOne => "kept_one",
        }
    }
}

/// Whether the model counts as idle: scale to zero on, every ready
/// replica's history covers the retention period with no request completed,
/// running or waiting, and nothing queued in the endpoint picker.
pub fn is_idle(a: &ModelActivity) -> bool {
    a.config.enabled
        && a.ready > 0
        && a.requests == Some(0.0)
        && a.scheduler_queue.is_none_or(|q| q <= 0.0)
}

/// The cheapest variant that may run a replica (cost, then name).
fn cheapest(variants: &[VariantState]) -> Option<usize> {
    variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.max_replicas >= 1)
        .min_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)))
        .map(|(i, _)| i)
}

/// Applies scale to zero and scale from zero to the analysis' targets (in
/// the order of `variants`).
pub fn apply(
    activity: &ModelActivity,
    variants: &[VariantState],
    targets: &mut [VariantTarget],
) -> ZeroAction {
    let queued = activity.scheduler_queue.is_some_and(|q| q > 0.0);
    let total: u32 = targets.iter().map(|t| t.desired).sum();
    if activity.ready == 0 {
        // At zero, only the endpoint picker's queue brings a replica back
        // (whatever the configuration: a model at zero has no replica to
        // report demand). Without one the model stays where it is.
        if total == 0 && queued {
            if let Some(i) = cheapest(variants) {
                targets[i].desired = 1;
                targets[i].reason = TargetReason::ScaleFromZero;
                return ZeroAction::FromZero;
            }
        }
        if total == 0 && activity.config.enabled {
            for t in targets.iter_mut() {
                t.reason = TargetReason::ScaledToZero;
            }
        }
        return ZeroAction::None;
    }
    if !activity.config.enabled && total == 0 {
        // Upstream's rule with scale to zero off: a running model keeps one
        // replica on its cheapest variant (our analyses never go below one,
        // so this only guards against a future analysis that would).
        if let Some(i) = cheapest(variants) {
            targets[i].desired = 1;
            targets[i].reason = TargetReason::ClampedToMin;
            return ZeroAction::KeptOne;
        }
    }
    if !is_idle(activity) {
        return ZeroAction::None;
    }
    if variants.iter().all(|v| v.min_replicas == 0) {
        for t in targets.iter_mut() {
            t.desired = 0;
            t.reason = TargetReason::ScaledToZero;
        }
        ZeroAction::ScaledToZero
    } else {
        for (t, v) in targets.iter_mut().zip(variants) {
            t.desired = v.min_replicas.min(v.max_replicas);
            t.reason = TargetReason::IdleAtMin;
        }
        ZeroAction::HeldAtMin
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
    fn go_durations() {
        let ok = [
            ("10m", 600.0),
            ("30s", 30.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("500ms", 0.5),
            ("2m0.5s", 120.5),
            ("+5s", 5.0),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::from_secs_f64(secs)),
                "{text}"
            );
        }
        for bad in ["", "10", "0s", "-5m", "5 minutes", "m", "1d", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn precedence_per_model_then_default_then_env_then_off() {
        let (c, errors) = ScaleToZeroConfig::from_configmap_data(&data(&[
            ("default", "enable_scale_to_zero: true\nretention_period: \"15m\""),
            ("llama", "model_id: meta/llama-3.1-8b\nretention_period: \"5m\""),
            ("big", "model_id: meta/llama-3.1-70b\nenable_scale_to_zero: false"),
            (
                "prod",
                "model_id: meta/llama-3.1-8b\nnamespace: production\nenable_scale_to_zero: true\nretention_period: \"30m\"",
            ),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let m = |id: &str, ns: &str| c.for_model(id, ns);
        let on = |mins: u64| ModelScaleToZero {
            enabled: true,
            retention: Duration::from_secs(mins * 60),
        };
        // Partial override: enabled from default, own retention.
        assert_eq!(m("meta/llama-3.1-8b", "dev"), on(5));
        // Namespaced override first.
        assert_eq!(m("meta/llama-3.1-8b", "production"), on(30));
        // Disabled by its override, retention from default.
        assert_eq!(
            m("meta/llama-3.1-70b", "dev"),
            ModelScaleToZero {
                enabled: false,
                retention: Duration::from_secs(900)
            }
        );
        // Not listed: the default.
        assert_eq!(m("other", "dev"), on(15));

        // Without a default entry: the environment variable, then off.
        let (c, _) = ScaleToZeroConfig::from_configmap_data(&data(&[(
            "llama",
            "model_id: meta/llama-3.1-8b\nretention_period: \"5m\"",
        )]));
        assert!(!c.for_model("meta/llama-3.1-8b", "dev").enabled);
        assert!(!c.any_enabled());
        let c = c.with_env_enabled(true);
        assert_eq!(c.for_model("meta/llama-3.1-8b", "dev"), on(5));
        assert_eq!(c.for_model("x", "dev"), on(10));
        assert!(c.any_enabled());
        // A default that says false wins over the environment.
        let (c, _) = ScaleToZeroConfig::from_configmap_data(&data(&[(
            "default",
            "enable_scale_to_zero: false",
        )]));
        assert!(!c.with_env_enabled(true).for_model("x", "dev").enabled);
        // Nothing at all: off, 10 minutes.
        assert_eq!(
            ScaleToZeroConfig::default().for_model("x", "y"),
            ModelScaleToZero {
                enabled: false,
                retention: DEFAULT_RETENTION
            }
        );
    }

    #[test]
    fn env_values() {
        assert_eq!(env_enabled(None), Ok(false));
        assert_eq!(env_enabled(Some("")), Ok(false));
        assert_eq!(env_enabled(Some("TRUE")), Ok(true));
        assert_eq!(env_enabled(Some("false")), Ok(false));
        assert!(env_enabled(Some("yes")).is_err());
    }

    #[test]
    fn bad_entries_are_refused_with_the_key_and_the_others_apply() {
        let (c, errors) = ScaleToZeroConfig::from_configmap_data(&data(&[
            ("default", "enable_scale_to_zero: \"yes\""),
            ("a", "model_id: m1\nretention_period: 10"),
            ("b", "model_id: m2\nretention: 5m"),
            ("c", "retention_period: 5m"),
            ("d", "model_id: m1\nenable_scale_to_zero: true"),
            ("e", "model_id: m3\nretention_period: -1m"),
            ("f", "model_id: m4\nenable_scale_to_zero: true"),
            ("g", "model_id: m4\nenable_scale_to_zero: false"),
        ]));
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 6, "{text:#?}");
        assert!(
            text[0].contains("\"a\"") && text[0].contains("retention_period"),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains("\"b\"") && text[1].contains("unknown key"),
            "{}",
            text[1]
        );
        assert!(
            text[2].contains("\"c\"") && text[2].contains("model_id"),
            "{}",
            text[2]
        );
        assert!(
            text[3].contains("\"default\"") && text[3].contains("true or false"),
            "{}",
            text[3]
        );
        assert!(
            text[4].contains("\"e\"") && text[4].contains("negative"),
            "{}",
            text[4]
        );
        assert!(
            text[5].contains("\"g\"") && text[5].contains("already configured by entry \"f\""),
            "{}",
            text[5]
        );
        // "d" applies (its model's first entry "a" was refused), "f" applies.
        assert!(c.for_model("m1", "ns").enabled);
        assert!(c.for_model("m4", "ns").enabled);
    }

    #[test]
    fn strict_file_errors_name_the_line() {
        let file = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-model-scale-to-zero-config\ndata:\n  default: |\n    enable_scale_to_zero: true\n    retention_period: \"15m\"\n  llama: |\n    model_id: meta/llama-3.1-8b\n    retention_period: \"5 minutes\"\n";
        let e = ScaleToZeroConfig::from_yaml_str_strict(file).unwrap_err();
        assert_eq!(e.line, 11, "{e}");
        assert!(
            e.to_string().contains("llama") && e.to_string().contains("unit"),
            "{e}"
        );
        let good = file.replace("5 minutes", "5m");
        let c = ScaleToZeroConfig::from_yaml_str_strict(&good).unwrap();
        assert_eq!(
            c.for_model("meta/llama-3.1-8b", "x").retention,
            Duration::from_secs(300)
        );
        // Plain mappings (not a ConfigMap) work too.
        let plain = "default:\n  enable_scale_to_zero: true\n  retention_period: 30s\nother:\n  model_id: m\n  enable_scale_to_zero: maybe\n";
        let e = ScaleToZeroConfig::from_yaml_str_strict(plain).unwrap_err();
        assert_eq!(e.line, 6, "{e}");
        assert!(ScaleToZeroConfig::from_yaml_str_strict("- a\n- b\n").is_err());
    }

    fn variant(name: &str, cost: f64, min: u32, spec: u32) -> VariantState {
        VariantState {
            name: name.into(),
            cost,
            min_replicas: min,
            max_replicas: 4,
            spec_replicas: spec,
            ready_replicas: spec,
        }
    }

    fn targets(vs: &[VariantState], desired: &[u32]) -> Vec<VariantTarget> {
        vs.iter()
            .zip(desired)
            .map(|(v, d)| VariantTarget {
                name: v.name.clone(),
                current: v.spec_replicas,
                desired: *d,
                reason: TargetReason::Steady,
            })
            .collect()
    }

    /// (activity, variants, analysis targets, want targets, want action)
    type Case<'a> = (
        ModelActivity,
        &'a [VariantState],
        Vec<u32>,
        Vec<u32>,
        ZeroAction,
    );

    #[test]
    fn policy_table() {
        let on = ModelScaleToZero {
            enabled: true,
            retention: Duration::from_secs(60),
        };
        let off = ModelScaleToZero {
            enabled: false,
            ..on
        };
        let at_zero = [variant("b-h100", 40.0, 0, 0), variant("a-a100", 10.0, 0, 0)];
        let running = [variant("b-h100", 40.0, 0, 1), variant("a-a100", 10.0, 0, 2)];
        let min_one = [variant("b-h100", 40.0, 1, 1), variant("a-a100", 10.0, 0, 2)];
        let act = |config, ready, requests, queue| ModelActivity {
            config,
            ready,
            requests,
            scheduler_queue: queue,
        };
        // (activity, variants, analysis targets, want targets, want action)
        let cases: Vec<Case> = vec![
            // Idle for the whole retention period: every variant to 0.
            (
                act(on, 3, Some(0.0), Some(0.0)),
                &running,
                vec![1, 2],
                vec![0, 0],
                ZeroAction::ScaledToZero,
            ),
            // Idle, queue unknown (no endpoint picker): still idle.
            (
                act(on, 3, Some(0.0), None),
                &running,
                vec![1, 2],
                vec![0, 0],
                ZeroAction::ScaledToZero,
            ),
            // A request completed (or in flight): the analysis stands.
            (
                act(on, 3, Some(1.0), Some(0.0)),
                &running,
                vec![1, 2],
                vec![1, 2],
                ZeroAction::None,
            ),
            // History shorter than the retention period: not idle.
            (
                act(on, 3, None, Some(0.0)),
                &running,
                vec![1, 2],
                vec![1, 2],
                ZeroAction::None,
            ),
            // Something queued in the endpoint picker: not idle.
            (
                act(on, 3, Some(0.0), Some(2.0)),
                &running,
                vec![1, 2],
                vec![1, 2],
                ZeroAction::None,
            ),
            // Disabled: never to zero.
            (
                act(off, 3, Some(0.0), Some(0.0)),
                &running,
                vec![1, 2],
                vec![1, 2],
                ZeroAction::None,
            ),
            // A variant with minReplicas 1: held at min.
            (
                act(on, 3, Some(0.0), Some(0.0)),
                &min_one,
                vec![1, 2],
                vec![1, 0],
                ZeroAction::HeldAtMin,
            ),
            // At zero, a request queued: 1 on the cheapest variant.
            (
                act(on, 0, None, Some(1.0)),
                &at_zero,
                vec![0, 0],
                vec![0, 1],
                ZeroAction::FromZero,
            ),
            // At zero, a request queued, scale to zero off: also 1.
            (
                act(off, 0, None, Some(1.0)),
                &at_zero,
                vec![0, 0],
                vec![0, 1],
                ZeroAction::FromZero,
            ),
            // At zero, nothing queued: stays at zero.
            (
                act(on, 0, None, Some(0.0)),
                &at_zero,
                vec![0, 0],
                vec![0, 0],
                ZeroAction::None,
            ),
            (
                act(on, 0, None, None),
                &at_zero,
                vec![0, 0],
                vec![0, 0],
                ZeroAction::None,
            ),
            // At zero with scale to zero off and nothing queued: stays
            // (only demand brings a model back).
            (
                act(off, 0, None, Some(0.0)),
                &at_zero,
                vec![0, 0],
                vec![0, 0],
                ZeroAction::None,
            ),
            // Pending replicas (desired already 1): left alone.
            (
                act(on, 0, None, Some(3.0)),
                &at_zero,
                vec![1, 0],
                vec![1, 0],
                ZeroAction::None,
            ),
        ];
        for (i, (a, vs, analysis, want, action)) in cases.into_iter().enumerate() {
            let mut ts = targets(vs, &analysis);
            let got = apply(&a, vs, &mut ts);
            let desired: Vec<u32> = ts.iter().map(|t| t.desired).collect();
            assert_eq!((desired, got), (want, action), "case {i}: {a:?}");
        }
    }

    #[test]
    fn from_zero_skips_variants_that_cannot_run() {
        let mut vs = vec![variant("cheap", 1.0, 0, 0), variant("dear", 9.0, 0, 0)];
        vs[0].max_replicas = 0;
        let mut ts = targets(&vs, &[0, 0]);
        let a = ModelActivity {
            config: ModelScaleToZero {
                enabled: true,
                retention: DEFAULT_RETENTION,
            },
            ready: 0,
            requests: None,
            scheduler_queue: Some(1.0),
        };
        assert_eq!(apply(&a, &vs, &mut ts), ZeroAction::FromZero);
        assert_eq!((ts[0].desired, ts[1].desired), (0, 1));
        assert_eq!(ts[1].reason, TargetReason::ScaleFromZero);
    }
}
