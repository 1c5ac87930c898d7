//! Issue 30, must-show 5: upstream WVA's
//! `internal/interfaces/saturation_scaling_test.go` (b08b1c7) replayed
//! against this server's thresholds ConfigMap parser: `Validate` (15 cases)
//! and `ApplyDefaults` (4 cases).
//!
//! Upstream's cases build a Go struct; a zero field is what an absent YAML
//! key gives (the V2 fields are `omitempty`), so each case becomes the
//! ConfigMap entry that holds the struct's non-zero fields, and the four V1
//! thresholds whenever the case sets them (its "zero values are valid" case
//! sets them to 0 explicitly). Upstream's ConfigMap parser
//! (`configmap_helpers.go: parseSaturationConfig`) runs `Validate` on each
//! entry and skips the ones it refuses; here the entry is refused the same
//! way (`ThresholdConfig::from_configmap_data` returns it as an error and
//! leaves it out). Where the outcome differs on purpose, the case says so
//! and docs/wva-compatibility.md ("Upstream test tables") has the row.

use std::collections::BTreeMap;

use wva_metrics_server::saturation::thresholds::AnalyzerKind;
use wva_metrics_server::saturation::{SaturationThresholds, ThresholdConfig};

/// The `default` entry of a ConfigMap holding `text`: the thresholds in
/// force, or the refusal.
fn load(text: &str) -> Result<SaturationThresholds, String> {
    let data = BTreeMap::from([("default".to_owned(), text.to_owned())]);
    let (config, errors) = ThresholdConfig::from_configmap_data(&data);
    match errors.as_slice() {
        [] => Ok(config.default_thresholds()),
        errors => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// One upstream case: its name, the entry's YAML, whether upstream's
/// `Validate` refuses it.
type Case = (&'static str, &'static str, bool);

const V1: &str =
    "kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.10\nqueueSpareTrigger: 3\n";

#[test]
fn upstream_validate_cases() {
    let v2 = |rest: &str| format!("{V1}analyzerName: saturation\n{rest}");
    let v2_valid = v2("scaleUpThreshold: 0.90\nscaleDownBoundary: 0.60\n");
    let v2_up_above_one = v2("scaleUpThreshold: 1.5\nscaleDownBoundary: 0.70\n");
    let v2_up_below_down = v2("scaleUpThreshold: 0.60\nscaleDownBoundary: 0.70\n");
    let cases: Vec<(&str, String, bool)> = [
        ("valid default config", V1, false),
        (
            "valid custom config",
            "kvCacheThreshold: 0.75\nqueueLengthThreshold: 10\nkvSpareTrigger: 0.15\nqueueSpareTrigger: 5\n",
            false,
        ),
        (
            "invalid KvCacheThreshold too high",
            "kvCacheThreshold: 1.5\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "invalid KvCacheThreshold negative",
            "kvCacheThreshold: -0.1\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "invalid QueueLengthThreshold negative",
            "kvCacheThreshold: 0.8\nqueueLengthThreshold: -1\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "invalid KvSpareTrigger too high",
            "kvCacheThreshold: 0.8\nqueueLengthThreshold: 5\nkvSpareTrigger: 1.5\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "invalid KvSpareTrigger negative",
            "kvCacheThreshold: 0.8\nqueueLengthThreshold: 5\nkvSpareTrigger: -0.1\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "invalid QueueSpareTrigger negative",
            "kvCacheThreshold: 0.8\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.1\nqueueSpareTrigger: -1\n",
            true,
        ),
        (
            "invalid KvCacheThreshold less than KvSpareTrigger",
            "kvCacheThreshold: 0.5\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.6\nqueueSpareTrigger: 3\n",
            true,
        ),
        (
            "edge case: zero values are valid",
            "kvCacheThreshold: 0.0\nqueueLengthThreshold: 0\nkvSpareTrigger: 0.0\nqueueSpareTrigger: 0\n",
            false,
        ),
        (
            "edge case: max values are valid",
            "kvCacheThreshold: 1.0\nqueueLengthThreshold: 1000\nkvSpareTrigger: 1.0\nqueueSpareTrigger: 1000\n",
            false,
        ),
    ]
    .into_iter()
    .map(|(n, t, e): Case| (n, t.to_owned(), e))
    .chain([
        ("V2 valid config with explicit thresholds", v2_valid, false),
        ("V2 invalid: scaleUpThreshold > 1", v2_up_above_one, true),
        (
            "V2 invalid: scaleUpThreshold <= scaleDownBoundary",
            v2_up_below_down,
            true,
        ),
        // analyzerName "" and the V2 fields 0: omitted in YAML.
        (
            "V2 thresholds ignored when analyzerName is not saturation",
            format!("{V1}analyzerName: \"\"\n"),
            false,
        ),
    ])
    .collect();
    assert_eq!(cases.len(), 15, "upstream's 15 Validate cases");
    for (name, text, refused) in &cases {
        let got = load(text);
        assert_eq!(got.is_err(), *refused, "{name}: {got:?}");
    }

    // The values that pass are the values in force, number for number.
    let custom = load(&cases[1].1).unwrap();
    assert_eq!(
        (
            custom.kv_cache_threshold,
            custom.queue_length_threshold,
            custom.kv_spare_trigger,
            custom.queue_spare_trigger
        ),
        (0.75, 10.0, 0.15, 5.0)
    );
    let v2 = load(&cases[11].1).unwrap();
    assert_eq!(
        (v2.analyzer, v2.scale_up_threshold, v2.scale_down_boundary),
        (AnalyzerKind::Tokens, 0.90, 0.60)
    );
    // analyzerName "" keeps the percentage-based analysis, as upstream.
    assert_eq!(
        load(&cases[14].1).unwrap().analyzer,
        AnalyzerKind::Percentage
    );
    // Each refusal names the key at fault.
    for (i, key) in [
        (2, "kvCacheThreshold"),
        (4, "queueLengthThreshold"),
        (5, "kvCacheThreshold"),
        (7, "queueLengthThreshold"),
        (12, "scaleUpThreshold"),
        (13, "scaleUpThreshold"),
    ] {
        let err = load(&cases[i].1).unwrap_err();
        assert!(err.contains(key), "{}: {err}", cases[i].0);
    }
}

/// Where this server is stricter than upstream's `Validate` (documented row
/// by row in docs/wva-compatibility.md): a queue spare trigger above its
/// threshold, and V2 keys given explicitly with bad values on a V1 entry.
#[test]
fn stricter_than_upstreams_validate() {
    // Upstream accepts it (it checks queueSpareTrigger >= 0 only); the
    // trigger can never be met by a replica under the threshold.
    assert!(load(
        "kvCacheThreshold: 0.8\nqueueLengthThreshold: 3\nkvSpareTrigger: 0.1\nqueueSpareTrigger: 5\n"
    )
    .is_err());
    // Upstream ignores V2 keys unless analyzerName is saturation; here an
    // explicit bad value is refused whatever the analyzer (a zero upstream
    // only gets from an omitted key).
    assert!(load(&format!("{V1}scaleUpThreshold: 0\nscaleDownBoundary: 0\n")).is_err());
    // Non-finite numbers: upstream's range checks let NaN through.
    assert!(load(&V1.replace("0.80", ".nan")).is_err());
}

#[test]
fn upstream_apply_defaults_cases() {
    // 1. "applies defaults for V2 analyzer when thresholds are zero":
    // 0.85 and 0.70 (DefaultScaleUpThreshold, DefaultScaleDownBoundary).
    // Upstream's ConfigMap parser runs Validate before ApplyDefaults, so an
    // entry that omits them with analyzerName: saturation is skipped there;
    // here the defaults apply (docs/wva-compatibility.md, "A missing
    // threshold key").
    let t = load(&format!("{V1}analyzerName: saturation\n")).unwrap();
    assert_eq!(t.analyzer, AnalyzerKind::Tokens);
    assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.85, 0.70));
    let bare = load("analyzerName: saturation\n").unwrap();
    assert_eq!(
        (bare.scale_up_threshold, bare.scale_down_boundary),
        (0.85, 0.70)
    );

    // 2. "does not overwrite explicit values".
    let t = load(&format!(
        "{V1}analyzerName: saturation\nscaleUpThreshold: 0.90\nscaleDownBoundary: 0.60\n"
    ))
    .unwrap();
    assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.90, 0.60));

    // 3. "no-op when analyzerName is not saturation": upstream leaves the
    // V2 fields at 0, which nothing reads under V1. Here the V1 entry
    // carries the defaults, equally unread: the analysis is V1.
    let t = load(V1).unwrap();
    assert_eq!(t.analyzer, AnalyzerKind::Percentage);
    assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.85, 0.70));

    // 4. "ApplyDefaults then Validate passes with zero-valued omitempty
    // fields": the V1 thresholds plus analyzerName: saturation load.
    let t = load(&format!("{V1}analyzerName: saturation\n")).unwrap();
    assert_eq!(
        (t.kv_cache_threshold, t.queue_length_threshold),
        (0.80, 5.0)
    );
}
