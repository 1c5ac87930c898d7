//! The queueing arithmetic of the `slo` analysis (pure functions, no
//! state): how many requests one replica can carry while its time to first
//! token stays within the objective, and how many replicas a rate needs.
//!
//! A replica's KV cache holds `capacity` sequences of the model's mean
//! footprint. A request's first token waits when the cache is full, so the
//! objective holds while the sequences in the replica stay below
//! `capacity` plus what the replica finishes within the allowed wait. With
//! Poisson arrivals the number in the replica is about Poisson(N) with
//! `N = rate x seconds in the replica` (Little's law): keeping
//! `N + z sqrt(N)` below that bound, with `z` the normal quantile of the
//! objective's percentile (1.645 for p95), is the square-root staffing rule
//! of call centres applied per replica.

/// The normal quantile of a p95 objective.
pub const Z_P95: f64 = 1.645;

/// What a replica of a variant can carry, from the learned quantities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaShape {
    /// Sequences the KV cache holds at the usable fraction: usable tokens
    /// / mean tokens per sequence.
    pub sequences: f64,
    /// Mean seconds a request stays in the replica (prefill + decode).
    pub seconds_per_request: f64,
}

impl ReplicaShape {
    /// The highest arrival rate (requests/s) one replica carries with its
    /// `z`-quantile of sequences within the cache plus the sequences it
    /// finishes within `allowed_wait` seconds. 0 when the shape is unknown.
    pub fn max_rate(&self, z: f64, allowed_wait: f64) -> f64 {
        if !(self.sequences > 0.0 && self.seconds_per_request > 0.0) {
            return 0.0;
        }
        let finished_while_waiting =
            self.sequences * allowed_wait.max(0.0) / self.seconds_per_request;
        let bound = self.sequences + finished_while_waiting;
        // Largest N with N + z sqrt(N) <= bound: sqrt(N) = (-z + sqrt(z^2 + 4 bound)) / 2.
        let root = (-z + (z * z + 4.0 * bound).sqrt()) / 2.0;
        let n = root.max(0.0).powi(2);
        n / self.seconds_per_request
    }
}

/// The highest arrival rate (requests/s) one replica's prefill carries
/// with its time to first token within `ttft` at the `1 - tail` quantile.
/// Prefill runs one prompt at a time, so a request waits for the prompts
/// ahead of it: an M/G/1 queue, whose waiting time is taken as the M/M/1
/// one, `P(wait > t) = rho exp(-(1 - rho) t / s)` with `s` the mean
/// prefill seconds and `t = ttft - s` (the request's own prefill comes
/// after its wait). The largest `rho` with that tail within `tail`, over
/// `s`. None when a prefill alone takes the objective (no count meets it,
/// so the prefill does not size the model) or `s` is unknown.
pub(crate) fn prefill_max_rate(prefill_seconds: f64, ttft: f64, tail: f64) -> Option<f64> {
    if !(prefill_seconds > 0.0 && prefill_seconds.is_finite()) {
        return None;
    }
    let budget = ttft - prefill_seconds;
    // NaN fails every comparison, so it is refused here too.
    let sizable = budget > 0.0 && tail > 0.0 && tail < 1.0;
    if !sizable {
        return None;
    }
    let exceeds = |rho: f64| rho * (-(1.0 - rho) * budget / prefill_seconds).exp();
    // exceeds() rises from 0 at rho = 0 to 1 at rho = 1: bisect.
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if exceeds(mid) > tail {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(lo / prefill_seconds)
}

/// The tail of a p95 objective.
pub(crate) const TAIL_P95: f64 = 0.05;

/// Replicas needed to carry `rate` at `per_replica` requests/s each.
pub fn replicas_for(rate: f64, per_replica: f64) -> u32 {
    if rate <= 0.0 {
        return 0;
    }
    if per_replica <= 0.0 {
        return u32::MAX;
    }
    let n = (rate / per_replica - 1e-9).ceil();
    if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n.max(1.0) as u32
    }
}

/// Least-squares slope (units per second) of `(seconds, value)` points;
/// None with fewer than three points or no spread in time.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The rise per second of a series over its last `window` seconds before
/// `t`: the newest point against the oldest within the window. A queue
/// filling behind a load step shows here seconds after the step, where a
/// one-minute slope takes the minute to follow (it averages the flat
/// minute before the step in). None when the window holds points less
/// than a quarter of it apart.
pub(crate) fn recent_rise(points: &[(f64, f64)], t: f64, window: f64) -> Option<f64> {
    let (t_new, v_new) = *points.last()?;
    let (t_old, v_old) = *points.iter().find(|(at, _)| t - at <= window)?;
    (t_new - t_old >= window / 4.0).then(|| (v_new - v_old) / (t_new - t_old))
}

/// A queue's growth per second at `t`: its one-minute least-squares slope,
/// or its change over the last `window` seconds where that moved further
/// the same way. The minute's slope lags in both directions: it averages
/// the calm before a step in (so a rise is taken from the recent window),
/// and it still shows the filling after the queue turned (a backlog whose
/// replica no longer receives arrivals, the new replicas taking them,
/// kept its completions counted as arrivals for a minute, and asked for
/// replicas the drain did not need). No recent change known: the slope, at
/// least 0. None with fewer than three points.
pub(crate) fn queue_growth(points: &[(f64, f64)], t: f64, window: f64) -> Option<f64> {
    let minute = slope(points)?;
    let recent = recent_rise(points, t, window).unwrap_or(0.0);
    Some(if recent < 0.0 {
        minute.min(recent)
    } else {
        minute.max(recent)
    })
}

/// Theil-Sen slope (the median of the pairwise slopes) of `(seconds,
/// value)` points: a ramp gives its slope, a step at the end of the window
/// (few points after it) gives about none, so a load step is not taken for
/// a trend and projected. None with fewer than three points.
pub(crate) fn robust_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.0 - a.0;
            if dx > 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    Some(slopes[slopes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rate_follows_the_square_root_rule() {
        // 100 sequences, 10 s each, no wait allowed: N + 1.645 sqrt(N) <= 100
        // gives N = 84.8 (sqrt N = 9.21), so 8.48 req/s.
        let s = ReplicaShape {
            sequences: 100.0,
            seconds_per_request: 10.0,
        };
        let r = s.max_rate(Z_P95, 0.0);
        assert!((r - 8.485).abs() < 0.001, "{r}");
        // z = 0: exactly the cache.
        assert!((s.max_rate(0.0, 0.0) - 10.0).abs() < 1e-9);
        // A 2 s wait lets 20 more sequences finish: bound 120.
        let r = s.max_rate(0.0, 2.0);
        assert!((r - 12.0).abs() < 1e-9, "{r}");
        // Unknown shape carries nothing.
        let zero = ReplicaShape {
            sequences: 0.0,
            seconds_per_request: 10.0,
        };
        assert_eq!(zero.max_rate(Z_P95, 2.0), 0.0);
    }

    #[test]
    fn prefill_bound_follows_the_waiting_time_tail() {
        // 0.25 s prefills, 2 s objective: a 1.75 s wait budget, 7 prefills.
        // rho exp(-(1 - rho) 7) = 0.05 at rho = 0.6366.
        let r = prefill_max_rate(0.25, 2.0, TAIL_P95).unwrap();
        let rho = r * 0.25;
        assert!(
            (rho * (-(1.0 - rho) * 7.0f64).exp() - 0.05).abs() < 1e-9,
            "{rho}"
        );
        assert!((rho - 0.637).abs() < 0.001, "{rho}");
        // Short prefills against the same objective: close to full use.
        let short = prefill_max_rate(0.01, 2.0, TAIL_P95).unwrap() * 0.01;
        assert!(short > 0.98 && short < 1.0, "{short}");
        // A longer objective carries more.
        assert!(prefill_max_rate(0.25, 4.0, TAIL_P95).unwrap() > r);
        // A prefill longer than the objective, or unknown: no bound.
        assert_eq!(prefill_max_rate(2.5, 2.0, TAIL_P95), None);
        assert_eq!(prefill_max_rate(0.0, 2.0, TAIL_P95), None);
        assert_eq!(prefill_max_rate(f64::NAN, 2.0, TAIL_P95), None);
    }

    #[test]
    fn replicas_round_up_and_never_divide_by_zero() {
        let cases = [
            (0.0, 5.0, 0),
            (5.0, 5.0, 1),
            (5.01, 5.0, 2),
            (30.0, 6.0, 5),
            (0.1, 6.0, 1),
            (1.0, 0.0, u32::MAX),
        ];
        for (rate, per, want) in cases {
            assert_eq!(replicas_for(rate, per), want, "{rate} / {per}");
        }
    }

    #[test]
    fn slope_of_a_line_and_of_too_little() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 15.0, 2.0 + 0.1 * i as f64 * 15.0))
            .collect();
        assert!((slope(&line).unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(slope(&line[..2]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn a_recent_rise_sees_a_step_the_minute_slope_averages_away() {
        // Flat at 0 for 45 s, then a queue filling at 20 requests/s.
        let points: Vec<(f64, f64)> = (0..=4)
            .map(|i| {
                let at = 100.0 + 15.0 * f64::from(i);
                (at, (20.0 * (at - 145.0)).max(0.0))
            })
            .collect();
        // 15 s into the step: half its rate over the 30 s window, where
        // the minute's least-squares slope sees a fifth.
        let t = 160.0;
        assert_eq!(recent_rise(&points, t, 30.0), Some(10.0));
        assert!((slope(&points).unwrap() - 4.0).abs() < 1e-9);
        // A window into the step: its full rate.
        let filling = [(130.0, 0.0), (145.0, 0.0), (160.0, 300.0), (175.0, 600.0)];
        assert_eq!(recent_rise(&filling, 175.0, 30.0), Some(20.0));
        // A flat queue: no rise.
        let flat: Vec<(f64, f64)> = points.iter().map(|(at, _)| (*at, 3.0)).collect();
        assert_eq!(recent_rise(&flat, t, 30.0), Some(0.0));
        // A single point, or points too close together: no rise.
        assert_eq!(recent_rise(&points[4..], t, 30.0), None);
        assert_eq!(recent_rise(&[(159.0, 0.0), (160.0, 50.0)], t, 30.0), None);
        assert_eq!(recent_rise(&[], t, 30.0), None);
    }

    #[test]
    fn a_queues_growth_follows_its_recent_turn() {
        // Queue at 100, 115, 130, 145, 160 s; growth at 160 s over a 30 s
        // window (the change since the point at 130 s).
        let at = |v: [f64; 5]| -> Vec<(f64, f64)> {
            v.iter()
                .enumerate()
                .map(|(i, q)| (100.0 + 15.0 * i as f64, *q))
                .collect()
        };
        let cases = [
            // Flat, then filling at 10/s: the recent rise (5/s over 30 s)
            // beats the minute's least-squares 2/s.
            ([0.0, 0.0, 0.0, 0.0, 150.0], Some(5.0)),
            // Filled, then turned: the minute still rises (least squares
            // 2.53/s), the last 30 s fell by 60: the fall is taken.
            ([0.0, 100.0, 200.0, 200.0, 140.0], Some(-2.0)),
            // Falling all along: the steeper of the two falls.
            ([60.0, 45.0, 30.0, 15.0, 0.0], Some(-1.0)),
            // A steady rise: its slope.
            ([0.0, 15.0, 30.0, 45.0, 60.0], Some(1.0)),
            // Flat: none.
            ([7.0, 7.0, 7.0, 7.0, 7.0], Some(0.0)),
        ];
        for (queue, want) in cases {
            let got = queue_growth(&at(queue), 160.0, 30.0);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{queue:?}: {g} != {w}"),
                _ => assert_eq!(got, want, "{queue:?}"),
            }
        }
        // Too few points: nothing known.
        assert_eq!(queue_growth(&at([1.0; 5])[..2], 160.0, 30.0), None);
    }

    #[test]
    fn a_step_is_not_a_trend_but_a_ramp_is() {
        let ramp: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 * 15.0, 1.0 + 0.01 * i as f64 * 15.0))
            .collect();
        assert!((robust_slope(&ramp).unwrap() - 0.01).abs() < 1e-12);
        // 17 points at 5 req/s, then 3 at 30.
        let step: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 * 15.0, if i < 17 { 5.0 } else { 30.0 }))
            .collect();
        assert_eq!(robust_slope(&step), Some(0.0));
        assert!(
            slope(&step).unwrap() > 0.05,
            "least squares takes the step for a trend"
        );
        assert_eq!(robust_slope(&ramp[..2]), None);
    }
}
