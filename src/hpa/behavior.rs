//! The HPA's `behavior` (autoscaling/v2): stabilization windows and rate
//! policies, as the controller applies them after the replica calculator
//! (`normalizeDesiredReplicasWithBehaviors` in
//! pkg/controller/podautoscaler). Pure: time is passed in as seconds, the
//! caller keeps a [`BehaviorState`] per HPA between syncs.
//!
//! Kubernetes' defaults (what an HPA without `behavior` gets from the API
//! server): scale up with no stabilization, at most +100 % or +4 pods per
//! 15 s (whichever is more); scale down after a 300 s stabilization window,
//! at most -100 % per 15 s.

use std::collections::VecDeque;

/// How a rate policy limits a change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyKind {
    /// At most this many pods per period.
    Pods(u32),
    /// At most this percentage of the replicas at the start of the period.
    Percent(u32),
}

/// One `behavior.scaleUp/scaleDown.policies` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    pub(crate) kind: PolicyKind,
    pub(crate) period_seconds: u32,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy that allows the largest change (the default).
    Max,
    /// The policy that allows the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One direction of `behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    pub(crate) stabilization_window_seconds: u32,
    pub(crate) select_policy: SelectPolicy,
    pub(crate) policies: Vec<RatePolicy>,
}

/// `spec.behavior` of an HPA.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaBehavior {
    pub(crate) scale_up: ScalingRules,
    pub(crate) scale_down: ScalingRules,
}

impl Default for HpaBehavior {
    /// The API server's defaults for autoscaling/v2.
    fn default() -> Self {
        HpaBehavior {
            scale_up: ScalingRules {
                stabilization_window_seconds: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![
                    RatePolicy {
                        kind: PolicyKind::Percent(100),
                        period_seconds: 15,
                    },
                    RatePolicy {
                        kind: PolicyKind::Pods(4),
                        period_seconds: 15,
                    },
                ],
            },
            scale_down: ScalingRules {
                stabilization_window_seconds: 300,
                select_policy: SelectPolicy::Max,
                policies: vec![RatePolicy {
                    kind: PolicyKind::Percent(100),
                    period_seconds: 15,
                }],
            },
        }
    }
}

/// What one HPA remembers between syncs: its recommendations (for the
/// stabilization windows) and its scale events (for the rate policies).
#[derive(Debug, Clone, Default)]
pub struct BehaviorState {
    /// (time, replicas the calculator recommended).
    recommendations: VecDeque<(f64, u32)>,
    /// (time, replicas added (> 0) or removed (< 0)).
    events: VecDeque<(f64, i64)>,
}

impl BehaviorState {
    /// The state of an HPA the controller sees for the first time at `now`:
    /// as Kubernetes does, it starts with the current replicas as its
    /// first recommendation, so that a (re)started controller does not
    /// scale down before a window of recommendations has passed.
    pub fn new(now: f64, current_replicas: u32) -> Self {
        BehaviorState {
            recommendations: VecDeque::from([(now, current_replicas)]),
            events: VecDeque::new(),
        }
    }

    /// Applies `behavior` to the calculator's `proposed` replicas at time
    /// `now` (seconds) for a target at `current` replicas, clamps to
    /// [min, max] and records the recommendation and the resulting change.
    /// Returns the replicas the HPA sets.
    pub fn next_replicas(
        &mut self,
        behavior: &HpaBehavior,
        now: f64,
        current: u32,
        proposed: u32,
        min_replicas: u32,
        max_replicas: u32,
    ) -> u32 {
        let stabilized = self.stabilize(behavior, now, current, proposed);
        let limited = self.limit_rate(
            behavior,
            now,
            current,
            stabilized,
            min_replicas,
            max_replicas,
        );
        let desired = limited.clamp(min_replicas, max_replicas.max(min_replicas));
        if desired != current {
            self.events
                .push_back((now, i64::from(desired) - i64::from(current)));
        }
        self.forget(behavior, now);
        desired
    }

    /// The stabilization windows: scale up to at most the lowest
    /// recommendation of the up window, scale down to at least the highest
    /// of the down window (both include the current recommendation).
    fn stabilize(&mut self, behavior: &HpaBehavior, now: f64, current: u32, proposed: u32) -> u32 {
        let up_cutoff = now - f64::from(behavior.scale_up.stabilization_window_seconds);
        let down_cutoff = now - f64::from(behavior.scale_down.stabilization_window_seconds);
        let (mut up, mut down) = (proposed, proposed);
        for &(at, replicas) in &self.recommendations {
            if at > up_cutoff {
                up = up.min(replicas);
            }
            if at > down_cutoff {
                down = down.max(replicas);
            }
        }
        self.recommendations.push_back((now, proposed));
        current.max(up).min(down)
    }

    /// Changes within a policy's period, as (added, removed).
    fn changes_within(&self, now: f64, period_seconds: u32) -> (i64, i64) {
        let mut added = 0;
        let mut removed = 0;
        for &(at, change) in &self.events {
            if at + f64::from(period_seconds) > now {
                if change > 0 {
                    added += change;
                } else {
                    removed -= change;
                }
            }
        }
        (added, removed)
    }

    fn limit_rate(
        &self,
        behavior: &HpaBehavior,
        now: f64,
        current: u32,
        desired: u32,
        min_replicas: u32,
        max_replicas: u32,
    ) -> u32 {
        let cur = i64::from(current);
        if desired > current {
            let limit = self
                .scale_up_limit(&behavior.scale_up, now, cur)
                .max(cur)
                .min(i64::from(max_replicas));
            desired.min(to_u32(limit))
        } else if desired < current {
            let limit = self
                .scale_down_limit(&behavior.scale_down, now, cur)
                .min(cur)
                .max(i64::from(min_replicas));
            desired.max(to_u32(limit))
        } else {
            desired
        }
    }

    fn scale_up_limit(&self, rules: &ScalingRules, now: f64, current: i64) -> i64 {
        let proposals = rules.policies.iter().map(|p| {
            let (added, removed) = self.changes_within(now, p.period_seconds);
            let start = current - added + removed;
            match p.kind {
                PolicyKind::Pods(n) => start + i64::from(n),
                PolicyKind::Percent(pct) => {
                    (start as f64 * (1.0 + f64::from(pct) / 100.0)).ceil() as i64
                }
            }
        });
        match rules.select_policy {
            SelectPolicy::Disabled => current,
            SelectPolicy::Max => proposals.max().unwrap_or(current),
            SelectPolicy::Min => proposals.min().unwrap_or(current),
        }
    }

    fn scale_down_limit(&self, rules: &ScalingRules, now: f64, current: i64) -> i64 {
        let proposals = rules.policies.iter().map(|p| {
            let (added, removed) = self.changes_within(now, p.period_seconds);
            let start = current + removed - added;
            match p.kind {
                PolicyKind::Pods(n) => start - i64::from(n),
                // Go truncates the float towards zero (int32 conversion).
                PolicyKind::Percent(pct) => (start as f64 * (1.0 - f64::from(pct) / 100.0)) as i64,
            }
        });
        match rules.select_policy {
            SelectPolicy::Disabled => current,
            // The largest change is the lowest count.
            SelectPolicy::Max => proposals.min().unwrap_or(current),
            SelectPolicy::Min => proposals.max().unwrap_or(current),
        }
    }

    /// Drops history no window or period can reach any more.
    fn forget(&mut self, behavior: &HpaBehavior, now: f64) {
        let window = behavior
            .scale_up
            .stabilization_window_seconds
            .max(behavior.scale_down.stabilization_window_seconds);
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| at + f64::from(window) < now)
        {
            self.recommendations.pop_front();
        }
        let period = behavior
            .scale_up
            .policies
            .iter()
            .chain(&behavior.scale_down.policies)
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0);
        while self
            .events
            .front()
            .is_some_and(|&(at, _)| at + f64::from(period) < now)
        {
            self.events.pop_front();
        }
    }
}

fn to_u32(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scale_up_is_the_larger_of_double_and_four_pods() {
        // Kubernetes docs: the default scale-up allows +100 % or +4 pods per
        // 15 s, whichever is more.
        let b = HpaBehavior::default();
        // (current, proposed, expected)
        let cases = [
            (1, 10, 5),
            (2, 10, 6),
            (4, 20, 8),
            (5, 20, 10),
            (10, 50, 20),
            (3, 4, 4),
        ];
        for (current, proposed, want) in cases {
            let mut s = BehaviorState::default();
            assert_eq!(
                s.next_replicas(&b, 0.0, current, proposed, 1, 100),
                want,
                "{current} -> {proposed}"
            );
        }
    }

    #[test]
    fn scale_up_within_one_period_counts_what_was_added() {
        let b = HpaBehavior::default();
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 1, 20, 1, 100), 5);
        // 10 s later the period that started at 1 replica is still open:
        // max(1 x 2, 1 + 4) = 5, so no more.
        assert_eq!(s.next_replicas(&b, 10.0, 5, 20, 1, 100), 5);
        // At 15 s the first event has left the 15 s period.
        assert_eq!(s.next_replicas(&b, 15.0, 5, 20, 1, 100), 10);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let b = HpaBehavior::default();
        let mut s = BehaviorState::default();
        // A high recommendation at t=0, then low ones: the highest
        // recommendation of the last 300 s wins.
        assert_eq!(s.next_replicas(&b, 0.0, 8, 8, 1, 100), 8);
        let mut t = 15.0;
        while t < 300.0 {
            assert_eq!(s.next_replicas(&b, t, 8, 2, 1, 100), 8, "t={t}");
            t += 15.0;
        }
        // At 300 s the recommendation of 8 at t=0 is out of the window
        // (Kubernetes keeps recommendations strictly after now - window).
        assert_eq!(s.next_replicas(&b, 300.0, 8, 2, 1, 100), 2);
    }

    #[test]
    fn stabilization_takes_the_highest_recent_recommendation() {
        // Docs example: recommendations 5, 4, 3 within the window at 5
        // replicas -> stays at 5; a later 4 with the 5 gone -> 4.
        let b = HpaBehavior::default();
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 5, 5, 1, 100), 5);
        assert_eq!(s.next_replicas(&b, 100.0, 5, 4, 1, 100), 5);
        assert_eq!(s.next_replicas(&b, 200.0, 5, 3, 1, 100), 5);
        assert_eq!(s.next_replicas(&b, 301.0, 5, 3, 1, 100), 4);
        assert_eq!(s.next_replicas(&b, 401.0, 4, 3, 1, 100), 3);
    }

    #[test]
    fn scale_down_policies_as_in_the_kubernetes_docs() {
        // Docs: Percent 10 and Pods 4 per 60 s, selectPolicy Max (default),
        // at 80 replicas: 10 % (8 pods) is the larger change.
        let b = HpaBehavior {
            scale_down: ScalingRules {
                stabilization_window_seconds: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![
                    RatePolicy {
                        kind: PolicyKind::Percent(10),
                        period_seconds: 60,
                    },
                    RatePolicy {
                        kind: PolicyKind::Pods(4),
                        period_seconds: 60,
                    },
                ],
            },
            ..Default::default()
        };
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 80, 10, 1, 100), 72);
        // Within the period nothing more may go.
        assert_eq!(s.next_replicas(&b, 30.0, 72, 10, 1, 100), 72);
        // Next period: 10 % of 72 is 7.2; Go truncates 64.8 to 64.
        assert_eq!(s.next_replicas(&b, 60.0, 72, 10, 1, 100), 64);
        // Below 40 replicas the Pods policy allows more: 30 -> 26.
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 30, 10, 1, 100), 26);
        // selectPolicy Min picks the smaller change: 30 -> 27.
        let min = HpaBehavior {
            scale_down: ScalingRules {
                select_policy: SelectPolicy::Min,
                ..b.scale_down.clone()
            },
            ..b.clone()
        };
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&min, 0.0, 30, 10, 1, 100), 27);
        // Disabled: no scale-down at all.
        let off = HpaBehavior {
            scale_down: ScalingRules {
                select_policy: SelectPolicy::Disabled,
                ..b.scale_down.clone()
            },
            ..b
        };
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&off, 0.0, 30, 10, 1, 100), 30);
    }

    #[test]
    fn min_and_max_bound_the_result() {
        let b = HpaBehavior::default();
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 3, 50, 1, 6), 6);
        let mut s = BehaviorState::new(0.0, 3);
        assert_eq!(s.next_replicas(&b, 15.0, 3, 0, 2, 6), 3, "stabilized");
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b, 0.0, 3, 0, 2, 6), 2, "no history");
        let b0 = HpaBehavior {
            scale_down: ScalingRules {
                stabilization_window_seconds: 0,
                ..HpaBehavior::default().scale_down
            },
            ..HpaBehavior::default()
        };
        let mut s = BehaviorState::default();
        assert_eq!(s.next_replicas(&b0, 0.0, 3, 0, 2, 6), 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// With the API server's defaults, synced every 15 s on any
            /// proposals: always within [min, max]; a scale-up at most
            /// max(2 x current, current + 4) per sync; a scale-down never
            /// below the highest recommendation well inside the last 300 s.
            #[test]
            fn default_behavior_keeps_bounds_rates_and_its_window(
                proposals in prop::collection::vec(0u32..100, 1..80),
                min in 0u32..5,
                span in 0u32..50,
                start in 0u32..60,
            ) {
                let behavior = HpaBehavior::default();
                let max = min + span;
                let mut current = start.clamp(min, max);
                let mut state = BehaviorState::new(0.0, current);
                let mut recommendations = vec![(0.0, current)];
                for (i, &proposed) in proposals.iter().enumerate() {
                    let now = 15.0 * (i + 1) as f64;
                    recommendations.push((now, proposed));
                    let next = state.next_replicas(&behavior, now, current, proposed, min, max);
                    prop_assert!(next >= min && next <= max, "{next} outside [{min}, {max}]");
                    if next > current {
                        prop_assert!(next <= (current * 2).max(current + 4), "{current} -> {next}");
                    }
                    if next < current {
                        // Recommendations at the window's edge may or may
                        // not count; those well inside must.
                        let highest = recommendations
                            .iter()
                            .filter(|(at, _)| now - at < 285.0)
                            .map(|(_, r)| *r)
                            .max()
                            .unwrap_or(0);
                        prop_assert!(next >= highest.clamp(min, max), "{current} -> {next}, highest {highest}");
                    }
                    current = next;
                }
            }
        }
    }
}
