//! Scale targets and their ReplicaSets as the inventory keeps them: a
//! compact projection of each Deployment, StatefulSet and ReplicaSet with
//! only what resolution reads (pure, no I/O).
//!
//! A stripped `Deployment` still took ~3 KB (its `ObjectMeta` and an empty
//! pod template inline); a [`WorkloadRecord`] keeps the name, the replica
//! counts, a Deployment's vLLM engine parameters and a ReplicaSet's owning
//! Deployment. The file source projects each document as it is read, the
//! kube source each watch event as it arrives ([`super::projection`]).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::PodSpec;

use super::projection::{Interner, Project};
use super::snapshot::TargetState;
use crate::saturation::v2::{ContainerArgs, EngineParams};

/// The kinds of workload resolution follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WorkloadKind {
    Deployment,
    StatefulSet,
    ReplicaSet,
}

/// What resolution reads of a Deployment, StatefulSet or ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkloadRecord {
    pub(crate) kind: WorkloadKind,
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Box<str>,
    /// Replica counts (Deployments and StatefulSets; zero for ReplicaSets).
    pub(crate) state: TargetState,
    /// A Deployment's vLLM engine parameters, from its pod template.
    pub(crate) engine: Option<Box<EngineParams>>,
    /// A ReplicaSet's owning Deployment.
    pub(crate) owner_deployment: Option<Box<str>>,
}

impl WorkloadRecord {
    fn new(kind: WorkloadKind, meta: &kube::api::ObjectMeta, interner: &mut Interner) -> Self {
        WorkloadRecord {
            kind,
            namespace: interner.namespace(meta.namespace.as_deref().unwrap_or_default()),
            name: meta.name.as_deref().unwrap_or_default().into(),
            state: TargetState::default(),
            engine: None,
            owner_deployment: None,
        }
    }
}

impl Project<Deployment> for WorkloadRecord {
    fn project(d: &Deployment, interner: &mut Interner) -> Self {
        let status = d.status.as_ref();
        WorkloadRecord {
            state: TargetState {
                spec_replicas: count(d.spec.as_ref().and_then(|s| s.replicas).or(Some(1))),
                status_replicas: count(status.and_then(|s| s.replicas)),
                ready_replicas: count(status.and_then(|s| s.ready_replicas)),
            },
            engine: Some(Box::new(deployment_engine(d))),
            ..WorkloadRecord::new(WorkloadKind::Deployment, &d.metadata, interner)
        }
    }

    fn key(&self) -> (&Arc<str>, &str) {
        (&self.namespace, &self.name)
    }
}

impl Project<StatefulSet> for WorkloadRecord {
    fn project(s: &StatefulSet, interner: &mut Interner) -> Self {
        let status = s.status.as_ref();
        WorkloadRecord {
            state: TargetState {
                spec_replicas: count(s.spec.as_ref().and_then(|s| s.replicas).or(Some(1))),
                status_replicas: count(status.map(|s| s.replicas)),
                ready_replicas: count(status.and_then(|s| s.ready_replicas)),
            },
            ..WorkloadRecord::new(WorkloadKind::StatefulSet, &s.metadata, interner)
        }
    }

    fn key(&self) -> (&Arc<str>, &str) {
        (&self.namespace, &self.name)
    }
}

impl Project<ReplicaSet> for WorkloadRecord {
    fn project(rs: &ReplicaSet, interner: &mut Interner) -> Self {
        let owner = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Deployment")
            .map(|o| o.name.as_str().into());
        WorkloadRecord {
            owner_deployment: owner,
            ..WorkloadRecord::new(WorkloadKind::ReplicaSet, &rs.metadata, interner)
        }
    }

    fn key(&self) -> (&Arc<str>, &str) {
        (&self.namespace, &self.name)
    }
}

/// The vLLM engine parameters of a pod template: every container's command
/// and args, `VLLM_USE_V1`, and the GPUs the pod requests.
pub(crate) fn engine_params_of(spec: &PodSpec) -> EngineParams {
    let containers = spec.containers.iter().map(|c| ContainerArgs {
        command: c.command.as_deref().unwrap_or_default(),
        args: c.args.as_deref().unwrap_or_default(),
        vllm_use_v1: c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "VLLM_USE_V1")
            .and_then(|e| e.value.as_deref()),
    });
    EngineParams::from_containers(containers, super::accelerators::pod_spec_gpus(spec))
}

/// A Deployment's engine parameters, parsed from its pod template; vLLM's
/// defaults for one without containers (upstream reads every Deployment,
/// and one without arguments runs with the defaults).
pub(crate) fn deployment_engine(d: &Deployment) -> EngineParams {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(engine_params_of)
        .unwrap_or_default()
}

fn count(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::projection::ProjectionStore;
    use kube::runtime::watcher::Event;

    fn object<K: serde::de::DeserializeOwned>(yaml: &str) -> K {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn each_kind_keeps_what_resolution_reads() {
        let mut interner = Interner::default();
        let d: Deployment = object(
            r#"
metadata: {name: d, namespace: llm, labels: {a: b}, annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}}
spec:
  replicas: 3
  selector: {matchLabels: {a: b}}
  template:
    spec:
      containers:
      - name: vllm
        args: [--max-num-batched-tokens, "1024", --max-num-seqs, "32"]
        resources: {limits: {nvidia.com/gpu: "2"}}
status: {replicas: 3, readyReplicas: 2}
"#,
        );
        let r = <WorkloadRecord as Project<Deployment>>::project(&d, &mut interner);
        assert_eq!(
            (r.kind, &*r.namespace, &*r.name),
            (WorkloadKind::Deployment, "llm", "d")
        );
        assert_eq!(
            r.state,
            TargetState {
                spec_replicas: 3,
                status_replicas: 3,
                ready_replicas: 2
            }
        );
        let e = r.engine.as_deref().unwrap();
        assert_eq!(
            (e.max_num_batched_tokens, e.max_num_seqs, e.gpus_per_replica),
            (1024, 32, 2)
        );
        // No spec.replicas: the API server's default of 1.
        let bare: Deployment = object("metadata: {name: e, namespace: llm}");
        let r = <WorkloadRecord as Project<Deployment>>::project(&bare, &mut interner);
        assert_eq!(r.state.spec_replicas, 1);
        assert_eq!(r.engine.as_deref(), Some(&EngineParams::default()));

        let s: StatefulSet = object(
            "metadata: {name: s, namespace: llm}\nspec: {replicas: 4, serviceName: s, selector: {}, template: {}}\nstatus: {replicas: 4, readyReplicas: 1}",
        );
        let r = <WorkloadRecord as Project<StatefulSet>>::project(&s, &mut interner);
        assert_eq!(r.kind, WorkloadKind::StatefulSet);
        assert_eq!((r.state.spec_replicas, r.state.ready_replicas), (4, 1));
        assert_eq!(r.engine, None);

        let rs: ReplicaSet = object(
            "metadata: {name: d-7f9c, namespace: llm, ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: d, uid: u, controller: true}]}",
        );
        let r = <WorkloadRecord as Project<ReplicaSet>>::project(&rs, &mut interner);
        assert_eq!(r.kind, WorkloadKind::ReplicaSet);
        assert_eq!(r.owner_deployment.as_deref(), Some("d"));
        let orphan: ReplicaSet = object("metadata: {name: o, namespace: llm}");
        let r = <WorkloadRecord as Project<ReplicaSet>>::project(&orphan, &mut interner);
        assert_eq!(r.owner_deployment, None);
    }

    #[test]
    fn a_status_update_is_a_change_a_new_resource_version_is_not() {
        let mut store: ProjectionStore<Deployment, WorkloadRecord> = ProjectionStore::new();
        let d = |ready: i32, rv: &str| -> Deployment {
            object(&format!(
                "metadata: {{name: d, namespace: llm, resourceVersion: \"{rv}\"}}\nspec: {{replicas: 2, selector: {{}}, template: {{}}}}\nstatus: {{readyReplicas: {ready}}}"
            ))
        };
        assert!(!store.apply(Event::Init));
        assert!(!store.apply(Event::InitApply(d(1, "1"))));
        assert!(store.apply(Event::InitDone));
        assert!(
            !store.apply(Event::Apply(d(1, "2"))),
            "resourceVersion only"
        );
        assert!(
            store.apply(Event::Apply(d(2, "3"))),
            "a replica became ready"
        );
        let kept = store.items(|_| true);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].state.ready_replicas, 2);
        assert!(store.apply(Event::Delete(d(2, "4"))));
        assert!(store.is_empty());
    }

    #[test]
    fn a_record_is_small() {
        // A stripped typed Deployment took ~3 KB; the record is a tenth.
        let size = std::mem::size_of::<WorkloadRecord>();
        assert!(size <= 96, "{size}");
    }
}
