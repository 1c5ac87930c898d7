//! Validation of single samples, shared by every backend: a value that is
//! NaN, infinite or out of its range is rejected, logged and counted, and
//! never reaches the analysis.

use std::fmt;

/// The vLLM signals the analysis uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Signal {
    /// KV-cache usage, a fraction in [0, 1].
    KvCacheUsage,
    /// Requests waiting in the queue, >= 0.
    QueueWaiting,
    /// Requests running, >= 0.
    Running,
}

impl Signal {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Signal::KvCacheUsage => "kv_cache_usage",
            Signal::QueueWaiting => "num_requests_waiting",
            Signal::Running => "num_requests_running",
        }
    }
}

/// Why a sample was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RejectReason {
    NotFinite,
    OutOfRange,
}

impl RejectReason {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            RejectReason::NotFinite => "not_finite",
            RejectReason::OutOfRange => "out_of_range",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The check applied to every sample before it is stored.
pub(crate) trait SampleCheck {
    fn check(&self, value: f64) -> Result<f64, RejectReason>;
}

impl SampleCheck for Signal {
    fn check(&self, value: f64) -> Result<f64, RejectReason> {
        if !value.is_finite() {
            return Err(RejectReason::NotFinite);
        }
        let ok = match self {
            Signal::KvCacheUsage => (0.0..=1.0).contains(&value),
            Signal::QueueWaiting | Signal::Running => value >= 0.0,
        };
        if ok {
            Ok(value)
        } else {
            Err(RejectReason::OutOfRange)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_each_signal_range() {
        let cases = [
            (Signal::KvCacheUsage, 0.0, Ok(0.0)),
            (Signal::KvCacheUsage, 1.0, Ok(1.0)),
            (Signal::KvCacheUsage, 1.7, Err(RejectReason::OutOfRange)),
            (Signal::KvCacheUsage, -0.1, Err(RejectReason::OutOfRange)),
            (Signal::KvCacheUsage, f64::NAN, Err(RejectReason::NotFinite)),
            (Signal::QueueWaiting, 7.0, Ok(7.0)),
            (Signal::QueueWaiting, -1.0, Err(RejectReason::OutOfRange)),
            (
                Signal::QueueWaiting,
                f64::INFINITY,
                Err(RejectReason::NotFinite),
            ),
            (Signal::Running, 0.0, Ok(0.0)),
        ];
        for (signal, value, want) in cases {
            assert_eq!(signal.check(value), want, "{signal:?} {value}");
        }
    }
}
