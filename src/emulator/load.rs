//! A small deterministic load model for the demo: how busy each replica is
//! for an arrival rate spread evenly over the ready replicas.

use super::state::ReplicaState;

/// Capacity of one replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LoadModel {
    /// Requests per second one replica serves when its KV cache is full.
    pub(crate) capacity_per_replica: f64,
    /// Concurrent requests a replica holds at full KV cache.
    pub(crate) max_running: f64,
}

impl Default for LoadModel {
    fn default() -> Self {
        LoadModel {
            capacity_per_replica: 4.0,
            max_running: 32.0,
        }
    }
}

impl LoadModel {
    /// The state of each replica. Utilisation rho = rate / (replicas x
    /// capacity); KV usage follows rho and saturates just below 1; a queue
    /// forms as rho nears 1 and grows with the excess beyond it.
    pub(crate) fn replica_state(&self, arrival_rate: f64, ready_replicas: u32) -> ReplicaState {
        let replicas = f64::from(ready_replicas.max(1));
        let rate = if arrival_rate.is_finite() {
            arrival_rate.max(0.0)
        } else {
            0.0
        };
        let rho = rate / (replicas * self.capacity_per_replica.max(f64::MIN_POSITIVE));
        let kv = (0.95 * rho).min(0.98);
        let running = (rho.min(1.0) * self.max_running).round();
        // Little's law flavoured: the queue grows quickly past 85 % utilisation.
        let waiting = if rho <= 0.85 {
            0.0
        } else {
            ((rho - 0.85) * 40.0).round()
        };
        ReplicaState {
            kv,
            waiting,
            running,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_grows_with_rate_and_shrinks_with_replicas() {
        let m = LoadModel::default();
        let mut last = m.replica_state(0.0, 2);
        assert_eq!(
            last,
            ReplicaState {
                kv: 0.0,
                waiting: 0.0,
                running: 0.0
            }
        );
        for rate in [1.0, 2.0, 4.0, 7.0, 8.0, 12.0, 40.0] {
            let s = m.replica_state(rate, 2);
            assert!(
                s.kv >= last.kv && s.waiting >= last.waiting,
                "rate {rate}: {s:?} after {last:?}"
            );
            assert!((0.0..=1.0).contains(&s.kv));
            last = s;
        }
        let one = m.replica_state(6.0, 1);
        let three = m.replica_state(6.0, 3);
        assert!(one.kv > three.kv && one.waiting >= three.waiting);
        assert_eq!(
            m.replica_state(f64::NAN, 0).kv,
            0.0,
            "bad input is treated as no load"
        );
    }
}
