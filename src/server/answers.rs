//! Warm values answers: the bytes of an `ExternalMetricValueList` kept per
//! request (path and query as sent) together with the state they were
//! computed from, so that asking again before anything changed is a
//! lookup and a copy of a reference-counted buffer, not an analysis, a
//! selector parse and a JSON encoding.
//!
//! An answer is served again only while all of these are what they were
//! when it was computed (read before computing, so that a change that
//! lands during the computation invalidates it):
//! - the inventory snapshot's generation (bumped after every publish);
//! - the metrics cache's generation (bumped after every write: samples,
//!   fetch records, endpoint-picker queues);
//! - the thresholds and scale-to-zero configurations (the same `Arc`;
//!   the entry holds a reference, so a new one cannot reuse the address);
//! - the second of the answer's timestamp, which is part of the bytes, and
//!   bounds how late a change that only time makes (a sample ageing past a
//!   freshness threshold) can be seen: within that same second.
//!
//! Underneath, the decisions themselves come from the fleet sweep of the
//! last fetch cycle (`decision::sweep`) while its inputs hold; this cache
//! keeps only the rendered bytes. Answers of V2 and slo are not kept
//! (`api::values` marks them not repeatable), a rule from before the
//! sweep, when asking again advanced their history; errors are not kept
//! either.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use crate::api::values::ValuesAnswer;
use crate::decision::DecisionEngine;
use crate::k8s::status::ApiError;
use crate::saturation::{ScaleToZeroConfig, ThresholdConfig};

/// Most answers kept; at the limit, answers of an older state are dropped
/// first, and a new one is not kept if all are current.
pub(crate) const MAX_ANSWERS: usize = 4096;

/// What an answer was computed from.
#[derive(Clone)]
pub(crate) struct Inputs {
    inventory: u64,
    metrics: u64,
    thresholds: Arc<ThresholdConfig>,
    scale_to_zero: Arc<ScaleToZeroConfig>,
    second: i64,
}

impl PartialEq for Inputs {
    fn eq(&self, o: &Self) -> bool {
        self.inventory == o.inventory
            && self.metrics == o.metrics
            && self.second == o.second
            && Arc::ptr_eq(&self.thresholds, &o.thresholds)
            && Arc::ptr_eq(&self.scale_to_zero, &o.scale_to_zero)
    }
}

struct Entry {
    inputs: Inputs,
    body: Bytes,
}

/// Values answers by request.
pub(crate) struct Answers {
    engine: Arc<DecisionEngine>,
    inventory: watch::Receiver<u64>,
    entries: RwLock<HashMap<Box<str>, Entry>>,
}

impl Answers {
    pub(crate) fn new(engine: Arc<DecisionEngine>) -> Self {
        Answers {
            inventory: engine.inventory().subscribe(),
            engine,
            entries: RwLock::default(),
        }
    }

    /// The state now; read it before computing an answer.
    pub(crate) fn inputs(&self) -> Inputs {
        Inputs {
            inventory: *self.inventory.borrow(),
            metrics: self.engine.cache().generation(),
            thresholds: self.engine.thresholds().load_full(),
            scale_to_zero: self.engine.scale_to_zero().load_full(),
            second: answer_second(),
        }
    }

    /// The answer to `request`: the kept one while its inputs are
    /// unchanged, else `compute`'s (kept when repeatable).
    pub(crate) fn answer(
        &self,
        request: &str,
        compute: impl FnOnce() -> Result<ValuesAnswer, ApiError>,
    ) -> Result<Bytes, ApiError> {
        let inputs = self.inputs();
        if let Some(body) = self.get(request, &inputs) {
            return Ok(body);
        }
        let answer = compute()?;
        let body = Bytes::from(answer.body);
        if answer.repeatable {
            self.put(request, inputs, body.clone());
        }
        Ok(body)
    }

    /// The answer to `request` computed from `inputs`, if there is one.
    pub(crate) fn get(&self, request: &str, inputs: &Inputs) -> Option<Bytes> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(request)
            .filter(|e| e.inputs == *inputs)
            .map(|e| e.body.clone())
    }

    /// Keeps the answer to `request` computed from `inputs` (unless the
    /// second turned while it was computed: its timestamp may be the next).
    pub(crate) fn put(&self, request: &str, inputs: Inputs, body: Bytes) {
        if answer_second() != inputs.second {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ANSWERS && !entries.contains_key(request) {
            entries.retain(|_, e| e.inputs == inputs);
            if entries.len() >= MAX_ANSWERS {
                return;
            }
        }
        entries.insert(request.into(), Entry { inputs, body });
    }

    /// Answers kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The second an answer made now is stamped with (the values handler
/// rounds its timestamp to the nearest second).
fn answer_second() -> i64 {
    crate::api::metrics::answer_time().as_second()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::collector::FreshnessPolicy;
    use crate::collector::{MetricsCache, ReplicaMetrics};
    use crate::inventory::pod_key;
    use crate::inventory::resolve;
    use crate::inventory::InventoryStore;
    use crate::saturation::PercentageAnalyzer;

    fn inventory(ready: u32) -> String {
        let mut y = format!(
            "---\nkind: VariantAutoscaling\napiVersion: llmd.ai/v1alpha1\nmetadata: {{name: v, namespace: ns, labels: {{inference.optimization/acceleratorName: H100}}}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: v-d}}\n  modelID: m\n  maxReplicas: 10\n---\nkind: Deployment\napiVersion: apps/v1\nmetadata: {{name: v-d, namespace: ns}}\nspec: {{replicas: {ready}, selector: {{}}, template: {{}}}}\nstatus: {{replicas: {ready}, readyReplicas: {ready}}}\n"
        );
        for i in 0..ready {
            y.push_str(&format!(
                "---\nkind: Pod\napiVersion: v1\nmetadata: {{name: v-p{i}, namespace: ns, labels: {{llm-d.ai/variant: v}}}}\nstatus: {{podIP: 127.0.0.1, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
        y
    }

    fn publish(store: &InventoryStore, ready: u32) {
        let objects =
            crate::inventory::file::parse_objects(Path::new("t"), &inventory(ready)).unwrap();
        store.publish(resolve(&objects).0);
    }

    fn engine(config: &str) -> Arc<DecisionEngine> {
        let store = Arc::new(InventoryStore::new());
        publish(&store, 4);
        let (config, errors) = ThresholdConfig::from_yaml_str(config).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        Arc::new(DecisionEngine::new(
            store,
            Arc::new(MetricsCache::new()),
            Arc::new(ArcSwap::from_pointee(config)),
            Arc::new(PercentageAnalyzer),
            FreshnessPolicy::default(),
        ))
    }

    fn report(e: &DecisionEngine, pods: u32, kv: f64) {
        for i in 0..pods {
            e.cache().insert(
                pod_key("ns", &format!("v-p{i}")),
                ReplicaMetrics {
                    model_name: "m".into(),
                    kv_usage: kv,
                    queue_waiting: 0.0,
                    queue_waiting_latest: None,
                    running: None,
                    sampled_at: SystemTime::now(),
                    request_rate: None,
                    avg_prompt_tokens: Some(100.0),
                    avg_generation_tokens: Some(50.0),
                    avg_prefill_seconds: None,
                    prefix_cache_hit_rate: None,
                    kv_cache: Some(crate::saturation::v2::KvCacheConfig {
                        block_size: 16,
                        num_gpu_blocks: 1000,
                    }),
                    activity: None,
                },
            );
        }
    }

    /// The answer of a values request parsed as the routing layer parses it.
    fn external_metric_answer(
        e: &DecisionEngine,
        namespace: &str,
        metric: &str,
        query: Option<&str>,
    ) -> Result<ValuesAnswer, ApiError> {
        let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}");
        match crate::api::router::route(&http::Method::GET, &path, query)? {
            crate::api::router::ApiRequest::ExternalValues(q) => {
                crate::api::values::external_metric_answer(e, &q)
            }
            other => panic!("{path} routed to {other:?}"),
        }
    }

    const REQUEST: &str =
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/wva_desired_replicas?labelSelector=target_name%3Dv-d";

    /// The served value, through the kept answers, and straight from the engine.
    fn both(answers: &Answers, e: &DecisionEngine) -> (String, String) {
        let compute = || {
            external_metric_answer(
                e,
                "ns",
                "wva_desired_replicas",
                Some("labelSelector=target_name%3Dv-d"),
            )
        };
        let value = |body: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            v["items"][0]["value"].as_str().unwrap().to_owned()
        };
        let kept = answers.answer(REQUEST, compute).unwrap();
        let fresh = compute().unwrap();
        (value(&kept), value(&fresh.body))
    }

    /// Every change of an input is seen by the very next request: new
    /// samples, a new inventory, new thresholds. A second identical
    /// request in between is answered from the kept bytes.
    #[test]
    fn a_changed_decision_is_never_answered_from_a_kept_answer() {
        let e = engine("default: {}");
        let answers = Answers::new(Arc::clone(&e));
        report(&e, 4, 0.98);
        let (kept, fresh) = both(&answers, &e);
        assert_eq!(kept, fresh);
        assert_eq!(kept, "5", "saturated: one more replica");
        assert_eq!(answers.len(), 1);
        let first = answers
            .answer(REQUEST, || panic!("not computed again"))
            .unwrap();
        let second = answers
            .answer(REQUEST, || panic!("not computed again"))
            .unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same bytes");

        // New samples: idle now.
        report(&e, 4, 0.10);
        let (kept, fresh) = both(&answers, &e);
        assert_eq!(
            (kept.as_str(), fresh.as_str()),
            ("3", "3"),
            "scaled down after new samples"
        );

        // A new inventory: two replicas ready, the same load.
        publish(e.inventory(), 2);
        let (kept, fresh) = both(&answers, &e);
        assert_eq!(kept, fresh, "after a new inventory");

        // New thresholds that make the same load saturated.
        report(&e, 4, 0.10);
        let before = both(&answers, &e).0;
        let (config, _) = ThresholdConfig::from_yaml_str(
            "default: {kvCacheThreshold: 0.05, kvSpareTrigger: 0.01}",
        )
        .unwrap();
        e.thresholds().store(Arc::new(config));
        let (kept, fresh) = both(&answers, &e);
        assert_eq!(kept, fresh, "after new thresholds");
        assert_ne!(kept, before, "the thresholds changed the decision");
    }

    #[test]
    fn answers_of_the_stateful_analysis_and_errors_are_not_kept() {
        let e = engine("default: {analyzerName: saturation}");
        let answers = Answers::new(Arc::clone(&e));
        report(&e, 4, 0.98);
        let (kept, fresh) = both(&answers, &e);
        assert_eq!(kept, fresh);
        assert!(answers.is_empty(), "V2 answers are computed every time");
        let missing = answers.answer("/other", || {
            external_metric_answer(
                &e,
                "ns",
                "wva_desired_replicas",
                Some("labelSelector=target_name%3Dnone"),
            )
        });
        assert_eq!(missing.map_err(|e| e.code.as_u16()), Err(404));
        assert!(answers.is_empty());
    }

    #[test]
    fn kept_answers_are_bounded() {
        let e = engine("default: {}");
        let answers = Answers::new(Arc::clone(&e));
        let inputs = answers.inputs();
        for i in 0..MAX_ANSWERS + 10 {
            answers.put(&format!("/r{i}"), inputs.clone(), Bytes::from_static(b"x"));
        }
        // Unless the second turned meanwhile (then nothing was kept at the end).
        assert!(answers.len() <= MAX_ANSWERS);
        // A change of state lets new answers replace all the old ones.
        report(&e, 1, 0.5);
        let now = answers.inputs();
        answers.put("/new", now.clone(), Bytes::from_static(b"y"));
        if answer_second() == now.second {
            assert_eq!(answers.len(), 1, "older answers dropped for the new one");
        }
    }
}
