//! The direct-scrape backend: fetches every ready pod's `/metrics` itself,
//! keeps a one-minute window per pod and writes the peaks to the cache. No
//! Prometheus in the path, and data as fresh as the scrape interval.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;

use std::sync::Arc;

use super::exposition::{parse_flow_control_page, parse_vllm_page, VllmPage};
use super::window::{CounterHistory, PeakWindow};
use super::{
    Activity, CollectorError, CycleReport, MetricsBackend, MetricsCache, ReplicaMetrics,
    SchedulerQueues,
};
use crate::inventory::{InventorySnapshot, ReplicaPod};
use crate::saturation::ScaleToZeroConfig;
use crate::telemetry::{BackendErrorLabels, BackendLabels, Telemetry};

const BACKEND: &str = "scrape";

/// Settings of the scrape backend.
#[derive(Debug, Clone, Copy)]
pub struct ScrapeConfig {
    /// Bound of one scrape, body included.
    pub timeout: Duration,
    /// A page larger than this is a failure (never buffered whole).
    pub max_body_bytes: usize,
    /// Span of the peak window.
    pub window: Duration,
    /// Scrapes in flight at once.
    pub concurrency: usize,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            timeout: Duration::from_secs(2),
            max_body_bytes: 4 * 1024 * 1024,
            window: Duration::from_secs(60),
            concurrency: 64,
        }
    }
}

/// Why one scrape failed; the kind labels the error counter.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("page larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Parse(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl ScrapeError {
    fn kind(&self) -> &'static str {
        match self {
            ScrapeError::Timeout => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Parse(_) => "parse",
            ScrapeError::Request(_) => "request",
        }
    }

    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ScrapeError::Timeout
        } else if e.is_connect() {
            ScrapeError::Connect(super::health::describe_request_error(&e))
        } else {
            ScrapeError::Request(super::health::describe_request_error(&e))
        }
    }
}

/// What a scrape result changed in a pod's health, for logging: a pod that
/// stays down is logged when it goes down (or fails differently) and when it
/// comes back, not every cycle; every failure is still counted in
/// `wva_backend_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HealthChange {
    /// First failure, or a failure of another kind than the last one.
    StartedFailing,
    /// The same failure as last cycle.
    StillFailing,
    /// A success after `failures` failed scrapes.
    Recovered { failures: u64 },
    /// A success after a success.
    StillHealthy,
}

/// Per-pod failure state behind [`HealthChange`]. Pure.
#[derive(Debug, Default)]
struct PodHealth {
    /// Pod key -> (kind of the last failure, failures in a row).
    failing: HashMap<String, (&'static str, u64)>,
}

impl PodHealth {
    fn failed(&mut self, pod: &str, kind: &'static str) -> HealthChange {
        match self.failing.get_mut(pod) {
            Some((last, n)) if *last == kind => {
                *n += 1;
                HealthChange::StillFailing
            }
            Some((last, n)) => {
                *last = kind;
                *n += 1;
                HealthChange::StartedFailing
            }
            None => {
                self.failing.insert(pod.to_owned(), (kind, 1));
                HealthChange::StartedFailing
            }
        }
    }

    fn succeeded(&mut self, pod: &str) -> HealthChange {
        match self.failing.remove(pod) {
            Some((_, failures)) => HealthChange::Recovered { failures },
            None => HealthChange::StillHealthy,
        }
    }

    /// Forgets pods that are no longer scraped.
    fn retain(&mut self, live: &HashSet<&str>) {
        self.failing.retain(|k, _| live.contains(k.as_str()));
    }
}

/// Scrapes pods directly.
pub struct ScrapeBackend {
    client: reqwest::Client,
    config: ScrapeConfig,
    telemetry: Telemetry,
    windows: Mutex<HashMap<String, PeakWindow>>,
    health: Mutex<PodHealth>,
    /// Which models have scale to zero on, and their retention periods.
    scale_to_zero: Arc<arc_swap::ArcSwap<ScaleToZeroConfig>>,
    /// `vllm:request_success_total` per pod of those models, over their
    /// retention period.
    counters: Mutex<HashMap<String, CounterHistory>>,
    /// The endpoint picker's `/metrics` (`--epp-metrics-url`).
    epp_url: Option<String>,
}

impl std::fmt::Debug for ScrapeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeBackend")
            .field("config", &self.config)
            .finish()
    }
}

impl ScrapeBackend {
    pub fn new(config: ScrapeConfig, telemetry: Telemetry) -> Result<Self, CollectorError> {
        crate::certs::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| CollectorError::Rejected {
                backend: BACKEND,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(ScrapeBackend {
            client,
            config,
            telemetry,
            windows: Mutex::new(HashMap::new()),
            health: Mutex::new(PodHealth::default()),
            scale_to_zero: Arc::default(),
            counters: Mutex::new(HashMap::new()),
            epp_url: None,
        })
    }

    /// Follows this scale-to-zero configuration: pods of models with it on
    /// keep their request counter's history over the retention period.
    pub(crate) fn with_scale_to_zero(
        mut self,
        config: Arc<arc_swap::ArcSwap<ScaleToZeroConfig>>,
    ) -> Self {
        self.scale_to_zero = config;
        self
    }

    /// Scrapes the llm-d endpoint picker's `/metrics` every cycle for its
    /// flow-control queues (scale from zero, V2's scheduler queue).
    pub(crate) fn with_epp_metrics_url(mut self, url: Option<String>) -> Self {
        self.epp_url = url;
        self
    }

    async fn scrape_epp(&self, url: &str) -> Result<SchedulerQueues, ScrapeError> {
        let at = SystemTime::now();
        let started = Instant::now();
        let result = self.fetch(url).await;
        self.telemetry
            .backend_duration
            .get_or_create(&BackendLabels {
                backend: BACKEND.to_owned(),
                query: "epp".to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        let by_model =
            parse_flow_control_page(&result?).map_err(|e| ScrapeError::Parse(e.to_string()))?;
        Ok(SchedulerQueues { by_model, at })
    }

    /// Fetches a page, reading at most `max_body_bytes`.
    async fn fetch(&self, url: &str) -> Result<String, ScrapeError> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(ScrapeError::from_reqwest)?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        let cap = self.config.max_body_bytes;
        if resp.content_length().is_some_and(|n| n as usize > cap) {
            return Err(ScrapeError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(ScrapeError::from_reqwest)? {
            if body.len() + chunk.len() > cap {
                return Err(ScrapeError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| ScrapeError::Parse("page is not UTF-8".into()))
    }

    async fn scrape(&self, pod: &ReplicaPod) -> Result<VllmPage, ScrapeError> {
        let url = pod
            .scrape_url()
            .ok_or_else(|| ScrapeError::Request("pod has no IP".into()))?;
        let started = Instant::now();
        let result = self.fetch(&url).await;
        self.telemetry
            .backend_duration
            .get_or_create(&BackendLabels {
                backend: BACKEND.to_owned(),
                query: "pod".to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        parse_vllm_page(&result?).map_err(|e| ScrapeError::Parse(e.to_string()))
    }

    /// Stores a good page; returns the number of rejected samples.
    fn record(
        &self,
        pod: &ReplicaPod,
        page: VllmPage,
        window: Option<Duration>,
        cache: &MetricsCache,
    ) -> (bool, usize) {
        for r in &page.rejected {
            self.telemetry.reject_sample(
                BACKEND,
                r.signal.as_str(),
                r.reason.as_str(),
                &pod.key,
                r.value,
            );
        }
        let rejected = page.rejected.len();
        // Without both signals the replica keeps its last good entry, whose
        // age then grows.
        let (Some(kv), Some(waiting)) = (page.kv_usage, page.queue_waiting) else {
            return (false, rejected);
        };
        let peaks = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let w = windows
                .entry(pod.key.clone())
                .or_insert_with(|| PeakWindow::new(self.config.window));
            let now = Instant::now();
            w.push(now, kv, waiting);
            if let Some(c) = page.prefix_cache {
                w.push_counters(now, c.hits, c.queries);
            }
            w.push_tokens(now, page.prompt_tokens, page.generation_tokens);
            w.push_prefill_time(now, page.prefill_time);
            if let Some(total) = page.success_total {
                w.push_completions(now, total);
            }
            w.peaks().map(|p| {
                (
                    p,
                    w.prefix_hit_rate(),
                    w.token_averages(),
                    w.avg_prefill_seconds(),
                    w.completion_rate(),
                )
            })
        };
        let Some((
            (kv_peak, waiting_peak),
            prefix_cache_hit_rate,
            (avg_prompt, avg_generation),
            avg_prefill_seconds,
            request_rate,
        )) = peaks
        else {
            return (false, rejected);
        };
        let activity = window.and_then(|w| {
            let total = page.success_total?;
            let now = Instant::now();
            let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let h = counters.entry(pod.key.clone()).or_default();
            h.push(now, total, w);
            let completed = h.increase(now, w)?;
            Some(Activity {
                window: w,
                requests: completed + page.running.unwrap_or(0.0),
            })
        });
        cache.insert(
            pod.key.clone(),
            ReplicaMetrics {
                model_name: page.model_name.unwrap_or_default().into(),
                kv_usage: kv_peak,
                queue_waiting: waiting_peak,
                queue_waiting_latest: Some(waiting),
                running: page.running,
                sampled_at: SystemTime::now(),
                request_rate,
                avg_prompt_tokens: avg_prompt,
                avg_generation_tokens: avg_generation,
                avg_prefill_seconds,
                prefix_cache_hit_rate,
                kv_cache: page.kv_cache,
                activity,
            },
        );
        (true, rejected)
    }
}

#[async_trait::async_trait]
impl MetricsBackend for ScrapeBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn fetch_cycle(
        &self,
        inventory: &InventorySnapshot,
        cache: &MetricsCache,
    ) -> Result<CycleReport, CollectorError> {
        let targets: Vec<&ReplicaPod> = inventory.scrape_targets().collect();
        let mut report = CycleReport {
            requests: targets.len(),
            ..Default::default()
        };
        let scrapes: Vec<_> = targets
            .iter()
            .map(|&pod| async move { (pod, self.scrape(pod).await) })
            .collect();
        let results: Vec<(&ReplicaPod, Result<VllmPage, ScrapeError>)> =
            futures::stream::iter(scrapes)
                .buffer_unordered(self.config.concurrency.max(1))
                .collect()
                .await;
        if let Some(url) = &self.epp_url {
            report.requests += 1;
            match self.scrape_epp(url).await {
                Ok(queues) => {
                    cache.set_scheduler_queues(queues);
                    let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    if let HealthChange::Recovered { failures } = health.succeeded("epp") {
                        tracing::info!(url = %url, failures, "endpoint picker scrape succeeds again");
                    }
                }
                Err(e) => {
                    report.failures += 1;
                    self.telemetry
                        .backend_errors
                        .get_or_create(&BackendErrorLabels {
                            backend: BACKEND.to_owned(),
                            query: "epp".to_owned(),
                            kind: e.kind().to_owned(),
                        })
                        .inc();
                    let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    if health.failed("epp", e.kind()) == HealthChange::StartedFailing {
                        tracing::warn!(url = %url, error = %e, "endpoint picker scrape failed: scale from zero and the scheduler queue wait for it; logged again when it recovers or fails differently");
                    }
                }
            }
        }
        let stz = self.scale_to_zero.load_full();
        let mut reached: HashSet<&str> = HashSet::new();
        // Why each pod that failed did, for the answers of its model.
        let mut failed: HashMap<&str, String> = HashMap::new();
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for (pod, result) in results {
            match result {
                Ok(page) => {
                    reached.insert(pod.key.as_str());
                    if let HealthChange::Recovered { failures } = health.succeeded(&pod.key) {
                        tracing::info!(pod = %pod.key, failures, "scrape succeeds again");
                    }
                    let zero = stz.for_model(&pod.model_id, &pod.namespace);
                    let window = zero.enabled.then_some(zero.retention);
                    let (updated, rejected) = self.record(pod, page, window, cache);
                    report.replicas_updated += usize::from(updated);
                    report.samples_rejected += rejected;
                }
                Err(e) => {
                    report.failures += 1;
                    failed.insert(
                        pod.key.as_str(),
                        format!(
                            "{} ({}): {e}",
                            pod.key,
                            pod.scrape_url().unwrap_or_else(|| "no pod IP".to_owned())
                        ),
                    );
                    self.telemetry
                        .backend_errors
                        .get_or_create(&BackendErrorLabels {
                            backend: BACKEND.to_owned(),
                            query: "pod".to_owned(),
                            kind: e.kind().to_owned(),
                        })
                        .inc();
                    match health.failed(&pod.key, e.kind()) {
                        HealthChange::StartedFailing => tracing::warn!(
                            pod = %pod.key,
                            url = pod.scrape_url().unwrap_or_default(),
                            error = %e,
                            "scrape failed; logged again when it recovers or fails differently, counted in wva_backend_errors_total"
                        ),
                        _ => tracing::debug!(pod = %pod.key, error = %e, "scrape still failing"),
                    }
                }
            }
        }
        // A model none of whose scrape targets answered was not reached:
        // its data is only as recent as the last scrape that worked.
        // Its answers say which pods failed and why.
        let source = cache.health();
        let now = SystemTime::now();
        for (key, _) in inventory.models() {
            let targets: Vec<&ReplicaPod> = inventory
                .model_pods(key)
                .filter(|p| p.ready && p.ip.is_some())
                .collect();
            if !targets.is_empty() && !targets.iter().any(|p| reached.contains(p.key.as_str())) {
                report.unreached_models.push(key.clone());
                let what = format!(
                    "no ready pod of model {:?} in namespace {:?} answered its /metrics",
                    key.model_id, key.namespace
                );
                source.model_failed(key, &what, &pod_failures(&targets, &failed), now);
            } else {
                source.model_answered(key);
            }
        }
        // Forget the windows and health of pods that are no longer scraped.
        let mut live: HashSet<&str> = targets.iter().map(|p| p.key.as_str()).collect();
        live.insert("epp");
        health.retain(&live);
        drop(health);
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k.as_str()));
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k.as_str()));
        Ok(report)
    }
}

/// The failures of a model's pods in one line: the first three, and how
/// many more.
fn pod_failures(pods: &[&ReplicaPod], failed: &HashMap<&str, String>) -> String {
    const SHOWN: usize = 3;
    let mut lines: Vec<&str> = pods
        .iter()
        .filter_map(|p| failed.get(p.key.as_str()).map(String::as_str))
        .collect();
    lines.sort_unstable();
    let more = lines.len().saturating_sub(SHOWN);
    lines.truncate(SHOWN);
    let mut text = lines.join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    if text.is_empty() {
        text.push_str("no scrape was made");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_that_stays_down_is_logged_on_changes_only() {
        let mut h = PodHealth::default();
        use HealthChange::*;
        let steps: &[(Option<&'static str>, HealthChange)] = &[
            (None, StillHealthy),
            (Some("connect"), StartedFailing),
            (Some("connect"), StillFailing),
            (Some("connect"), StillFailing),
            (Some("timeout"), StartedFailing),
            (Some("timeout"), StillFailing),
            (None, Recovered { failures: 5 }),
            (None, StillHealthy),
            (Some("status"), StartedFailing),
        ];
        for (i, (result, want)) in steps.iter().enumerate() {
            let got = match result {
                Some(kind) => h.failed("ns/pod-a", kind),
                None => h.succeeded("ns/pod-a"),
            };
            assert_eq!(&got, want, "step {i}");
        }
        // Pods are tracked separately, and forgotten when they leave.
        assert_eq!(h.failed("ns/pod-b", "connect"), StartedFailing);
        h.retain(&HashSet::from(["ns/pod-b"]));
        assert_eq!(h.succeeded("ns/pod-a"), StillHealthy);
        assert_eq!(h.failed("ns/pod-b", "connect"), StillFailing);
    }
}
