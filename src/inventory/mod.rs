//! Which variants exist and what state their targets and pods are in.
//!
//! Sources build an [`InventorySnapshot`] from Kubernetes objects (via
//! [`resolve`]) and publish it to the [`InventoryStore`]; the request path
//! only reads snapshots.

pub mod accelerators;
pub(crate) mod changes;
pub mod crd;
pub mod file;
pub mod kube;
pub mod namespace_config;
pub mod pods;
pub(crate) mod projection;
pub mod resolve;
pub(crate) mod snapshot;
pub(crate) mod store;
pub(crate) mod variants;
pub(crate) mod workloads;

pub use crd::{VariantAutoscaling, VariantAutoscalingSpec};
pub use resolve::{resolve, InventoryObjects};
pub use snapshot::pod_key;
pub(crate) use snapshot::PodKey;
pub use snapshot::{InventorySnapshot, ModelKey, ReplicaPod, TargetState, Variant, VariantSource};
pub use store::InventoryStore;
