//! The sweep's decisions on `/metrics`: gauges per variant, counters of
//! scaling recommendations, holds, slo fallbacks, models without metrics,
//! and the aging of each model's samples, after every sweep.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use super::{ModelOutcome, Sweep};
use crate::telemetry::{ScalingLabels, Telemetry, VariantLabels};

/// Publishes every model's decision as gauges after each fetch cycle and
/// counts scaling recommendations when they change.
pub(crate) struct DecisionPublisher {
    telemetry: Telemetry,
    last: Mutex<HashMap<(String, String), (u32, u32)>>,
    /// Models whose newest sample was aging at the last publication.
    aging: Mutex<HashSet<crate::inventory::ModelKey>>,
}

impl DecisionPublisher {
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        DecisionPublisher {
            telemetry,
            last: Mutex::new(HashMap::new()),
            aging: Mutex::new(HashSet::new()),
        }
    }

    /// Exports `sweep`'s decisions.
    pub(crate) fn publish(&self, sweep: &Sweep) {
        let t = &self.telemetry;
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        for outcome in sweep.outcomes.values() {
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "no decision for model");
                    continue;
                }
            };
            t.analyzer_decisions
                .get_or_create(&crate::telemetry::AnalyzerLabels {
                    namespace: outcome.key.namespace.clone(),
                    model_id: outcome.key.model_id.clone(),
                    analyzer: outcome.analyzer.to_owned(),
                })
                .inc();
            if let Some(missing) = outcome.slo_fallback {
                t.slo_fallbacks
                    .get_or_create(&crate::telemetry::SloFallbackLabels {
                        namespace: outcome.key.namespace.clone(),
                        model_id: outcome.key.model_id.clone(),
                        missing: missing.as_str().to_owned(),
                        analyzer: outcome.analyzer.to_owned(),
                    })
                    .inc();
                tracing::warn!(
                    namespace = %outcome.key.namespace,
                    model_id = %outcome.key.model_id,
                    missing = missing.as_str(),
                    fallback = outcome.analyzer,
                    "analyzerName slo cannot size the model without this signal: another analysis decided"
                );
            }
            if !outcome.has_metrics() {
                t.decisions_without_metrics
                    .get_or_create(&crate::telemetry::ModelLabels {
                        namespace: outcome.key.namespace.clone(),
                        model_id: outcome.key.model_id.clone(),
                    })
                    .inc();
            }
            self.note_aging(outcome);
            if let Some(age) = outcome.newest_sample_age {
                t.sample_age
                    .get_or_create(&crate::telemetry::ModelLabels {
                        namespace: outcome.key.namespace.clone(),
                        model_id: outcome.key.model_id.clone(),
                    })
                    .set(age.as_secs_f64());
            }
            for d in &outcome.decisions {
                let v = &d.variant;
                let labels = VariantLabels {
                    variant_name: v.name.clone(),
                    target_name: v.target_name.clone(),
                    target_kind: v.target_kind.clone(),
                    namespace: v.namespace.clone(),
                    accelerator_type: v.accelerator.clone(),
                };
                t.desired_replicas
                    .get_or_create(&labels)
                    .set(i64::from(d.desired));
                t.current_replicas
                    .get_or_create(&labels)
                    .set(i64::from(d.ready));
                t.desired_ratio
                    .get_or_create(&labels)
                    .set(d.ratio_milli as f64 / 1000.0);
                let current = v.target.map(|s| s.spec_replicas).unwrap_or(0);
                if let Some(direction) = d.reason.tolerance_hold_direction() {
                    t.tolerance_holds
                        .get_or_create(&ScalingLabels {
                            variant_name: v.name.clone(),
                            namespace: v.namespace.clone(),
                            direction: direction.to_owned(),
                            reason: d.reason.as_str().to_owned(),
                        })
                        .inc();
                    tracing::debug!(variant = %v.name, namespace = %v.namespace, current, direction, "move held: the HPA would ignore it and a larger one is not safe");
                }
                let key = (v.namespace.clone(), v.name.clone());
                let now = (current, d.desired);
                if d.desired != current && last.get(&key) != Some(&now) {
                    let direction = if d.desired > current { "up" } else { "down" };
                    t.scaling_total
                        .get_or_create(&ScalingLabels {
                            variant_name: v.name.clone(),
                            namespace: v.namespace.clone(),
                            direction: direction.to_owned(),
                            reason: d.reason.as_str().to_owned(),
                        })
                        .inc();
                    tracing::info!(variant = %v.name, namespace = %v.namespace, current, desired = d.desired, reason = d.reason.as_str(), "scaling recommended");
                }
                last.insert(key, now);
            }
        }
    }
}

impl DecisionPublisher {
    /// Logs when a model's newest sample becomes older than the fresh
    /// threshold (and when it is fresh again), once per transition.
    fn note_aging(&self, outcome: &ModelOutcome) {
        let aging_now = outcome.freshness == Some(crate::collector::Freshness::Aging);
        let mut aging = match self.aging.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = &outcome.key;
        let was = aging.contains(key);
        if aging_now && !was {
            tracing::warn!(namespace = %key.namespace, model = %key.model_id, age_secs = outcome.newest_sample_age.map(|a| a.as_secs()), "metrics of the model are aging: still used, but older than --metrics-fresh-within; check the metrics backend");
            aging.insert(key.clone());
        } else if !aging_now && was {
            tracing::info!(namespace = %key.namespace, model = %key.model_id, "metrics of the model are fresh again");
            aging.remove(key);
        }
        self.telemetry
            .models_aging
            .get_or_create(&crate::telemetry::ModelLabels {
                namespace: key.namespace.clone(),
                model_id: key.model_id.clone(),
            })
            .set(i64::from(aging_now));
    }
}
