//! A generated fleet for benchmarks at scale: many variants, each a
//! Deployment with ready pods, spread over namespaces and models, with a
//! deterministic load per pod. The same fleet is written as an inventory
//! (objects in memory, or a multi-document file) and served as Prometheus
//! query results by [`super::prometheus_api`], so the two always agree.

use std::fmt::Write;
use std::sync::Arc;

use super::objects;
use crate::inventory::pods::{Interner, PodRecord};
use crate::inventory::projection::Project;
use crate::inventory::variants::VariantRecord;
use crate::inventory::workloads::WorkloadRecord;
use crate::inventory::InventoryObjects;

/// Shape of a generated fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fleet {
    pub variants: usize,
    pub(crate) pods_per_variant: usize,
    /// Variants per model: a model is served by this many variants (for
    /// example one per accelerator type), so that the model-level analysis
    /// and the cost order across variants are exercised.
    pub variants_per_model: usize,
    /// Variants per namespace.
    pub(crate) variants_per_namespace: usize,
}

/// One pod of the fleet and the load it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPod {
    pub namespace: String,
    pub name: String,
    pub model: String,
    pub kv_usage: f64,
    pub queue_waiting: f64,
}

const ACCELERATORS: [&str; 3] = ["A100", "H100", "L40S"];

impl Fleet {
    /// `variants` variants with `pods_per_variant` ready pods each, two
    /// variants per model, 100 variants per namespace.
    pub fn new(variants: usize, pods_per_variant: usize) -> Fleet {
        Fleet {
            variants,
            pods_per_variant,
            variants_per_model: 2,
            variants_per_namespace: 100,
        }
    }

    pub fn pod_count(&self) -> usize {
        self.variants * self.pods_per_variant
    }

    pub fn namespace(&self, variant: usize) -> String {
        format!("llm-{:04}", variant / self.variants_per_namespace.max(1))
    }

    pub(crate) fn model(&self, variant: usize) -> String {
        format!("model-{:05}", variant / self.variants_per_model.max(1))
    }

    pub(crate) fn variant_name(&self, variant: usize) -> String {
        format!("variant-{variant:05}")
    }

    pub fn target_name(&self, variant: usize) -> String {
        format!("decode-{variant:05}")
    }

    /// Every pod with its load. The load is spread deterministically (a
    /// golden-ratio sequence) so that some models scale up, some down and
    /// most hold, as in a real fleet.
    pub fn pods(&self) -> impl Iterator<Item = FleetPod> + '_ {
        (0..self.variants).flat_map(move |v| {
            (0..self.pods_per_variant).map(move |p| {
                let i = (v * self.pods_per_variant + p) as f64;
                let spread = (i * 0.618_033_988_75).fract();
                FleetPod {
                    namespace: self.namespace(v),
                    name: format!("{}-{p}", self.target_name(v)),
                    model: self.model(v),
                    kv_usage: 0.15 + 0.75 * spread,
                    queue_waiting: ((i as u64) % 7) as f64,
                }
            })
        })
    }

    /// The Kubernetes objects of the fleet, as JSON values in the shapes of
    /// the API (VariantAutoscaling, Deployment, Pod).
    pub fn object_values(&self) -> impl Iterator<Item = serde_json::Value> + '_ {
        (0..self.variants).flat_map(move |v| {
            let ns = self.namespace(v);
            let target = self.target_name(v);
            let variant = self.variant_name(v);
            let replicas = u32::try_from(self.pods_per_variant).unwrap_or(u32::MAX);
            let head = [
                objects::variant_autoscaling(&objects::VariantSpec {
                    namespace: &ns,
                    name: &variant,
                    target: &target,
                    model: &self.model(v),
                    accelerator: ACCELERATORS[v % ACCELERATORS.len()],
                    cost: (5 + v % self.variants_per_model.max(1) * 5) as f64,
                    min_replicas: 1,
                    max_replicas: replicas.saturating_mul(2).saturating_add(2),
                }),
                objects::deployment(&ns, &target, replicas, replicas),
            ];
            let pods: Vec<_> = (0..replicas)
                .map(|p| objects::pod(&ns, &format!("{target}-{p}"), &target, &variant, true, None))
                .collect();
            head.into_iter().chain(pods)
        })
    }

    /// The fleet as typed inventory objects.
    pub fn objects(&self) -> Result<InventoryObjects, serde_json::Error> {
        let mut objects = InventoryObjects::default();
        let mut interner = Interner::default();
        for value in self.object_values() {
            match value["kind"].as_str() {
                Some("VariantAutoscaling") => {
                    let va: crate::inventory::VariantAutoscaling = serde_json::from_value(value)?;
                    objects
                        .variant_autoscalings
                        .push(Arc::new(VariantRecord::project(&va, &mut interner)));
                }
                Some("Deployment") => {
                    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(value)?;
                    objects
                        .workloads
                        .push(Arc::new(WorkloadRecord::project(&d, &mut interner)));
                }
                Some(_) | None => objects.pods.push(Arc::new(PodRecord::project(
                    &serde_json::from_value(value)?,
                    &mut interner,
                ))),
            }
        }
        Ok(objects)
    }

    /// The fleet as a multi-document inventory file for `--inventory
    /// file:PATH`. Each document is JSON, which YAML reads as flow style.
    pub fn inventory_file(&self) -> String {
        let mut out = String::new();
        for value in self.object_values() {
            let _ = writeln!(out, "---\n{value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::resolve;

    #[test]
    fn objects_resolve_to_the_fleet_shape() {
        let fleet = Fleet::new(10, 3);
        let (snapshot, problems) = resolve(&fleet.objects().unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(snapshot.variants().len(), 10);
        assert_eq!(snapshot.pods().len(), 30);
        assert_eq!(snapshot.models().count(), 5);
        assert!(snapshot.pods().iter().all(|p| p.ready));
    }

    #[test]
    fn file_and_objects_agree() {
        let fleet = Fleet::new(4, 2);
        let text = fleet.inventory_file();
        let parsed =
            crate::inventory::file::parse_objects(std::path::Path::new("fleet.yaml"), &text)
                .unwrap();
        assert_eq!(parsed.variant_autoscalings.len(), 4);
        assert_eq!(parsed.workloads.len(), 4);
        assert_eq!(parsed.pods.len(), 8);
    }

    #[test]
    fn loads_are_in_range_and_spread() {
        let fleet = Fleet::new(50, 4);
        let pods: Vec<FleetPod> = fleet.pods().collect();
        assert_eq!(pods.len(), fleet.pod_count());
        assert!(pods
            .iter()
            .all(|p| (0.0..=1.0).contains(&p.kv_usage) && p.queue_waiting >= 0.0));
        assert!(pods.iter().any(|p| p.kv_usage > 0.8));
        assert!(pods.iter().any(|p| p.kv_usage < 0.3));
    }
}
