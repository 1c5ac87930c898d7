//! Scale benchmark: one full fetch + analysis cycle for a generated fleet
//! (default 10,000 variants, 100,000 pods) through the real Prometheus
//! backend and the real analysis, against the emulated Prometheus API run
//! in a child process (the `fleet` example) so that its memory is not
//! counted here.
//!
//! ```text
//! cargo build --release --examples
//! target/release/examples/scale --variants 10000 --pods-per-variant 10 --cycles 5
//! ```
//!
//! Reports the inventory resolve time, per cycle the fetch time, analysis
//! time, CPU time (all threads, so that runs on a busy machine compare)
//! and queries sent, and the peak resident set size (VmHWM). `serve`
//! sets mimalloc's purge delay to 0 (src/main.rs); for the same memory
//! figures run this with `MIMALLOC_PURGE_DELAY=0`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::Parser;
use prometheus_client::registry::Registry;
use wva_metrics_server::collector::fetcher::{FetchSchedule, Fetcher};
use wva_metrics_server::collector::prometheus::{PrometheusBackend, PrometheusConfig};
use wva_metrics_server::collector::{FreshnessPolicy, MetricsCache};
use wva_metrics_server::decision::DecisionEngine;
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::inventory::{resolve, InventoryStore};
use wva_metrics_server::saturation::{PercentageAnalyzer, ThresholdConfig};
use wva_metrics_server::telemetry::Telemetry;

/// The server's allocator, so that time and memory are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    variants: usize,
    #[arg(long, default_value_t = 10)]
    pods_per_variant: usize,
    #[arg(long, default_value_t = 5)]
    cycles: usize,
}

/// Kills the child on every exit path.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of this process (every thread) so far, from /proc/self/stat
/// (user + system, in USER_HZ ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15; the first after ')' is 3.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn start_fleet(args: &Args) -> anyhow::Result<(ChildGuard, String)> {
    let exe = std::env::current_exe()?;
    let fleet_bin = exe.with_file_name("fleet");
    let mut child = Command::new(&fleet_bin)
        .args([
            "--variants",
            &args.variants.to_string(),
            "--pods-per-variant",
            &args.pods_per_variant.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start {} (build it with `cargo build --release --examples`): {e}",
                fleet_bin.display()
            )
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("fleet has no stdout"))?;
    let guard = ChildGuard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow::anyhow!("unexpected fleet output {line:?}"))?;
    Ok((guard, format!("http://{addr}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wva_metrics_server::certs::install_crypto_provider();
    let args = Args::parse();
    let fleet = Fleet::new(args.variants, args.pods_per_variant);
    let (_child, url) = start_fleet(&args)?;
    println!(
        "fleet: {} variants, {} pods, {} models; emulated Prometheus at {url}",
        fleet.variants,
        fleet.pod_count(),
        fleet.variants.div_ceil(fleet.variants_per_model)
    );
    println!("RSS at start: {}", mib(status_kib("VmRSS:")));
    println!(
        "inline sizes: Pod {} B (not kept), PodRecord {} B (kept per pod), ReplicaPod {} B",
        std::mem::size_of::<k8s_openapi::api::core::v1::Pod>(),
        std::mem::size_of::<wva_metrics_server::inventory::pods::PodRecord>(),
        std::mem::size_of::<wva_metrics_server::inventory::ReplicaPod>(),
    );

    let started = Instant::now();
    let objects = fleet.objects()?;
    let built = started.elapsed();
    let started = Instant::now();
    let (snapshot, problems) = resolve(&objects);
    let resolved = started.elapsed();
    drop(objects);
    anyhow::ensure!(problems.is_empty(), "fleet does not resolve: {problems:?}");
    println!(
        "inventory: objects built in {built:?}, resolved in {resolved:?} ({} variants, {} pods)",
        snapshot.variants().len(),
        snapshot.pods().len()
    );
    let inventory = Arc::new(InventoryStore::new());
    inventory.publish(snapshot);

    let mut registry = Registry::default();
    let telemetry = Telemetry::new(&mut registry);
    let backend = Arc::new(PrometheusBackend::new(
        PrometheusConfig {
            url,
            query_timeout: Duration::from_secs(30),
            ..PrometheusConfig::default()
        },
        telemetry,
    )?);
    let cache = Arc::new(MetricsCache::new());
    let fetcher = Fetcher {
        backend: backend.clone(),
        cache: Arc::clone(&cache),
        inventory: Arc::clone(&inventory),
        schedule: FetchSchedule::with_floor(Duration::from_secs(15)),
        freshness: FreshnessPolicy::default(),
        on_cycle: None,
    };
    let engine = DecisionEngine::new(
        Arc::clone(&inventory),
        Arc::clone(&cache),
        Arc::new(ArcSwap::from_pointee(ThresholdConfig::default())),
        Arc::new(PercentageAnalyzer),
        FreshnessPolicy::default(),
    );

    println!(
        "RSS after building the inventory: {}, peak so far {}",
        mib(status_kib("VmRSS:")),
        mib(status_kib("VmHWM:"))
    );
    // Reset the peak (VmHWM) so that the figure below is the cycles' own;
    // the pod projections above stand in for the sources' stores.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();

    // The gap the background fetcher would leave after each cycle at the
    // default floor (1 s): the decision lag is at most about gap + cycle.
    let schedule = FetchSchedule::with_floor(Duration::from_secs(1));
    println!("cycle  fetch_ms  analysis_ms  total_ms  cpu_ms  gap_ms  queries  replicas_updated  models_decided  scale_changes");
    for cycle in 1..=args.cycles {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        let cpu0 = cpu_time();
        let report = fetcher.cycle().await?;
        let fetched = t0.elapsed();
        let t1 = Instant::now();
        let outcomes = engine.decide_all();
        let analysed = t1.elapsed();
        // CPU of the cycle and the analysis on all threads: on a shared
        // machine the wall times above grow with the other load, this not.
        let cpu = cpu_time().zip(cpu0).map_or("n/a".to_owned(), |(b, a)| {
            format!("{:.0}", (b - a).as_secs_f64() * 1e3)
        });
        let ok: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        let changes = ok
            .iter()
            .flat_map(|o| o.decisions.iter())
            .filter(|d| d.desired != d.ready)
            .count();
        println!(
            "{cycle:>5}  {:>8.1}  {:>11.1}  {:>8.1}  {cpu:>6}  {:>6.0}  {:>7}  {:>16}  {:>14}  {changes:>13}",
            fetched.as_secs_f64() * 1e3,
            analysed.as_secs_f64() * 1e3,
            (fetched + analysed).as_secs_f64() * 1e3,
            schedule.gap_after(fetched).as_secs_f64() * 1e3,
            report.requests,
            report.replicas_updated,
            ok.len(),
        );
        anyhow::ensure!(
            report.replicas_updated == fleet.pod_count(),
            "only {} of {} replicas were updated",
            report.replicas_updated,
            fleet.pod_count()
        );
    }
    println!(
        "RSS now: {}; peak RSS during the cycles{}: {}",
        mib(status_kib("VmRSS:")),
        if reset {
            ""
        } else {
            " (peak not reset: includes the set-up)"
        },
        mib(status_kib("VmHWM:"))
    );
    Ok(())
}
