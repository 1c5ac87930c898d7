//! One fleet sweep per fetch cycle: every model decided once, with the
//! limiter's allotment computed once for the fleet, published for the
//! readers (telemetry, status write-back, the request path).
//!
//! A request whose model is in the current sweep takes the sweep's
//! outcome while what it was computed from is unchanged: the same
//! inventory snapshot (by its generation: the sweep does not hold the
//! snapshot, so a replaced one is freed when the store lets go of it rather
//! than at the next sweep), thresholds, scale-to-zero and service-class
//! configurations. The metrics cache is not compared: only fetch cycles
//! write it, and each is followed by a sweep, so a request that arrives
//! while a cycle is writing answers the previous sweep, as it would have
//! a moment earlier (comparing it would decide such requests on demand,
//! advancing V2's and slo's history from requests). What only time changes
//! is re-checked at answer time without analysing again: the outcome
//! holds until the first sample (or endpoint-picker queue, or fetch
//! record) it used turns stale (`valid_until`); the request reads the
//! outcome where the sweep keeps it, without a copy.
//! Anything else is analysed on demand (a model new since the sweep, a
//! configuration change, an error outcome, which may be time-dependent).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::counters::Trigger;
use super::limiter::LimiterView;
use super::{DecisionEngine, DecisionError, ModelOutcome};
use crate::inventory::{InventorySnapshot, ModelKey, Variant};
use crate::saturation::slo::ServiceClasses;
use crate::saturation::{ScaleToZeroConfig, ThresholdConfig};

/// What a sweep was computed from: the snapshot's generation and the
/// configurations by identity, so that a request can tell whether the
/// sweep's outcomes are still its answer.
struct SweepInputs {
    generation: u64,
    thresholds: Arc<ThresholdConfig>,
    scale_to_zero: Arc<ScaleToZeroConfig>,
    service_classes: Arc<ServiceClasses>,
}

impl SweepInputs {
    fn same_as(&self, o: &SweepInputs) -> bool {
        self.generation == o.generation
            && Arc::ptr_eq(&self.thresholds, &o.thresholds)
            && Arc::ptr_eq(&self.scale_to_zero, &o.scale_to_zero)
            && Arc::ptr_eq(&self.service_classes, &o.service_classes)
    }
}

/// Every model's decision at one moment.
pub(crate) struct Sweep {
    inputs: SweepInputs,
    /// Each model's outcome (or why it has none), in key order.
    pub(crate) outcomes: BTreeMap<ModelKey, Result<ModelOutcome, DecisionError>>,
}

impl Sweep {
    /// The generation of the inventory snapshot the sweep decided.
    pub(crate) fn generation(&self) -> u64 {
        self.inputs.generation
    }
}

impl DecisionEngine {
    /// The state decisions are made from now, for `snapshot`.
    fn sweep_inputs(&self, snapshot: &InventorySnapshot) -> SweepInputs {
        SweepInputs {
            generation: snapshot.generation(),
            thresholds: self.thresholds.load_full(),
            scale_to_zero: self.scale_to_zero.load_full(),
            service_classes: self.service_classes.load_full(),
        }
    }

    /// The current inventory snapshot when it is the one `sweep` decided
    /// (else None: the inventory was republished since, and the next sweep
    /// decides the new one).
    pub(crate) fn snapshot_of(&self, sweep: &Sweep) -> Option<Arc<InventorySnapshot>> {
        let snapshot = self.inventory.load();
        (snapshot.generation() == sweep.generation()).then_some(snapshot)
    }

    /// Decides every model of the current snapshot once (the limiter's
    /// allotment once for the fleet) and publishes the result.
    pub(crate) fn sweep(&self) -> Arc<Sweep> {
        let snapshot = self.inventory.load();
        let inputs = self.sweep_inputs(&snapshot);
        let now = SystemTime::now();
        let mut keys: Vec<&ModelKey> = snapshot.models().map(|(k, _)| k).collect();
        keys.sort();
        let v1 = inputs.thresholds.default_thresholds().enable_limiter;
        let outcomes = if v1 || self.v2_limiter {
            self.decide_limited(&snapshot, &inputs, &keys, now, v1)
        } else {
            // Without the limiter nothing needs every model's inputs at
            // once: each model is finished as it is analysed, so only one
            // model's replica inputs are alive at a time (at 100,000 pods
            // they are tens of MiB).
            keys.iter()
                .map(|&k| {
                    let outcome = self
                        .analyse(&snapshot, k, now, Trigger::sweep)
                        .map(|a| self.finish(&snapshot, k, now, a, None));
                    (k.clone(), outcome)
                })
                .collect()
        };
        let sweep = Arc::new(Sweep { inputs, outcomes });
        self.counters.sweeps.inc();
        self.sweep.store(Some(Arc::clone(&sweep)));
        sweep
    }

    /// Every model's outcome with the limiter on: all models are analysed
    /// first, the allotment is computed once over them, then each is
    /// finished with it.
    fn decide_limited(
        &self,
        snapshot: &Arc<InventorySnapshot>,
        inputs: &SweepInputs,
        keys: &[&ModelKey],
        now: SystemTime,
        v1: bool,
    ) -> BTreeMap<ModelKey, Result<ModelOutcome, DecisionError>> {
        let analysed: Vec<_> = keys
            .iter()
            .map(|k| (*k, self.analyse(snapshot, k, now, Trigger::sweep)))
            .collect();
        let allotment = {
            let views: Vec<LimiterView> = analysed
                .iter()
                .map(|(k, a)| match a {
                    Ok(a) => LimiterView::analysed(a),
                    Err(_) => {
                        let variants: Vec<&Arc<Variant>> = snapshot
                            .model_variants(k)
                            .filter(|v| v.target.is_some())
                            .collect();
                        let th = inputs.thresholds.for_model(&k.model_id, &k.namespace);
                        LimiterView::unanalysed(None, &variants, &th)
                    }
                })
                .collect();
            self.allot(snapshot, &views, v1, self.v2_limiter)
        };
        analysed
            .into_iter()
            .map(|(k, a)| {
                let outcome = a.map(|a| {
                    let limited = self.limited(&a);
                    self.finish(snapshot, k, now, a, Some(&allotment).filter(|_| limited))
                });
                (k.clone(), outcome)
            })
            .collect()
    }

    /// The last sweep, if any.
    pub(crate) fn last_sweep(&self) -> Option<Arc<Sweep>> {
        self.sweep.load_full()
    }

    /// The last sweep when it was computed from the state decisions are
    /// made from now (else None: decide on demand).
    pub(crate) fn current_sweep(&self, snapshot: &InventorySnapshot) -> Option<Arc<Sweep>> {
        let sweep = self.sweep.load_full()?;
        sweep
            .inputs
            .same_as(&self.sweep_inputs(snapshot))
            .then_some(sweep)
    }

    /// The sweep's outcome for `key` as it stands at `now`: None when the
    /// model is not in the sweep, had no decision, or a sample it used has
    /// turned stale since. Its decisions hold as they are; its
    /// `newest_sample_age` and `freshness` are those of the sweep's moment
    /// (the request path reads only the decisions).
    pub(crate) fn swept_outcome<'s>(
        sweep: &'s Sweep,
        key: &ModelKey,
        now: SystemTime,
    ) -> Option<&'s ModelOutcome> {
        let outcome = sweep.outcomes.get(key)?.as_ref().ok()?;
        (now <= outcome.valid_until).then_some(outcome)
    }
}
