//! Reading one entry of the thresholds ConfigMap key by key, and finding
//! the line of the file a rejected entry (or key) is on.

use super::{
    AnalyzerKind, SaturationThresholds, ThresholdError, MODEL_ID_KEYS, NAMESPACE_KEY,
    THRESHOLD_KEYS, V2_KEYS,
};

/// One entry of the ConfigMap: the fields it sets and, for overrides, the
/// model and namespace it applies to.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) kv_cache_threshold: Option<f64>,
    pub(super) queue_length_threshold: Option<f64>,
    pub(super) kv_spare_trigger: Option<f64>,
    pub(super) queue_spare_trigger: Option<f64>,
    pub(super) analyzer: Option<AnalyzerKind>,
    pub(super) scale_up_threshold: Option<f64>,
    pub(super) scale_down_boundary: Option<f64>,
    pub(super) enable_limiter: Option<bool>,
    pub(super) slo_ttft_ms: Option<f64>,
    pub(super) slo_tpot_ms: Option<f64>,
    pub(super) slo_headroom: Option<f64>,
    pub(super) model_id: Option<String>,
    pub(super) namespace: Option<String>,
}

/// Why an entry could not be read: the key at fault (if one is) and, for
/// YAML syntax errors inside an entry's text, the line within that text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EntryProblem {
    pub(super) field: Option<String>,
    pub(super) message: String,
    pub(super) line_in_entry: Option<usize>,
}

impl EntryProblem {
    pub(super) fn field(field: &str, message: String) -> Self {
        EntryProblem {
            field: Some(field.to_owned()),
            message,
            line_in_entry: None,
        }
    }
}

impl Entry {
    pub(super) fn over(&self, base: SaturationThresholds) -> SaturationThresholds {
        SaturationThresholds {
            kv_cache_threshold: self.kv_cache_threshold.unwrap_or(base.kv_cache_threshold),
            queue_length_threshold: self
                .queue_length_threshold
                .unwrap_or(base.queue_length_threshold),
            kv_spare_trigger: self.kv_spare_trigger.unwrap_or(base.kv_spare_trigger),
            queue_spare_trigger: self.queue_spare_trigger.unwrap_or(base.queue_spare_trigger),
            analyzer: self.analyzer.unwrap_or(base.analyzer),
            scale_up_threshold: self.scale_up_threshold.unwrap_or(base.scale_up_threshold),
            scale_down_boundary: self.scale_down_boundary.unwrap_or(base.scale_down_boundary),
            enable_limiter: self.enable_limiter.unwrap_or(base.enable_limiter),
            slo_ttft_ms: self.slo_ttft_ms.or(base.slo_ttft_ms),
            slo_tpot_ms: self.slo_tpot_ms.or(base.slo_tpot_ms),
            slo_headroom: self.slo_headroom.unwrap_or(base.slo_headroom),
        }
    }

    /// An entry given as YAML text (the ConfigMap form: `default: |`).
    pub(super) fn parse_text(text: &str) -> Result<Entry, EntryProblem> {
        let value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| EntryProblem {
                field: None,
                message: e.to_string(),
                line_in_entry: e.location().map(|l| l.line()),
            })?;
        Entry::parse_value(&value)
    }

    pub(super) fn parse_value(value: &serde_norway::Value) -> Result<Entry, EntryProblem> {
        let map = match value {
            serde_norway::Value::Null => return Ok(Entry::default()),
            serde_norway::Value::Mapping(m) => m,
            other => {
                return Err(EntryProblem {
                    field: None,
                    message: format!("an entry is a mapping of threshold keys, got {other:?}"),
                    line_in_entry: None,
                })
            }
        };
        let mut e = Entry::default();
        for (k, v) in map {
            let key = k.as_str().ok_or_else(|| EntryProblem {
                field: None,
                message: format!("key {k:?} is not a string"),
                line_in_entry: None,
            })?;
            let number = || match v.as_f64() {
                Some(n) => Ok(Some(n)),
                None => Err(EntryProblem::field(
                    key,
                    format!("must be a number, got {}", yaml_inline(v)),
                )),
            };
            let text = || match v.as_str() {
                Some(s) => Ok(Some(s.to_owned())),
                None => Err(EntryProblem::field(
                    key,
                    format!("must be a string, got {}", yaml_inline(v)),
                )),
            };
            match key {
                "kvCacheThreshold" => e.kv_cache_threshold = number()?,
                "queueLengthThreshold" => e.queue_length_threshold = number()?,
                "kvSpareTrigger" => e.kv_spare_trigger = number()?,
                "queueSpareTrigger" => e.queue_spare_trigger = number()?,
                "analyzerName" => {
                    e.analyzer = match v {
                        serde_norway::Value::Null => None,
                        _ => text()?.map(|n| AnalyzerKind::from_config_name(&n)),
                    }
                }
                "scaleUpThreshold" => e.scale_up_threshold = number()?,
                "sloTtftMs" => e.slo_ttft_ms = number()?,
                "sloTpotMs" => e.slo_tpot_ms = number()?,
                "sloHeadroom" => e.slo_headroom = number()?,
                "scaleDownBoundary" => e.scale_down_boundary = number()?,
                "enableLimiter" => {
                    e.enable_limiter = match v.as_bool() {
                        Some(b) => Some(b),
                        None => {
                            return Err(EntryProblem::field(
                                key,
                                format!("must be true or false, got {}", yaml_inline(v)),
                            ))
                        }
                    }
                }
                NAMESPACE_KEY => e.namespace = text()?,
                k if MODEL_ID_KEYS.contains(&k) => e.model_id = text()?,
                other => {
                    return Err(EntryProblem::field(
                        other,
                        format!(
                        "unknown key {other:?}: neither this server nor upstream WVA defines it \
                             (keys: {}, model_id, namespace, {})",
                        THRESHOLD_KEYS.join(", "),
                        V2_KEYS.join(", ")
                    ),
                    ))
                }
            }
        }
        Ok(e)
    }

    /// The key of this entry a validation error is about: the first of the
    /// involved keys the entry sets itself (else the first involved key).
    pub(super) fn field_of(&self, err: &ThresholdError) -> Option<String> {
        let involved: &[(&str, bool)] = match err {
            ThresholdError::NotFinite { field, .. }
            | ThresholdError::NotPositive { field, .. }
            | ThresholdError::OutOfRange { field, .. } => return Some((*field).to_owned()),
            ThresholdError::KvOrder { .. } => &[
                ("kvCacheThreshold", self.kv_cache_threshold.is_some()),
                ("kvSpareTrigger", self.kv_spare_trigger.is_some()),
            ],
            ThresholdError::QueueOrder { .. } => &[
                (
                    "queueLengthThreshold",
                    self.queue_length_threshold.is_some(),
                ),
                ("queueSpareTrigger", self.queue_spare_trigger.is_some()),
            ],
            ThresholdError::V2Order { .. } => &[
                ("scaleUpThreshold", self.scale_up_threshold.is_some()),
                ("scaleDownBoundary", self.scale_down_boundary.is_some()),
            ],
            _ => return None,
        };
        involved
            .iter()
            .find(|(_, set)| *set)
            .or(involved.first())
            .map(|(f, _)| (*f).to_owned())
    }
}

pub(crate) fn yaml_inline(v: &serde_norway::Value) -> String {
    serde_norway::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("{v:?}"))
}

/// A rejected entry before it becomes a [`ThresholdError`].
pub(super) struct Rejection {
    pub(super) key: String,
    pub(super) problem: EntryProblem,
}

impl Rejection {
    pub(super) fn error(&self) -> ThresholdError {
        ThresholdError::Entry {
            key: self.key.clone(),
            field: self.problem.field.clone(),
            message: self.problem.message.clone(),
        }
    }
}

/// The line of the file (1-based) a rejected entry is about: the line of the
/// key at fault inside the entry when there is one, the line of a syntax
/// error inside the entry's text, else the entry's own line.
pub(super) fn locate(text: &str, r: &Rejection) -> usize {
    locate_entry(
        text,
        &r.key,
        r.problem.field.as_deref(),
        r.problem.line_in_entry,
    )
}

/// The line of the file (1-based) of entry `key`'s `field` (or of a syntax
/// error at `line_in_entry` of its block text, or of the entry itself), in
/// a file holding ConfigMap data or a whole ConfigMap. Shared with the
/// scale-to-zero config, which has the same shape.
pub(crate) fn locate_entry(
    text: &str,
    key: &str,
    field: Option<&str>,
    line_in_entry: Option<usize>,
) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    // In the ConfigMap form the entries sit under `data:`.
    let start = lines
        .iter()
        .position(|l| indent_of(l) == 0 && declares(l.trim(), "data"))
        .map(|i| i + 1)
        .unwrap_or(0);
    let Some(entry) = (start..lines.len()).find(|&i| declares(lines[i].trim(), key)) else {
        return 1;
    };
    let entry_indent = indent_of(lines[entry]);
    if let Some(field) = field {
        for (i, line) in lines.iter().enumerate().skip(entry + 1) {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if indent_of(line) <= entry_indent {
                break;
            }
            if declares(trimmed, field) {
                return i + 1;
            }
        }
    }
    match line_in_entry {
        // A block scalar's text starts on the line after its key.
        Some(n) if lines[entry].trim_end().ends_with(['|', '>', '-', '+']) => entry + 1 + n,
        _ => entry + 1,
    }
}

pub(super) fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether a trimmed YAML line declares `key` (plain or quoted).
pub(super) fn declares(trimmed: &str, key: &str) -> bool {
    [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            trimmed
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
}
