//! Folding a cycle's answers, row by row as they are decoded, into one
//! column per answer (a value per pod, by the pod's position in the
//! inventory snapshot), and merging the columns per pod. Pure.
//!
//! Each answer fills its own column, so that two answers can be decoded
//! and folded on two threads at once without a lock, and a retried query
//! starts from an empty column (nothing of a failed attempt is kept).
//! Series of pods that are not in the inventory are dropped here and never
//! steer a decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::queries::QuerySignal;
use super::results::RowRef;
use crate::inventory::snapshot::PodPositions;
use crate::inventory::InventorySnapshot;
use crate::saturation::v2::{KvCacheConfig, SchedulerQueue};

/// Which answer a query's rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Signal(QuerySignal),
    /// The activity query of one retention period.
    Activity(Duration),
}

/// Finds a row's pod: rows come grouped by namespace, so the namespace is
/// looked up once per run of rows, and the pod by its borrowed name.
struct Join<'s> {
    snapshot: &'s InventorySnapshot,
    namespace: Option<(String, Option<PodPositions<'s>>)>,
}

impl<'s> Join<'s> {
    fn position(&mut self, namespace: &str, pod: &str) -> Option<usize> {
        let pods = match &self.namespace {
            Some((ns, pods)) if ns == namespace => *pods,
            _ => {
                let pods = self.snapshot.pods_of_namespace(namespace);
                self.namespace = Some((namespace.to_owned(), pods));
                pods
            }
        };
        pods?.get(pod)
    }
}

/// The model name of each pod's rows in one answer (the first non-empty
/// one), each distinct name allocated once.
#[derive(Debug, Default)]
struct Names {
    /// Per pod: 0 for none, else 1 + the index in `names`.
    by_pod: Vec<u32>,
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    /// The id of the previous row's name: rows of one model are adjacent.
    last: u32,
}

impl Names {
    fn new(pods: usize) -> Self {
        Names {
            by_pod: vec![0; pods],
            ..Default::default()
        }
    }

    fn set(&mut self, pod: usize, name: &str) {
        if name.is_empty() || self.by_pod[pod] != 0 {
            return;
        }
        let id = if self.last != 0 && &*self.names[self.last as usize - 1] == name {
            self.last
        } else if let Some(&id) = self.index.get(name) {
            id
        } else {
            let name: Arc<str> = Arc::from(name);
            self.names.push(Arc::clone(&name));
            // Fewer than 2^32 distinct names: there is at most one per row
            // and an answer has fewer rows than the inventory has pods.
            let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
            self.index.insert(name, id);
            id
        };
        self.last = id;
        self.by_pod[pod] = id;
    }

    fn clear(&mut self) {
        self.by_pod.fill(0);
        self.names.clear();
        self.index.clear();
        self.last = 0;
    }

    fn get(&self, pod: usize) -> Option<&Arc<str>> {
        match self.by_pod.get(pod).copied().unwrap_or(0) {
            0 => None,
            id => self.names.get(id as usize - 1),
        }
    }
}

/// One per-pod answer folded: a value (or, for `vllm:cache_config_info`,
/// a KV-cache size) and a model name per pod.
#[derive(Debug)]
pub(crate) struct Column {
    signal: QuerySignal,
    values: Vec<Option<f64>>,
    configs: Vec<Option<KvCacheConfig>>,
    names: Names,
}

/// What one answer folded.
#[derive(Debug)]
pub(crate) enum Folded {
    PerPod(Column),
    /// The endpoint picker's queues: a sum per model.
    PerModel {
        signal: QuerySignal,
        by_model: HashMap<String, f64>,
    },
    Activity {
        retention: Duration,
        values: Vec<Option<f64>>,
    },
}

/// Folds the rows of one answer as the decoder hands them over.
pub(crate) struct Folder<'s> {
    join: Join<'s>,
    folded: Folded,
    /// Whether a row was folded since the last `clear`.
    dirty: bool,
}

impl<'s> Folder<'s> {
    /// An empty fold of `answer` for the pods of `snapshot`.
    pub(crate) fn new(answer: Answer, snapshot: &'s InventorySnapshot) -> Self {
        let pods = snapshot.pods().len();
        let folded = match answer {
            Answer::Signal(signal) if signal.per_model() => Folded::PerModel {
                signal,
                by_model: HashMap::new(),
            },
            Answer::Signal(signal) => Folded::PerPod(Column {
                signal,
                values: if signal == QuerySignal::CacheConfig {
                    Vec::new()
                } else {
                    vec![None; pods]
                },
                configs: if signal == QuerySignal::CacheConfig {
                    vec![None; pods]
                } else {
                    Vec::new()
                },
                names: Names::new(pods),
            }),
            Answer::Activity(retention) => Folded::Activity {
                retention,
                values: vec![None; pods],
            },
        };
        Folder {
            join: Join {
                snapshot,
                namespace: None,
            },
            folded,
            dirty: false,
        }
    }

    /// Empties the fold for another attempt (without giving its memory back).
    pub(crate) fn clear(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.join.namespace = None;
        match &mut self.folded {
            Folded::PerModel { by_model, .. } => by_model.clear(),
            Folded::Activity { values, .. } => values.fill(None),
            Folded::PerPod(column) => {
                column.values.fill(None);
                column.configs.fill(None);
                column.names.clear();
            }
        }
    }

    /// Folds one row.
    pub(crate) fn row(&mut self, r: RowRef<'_>) {
        self.dirty = true;
        match &mut self.folded {
            Folded::PerModel { by_model, .. } => {
                // The endpoint picker's queues are per model, not per pod.
                if r.value.is_finite() && r.value >= 0.0 {
                    match by_model.get_mut(r.model_name) {
                        Some(sum) => *sum += r.value,
                        None => {
                            by_model.insert(r.model_name.to_owned(), r.value);
                        }
                    }
                }
            }
            Folded::Activity { values, .. } => {
                if !(r.value.is_finite() && r.value >= 0.0) {
                    return;
                }
                if let Some(slot) = self
                    .join
                    .position(r.namespace, r.pod)
                    .and_then(|i| values.get_mut(i))
                {
                    *slot = Some(r.value);
                }
            }
            Folded::PerPod(column) => {
                let Some(i) = self.join.position(r.namespace, r.pod) else {
                    return;
                };
                if i >= column.names.by_pod.len() {
                    return;
                }
                // Some series carry no model_name (vllm:cache_config_info):
                // the first row that names the model wins.
                column.names.set(i, r.model_name);
                if let Some(slot) = column.configs.get_mut(i) {
                    // Several engines: the largest cache (normally equal).
                    if r.kv_cache.map(|c| c.total_tokens()) > slot.map(|c| c.total_tokens()) {
                        *slot = r.kv_cache;
                    }
                } else if let Some(slot) = column.values.get_mut(i) {
                    // Several series per pod (several engines): keep the largest.
                    *slot = Some(slot.map_or(r.value, |old: f64| old.max(r.value)));
                }
            }
        }
    }

    pub(crate) fn finish(mut self) -> Folded {
        if let Folded::PerPod(column) = &mut self.folded {
            // Only needed while folding.
            column.names.index = HashMap::default();
        }
        self.folded
    }
}

/// The values of one pod across the signals.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct PodRow {
    pub(crate) model_name: Arc<str>,
    pub(crate) kv: Option<f64>,
    pub(crate) queue: Option<f64>,
    pub(crate) queue_latest: Option<f64>,
    pub(crate) sample_time: Option<f64>,
    pub(crate) rate: Option<f64>,
    pub(crate) prompt: Option<f64>,
    pub(crate) generation: Option<f64>,
    pub(crate) prefill_seconds: Option<f64>,
    pub(crate) prefix_hit_rate: Option<f64>,
    pub(crate) kv_cache: Option<KvCacheConfig>,
}

/// What a cycle's answers add up to.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    /// The per-pod columns by signal (`QuerySignal::ALL` order).
    columns: [Option<Column>; QuerySignal::ALL.len()],
    /// The endpoint picker's queues per model.
    pub(crate) queues: HashMap<String, SchedulerQueue>,
    /// Per retention period, the activity per pod.
    pub(crate) activity_by_pod: BTreeMap<Duration, Vec<Option<f64>>>,
    empty: Arc<str>,
}

fn slot(signal: QuerySignal) -> usize {
    QuerySignal::ALL
        .iter()
        .position(|s| *s == signal)
        .unwrap_or(0)
}

impl Accumulator {
    pub(crate) fn add(&mut self, folded: Folded) {
        match folded {
            Folded::PerPod(column) => {
                let k = slot(column.signal);
                self.columns[k] = Some(column);
            }
            Folded::PerModel { signal, by_model } => {
                for (model, v) in by_model {
                    let q = self.queues.entry(model).or_default();
                    match signal {
                        QuerySignal::SchedulerQueueSize => q.requests += v,
                        _ => q.bytes += v,
                    }
                }
            }
            Folded::Activity { retention, values } => {
                self.activity_by_pod.insert(retention, values);
            }
        }
    }

    /// The values of the pod at position `i`. Its model name is the first
    /// in signal order that an answer named.
    pub(crate) fn pod(&self, i: usize) -> PodRow {
        let value = |s: QuerySignal| {
            self.columns[slot(s)]
                .as_ref()
                .and_then(|c| c.values.get(i).copied().flatten())
        };
        let model_name = self
            .columns
            .iter()
            .flatten()
            .find_map(|c| c.names.get(i))
            .unwrap_or(&self.empty);
        PodRow {
            model_name: Arc::clone(model_name),
            kv: value(QuerySignal::KvUsage),
            queue: value(QuerySignal::QueueWaiting),
            queue_latest: value(QuerySignal::QueueWaitingLatest),
            sample_time: value(QuerySignal::SampleTime),
            rate: value(QuerySignal::RequestRate),
            prompt: value(QuerySignal::AvgPromptTokens),
            generation: value(QuerySignal::AvgGenerationTokens),
            prefill_seconds: value(QuerySignal::AvgPrefillSeconds),
            prefix_hit_rate: value(QuerySignal::PrefixCacheHitRate),
            kv_cache: self.columns[slot(QuerySignal::CacheConfig)]
                .as_ref()
                .and_then(|c| c.configs.get(i).copied().flatten()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::resolve;

    /// Pods p0 and p1 in namespace ns (positions by name).
    fn snapshot() -> InventorySnapshot {
        let yaml = "kind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {name: v, namespace: ns}\nspec:\n  scaleTargetRef: {kind: Deployment, name: d}\n  modelID: m\n  maxReplicas: 4\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: d, namespace: ns}\nspec: {replicas: 2, selector: {}, template: {}}\nstatus: {replicas: 2, readyReplicas: 2}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p0, namespace: ns, labels: {llm-d.ai/variant: v}}\nstatus: {podIP: 127.0.0.1, conditions: [{type: Ready, status: \"True\"}]}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p1, namespace: ns, labels: {llm-d.ai/variant: v}}\nstatus: {podIP: 127.0.0.1, conditions: [{type: Ready, status: \"True\"}]}\n";
        let objects =
            crate::inventory::file::parse_objects(std::path::Path::new("t"), yaml).unwrap();
        resolve(&objects).0
    }

    fn row<'r>(namespace: &'r str, pod: &'r str, model_name: &'r str, value: f64) -> RowRef<'r> {
        RowRef {
            namespace,
            pod,
            model_name,
            value,
            kv_cache: None,
        }
    }

    fn fold(answer: Answer, snapshot: &InventorySnapshot, rows: &[RowRef<'_>]) -> Folded {
        let mut f = Folder::new(answer, snapshot);
        for r in rows {
            f.row(*r);
        }
        f.finish()
    }

    #[test]
    fn signal_slots_follow_the_order_of_all() {
        for (i, s) in QuerySignal::ALL.iter().enumerate() {
            assert_eq!(slot(*s), i);
        }
    }

    #[test]
    fn per_pod_answers_keep_the_largest_series_and_drop_unknown_pods() {
        let snap = snapshot();
        let p0 = snap.pod_position("ns", "p0").unwrap();
        let p1 = snap.pod_position("ns", "p1").unwrap();
        let mut acc = Accumulator::default();
        acc.add(fold(
            Answer::Signal(QuerySignal::KvUsage),
            &snap,
            &[
                row("ns", "p0", "m", 0.25),
                row("ns", "p0", "m", 0.75),
                row("ns", "p0", "m", 0.5),
                // NaN next to a number: the number (f64::max).
                row("ns", "p1", "m", f64::NAN),
                row("ns", "p1", "m", 0.125),
                // Not in the inventory: dropped.
                row("other", "p0", "m", 9.0),
                row("ns", "gone", "m", 9.0),
            ],
        ));
        acc.add(fold(
            Answer::Signal(QuerySignal::QueueWaiting),
            &snap,
            &[row("ns", "p0", "m", f64::NAN)],
        ));
        let (r0, r1) = (acc.pod(p0), acc.pod(p1));
        assert_eq!(r0.kv, Some(0.75));
        assert!(r0.queue.is_some_and(f64::is_nan), "a lone NaN stays NaN");
        assert_eq!(r1.kv, Some(0.125));
        assert_eq!(r1.queue, None);
        assert_eq!(r1.rate, None);
        assert_eq!(&*r0.model_name, "m");
    }

    #[test]
    fn the_model_name_is_the_first_named_in_signal_order() {
        let snap = snapshot();
        let p0 = snap.pod_position("ns", "p0").unwrap();
        let p1 = snap.pod_position("ns", "p1").unwrap();
        let mut acc = Accumulator::default();
        // Added in another order than QuerySignal::ALL.
        acc.add(fold(
            Answer::Signal(QuerySignal::RequestRate),
            &snap,
            &[row("ns", "p0", "from-rate", 1.0), row("ns", "p1", "r", 1.0)],
        ));
        acc.add(fold(
            Answer::Signal(QuerySignal::CacheConfig),
            &snap,
            &[RowRef {
                kv_cache: Some(KvCacheConfig {
                    num_gpu_blocks: 10,
                    block_size: 16,
                }),
                ..row("ns", "p0", "", 1.0)
            }],
        ));
        acc.add(fold(
            Answer::Signal(QuerySignal::KvUsage),
            &snap,
            // Within an answer, the first non-empty name of the pod.
            &[row("ns", "p0", "", 0.5), row("ns", "p0", "from-kv", 0.5)],
        ));
        assert_eq!(&*acc.pod(p0).model_name, "from-kv");
        assert_eq!(&*acc.pod(p1).model_name, "r");
        assert_eq!(
            acc.pod(p0).kv_cache.map(|c| c.total_tokens()),
            Some(160),
            "the cache size joins by pod"
        );
        assert_eq!(acc.pod(p1).kv_cache, None);
        let empty = Accumulator::default();
        assert_eq!(&*empty.pod(p0).model_name, "");
    }

    #[test]
    fn a_cleared_fold_keeps_nothing_of_the_attempt_before() {
        let snap = snapshot();
        let p0 = snap.pod_position("ns", "p0").unwrap();
        let p1 = snap.pod_position("ns", "p1").unwrap();
        for answer in [
            Answer::Signal(QuerySignal::KvUsage),
            Answer::Signal(QuerySignal::SchedulerQueueSize),
            Answer::Activity(Duration::from_secs(60)),
        ] {
            let mut f = Folder::new(answer, &snap);
            f.row(row("ns", "p0", "first", 0.5));
            f.row(row("", "", "first", 4.0));
            f.clear();
            f.row(row("ns", "p1", "second", 0.25));
            f.row(row("", "", "second", 1.0));
            let mut acc = Accumulator::default();
            acc.add(f.finish());
            match answer {
                Answer::Signal(QuerySignal::KvUsage) => {
                    assert_eq!((acc.pod(p0).kv, acc.pod(p1).kv), (None, Some(0.25)));
                    assert_eq!(&*acc.pod(p0).model_name, "");
                    assert_eq!(&*acc.pod(p1).model_name, "second");
                }
                Answer::Signal(_) => {
                    // Both rows of the second attempt name "second".
                    assert!(!acc.queues.contains_key("first"));
                    assert_eq!(acc.queues["second"].requests, 1.25);
                }
                Answer::Activity(w) => {
                    let v = &acc.activity_by_pod[&w];
                    assert_eq!((v[p0], v[p1]), (None, Some(0.25)));
                }
            }
        }
    }

    #[test]
    fn queues_sum_per_model_and_activity_keeps_valid_values() {
        let snap = snapshot();
        let p0 = snap.pod_position("ns", "p0").unwrap();
        let p1 = snap.pod_position("ns", "p1").unwrap();
        let mut acc = Accumulator::default();
        for (signal, values) in [
            (QuerySignal::SchedulerQueueSize, [2.0, 3.0, -1.0]),
            (QuerySignal::SchedulerQueueBytes, [100.0, f64::NAN, 50.0]),
        ] {
            acc.add(fold(
                Answer::Signal(signal),
                &snap,
                &[
                    row("", "", "m", values[0]),
                    row("", "", "m", values[1]),
                    row("", "", "n", values[2]),
                ],
            ));
        }
        let m = acc.queues["m"];
        assert_eq!((m.requests, m.bytes), (5.0, 100.0));
        let n = acc.queues["n"];
        assert_eq!((n.requests, n.bytes), (0.0, 50.0));
        let week = Duration::from_secs(7 * 24 * 3600);
        acc.add(fold(
            Answer::Activity(week),
            &snap,
            &[
                row("ns", "p0", "m", 3.0),
                row("ns", "p1", "m", f64::INFINITY),
            ],
        ));
        let v = &acc.activity_by_pod[&week];
        assert_eq!((v[p0], v[p1]), (Some(3.0), None));
    }
}
