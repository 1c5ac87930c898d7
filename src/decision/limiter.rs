//! The fleet's accelerator allotment (`enableLimiter`), computed once over
//! every model's analysis and then read by each model's decision: the
//! sweep computes it once per fetch cycle from the models it has just
//! analysed; a decision made on demand between sweeps computes a fresh one
//! over the current inputs (it re-analyses the models that compete, as
//! every decision did before sweeps existed), because the last sweep's
//! allotment was made for other inputs than the ones that sent the model
//! off the sweep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::allotment::{Allotment, Cap};
use super::analysis::Analysed;
use super::counters::Trigger;
use super::inputs::{variant_spare_kv, ModelInputs};
use super::DecisionEngine;
use crate::inventory::{InventorySnapshot, ModelKey, Variant};
use crate::saturation::v2::greedy_limiter::{limit, LimiterDecision};
use crate::saturation::v2::{self, ScaleUpClaim};
use crate::saturation::{AnalyzerKind, SaturationThresholds, VariantTarget};

/// What the limiter needs of one model.
pub(crate) struct LimiterView {
    /// The variants with a scale target, in the analysis' order.
    variants: Vec<Arc<Variant>>,
    /// Each variant's average spare KV (upstream's priority).
    spare: Vec<f64>,
    /// V1's targets, when V1 decided the model (it competes in upstream's
    /// limiter); else its variants only use what they run.
    v1_targets: Option<Vec<VariantTarget>>,
    /// V2's utilization and targets, when V2 decided with metrics and the
    /// model's entry sets `enableLimiter` (`--limiter-on-v2`).
    v2: Option<(f64, Vec<VariantTarget>)>,
}

impl LimiterView {
    /// A model analysed by the sweep (or on demand).
    pub(crate) fn analysed(a: &Analysed<'_>) -> Self {
        let mut view = Self::unanalysed(Some(&a.inputs), &a.inputs.variants, &a.thresholds);
        if a.decided.decided_by == AnalyzerKind::Percentage {
            view.v1_targets = Some(a.decided.targets.clone());
        }
        if a.thresholds.enable_limiter {
            view.v2 = a
                .token_analysis()
                .map(|t| (t.utilization(), a.decided.targets.clone()));
        }
        view
    }

    /// A model that competes with nothing: its variants' current replicas
    /// count as used.
    pub(crate) fn unanalysed(
        inputs: Option<&ModelInputs<'_>>,
        variants: &[&Arc<Variant>],
        th: &SaturationThresholds,
    ) -> Self {
        LimiterView {
            variants: variants.iter().map(|v| Arc::clone(v)).collect(),
            spare: variants
                .iter()
                .map(|v| inputs.map_or(0.0, |i| variant_spare_kv(&i.replicas, &v.name, th)))
                .collect(),
            v1_targets: None,
            v2: None,
        }
    }
}

/// GPUs per replica of each variant as its running pods request them: the
/// most any of them requests.
fn gpus_by_variant<'s>(
    inventory: &dyn crate::inventory::accelerators::AcceleratorInventory,
    snapshot: &'s InventorySnapshot,
) -> HashMap<(&'s str, &'s str), u32> {
    let mut gpus = HashMap::new();
    for p in snapshot.pods() {
        if let Some(g) = inventory.pod_gpus(&p.namespace, p.name()) {
            let e = gpus.entry((&*p.namespace, &*p.variant)).or_insert(0);
            *e = (*e).max(g);
        }
    }
    gpus
}

/// A variant's current replicas as upstream's limiter counts them
/// (`engine.go` `BuildVariantStates`): its workload's `status.replicas`
/// (the pods that exist, so a rollout's surge pod holds its GPUs), or
/// `spec.replicas` while that is 0; 0 without a workload.
pub(super) fn upstream_current_replicas(v: &Variant) -> u32 {
    v.target.map_or(0, |t| match t.status_replicas {
        0 => t.spec_replicas,
        n => n,
    })
}

impl DecisionEngine {
    /// The allotment over `views` (every model of `snapshot`, in key
    /// order): upstream's limiter over the V1 models when `v1`, ours over
    /// the V2 models when `v2`.
    pub(crate) fn allot(
        &self,
        snapshot: &InventorySnapshot,
        views: &[LimiterView],
        v1: bool,
        v2: bool,
    ) -> Allotment {
        let up = |ts: &[VariantTarget]| ts.iter().any(|t| t.desired > t.current);
        let v1 = v1
            && views
                .iter()
                .any(|v| v.v1_targets.as_deref().is_some_and(up));
        let v2 = v2
            && views
                .iter()
                .any(|v| v.v2.as_ref().is_some_and(|(_, ts)| up(ts)));
        let mut allotment = Allotment::default();
        if !v1 && !v2 {
            return allotment;
        }
        let Some(inventory) = &self.accelerators else {
            tracing::warn!("enableLimiter is set but the server has no accelerator inventory (--accelerator-inventory): scale-ups are not capped");
            return allotment;
        };
        let gpus = gpus_by_variant(inventory.as_ref(), snapshot);
        // Upstream's count first: the Deployment's pod template
        // (`engine.go` `getDeploymentGPUsPerReplica`, 1 when it requests
        // none), known before any pod runs and during a rollout that
        // changes it. The running pods' only where no template is kept
        // (a StatefulSet target, or a missing Deployment).
        let gpus_of = |v: &Variant| {
            v.engine
                .as_ref()
                .map(|e| e.gpus_per_replica)
                .or_else(|| gpus.get(&(v.namespace.as_str(), v.name.as_str())).copied())
                .unwrap_or(1)
                .max(1)
        };
        let capacity = if v1 {
            inventory.capacity_by_type()
        } else {
            None
        };
        if let Some(capacity) = capacity {
            // Upstream WVA's GPU limiter: every V1 model's scale-ups share
            // the GPUs per accelerator type that the WVA variants' current
            // replicas leave free, most saturated variant (lowest average
            // spare KV) first, then the cheapest.
            let mut decisions = Vec::new();
            let mut competing = Vec::new();
            for view in views {
                for (i, v) in view.variants.iter().enumerate() {
                    let current = upstream_current_replicas(v);
                    let target = match &view.v1_targets {
                        Some(ts) => {
                            competing.push((decisions.len(), &ts[i], v));
                            // V1 decides from `spec.replicas`: what it
                            // does not raise above that is no scale-up
                            // here either, even while `status.replicas`
                            // lags behind.
                            let t = &ts[i];
                            if t.desired > t.current {
                                t.desired
                            } else {
                                t.desired.min(current)
                            }
                        }
                        None => current,
                    };
                    decisions.push(LimiterDecision {
                        spare_capacity: view.spare[i],
                        cost: v.cost,
                        ..LimiterDecision::new(
                            &format!("{}/{}", v.namespace, v.name),
                            &v.accelerator,
                            current,
                            target,
                            gpus_of(v),
                        )
                    });
                }
            }
            limit(&mut decisions, &capacity);
            for (d, t, v) in competing {
                let granted = &decisions[d];
                // Never below V1's current (`spec.replicas`): the limiter
                // cuts scale-ups, it does not turn one into a scale-down
                // should `status.replicas` lag the spec (V1 scales up only
                // settled models, so only a stale status would).
                let granted_target = granted.target.max(t.current);
                if granted.was_limited && granted_target < t.desired {
                    allotment.caps.insert(
                        (v.namespace.clone(), v.name.clone()),
                        Cap {
                            desired: granted_target,
                            accelerator: granted.accelerator.clone(),
                            upstream: true,
                        },
                    );
                }
            }
        }
        let free = if v2 { inventory.free_by_type() } else { None };
        if let Some(free) = free {
            // Ours on V2: the free accelerators per type, allotted greedily
            // over the models that want to grow, most saturated first.
            let mut claims = Vec::new();
            let mut owners = Vec::new();
            for (n, view) in views.iter().enumerate() {
                let Some((utilization, targets)) = &view.v2 else {
                    continue;
                };
                for (v, t) in view.variants.iter().zip(targets) {
                    if t.desired > t.current {
                        owners.push((v, t));
                        claims.push(ScaleUpClaim {
                            model: n,
                            variant: v.name.clone(),
                            accelerator: v.accelerator.clone(),
                            gpus_per_replica: gpus_of(v),
                            wanted: t.desired - t.current,
                            utilization: *utilization,
                            cost: v.cost,
                        });
                    }
                }
            }
            let grants = v2::allot_accelerators(&claims, &free);
            for ((v, t), g) in owners.into_iter().zip(grants) {
                if g.limited {
                    allotment.caps.insert(
                        (v.namespace.clone(), v.name.clone()),
                        Cap {
                            desired: t.current + g.granted,
                            accelerator: v.accelerator.clone(),
                            upstream: false,
                        },
                    );
                }
            }
        }
        allotment
    }

    /// The allotment for one model decided on demand: the other models
    /// that compete with it are analysed over the current inputs (V2
    /// models advance their history, as they did before sweeps).
    pub(crate) fn fresh_allotment(
        &self,
        snapshot: &InventorySnapshot,
        key: &ModelKey,
        ours: &Analysed<'_>,
        now: SystemTime,
    ) -> Allotment {
        let config = self.thresholds.load();
        let v1 = ours.decided.decided_by == AnalyzerKind::Percentage
            && config.default_thresholds().enable_limiter;
        let v2 =
            self.v2_limiter && ours.thresholds.enable_limiter && ours.token_analysis().is_some();
        let mut keys: Vec<&ModelKey> = snapshot.models().map(|(k, _)| k).collect();
        keys.sort();
        let views: Vec<LimiterView> = keys
            .into_iter()
            .map(|k| {
                if k == key {
                    return LimiterView::analysed(ours);
                }
                let th = config.for_model(&k.model_id, &k.namespace);
                let competes = (v1 && th.analyzer == AnalyzerKind::Percentage)
                    || (v2 && th.analyzer == AnalyzerKind::Tokens && th.enable_limiter);
                if competes {
                    if let Ok(a) = self.analyse(snapshot, k, now, Trigger::demand) {
                        return LimiterView::analysed(&a);
                    }
                }
                let inputs = self.model_inputs(snapshot, k, now).ok();
                match &inputs {
                    Some(i) => LimiterView::unanalysed(Some(i), &i.variants, &th),
                    None => {
                        let variants: Vec<&Arc<Variant>> = snapshot
                            .model_variants(k)
                            .filter(|v| v.target.is_some())
                            .collect();
                        LimiterView::unanalysed(None, &variants, &th)
                    }
                }
            })
            .collect();
        self.allot(snapshot, &views, v1, v2)
    }
}
