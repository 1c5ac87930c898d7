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

    let s = summary(&out);
    assert_eq!(s["duration_seconds"], 2400);
    let policies = s["policies"].as_array().unwrap();
    let names: Vec<&str> = policies
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v1", "v2", "chain"], "default policies");
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
    assert_eq!(s["policies"].as_array().unwrap().len(), 3, "{s}");
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
        stderr.contains("unknown policy \"v3\": use v1, v2 or chain"),
        "{stderr}"
    );

    let o = simulate(&["--out", out.to_str().unwrap()]);
    assert!(!o.status.success(), "a scenario or a trace is required");
    let o = simulate(&["--scenario", "weekly"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("diurnal"), "{}", text(&o.stderr));
}
