//! Renders a vLLM-format `/metrics` page (text format 0.0.4), with the
//! names, types and labels vLLM v0.10+ exposes.

use std::fmt::Write;

use super::state::{prom_float, ReplicaState};
use crate::saturation::v2::KvCacheConfig;

/// Token-count histogram buckets, as vLLM uses for request tokens.
pub(crate) const TOKEN_BUCKETS: [f64; 11] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];
/// Request-latency histogram buckets in seconds: the first of those vLLM
/// uses for `vllm:request_prefill_time_seconds` (its `request_latency_buckets`).
pub(crate) const LATENCY_BUCKETS: [f64; 8] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0];
/// Prompt tokens an emulated replica prefills per second unless told
/// otherwise (as `simulate`'s replica model: `prefill_tokens_per_second`).
pub(crate) const DEFAULT_PREFILL_TOKENS_PER_SECOND: f64 = 8000.0;
/// Prompt and generated tokens of every emulated request.
pub(crate) const PROMPT_TOKENS: f64 = 512.0;
pub(crate) const GENERATED_TOKENS: f64 = 128.0;
/// KV-cache blocks of the emulated GPU and their size.
pub(crate) const NUM_GPU_BLOCKS: u64 = 8192;
pub(crate) const BLOCK_SIZE: u64 = 16;

/// Share of each emulated prompt found in the prefix cache
/// (`vllm:prefix_cache_hits_total` / `vllm:prefix_cache_queries_total`).
pub const PREFIX_CACHE_HIT_FRACTION: f64 = 0.25;

/// Counters that only grow.
#[derive(Debug, Clone)]
pub struct Counters {
    pub(crate) success_stop: f64,
    pub(crate) success_length: f64,
    pub(crate) success_abort: f64,
    pub(crate) prompt_tokens: f64,
    /// Prompt tokens looked up in the prefix cache, and those found.
    pub(crate) prefix_cache_queries: f64,
    pub(crate) prefix_cache_hits: f64,
    pub(crate) generation_tokens: f64,
    pub(crate) prompt_hist: Histogram<{ TOKEN_BUCKETS.len() }>,
    pub(crate) generation_hist: Histogram<{ TOKEN_BUCKETS.len() }>,
    /// `vllm:request_prefill_time_seconds`: each finished request's prompt
    /// tokens over `prefill_tokens_per_second`.
    pub(crate) prefill_hist: Histogram<{ LATENCY_BUCKETS.len() }>,
    /// The emulated replica's prefill throughput, in prompt tokens per second.
    pub(crate) prefill_tokens_per_second: f64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            success_stop: 0.0,
            success_length: 0.0,
            success_abort: 0.0,
            prompt_tokens: 0.0,
            prefix_cache_queries: 0.0,
            prefix_cache_hits: 0.0,
            generation_tokens: 0.0,
            prompt_hist: Histogram::default(),
            generation_hist: Histogram::default(),
            prefill_hist: Histogram::default(),
            prefill_tokens_per_second: DEFAULT_PREFILL_TOKENS_PER_SECOND,
        }
    }
}

/// Cumulative bucket counts (of `N` upper bounds), sum and count of a histogram.
#[derive(Debug, Clone)]
pub(crate) struct Histogram<const N: usize> {
    pub(crate) buckets: [u64; N],
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: [0; N],
            count: 0,
            sum: 0.0,
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Records `times` observations of `v` against the upper `bounds`.
    pub(crate) fn observe(&mut self, bounds: &[f64; N], v: f64, times: u64) {
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += times;
            }
        }
        self.count += times;
        self.sum += v * times as f64;
    }
}

impl Counters {
    /// Advances the counters by `finished` requests with typical lengths.
    pub(crate) fn finish_requests(&mut self, finished: u64) {
        if finished == 0 {
            return;
        }
        let (prompt, generated) = (PROMPT_TOKENS, GENERATED_TOKENS);
        // One request's prefill: its prompt at the replica's throughput.
        let prefill_seconds = prompt / self.prefill_tokens_per_second.max(f64::MIN_POSITIVE);
        self.success_stop += finished as f64 * 0.9;
        self.success_length += finished as f64 * 0.1;
        self.prompt_tokens += prompt * finished as f64;
        self.prefix_cache_queries += prompt * finished as f64;
        self.prefix_cache_hits += prompt * PREFIX_CACHE_HIT_FRACTION * finished as f64;
        self.generation_tokens += generated * finished as f64;
        self.prompt_hist.observe(&TOKEN_BUCKETS, prompt, finished);
        self.generation_hist
            .observe(&TOKEN_BUCKETS, generated, finished);
        self.prefill_hist
            .observe(&LATENCY_BUCKETS, prefill_seconds, finished);
    }
}

/// The endpoint picker's flow-control gauges for `model` (one fairness ID
/// and priority), as gateway-api-inference-extension exports them.
pub(crate) fn flow_control(model: &str, requests: f64) -> String {
    let l = format!(
        "fairness_id=\"default\",priority=\"0\",inference_pool=\"emulated\",model_name=\"{m}\",target_model_name=\"{m}\"",
        m = escape(model)
    );
    format!(
        "# TYPE inference_extension_flow_control_queue_size gauge\ninference_extension_flow_control_queue_size{{{l}}} {}\n# TYPE inference_extension_flow_control_queue_bytes gauge\ninference_extension_flow_control_queue_bytes{{{l}}} {}\n",
        prom_float(requests),
        prom_float(requests * 2048.0)
    )
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole page, with the default KV cache ([`NUM_GPU_BLOCKS`] x [`BLOCK_SIZE`]).
pub fn render(model: &str, s: &ReplicaState, c: &Counters) -> String {
    render_with_cache(
        model,
        s,
        c,
        KvCacheConfig {
            num_gpu_blocks: NUM_GPU_BLOCKS,
            block_size: BLOCK_SIZE,
        },
    )
}

/// The whole page, with `vllm:cache_config_info` naming `cache`.
pub(crate) fn render_with_cache(
    model: &str,
    s: &ReplicaState,
    c: &Counters,
    cache: KvCacheConfig,
) -> String {
    let (num_gpu_blocks, block_size) = (cache.num_gpu_blocks, cache.block_size);
    let l = format!("engine=\"0\",model_name=\"{}\"", escape(model));
    let mut o = String::with_capacity(8 * 1024);
    let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{l}}} {}",
            prom_float(v)
        );
    };
    gauge(
        &mut o,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        s.running,
    );
    gauge(
        &mut o,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        s.waiting,
    );
    gauge(
        &mut o,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        s.kv,
    );
    let _ = writeln!(o, "# HELP vllm:request_success_total Count of successfully processed requests.\n# TYPE vllm:request_success_total counter");
    for (reason, v) in [
        ("abort", c.success_abort),
        ("length", c.success_length),
        ("stop", c.success_stop),
    ] {
        let _ = writeln!(
            o,
            "vllm:request_success_total{{{l},finished_reason=\"{reason}\"}} {}",
            v.floor()
        );
    }
    for (name, help, v) in [
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            c.prompt_tokens,
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            c.generation_tokens,
        ),
        (
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            c.prefix_cache_queries,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            c.prefix_cache_hits,
        ),
    ] {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{l}}} {}",
            v.floor()
        );
    }
    let histogram =
        |o: &mut String, name: &str, help: &str, bounds: &[f64], h: (&[u64], u64, f64)| {
            let (buckets, count, sum) = h;
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (b, n) in bounds.iter().zip(buckets) {
                let _ = writeln!(o, "{name}_bucket{{{l},le=\"{b:.1}\"}} {n}");
            }
            let _ = writeln!(o, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
            let _ = writeln!(o, "{name}_sum{{{l}}} {sum}");
            let _ = writeln!(o, "{name}_count{{{l}}} {count}");
        };
    for (name, help, h) in [
        (
            "vllm:request_prompt_tokens",
            "Number of prefill tokens processed.",
            &c.prompt_hist,
        ),
        (
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            &c.generation_hist,
        ),
    ] {
        histogram(
            &mut o,
            name,
            help,
            &TOKEN_BUCKETS,
            (&h.buckets, h.count, h.sum),
        );
    }
    let p = &c.prefill_hist;
    histogram(
        &mut o,
        "vllm:request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
        &LATENCY_BUCKETS,
        (&p.buckets, p.count, p.sum),
    );
    let _ = writeln!(
        o,
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{block_size=\"{block_size}\",cache_dtype=\"auto\",engine=\"0\",gpu_memory_utilization=\"0.9\",num_cpu_blocks=\"0\",num_gpu_blocks=\"{num_gpu_blocks}\",prefix_caching_hash_algo=\"builtin\",swap_space=\"4\"}} 1.0"
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_carries_the_vllm_series() {
        let mut c = Counters::default();
        c.finish_requests(10);
        let page = render(
            "meta/llama",
            &ReplicaState {
                kv: 0.25,
                waiting: 3.0,
                running: 2.0,
            },
            &c,
        );
        for line in [
            "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"meta/llama\"} 0.25",
            "vllm:num_requests_waiting{engine=\"0\",model_name=\"meta/llama\"} 3",
            "vllm:request_success_total{engine=\"0\",model_name=\"meta/llama\",finished_reason=\"stop\"} 9",
            "vllm:request_prompt_tokens_count{engine=\"0\",model_name=\"meta/llama\"} 10",
            "# TYPE vllm:request_generation_tokens histogram",
            "vllm:prefix_cache_queries_total{engine=\"0\",model_name=\"meta/llama\"} 5120",
            "vllm:prefix_cache_hits_total{engine=\"0\",model_name=\"meta/llama\"} 1280",
            // 512 prompt tokens at 8,000 tokens/s: 64 ms of prefill each.
            "# TYPE vllm:request_prefill_time_seconds histogram",
            "vllm:request_prefill_time_seconds_bucket{engine=\"0\",model_name=\"meta/llama\",le=\"0.3\"} 10",
            "vllm:request_prefill_time_seconds_bucket{engine=\"0\",model_name=\"meta/llama\",le=\"+Inf\"} 10",
            "vllm:request_prefill_time_seconds_count{engine=\"0\",model_name=\"meta/llama\"} 10",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
        }
        let nan = render(
            "m",
            &ReplicaState {
                kv: f64::NAN,
                waiting: f64::INFINITY,
                running: 0.0,
            },
            &c,
        );
        assert!(nan.contains("vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} NaN"));
        assert!(nan.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} +Inf"));
    }

    /// The page reads back through the scrape backend's parser as the
    /// replica's state and counters.
    #[test]
    fn the_page_reads_back_through_the_scrape_parser() {
        let mut c = Counters::default();
        c.finish_requests(7);
        let state = ReplicaState {
            kv: 0.42,
            waiting: 2.0,
            running: 3.0,
        };
        let p = crate::collector::exposition::parse_vllm_page(&render("meta/llama", &state, &c))
            .unwrap();
        assert_eq!(p.model_name.as_deref(), Some("meta/llama"));
        assert_eq!(
            (p.kv_usage, p.queue_waiting, p.running),
            (Some(0.42), Some(2.0), Some(3.0))
        );
        assert!(p.rejected.is_empty());
        // 7 finished: 6.3 stop + 0.7 length, rendered floored: 6 + 0 + 0.
        assert_eq!(p.success_total, Some(6.0));
        assert_eq!(p.prompt_tokens, Some((3584.0, 7.0)));
        assert_eq!(p.generation_tokens, Some((896.0, 7.0)));
        let (prefill_sum, prefill_count) = p.prefill_time.unwrap();
        assert_eq!(prefill_count, 7.0);
        assert!(
            (prefill_sum - 7.0 * 512.0 / 8000.0).abs() < 1e-12,
            "{prefill_sum}"
        );
        let cache = p.kv_cache.unwrap();
        assert_eq!(
            (cache.num_gpu_blocks, cache.block_size),
            (NUM_GPU_BLOCKS, BLOCK_SIZE)
        );
    }

    /// Prefill seconds follow the prompt tokens and the throughput: a
    /// slower replica's requests land in higher buckets.
    #[test]
    fn prefill_time_is_the_prompt_over_the_throughput() {
        let mut c = Counters {
            prefill_tokens_per_second: 640.0,
            ..Counters::default()
        };
        c.finish_requests(3);
        // 512 / 640 = 0.8 s each: in the 0.8 s bucket and above, not below.
        assert_eq!(c.prefill_hist.buckets[..3], [0, 0, 3]);
        assert_eq!(c.prefill_hist.count, 3);
        assert!((c.prefill_hist.sum - 2.4).abs() < 1e-12);
        let page = render(
            "m",
            &ReplicaState {
                kv: 0.1,
                waiting: 0.0,
                running: 1.0,
            },
            &c,
        );
        assert!(page
            .lines()
            .any(|l| l == "vllm:request_prefill_time_seconds_bucket{engine=\"0\",model_name=\"m\",le=\"0.5\"} 0"));
        assert_eq!(Counters::default().prefill_tokens_per_second, 8000.0);
        c.finish_requests(0);
        assert_eq!(
            c.prefill_hist.count, 3,
            "nothing finished, nothing observed"
        );
    }
}
