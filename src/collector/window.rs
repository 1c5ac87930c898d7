//! The one-minute window of a replica's samples, answering peaks (the
//! analysis works on the worst case of the last minute).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of one replica within a time span.
#[derive(Debug, Clone)]
pub struct PeakWindow {
    span: Duration,
    samples: VecDeque<(Instant, f64, f64)>,
    /// Prefix-cache counters (hits, queries) over the same span.
    counters: VecDeque<(Instant, f64, f64)>,
}

impl PeakWindow {
    pub fn new(span: Duration) -> Self {
        PeakWindow {
            span,
            samples: VecDeque::new(),
            counters: VecDeque::new(),
        }
    }

    /// Adds the prefix-cache counters read at `at`. A counter that went
    /// down (the replica restarted) starts the window over.
    pub fn push_counters(&mut self, at: Instant, hits: f64, queries: f64) {
        if let Some(&(_, h, q)) = self.counters.back() {
            if hits < h || queries < q {
                self.counters.clear();
            }
        }
        self.counters.push_back((at, hits, queries));
        while let Some(&(t, _, _)) = self.counters.front() {
            if at.saturating_duration_since(t) > self.span {
                self.counters.pop_front();
            } else {
                break;
            }
        }
    }

    /// Prefix-cache hit rate over the span: increase of hits over increase
    /// of queries, as `rate(hits) / rate(queries)` in PromQL. None with
    /// fewer than two readings or no query in between.
    pub fn prefix_hit_rate(&self) -> Option<f64> {
        let (&(_, h0, q0), &(_, h1, q1)) = (self.counters.front()?, self.counters.back()?);
        let queries = q1 - q0;
        (queries > 0.0).then(|| ((h1 - h0) / queries).clamp(0.0, 1.0))
    }

    /// Adds a sample (kv, waiting) taken at `at` and forgets those that
    /// fell out of the span.
    pub fn push(&mut self, at: Instant, kv: f64, waiting: f64) {
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
    pub fn peaks(&self) -> Option<(f64, f64)> {
        self.samples
            .iter()
            .fold(None, |acc, &(_, kv, q)| match acc {
                None => Some((kv, q)),
                Some((k, w)) => Some((k.max(kv), w.max(q))),
            })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
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
