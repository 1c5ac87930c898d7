//! The Prometheus backend: twelve batched PromQL queries per fetch cycle for
//! every model at once (plus one per distinct scale-to-zero retention period
//! when scale to zero is on for some model), each answer folded row by row
//! as it is decoded ([`fold`]) and joined to the inventory's ready pods,
//! then written to the [`MetricsCache`]. Only the background fetcher calls it; requests
//! never wait on Prometheus (see docs/architecture.md, "Freshness").

pub mod config;
pub(crate) mod fold;
pub mod queries;
pub mod results;
mod transport;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fold::{Accumulator, Answer, Folded, Folder};
use results::RowRef;
use transport::{blocking, multi_thread, Job, LARGE_FLEET_IN_FLIGHT, LARGE_FLEET_PODS};

pub use config::ConfigError;
pub use config::PrometheusConfig;
use queries::{QuerySignal, Scope};

use super::health::{describe_request_error, Change, FetchHealth};
use super::sample::{SampleCheck, Signal};
use super::{
    Activity, CollectorError, CycleReport, MetricsBackend, MetricsCache, ReplicaMetrics,
    SchedulerQueues,
};
use crate::inventory::{InventorySnapshot, ModelKey};
use crate::saturation::ScaleToZeroConfig;
use crate::telemetry::{BackendErrorLabels, BackendLabels, Telemetry};

const BACKEND: &str = "prometheus";

/// Queries Prometheus.
pub struct PrometheusBackend {
    client: prometheus_http_query::Client,
    config: PrometheusConfig,
    telemetry: Telemetry,
    /// Which models have scale to zero on, and their retention periods.
    scale_to_zero: Arc<arc_swap::ArcSwap<ScaleToZeroConfig>>,
}

impl std::fmt::Debug for PrometheusBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusBackend")
            .field("url", &self.config.url)
            .finish()
    }
}

impl PrometheusBackend {
    /// Builds the HTTP client (ring TLS provider, CA from
    /// `PROMETHEUS_CA_CERT_PATH`, request timeout) after validating the config.
    pub fn new(config: PrometheusConfig, telemetry: Telemetry) -> Result<Self, CollectorError> {
        crate::certs::install_crypto_provider();
        let reject = |message: String| CollectorError::Configuration {
            backend: BACKEND,
            message,
        };
        config.validate().map_err(|e| reject(e.to_string()))?;
        let mut builder = reqwest::Client::builder()
            .timeout(config.query_timeout)
            .connect_timeout(config.query_timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(path) = &config.ca_cert_path {
            let pem = std::fs::read(path).map_err(|e| {
                reject(format!(
                    "cannot read PROMETHEUS_CA_CERT_PATH {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                reject(format!(
                    "PROMETHEUS_CA_CERT_PATH {} is not PEM: {e}",
                    path.display()
                ))
            })?;
            // A file without any certificate would silently leave only the
            // system roots in place: refuse it like an unreadable one.
            if certs.is_empty() {
                return Err(reject(format!(
                    "PROMETHEUS_CA_CERT_PATH {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        // validate() refuses one without the other.
        if let (Some(cert), Some(key)) = (&config.client_cert_path, &config.client_key_path) {
            let mut pem = std::fs::read(cert).map_err(|e| {
                reject(format!(
                    "cannot read PROMETHEUS_CLIENT_CERT_PATH {}: {e}",
                    cert.display()
                ))
            })?;
            let key_pem = std::fs::read(key).map_err(|e| {
                reject(format!(
                    "cannot read PROMETHEUS_CLIENT_KEY_PATH {}: {e}",
                    key.display()
                ))
            })?;
            pem.push(b'\n');
            pem.extend_from_slice(&key_pem);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    reject(format!(
                        "PROMETHEUS_CLIENT_CERT_PATH {} with PROMETHEUS_CLIENT_KEY_PATH {} is not a PEM certificate and key: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            builder = builder.identity(identity);
        }
        if config.tls_insecure_skip_verify {
            tracing::warn!("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY=true: PROMETHEUS' CERTIFICATE IS NOT VERIFIED; set PROMETHEUS_CA_CERT_PATH instead");
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| reject(format!("cannot build the HTTP client: {e}")))?;
        let client = prometheus_http_query::Client::from(http, &config.url)
            .map_err(|e| reject(format!("PROMETHEUS_URL {:?}: {e}", config.url)))?;
        Ok(PrometheusBackend {
            client,
            config,
            telemetry,
            scale_to_zero: Arc::default(),
        })
    }

    /// Follows this scale-to-zero configuration: models with it on get
    /// their request activity over their retention period fetched.
    pub(crate) fn with_scale_to_zero(
        mut self,
        config: Arc<arc_swap::ArcSwap<ScaleToZeroConfig>>,
    ) -> Self {
        self.scale_to_zero = config;
        self
    }

    fn bearer_token(&self) -> Option<String> {
        let path = self.config.bearer_token_file.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(t) => Some(t.trim().to_owned()).filter(|t| !t.is_empty()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read PROMETHEUS_BEARER_TOKEN_FILE; querying without a token");
                None
            }
        }
    }

    /// Logs which expected vLLM series Prometheus does not have (one query).
    pub async fn validate_metrics_availability(&self) -> Result<Vec<&'static str>, CollectorError> {
        let deadline = Instant::now() + self.config.query_timeout;
        let mut names = HashSet::new();
        self.query(
            "availability",
            &queries::availability_query(),
            deadline,
            &AtomicUsize::new(0),
            &mut Vec::new(),
            true,
            &mut |body| {
                names.clear();
                results::decode_each(body, &mut |r: RowRef<'_>| {
                    names.insert(r.pod.to_owned());
                    Ok(())
                })
            },
            None,
        )
        .await?;
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        let kv_present = present.contains("vllm:kv_cache_usage_perc")
            || present.contains("vllm:gpu_cache_usage_perc");
        let missing: Vec<&'static str> = queries::EXPECTED_SERIES
            .iter()
            .copied()
            .filter(|s| {
                if *s == "vllm:kv_cache_usage_perc" {
                    !kv_present
                } else {
                    !present.contains(*s)
                }
            })
            .collect();
        if missing.is_empty() {
            tracing::info!("all expected vLLM series are present in Prometheus");
        } else {
            tracing::warn!(missing = ?missing, "expected vLLM series are missing in Prometheus; decisions hold until they appear");
        }
        Ok(missing)
    }

    /// Runs every query of the cycle (one per signal, plus one activity
    /// query per retention period) and folds each answer as it is decoded:
    /// its body is the only copy of it held, and one buffer per worker is
    /// reused from answer to answer. A large fleet's queries run on
    /// `workers` threads, each sending its next query when the previous
    /// one is folded: at 100,000 pods an answer is 11-15 MB of JSON, two
    /// are decoded at once on two cores, and the cycle's other answers wait
    /// unsent. Otherwise all run at once on this task. Returns the folds.
    /// Every query is waited for; the first error (in query order) is
    /// returned.
    async fn fetch_all(
        &self,
        jobs: &[Job],
        snapshot: &InventorySnapshot,
        workers: usize,
        deadline: Instant,
        retries: &AtomicUsize,
        health: &FetchHealth,
    ) -> Result<Vec<Folded>, CollectorError> {
        if workers >= jobs.len() || !multi_thread() {
            // Small answers, or a single-threaded runtime (tests): on this
            // task, at most `workers` at once.
            let limit =
                tokio::sync::Semaphore::new(workers.clamp(1, tokio::sync::Semaphore::MAX_PERMITS));
            let results = futures::future::join_all(jobs.iter().map(|job| {
                let limit = &limit;
                async move {
                    // Closed only when dropped, which it is not here.
                    let _permit = limit.acquire().await.ok();
                    let mut body = Vec::new();
                    let folder = Folder::new(job.answer, snapshot);
                    self.run_job(job, folder, &mut body, true, deadline, retries, health)
                        .await
                }
            }))
            .await;
            return results.into_iter().collect();
        }
        let handle = tokio::runtime::Handle::current();
        let next = AtomicUsize::new(0);
        // The folds' columns are allocated here, not on the threads: they
        // outlive the threads and are freed on this one, and memory that a
        // thread that has exited allocated is returned to the system late
        // (`scripts/bench-memory`, one run each: 258 MiB peak with the
        // columns allocated on the threads, 251 MiB with them here).
        let folders: Vec<std::sync::Mutex<Option<Folder<'_>>>> = jobs
            .iter()
            .map(|job| std::sync::Mutex::new(Some(Folder::new(job.answer, snapshot))))
            .collect();
        let mut results: Vec<Option<Result<Folded, CollectorError>>> =
            jobs.iter().map(|_| None).collect();
        let worker = || {
            handle.block_on(async {
                let mut body = Vec::new();
                let mut done = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(k) else {
                        return done;
                    };
                    let folder = folders
                        .get(k)
                        .and_then(|f| f.lock().unwrap_or_else(|p| p.into_inner()).take())
                        .unwrap_or_else(|| Folder::new(job.answer, snapshot));
                    let r = self
                        .run_job(job, folder, &mut body, false, deadline, retries, health)
                        .await;
                    done.push((k, r));
                }
            })
        };
        // This task's worker hands its other tasks to the rest of the pool
        // while the threads run; they send through the runtime's I/O driver.
        let joined = blocking(|| {
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..workers)
                    .map(|_| {
                        std::thread::Builder::new()
                            .name("prometheus-fetch".into())
                            .spawn_scoped(scope, worker)
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))))
                    .collect::<Vec<_>>()
            })
        });
        let mut spawned = false;
        let mut spawn_error = None;
        for j in joined {
            match j {
                Ok(done) => {
                    spawned = true;
                    for (k, r) in done {
                        results[k] = Some(r);
                    }
                }
                Err(e) => spawn_error = Some(e),
            }
        }
        if let (false, Some(e)) = (spawned, spawn_error) {
            return Err(CollectorError::Rejected {
                backend: BACKEND,
                message: format!("cannot start a thread for the queries: {e}"),
            });
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(CollectorError::Rejected {
                        backend: BACKEND,
                        message: "a query of the cycle was not run".into(),
                    })
                })
            })
            .collect()
    }

    /// Writes the folded values of the given models' ready pods into the cache.
    fn apply(
        &self,
        acc: &Accumulator,
        snapshot: &InventorySnapshot,
        models: &[&ModelKey],
        cache: &MetricsCache,
        now: SystemTime,
    ) -> CycleReport {
        let stz = self.scale_to_zero.load();
        let mut report = CycleReport::default();
        let pods = snapshot.pods();
        for key in models {
            let zero = stz.for_model(&key.model_id, &key.namespace);
            let window = zero.enabled.then_some(zero.retention);
            for &i in snapshot.model_pod_positions(key) {
                // Only ready pods count.
                let pod = &pods[i];
                if !pod.ready {
                    continue;
                }
                let row = acc.pod(i);
                let checked = [
                    (Signal::KvCacheUsage, row.kv),
                    (Signal::QueueWaiting, row.queue),
                ]
                .map(|(s, v)| v.map(|v| (s, s.check(v), v)));
                let mut values = [0.0; 2];
                let mut usable = true;
                for (i, c) in checked.iter().enumerate() {
                    match c {
                        None => usable = false,
                        Some((_, Ok(v), _)) => values[i] = *v,
                        Some((s, Err(reason), raw)) => {
                            usable = false;
                            report.samples_rejected += 1;
                            self.telemetry.reject_sample(
                                BACKEND,
                                s.as_str(),
                                reason.as_str(),
                                &pod.key,
                                *raw,
                            );
                        }
                    }
                }
                if !usable {
                    continue;
                }
                let sampled_at = row
                    .sample_time
                    .filter(|t| t.is_finite() && *t > 0.0)
                    .map(|t| UNIX_EPOCH + Duration::from_secs_f64(t))
                    .unwrap_or(now);
                cache.upsert(
                    &pod.key,
                    ReplicaMetrics {
                        model_name: row.model_name.clone(),
                        kv_usage: values[0],
                        queue_waiting: values[1],
                        queue_waiting_latest: row
                            .queue_latest
                            .and_then(|v| Signal::QueueWaiting.check(v).ok()),
                        running: None,
                        sampled_at,
                        request_rate: row.rate.filter(|v| v.is_finite()),
                        avg_prompt_tokens: row.prompt.filter(|v| v.is_finite()),
                        avg_generation_tokens: row.generation.filter(|v| v.is_finite()),
                        avg_prefill_seconds: row.prefill_seconds.filter(|v| v.is_finite()),
                        prefix_cache_hit_rate: row
                            .prefix_hit_rate
                            .filter(|v| (0.0..=1.0).contains(v)),
                        kv_cache: row.kv_cache,
                        activity: window.and_then(|w| {
                            let requests =
                                acc.activity_by_pod.get(&w)?.get(i).copied().flatten()?;
                            Some(Activity {
                                window: w,
                                requests,
                            })
                        }),
                    },
                );
                report.replicas_updated += 1;
            }
        }
        report
    }
}

#[async_trait::async_trait]
impl MetricsBackend for PrometheusBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn fetch_cycle(
        &self,
        inventory: &InventorySnapshot,
        cache: &MetricsCache,
    ) -> Result<CycleReport, CollectorError> {
        let deadline = Instant::now() + self.config.query_timeout;
        let retries = AtomicUsize::new(0);
        let models: Vec<&ModelKey> = inventory.models().map(|(k, _)| k).collect();
        // One activity query per distinct retention period of the models
        // with scale to zero on (not per model or variant).
        let retentions: BTreeSet<Duration> = {
            let stz = self.scale_to_zero.load();
            models
                .iter()
                .map(|k| stz.for_model(&k.model_id, &k.namespace))
                .filter(|z| z.enabled)
                .map(|z| z.retention)
                .collect()
        };
        let jobs: Vec<Job> = QuerySignal::ALL
            .iter()
            .map(|&s| Job {
                answer: Answer::Signal(s),
                name: s.as_str(),
                promql: queries::build(s, Scope::All),
            })
            .chain(retentions.iter().map(|&r| Job {
                answer: Answer::Activity(r),
                name: "activity",
                promql: queries::activity(r, Scope::All),
            }))
            .collect();
        let workers = if inventory.pods().len() >= LARGE_FLEET_PODS {
            LARGE_FLEET_IN_FLIGHT
        } else {
            jobs.len()
        };
        let folds = self
            .fetch_all(
                &jobs,
                inventory,
                workers,
                deadline,
                &retries,
                cache.health(),
            )
            .await?;
        let sent = jobs.len();
        let mut acc = Accumulator::default();
        for f in folds {
            acc.add(f);
        }
        let now = SystemTime::now();
        cache.set_scheduler_queues(SchedulerQueues {
            by_model: std::mem::take(&mut acc.queues),
            at: now,
        });
        // Writing every pod of a large fleet takes CPU for a while: tell
        // the runtime, so that API requests move to other workers, and
        // share the models between the workers' threads (the cache takes
        // concurrent writes).
        let mut report = if workers < jobs.len() && multi_thread() {
            let chunk = models.len().div_ceil(workers).max(1);
            let parts = blocking(|| {
                std::thread::scope(|scope| {
                    let threads: Vec<_> = models
                        .chunks(chunk)
                        .map(|part| {
                            let acc = &acc;
                            std::thread::Builder::new()
                                .name("prometheus-apply".into())
                                .spawn_scoped(scope, move || {
                                    self.apply(acc, inventory, part, cache, now)
                                })
                                // Could not start the thread: on this one.
                                .map_err(|_| part)
                        })
                        .collect();
                    threads
                        .into_iter()
                        .map(|t| match t {
                            Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                            Err(part) => self.apply(&acc, inventory, part, cache, now),
                        })
                        .collect::<Vec<_>>()
                })
            });
            parts.into_iter().fold(CycleReport::default(), |mut a, b| {
                a.replicas_updated += b.replicas_updated;
                a.samples_rejected += b.samples_rejected;
                a
            })
        } else {
            blocking(|| self.apply(&acc, inventory, &models, cache, now))
        };
        report.requests = sent;
        report.retries = retries.into_inner();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::config::HeaderSource;
    use super::transport::*;
    use super::*;

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_before_or_while_it_is_read() {
        // Announced: a body of known length, as hyper makes of a
        // Content-Length answer. Else streamed in chunks of 4 bytes.
        let response = |body: &'static str, announce: bool| {
            let body = if announce {
                reqwest::Body::from(body)
            } else {
                let frames = futures::stream::iter(body.as_bytes().chunks(4).map(|c| {
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(
                        bytes::Bytes::copy_from_slice(c),
                    ))
                }));
                reqwest::Body::wrap(http_body_util::StreamBody::new(frames))
            };
            reqwest::Response::from(http::Response::new(body))
        };
        let mut body = Vec::new();
        // Within the limit, announced or streamed: read whole.
        for announce in [true, false] {
            read_body(&mut response("0123456789", announce), &mut body, 10)
                .await
                .unwrap();
            assert_eq!(body, b"0123456789");
        }
        // Announced too large: refused without reading.
        let (class, kind, message) = read_body(&mut response("0123456789a", true), &mut body, 10)
            .await
            .unwrap_err();
        assert_eq!((class, kind), (ErrorClass::Permanent, "too_large"));
        assert!(message.contains("Content-Length 11"), "{message}");
        assert!(message.contains("larger than the 10 bytes"), "{message}");
        // Streamed without a length: refused once it passes the limit,
        // and the buffer is let go.
        let (_, kind, message) = read_body(&mut response("0123456789a", false), &mut body, 10)
            .await
            .unwrap_err();
        assert_eq!(kind, "too_large");
        assert!(message.contains("over 10 bytes read"), "{message}");
        assert_eq!(body.capacity(), 0);
    }

    #[test]
    fn request_headers_carry_tenant_basic_auth_and_extra_headers() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        let key = dir.path().join("key");
        std::fs::write(&password, "s3cret\n").unwrap();
        std::fs::write(&key, "k-1\n").unwrap();
        let config = PrometheusConfig {
            tenant: Some("team-a".into()),
            basic_auth_username: Some("wva".into()),
            basic_auth_password_file: Some(password.clone()),
            headers: vec![
                ("X-Static".into(), HeaderSource::Value("v".into())),
                ("X-Key".into(), HeaderSource::File(key.clone())),
            ],
            ..Default::default()
        };
        let got: Vec<(String, String)> = request_headers(&config)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        // base64("wva:s3cret") = d3ZhOnMzY3JldA==
        assert_eq!(
            got,
            vec![
                ("x-scope-orgid".to_owned(), "team-a".to_owned()),
                (
                    "authorization".to_owned(),
                    "Basic d3ZhOnMzY3JldA==".to_owned()
                ),
                ("x-static".to_owned(), "v".to_owned()),
                ("x-key".to_owned(), "k-1".to_owned()),
            ]
        );
        // A rotated file applies at the next query.
        std::fs::write(&key, "k-2").unwrap();
        let rotated = request_headers(&config).unwrap();
        assert_eq!(rotated[3].1, "k-2");
        // A missing file is an error naming the option, not a query without it.
        std::fs::remove_file(&password).unwrap();
        let err = request_headers(&config).unwrap_err();
        assert!(err.contains("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"), "{err}");
    }

    #[test]
    fn refused_credentials_name_the_options_in_use() {
        let none = credentials_hint(&PrometheusConfig::default(), "HTTP 401");
        assert!(none.contains("no credentials are configured"), "{none}");
        assert!(none.contains("PROMETHEUS_TENANT"), "{none}");
        let cases = [
            (
                PrometheusConfig {
                    tenant: Some("t".into()),
                    ..Default::default()
                },
                "--prometheus-tenant",
            ),
            (
                PrometheusConfig {
                    basic_auth_username: Some("u".into()),
                    ..Default::default()
                },
                "PROMETHEUS_BASIC_AUTH_USERNAME",
            ),
            (
                PrometheusConfig {
                    client_cert_path: Some("/c".into()),
                    ..Default::default()
                },
                "PROMETHEUS_CLIENT_CERT_PATH",
            ),
            (
                PrometheusConfig {
                    headers: vec![("X".into(), HeaderSource::Value("v".into()))],
                    ..Default::default()
                },
                "PROMETHEUS_HEADERS",
            ),
        ];
        for (config, option) in cases {
            let m = credentials_hint(&config, "HTTP 403");
            assert!(m.contains(option) && m.contains("refused"), "{m}");
        }
    }
}
