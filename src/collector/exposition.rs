//! Reads the saturation signals out of a vLLM `/metrics` page (Prometheus
//! text exposition format), validating every sample.

use super::sample::{RejectReason, SampleCheck, Signal};
use super::text_format::for_each_sample;
use crate::saturation::v2::KvCacheConfig;

/// The endpoint picker's flow-control gauges (gateway-api-inference-extension,
/// labels `fairness_id`, `priority`, `inference_pool`, `model_name`,
/// `target_model_name`).
pub(crate) const FLOW_CONTROL_QUEUE_SIZE: &str = "inference_extension_flow_control_queue_size";
pub(crate) const FLOW_CONTROL_QUEUE_BYTES: &str = "inference_extension_flow_control_queue_bytes";

/// The signals of one page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VllmPage {
    pub model_name: Option<String>,
    pub kv_usage: Option<f64>,
    pub queue_waiting: Option<f64>,
    pub running: Option<f64>,
    /// `vllm:cache_config_info{num_gpu_blocks, block_size}`, when both
    /// labels are positive integers (vLLM writes "None" before profiling).
    pub kv_cache: Option<KvCacheConfig>,
    /// `vllm:request_success_total` summed over its series (every
    /// `finished_reason`), when the page has it and every value is valid.
    pub(crate) success_total: Option<f64>,
    /// `vllm:prefix_cache_hits_total` and `vllm:prefix_cache_queries_total`
    /// summed over engines (counters, in tokens), when both are finite and
    /// non-negative: the hit rate is their increase over a window.
    pub prefix_cache: Option<PrefixCacheCounters>,
    /// `vllm:request_prompt_tokens` and `vllm:request_generation_tokens`
    /// histograms: (sum, count) over engines, when finite and non-negative.
    pub prompt_tokens: Option<(f64, f64)>,
    pub generation_tokens: Option<(f64, f64)>,
    /// `vllm:request_prefill_time_seconds` histogram: (sum in seconds,
    /// count) over engines, when finite and non-negative.
    pub prefill_time: Option<(f64, f64)>,
    pub rejected: Vec<RejectedSample>,
}

/// Prefix-cache counters of one page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PrefixCacheCounters {
    pub hits: f64,
    pub queries: f64,
}

/// A sample that failed its check.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSample {
    pub(crate) signal: Signal,
    pub(crate) reason: RejectReason,
    pub(crate) value: f64,
}

/// Why a page could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpositionError {
    #[error("malformed metrics page: {0}")]
    Malformed(String),
    #[error("the page has no vLLM saturation series (vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc, vllm:num_requests_waiting)")]
    NoVllmSeries,
}

const KV: &str = "vllm:kv_cache_usage_perc";
const KV_OLD: &str = "vllm:gpu_cache_usage_perc";
const WAITING: &str = "vllm:num_requests_waiting";
const RUNNING: &str = "vllm:num_requests_running";
const CACHE_CONFIG: &str = "vllm:cache_config_info";
const SUCCESS: &str = "vllm:request_success_total";
const PREFIX_HITS: &str = "vllm:prefix_cache_hits_total";
const PREFIX_QUERIES: &str = "vllm:prefix_cache_queries_total";
const PROMPT_TOKENS_SUM: &str = "vllm:request_prompt_tokens_sum";
const PROMPT_TOKENS_COUNT: &str = "vllm:request_prompt_tokens_count";
const GENERATION_TOKENS_SUM: &str = "vllm:request_generation_tokens_sum";
const GENERATION_TOKENS_COUNT: &str = "vllm:request_generation_tokens_count";
const PREFILL_TIME_SUM: &str = "vllm:request_prefill_time_seconds_sum";
const PREFILL_TIME_COUNT: &str = "vllm:request_prefill_time_seconds_count";

/// A sum over the series of a counter (or a histogram's `_sum` or
/// `_count`): unknown when absent or when any series is not a finite
/// non-negative number, which a counter never is.
#[derive(Debug, Clone, Copy, Default)]
struct CounterSum {
    seen: bool,
    invalid: bool,
    sum: f64,
}

impl CounterSum {
    fn add(&mut self, v: f64) {
        self.seen = true;
        if v.is_finite() && v >= 0.0 {
            self.sum += v;
        } else {
            self.invalid = true;
        }
    }

    fn total(self) -> Option<f64> {
        (self.seen && !self.invalid).then_some(self.sum)
    }
}

/// A histogram's `_sum` and `_count` over its series.
#[derive(Debug, Clone, Copy, Default)]
struct HistogramTotals {
    sum: CounterSum,
    count: CounterSum,
}

impl HistogramTotals {
    fn totals(self) -> Option<(f64, f64)> {
        Some((self.sum.total()?, self.count.total()?))
    }
}

/// The KV-cache size in the labels of a `vllm:cache_config_info` sample.
pub(crate) fn kv_cache_from_labels<'a>(
    mut label: impl FnMut(&str) -> Option<&'a str>,
) -> Option<KvCacheConfig> {
    let num = |v: Option<&str>| v?.trim().parse::<u64>().ok().filter(|n| *n > 0);
    KvCacheConfig {
        num_gpu_blocks: num(label("num_gpu_blocks"))?,
        block_size: num(label("block_size"))?,
    }
    .plausible()
}

/// Parses a page. A page that does not parse is an error as a whole: a
/// half-written page must not steer scaling. When several series of one
/// signal are present (several engines), the largest valid value counts.
pub fn parse_vllm_page(text: &str) -> Result<VllmPage, ExpositionError> {
    let mut page = VllmPage::default();
    let mut kv_old = None;
    let mut seen = false;
    let (mut success, mut hits, mut queries) = <(CounterSum, CounterSum, CounterSum)>::default();
    let (mut prompt, mut generation, mut prefill) =
        <(HistogramTotals, HistogramTotals, HistogramTotals)>::default();
    for_each_sample(text, |sample| {
        let value = sample.value;
        match sample.name {
            SUCCESS => success.add(value),
            PREFIX_HITS => hits.add(value),
            PREFIX_QUERIES => queries.add(value),
            PROMPT_TOKENS_SUM => prompt.sum.add(value),
            PROMPT_TOKENS_COUNT => prompt.count.add(value),
            GENERATION_TOKENS_SUM => generation.sum.add(value),
            GENERATION_TOKENS_COUNT => generation.count.add(value),
            PREFILL_TIME_SUM => prefill.sum.add(value),
            PREFILL_TIME_COUNT => prefill.count.add(value),
            CACHE_CONFIG => {
                // Several engines: the largest cache (they are normally equal).
                let found = kv_cache_from_labels(|k| sample.label(k));
                if found.map(|c| c.total_tokens()) > page.kv_cache.map(|c| c.total_tokens()) {
                    page.kv_cache = found;
                }
            }
            _ => {}
        }
        let (signal, slot) = match sample.name {
            KV => (Signal::KvCacheUsage, &mut page.kv_usage),
            KV_OLD => (Signal::KvCacheUsage, &mut kv_old),
            WAITING => (Signal::QueueWaiting, &mut page.queue_waiting),
            RUNNING => (Signal::Running, &mut page.running),
            _ => return Ok(()),
        };
        seen |= signal != Signal::Running;
        if page.model_name.is_none() {
            page.model_name = sample.label("model_name").map(str::to_owned);
        }
        match signal.check(value) {
            Ok(v) => *slot = Some(slot.map_or(v, |old: f64| old.max(v))),
            Err(reason) => page.rejected.push(RejectedSample {
                signal,
                reason,
                value,
            }),
        }
        Ok(())
    })
    .map_err(|e| ExpositionError::Malformed(e.to_string()))?;
    if page.kv_usage.is_none() {
        page.kv_usage = kv_old;
    }
    page.success_total = success.total();
    if let (Some(hits), Some(queries)) = (hits.total(), queries.total()) {
        page.prefix_cache = Some(PrefixCacheCounters { hits, queries });
    }
    page.prompt_tokens = prompt.totals();
    page.generation_tokens = generation.totals();
    page.prefill_time = prefill.totals();
    if !seen {
        return Err(ExpositionError::NoVllmSeries);
    }
    Ok(page)
}

/// Requests queued in the endpoint picker's flow control, per model, from
/// its `/metrics` page: `inference_extension_flow_control_queue_size` and
/// `_bytes`, summed per `target_model_name` (or `model_name` where the
/// target is empty) over fairness IDs, priorities and pools.
pub(crate) fn parse_flow_control_page(
    text: &str,
) -> Result<std::collections::HashMap<String, crate::saturation::v2::SchedulerQueue>, ExpositionError>
{
    let mut out: std::collections::HashMap<String, crate::saturation::v2::SchedulerQueue> =
        std::collections::HashMap::new();
    for_each_sample(text, |sample| {
        let bytes = match sample.name {
            FLOW_CONTROL_QUEUE_SIZE => false,
            FLOW_CONTROL_QUEUE_BYTES => true,
            _ => return Ok(()),
        };
        let label = |k: &str| sample.label(k).filter(|v| !v.is_empty());
        let Some(model) = label("target_model_name").or_else(|| label("model_name")) else {
            return Ok(());
        };
        let value = sample.value;
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "{} has the value {value} (a queue is a finite count >= 0)",
                sample.name
            ));
        }
        let q = out.entry(model.to_owned()).or_default();
        if bytes {
            q.bytes += value;
        } else {
            q.requests += value;
        }
        Ok(())
    })
    .map_err(|e| ExpositionError::Malformed(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text format's spelling of a float (NaN and +Inf included).
    fn prom_float(v: f64) -> String {
        match v {
            v if v.is_nan() => "NaN".to_owned(),
            f64::INFINITY => "+Inf".to_owned(),
            v => format!("{v}"),
        }
    }

    /// A vLLM page (the series and labels vLLM v0.10 writes, one engine)
    /// of a replica with `kv` KV-cache usage, `waiting` queued and 3
    /// running requests, after 7 finished requests (6 stopped, 0.7 by
    /// length rounded down) of 512 prompt tokens (a quarter of them found
    /// in the prefix cache) and 128 generated tokens, each prefilled in 64 ms.
    fn emulated(kv: f64, waiting: f64) -> String {
        let l = "engine=\"0\",model_name=\"meta/llama\"";
        let (kv, waiting) = (prom_float(kv), prom_float(waiting));
        format!(
            "# TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{{l}}} 3\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{{l}}} {waiting}\n\
             # TYPE vllm:kv_cache_usage_perc gauge\n\
             vllm:kv_cache_usage_perc{{{l}}} {kv}\n\
             # TYPE vllm:request_success_total counter\n\
             vllm:request_success_total{{{l},finished_reason=\"abort\"}} 0\n\
             vllm:request_success_total{{{l},finished_reason=\"length\"}} 0\n\
             vllm:request_success_total{{{l},finished_reason=\"stop\"}} 6\n\
             # TYPE vllm:prefix_cache_queries_total counter\n\
             vllm:prefix_cache_queries_total{{{l}}} 3584\n\
             # TYPE vllm:prefix_cache_hits_total counter\n\
             vllm:prefix_cache_hits_total{{{l}}} 896\n\
             # TYPE vllm:request_prompt_tokens histogram\n\
             vllm:request_prompt_tokens_bucket{{{l},le=\"500.0\"}} 0\n\
             vllm:request_prompt_tokens_bucket{{{l},le=\"1000.0\"}} 7\n\
             vllm:request_prompt_tokens_bucket{{{l},le=\"+Inf\"}} 7\n\
             vllm:request_prompt_tokens_sum{{{l}}} 3584\n\
             vllm:request_prompt_tokens_count{{{l}}} 7\n\
             # TYPE vllm:request_generation_tokens histogram\n\
             vllm:request_generation_tokens_bucket{{{l},le=\"100.0\"}} 0\n\
             vllm:request_generation_tokens_bucket{{{l},le=\"200.0\"}} 7\n\
             vllm:request_generation_tokens_bucket{{{l},le=\"+Inf\"}} 7\n\
             vllm:request_generation_tokens_sum{{{l}}} 896\n\
             vllm:request_generation_tokens_count{{{l}}} 7\n\
             # TYPE vllm:request_prefill_time_seconds histogram\n\
             vllm:request_prefill_time_seconds_bucket{{{l},le=\"0.3\"}} 7\n\
             vllm:request_prefill_time_seconds_bucket{{{l},le=\"+Inf\"}} 7\n\
             vllm:request_prefill_time_seconds_sum{{{l}}} 0.448\n\
             vllm:request_prefill_time_seconds_count{{{l}}} 7\n\
             # TYPE vllm:cache_config_info gauge\n\
             vllm:cache_config_info{{block_size=\"16\",cache_dtype=\"auto\",engine=\"0\",num_gpu_blocks=\"8192\"}} 1.0\n"
        )
    }

    #[test]
    fn reads_the_success_counter_and_the_flow_control_queues() {
        // 7 finished: 6.3 stop + 0.7 length, rendered floored: 6 + 0 + 0.
        let p = parse_vllm_page(&emulated(0.1, 0.0)).unwrap();
        assert_eq!(p.success_total, Some(6.0));
        let epp = "# TYPE inference_extension_flow_control_queue_size gauge\n\
inference_extension_flow_control_queue_size{fairness_id=\"a\",priority=\"0\",inference_pool=\"p\",model_name=\"alias\",target_model_name=\"meta/llama\"} 2\n\
inference_extension_flow_control_queue_size{fairness_id=\"b\",priority=\"1\",inference_pool=\"p\",model_name=\"meta/llama\",target_model_name=\"\"} 1\n\
inference_extension_flow_control_queue_size{fairness_id=\"b\",priority=\"1\",inference_pool=\"p\",model_name=\"other\",target_model_name=\"\"} 0\n\
# TYPE inference_extension_flow_control_queue_bytes gauge\n\
inference_extension_flow_control_queue_bytes{fairness_id=\"a\",priority=\"0\",inference_pool=\"p\",model_name=\"alias\",target_model_name=\"meta/llama\"} 4096\n";
        let q = parse_flow_control_page(epp).unwrap();
        let llama = q["meta/llama"];
        assert_eq!((llama.requests, llama.bytes), (3.0, 4096.0));
        assert_eq!(q["other"].requests, 0.0);
        assert!(!q.contains_key("alias"));
        assert!(parse_flow_control_page(
            "inference_extension_flow_control_queue_size{model_name=\"m\"} -1\n"
        )
        .is_err());
    }

    #[test]
    fn reads_a_full_vllm_page() {
        let p = parse_vllm_page(&emulated(0.42, 2.0)).unwrap();
        assert_eq!(p.model_name.as_deref(), Some("meta/llama"));
        assert_eq!(
            (p.kv_usage, p.queue_waiting, p.running),
            (Some(0.42), Some(2.0), Some(3.0))
        );
        assert!(p.rejected.is_empty());
        // 7 requests of 512 prompt and 128 generated tokens.
        assert_eq!(p.prompt_tokens, Some((3584.0, 7.0)));
        assert_eq!(p.generation_tokens, Some((896.0, 7.0)));
        // 7 prefills of 64 ms.
        assert_eq!(p.prefill_time, Some((0.448, 7.0)));
        // A quarter of the prompt tokens were cached.
        assert_eq!(
            p.prefix_cache,
            Some(PrefixCacheCounters {
                hits: 896.0,
                queries: 3584.0
            })
        );
    }

    #[test]
    fn prefix_cache_counters_sum_engines_and_refuse_bad_values() {
        let page = |hits: &str, queries: &str| {
            format!(
                "vllm:num_requests_waiting{{model_name=\"m\"}} 0\n\
                 vllm:prefix_cache_hits_total{{engine=\"0\",model_name=\"m\"}} 10\n\
                 vllm:prefix_cache_hits_total{{engine=\"1\",model_name=\"m\"}} {hits}\n\
                 vllm:prefix_cache_queries_total{{engine=\"0\",model_name=\"m\"}} 100\n\
                 vllm:prefix_cache_queries_total{{engine=\"1\",model_name=\"m\"}} {queries}\n"
            )
        };
        let read = |h, q| parse_vllm_page(&page(h, q)).unwrap().prefix_cache;
        assert_eq!(
            read("30", "100"),
            Some(PrefixCacheCounters {
                hits: 40.0,
                queries: 200.0
            })
        );
        assert_eq!(read("NaN", "100"), None);
        assert_eq!(read("30", "-1"), None);
        assert_eq!(read("+Inf", "100"), None);
        let without = "vllm:num_requests_waiting{model_name=\"m\"} 0\n";
        assert_eq!(parse_vllm_page(without).unwrap().prefix_cache, None);
    }

    #[test]
    fn prefill_time_sums_engines_and_refuses_bad_values() {
        let page = |sum1: &str, count1: &str| {
            format!(
                "vllm:num_requests_waiting{{model_name=\"m\"}} 0\n\
                 vllm:request_prefill_time_seconds_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"m\"}} 4\n\
                 vllm:request_prefill_time_seconds_count{{engine=\"0\",model_name=\"m\"}} 4\n\
                 vllm:request_prefill_time_seconds_sum{{engine=\"0\",model_name=\"m\"}} 1.5\n\
                 vllm:request_prefill_time_seconds_count{{engine=\"1\",model_name=\"m\"}} {count1}\n\
                 vllm:request_prefill_time_seconds_sum{{engine=\"1\",model_name=\"m\"}} {sum1}\n"
            )
        };
        let read = |s, c| parse_vllm_page(&page(s, c)).unwrap().prefill_time;
        // Buckets are not summed: only `_sum` and `_count`.
        assert_eq!(read("0.5", "2"), Some((2.0, 6.0)));
        assert_eq!(read("NaN", "2"), None);
        assert_eq!(read("0.5", "-1"), None);
        assert_eq!(read("+Inf", "2"), None);
        // A `_sum` without its `_count` (or none at all): unknown.
        let sum_only = "vllm:num_requests_waiting{model_name=\"m\"} 0\n\
                        vllm:request_prefill_time_seconds_sum{model_name=\"m\"} 1.5\n";
        assert_eq!(parse_vllm_page(sum_only).unwrap().prefill_time, None);
        let without = "vllm:num_requests_waiting{model_name=\"m\"} 0\n";
        assert_eq!(parse_vllm_page(without).unwrap().prefill_time, None);
    }

    #[test]
    fn invalid_samples_are_rejected_one_by_one() {
        let cases = [
            (1.7, 1.0, Signal::KvCacheUsage, RejectReason::OutOfRange),
            (f64::NAN, 1.0, Signal::KvCacheUsage, RejectReason::NotFinite),
            (
                0.5,
                f64::INFINITY,
                Signal::QueueWaiting,
                RejectReason::NotFinite,
            ),
            (0.5, -2.0, Signal::QueueWaiting, RejectReason::OutOfRange),
        ];
        for (kv, q, signal, reason) in cases {
            let p = parse_vllm_page(&emulated(kv, q)).unwrap();
            assert_eq!(p.rejected.len(), 1, "{kv} {q}");
            assert_eq!(
                (p.rejected[0].signal, p.rejected[0].reason),
                (signal, reason)
            );
            match signal {
                Signal::KvCacheUsage => assert_eq!(p.kv_usage, None),
                _ => assert_eq!(p.queue_waiting, None),
            }
        }
    }

    #[test]
    fn old_vllm_and_several_engines() {
        let old = "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.3\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 1\n";
        assert_eq!(parse_vllm_page(old).unwrap().kv_usage, Some(0.3));
        let both = format!("{old}# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.6\n");
        assert_eq!(
            parse_vllm_page(&both).unwrap().kv_usage,
            Some(0.6),
            "the new name wins"
        );
        let engines = "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.2\nvllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.7\n";
        assert_eq!(parse_vllm_page(engines).unwrap().kv_usage, Some(0.7));
    }

    #[test]
    fn cache_config_info_gives_the_kv_cache_size() {
        let waiting = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 1\n";
        let cases = [
            (
                "num_gpu_blocks=\"27328\",block_size=\"16\"",
                Some((27328, 16)),
            ),
            (
                "block_size=\"32\",engine=\"0\",num_gpu_blocks=\"1000\"",
                Some((1000, 32)),
            ),
            ("num_gpu_blocks=\"None\",block_size=\"16\"", None),
            // Larger than any replica's cache (and saturating a product).
            (
                "num_gpu_blocks=\"18446744073709551615\",block_size=\"16\"",
                None,
            ),
            ("num_gpu_blocks=\"0\",block_size=\"16\"", None),
            ("block_size=\"16\"", None),
            ("num_gpu_blocks=\"-5\",block_size=\"16\"", None),
        ];
        for (labels, want) in cases {
            let page = format!("{waiting}# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{{{labels}}} 1.0\n");
            let got = parse_vllm_page(&page).unwrap().kv_cache;
            assert_eq!(
                got.map(|c| (c.num_gpu_blocks, c.block_size)),
                want,
                "{labels}"
            );
        }
        assert_eq!(parse_vllm_page(waiting).unwrap().kv_cache, None);
    }

    #[test]
    fn bad_pages_are_errors() {
        for page in [
            "",
            "# just a comment\n",
            "up 1\n",
            "vllm:kv_cache_usage_perc{model_name=\"m\" 0.5\n",
            "vllm:kv_cache_usage_perc{model_name=\"m\"} zero\n",
        ] {
            assert!(parse_vllm_page(page).is_err(), "{page:?}");
        }
    }
}
