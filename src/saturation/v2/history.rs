//! V2 state kept between decisions: the compute-bound capacity (k2) history
//! and the remembered capacity of variants. Both are bounded and evicted by
//! age as upstream WVA does (k2 history after 24 h without an update,
//! remembered capacity after 7 days).
//!
//! Time is injected (`now`, `sampled_at`) so that the structures are pure
//! and testable. Entries are dated by the *sample* time of the data they came
//! from, not by when this server looked at it, and an observation already
//! recorded (same pod, same sample time) is not recorded twice: two server
//! replicas reading the same backend therefore converge to the same history
//! however often each one is asked (see docs/design-notes.md).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

/// Observations kept per k2 history key (upstream: 10).
pub(crate) const K2_WINDOW: usize = 10;
/// A k2 history key not updated for this long is dropped (upstream: 24 h).
pub(crate) const K2_HISTORY_TTL: Duration = Duration::from_secs(24 * 3600);
/// A remembered capacity not refreshed for this long is dropped (upstream: 7 days).
pub const CAPACITY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Hard cap on keys per structure, so that churn of models cannot grow
/// memory between evictions; the least recently updated key goes first.
pub(crate) const MAX_KEYS: usize = 20_000;

/// Output-length bucket of a workload (upstream: short < 100 <= medium < 500 <= long).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum OutputBucket {
    Short,
    Medium,
    Long,
}

impl OutputBucket {
    pub(crate) fn classify(avg_output_tokens: f64) -> Self {
        if avg_output_tokens < 100.0 {
            OutputBucket::Short
        } else if avg_output_tokens < 500.0 {
            OutputBucket::Medium
        } else {
            OutputBucket::Long
        }
    }
}

/// Key of the k2 history: model, accelerator, output-length bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct K2Key {
    pub(crate) model_id: String,
    pub(crate) accelerator: String,
    pub(crate) bucket: OutputBucket,
}

#[derive(Debug, Clone)]
struct Window {
    /// (pod, sample time, observed tokens in use), oldest first.
    samples: VecDeque<(String, SystemTime, f64)>,
    last_updated: SystemTime,
}

/// Rolling averages of observed k2 (tokens in use while the queue is at or
/// above its threshold).
#[derive(Debug, Clone, Default)]
pub(crate) struct K2History {
    windows: HashMap<K2Key, Window>,
}

impl K2History {
    /// Records an observation; false when this pod's sample at this time
    /// was already recorded (a decision repeated on the same data).
    pub(crate) fn observe(
        &mut self,
        key: &K2Key,
        pod: &str,
        sampled_at: SystemTime,
        tokens: f64,
    ) -> bool {
        if let Some(w) = self.windows.get(key) {
            if w.samples
                .iter()
                .any(|(p, t, _)| p == pod && *t == sampled_at)
            {
                return false;
            }
        } else if self.windows.len() >= MAX_KEYS {
            evict_oldest(&mut self.windows, |w| w.last_updated);
        }
        let w = self.windows.entry(key.clone()).or_insert_with(|| Window {
            samples: VecDeque::with_capacity(K2_WINDOW),
            last_updated: sampled_at,
        });
        if w.samples.len() >= K2_WINDOW {
            w.samples.pop_front();
        }
        w.samples.push_back((pod.to_owned(), sampled_at, tokens));
        w.last_updated = w.last_updated.max(sampled_at);
        true
    }

    /// Mean of the window, None when the key has no observation.
    pub(crate) fn average(&self, key: &K2Key) -> Option<f64> {
        let w = self.windows.get(key)?;
        if w.samples.is_empty() {
            return None;
        }
        Some(w.samples.iter().map(|(_, _, v)| v).sum::<f64>() / w.samples.len() as f64)
    }

    /// Observations held for `key`.
    #[cfg(test)]
    pub(crate) fn len_of(&self, key: &K2Key) -> usize {
        self.windows.get(key).map_or(0, |w| w.samples.len())
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.windows.len()
    }

    /// Drops keys not updated within [`K2_HISTORY_TTL`] of `now`; returns how many.
    pub(crate) fn evict(&mut self, now: SystemTime) -> usize {
        let before = self.windows.len();
        self.windows.retain(|_, w| {
            now.duration_since(w.last_updated).unwrap_or_default() <= K2_HISTORY_TTL
        });
        before - self.windows.len()
    }
}

/// Key of a remembered capacity: namespace, model, variant.
pub(crate) type VariantKey = (String, String, String);

/// What is remembered of a variant's live replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityRecord {
    /// Median effective capacity per replica.
    pub capacity: f64,
    /// Sample time of the newest replica it came from.
    pub learned_at: SystemTime,
    pub accelerator: String,
    /// The variant's engine parameters at the time (with its GPUs per
    /// replica): what makes the record usable for a compatible variant.
    pub engine: Option<super::engine::EngineParams>,
}

/// The last live per-replica capacity of each variant, for variants that
/// have no live replica at the moment (scaled to zero, or all starting),
/// and for compatible variants that never had one.
#[derive(Debug, Clone, Default)]
pub struct CapacityMemory {
    records: HashMap<VariantKey, CapacityRecord>,
}

impl CapacityMemory {
    pub fn remember(&mut self, key: VariantKey, record: CapacityRecord) {
        if !self.records.contains_key(&key) && self.records.len() >= MAX_KEYS {
            evict_oldest(&mut self.records, |r| r.learned_at);
        }
        match self.records.get_mut(&key) {
            // Never let an older sample overwrite a newer one.
            Some(e) if record.learned_at < e.learned_at => {}
            Some(e) => *e = record,
            None => {
                self.records.insert(key, record);
            }
        }
    }

    pub fn recall(&self, key: &VariantKey) -> Option<f64> {
        self.records
            .get(key)
            .map(|r| r.capacity)
            .filter(|c| *c > 0.0)
    }

    /// The live capacity of another variant of the same model (any
    /// namespace: capacity depends on hardware and engine settings, not on
    /// where the variant runs) on the same accelerator with the same GPUs
    /// per replica and capacity-compatible engine parameters (upstream's
    /// `FindCompatible`, live records only). Several matches: the most
    /// recently learned, then the smallest key, so that every server
    /// replica picks the same one.
    pub(crate) fn find_compatible(
        &self,
        model_id: &str,
        accelerator: &str,
        engine: &super::engine::EngineParams,
    ) -> Option<f64> {
        self.records
            .iter()
            .filter(|(k, r)| {
                k.1 == model_id
                    && r.capacity > 0.0
                    && r.accelerator == accelerator
                    && r.engine.as_ref().is_some_and(|e| {
                        e.gpus_per_replica == engine.gpus_per_replica
                            && e.is_capacity_compatible(engine)
                    })
            })
            .max_by(|(ka, a), (kb, b)| a.learned_at.cmp(&b.learned_at).then(kb.cmp(ka)))
            .map(|(_, r)| r.capacity)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops records not refreshed within [`CAPACITY_TTL`] of `now`.
    pub fn evict(&mut self, now: SystemTime) -> usize {
        let before = self.records.len();
        self.records
            .retain(|_, r| now.duration_since(r.learned_at).unwrap_or_default() <= CAPACITY_TTL);
        before - self.records.len()
    }
}

fn evict_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    updated: impl Fn(&V) -> SystemTime,
) {
    if let Some(k) = map
        .iter()
        .min_by_key(|(_, v)| updated(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn key(bucket: OutputBucket) -> K2Key {
        K2Key {
            model_id: "m".into(),
            accelerator: "H100".into(),
            bucket,
        }
    }

    #[test]
    fn buckets_match_upstream_bounds() {
        use OutputBucket::*;
        for (out, want) in [
            (0.0, Short),
            (99.9, Short),
            (100.0, Medium),
            (499.0, Medium),
            (500.0, Long),
            (5000.0, Long),
        ] {
            assert_eq!(OutputBucket::classify(out), want, "{out}");
        }
    }

    #[test]
    fn window_keeps_the_last_ten_and_averages_them() {
        let mut h = K2History::default();
        let k = key(OutputBucket::Short);
        for i in 0..15u64 {
            assert!(h.observe(&k, "p", at(i), (i * 100) as f64));
        }
        assert_eq!(h.len_of(&k), K2_WINDOW);
        // 500..=1400 step 100: mean 950
        assert_eq!(h.average(&k), Some(950.0));
        assert_eq!(h.average(&key(OutputBucket::Long)), None);
    }

    /// Upstream `history_test.go` ("Rolling Average"), on our window of
    /// [`K2_WINDOW`] (upstream's "Window eviction" row uses a window of 3,
    /// which ours does not take; the overflow row covers eviction). An
    /// empty window is None here where upstream answers 0.
    #[test]
    fn upstream_rolling_average_cases() {
        let cases: [(&str, &[f64], Option<f64>, usize); 4] = [
            (
                "Add and Average: should compute the mean of added values",
                &[10.0, 20.0, 30.0],
                Some(20.0),
                3,
            ),
            (
                "Empty average: should return 0 for an empty rolling average",
                &[],
                None,
                0,
            ),
            (
                "Single value: should return the value itself as the average",
                &[42.0],
                Some(42.0),
                1,
            ),
            (
                "Large window with overflow: should retain only the last maxSize values",
                &[
                    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
                ],
                Some(10.5),
                K2_WINDOW,
            ),
        ];
        for (name, values, average, len) in cases {
            let mut h = K2History::default();
            let k = key(OutputBucket::Short);
            for (i, v) in values.iter().enumerate() {
                h.observe(&k, "p", at(i as u64), *v);
            }
            assert_eq!((h.average(&k), h.len_of(&k)), (average, len), "{name}");
        }
    }

    #[test]
    fn the_same_sample_is_recorded_once() {
        let mut h = K2History::default();
        let k = key(OutputBucket::Short);
        assert!(h.observe(&k, "p", at(1), 8000.0));
        for _ in 0..20 {
            assert!(!h.observe(&k, "p", at(1), 8000.0));
        }
        assert!(h.observe(&k, "q", at(1), 6000.0));
        assert_eq!(h.len_of(&k), 2);
        assert_eq!(h.average(&k), Some(7000.0));
    }

    #[test]
    fn history_is_evicted_after_24_hours_without_update() {
        let mut h = K2History::default();
        h.observe(&key(OutputBucket::Short), "p", at(0), 1.0);
        h.observe(&key(OutputBucket::Long), "p", at(3600), 1.0);
        assert_eq!(h.evict(at(24 * 3600)), 0, "exactly 24 h is kept");
        assert_eq!(h.evict(at(24 * 3600 + 1)), 1);
        assert_eq!(h.keys(), 1);
        assert_eq!(h.average(&key(OutputBucket::Short)), None);
    }

    #[test]
    fn capacity_is_evicted_after_7_days_and_newer_wins() {
        let mut m = CapacityMemory::default();
        let k = ("ns".to_owned(), "m".to_owned(), "v".to_owned());
        let rec = |capacity, t| CapacityRecord {
            capacity,
            learned_at: at(t),
            accelerator: "H100".into(),
            engine: None,
        };
        m.remember(k.clone(), rec(12800.0, 100));
        m.remember(k.clone(), rec(9000.0, 50));
        assert_eq!(m.recall(&k), Some(12800.0));
        assert_eq!(m.evict(at(100 + 7 * 24 * 3600)), 0);
        assert_eq!(m.evict(at(101 + 7 * 24 * 3600)), 1);
        assert_eq!(m.recall(&k), None);
    }

    /// Upstream `capacity_store_test.go`'s `FindCompatible` cases over live
    /// records: (name, stored (namespace, model, accelerator, GPUs, engine
    /// change, capacity), found).
    #[test]
    fn upstream_find_compatible_cases() {
        use super::super::engine::EngineParams;
        type Change = fn(&mut EngineParams);
        type Stored = (
            &'static str,
            &'static str,
            &'static str,
            u32,
            Option<Change>,
            f64,
        );
        let cases: [(&str, Stored, Option<f64>); 8] = [
            (
                "should find a compatible record from another variant",
                ("ns", "m", "H100", 1, Some(|_| {}), 40000.0),
                Some(40000.0),
            ),
            (
                "should not match across different accelerator types",
                ("ns", "m", "A100", 1, Some(|_| {}), 40000.0),
                None,
            ),
            (
                "should not match across different GPU counts",
                ("ns", "m", "H100", 2, Some(|_| {}), 40000.0),
                None,
            ),
            (
                "should not match across different vLLM parameters",
                (
                    "ns",
                    "m",
                    "H100",
                    1,
                    Some(|p| p.gpu_memory_utilization = 0.8),
                    40000.0,
                ),
                None,
            ),
            (
                "should match across different namespaces (capacity is hardware-dependent)",
                ("other-ns", "m", "H100", 1, Some(|_| {}), 40000.0),
                Some(40000.0),
            ),
            (
                "should not match across different models",
                ("ns", "other-model", "H100", 1, Some(|_| {}), 40000.0),
                None,
            ),
            (
                "should skip records with no useful capacity data",
                ("ns", "m", "H100", 1, Some(|_| {}), 0.0),
                None,
            ),
            (
                "should return nil when nil params are provided (a record without parameters)",
                ("ns", "m", "H100", 1, None, 40000.0),
                None,
            ),
        ];
        let wanted = EngineParams::default();
        for (name, (ns, model, acc, gpus, change, capacity), want) in cases {
            let mut m = CapacityMemory::default();
            let engine = change.map(|c| {
                let mut e = EngineParams {
                    gpus_per_replica: gpus,
                    ..EngineParams::default()
                };
                c(&mut e);
                e
            });
            m.remember(
                (ns.into(), model.into(), "variant-a".into()),
                CapacityRecord {
                    capacity,
                    learned_at: at(10),
                    accelerator: acc.into(),
                    engine,
                },
            );
            assert_eq!(m.find_compatible("m", "H100", &wanted), want, "{name}");
        }
        // Several matches: the newest, whatever the map order.
        let mut m = CapacityMemory::default();
        for (v, cap, t) in [("a", 1000.0, 5), ("b", 2000.0, 9), ("c", 3000.0, 7)] {
            m.remember(
                ("ns".into(), "m".into(), v.into()),
                CapacityRecord {
                    capacity: cap,
                    learned_at: at(t),
                    accelerator: "H100".into(),
                    engine: Some(wanted.clone()),
                },
            );
        }
        assert_eq!(m.find_compatible("m", "H100", &wanted), Some(2000.0));
    }

    #[test]
    fn key_count_is_capped() {
        let mut h = K2History::default();
        for i in 0..(MAX_KEYS + 5) {
            let k = K2Key {
                model_id: format!("m{i}"),
                accelerator: "a".into(),
                bucket: OutputBucket::Short,
            };
            h.observe(&k, "p", at(i as u64), 1.0);
        }
        assert_eq!(h.keys(), MAX_KEYS);
        // The oldest went first.
        let first = K2Key {
            model_id: "m0".into(),
            accelerator: "a".into(),
            bucket: OutputBucket::Short,
        };
        assert_eq!(h.average(&first), None);
    }
}
