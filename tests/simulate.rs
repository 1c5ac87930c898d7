//! `simulate` end to end: the binary on a short scenario, on a zero-load
//! trace, twice with one seed, and on inputs it must refuse.

use std::path::Path;
use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wva-metrics-server"))
        .arg("simulate")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn summary(dir: &Path) -> serde_json::Value {
    let raw = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&raw).expect("summary.json is JSON")
}

#[test]
fn a_short_scenario_prints_a_table_and_writes_summary_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = simulate(&[
        "--scenario",
        "burst",
        "--duration",
        "40m",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    assert!(
        stdout.contains("policy") && stdout.contains("SLO-viol. min"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("v1 ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("v2 ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("chain ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("slo ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("oracle ")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("reactive ")),
        "{stdout}"
    );

    let s = summary(&out);
    assert_eq!(s["duration_seconds"], 2400);
    let policies = s["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["v1", "v2", "chain", "slo", "oracle", "reactive"],
        "default policies"
    );
    for p in policies {
        for key in [
            "slo_violation_minutes",
            "replica_minutes",
            "cost",
            "scale_events",
            "ttft_p95_seconds",
            "requests",
        ] {
            assert!(p[key].is_number(), "{key} in {p}");
        }
        // 40 minutes, at least one replica throughout.
        assert!(p["replica_minutes"].as_f64().unwrap() >= 40.0, "{p}");
        // Base load 5 req/s for 40 minutes: about 12,000 requests and more.
        assert!(p["requests"].as_u64().unwrap() > 11_000, "{p}");
        // The burst (30 req/s) needs more than one replica.
        assert!(p["max_replicas"].as_u64().unwrap() > 1, "{p}");
    }
    for p in &policies[1..] {
        assert_eq!(
            policies[0]["requests"], p["requests"],
            "every policy sees the same requests"
        );
    }

    // minutes.csv: one row per counted minute and policy, its violation
    // minutes the summary's.
    let csv = std::fs::read_to_string(out.join("minutes.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("policy,minute,arrivals,replicas,ready_replicas,ttft_p95_seconds,kv_usage,over_objective")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    for p in policies {
        let name = p["name"].as_str().unwrap();
        let own: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == name).collect();
        assert_eq!(own.len(), 40, "{name}: 40 minutes");
        let over = own.iter().filter(|r| r[7] == "1").count() as u64;
        assert_eq!(Some(over), p["slo_violation_minutes"].as_u64(), "{name}");
        let arrivals: u64 = own.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
        assert_eq!(Some(arrivals), p["requests"].as_u64(), "{name}");
    }

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four inline charts");
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "self-contained"
    );
    for chart in ["load", "replicas", "ttft-p95", "kv-usage"] {
        let svg = std::fs::read_to_string(out.join("charts").join(format!("{chart}.svg"))).unwrap();
        assert!(svg.contains("<polyline"), "{chart} has lines");
    }
}

#[test]
fn zero_load_gives_no_violations_replicas_at_min_and_the_same_summary_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("idle.csv");
    std::fs::write(
        &trace,
        "timestamp_seconds,requests_per_second\n0,0\n1800,0\n",
    )
    .unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = simulate(&[
            "--trace",
            trace.to_str().unwrap(),
            "--min-replicas",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        out
    };
    let s = summary(&run("a"));
    assert_eq!(s["policies"].as_array().unwrap().len(), 6, "{s}");
    for p in s["policies"].as_array().unwrap() {
        assert_eq!(p["slo_violation_minutes"], 0, "{p}");
        assert_eq!(p["max_replicas"], 2, "{p}");
        assert_eq!(p["scale_events"], 0, "{p}");
        assert_eq!(p["replica_minutes"], 2.0 * 31.0, "{p}");
    }

    // Determinism: a loaded trace, twice with the same seed, once with another.
    let loaded = dir.path().join("loaded.csv");
    std::fs::write(&loaded, "0,3,400,200\n300,12,400,200\n900,2,400,200\n").unwrap();
    let with_seed = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = simulate(&[
            "--trace",
            loaded.to_str().unwrap(),
            "--duration",
            "20m",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        std::fs::read_to_string(out.join("summary.json")).unwrap()
    };
    let first = with_seed("s1", "7");
    assert_eq!(first, with_seed("s2", "7"), "same seed, same summary");
    assert_ne!(first, with_seed("s3", "8"), "the seed matters");
}

#[test]
fn bad_inputs_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(
        &trace,
        "timestamp_seconds,requests_per_second\n0,1\n60,lots\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = simulate(&[
        "--trace",
        trace.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("bad.csv line 3: requests_per_second \"lots\" is not a number"),
        "{stderr}"
    );
    assert!(!out.join("summary.json").exists(), "nothing written");

    let o = simulate(&[
        "--scenario",
        "ramp",
        "--policies",
        "v1,v3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = text(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("unknown policy \"v3\": use v1, v2, chain, slo, oracle or reactive"),
        "{stderr}"
    );

    let o = simulate(&["--out", out.to_str().unwrap()]);
    assert!(!o.status.success(), "a scenario or a trace is required");
    let o = simulate(&["--scenario", "weekly"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("diurnal"), "{}", text(&o.stderr));
}

/// Each flag of `simulate`, a run with it set away from the base run, and
/// the number of the (only) policy's summary that the change must move.
/// The base run: `--scenario burst --duration 20m --warm-up 0s --policies
/// v1`; a case's flags replace the base's (`--trace` replaces `--scenario`).
/// `base` adds flags to both runs (to isolate one flag of a pair).
struct FlagCase {
    flag: &'static str,
    base: &'static [&'static str],
    changed: &'static [&'static str],
    moves: &'static str,
}

#[rustfmt::skip]
const FLAG_CASES: &[FlagCase] = &[
    FlagCase { flag: "--scenario", base: &[], changed: &["--scenario", "ramp"], moves: "requests" },
    FlagCase { flag: "--trace", base: &[], changed: &["--trace", "TRACE"], moves: "requests" },
    FlagCase { flag: "--duration", base: &[], changed: &["--duration", "30m"], moves: "requests" },
    FlagCase { flag: "--policies", base: &[], changed: &["--policies", "v2"], moves: "name" },
    FlagCase { flag: "--saturation-config", base: &[], changed: &["--saturation-config", "THRESHOLDS"], moves: "replica_minutes" },
    // The override of THRESHOLDS is for model `special-model` in namespace
    // `team-a`: with the other set, each of the two selects it.
    FlagCase { flag: "--model-id", base: &["--saturation-config", "THRESHOLDS", "--namespace", "team-a"], changed: &["--model-id", "special-model"], moves: "replica_minutes" },
    FlagCase { flag: "--namespace", base: &["--saturation-config", "THRESHOLDS", "--model-id", "special-model"], changed: &["--namespace", "team-a"], moves: "replica_minutes" },
    FlagCase { flag: "--slo-ttft", base: &[], changed: &["--slo-ttft", "100s"], moves: "slo_violation_minutes" },
    FlagCase { flag: "--warm-up", base: &[], changed: &["--warm-up", "30m"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--seed", base: &[], changed: &["--seed", "2"], moves: "requests" },
    FlagCase { flag: "--min-replicas", base: &[], changed: &["--min-replicas", "5"], moves: "replica_minutes" },
    FlagCase { flag: "--max-replicas", base: &[], changed: &["--max-replicas", "3"], moves: "max_replicas" },
    FlagCase { flag: "--startup-delay", base: &[], changed: &["--startup-delay", "0s"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--hpa-sync-period", base: &[], changed: &["--hpa-sync-period", "60s"], moves: "replica_minutes" },
    FlagCase { flag: "--hpa-tolerance", base: &[], changed: &["--hpa-tolerance", "0.5"], moves: "replica_minutes" },
    FlagCase { flag: "--scale-down-stabilization", base: &[], changed: &["--scale-down-stabilization", "0s"], moves: "scale_events" },
    FlagCase { flag: "--scale-up-stabilization", base: &[], changed: &["--scale-up-stabilization", "300s"], moves: "max_replicas" },
    FlagCase { flag: "--fetch-interval", base: &[], changed: &["--fetch-interval", "60s"], moves: "replica_minutes" },
    FlagCase { flag: "--v2-without-token-means", base: &["--policies", "v2"], changed: &["--v2-without-token-means"], moves: "replica_minutes" },
    FlagCase { flag: "--chain-scrape-interval", base: &["--policies", "chain"], changed: &["--chain-scrape-interval", "60s"], moves: "replica_minutes" },
    FlagCase { flag: "--chain-controller-interval", base: &["--policies", "chain"], changed: &["--chain-controller-interval", "120s"], moves: "replica_minutes" },
    FlagCase { flag: "--chain-adapter-interval", base: &["--policies", "chain"], changed: &["--chain-adapter-interval", "60s"], moves: "replica_minutes" },
    FlagCase { flag: "--num-gpu-blocks", base: &[], changed: &["--num-gpu-blocks", "512"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--block-size", base: &[], changed: &["--block-size", "4"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--max-num-seqs", base: &[], changed: &["--max-num-seqs", "16"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--prefill-tokens-per-second", base: &[], changed: &["--prefill-tokens-per-second", "1000"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--decode-tokens-per-second", base: &[], changed: &["--decode-tokens-per-second", "10"], moves: "ttft_p95_seconds" },
    FlagCase { flag: "--cost-per-replica-hour", base: &[], changed: &["--cost-per-replica-hour", "20"], moves: "cost" },
];

/// `flags` over `over`: each flag of `over` replaces the same flag of
/// `flags` (with its value, if it has one); `--trace` replaces `--scenario`.
fn overlay(flags: &[String], over: &[String]) -> Vec<String> {
    fn split(args: &[String]) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for a in args {
            match out.last_mut() {
                Some((_, value @ None)) if !a.starts_with("--") => *value = Some(a.clone()),
                _ => out.push((a.clone(), None)),
            }
        }
        out
    }
    let over = split(over);
    let mut all: Vec<(String, Option<String>)> = split(flags)
        .into_iter()
        .filter(|(f, _)| {
            !over
                .iter()
                .any(|(o, _)| o == f || (o == "--trace" && f == "--scenario"))
        })
        .collect();
    all.extend(over);
    all.into_iter()
        .flat_map(|(f, v)| std::iter::once(f).chain(v))
        .collect()
}

/// Every flag of `simulate` moves a number of the summary: for each flag,
/// a run with it changed (all else equal) differs from the run without in
/// the number the table names. (`--out` is where each run's summary is read
/// from.) The table covers exactly the flags clap has.
#[test]
fn every_flag_moves_a_number_of_the_summary() {
    use clap::CommandFactory;
    let mut command = wva_metrics_server::command::Cli::command();
    command.build();
    let flags: Vec<String> = command
        .find_subcommand("simulate")
        .unwrap()
        .get_arguments()
        .filter(|a| !a.is_global_set())
        .filter_map(|a| {
            a.get_long()
                .filter(|l| *l != "help")
                .map(|l| format!("--{l}"))
        })
        .collect();
    let mut covered: Vec<String> = FLAG_CASES.iter().map(|c| c.flag.to_owned()).collect();
    covered.push("--out".into());
    covered.sort();
    let mut sorted = flags.clone();
    sorted.sort();
    assert_eq!(covered, sorted, "FLAG_CASES and `simulate`'s flags");

    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(
        &trace,
        "timestamp_seconds,requests_per_second\n0,5\n600,20\n1200,5\n",
    )
    .unwrap();
    // The default entry differs from the built-in thresholds; the override
    // differs from both.
    let thresholds = dir.path().join("thresholds.yaml");
    std::fs::write(
        &thresholds,
        "default:\n  kvCacheThreshold: 0.6\n  queueLengthThreshold: 3\n  kvSpareTrigger: 0.2\n  queueSpareTrigger: 2\n\
         special:\n  model_id: special-model\n  namespace: team-a\n  kvCacheThreshold: 0.95\n  queueLengthThreshold: 20\n  kvSpareTrigger: 0.01\n  queueSpareTrigger: 0.5\n",
    )
    .unwrap();
    let fill = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| match *a {
                "TRACE" => trace.display().to_string(),
                "THRESHOLDS" => thresholds.display().to_string(),
                a => a.to_owned(),
            })
            .collect()
    };
    let base: Vec<String> = fill(&[
        "--scenario",
        "burst",
        "--duration",
        "20m",
        "--warm-up",
        "0s",
        "--policies",
        "v1",
    ]);
    let mut runs: Vec<(Vec<String>, serde_json::Value)> = Vec::new();
    let mut run = |args: Vec<String>| -> serde_json::Value {
        if let Some((_, s)) = runs.iter().find(|(a, _)| *a == args) {
            return s.clone();
        }
        let out = dir.path().join(format!("out-{}", runs.len()));
        let mut all = args.clone();
        all.extend(["--out".to_owned(), out.display().to_string()]);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = simulate(&all);
        assert!(o.status.success(), "{all:?}: {}", text(&o.stderr));
        let s = summary(&out);
        runs.push((args, s.clone()));
        s
    };
    for case in FLAG_CASES {
        let without = overlay(&base, &fill(case.base));
        let with = overlay(&without, &fill(case.changed));
        let (a, b) = (run(without.clone()), run(with.clone()));
        let pick = |s: &serde_json::Value| {
            let policies = s["policies"].as_array().unwrap();
            assert_eq!(policies.len(), 1, "{s}");
            policies[0][case.moves].clone()
        };
        assert!(
            !pick(&a).is_null(),
            "{}: no {} in {a}",
            case.flag,
            case.moves
        );
        assert_ne!(
            pick(&a),
            pick(&b),
            "{}: {} is the same with {without:?} and {with:?}",
            case.flag,
            case.moves
        );
    }
}
