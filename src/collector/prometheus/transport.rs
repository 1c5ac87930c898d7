//! The HTTP side of the Prometheus backend: one query with retries and
//! backoff, its headers and credentials, the answer read within a byte
//! limit and decoded (in `block_in_place` when large), errors classified.

use std::time::{Duration, Instant};

use rand::RngExt;

use super::config::PrometheusConfig;
use super::fold::Answer;
use super::results::{DecodeError, Outcome};
use super::*;
use crate::collector::CollectorError;

/// First retry delay; doubles per attempt, with jitter, up to [`MAX_BACKOFF`].
pub(super) const BASE_BACKOFF: Duration = Duration::from_millis(200);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorClass {
    Transient,
    Permanent,
}

impl PrometheusBackend {
    /// Runs one PromQL query with retries until `deadline`. Transient errors
    /// (connection refused, timeouts, 5xx) are retried with exponential
    /// backoff and jitter; permanent ones (bad URL, 4xx, bad query) fail fast.
    /// Every retry is counted in `retries`. Each attempt reads the answer
    /// into `body` (cleared first, its capacity kept) and hands it to
    /// `decode`, which keeps the rows it wants; after an attempt that
    /// failed, the next one calls `decode` again from the start. On a
    /// runtime worker (`on_worker`), large answers are decoded in
    /// `block_in_place`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn query(
        &self,
        name: &'static str,
        promql: &str,
        deadline: Instant,
        retries: &AtomicUsize,
        body: &mut Vec<u8>,
        on_worker: bool,
        decode: &mut Decode<'_>,
        health: Option<&FetchHealth>,
    ) -> Result<(), CollectorError> {
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            if remaining.is_zero() {
                return Err(self.timeout_error(name));
            }
            let mut request = self.client.query(promql);
            if let Some(token) = self.bearer_token() {
                match http::HeaderValue::from_str(&format!("Bearer {token}")) {
                    Ok(v) => request = request.header(http::header::AUTHORIZATION, v),
                    Err(_) => tracing::warn!("PROMETHEUS_BEARER_TOKEN_FILE holds characters not allowed in a header; querying without it"),
                }
            }
            let headers = match request_headers(&self.config) {
                Ok(h) => h,
                Err(message) => {
                    tracing::error!(query = name, error = %message, "cannot build the Prometheus request headers");
                    return Err(CollectorError::Rejected {
                        backend: BACKEND,
                        message: format!("{name}: {message}"),
                    });
                }
            };
            for (header, value) in headers {
                request = request.header(header, value);
            }
            let outcome =
                tokio::time::timeout(remaining, execute(request, body, on_worker, &mut *decode))
                    .await;
            self.telemetry
                .backend_duration
                .get_or_create(&BackendLabels {
                    backend: BACKEND.to_owned(),
                    query: name.to_owned(),
                })
                .observe(started.elapsed().as_secs_f64());
            let (class, kind, message) = match outcome {
                Err(_) => (
                    ErrorClass::Transient,
                    "timeout",
                    "query timed out".to_owned(),
                ),
                Ok(Ok(())) => return Ok(()),
                Ok(Err((class, "unauthorized", message))) => (
                    class,
                    "unauthorized",
                    credentials_hint(&self.config, &message),
                ),
                Ok(Err(failure)) => failure,
            };
            self.telemetry
                .backend_errors
                .get_or_create(&BackendErrorLabels {
                    backend: BACKEND.to_owned(),
                    query: name.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
            // Said at the first failed attempt, once per change, with the
            // URL and the cause (the retries go on quietly).
            let what = format!("Prometheus at {} unreachable", self.config.url);
            let newly = health.map(|h| h.source_failed(&what, &message, SystemTime::now()));
            if newly == Some(Change::StartedFailing) {
                if class == ErrorClass::Permanent {
                    tracing::error!(url = %self.config.url, cause = %message, query = name, "Prometheus unreachable: the request was refused; check --prometheus-url (PROMETHEUS_URL) and the credentials; logged again when it answers or fails differently");
                } else {
                    tracing::warn!(url = %self.config.url, cause = %message, query = name, "Prometheus unreachable; retrying, answers are 503 naming this cause until it answers; logged again when it answers or fails differently");
                }
            }
            if class == ErrorClass::Permanent {
                if health.is_none() {
                    tracing::error!(query = name, url = %self.config.url, error = %message, "Prometheus query failed permanently; check PROMETHEUS_URL, credentials and the query");
                }
                return Err(CollectorError::Rejected {
                    backend: BACKEND,
                    message: format!("{}: {message} (query {name})", self.config.url),
                });
            }
            let backoff = backoff(attempt);
            if Instant::now() + backoff >= deadline {
                tracing::debug!(query = name, attempts = attempt + 1, error = %message, "Prometheus query failed; giving up at the deadline");
                return Err(CollectorError::Unreachable {
                    backend: BACKEND,
                    message: format!(
                        "{}: {message} (query {name}, {} attempts)",
                        self.config.url,
                        attempt + 1
                    ),
                });
            }
            tracing::debug!(query = name, attempt, error = %message, ?backoff, "retrying Prometheus query");
            tokio::time::sleep(backoff).await;
            attempt += 1;
            retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn timeout_error(&self, _name: &'static str) -> CollectorError {
        CollectorError::Timeout {
            backend: BACKEND,
            seconds: self.config.query_timeout.as_secs_f64(),
        }
    }

    /// Runs one query of the cycle and folds its answer into `folder` as
    /// it is decoded (emptied again before each attempt).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_job(
        &self,
        job: &Job,
        mut folder: Folder<'_>,
        body: &mut Vec<u8>,
        on_worker: bool,
        deadline: Instant,
        retries: &AtomicUsize,
        health: &FetchHealth,
    ) -> Result<Folded, CollectorError> {
        let mut decoded = false;
        self.query(
            job.name,
            &job.promql,
            deadline,
            retries,
            body,
            on_worker,
            &mut |body| {
                folder.clear();
                let outcome = results::decode_each(body, &mut |r: RowRef<'_>| {
                    folder.row(r);
                    Ok(())
                })?;
                decoded = true;
                Ok(outcome)
            },
            Some(health),
        )
        .await?;
        // `query` returns Ok only after a decode that gave a vector.
        if !decoded {
            return Err(CollectorError::Rejected {
                backend: BACKEND,
                message: format!("{}: no answer was decoded", job.name),
            });
        }
        Ok(folder.finish())
    }
}

/// One query of a cycle.
pub(super) struct Job {
    pub(super) answer: Answer,
    pub(super) name: &'static str,
    pub(super) promql: String,
}

/// Decodes one attempt's body, keeping the rows it wants.
pub(super) type Decode<'d> = dyn FnMut(&[u8]) -> Result<Outcome, DecodeError> + Send + 'd;

/// Whether this runs on a multi-threaded runtime, whose I/O driver other
/// threads can use while this one blocks.
pub(super) fn multi_thread() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

/// Runs CPU-heavy work in place on a multi-threaded runtime after handing
/// this worker's other tasks to the rest of the pool; inline elsewhere.
pub(super) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// From this many pods on, at most [`LARGE_FLEET_IN_FLIGHT`] queries of a
/// cycle run at once (below, all at once): each answer is then megabytes.
pub(super) const LARGE_FLEET_PODS: usize = 10_000;
/// Queries in flight at once for a large fleet, each on its own thread
/// from request to fold: two answers are decoded at once (the fold of an
/// answer is most of its cost), and at most two bodies of 11-15 MB each are
/// held. On 2 cores more do not shorten the cycle, they only hold more
/// answers.
pub(super) const LARGE_FLEET_IN_FLIGHT: usize = 2;

/// The most buffer reserved up front for an answer from its Content-Length.
pub(super) const PREALLOCATE_LIMIT: u64 = 64 * 1024 * 1024;

/// The largest answer read. At 100,000 pods an answer is 11-15 MB; one far
/// larger is not a fleet this server can hold anyway, and reading it whole
/// (a wrong URL, a proxy streaming something else) would take the pod's
/// memory with it.
pub(super) const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// Answers larger than this are decoded in `block_in_place`.
pub(super) const INLINE_DECODE_LIMIT: usize = 64 * 1024;

/// Why one attempt of a query failed: retry class, telemetry kind, message.
pub(super) type Failure = (ErrorClass, &'static str, String);

/// One attempt: sends the query and decodes the answer. The body is decoded
/// by [`results::decode`] rather than the client crate's generic decoder,
/// which buffers every series into a JSON tree and a map of labels: at
/// 100,000 series that was most of a fetch cycle's time and memory.
pub(super) async fn execute(
    request: prometheus_http_query::InstantQueryBuilder,
    body: &mut Vec<u8>,
    on_worker: bool,
    decode: &mut Decode<'_>,
) -> Result<(), Failure> {
    let mut response = request.get_raw().await.map_err(|e| classify(&e))?;
    let status = response.status();
    // Read into one buffer of the announced size: collecting the chunks
    // and then joining them held a large answer twice.
    read_body(&mut response, body, MAX_ANSWER_BYTES).await?;
    // Refused credentials stay refused: fail at once, whatever the body
    // (an authenticating proxy rarely answers Prometheus' JSON).
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned();
        return Err((
            ErrorClass::Permanent,
            "unauthorized",
            format!("the metrics store answered HTTP {status}: {text}"),
        ));
    }
    // Decoding a large answer takes milliseconds of CPU: off the async
    // workers, so that API requests are not held up, and in parallel
    // with the other queries of the cycle.
    // On this thread (the runtime moves its other tasks away meanwhile),
    // not on the blocking pool: the rows are folded and freed right after
    // on this same thread, and memory freed from another thread stays with
    // the allocating thread's heap until that thread runs again; an idle
    // pool thread kept a cycle's rows resident.
    let decoded = if on_worker && body.len() > INLINE_DECODE_LIMIT {
        blocking(|| decode(body))
    } else {
        decode(body)
    };
    match decoded {
        Ok(Outcome::Vector(_)) => Ok(()),
        Ok(Outcome::OtherResultType(t)) => Err((
            ErrorClass::Permanent,
            "result_type",
            format!("Prometheus answered a {t} result where a vector was expected"),
        )),
        // Prometheus' own error types: a bad query will stay bad; timeouts,
        // cancellations and unavailability may pass.
        Ok(Outcome::ApiError { error_type, error }) if error_type == "bad_data" => Err((
            ErrorClass::Permanent,
            "bad_data",
            format!("HTTP {status}: bad_data: {error}"),
        )),
        Ok(Outcome::ApiError { error_type, error }) => Err((
            ErrorClass::Transient,
            "prometheus",
            format!("HTTP {status}: {error_type}: {error}"),
        )),
        // Not an API answer at all: a proxy or load balancer spoke.
        Err(e) if status.is_server_error() => Err((
            ErrorClass::Transient,
            "status",
            format!("HTTP {status}: {e}"),
        )),
        Err(e) if !status.is_success() => Err((
            ErrorClass::Permanent,
            "status",
            format!("HTTP {status}: {e}"),
        )),
        Err(e) => Err((ErrorClass::Permanent, "decode", e.to_string())),
    }
}

/// The headers every query carries besides the bearer token: the tenant,
/// basic auth, and the extra headers (files read now, so that rotated
/// Secrets apply at the next query). An unreadable file is an error naming
/// the option, never a query sent without it.
pub(super) fn request_headers(
    config: &PrometheusConfig,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    use base64::Engine as _;
    use config::HeaderSource;
    let name = |option: &str, n: &str| {
        http::HeaderName::from_bytes(n.as_bytes())
            .map_err(|e| format!("{option}: {n:?} is not a header name: {e}"))
    };
    let value = |option: &str, v: &str| {
        http::HeaderValue::from_str(v)
            .map_err(|_| format!("{option}: the value holds characters not allowed in a header"))
    };
    let read = |option: &str, path: &std::path::Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|e| format!("cannot read {option} file {}: {e}", path.display()))
    };
    let mut out = Vec::new();
    if let Some(tenant) = &config.tenant {
        out.push((
            name("PROMETHEUS_TENANT_HEADER", &config.tenant_header)?,
            value("PROMETHEUS_TENANT", tenant)?,
        ));
    }
    if let (Some(user), Some(file)) = (
        &config.basic_auth_username,
        &config.basic_auth_password_file,
    ) {
        let password = read("PROMETHEUS_BASIC_AUTH_PASSWORD_FILE", file)?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut v = value(
            "PROMETHEUS_BASIC_AUTH_USERNAME",
            &format!("Basic {encoded}"),
        )?;
        v.set_sensitive(true);
        out.push((http::header::AUTHORIZATION, v));
    }
    for (header, source) in &config.headers {
        let v = match source {
            HeaderSource::Value(v) => value("PROMETHEUS_HEADERS", v)?,
            HeaderSource::File(path) => {
                let mut v = value("PROMETHEUS_HEADERS", &read("PROMETHEUS_HEADERS", path)?)?;
                v.set_sensitive(true);
                v
            }
        };
        out.push((name("PROMETHEUS_HEADERS", header)?, v));
    }
    Ok(out)
}

/// The message of a 401/403: which configured options the store refused,
/// or which ones exist when none is set.
pub(super) fn credentials_hint(config: &PrometheusConfig, message: &str) -> String {
    let mut used = Vec::new();
    if config.bearer_token_file.is_some() {
        used.push("PROMETHEUS_BEARER_TOKEN_FILE");
    }
    if config.basic_auth_username.is_some() {
        used.push("PROMETHEUS_BASIC_AUTH_USERNAME / PROMETHEUS_BASIC_AUTH_PASSWORD_FILE (--prometheus-basic-auth-username, --prometheus-basic-auth-password-file)");
    }
    if config.tenant.is_some() {
        used.push("PROMETHEUS_TENANT / PROMETHEUS_TENANT_HEADER (--prometheus-tenant, --prometheus-tenant-header)");
    }
    if !config.headers.is_empty() {
        used.push("PROMETHEUS_HEADERS (--prometheus-header)");
    }
    if config.client_cert_path.is_some() {
        used.push("PROMETHEUS_CLIENT_CERT_PATH / PROMETHEUS_CLIENT_KEY_PATH (--prometheus-client-cert, --prometheus-client-key)");
    }
    if used.is_empty() {
        format!(
            "{message}; no credentials are configured: set the one the store requires: \
             PROMETHEUS_BEARER_TOKEN_FILE, PROMETHEUS_BASIC_AUTH_USERNAME and PROMETHEUS_BASIC_AUTH_PASSWORD_FILE, \
             PROMETHEUS_TENANT, PROMETHEUS_HEADERS, or PROMETHEUS_CLIENT_CERT_PATH and PROMETHEUS_CLIENT_KEY_PATH"
        )
    } else {
        format!(
            "{message}; the store refused the credentials of {}",
            used.join(", ")
        )
    }
}

pub(super) fn classify(e: &prometheus_http_query::Error) -> Failure {
    match e {
        prometheus_http_query::Error::Client(c) => match c.inner() {
            Some(r) => classify_reqwest(r),
            None => (ErrorClass::Permanent, "client", c.to_string()),
        },
        other => (ErrorClass::Permanent, "client", other.to_string()),
    }
}

/// The cause in a few words, never reqwest's whole message: that one
/// carries the request URL, URL-encoded PromQL included.
pub(super) fn classify_reqwest(r: &reqwest::Error) -> Failure {
    let cause = describe_request_error(r);
    if r.is_timeout() {
        (ErrorClass::Transient, "timeout", cause)
    } else if r.is_connect() {
        (ErrorClass::Transient, "connect", cause)
    } else if r.is_builder() {
        (ErrorClass::Permanent, "client", cause)
    } else {
        (ErrorClass::Transient, "request", cause)
    }
}

/// Reads an answer into `body` (one buffer of its announced size), refusing
/// one larger than `limit` bytes before or while reading it.
pub(super) async fn read_body(
    response: &mut reqwest::Response,
    body: &mut Vec<u8>,
    limit: usize,
) -> Result<(), Failure> {
    let too_large = |size: String| {
        (
            ErrorClass::Permanent,
            "too_large",
            format!(
                "the metrics store's answer ({size}) is larger than the {limit} bytes this server reads: check the Prometheus URL, or narrow what is served (--watch-namespaces)"
            ),
        )
    };
    let announced = response.content_length().unwrap_or(0);
    if usize::try_from(announced).map_or(true, |n| n > limit) {
        return Err(too_large(format!("Content-Length {announced}")));
    }
    body.clear();
    body.reserve(usize::try_from(announced.min(PREALLOCATE_LIMIT)).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_reqwest(&e))? {
        if body.len() + chunk.len() > limit {
            *body = Vec::new();
            return Err(too_large(format!("over {limit} bytes read")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(())
}

/// Exponential backoff with jitter in [0.5, 1.5) of the nominal delay.
pub(super) fn backoff(attempt: u32) -> Duration {
    let nominal = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.min(8))
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    nominal.mul_f64(jitter)
}
