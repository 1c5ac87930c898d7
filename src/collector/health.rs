//! What the fetcher knows about its metrics source: whether it answers,
//! since when it does not and why, per model where the source is the pods
//! themselves. Answers (503 messages), `/readyz` and the log read it, so
//! that "Prometheus at URL unreachable since T: connection refused" is said
//! instead of "not fetched yet".
//!
//! Pure state: the backends and the fetcher write it, nothing here does I/O.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use dashmap::DashMap;

use crate::inventory::ModelKey;

/// A source (or a model's pods) that did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceFailure {
    /// What failed, with where: `Prometheus at http://prometheus:9090
    /// unreachable`, or `no ready pod of model "m" answered its /metrics`.
    pub(crate) what: String,
    /// Why, as short as the cause allows: `connection refused`, `HTTP 503
    /// Service Unavailable`, `TLS: invalid peer certificate: UnknownIssuer`.
    pub(crate) cause: String,
    /// The first failure of this run of failures.
    pub(crate) since: SystemTime,
}

impl std::fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} since {}: {}",
            self.what,
            rfc3339_seconds(self.since),
            self.cause
        )
    }
}

/// `2026-12-07T00:15:02Z`.
pub(crate) fn rfc3339_seconds(t: SystemTime) -> String {
    match jiff::Timestamp::try_from(t) {
        Ok(ts) => ts
            .round(jiff::Unit::Second)
            .unwrap_or(ts)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        Err(_) => "an unknown time".to_owned(),
    }
}

/// What changed by recording a result: the caller logs on changes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Failing now, and was not (or failed differently): log it.
    StartedFailing,
    /// The same failure as before: nothing to log.
    StillFailing,
    /// Answered after failing since the given time: log the recovery.
    Recovered { since: SystemTime },
    /// Answered, as before.
    StillHealthy,
}

/// The fetcher's knowledge of its source. Shared through the
/// [`MetricsCache`](super::MetricsCache).
#[derive(Debug, Default)]
pub(crate) struct FetchHealth {
    /// The source as a whole (Prometheus): set while its queries fail.
    source: Mutex<Option<SourceFailure>>,
    /// Models none of whose pods answered (the scrape backend).
    models: DashMap<ModelKey, SourceFailure, foldhash::fast::RandomState>,
    /// A fetch cycle over the synced inventory has succeeded once.
    succeeded: AtomicBool,
}

impl FetchHealth {
    /// Records a failure of the whole source.
    pub(crate) fn source_failed(&self, what: &str, cause: &str, now: SystemTime) -> Change {
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        fail(&mut source, what, cause, now)
    }

    /// Records that the whole source answered.
    pub(crate) fn source_answered(&self) -> Change {
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        match source.take() {
            Some(f) => Change::Recovered { since: f.since },
            None => Change::StillHealthy,
        }
    }

    /// The source's current failure, if any.
    pub(crate) fn source_failure(&self) -> Option<SourceFailure> {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records that no pod of `model` answered.
    pub(crate) fn model_failed(
        &self,
        model: &ModelKey,
        what: &str,
        cause: &str,
        now: SystemTime,
    ) -> Change {
        let mut entry = self.models.get(model).map(|f| f.clone());
        let change = fail(&mut entry, what, cause, now);
        if let Some(f) = entry {
            self.models.insert(model.clone(), f);
        }
        change
    }

    /// Records that a pod of `model` answered.
    pub(crate) fn model_answered(&self, model: &ModelKey) -> Change {
        match self.models.remove(model) {
            Some((_, f)) => Change::Recovered { since: f.since },
            None => Change::StillHealthy,
        }
    }

    /// Forgets models for which `keep` is false (gone from the inventory).
    pub(crate) fn retain_models(&self, keep: impl Fn(&ModelKey) -> bool) {
        self.models.retain(|k, _| keep(k));
    }

    /// Why the metrics of `model` could not be fetched, if the last
    /// attempt failed: the model's own failure, else the source's.
    pub(crate) fn why_not_fetched(&self, model: &ModelKey) -> Option<SourceFailure> {
        self.models
            .get(model)
            .map(|f| f.clone())
            .or_else(|| self.source_failure())
    }

    /// Any current failure: the source's, else one model's (for `/readyz`).
    pub(crate) fn any_failure(&self) -> Option<SourceFailure> {
        self.source_failure().or_else(|| {
            let mut failures: Vec<SourceFailure> =
                self.models.iter().map(|e| e.value().clone()).collect();
            failures.sort_by(|a, b| a.what.cmp(&b.what));
            failures.into_iter().next()
        })
    }

    /// Marks that a fetch cycle over the synced inventory succeeded.
    pub(crate) fn mark_succeeded(&self) {
        self.succeeded.store(true, Ordering::Release);
    }

    /// Whether a fetch cycle over the synced inventory has succeeded once.
    pub(crate) fn has_succeeded(&self) -> bool {
        self.succeeded.load(Ordering::Acquire)
    }
}

fn fail(slot: &mut Option<SourceFailure>, what: &str, cause: &str, now: SystemTime) -> Change {
    match slot {
        Some(f) if f.what == what && f.cause == cause => Change::StillFailing,
        Some(f) => {
            // Failing differently: the run of failures goes on (same
            // `since`), but the new cause is said.
            f.what = what.to_owned();
            f.cause = cause.to_owned();
            Change::StartedFailing
        }
        None => {
            *slot = Some(SourceFailure {
                what: what.to_owned(),
                cause: cause.to_owned(),
                since: now,
            });
            Change::StartedFailing
        }
    }
}

/// The cause of a failed HTTP request in a few words, without the request
/// URL (reqwest's own message carries the whole URL, URL-encoded PromQL
/// included): `connection refused`, `timed out`, `TLS: ...`, `DNS: ...`.
pub(crate) fn describe_request_error(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    if e.is_timeout() {
        return "no answer in time (timed out)".to_owned();
    }
    let mut io_kind = None;
    let mut texts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        texts.push(s.to_string());
        source = s.source();
    }
    let innermost = texts.last().cloned().unwrap_or_else(|| e.to_string());
    let all = texts.join(": ").to_ascii_lowercase();
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => return "connection refused".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => return "connection timed out".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => return "connection reset".to_owned(),
        _ => {}
    }
    if all.contains("certificate") || all.contains("tls") || all.contains("handshake") {
        return format!("TLS: {innermost}");
    }
    if all.contains("dns") || all.contains("lookup") || all.contains("resolve") {
        return format!("DNS: {innermost}");
    }
    if e.is_connect() {
        return format!("cannot connect: {innermost}");
    }
    innermost
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(m: &str) -> ModelKey {
        ModelKey {
            namespace: "ns".into(),
            model_id: m.into(),
        }
    }

    #[test]
    fn a_failure_is_reported_on_changes_only_and_keeps_its_start() {
        let h = FetchHealth::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t1 = t0 + Duration::from_secs(5);
        let steps: Vec<(Option<&str>, Change)> = vec![
            (None, Change::StillHealthy),
            (Some("connection refused"), Change::StartedFailing),
            (Some("connection refused"), Change::StillFailing),
            (Some("timed out"), Change::StartedFailing),
            (None, Change::Recovered { since: t0 }),
            (None, Change::StillHealthy),
        ];
        for (i, (cause, want)) in steps.into_iter().enumerate() {
            let now = if i <= 1 { t0 } else { t1 };
            let got = match cause {
                Some(c) => h.source_failed("Prometheus at http://p:9090 unreachable", c, now),
                None => h.source_answered(),
            };
            assert_eq!(got, want, "step {i}");
        }
        h.source_failed(
            "Prometheus at http://p:9090 unreachable",
            "connection refused",
            t0,
        );
        assert_eq!(
            h.why_not_fetched(&key("m")).unwrap().to_string(),
            "Prometheus at http://p:9090 unreachable since 2027-01-15T08:00:00Z: connection refused"
        );
    }

    #[test]
    fn a_model_failure_wins_over_the_source_and_is_forgotten_with_the_model() {
        let h = FetchHealth::default();
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(h.why_not_fetched(&key("a")), None);
        assert_eq!(
            h.model_failed(
                &key("a"),
                "no ready pod of model \"a\" answered its /metrics",
                "p0: connection refused",
                t
            ),
            Change::StartedFailing
        );
        assert_eq!(
            h.model_failed(
                &key("a"),
                "no ready pod of model \"a\" answered its /metrics",
                "p0: connection refused",
                t
            ),
            Change::StillFailing
        );
        assert!(h.why_not_fetched(&key("a")).unwrap().cause.contains("p0"));
        assert_eq!(h.why_not_fetched(&key("b")), None);
        assert!(h.any_failure().is_some());
        h.retain_models(|k| k.model_id != "a");
        assert_eq!(h.why_not_fetched(&key("a")), None);
        assert_eq!(h.model_answered(&key("a")), Change::StillHealthy);
    }

    #[tokio::test]
    async fn request_errors_are_named_by_their_cause_without_the_url() {
        crate::certs::install_crypto_provider();
        // A port with nothing listening: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query=sum%28x%29");
        let e = reqwest::Client::new().get(&url).send().await.unwrap_err();
        let cause = describe_request_error(&e);
        assert_eq!(cause, "connection refused", "{e:?}");
        assert!(!cause.contains("query"));
    }
}
