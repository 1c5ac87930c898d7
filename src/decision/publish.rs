//! The sweep's decisions on `/metrics`: gauges per variant, counters of
//! scaling recommendations, holds, slo fallbacks, models without metrics,
//! the aging of each model's samples and what the `slo` analysis computed,
//! after every sweep. The gauges of a model or variant no longer in the
//! sweep are removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::{ModelOutcome, Sweep};
use crate::inventory::ModelKey;
use crate::saturation::analyzers::Analysis;
use crate::saturation::slo::SloAnalysis;
use crate::telemetry::{ModelLabels, ScalingLabels, Telemetry, VariantLabels};

/// Publishes every model's decision as gauges after each fetch cycle and
/// counts scaling recommendations when they change.
pub(crate) struct DecisionPublisher {
    telemetry: Telemetry,
    last: Mutex<HashMap<(String, String), (u32, u32)>>,
    /// Models whose newest sample was aging at the last publication.
    aging: Mutex<HashSet<ModelKey>>,
    /// What every model had on `/metrics` at the last publication: what is
    /// gone from the next sweep has its gauges removed, so that a deleted
    /// variant's last count does not stay there (and the series do not grow
    /// with every variant ever created).
    published: Mutex<HashMap<ModelKey, Published>>,
}

/// A model's gauges at the last publication.
#[derive(Default)]
struct Published {
    /// Its variants' labels.
    variants: Vec<VariantLabels>,
    /// Whether it has the slo analysis' gauges.
    slo: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn model_labels(key: &ModelKey) -> ModelLabels {
    ModelLabels {
        namespace: key.namespace.clone(),
        model_id: key.model_id.clone(),
    }
}

impl DecisionPublisher {
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        DecisionPublisher {
            telemetry,
            last: Mutex::new(HashMap::new()),
            aging: Mutex::new(HashSet::new()),
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Exports `sweep`'s decisions.
    pub(crate) fn publish(&self, sweep: &Sweep) {
        let t = &self.telemetry;
        let mut last = locked(&self.last);
        let mut published = locked(&self.published);
        let mut now_published: HashMap<ModelKey, Published> = HashMap::new();
        for (key, outcome) in &sweep.outcomes {
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(error = %e, "no decision for model");
                    // Not gone: its gauges keep their last values.
                    if let Some(before) = published.remove(key) {
                        now_published.insert(key.clone(), before);
                    }
                    continue;
                }
            };
            let mut variant_labels = Vec::with_capacity(outcome.decisions.len());
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
                    .get_or_create(&model_labels(&outcome.key))
                    .inc();
            }
            self.note_aging(outcome);
            if let Some(age) = outcome.newest_sample_age {
                t.sample_age
                    .get_or_create(&model_labels(&outcome.key))
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
                variant_labels.push(labels);
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
                let variant_key = (v.namespace.clone(), v.name.clone());
                let now = (current, d.desired);
                if d.desired != current && last.get(&variant_key) != Some(&now) {
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
                last.insert(variant_key, now);
            }
            let before = published.remove(key).unwrap_or_default();
            let slo = match &outcome.analysis {
                Some(Analysis::Slo(a)) => {
                    self.publish_slo(key, a, &variant_labels);
                    true
                }
                // Another analysis decided (or slo fell back): no slo figures.
                _ => {
                    if before.slo {
                        t.slo.remove(&model_labels(key), &before.variants);
                    }
                    false
                }
            };
            let gone: Vec<VariantLabels> = before
                .variants
                .into_iter()
                .filter(|l| !variant_labels.contains(l))
                .collect();
            self.remove_variants(&gone, &variant_labels, &mut last);
            now_published.insert(
                key.clone(),
                Published {
                    variants: variant_labels,
                    slo,
                },
            );
        }
        // What is left was published before and is not in this sweep.
        for (key, gone) in published.drain() {
            let model = model_labels(&key);
            t.sample_age.remove(&model);
            t.models_aging.remove(&model);
            if gone.slo {
                t.slo.remove(&model, &gone.variants);
            }
            locked(&self.aging).remove(&key);
            self.remove_variants(&gone.variants, &[], &mut last);
        }
        *published = now_published;
    }

    /// The slo analysis' quantities of a model it decided.
    fn publish_slo(&self, key: &ModelKey, a: &SloAnalysis, variants: &[VariantLabels]) {
        let slo = &self.telemetry.slo;
        let model = model_labels(key);
        for (family, value) in [
            (&slo.arrivals, a.arrival_rate),
            (&slo.sized, a.sized_rate),
            (&slo.backlog, a.backlog),
            (&slo.request_seconds, a.seconds_per_request),
            (&slo.sequence_tokens, a.tokens_per_sequence),
            (&slo.startup_seconds, a.startup_seconds),
        ] {
            family.get_or_create(&model).set(value);
        }
        match a.prefill_seconds {
            Some(s) => {
                slo.prefill_seconds.get_or_create(&model).set(s);
            }
            None => {
                slo.prefill_seconds.remove(&model);
            }
        }
        // Per variant, in the order the analysis and the decisions share.
        for (labels, rate) in variants.iter().zip(&a.per_replica_rate) {
            slo.replica_rate.get_or_create(labels).set(*rate);
        }
    }

    /// Removes the gauges of variants no longer decided under these
    /// labels, and the last recommendation of those no longer decided at
    /// all (not of one in `kept`, whose labels changed: say, its
    /// accelerator).
    fn remove_variants(
        &self,
        gone: &[VariantLabels],
        kept: &[VariantLabels],
        last: &mut HashMap<(String, String), (u32, u32)>,
    ) {
        let t = &self.telemetry;
        for labels in gone {
            t.desired_replicas.remove(labels);
            t.current_replicas.remove(labels);
            t.desired_ratio.remove(labels);
            t.slo.replica_rate.remove(labels);
            let same_variant = |k: &VariantLabels| {
                k.namespace == labels.namespace && k.variant_name == labels.variant_name
            };
            if !kept.iter().any(same_variant) {
                last.remove(&(labels.namespace.clone(), labels.variant_name.clone()));
            }
        }
    }
}

impl DecisionPublisher {
    /// Logs when a model's newest sample becomes older than the fresh
    /// threshold (and when it is fresh again), once per transition.
    fn note_aging(&self, outcome: &ModelOutcome) {
        let aging_now = outcome.freshness == Some(crate::collector::Freshness::Aging);
        let mut aging = locked(&self.aging);
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
            .get_or_create(&model_labels(key))
            .set(i64::from(aging_now));
    }
}
