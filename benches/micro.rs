//! Micro-benchmarks of the pure hot paths (docs/benchmarks.md):
//! `cargo bench --bench micro`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wva_metrics_server::collector::exposition::parse_vllm_page;
use wva_metrics_server::collector::prometheus::queries::QuerySignal;
use wva_metrics_server::collector::prometheus::results::decode;
use wva_metrics_server::emulator::fleet::Fleet;
use wva_metrics_server::emulator::prometheus_api::render_signal;
use wva_metrics_server::emulator::render::{render, Counters};
use wva_metrics_server::emulator::ReplicaState;
use wva_metrics_server::k8s::quantity::format_milli;
use wva_metrics_server::k8s::selector::LabelSelector;
use wva_metrics_server::saturation::{
    ModelInput, PercentageAnalyzer, ReplicaLoad, SaturationAnalyzer, SaturationThresholds,
    VariantState,
};

/// The labels every served item carries, as for a real variant.
fn variant_labels() -> BTreeMap<String, String> {
    [
        ("accelerator_type", "H100"),
        ("exported_namespace", "llm-prod"),
        ("model_id", "meta-llama/Llama-3.1-8B-Instruct"),
        ("namespace", "llm-prod"),
        ("target_kind", "Deployment"),
        ("target_name", "llama-8b-decode"),
        ("variant_name", "llama-8b-h100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn selector(c: &mut Criterion) {
    let labels = variant_labels();
    let hpa = "target_name=llama-8b-decode";
    let rich =
        "target_name=llama-8b-decode,accelerator_type in (A100,H100),!excluded,model_id!=other";
    let mut g = c.benchmark_group("selector");
    for (name, text) in [("hpa", hpa), ("rich", rich)] {
        g.bench_function(format!("parse+match/{name}"), |b| {
            b.iter(|| {
                let s = LabelSelector::parse(black_box(text))
                    .unwrap_or_else(|_| LabelSelector::everything());
                black_box(s.matches(&labels))
            })
        });
    }
    g.finish();
}

fn analysis(c: &mut Criterion) {
    // 100 replicas over 3 variants, loads spread across the thresholds.
    let variants: Vec<VariantState> = ["a100", "h100", "l40s"]
        .iter()
        .enumerate()
        .map(|(i, n)| VariantState {
            name: format!("llama-{n}"),
            cost: 10.0 + 5.0 * i as f64,
            min_replicas: 1,
            max_replicas: 80,
            spec_replicas: if i == 2 { 34 } else { 33 },
            ready_replicas: if i == 2 { 34 } else { 33 },
        })
        .collect();
    let replicas: Vec<ReplicaLoad> = (0..100)
        .map(|i| ReplicaLoad {
            pod: format!("pod-{i}"),
            variant: variants[i % 3].name.clone(),
            kv: (i as f64 * 0.618_033_988_75).fract(),
            queue: (i % 7) as f64,
        })
        .collect();
    let thresholds = SaturationThresholds::default();
    c.bench_function("analysis/100 replicas x 3 variants", |b| {
        b.iter(|| {
            black_box(PercentageAnalyzer.decide(&ModelInput {
                replicas: black_box(&replicas),
                variants: &variants,
                thresholds: &thresholds,
            }))
        })
    });
}

fn quantity(c: &mut Criterion) {
    let values: [i64; 6] = [0, 1000, 1500, 2333, 999_999_000, -250];
    c.bench_function("quantity/format_milli x6", |b| {
        b.iter(|| {
            for v in values {
                black_box(format_milli(black_box(v)));
            }
        })
    });
}

/// A vLLM `/metrics` page of real size: the emulator's families plus the
/// latency and token histograms (one engine) that vLLM 0.8+ exports,
/// about 60 KB.
fn vllm_page() -> String {
    let state = ReplicaState {
        kv: 0.42,
        waiting: 3.0,
        running: 17.0,
    };
    let mut page = render(
        "meta-llama/Llama-3.1-8B-Instruct",
        &state,
        &Counters::default(),
    );
    let histograms = [
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_inference_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
        "vllm:request_params_n",
        "vllm:request_params_max_tokens",
        "vllm:iteration_tokens_total",
        "vllm:request_prompt_tokens_hist",
        "vllm:request_generation_tokens_hist",
    ];
    for h in histograms {
        let _ = writeln!(page, "# HELP {h} Histogram.\n# TYPE {h} histogram");
        let mut cumulative = 0u64;
        for i in 0..28 {
            cumulative += 37 * (i + 1);
            let le = 0.001 * 2f64.powi(i as i32);
            let _ = writeln!(
                page,
                "{h}_bucket{{engine=\"0\",le=\"{le}\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {cumulative}"
            );
        }
        let _ = writeln!(page, "{h}_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {cumulative}");
        let _ = writeln!(
            page,
            "{h}_sum{{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} 1234.5"
        );
        let _ = writeln!(page, "{h}_count{{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"}} {cumulative}");
    }
    for i in 0..3 {
        let _ = writeln!(page, "# TYPE python_gc_objects_collected_total counter\npython_gc_objects_collected_total{{generation=\"{i}\"}} 12345.0");
    }
    page
}

fn exposition(c: &mut Criterion) {
    let page = vllm_page();
    let mut g = c.benchmark_group("exposition");
    g.throughput(Throughput::Bytes(page.len() as u64));
    g.bench_function(format!("parse vLLM page ({} bytes)", page.len()), |b| {
        b.iter(|| black_box(parse_vllm_page(black_box(&page))))
    });
    g.finish();
}

fn prometheus_answer(c: &mut Criterion) {
    let fleet = Fleet::new(1000, 10);
    let body = render_signal(&fleet, QuerySignal::KvUsage, 1_700_000_000.0);
    let mut g = c.benchmark_group("prometheus answer");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode 10,000 series", |b| {
        b.iter(|| black_box(decode(black_box(body.as_bytes()))))
    });
    g.finish();
}

criterion_group!(
    benches,
    selector,
    analysis,
    quantity,
    exposition,
    prometheus_answer
);
criterion_main!(benches);
