//! Drop-in compatibility with upstream WVA (llm-d/llm-d-workload-variant-autoscaler):
//! its shipped ConfigMaps and samples load unchanged (tests/fixtures/upstream-wva,
//! copied as data), `serve` is strict about typos, and every test case of
//! upstream's internal/saturation/analyzer_test.go is replayed as a table
//! against our analyzer. docs/wva-compatibility.md lists the differences.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{variant_yaml, Emulator, Server, VariantSpec, BIN};
use wva_metrics_server::inventory::file::parse_objects;
use wva_metrics_server::inventory::resolve;
use wva_metrics_server::saturation::{
    analyze_model, compute_targets, ModelAnalysis, ReplicaLoad, SaturationThresholds,
    ThresholdConfig, VariantState,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream-wva")
        .join(name)
}

const UPSTREAM_THRESHOLD_CONFIGMAPS: &[&str] = &[
    "deploy-configmap-saturation-scaling.yaml",
    "config-manager-configmap-saturation-scaling.yaml",
];

#[test]
fn upstream_threshold_configmaps_load_unchanged_in_both_forms() {
    for name in UPSTREAM_THRESHOLD_CONFIGMAPS {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        // As a --saturation-config file (strict).
        let config =
            ThresholdConfig::from_yaml_str_strict(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            config.default_thresholds(),
            SaturationThresholds {
                kv_cache_threshold: 0.80,
                queue_length_threshold: 5.0,
                kv_spare_trigger: 0.1,
                queue_spare_trigger: 3.0,
                ..SaturationThresholds::default()
            },
            "{name}"
        );
        // enableLimiter (false there) is implemented: read, not ignored.
        assert!(!config.default_thresholds().enable_limiter, "{name}");
        // As the ConfigMap the kube source watches.
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_norway::from_str(&text).unwrap();
        let (from_cluster, errors) =
            ThresholdConfig::from_configmap_data(cm.data.as_ref().unwrap());
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert_eq!(from_cluster, config, "{name}");
    }
}

#[test]
fn upstream_variant_samples_load_with_their_costs() {
    let name = "config-samples-variantautoscaling-with-cost.yaml";
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let objects = parse_objects(&fixture(name), &text).unwrap();
    let (snapshot, problems) = resolve(&objects);
    assert!(problems.is_empty(), "{problems:?}");
    let mut costs: Vec<(String, f64)> = snapshot
        .variants()
        .iter()
        .map(|v| (v.name.clone(), v.cost))
        .collect();
    costs.sort_by(|a, b| a.0.cmp(&b.0));
    let want = [
        ("llama-70b-premium-h100", 80.0),
        ("llama-70b-standard-a100", 40.0),
        ("llama-8b-budget-t4", 5.0),
        ("llama-8b-default-cost", 10.0),
        ("llama-8b-tenant-gold", 25.0),
        ("llama-8b-tenant-silver", 15.0),
    ];
    let want: Vec<(String, f64)> = want.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(costs, want);
}

/// Runs `serve` to its exit (bounded); returns the exit code and stderr.
fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit on a bad saturation config");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(stderr_path).unwrap_or_default(),
    )
}

#[test]
fn serve_refuses_a_thresholds_file_with_a_typo_naming_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // Upstream's ConfigMap with one key misspelt.
    let text = std::fs::read_to_string(fixture(UPSTREAM_THRESHOLD_CONFIGMAPS[0])).unwrap();
    let typo = text.replace("    kvSpareTrigger: 0.1", "    kvSpareTriger: 0.1");
    assert_ne!(typo, text);
    let line = typo
        .lines()
        .position(|l| l.contains("kvSpareTriger"))
        .unwrap()
        + 1;
    // (file contents, what stderr must name)
    let cases = [
        (
            typo,
            vec![format!("line {line}"), "kvSpareTriger".to_owned()],
        ),
        (
            "default: |\n  kvCacheThreshold: 0.5\n  kvSpareTrigger: 0.7\n".to_owned(),
            // Both keys are set: the error names the threshold, the first of them.
            vec!["line 2".to_owned(), "kvCacheThreshold".to_owned()],
        ),
        (
            "default: |\n  kvCacheThreshold: high\n".to_owned(),
            vec!["line 2".to_owned(), "kvCacheThreshold".to_owned()],
        ),
    ];
    for (i, (contents, names)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("thresholds-{i}.yaml"));
        std::fs::write(&path, contents).unwrap();
        let (code, stderr) = serve_exit(&[
            "--saturation-config",
            path.to_str().unwrap(),
            "--inventory",
            "file:/nonexistent/inventory.yaml",
            "--insecure-disable-auth",
        ]);
        assert_eq!(code, Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "case {i}: {stderr}"
        );
        for n in names {
            assert!(stderr.contains(&n), "case {i}: {n:?} in {stderr}");
        }
    }

    // A directory of ConfigMaps (file mode's namespace-local configs): the
    // error names the file in the directory and the line in that file.
    let confdir = dir.path().join("thresholds.d");
    std::fs::create_dir(&confdir).unwrap();
    std::fs::copy(
        fixture(UPSTREAM_THRESHOLD_CONFIGMAPS[0]),
        confdir.join("global.yaml"),
    )
    .unwrap();
    std::fs::write(
        confdir.join("team.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels: {wva.llmd.ai/config-enabled: \"true\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\n  namespace: team\ndata:\n  default: |\n    kvCacheThreshold: 0.9\n    queueLenghtThreshold: 4\n",
    )
    .unwrap();
    let (code, stderr) = serve_exit(&[
        "--saturation-config",
        confdir.to_str().unwrap(),
        "--namespace",
        "workload-variant-autoscaler-system",
        "--inventory",
        "file:/nonexistent/inventory.yaml",
        "--insecure-disable-auth",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    let team = confdir.join("team.yaml");
    for n in [team.to_str().unwrap(), "line 15", "queueLenghtThreshold"] {
        assert!(stderr.contains(n), "{n:?} in {stderr}");
    }
}

/// The example: upstream's `default` with `kvCacheThreshold: 0.95`
/// and `enableLimiter: false`, two replicas at KV 0.82. Upstream holds 2;
/// before this server accepted `enableLimiter` it dropped the entry and
/// answered 3 from its built-in 0.80.
#[tokio::test]
async fn an_upstream_default_entry_takes_effect_end_to_end() {
    let mut emulators = Vec::new();
    for _ in 0..2 {
        emulators.push(Emulator::start("meta/llama-3.1-8b", 0.82, 0.0).await);
    }
    let ports: Vec<u16> = emulators.iter().map(|e| e.port).collect();
    let yaml = variant_yaml(
        &VariantSpec {
            namespace: "llm",
            variant: "llama-a100",
            target: "llama-decode",
            model: "meta/llama-3.1-8b",
            min: 1,
            max: 10,
            ready: 2,
        },
        &ports,
    );
    let dir = tempfile::tempdir().unwrap();
    let thresholds = dir.path().join("thresholds.yaml");
    std::fs::write(
        &thresholds,
        "default: |\n  kvCacheThreshold: 0.95\n  queueLengthThreshold: 5\n  kvSpareTrigger: 0.1\n  queueSpareTrigger: 3\n  enableLimiter: false\n",
    )
    .unwrap();
    let thresholds = thresholds.to_str().unwrap();
    // (extra flags, desired replicas): the built-in 0.80 sees both replicas
    // saturated and scales up; upstream's entry holds.
    let cases: [(&[&str], &str); 2] = [(&[], "3"), (&["--saturation-config", thresholds], "2")];
    for (extra, desired) in cases {
        let mut args = vec!["--metrics-backend", "scrape", "--scrape-interval", "500ms"];
        args.extend_from_slice(extra);
        let s = Server::with_inventory(&yaml, &args).await;
        // A model without samples holds at its current 2: wait until the
        // decision has the replicas' metrics before reading it.
        common::eventually(Duration::from_secs(20), "the model's samples", || async {
            s.text("/metrics")
                .await
                .contains("wva_metrics_sample_age_seconds{namespace=\"llm\",model_id=\"meta/llama-3.1-8b\"}")
                .then_some(())
        })
        .await;
        assert_eq!(
            s.value("llm", "wva_desired_replicas", "target_name=llama-decode")
                .await
                .as_deref(),
            Some(desired),
            "{extra:?}"
        );
    }
}

/// File mode's namespace-local precedence, end to end: a directory with the
/// global ConfigMap (upstream's default at 0.95), a namespace-local one and
/// the Namespace that opts in. Two replicas at KV 0.82 hold in `other` and
/// scale up in `team`, whose local config keeps the built-in 0.80.
#[tokio::test]
async fn a_thresholds_directory_applies_namespace_local_configmaps() {
    let mut yaml = String::new();
    let mut emulators = Vec::new();
    for ns in ["team", "other"] {
        let mut ports = Vec::new();
        for _ in 0..2 {
            let e = Emulator::start("meta/llama-3.1-8b", 0.82, 0.0).await;
            ports.push(e.port);
            emulators.push(e);
        }
        yaml.push_str(&variant_yaml(
            &VariantSpec {
                namespace: ns,
                variant: "llama-a100",
                target: "llama-decode",
                model: "meta/llama-3.1-8b",
                min: 1,
                max: 10,
                ready: 2,
            },
            &ports,
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let confdir = dir.path().join("thresholds.d");
    std::fs::create_dir(&confdir).unwrap();
    let global = std::fs::read_to_string(fixture(UPSTREAM_THRESHOLD_CONFIGMAPS[0]))
        .unwrap()
        .replace("kvCacheThreshold: 0.80", "kvCacheThreshold: 0.95");
    std::fs::write(confdir.join("global.yaml"), global).unwrap();
    std::fs::write(
        confdir.join("team.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels: {wva.llmd.ai/config-enabled: \"true\"}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wva-saturation-scaling-config\n  namespace: team\ndata:\n  default: |\n    kvCacheThreshold: 0.80\n",
    )
    .unwrap();
    let s = Server::with_inventory(
        &yaml,
        &[
            "--metrics-backend",
            "scrape",
            "--scrape-interval",
            "500ms",
            "--namespace",
            "workload-variant-autoscaler-system",
            "--saturation-config",
            confdir.to_str().unwrap(),
        ],
    )
    .await;
    for ns in ["team", "other"] {
        let series = format!(
            "wva_metrics_sample_age_seconds{{namespace=\"{ns}\",model_id=\"meta/llama-3.1-8b\"}}"
        );
        common::eventually(Duration::from_secs(20), "the model's samples", || async {
            s.text("/metrics").await.contains(&series).then_some(())
        })
        .await;
    }
    for (ns, desired) in [("team", "3"), ("other", "2")] {
        assert_eq!(
            s.value(ns, "wva_desired_replicas", "target_name=llama-decode")
                .await
                .as_deref(),
            Some(desired),
            "{ns}"
        );
    }
}

// ---------------------------------------------------------------------------
// upstream internal/saturation/analyzer_test.go, transcribed as data

const UPSTREAM_THRESHOLDS: SaturationThresholds = SaturationThresholds {
    analyzer: wva_metrics_server::saturation::AnalyzerKind::Percentage,
    scale_up_threshold: 0.85,
    scale_down_boundary: 0.70,
    enable_limiter: false,
    slo_ttft_ms: None,
    slo_tpot_ms: None,
    slo_headroom: 0.0,
    kv_cache_threshold: 0.80,
    queue_length_threshold: 5.0,
    kv_spare_trigger: 0.10,
    queue_spare_trigger: 3.0,
};

/// (pod, variant, kv, queue)
type Replica = (&'static str, &'static str, f64, f64);

/// What an analysis case expects; None = not asserted by upstream.
struct AnalysisCase {
    upstream: &'static str,
    replicas: &'static [Replica],
    scale_up: Option<bool>,
    scale_down_safe: Option<bool>,
    total: Option<usize>,
    non_saturated: Option<usize>,
    /// (avg spare kv, avg spare queue)
    spares: Option<(f64, f64)>,
    /// Pods upstream reports as saturated.
    saturated: Option<&'static [&'static str]>,
    /// Per-variant replica counts upstream reports, as (variant, count).
    per_variant: Option<&'static [(&'static str, usize)]>,
}

const fn case(upstream: &'static str, replicas: &'static [Replica]) -> AnalysisCase {
    AnalysisCase {
        upstream,
        replicas,
        scale_up: None,
        scale_down_safe: None,
        total: None,
        non_saturated: None,
        spares: None,
        saturated: None,
        per_variant: None,
    }
}

const ANALYSIS_CASES: &[AnalysisCase] = &[
    AnalysisCase {
        scale_up: Some(true),
        ..case(
            "TestAnalyzeModelSaturation_ScaleUp/scale up due to low KV spare Saturation",
            &[("pod-1", "v1", 0.75, 2.0), ("pod-2", "v1", 0.76, 2.0)],
        )
    },
    AnalysisCase {
        scale_up: Some(true),
        ..case(
            "TestAnalyzeModelSaturation_ScaleUp/scale up due to low queue spare Saturation",
            &[("pod-1", "v1", 0.50, 3.0), ("pod-2", "v1", 0.50, 3.0)],
        )
    },
    AnalysisCase {
        scale_up: Some(false),
        ..case(
            "TestAnalyzeModelSaturation_ScaleUp/no scale up - healthy Saturation",
            &[("pod-1", "v1", 0.50, 1.0), ("pod-2", "v1", 0.50, 1.0)],
        )
    },
    AnalysisCase {
        scale_down_safe: Some(true),
        ..case(
            "TestAnalyzeModelSaturation_ScaleDownSafety/scale down safe - adequate headroom",
            &[
                ("pod-1", "v1", 0.20, 1.0),
                ("pod-2", "v1", 0.30, 1.0),
                ("pod-3", "v1", 0.25, 1.0),
            ],
        )
    },
    AnalysisCase {
        scale_down_safe: Some(false),
        ..case(
            "TestAnalyzeModelSaturation_ScaleDownSafety/scale down unsafe - insufficient headroom",
            &[("pod-1", "v1", 0.70, 2.0), ("pod-2", "v1", 0.75, 2.0)],
        )
    },
    AnalysisCase {
        scale_down_safe: Some(false),
        ..case(
            "TestAnalyzeModelSaturation_ScaleDownSafety/scale down unsafe - only one non-saturated replica",
            &[("pod-1", "v1", 0.50, 2.0)],
        )
    },
    AnalysisCase {
        total: Some(4),
        non_saturated: Some(4),
        per_variant: Some(&[("variant-1", 2), ("variant-2", 2)]),
        ..case(
            "TestAnalyzeModelSaturation_MultiVariant",
            &[
                ("v1-pod-1", "variant-1", 0.70, 2.0),
                ("v1-pod-2", "variant-1", 0.75, 3.0),
                ("v2-pod-1", "variant-2", 0.60, 1.0),
                ("v2-pod-2", "variant-2", 0.65, 2.0),
            ],
        )
    },
    AnalysisCase {
        total: Some(0),
        scale_up: Some(false),
        scale_down_safe: Some(false),
        ..case("TestAnalyzeModelSaturation_EmptyMetrics", &[])
    },
    AnalysisCase {
        total: Some(3),
        non_saturated: Some(1),
        saturated: Some(&["pod-1", "pod-2"]),
        ..case(
            "TestAnalyzeVariant_SaturatedReplicas",
            &[
                ("pod-1", "v1", 0.85, 2.0),
                ("pod-2", "v1", 0.50, 6.0),
                ("pod-3", "v1", 0.60, 2.0),
            ],
        )
    },
    AnalysisCase {
        total: Some(3),
        non_saturated: Some(0),
        spares: Some((0.0, 0.0)),
        scale_up: Some(true),
        scale_down_safe: Some(false),
        ..case(
            "TestAnalyzeModelSaturation_AllSaturated",
            &[
                ("pod-1", "v1", 0.85, 2.0),
                ("pod-2", "v1", 0.50, 6.0),
                ("pod-3", "v1", 0.90, 7.0),
            ],
        )
    },
    // Upstream asserts that the analysis carries its time (AnalyzedAt). Our
    // analysis is a pure function with no clock; the time a decision was
    // made travels as the item's `timestamp` on the API instead. What can be
    // replayed: the one replica is analysed.
    AnalysisCase {
        total: Some(1),
        non_saturated: Some(1),
        ..case(
            "TestAnalyzeModelSaturation_TimestampSet",
            &[("pod-1", "v1", 0.50, 2.0)],
        )
    },
];

#[test]
fn upstream_analyzer_cases_model_analysis() {
    for c in ANALYSIS_CASES {
        let replicas: Vec<ReplicaLoad> = c
            .replicas
            .iter()
            .map(|(pod, variant, kv, queue)| ReplicaLoad {
                pod: pod.to_string(),
                variant: variant.to_string(),
                kv: *kv,
                queue: *queue,
            })
            .collect();
        let a = analyze_model(&replicas, &UPSTREAM_THRESHOLDS);
        let name = c.upstream;
        if let Some(up) = c.scale_up {
            assert_eq!(a.should_scale_up, up, "{name}: {a:?}");
        }
        if let Some(down) = c.scale_down_safe {
            assert_eq!(a.scale_down_safe, down, "{name}: {a:?}");
        }
        if let Some(total) = c.total {
            assert_eq!(a.replicas, total, "{name}");
        }
        if let Some(n) = c.non_saturated {
            assert_eq!(a.non_saturated, n, "{name}");
        }
        if let Some((kv, q)) = c.spares {
            assert_eq!((a.avg_spare_kv, a.avg_spare_queue), (kv, q), "{name}");
        }
        if let Some(pods) = c.saturated {
            let saturated: Vec<&str> = replicas
                .iter()
                .filter(|r| UPSTREAM_THRESHOLDS.is_saturated(r))
                .map(|r| r.pod.as_str())
                .collect();
            assert_eq!(saturated, pods, "{name}");
        }
        if let Some(counts) = c.per_variant {
            // Our analysis is per model; the per-variant breakdown upstream
            // reports is the grouping of the same replicas.
            for (variant, n) in counts {
                let got = replicas.iter().filter(|r| r.variant == *variant).count();
                assert_eq!(got, *n, "{name}: {variant}");
            }
        }
    }
}

/// One variant of a targets case: (name, cost, upstream CurrentReplicas,
/// upstream DesiredReplicas (0 = none), replicas reporting metrics).
type UpstreamVariant = (&'static str, f64, u32, u32, u32);

struct TargetsCase {
    upstream: &'static str,
    should_scale_up: bool,
    scale_down_safe: bool,
    variants: &'static [UpstreamVariant],
    expected: &'static [(&'static str, u32)],
}

const TARGETS_CASES: &[TargetsCase] = &[
    TargetsCase {
        upstream: "TestCalculatesaturationTargets_ScaleUpCheapest",
        should_scale_up: true,
        scale_down_safe: false,
        variants: &[
            ("v1-expensive", 20.0, 2, 0, 2),
            ("v2-cheap", 5.0, 2, 0, 2),
            ("v3-medium", 15.0, 2, 0, 2),
        ],
        expected: &[("v1-expensive", 2), ("v2-cheap", 3), ("v3-medium", 2)],
    },
    TargetsCase {
        upstream: "TestCalculatesaturationTargets_ScaleDownMostExpensive",
        should_scale_up: false,
        scale_down_safe: true,
        variants: &[
            ("v1-expensive", 20.0, 2, 0, 2),
            ("v2-cheap", 5.0, 2, 0, 2),
            ("v3-medium", 15.0, 2, 0, 2),
        ],
        expected: &[("v1-expensive", 1), ("v2-cheap", 2), ("v3-medium", 2)],
    },
    TargetsCase {
        upstream: "TestCalculatesaturationTargets_ModelLevelTransitionBlocking",
        should_scale_up: true,
        scale_down_safe: false,
        variants: &[("v1-expensive", 20.0, 2, 4, 2), ("v2-cheap", 5.0, 2, 0, 2)],
        expected: &[("v1-expensive", 4), ("v2-cheap", 2)],
    },
    TargetsCase {
        upstream: "TestCalculatesaturationTargets_MetricsMismatchBlocksScaling",
        should_scale_up: true,
        scale_down_safe: false,
        variants: &[("v1-expensive", 20.0, 3, 0, 2), ("v2-cheap", 5.0, 2, 0, 2)],
        expected: &[("v1-expensive", 3), ("v2-cheap", 2)],
    },
];

/// Upstream's variant state in our terms. Upstream's DesiredReplicas is its
/// previous decision, which the HPA has written to the workload's spec:
/// our `spec_replicas`. Its replicas reporting metrics are the ready pods:
/// our `ready_replicas` (only ready pods count and report).
fn our_state(&(name, cost, current, desired, reporting): &UpstreamVariant) -> VariantState {
    VariantState {
        name: name.to_owned(),
        cost,
        min_replicas: 1,
        max_replicas: 10_000,
        spec_replicas: if desired == 0 { current } else { desired },
        ready_replicas: reporting,
    }
}

#[test]
fn upstream_analyzer_cases_variant_targets() {
    for c in TARGETS_CASES {
        let analysis = ModelAnalysis {
            replicas: c.variants.iter().map(|v| v.4 as usize).sum(),
            non_saturated: 0,
            avg_spare_kv: 0.0,
            avg_spare_queue: 0.0,
            should_scale_up: c.should_scale_up,
            scale_down_safe: c.scale_down_safe,
        };
        let states: Vec<VariantState> = c.variants.iter().map(our_state).collect();
        let targets = compute_targets(Some(&analysis), &states);
        let got: Vec<(&str, u32)> = targets
            .iter()
            .map(|t| (t.name.as_str(), t.desired))
            .collect();
        assert_eq!(got, c.expected, "{}", c.upstream);
    }
}

/// Pending replicas: how our transition hold compares with upstream's
/// "skip variants with pending pods for scale-up", case by case (see
/// docs/wva-compatibility.md). (case, variants as (name, cost, spec, ready),
/// our targets, upstream's targets).
#[test]
fn pending_replicas_compared_with_upstream() {
    type V = (&'static str, f64, u32, u32);
    type Case = (&'static str, &'static [V], &'static [u32], &'static [u32]);
    let cases: &[Case] = &[
        (
            "cheapest variant has a pod starting (spec 3, ready 2)",
            &[("cheap", 5.0, 3, 2), ("dear", 20.0, 2, 2)],
            // Upstream: metrics(2) != current(3) puts the model in
            // transition too; both hold.
            &[3, 2],
            &[3, 2],
        ),
        (
            "a dearer variant has a pod starting",
            &[("cheap", 5.0, 2, 2), ("dear", 20.0, 3, 2)],
            &[2, 3],
            &[2, 3],
        ),
        (
            "settled model",
            &[("cheap", 5.0, 2, 2), ("dear", 20.0, 2, 2)],
            &[3, 2],
            &[3, 2],
        ),
    ];
    let analysis = ModelAnalysis {
        replicas: 4,
        non_saturated: 0,
        avg_spare_kv: 0.0,
        avg_spare_queue: 0.0,
        should_scale_up: true,
        scale_down_safe: false,
    };
    for (name, variants, ours, upstream) in cases {
        let states: Vec<VariantState> = variants
            .iter()
            .map(|&(n, cost, spec, ready)| VariantState {
                name: n.to_owned(),
                cost,
                min_replicas: 1,
                max_replicas: 10,
                spec_replicas: spec,
                ready_replicas: ready,
            })
            .collect();
        let got: Vec<u32> = compute_targets(Some(&analysis), &states)
            .iter()
            .map(|t| t.desired)
            .collect();
        assert_eq!(&got, ours, "{name}");
        assert_eq!(ours, upstream, "{name}: a difference must be documented");
    }
}

/// (upstream case, enabled, request count, variants, targets in, targets out, applied)
type EnforcerCase<'a> = (
    &'a str,
    bool,
    Option<f64>,
    &'a [VariantState],
    [u32; 2],
    [u32; 2],
    bool,
);

/// Upstream's scale-to-zero enforcer cases
/// (internal/engines/pipeline/enforcer_test.go at b08b1c7) replayed against
/// our policy. Upstream's "request count" is our activity over the
/// retention period (None when it cannot be determined); its targets are
/// the analysis' targets of a running model (3 ready replicas).
#[test]
fn upstream_scale_to_zero_enforcer_cases() {
    use wva_metrics_server::saturation::scale_to_zero::{
        apply, ModelActivity, ModelScaleToZero, ZeroAction,
    };
    use wva_metrics_server::saturation::{TargetReason, VariantTarget};
    let variant = |name: &str, cost: f64, current: u32| VariantState {
        name: name.into(),
        cost,
        min_replicas: 0,
        max_replicas: 10,
        spec_replicas: current,
        ready_replicas: current,
    };
    let a_b = [variant("variant-a", 1.0, 2), variant("variant-b", 2.0, 1)];
    let z_a = [variant("variant-z", 1.0, 2), variant("variant-a", 1.0, 1)];
    let b_a = [variant("variant-b", 3.0, 2), variant("variant-a", 2.0, 1)];
    let cfg = |enabled| ModelScaleToZero {
        enabled,
        retention: Duration::from_secs(600),
    };
    let cases: Vec<EnforcerCase> = vec![
        (
            "enabled, no requests: all variants to zero",
            true,
            Some(0.0),
            &a_b,
            [2, 1],
            [0, 0],
            true,
        ),
        (
            "enabled, requests: targets unchanged",
            true,
            Some(100.0),
            &a_b,
            [2, 1],
            [2, 1],
            false,
        ),
        (
            "enabled, count query fails: targets unchanged",
            true,
            None,
            &a_b,
            [2, 1],
            [2, 1],
            false,
        ),
        (
            "disabled, all targets zero: one on the cheapest",
            false,
            Some(0.0),
            &a_b,
            [0, 0],
            [1, 0],
            true,
        ),
        (
            "disabled, some targets: unchanged",
            false,
            Some(0.0),
            &a_b,
            [2, 0],
            [2, 0],
            false,
        ),
        (
            "not in config (disabled): minimum preserved",
            false,
            None,
            &a_b,
            [0, 0],
            [1, 0],
            true,
        ),
        (
            "equal cost: alphabetical tiebreak",
            false,
            Some(0.0),
            &z_a,
            [0, 0],
            [0, 1],
            true,
        ),
        (
            "cheapest by cost, not by name",
            false,
            Some(0.0),
            &b_a,
            [0, 0],
            [0, 1],
            true,
        ),
    ];
    for (case, enabled, requests, variants, input, want, applied) in cases {
        let mut targets: Vec<VariantTarget> = variants
            .iter()
            .zip(input)
            .map(|(v, d)| VariantTarget {
                name: v.name.clone(),
                current: v.spec_replicas,
                desired: d,
                reason: TargetReason::Steady,
            })
            .collect();
        let action = apply(
            &ModelActivity {
                config: cfg(enabled),
                ready: 3,
                requests,
                scheduler_queue: Some(0.0),
            },
            variants,
            &mut targets,
        );
        let got: Vec<u32> = targets.iter().map(|t| t.desired).collect();
        assert_eq!(got, want.to_vec(), "{case}");
        assert_eq!(action != ZeroAction::None, applied, "{case}: {action:?}");
    }
}
