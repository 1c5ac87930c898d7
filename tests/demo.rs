//! `wva-metrics-server demo` answers within 15 s with the selector the
//! README gives, using curl as the client (the demo's certificate is
//! self-signed, hence -k).

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, free_port, Proc};

fn curl(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "2", url])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[tokio::test]
async fn demo_answers_the_readme_requests() {
    let port = free_port();
    let _demo = Proc::spawn(
        "demo",
        &["demo", "--port", &port.to_string(), "--phase", "5s"],
    );
    let base = format!("https://127.0.0.1:{port}");
    let discovery = format!("{base}/apis/external.metrics.k8s.io/v1beta1");
    let list = eventually(
        Duration::from_secs(15),
        "the demo's discovery document",
        || {
            let d = discovery.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(&d))
                    .await
                    .ok()
                    .flatten()
            }
        },
    )
    .await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"wva_desired_ratio"), "{names:?}");

    // The selector of the README.
    let values = format!(
        "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm-demo/wva_desired_ratio?labelSelector=target_name%3Dllama-8b-decode"
    );
    let body = eventually(
        Duration::from_secs(15),
        "a values answer from the demo",
        || {
            let v = values.clone();
            async move {
                tokio::task::spawn_blocking(move || curl(&v))
                    .await
                    .ok()
                    .flatten()
                    .filter(|b| b["kind"] == "ExternalMetricValueList")
            }
        },
    )
    .await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["metricLabels"]["target_name"], "llama-8b-decode");
    assert_eq!(items[0]["metricLabels"]["namespace"], "llm-demo");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("llm-demo") && readme.contains("llama-8b-decode"),
        "README names the demo's namespace and target"
    );
    assert!(
        readme.contains("labelSelector=target_name%3Dllama-8b-decode"),
        "README gives the selector tested here"
    );
}

/// Runs `demo --once` to its end and returns its standard output.
fn demo_once(extra: &[&str]) -> String {
    let port = free_port().to_string();
    let mut args = vec!["demo", "--port", port.as_str(), "--once"];
    args.extend_from_slice(extra);
    let out = Command::new(common::BIN)
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// One `--once` run is a full cycle: the HPA formula takes the Deployment
/// from 1 replica up to the maximum of 6; the load stops and, idle for the
/// retention period, the model goes down to 0 (never up on the way); the
/// load returns and the endpoint picker's queue brings it back to 1.
fn assert_full_cycle(stdout: &str) {
    let steps: Vec<(u32, u32)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("demo: HPA scales llama-8b-decode from "))
        .filter_map(|l| {
            let (from, to) = l.split_once(" to ")?;
            Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
        })
        .collect();
    let peak = steps.iter().map(|s| s.1).max().unwrap_or(0);
    assert_eq!(peak, 6, "reaches the maximum: {steps:?}\n{stdout}");
    let at_peak = steps.iter().position(|s| s.1 == 6).unwrap();
    let after: Vec<(u32, u32)> = steps[at_peak + 1..].to_vec();
    let to_zero = after
        .iter()
        .position(|s| s.1 == 0)
        .unwrap_or_else(|| panic!("goes to 0: {steps:?}\n{stdout}"));
    assert!(
        after[..=to_zero].iter().all(|(from, to)| to < from),
        "only down from the peak to 0: {steps:?}\n{stdout}"
    );
    assert_eq!(
        &after[to_zero + 1..],
        &[(0, 1)],
        "then back from zero to 1: {steps:?}\n{stdout}"
    );
    assert!(
        stdout.contains("demo: full cycle in")
            && stdout
                .contains("went from 1 to 6 replicas and, idle for the 20s retention period, to 0"),
        "{stdout}"
    );
    let queued = stdout
        .find("the endpoint picker queues")
        .unwrap_or_else(|| panic!("the load returns to a queue: {stdout}"));
    let back = stdout
        .find("demo: back from zero: llama-8b-decode has a ready replica")
        .unwrap_or_else(|| panic!("back from zero: {stdout}"));
    assert!(queued < back, "{stdout}");
    assert!(
        stdout.trim_end().ends_with("demo: script finished"),
        "{stdout}"
    );
}

/// The README's sample of the demo's output: the command it names (the
/// flags after `demo`, `--port` left out) and the lines of the block.
fn readme_sample() -> (Vec<String>, Vec<String>) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = "prints (a real run; times vary by a few seconds):";
    let at = readme
        .find(marker)
        .expect("README introduces the demo's sample output with its command");
    let intro = &readme[..at];
    let command = intro[intro
        .rfind("`cargo run --release -- demo")
        .expect("the command")..]
        .trim_start_matches('`');
    let command = &command[..command.find('`').unwrap()];
    let mut flags: Vec<String> = command
        .split_whitespace()
        .skip_while(|w| *w != "demo")
        .skip(1)
        .map(str::to_owned)
        .collect();
    if let Some(i) = flags.iter().position(|f| f == "--port") {
        flags.drain(i..i + 2);
    }
    let block = &readme[at..];
    let block = &block[block.find("```text\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    (flags, block.lines().map(str::to_owned).collect())
}

/// A line with the numbers that vary between runs (durations, queued
/// requests) replaced: replica counts and the retention stay.
fn normalized(line: &str) -> String {
    let mut out = String::new();
    let words: Vec<&str> = line.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let duration = w
            .trim_end_matches([':', ','])
            .strip_suffix('s')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            && words.get(i + 1) != Some(&"retention");
        let queued = words.get(i + 1) == Some(&"requests") && w.chars().all(|c| c.is_ascii_digit());
        if i > 0 {
            out.push(' ');
        }
        out.push_str(if duration {
            "<time>"
        } else if queued {
            "<n>"
        } else {
            w
        });
    }
    out
}

#[test]
fn demo_once_with_20s_phases_goes_up_to_the_peak_to_zero_and_back() {
    let (flags, sample) = readme_sample();
    assert_eq!(
        flags,
        ["--phase", "20s", "--once"],
        "the README's sample is from the run this test makes"
    );
    // demo_once adds --once.
    let flags: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .filter(|f| *f != "--once")
        .collect();
    let stdout = demo_once(&flags);
    assert_full_cycle(&stdout);
    // Every line of the README's sample is printed, in that order
    // (`...` stands for lines left out).
    let printed: Vec<String> = stdout.lines().map(normalized).collect();
    let mut from = 0;
    for line in sample.iter().filter(|l| l.trim() != "...") {
        let want = normalized(line);
        match printed[from..].iter().position(|p| *p == want) {
            Some(i) => from += i + 1,
            None => panic!("README line not printed (in order): {line:?}\nprinted:\n{stdout}"),
        }
    }
}

#[test]
fn normalizing_keeps_the_counts_that_matter() {
    assert_eq!(
        normalized("demo: full cycle in 83s: llama-8b-decode went from 1 to 6 replicas and, idle for the 20s retention period, to 0"),
        "demo: full cycle in <time> llama-8b-decode went from 1 to 6 replicas and, idle for the 20s retention period, to 0"
    );
    assert_eq!(
        normalized("demo: load returns with llama-8b-decode at 0 replicas: the endpoint picker queues 7 requests"),
        "demo: load returns with llama-8b-decode at 0 replicas: the endpoint picker queues <n> requests"
    );
}

#[test]
#[ignore = "takes three minutes; run with: cargo test --test demo -- --ignored"]
fn demo_once_with_default_phases_goes_up_to_the_peak_to_zero_and_back() {
    assert_full_cycle(&demo_once(&[]));
}

/// A `demo` process whose standard output goes to a file, read as it runs
/// (killed when dropped).
struct DemoRun {
    child: std::process::Child,
    stdout: std::path::PathBuf,
}

impl DemoRun {
    fn spawn(name: &str, flags: &[&str]) -> DemoRun {
        let port = free_port().to_string();
        let stdout = common::log_path(&format!("{name}-stdout"));
        let file = |p: &std::path::Path| std::fs::File::create(p).unwrap();
        let child = Command::new(common::BIN)
            .args(["demo", "--port", &port])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&common::log_path(name)))
            .spawn()
            .expect("start the demo");
        DemoRun { child, stdout }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status lines' (seconds since start, load in requests per second).
fn loads(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("demo: t=")?;
            let (t, rest) = rest.split_once("s load=")?;
            let load = rest.split_whitespace().next()?;
            Some((t.trim().parse().ok()?, load.parse().ok()?))
        })
        .collect()
}

/// `--phase` sets the pace of the scripted load: with 1s phases the ramp
/// up, hold and ramp down are over by 3s and the load is 0 from then on;
/// with 1h phases the ramp has barely left its base (1.6 of 16 req/s).
#[tokio::test]
async fn phase_sets_the_pace_of_the_scripted_load() {
    let short = DemoRun::spawn("demo-phase-1s", &["--phase", "1s"]);
    let long = DemoRun::spawn("demo-phase-1h", &["--phase", "1h"]);
    for demo in [&short, &long] {
        eventually(
            Duration::from_secs(60),
            "a status line at 7s or later",
            || async {
                loads(&demo.stdout())
                    .iter()
                    .any(|(t, _)| *t >= 7)
                    .then_some(())
            },
        )
        .await;
    }
    let (short, long) = (loads(&short.stdout()), loads(&long.stdout()));
    let after_script: Vec<f64> = short.iter().filter(|(t, _)| *t >= 4).map(|l| l.1).collect();
    assert!(
        !after_script.is_empty() && after_script.iter().all(|l| *l == 0.0),
        "1s phases: {short:?}"
    );
    assert!(
        !long.is_empty() && long.iter().all(|(_, l)| (1.6..=1.9).contains(l)),
        "1h phases: {long:?}"
    );
}

/// Whether the demo's HPA took the Deployment to 0 replicas.
fn went_to_zero(stdout: &str) -> bool {
    stdout
        .lines()
        .any(|l| l.starts_with("demo: HPA scales llama-8b-decode from ") && l.ends_with(" to 0"))
}

/// `--retention` is the scale-to-zero retention period: with 2s the idle
/// model goes to 0 (about a minute after the load, the analysis's window),
/// with 1h it does not in that time. `--once` ends the demo after the
/// model is back from zero; without it the demo goes on.
#[tokio::test]
async fn retention_decides_when_the_model_goes_to_zero_and_once_ends_the_demo() {
    let mut once = DemoRun::spawn(
        "demo-once",
        &["--phase", "1s", "--retention", "2s", "--once"],
    );
    let mut again = DemoRun::spawn("demo-again", &["--phase", "1s", "--retention", "2s"]);
    let mut kept = DemoRun::spawn(
        "demo-kept",
        &["--phase", "1s", "--retention", "1h", "--once"],
    );

    // --once: the demo exits by itself, after a full cycle and the way back.
    let status = eventually(Duration::from_secs(240), "the --once demo to exit", || {
        let status = once.child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    let out = once.stdout();
    assert!(status.success(), "{out}");
    assert!(went_to_zero(&out), "{out}");
    let back = out
        .find("demo: back from zero")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out[back..].trim_end().ends_with("demo: script finished"),
        "{out}"
    );

    // --retention 1h: meanwhile, the same script has not gone to zero.
    assert!(kept.running(), "{}", kept.stdout());
    let kept_out = kept.stdout();
    assert!(!went_to_zero(&kept_out), "{kept_out}");
    assert!(!kept_out.contains("full cycle"), "{kept_out}");

    // Without --once: back from zero, and a status line after it.
    eventually(
        Duration::from_secs(120),
        "a status line after the way back",
        || {
            let out = again.stdout();
            let after = out
                .find("demo: back from zero")
                .map(|i| out[i..].contains("\ndemo: t="));
            async move { after.filter(|a| *a).map(|_| ()) }
        },
    )
    .await;
    assert!(again.running(), "{}", again.stdout());
    assert!(
        !again.stdout().contains("script finished"),
        "{}",
        again.stdout()
    );
}
