//! Rate-limited log lines: a hostile or broken client can cause the same
//! refusal or failure thousands of times a second, and one log line each
//! would bury everything else (and cost CPU and disk). A [`LogLimiter`]
//! lets one line through per interval and counts the ones it held back;
//! the next line it lets through says how many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most one line per `interval`, with the count of suppressed lines.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimiter {
    pub(crate) const fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were held back
    /// since the last one), `None` when this one is only counted.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let l = LogLimiter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // (time, expected): the first passes, then 3 are held back, the
        // next after the interval reports them.
        let cases = [
            (0, Some(0)),
            (10, None),
            (500, None),
            (999, None),
            (1000, Some(3)),
            (1001, None),
            (5000, Some(1)),
            (7000, Some(0)),
        ];
        for (at, want) in cases {
            assert_eq!(l.allow_at(ms(at)), want, "at {at} ms");
        }
    }
}
