//! Pods as the inventory keeps them: a compact projection of each `Pod`
//! with only what resolution reads, instead of the typed object.
//!
//! A k8s-openapi `Pod` is 2,176 bytes inline before any of its heap data; at
//! 100,000 pods the typed objects alone took several hundred MiB. A
//! [`PodRecord`] keeps the namespace (shared), the name, the labels (one
//! shared map per distinct label set: the pods of one ReplicaSet carry the
//! same labels), the address, the readiness, the owner and the two scrape
//! annotations. The file source projects each Pod as its document is read,
//! the kube source each Pod as its watch event arrives ([`PodStore`], a
//! [`super::projection::ProjectionStore`]).
//!
//! Pure: no I/O.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub(crate) use super::projection::Interner;
use super::projection::Project;

/// Pod annotation with the port vLLM serves `/metrics` on.
pub(crate) const SCRAPE_PORT_ANNOTATION: &str = "prometheus.io/port";
/// Pod annotation with the metrics path.
pub(crate) const SCRAPE_PATH_ANNOTATION: &str = "prometheus.io/path";

/// A pod's labels, shared between pods with the same set.
pub(crate) type PodLabels = super::projection::Labels;

/// The kube source's pods: the projection of each watched Pod.
#[cfg(test)]
pub(crate) type PodStore = super::projection::ProjectionStore<Pod, PodRecord>;

/// The controller of a pod, as far as resolution follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodOwner {
    ReplicaSet(Box<str>),
    StatefulSet(Box<str>),
}

/// `status.podIP` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodIp {
    /// None or empty: the pod has no address yet.
    Missing,
    Ip(IpAddr),
    /// Not an address: resolution reports the pod (with this text) and skips it.
    Invalid(Box<str>),
}

/// What resolution reads of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Box<str>,
    pub(crate) labels: Arc<PodLabels>,
    /// The controller owner (else the first owner) when it is a
    /// ReplicaSet or a StatefulSet.
    pub(crate) owner: Option<PodOwner>,
    pub(crate) ip: PodIp,
    /// Condition `Ready` is `True` and the pod is not being deleted.
    pub(crate) ready: bool,
    /// The `prometheus.io/port` annotation as written.
    pub(crate) scrape_port: Option<Box<str>>,
    /// The `prometheus.io/path` annotation as written.
    pub(crate) scrape_path: Option<Box<str>>,
}

impl PodRecord {
    /// Projects a Pod, sharing namespace and label set through `interner`.
    pub(crate) fn project(pod: &Pod, interner: &mut Interner) -> PodRecord {
        let meta = &pod.metadata;
        let owners = meta.owner_references.as_deref().unwrap_or_default();
        let owner = owners
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| owners.first())
            .and_then(|o| match o.kind.as_str() {
                "ReplicaSet" => Some(PodOwner::ReplicaSet(o.name.as_str().into())),
                "StatefulSet" => Some(PodOwner::StatefulSet(o.name.as_str().into())),
                _ => None,
            });
        let status = pod.status.as_ref();
        let ip = match status.and_then(|s| s.pod_ip.as_deref()) {
            None | Some("") => PodIp::Missing,
            Some(s) => s
                .parse::<IpAddr>()
                .map_or_else(|_| PodIp::Invalid(s.into()), PodIp::Ip),
        };
        let ready = meta.deletion_timestamp.is_none()
            && status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        let annotation = |name: &str| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(name))
                .map(|v| v.as_str().into())
        };
        PodRecord {
            namespace: interner.namespace(meta.namespace.as_deref().unwrap_or_default()),
            name: meta.name.as_deref().unwrap_or_default().into(),
            labels: interner.labels(meta.labels.as_ref()),
            owner,
            ip,
            ready,
            scrape_port: annotation(SCRAPE_PORT_ANNOTATION),
            scrape_path: annotation(SCRAPE_PATH_ANNOTATION),
        }
    }
}

impl Project<Pod> for PodRecord {
    fn project(pod: &Pod, interner: &mut Interner) -> Self {
        PodRecord::project(pod, interner)
    }

    fn key(&self) -> (&Arc<str>, &str) {
        (&self.namespace, &self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher;

    fn pod(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).unwrap()
    }

    fn web(name: &str, ip: &str, ready: bool, labels: &str) -> Pod {
        pod(&format!(
            "metadata: {{name: {name}, namespace: llm, labels: {{{labels}}}}}\nstatus: {{podIP: \"{ip}\", conditions: [{{type: Ready, status: \"{}\"}}]}}\n",
            if ready { "True" } else { "False" }
        ))
    }

    #[test]
    fn the_projection_keeps_what_resolution_reads() {
        let mut interner = Interner::default();
        let p = pod(r#"
metadata:
  name: a-7d9f-x
  namespace: llm
  labels: {app: a, pod-template-hash: 7d9f}
  annotations: {prometheus.io/port: "9000", prometheus.io/path: /m, other: "x"}
  ownerReferences:
  - {apiVersion: v1, kind: Node, name: n, uid: u0}
  - {apiVersion: apps/v1, kind: ReplicaSet, name: a-7d9f, uid: u1, controller: true}
spec: {containers: [{name: vllm, image: vllm}]}
status: {podIP: "fd00::1", conditions: [{type: Ready, status: "True"}]}
"#);
        let r = PodRecord::project(&p, &mut interner);
        assert_eq!(&*r.namespace, "llm");
        assert_eq!(&*r.name, "a-7d9f-x");
        assert_eq!(r.labels.len(), 2);
        assert_eq!(r.owner, Some(PodOwner::ReplicaSet("a-7d9f".into())));
        assert_eq!(r.ip, PodIp::Ip("fd00::1".parse().unwrap()));
        assert!(r.ready);
        assert_eq!(
            (r.scrape_port.as_deref(), r.scrape_path.as_deref()),
            (Some("9000"), Some("/m"))
        );
        // Without a controller, the first owner; other kinds lead nowhere.
        let first = pod("metadata: {name: s-0, ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: s, uid: u}]}");
        assert_eq!(
            PodRecord::project(&first, &mut interner).owner,
            Some(PodOwner::StatefulSet("s".into()))
        );
        let job = pod("metadata: {name: j, ownerReferences: [{apiVersion: batch/v1, kind: Job, name: j, uid: u, controller: true}]}");
        assert_eq!(PodRecord::project(&job, &mut interner).owner, None);
        // Being deleted: not ready, whatever the condition says.
        let deleting = pod("metadata: {name: d, deletionTimestamp: \"2026-01-01T00:00:00Z\"}\nstatus: {conditions: [{type: Ready, status: \"True\"}]}");
        assert!(!PodRecord::project(&deleting, &mut interner).ready);
        let bad = pod("metadata: {name: b}\nstatus: {podIP: \"10.0.0\"}");
        assert_eq!(
            PodRecord::project(&bad, &mut interner).ip,
            PodIp::Invalid("10.0.0".into())
        );
        let none = pod("metadata: {name: n}\nstatus: {podIP: \"\"}");
        assert_eq!(PodRecord::project(&none, &mut interner).ip, PodIp::Missing);
    }

    #[test]
    fn a_record_is_small() {
        // The typed Pod is 2,176 bytes inline; the record 128 at most.
        assert!(
            std::mem::size_of::<PodRecord>() <= 128,
            "{}",
            std::mem::size_of::<PodRecord>()
        );
    }

    fn names(store: &PodStore) -> Vec<(String, bool, String)> {
        let mut v: Vec<_> = store
            .items(|_| true)
            .iter()
            .map(|p| {
                let ip = match &p.ip {
                    PodIp::Ip(ip) => ip.to_string(),
                    _ => "-".into(),
                };
                (p.name.to_string(), p.ready, ip)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn watch_events_update_the_store_like_a_reflector() {
        use watcher::Event;
        let mut s = PodStore::new();
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(web("a", "10.0.0.1", true, "app: x"))));
        assert!(!s.apply(Event::InitApply(web("b", "10.0.0.2", false, "app: x"))));
        assert!(names(&s).is_empty(), "a list in progress is not visible");
        assert!(s.apply(Event::InitDone));
        assert_eq!(
            names(&s),
            [
                ("a".into(), true, "10.0.0.1".into()),
                ("b".into(), false, "10.0.0.2".into())
            ]
        );
        // A readiness flip, a new IP: changes.
        assert!(s.apply(Event::Apply(web("b", "10.0.0.2", true, "app: x"))));
        assert!(s.apply(Event::Apply(web("a", "10.0.0.9", true, "app: x"))));
        // The same projection again (a new resourceVersion only): no change.
        let mut same = web("a", "10.0.0.9", true, "app: x");
        same.metadata.resource_version = Some("42".into());
        assert!(!s.apply(Event::Apply(same)));
        // Relabelled: a change (the variant label decides membership).
        assert!(s.apply(Event::Apply(web("a", "10.0.0.9", true, "app: z"))));
        assert_eq!(
            &*s.items(|_| true)
                .iter()
                .find(|p| &*p.name == "a")
                .unwrap()
                .labels["app"],
            "z"
        );
        // Deleted, and deleting what is not there.
        assert!(s.apply(Event::Delete(web("b", "", false, ""))));
        assert!(!s.apply(Event::Delete(web("b", "", false, ""))));
        assert_eq!(names(&s), [("a".into(), true, "10.0.0.9".into())]);
        // The watch drops; meanwhile `a` went away and `c` came: the relist
        // replaces the store when it is done.
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(web("c", "10.0.0.3", true, "app: x"))));
        assert_eq!(names(&s), [("a".into(), true, "10.0.0.9".into())]);
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s), [("c".into(), true, "10.0.0.3".into())]);
        // A relist that finds exactly what is kept changes nothing.
        assert!(!s.apply(Event::Init));
        assert!(!s.apply(Event::InitApply(web("c", "10.0.0.3", true, "app: x"))));
        assert!(!s.apply(Event::InitDone));
        assert_eq!(s.len(), 1);
        // Only pods of kept namespaces are handed out.
        assert!(s.items(|ns| ns != "llm").is_empty());
    }

    /// Watch events through the store and into resolution: the replicas
    /// of the variant follow readiness, address, relabelling, deletion and
    /// a relist after a dropped watch.
    #[test]
    fn the_replicas_follow_the_watched_pods() {
        use watcher::Event;
        let base = crate::inventory::file::parse_objects(
            std::path::Path::new("t.yaml"),
            "apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata: {name: v, namespace: llm}\nspec: {scaleTargetRef: {kind: Deployment, name: d}, modelID: m}\n",
        )
        .unwrap();
        let replicas = |s: &PodStore| -> Vec<(String, bool, Option<String>)> {
            let mut objects = base.clone();
            objects.pods = s.items(|_| true);
            let (snap, problems) = crate::inventory::resolve(&objects);
            assert!(problems.is_empty(), "{problems:?}");
            let mut v: Vec<_> = snap
                .pods()
                .iter()
                .map(|p| (p.name().to_owned(), p.ready, p.ip.map(|ip| ip.to_string())))
                .collect();
            v.sort();
            v
        };
        let member = "llm-d.ai/variant: v";
        let mut s = PodStore::new();
        s.apply(Event::Init);
        s.apply(Event::InitApply(web("a", "10.0.0.1", true, member)));
        s.apply(Event::InitApply(web("b", "10.0.0.2", false, member)));
        s.apply(Event::InitApply(web("x", "10.0.0.3", true, "app: other")));
        s.apply(Event::InitDone);
        let ip = |s: &str| Some(s.to_owned());
        assert_eq!(
            replicas(&s),
            [
                ("a".into(), true, ip("10.0.0.1")),
                ("b".into(), false, ip("10.0.0.2"))
            ]
        );
        s.apply(Event::Apply(web("b", "10.0.0.2", true, member)));
        s.apply(Event::Apply(web("a", "10.0.0.7", true, member)));
        assert_eq!(
            replicas(&s),
            [
                ("a".into(), true, ip("10.0.0.7")),
                ("b".into(), true, ip("10.0.0.2"))
            ]
        );
        // Relabelled out of the variant, and back in under another name.
        s.apply(Event::Apply(web("a", "10.0.0.7", true, "app: other")));
        s.apply(Event::Apply(web("x", "10.0.0.3", true, member)));
        assert_eq!(
            replicas(&s),
            [
                ("b".into(), true, ip("10.0.0.2")),
                ("x".into(), true, ip("10.0.0.3"))
            ]
        );
        s.apply(Event::Delete(web("b", "", false, "")));
        assert_eq!(replicas(&s), [("x".into(), true, ip("10.0.0.3"))]);
        // The watch drops; x is deleted and c created meanwhile: after the
        // relist only c serves.
        s.apply(Event::Init);
        s.apply(Event::InitApply(web("c", "10.0.0.4", true, member)));
        s.apply(Event::InitApply(web("a", "10.0.0.7", true, "app: other")));
        assert_eq!(replicas(&s), [("x".into(), true, ip("10.0.0.3"))]);
        s.apply(Event::InitDone);
        assert_eq!(replicas(&s), [("c".into(), true, ip("10.0.0.4"))]);
    }
}
