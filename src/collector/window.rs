//! The one-minute window of a replica's samples, answering peaks (the
//! analysis works on the worst case of the last minute).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples of one replica within a time span.
#[derive(Debug, Clone)]
pub struct PeakWindow {
    span: Duration,
    samples: VecDeque<(Instant, f64, f64)>,
}

impl PeakWindow {
    pub fn new(span: Duration) -> Self {
        PeakWindow {
            span,
            samples: VecDeque::new(),
        }
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
}
