//! Client certificate chains cannot buy CPU (issue 28): a chain is judged
//! at most once per connection, refused without a signature check when it
//! is longer than the bound (or shaped to make path building branch), and
//! verified off the request threads. The hostile chain of the issue: a
//! leaf and 100 self-signed P-384 "intermediates" carrying the client CA's
//! name, sent by 16 connections at once, while `/healthz` is probed.
//!
//! The test prints the server's CPU per request and the `/healthz`
//! latencies (docs/benchmarks.md, "Hostile client certificate chains"):
//!
//! cargo test --release --test client_chains -- --nocapture

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::pki::{ca, client, serve_kube};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

const CONNECTIONS: usize = 16;
const PHASE: Duration = Duration::from_secs(8);

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let used: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    Duration::from_secs_f64(used / ticks)
}

/// The chain: a P-384 leaf naming `ca_name` as its issuer (signed
/// by a key of its own) and 100 self-signed P-384 certificates named
/// `ca_name`; (chain PEM, key PEM).
fn hostile_chain(ca_name: &str) -> (String, String) {
    let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
    let fake_ca_key = KeyPair::generate_for(p384).unwrap();
    let mut fake_ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    fake_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    fake_ca.distinguished_name = rcgen::DistinguishedName::new();
    fake_ca.distinguished_name.push(DnType::CommonName, ca_name);
    let issuer = rcgen::Issuer::new(fake_ca.clone(), fake_ca_key);
    let leaf_key = KeyPair::generate_for(p384).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, "mallory");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let mut pem = leaf.signed_by(&leaf_key, &issuer).unwrap().pem();
    for _ in 0..100 {
        let key = KeyPair::generate_for(p384).unwrap();
        pem.push_str(&fake_ca.self_signed(&key).unwrap().pem());
    }
    (pem, leaf_key.serialize_pem())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_chain_is_refused_without_signature_checks_and_healthz_stays_up() {
    let api = ApiServer::start().await;
    // One variant (no pods): the server has a fetch cycle to finish.
    api.apply(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llama", "namespace": "llm"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llama"}},
                 "template": {"metadata": {"labels": {"app": "llama"}}, "spec": {"containers": []}}},
        "status": {"replicas": 1, "readyReplicas": 1}
    }));
    api.apply(serde_json::json!({
        "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "llama", "namespace": "llm", "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"},
                 "modelID": "m", "minReplicas": 1, "maxReplicas": 10}
    }));
    let dir = tempfile::tempdir().unwrap();
    let users = ca("users-ca");
    let ca_path = dir.path().join("users-ca.crt");
    std::fs::write(&ca_path, &users.pem).unwrap();
    let serve = serve_kube(
        &api,
        dir.path(),
        &[
            "--scrape-interval",
            "500ms",
            "--client-ca-file",
            ca_path.to_str().unwrap(),
        ],
    )
    .await;
    let pid = serve.proc.child.id();
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama",
        serve.base
    );
    let chain = hostile_chain("users-ca");

    // One connection first: the answer is Kubernetes' bare 401; why is in
    // the log, and says the chain was refused for its length.
    let c = client(&serve.server_ca, Some(&chain));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Unauthorized", "{body}");
    assert_eq!(body["reason"], "Unauthorized", "{body}");
    let log = common::eventually(Duration::from_secs(10), "the refusal logged", || async {
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        log.contains("101 certificates, more than 5").then_some(log)
    })
    .await;
    assert!(log.contains("request not authenticated"), "{log}");

    // 16 connections send the chain as fast as they are answered, while a
    // kubelet-like probe asks /healthz every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let c = client(&serve.server_ca, None);
        let url = format!("{}/healthz", serve.base);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => latencies.push(t.elapsed()),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            latencies.sort();
            (latencies, failures)
        })
    };
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            // A client of its own: one connection (HTTP/2) per sender.
            let c = client(&serve.server_ca, Some(&chain));
            let url = url.clone();
            tokio::spawn(async move {
                let mut answered = 0usize;
                let mut other = Vec::new();
                while started.elapsed() < PHASE {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 401 => answered += 1,
                        Ok(r) => other.push(r.status().as_u16()),
                        Err(e) => other.push(if e.is_timeout() { 1 } else { 0 }),
                    }
                }
                (answered, other)
            })
        })
        .collect();
    let mut requests = 0;
    for s in senders {
        let (answered, other) = s.await.unwrap();
        assert!(other.is_empty(), "answers other than 401: {other:?}");
        requests += answered;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    stop.store(true, Ordering::SeqCst);
    let (healthz, health_failures) = health.await.unwrap();
    let per_request = cpu / u32::try_from(requests.max(1)).unwrap();
    eprintln!(
        "| {CONNECTIONS} connections x leaf + 100 self-signed P-384 | {requests} requests in {elapsed:.1?} ({:.0}/s) | server CPU {cpu:.2?}, {per_request:.2?} per request | /healthz n={} p50 {:.1?} p99 {:.1?} max {:.1?}, failed {health_failures} |",
        requests as f64 / elapsed.as_secs_f64(),
        healthz.len(),
        percentile(&healthz, 0.5),
        percentile(&healthz, 0.99),
        healthz.last().copied().unwrap_or_default(),
    );
    assert!(requests >= CONNECTIONS, "every sender was answered");
    assert_eq!(
        health_failures, 0,
        "/healthz failed while the chains were sent"
    );
    assert!(!healthz.is_empty());

    // A legitimate chain (leaf + intermediate under the client CA) is
    // still accepted.
    let p = {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "users-intermediate");
        let der = p.signed_by(&key, &users.issuer).unwrap();
        (der.pem(), rcgen::Issuer::new(p, key))
    };
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, "dave");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_pem = leaf.signed_by(&leaf_key, &p.1).unwrap().pem();
    let dave = (format!("{leaf_pem}{}", p.0), leaf_key.serialize_pem());
    let c = client(&serve.server_ca, Some(&dave));
    for _ in 0..3 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "dave is authenticated and allowed");
    }
    assert!(
        api.access_reviews()
            .iter()
            .any(|r| r["spec"]["user"] == "dave"),
        "dave's request was reviewed"
    );
}
