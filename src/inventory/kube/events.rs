//! Warning Events on the objects the kube inventory could not use as
//! written.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::inventory::resolve::ObjectRef;

/// Name the server's Events are reported under.
pub(super) const EVENT_REPORTER: &str = "wva-metrics-server";

pub(super) fn object_ref(o: &ObjectRef) -> ObjectReference {
    let api_version = match o.kind {
        "VariantAutoscaling" => "llmd.ai/v1alpha1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "ScaledObject" => "keda.sh/v1alpha1",
        _ => "v1",
    };
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(o.kind.to_owned()),
        namespace: Some(o.namespace.clone()),
        name: Some(o.name.clone()),
        ..Default::default()
    }
}

/// A Warning Event on an object; failing to record it is only logged.
pub(super) async fn publish_warning(
    recorder: &Recorder,
    reference: &ObjectReference,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        // The API server limits an Event's note to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Configure".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::debug!(error = %e, "cannot record event");
    }
}
