//! An emulated Prometheus query API for a generated [`Fleet`], for
//! benchmarks at a scale no test machine can run real vLLM replicas or a
//! real Prometheus for (100,000 pods). It answers `GET /api/v1/query` with
//! the wire format of Prometheus (`resultType: vector`) and the rows that
//! the backend's batched queries would return for the fleet, so the whole
//! fetch path (HTTP, JSON decoding, joining rows to pods, writing the
//! cache) is exercised as against a real server.
//!
//! The answer depends only on which signal a query asks for, found from
//! the series names in the PromQL; label matchers are not evaluated (the
//! backend keeps only the rows of the models it asked for).

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::fleet::{Fleet, FleetPod};
use super::render::{DEFAULT_PREFILL_TOKENS_PER_SECOND, PROMPT_TOKENS};
use crate::collector::prometheus::queries::QuerySignal;

/// How often the sample timestamps move forward, so that a long-running
/// server keeps seeing fresh samples.
const TIMESTAMP_REFRESH: Duration = Duration::from_secs(2);

/// Pre-rendered answers, one per signal.
struct Bodies {
    signals: Vec<(QuerySignal, Bytes)>,
    availability: Bytes,
}

/// A running emulated Prometheus.
pub struct PrometheusApiHandle {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

impl PrometheusApiHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queries answered so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for PrometheusApiHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Which signal a batched query asks for, from the series it names.
pub(crate) fn signal_of(promql: &str) -> Option<QuerySignal> {
    let s = if promql.contains("flow_control_queue_size") {
        QuerySignal::SchedulerQueueSize
    } else if promql.contains("flow_control_queue_bytes") {
        QuerySignal::SchedulerQueueBytes
    } else if promql.contains("kv_cache_usage_perc") {
        QuerySignal::KvUsage
    } else if promql.contains("timestamp(") {
        QuerySignal::SampleTime
    } else if promql.contains("max_over_time(vllm:num_requests_waiting") {
        QuerySignal::QueueWaiting
    } else if promql.contains("num_requests_waiting") {
        QuerySignal::QueueWaitingLatest
    } else if promql.contains("request_success_total") {
        QuerySignal::RequestRate
    } else if promql.contains("request_prompt_tokens") {
        QuerySignal::AvgPromptTokens
    } else if promql.contains("request_generation_tokens") {
        QuerySignal::AvgGenerationTokens
    } else if promql.contains("request_prefill_time_seconds") {
        QuerySignal::AvgPrefillSeconds
    } else if promql.contains("prefix_cache") {
        QuerySignal::PrefixCacheHitRate
    } else if promql.contains("cache_config_info") {
        QuerySignal::CacheConfig
    } else {
        return None;
    };
    Some(s)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn value_of(signal: QuerySignal, pod: &FleetPod, now: f64) -> f64 {
    match signal {
        QuerySignal::KvUsage => pod.kv_usage,
        QuerySignal::QueueWaiting | QuerySignal::QueueWaitingLatest => pod.queue_waiting,
        QuerySignal::SampleTime => now,
        QuerySignal::RequestRate => 2.0 + pod.kv_usage * 8.0,
        QuerySignal::AvgPromptTokens => 512.0,
        QuerySignal::AvgGenerationTokens => 256.0,
        // The 512 prompt tokens at the emulator's default prefill throughput.
        QuerySignal::AvgPrefillSeconds => PROMPT_TOKENS / DEFAULT_PREFILL_TOKENS_PER_SECOND,
        QuerySignal::CacheConfig => 1.0,
        // Per model, and the fleet has no endpoint picker: never rendered.
        QuerySignal::SchedulerQueueSize | QuerySignal::SchedulerQueueBytes => 0.0,
        QuerySignal::PrefixCacheHitRate => 0.25,
    }
}

/// The JSON answer of one signal for the whole fleet.
pub fn render_signal(fleet: &Fleet, signal: QuerySignal, now: f64) -> String {
    let mut out = String::with_capacity(fleet.pod_count() * 140 + 64);
    out.push_str(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    // The fleet has no endpoint picker: nothing is queued there.
    if signal.per_model() {
        out.push_str("]}}");
        return out;
    }
    for (i, pod) in fleet.pods().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // The fleet's replicas all have vLLM's cache of an 80 GB GPU.
        let cache_labels = if signal == QuerySignal::CacheConfig {
            r#","num_gpu_blocks":"27328","block_size":"16""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"{{"metric":{{"namespace":"{}","pod":"{}","model_name":"{}"{cache_labels}}},"value":[{now:.3},"{}"]}}"#,
            pod.namespace,
            pod.name,
            pod.model,
            value_of(signal, &pod, now)
        );
    }
    out.push_str("]}}");
    out
}

fn render_availability(now: f64) -> String {
    let mut out = String::from(r#"{"status":"success","data":{"resultType":"vector","result":["#);
    for (i, name) in crate::collector::prometheus::queries::EXPECTED_SERIES
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"metric":{{"__name__":"{name}"}},"value":[{now:.3},"1"]}}"#
        );
    }
    out.push_str("]}}");
    out
}

fn render_all(fleet: &Fleet) -> Bodies {
    let now = unix_now();
    Bodies {
        signals: QuerySignal::ALL
            .iter()
            .map(|&s| (s, Bytes::from(render_signal(fleet, s, now))))
            .collect(),
        availability: Bytes::from(render_availability(now)),
    }
}

fn answer(bodies: &Bodies, query: Option<&str>) -> Response<Full<Bytes>> {
    let json = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    let promql: Option<String> = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
    });
    let Some(promql) = promql else {
        return json(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(
                br#"{"status":"error","errorType":"bad_data","error":"missing query"}"#,
            ),
        );
    };
    if promql.contains("count by (__name__)") {
        return json(StatusCode::OK, bodies.availability.clone());
    }
    match signal_of(&promql).and_then(|s| bodies.signals.iter().find(|(k, _)| *k == s)) {
        Some((_, body)) => json(StatusCode::OK, body.clone()),
        None => json(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(br#"{"status":"error","errorType":"bad_data","error":"the emulated Prometheus answers only the batched vLLM queries"}"#),
        ),
    }
}

/// Starts the emulated API on `addr` for `fleet`.
pub async fn start(addr: SocketAddr, fleet: Fleet) -> std::io::Result<PrometheusApiHandle> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let bodies = Arc::new(ArcSwap::from_pointee(render_all(&fleet)));
    let queries = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();

    // Move the sample timestamps forward in the background.
    {
        let bodies = Arc::clone(&bodies);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(TIMESTAMP_REFRESH) => {}
                }
                let current = bodies.load_full();
                let time = Bytes::from(render_signal(&fleet, QuerySignal::SampleTime, unix_now()));
                let signals = current
                    .signals
                    .iter()
                    .map(|(s, b)| {
                        let body = if *s == QuerySignal::SampleTime {
                            time.clone()
                        } else {
                            b.clone()
                        };
                        (*s, body)
                    })
                    .collect();
                bodies.store(Arc::new(Bodies {
                    signals,
                    availability: current.availability.clone(),
                }));
            }
        });
    }

    {
        let shutdown = shutdown.clone();
        let queries = Arc::clone(&queries);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "emulated Prometheus: accept failed");
                            continue;
                        }
                    },
                };
                let bodies = Arc::clone(&bodies);
                let queries = Arc::clone(&queries);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    queries.fetch_add(1, Ordering::Relaxed);
                    let response = answer(&bodies.load(), req.uri().query());
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }
    Ok(PrometheusApiHandle {
        addr,
        queries,
        shutdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::prometheus::queries::{build, Scope};

    #[test]
    fn every_batched_query_maps_to_its_signal() {
        for s in QuerySignal::ALL {
            assert_eq!(signal_of(&build(s, Scope::All)), Some(s), "{s:?}");
            let scoped = build(
                s,
                Scope::Model {
                    namespace: "ns",
                    model_id: "m",
                },
            );
            assert_eq!(signal_of(&scoped), Some(s), "{s:?}");
        }
    }

    #[test]
    fn rendered_answers_are_prometheus_vectors_of_every_pod() {
        let fleet = Fleet::new(3, 2);
        let body = render_signal(&fleet, QuerySignal::KvUsage, 1_700_000_000.0);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success");
        assert_eq!(v["data"]["resultType"], "vector");
        let rows = v["data"]["result"].as_array().unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0]["metric"]["pod"], "decode-00000-0");
        assert_eq!(rows[0]["metric"]["model_name"], "model-00000");
        let kv: f64 = rows[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert!((kv - 0.15).abs() < 1e-9);
    }
}
