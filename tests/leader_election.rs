//! Several replicas of `serve` against one in-process API server (real
//! list/watch, Leases with resourceVersion conflicts): every replica
//! answers the API, only the Lease holder writes status and Events, and
//! when it dies another takes over without repeating its Events.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::{eventually, Emulator, Server};
use serde_json::{json, Value};

const NS: &str = "llm";
const MODEL: &str = "meta/llama-3.1-8b";
const WAIT: Duration = Duration::from_secs(30);
/// Short, so that the test sees an expiry; the relations between the
/// three durations are those of the defaults (15s/10s/2s).
const LEASE_SECONDS: u64 = 3;

fn va() -> Value {
    json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "llama-h100", "namespace": NS, "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"},
                 "modelID": MODEL, "minReplicas": 1, "maxReplicas": 10}
    })
}

fn deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llama-decode", "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "llama-decode"}},
                 "template": {"metadata": {"labels": {"app": "llama-decode"}}, "spec": {"containers": []}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

fn pod(index: usize, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("llama-decode-7f9c-{index}"), "namespace": NS,
                     "labels": {"app": "llama-decode", "pod-template-hash": "7f9c"},
                     "annotations": {"prometheus.io/port": port.to_string()},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llama-decode-7f9c",
                                          "uid": "rs-uid", "controller": true}]},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn replica(api: &ApiServer, name: &str) -> Server {
    let lease = format!("{LEASE_SECONDS}s");
    Server::launch_kube(
        api,
        &[
            "--status-min-interval",
            "1s",
            "--leader-elect-lease-duration",
            &lease,
            "--leader-elect-renew-deadline",
            "2s",
            "--leader-elect-retry-period",
            "500ms",
        ],
        &[("POD_NAME", name)],
    )
}

fn holder(api: &ApiServer) -> Option<String> {
    api.object("leases", "wva-system", "wva-metrics-server")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .filter(|h| !h.is_empty())
}

/// `ScalingDecision` Events as (reporting instance, note).
fn decisions(api: &ApiServer) -> Vec<(String, String)> {
    api.events()
        .iter()
        .filter(|e| e["reason"] == "ScalingDecision")
        .map(|e| {
            (
                e["reportingInstance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Which of the two replicas the Lease names (identities are `POD_NAME_<random>`).
fn leader_index(holder: &str) -> usize {
    match holder.split('_').next() {
        Some("replica-a") => 0,
        Some("replica-b") => 1,
        other => panic!("unexpected holder {other:?}"),
    }
}

struct Cluster {
    api: ApiServer,
    replicas: Vec<Server>,
    emulators: Vec<Emulator>,
}

/// Three ready replicas at kv .20/.30/.25 (desired 2 of 3), two servers.
async fn cluster() -> Cluster {
    let api = ApiServer::start().await;
    let mut emulators = Vec::new();
    for kv in [0.20, 0.30, 0.25] {
        emulators.push(Emulator::start(MODEL, kv, 1.0).await);
    }
    api.apply(deployment(3));
    for (i, e) in emulators.iter().enumerate() {
        api.apply(pod(i, e.port));
    }
    api.apply(va());
    let replicas = vec![replica(&api, "replica-a"), replica(&api, "replica-b")];
    for r in &replicas {
        r.wait_ready().await;
    }
    Cluster {
        api,
        replicas,
        emulators,
    }
}

#[tokio::test]
async fn one_replica_writes_and_another_takes_over_when_it_dies() {
    let mut c = cluster().await;
    // Every replica answers the API, with the same value.
    for r in &c.replicas {
        r.wait_value(NS, "wva_desired_ratio", "target_name=llama-decode", "666m")
            .await;
    }
    let first = eventually(WAIT, "a Lease holder", || async { holder(&c.api) }).await;
    let leader = leader_index(&first);
    let follower = 1 - leader;
    let leader_name = ["replica-a", "replica-b"][leader];
    let follower_name = ["replica-a", "replica-b"][follower];
    let want = (leader_name.to_owned(), "desired replicas 2".to_owned());
    eventually(WAIT, "the leader's ScalingDecision Event", || async {
        decisions(&c.api).contains(&want).then_some(())
    })
    .await;
    // Several fetch cycles and renewals later: one writer, one Event per
    // change (a first write before the first scrape may say 3).
    for r in &c.replicas {
        r.wait_fetch_cycles(4).await;
    }
    let events = decisions(&c.api);
    assert!(
        events.iter().all(|(who, _)| who == leader_name),
        "Events from the leader only: {events:?}"
    );
    assert_eq!(events.last(), Some(&want), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == want).count(),
        1,
        "no duplicate Event: {events:?}"
    );
    assert_eq!(holder(&c.api), Some(first.clone()), "the leader renews");
    assert!(
        c.replicas[follower]
            .log()
            .contains("leader election started")
            && !c.replicas[follower].log().contains("became leader"),
        "the follower never led"
    );

    // Kill the leader without a chance to release: the follower waits
    // for the Lease to expire, then takes over.
    let killed_at = Instant::now();
    c.replicas[leader].proc.stop();
    let taken = eventually(WAIT, "the follower to take the Lease over", || async {
        holder(&c.api).filter(|h| leader_index(h) == follower)
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover after SIGKILL: {takeover:?} (lease {LEASE_SECONDS}s)");
    let lease = c
        .api
        .object("leases", "wva-system", "wva-metrics-server")
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    assert_ne!(taken, first);
    // The new leader does not repeat the old leader's Event (over several
    // of its cycles)...
    c.replicas[follower].wait_fetch_cycles(4).await;
    assert_eq!(decisions(&c.api), events, "no Event repeated on takeover");
    // ...and reports the next change itself.
    for e in &c.emulators {
        e.set_state(json!({"kv": 0.78, "waiting": 4.0})).await;
    }
    let next = eventually(WAIT, "the new leader's Event for the change", || async {
        let d = decisions(&c.api);
        (d.len() > events.len()).then_some(d)
    })
    .await;
    assert_eq!(
        next[events.len()],
        (follower_name.to_owned(), "desired replicas 4".to_owned()),
        "{next:?}"
    );
    c.replicas[follower]
        .wait_value(NS, "wva_desired_ratio", "target_name=llama-decode", "1333m")
        .await;
}

#[tokio::test]
async fn a_leader_shutting_down_releases_the_lease() {
    let c = cluster().await;
    let first = eventually(WAIT, "a Lease holder", || async { holder(&c.api) }).await;
    let leader = leader_index(&first);
    let pid = c.replicas[leader].proc.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    // Released on the way out (the other replica need not wait for expiry).
    eventually(WAIT, "the leader to release the Lease", || async {
        c.replicas[leader]
            .log()
            .contains("released the Lease")
            .then_some(())
    })
    .await;
    let taken = eventually(WAIT, "the other replica to take the Lease", || async {
        holder(&c.api).filter(|h| leader_index(h) != leader)
    })
    .await;
    assert_ne!(taken, first);
}
