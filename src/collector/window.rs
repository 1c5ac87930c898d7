//! The one-minute window of a replica's samples, answering peaks (the
//! analysis works on the worst case of the last minute).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Readings of two counters (numerator, denominator) within a time span,
/// answering the ratio of their increases, as `rate(a) / rate(b)` does.
#[derive(Debug, Clone, Default)]
pub(crate) struct RatioWindow {
    readings: VecDeque<(Instant, f64, f64)>,
}

impl RatioWindow {
    /// Adds a reading taken at `at`. A counter that went down (the replica
    /// restarted) starts the window over.
    pub(crate) fn push(&mut self, span: Duration, at: Instant, num: f64, den: f64) {
        if let Some(&(_, n, d)) = self.readings.back() {
            if num < n || den < d {
                self.readings.clear();
            }
        }
        self.readings.push_back((at, num, den));
        while let Some(&(t, _, _)) = self.readings.front() {
            if at.saturating_duration_since(t) > span {
                self.readings.pop_front();
            } else {
                break;
            }
        }
    }

    /// Increase of the numerator over increase of the denominator; None
    /// with fewer than two readings or no increase of the denominator.
    pub(crate) fn ratio(&self) -> Option<f64> {
        let (&(_, n0, d0), &(_, n1, d1)) = (self.readings.front()?, self.readings.back()?);
        let den = d1 - d0;
        (den > 0.0).then(|| (n1 - n0) / den)
    }
}

/// Samples of one replica within a time span.
#[derive(Debug, Clone)]
pub(crate) struct PeakWindow {
    span: Duration,
    samples: VecDeque<(Instant, f64, f64)>,
    /// Prefix-cache hits over queries.
    prefix: RatioWindow,
    /// Prompt and generated tokens over requests (histogram sums over counts).
    prompt: RatioWindow,
    generation: RatioWindow,
    /// Prefill seconds over requests (`vllm:request_prefill_time_seconds`).
    prefill: RatioWindow,
    /// Finished requests over seconds since `created`.
    completions: RatioWindow,
    created: Instant,
}

impl PeakWindow {
    pub(crate) fn new(span: Duration) -> Self {
        PeakWindow {
            span,
            samples: VecDeque::new(),
            prefix: RatioWindow::default(),
            prompt: RatioWindow::default(),
            generation: RatioWindow::default(),
            prefill: RatioWindow::default(),
            completions: RatioWindow::default(),
            created: Instant::now(),
        }
    }

    /// Adds `vllm:request_success_total` read at `at`.
    pub(crate) fn push_completions(&mut self, at: Instant, total: f64) {
        let elapsed = at.saturating_duration_since(self.created).as_secs_f64();
        self.completions.push(self.span, at, total, elapsed);
    }

    /// Finished requests per second over the span (`rate(...[1m])`).
    pub(crate) fn completion_rate(&self) -> Option<f64> {
        self.completions.ratio().map(|r| r.max(0.0))
    }

    /// Adds the prefix-cache counters read at `at`.
    pub(crate) fn push_counters(&mut self, at: Instant, hits: f64, queries: f64) {
        self.prefix.push(self.span, at, hits, queries);
    }

    /// Prefix-cache hit rate over the span, in [0, 1].
    pub(crate) fn prefix_hit_rate(&self) -> Option<f64> {
        self.prefix.ratio().map(|r| r.clamp(0.0, 1.0))
    }

    /// Adds the prompt and generation token histograms' (sum, count) read at `at`.
    pub(crate) fn push_tokens(
        &mut self,
        at: Instant,
        prompt: Option<(f64, f64)>,
        generation: Option<(f64, f64)>,
    ) {
        if let Some((sum, count)) = prompt {
            self.prompt.push(self.span, at, sum, count);
        }
        if let Some((sum, count)) = generation {
            self.generation.push(self.span, at, sum, count);
        }
    }

    /// Mean prompt and generated tokens of the requests finished within the span.
    pub(crate) fn token_averages(&self) -> (Option<f64>, Option<f64>) {
        (self.prompt.ratio(), self.generation.ratio())
    }

    /// Adds the prefill-time histogram's (sum, count) read at `at`.
    pub(crate) fn push_prefill_time(&mut self, at: Instant, prefill: Option<(f64, f64)>) {
        if let Some((sum, count)) = prefill {
            self.prefill.push(self.span, at, sum, count);
        }
    }

    /// Mean prefill seconds of the requests finished within the span: None
    /// when none finished (or with one reading only); a counter that went
    /// down (a restart) starts the window over, as for the token means.
    pub(crate) fn avg_prefill_seconds(&self) -> Option<f64> {
        self.prefill.ratio()
    }

    /// Adds a sample (kv, waiting) taken at `at` and forgets those that
    /// fell out of the span.
    pub(crate) fn push(&mut self, at: Instant, kv: f64, waiting: f64) {
        self.samples.push_back((at, kv, waiting));
        while let Some(&(t, _, _)) = self.samples.front() {
            if at.saturating_duration_since(t) > self.span {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Peak kv and waiting over the span, None when empty.
    pub(crate) fn peaks(&self) -> Option<(f64, f64)> {
        self.samples
            .iter()
            .fold(None, |acc, &(_, kv, q)| match acc {
                None => Some((kv, q)),
                Some((k, w)) => Some((k.max(kv), w.max(q))),
            })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }
}

/// Samples of a counter spanning at least a retention period, bounded:
/// samples closer than `span / 64` to the one before are replaced by the
/// newer, so a pod keeps at most about 66 whatever the scrape interval.
#[derive(Debug, Clone, Default)]
pub(crate) struct CounterHistory {
    samples: VecDeque<(Instant, f64)>,
}

impl CounterHistory {
    /// Adds the counter's value at `at`, keeping what `increase` over
    /// `span` needs.
    pub(crate) fn push(&mut self, at: Instant, value: f64, span: Duration) {
        let min_gap = span / 64;
        let n = self.samples.len();
        if n >= 2
            && self.samples[n - 1]
                .0
                .saturating_duration_since(self.samples[n - 2].0)
                < min_gap
        {
            // Keep a reset visible: the replaced sample's drop would be lost.
            if value >= self.samples[n - 1].1 {
                self.samples.pop_back();
            }
        }
        self.samples.push_back((at, value));
        // The newest sample at least `span` old is the base; older ones go.
        while self.samples.len() >= 2 && at.saturating_duration_since(self.samples[1].0) >= span {
            self.samples.pop_front();
        }
    }

    /// The counter's increase over the `window` before `now` (a drop is a
    /// restart from zero, as Prometheus' `increase` counts it), or None
    /// when the history does not reach back `window` yet.
    pub(crate) fn increase(&self, now: Instant, window: Duration) -> Option<f64> {
        let base = self
            .samples
            .iter()
            .rposition(|(t, _)| now.saturating_duration_since(*t) >= window)?;
        let mut total = 0.0;
        let mut prev = self.samples[base].1;
        for &(_, v) in self.samples.iter().skip(base + 1) {
            total += if v >= prev { v - prev } else { v };
            prev = v;
        }
        Some(total)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_history_covers_the_window_and_stays_bounded() {
        let t0 = Instant::now();
        let span = Duration::from_secs(64);
        let mut h = CounterHistory::default();
        // One scrape every 100 ms for 200 s; the counter grows until 100 s,
        // restarts at 120 s (a new process), then stays flat.
        for i in 0..=2000u64 {
            let t = t0 + Duration::from_millis(100 * i);
            let secs = i as f64 / 10.0;
            let v = if secs < 100.0 {
                secs.floor()
            } else if secs < 120.0 {
                100.0
            } else {
                3.0
            };
            h.push(t, v, span);
            assert!(h.len() <= 67, "{} samples at {secs}s", h.len());
            let covered = h.increase(t, span);
            if secs < 64.0 {
                assert_eq!(
                    covered, None,
                    "at {secs}s the history is shorter than the window"
                );
            }
        }
        let end = t0 + Duration::from_secs(200);
        // Flat since 120 s: idle over the last 64 s.
        assert_eq!(h.increase(end, span), Some(0.0));
        // Over the last 90 s the restart to 3 counts as 3 (history is only 64 s + one base though).
        assert_eq!(h.increase(end, Duration::from_secs(90)), None);
        let mut h2 = CounterHistory::default();
        for (s, v) in [(0, 10.0), (30, 12.0), (60, 2.0), (90, 5.0)] {
            h2.push(t0 + Duration::from_secs(s), v, Duration::from_secs(90));
        }
        // 10 -> 12 (+2), restart -> 2 (+2), -> 5 (+3)
        assert_eq!(
            h2.increase(t0 + Duration::from_secs(90), Duration::from_secs(90)),
            Some(7.0)
        );
        assert_eq!(
            h2.increase(t0 + Duration::from_secs(90), Duration::from_secs(30)),
            Some(3.0)
        );
    }

    use super::*;

    #[test]
    fn keeps_the_peak_of_the_span_only() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = PeakWindow::new(Duration::from_secs(60));
        assert_eq!(w.peaks(), None);
        w.push(at(0), 0.9, 1.0);
        w.push(at(10), 0.2, 6.0);
        w.push(at(30), 0.3, 2.0);
        assert_eq!(w.peaks(), Some((0.9, 6.0)));
        w.push(at(65), 0.1, 0.0);
        assert_eq!(
            w.peaks(),
            Some((0.3, 6.0)),
            "the sample at 0 s left the window"
        );
        w.push(at(90), 0.1, 0.0);
        assert_eq!(w.peaks(), Some((0.3, 2.0)), "the sample at 10 s left too");
        w.push(at(100), 0.1, 0.0);
        assert_eq!(w.peaks(), Some((0.1, 0.0)));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn token_averages_are_sum_over_count_of_the_span() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = PeakWindow::new(Duration::from_secs(60));
        w.push_tokens(at(0), Some((1000.0, 2.0)), None);
        assert_eq!(w.token_averages(), (None, None));
        w.push_tokens(at(10), Some((1600.0, 4.0)), Some((50.0, 1.0)));
        assert_eq!(w.token_averages(), (Some(300.0), None));
        w.push_tokens(at(20), Some((1600.0, 4.0)), Some((250.0, 3.0)));
        assert_eq!(w.token_averages(), (Some(300.0), Some(100.0)));
        // No request finished within the span: unknown, not 0.
        w.push_tokens(at(81), Some((1600.0, 4.0)), Some((250.0, 3.0)));
        assert_eq!(w.token_averages(), (None, None));
    }

    #[test]
    fn prefill_mean_is_the_seconds_over_the_requests_of_the_span() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = PeakWindow::new(Duration::from_secs(60));
        w.push_prefill_time(at(0), Some((2.0, 10.0)));
        assert_eq!(w.avg_prefill_seconds(), None, "one reading");
        w.push_prefill_time(at(10), Some((2.0, 10.0)));
        assert_eq!(w.avg_prefill_seconds(), None, "no request finished");
        // 4 requests, 1 s of prefill between them: 0.25 s each.
        w.push_prefill_time(at(20), Some((3.0, 14.0)));
        assert_eq!(w.avg_prefill_seconds(), Some(0.25));
        // A page without the histogram leaves the window as it was.
        w.push_prefill_time(at(30), None);
        assert_eq!(w.avg_prefill_seconds(), Some(0.25));
        // The readings at 0 and 10 s leave: (5.0 - 3.0) / (18 - 14).
        w.push_prefill_time(at(71), Some((5.0, 18.0)));
        assert_eq!(w.avg_prefill_seconds(), Some(0.5));
        // Nothing finished within the last minute: unknown, not 0.
        w.push_prefill_time(at(100), Some((5.0, 18.0)));
        w.push_prefill_time(at(140), Some((5.0, 18.0)));
        assert_eq!(w.avg_prefill_seconds(), None);
        // A restart resets the counters: the window starts over.
        w.push_prefill_time(at(150), Some((0.5, 1.0)));
        assert_eq!(w.avg_prefill_seconds(), None);
        w.push_prefill_time(at(160), Some((2.0, 5.0)));
        assert_eq!(w.avg_prefill_seconds(), Some(0.375));
        // The token means are kept apart.
        assert_eq!(w.token_averages(), (None, None));
    }

    #[test]
    fn prefix_hit_rate_is_the_increase_over_the_span() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = PeakWindow::new(Duration::from_secs(60));
        w.push_counters(at(0), 100.0, 1000.0);
        assert_eq!(w.prefix_hit_rate(), None, "one reading");
        w.push_counters(at(10), 100.0, 1000.0);
        assert_eq!(w.prefix_hit_rate(), None, "no query in between");
        w.push_counters(at(20), 400.0, 2000.0);
        assert_eq!(w.prefix_hit_rate(), Some(0.3));
        // The reading at 0 s leaves: (700 - 100) / (3000 - 1000).
        w.push_counters(at(65), 700.0, 3000.0);
        assert_eq!(w.prefix_hit_rate(), Some(0.3));
        // At 71 s the reading at 10 s has left too: (1400 - 400) / (4000 - 2000).
        w.push_counters(at(71), 1400.0, 4000.0);
        assert_eq!(w.prefix_hit_rate(), Some(0.5));
        // A restart resets the counters: the window starts over.
        w.push_counters(at(80), 5.0, 10.0);
        assert_eq!(w.prefix_hit_rate(), None);
        w.push_counters(at(90), 15.0, 30.0);
        assert_eq!(w.prefix_hit_rate(), Some(0.5));
    }
}
