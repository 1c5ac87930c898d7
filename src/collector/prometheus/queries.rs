//! The PromQL the Prometheus backend sends, built in one place. Pure.
//!
//! One query per signal covers every model and namespace at once, so the
//! number of queries per fetch cycle is constant (`QuerySignal::ALL`, twelve;
//! plus one per distinct scale-to-zero retention period) whatever the number
//! of variants. A per-model refresh uses the same shapes narrowed by label
//! matchers whose values are escaped.

use crate::collector::exposition::{FLOW_CONTROL_QUEUE_BYTES, FLOW_CONTROL_QUEUE_SIZE};
use std::fmt::Write;

/// The signals fetched every cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuerySignal {
    /// Peak KV-cache usage over the last minute (old vLLM: gpu_cache_usage_perc).
    KvUsage,
    /// Peak waiting requests over the last minute.
    QueueWaiting,
    /// Timestamp of the newest sample, so that the real age is known.
    SampleTime,
    /// Finished requests per second.
    RequestRate,
    /// Mean prompt tokens per request over the last minute.
    AvgPromptTokens,
    /// Mean generated tokens per request over the last minute.
    AvgGenerationTokens,
    /// Mean seconds of prefill per request over the last minute
    /// (`vllm:request_prefill_time_seconds`; the `slo` analysis' prefill bound).
    AvgPrefillSeconds,
    /// `vllm:cache_config_info`, grouped by its `num_gpu_blocks` and
    /// `block_size` labels (the token-based analysis' KV capacity).
    CacheConfig,
    /// Requests queued in the llm-d endpoint picker's flow control, per
    /// model (`inference_extension_flow_control_queue_size`).
    SchedulerQueueSize,
    /// Bytes of those requests (`inference_extension_flow_control_queue_bytes`).
    SchedulerQueueBytes,
    /// Prefix-cache hits / queries over the last minute (V2 reduces the
    /// scheduler queue's prompt tokens by it).
    PrefixCacheHitRate,
    /// Waiting requests in the newest sample: the `slo` analysis reads a
    /// long backlog's drain from it, a minute before the peak shows it.
    QueueWaitingLatest,
}

impl QuerySignal {
    pub const ALL: [QuerySignal; 12] = [
        QuerySignal::KvUsage,
        QuerySignal::QueueWaiting,
        QuerySignal::SampleTime,
        QuerySignal::RequestRate,
        QuerySignal::AvgPromptTokens,
        QuerySignal::AvgGenerationTokens,
        QuerySignal::AvgPrefillSeconds,
        QuerySignal::CacheConfig,
        QuerySignal::SchedulerQueueSize,
        QuerySignal::SchedulerQueueBytes,
        QuerySignal::PrefixCacheHitRate,
        QuerySignal::QueueWaitingLatest,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            QuerySignal::KvUsage => "kv_usage",
            QuerySignal::QueueWaiting => "queue_waiting",
            QuerySignal::SampleTime => "sample_time",
            QuerySignal::RequestRate => "request_rate",
            QuerySignal::AvgPromptTokens => "avg_prompt_tokens",
            QuerySignal::AvgGenerationTokens => "avg_generation_tokens",
            QuerySignal::AvgPrefillSeconds => "avg_prefill_seconds",
            QuerySignal::CacheConfig => "cache_config",
            QuerySignal::SchedulerQueueSize => "scheduler_queue_size",
            QuerySignal::SchedulerQueueBytes => "scheduler_queue_bytes",
            QuerySignal::PrefixCacheHitRate => "prefix_cache_hit_rate",
            QuerySignal::QueueWaitingLatest => "queue_waiting_latest",
        }
    }

    /// Whether the rows are per model (the endpoint picker's queues), not per pod.
    pub fn per_model(&self) -> bool {
        matches!(
            self,
            QuerySignal::SchedulerQueueSize | QuerySignal::SchedulerQueueBytes
        )
    }
}

/// What a query covers: everything, or one model in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    Model {
        namespace: &'a str,
        model_id: &'a str,
    },
}

/// Escapes a string for use inside a double-quoted PromQL label value.
pub(crate) fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

fn matchers(scope: Scope<'_>) -> String {
    match scope {
        Scope::All => String::new(),
        Scope::Model {
            namespace,
            model_id,
        } => {
            let mut m = String::from("{");
            let _ = write!(
                m,
                "namespace=\"{}\",model_name=\"{}\"",
                escape_label_value(namespace),
                escape_label_value(model_id)
            );
            m.push('}');
            m
        }
    }
}

const BY: &str = "by (namespace, pod, model_name)";

/// The PromQL of one signal for one scope.
pub fn build(signal: QuerySignal, scope: Scope<'_>) -> String {
    let m = matchers(scope);
    // `peak + 0 * latest`: the one-minute peak, but NaN when the newest
    // sample is NaN (max_over_time alone skips NaN samples, so a replica
    // reporting NaN would go unnoticed), and absent when the series went
    // stale (the replica stopped reporting), so that its age shows.
    match signal {
        QuerySignal::KvUsage => format!(
            "max {BY} ((max_over_time(vllm:kv_cache_usage_perc{m}[1m]) + 0 * vllm:kv_cache_usage_perc{m}) or (max_over_time(vllm:gpu_cache_usage_perc{m}[1m]) + 0 * vllm:gpu_cache_usage_perc{m}))"
        ),
        QuerySignal::QueueWaiting => format!(
            "max {BY} (max_over_time(vllm:num_requests_waiting{m}[1m]) + 0 * vllm:num_requests_waiting{m})"
        ),
        QuerySignal::SampleTime => format!("max {BY} (timestamp(vllm:num_requests_waiting{m}))"),
        QuerySignal::QueueWaitingLatest => format!("max {BY} (vllm:num_requests_waiting{m})"),
        QuerySignal::RequestRate => {
            format!("sum {BY} (rate(vllm:request_success_total{m}[1m]))")
        }
        QuerySignal::AvgPromptTokens => format!(
            "sum {BY} (rate(vllm:request_prompt_tokens_sum{m}[1m])) / sum {BY} (rate(vllm:request_prompt_tokens_count{m}[1m]))"
        ),
        QuerySignal::AvgGenerationTokens => format!(
            "sum {BY} (rate(vllm:request_generation_tokens_sum{m}[1m])) / sum {BY} (rate(vllm:request_generation_tokens_count{m}[1m]))"
        ),
        QuerySignal::AvgPrefillSeconds => format!(
            "sum {BY} (rate(vllm:request_prefill_time_seconds_sum{m}[1m])) / sum {BY} (rate(vllm:request_prefill_time_seconds_count{m}[1m]))"
        ),
        QuerySignal::CacheConfig => format!(
            "max by (namespace, pod, model_name, num_gpu_blocks, block_size) (vllm:cache_config_info{m})"
        ),
        QuerySignal::SchedulerQueueSize => flow_control(FLOW_CONTROL_QUEUE_SIZE, scope),
        QuerySignal::SchedulerQueueBytes => flow_control(FLOW_CONTROL_QUEUE_BYTES, scope),
        // vLLM's counters are `vllm:prefix_cache_hits` and `_queries`,
        // exposed with the `_total` suffix.
        QuerySignal::PrefixCacheHitRate => format!(
            "sum {BY} (rate(vllm:prefix_cache_hits_total{m}[1m])) / sum {BY} (rate(vllm:prefix_cache_queries_total{m}[1m]))"
        ),
    }
}

/// A flow-control gauge summed per model: by `target_model_name`, or by
/// `model_name` where the target is empty (upstream WVA's rule), which
/// `label_replace` does in one expression (its regex matches only a
/// non-empty target). The endpoint picker's series carry no namespace.
fn flow_control(name: &str, scope: Scope<'_>) -> String {
    let relabel = |selector: &str| {
        format!("label_replace({name}{selector}, \"model_name\", \"$1\", \"target_model_name\", \"(.+)\")")
    };
    match scope {
        Scope::All => format!("sum by (model_name) ({})", relabel("")),
        Scope::Model { model_id, .. } => {
            let m = escape_label_value(model_id);
            format!(
                "sum by (model_name) ({} or {name}{{target_model_name=\"\",model_name=\"{m}\"}})",
                relabel(&format!("{{target_model_name=\"{m}\"}}"))
            )
        }
    }
}

/// A Prometheus duration for `d` (whole seconds, else milliseconds).
pub(crate) fn prom_duration(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs().max(1))
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// Per pod, requests completed over `retention` plus the peak of requests
/// running over the last minute, for pods whose request counter already
/// existed `retention` ago (so that a replica younger than the period is
/// never taken for idle). One query per distinct retention period.
pub fn activity(retention: std::time::Duration, scope: Scope<'_>) -> String {
    let m = matchers(scope);
    let r = prom_duration(retention);
    format!(
        "(sum {BY} (increase(vllm:request_success_total{m}[{r}])) + sum {BY} (max_over_time(vllm:num_requests_running{m}[1m]))) and on (namespace, pod, model_name) sum {BY} (vllm:request_success_total{m} offset {r})"
    )
}

/// The vLLM series whose presence is checked at start.
pub(crate) const EXPECTED_SERIES: [&str; 4] = [
    "vllm:kv_cache_usage_perc",
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:request_success_total",
];

/// One query listing which of the expected series exist.
pub(crate) fn availability_query() -> String {
    format!(
        "count by (__name__) ({{__name__=~\"{}|vllm:gpu_cache_usage_perc\"}})",
        EXPECTED_SERIES.join("|")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let cases = [
            ("plain", "plain"),
            ("meta/llama-3.1-8b", "meta/llama-3.1-8b"),
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("line\nbreak", "line\\nbreak"),
            ("\"}) or vector(1) #", "\\\"}) or vector(1) #"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_label_value(input), want, "{input:?}");
        }
    }

    #[test]
    fn batched_queries_have_no_matchers_and_group_by_pod() {
        for s in QuerySignal::ALL.into_iter().filter(|s| !s.per_model()) {
            let q = build(s, Scope::All);
            assert!(!q.contains('{') || q.contains("__name__"), "{q}");
            assert!(q.contains("by (namespace, pod, model_name"), "{q}");
        }
        assert_eq!(
            build(QuerySignal::QueueWaiting, Scope::All),
            "max by (namespace, pod, model_name) (max_over_time(vllm:num_requests_waiting[1m]) + 0 * vllm:num_requests_waiting)"
        );
        // The newest sample beside the peak: the instant selector.
        assert_eq!(
            build(QuerySignal::QueueWaitingLatest, Scope::All),
            "max by (namespace, pod, model_name) (vllm:num_requests_waiting)"
        );
    }

    #[test]
    fn flow_control_and_activity_queries() {
        assert_eq!(
            build(QuerySignal::SchedulerQueueSize, Scope::All),
            "sum by (model_name) (label_replace(inference_extension_flow_control_queue_size, \"model_name\", \"$1\", \"target_model_name\", \"(.+)\"))"
        );
        assert_eq!(
            build(QuerySignal::SchedulerQueueBytes, Scope::Model { namespace: "ns", model_id: "m\"" }),
            "sum by (model_name) (label_replace(inference_extension_flow_control_queue_bytes{target_model_name=\"m\\\"\"}, \"model_name\", \"$1\", \"target_model_name\", \"(.+)\") or inference_extension_flow_control_queue_bytes{target_model_name=\"\",model_name=\"m\\\"\"})"
        );
        assert_eq!(
            activity(std::time::Duration::from_secs(600), Scope::All),
            "(sum by (namespace, pod, model_name) (increase(vllm:request_success_total[600s])) + sum by (namespace, pod, model_name) (max_over_time(vllm:num_requests_running[1m]))) and on (namespace, pod, model_name) sum by (namespace, pod, model_name) (vllm:request_success_total offset 600s)"
        );
        assert_eq!(
            prom_duration(std::time::Duration::from_millis(1500)),
            "1500ms"
        );
    }

    #[test]
    fn prefill_seconds_are_the_histograms_sum_over_count() {
        assert_eq!(
            build(QuerySignal::AvgPrefillSeconds, Scope::All),
            "sum by (namespace, pod, model_name) (rate(vllm:request_prefill_time_seconds_sum[1m])) / sum by (namespace, pod, model_name) (rate(vllm:request_prefill_time_seconds_count[1m]))"
        );
        let m = "{namespace=\"prod\",model_name=\"m\"}";
        assert_eq!(
            build(
                QuerySignal::AvgPrefillSeconds,
                Scope::Model {
                    namespace: "prod",
                    model_id: "m"
                }
            ),
            format!("sum by (namespace, pod, model_name) (rate(vllm:request_prefill_time_seconds_sum{m}[1m])) / sum by (namespace, pod, model_name) (rate(vllm:request_prefill_time_seconds_count{m}[1m]))")
        );
        assert_eq!(
            QuerySignal::AvgPrefillSeconds.as_str(),
            "avg_prefill_seconds"
        );
        assert!(!QuerySignal::AvgPrefillSeconds.per_model());
        assert!(QuerySignal::ALL.contains(&QuerySignal::AvgPrefillSeconds));
    }

    #[test]
    fn model_scope_narrows_with_escaped_matchers() {
        let q = build(
            QuerySignal::QueueWaiting,
            Scope::Model {
                namespace: "prod",
                model_id: "evil\"}",
            },
        );
        let m = "{namespace=\"prod\",model_name=\"evil\\\"}\"}";
        assert_eq!(
            q,
            format!("max by (namespace, pod, model_name) (max_over_time(vllm:num_requests_waiting{m}[1m]) + 0 * vllm:num_requests_waiting{m})")
        );
    }
}
