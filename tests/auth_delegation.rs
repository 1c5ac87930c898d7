//! Delegated authentication and authorization as deployed: the trust
//! configuration read from `kube-system/extension-apiserver-authentication`
//! (what deploy/ relies on, no requestheader flags) and followed when it
//! changes; x509 users from `--client-ca-file`; SubjectAccessReview answers
//! reused until their TTL and a slow API server answered 503, never a hang
//! or an allow. Real certificates, a real `serve`, reviews answered by the
//! in-process API server.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::{Duration, Instant};

use common::apiserver::{three_replica_llama, ApiServer};
use common::pki::{ca, client, client_cert, serve_kube};
use common::{eventually, Emulator, Proc};
use serde_json::{json, Value};

const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama-decode";

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut r = c.get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

struct Setup {
    api: ApiServer,
    base: String,
    server_ca: String,
    _dir: tempfile::TempDir,
    _serve: Proc,
    _emulators: Vec<Emulator>,
}

/// One variant of three replicas in the API server (anonymous denied), and
/// `serve --inventory kube` with `extra` flags; `before_start` runs before
/// `serve` starts (to create the ConfigMap it reads at start).
async fn setup(extra: &[&str], before_start: impl FnOnce(&ApiServer, &std::path::Path)) -> Setup {
    let api = ApiServer::start().await;
    let emulators = three_replica_llama(&api).await;
    let dir = tempfile::tempdir().unwrap();
    before_start(&api, dir.path());
    let mut args = vec!["--scrape-interval", "500ms"];
    args.extend_from_slice(extra);
    let serve = serve_kube(&api, dir.path(), &args).await;
    Setup {
        api,
        base: serve.base,
        server_ca: serve.server_ca,
        _dir: dir,
        _serve: serve.proc,
        _emulators: emulators,
    }
}

/// The ConfigMap kube-apiserver keeps in kube-system, with the keys it writes.
fn authentication_configmap(front_proxy_ca: &str, allowed: &str, client_ca: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
    "data": {
        "requestheader-client-ca-file": front_proxy_ca,
        "requestheader-allowed-names": allowed,
        "requestheader-username-headers": "[\"X-Remote-User\"]",
        "requestheader-group-headers": "[\"X-Remote-Group\"]",
        "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
        "client-ca-file": client_ca,
    }})
}

/// The user and groups of the newest review for `user`.
fn review_of(api: &ApiServer, user: &str) -> Option<Value> {
    api.access_reviews()
        .into_iter()
        .rev()
        .find(|r| r["spec"]["user"] == user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_comes_from_the_kube_system_configmap_and_follows_its_changes() {
    let front_proxy = ca("front-proxy-ca");
    let client_ca = ca("cluster-client-ca");
    let (fp_pem, cc_pem) = (front_proxy.pem.clone(), client_ca.pem.clone());
    // No requestheader or client-ca flags: everything from the ConfigMap.
    let s = setup(&[], |api, _| {
        api.apply(authentication_configmap(
            &fp_pem,
            "[\"front-proxy-client\"]",
            &cc_pem,
        ))
    })
    .await;
    let url = format!("{}{PATH}", s.base);

    // The aggregator's certificate and headers: the user it names is reviewed.
    let proxy = client_cert(&front_proxy, "front-proxy-client", None);
    let via_proxy = client(&s.server_ca, Some(&proxy));
    let headers = [("X-Remote-User", "alice"), ("X-Remote-Group", "hpa-group")];
    // /readyz does not wait for the ConfigMap's first read: the first
    // answers may still treat the proxy as anonymous.
    eventually(
        Duration::from_secs(20),
        "the ConfigMap's front proxy to be trusted",
        || async { (get(&via_proxy, &url, &headers).await.0 == 200).then_some(()) },
    )
    .await;
    let review = review_of(&s.api, "alice").expect("a review for alice");
    let groups = review["spec"]["groups"].as_array().unwrap();
    assert!(groups.contains(&json!("hpa-group")), "{review}");

    // A client certificate from the ConfigMap's client CA: CN is the user, O a group.
    let carol = client_cert(&client_ca, "carol", Some("team-a"));
    let (status, body) = get(&client(&s.server_ca, Some(&carol)), &url, &[]).await;
    assert_eq!(status, 200, "{body}");
    let review = review_of(&s.api, "carol").expect("a review for carol");
    let groups = review["spec"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&json!("team-a")) && groups.contains(&json!("system:authenticated")),
        "{review}"
    );

    // kube-apiserver rotates the allowed names: the old proxy name is no
    // longer trusted; as in Kubernetes' request-header authenticator, a
    // proxy certificate whose name is not allowed is 401, not anonymous.
    s.api.apply(authentication_configmap(
        &front_proxy.pem,
        "[\"aggregator\"]",
        &client_ca.pem,
    ));
    let body = eventually(
        Duration::from_secs(20),
        "the changed ConfigMap to take effect",
        || async {
            let (status, body) = get(&via_proxy, &url, &headers).await;
            (status == 401).then_some(body)
        },
    )
    .await;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized", "{body}");
    let aggregator = client_cert(&front_proxy, "aggregator", None);
    let (status, body) = get(&client(&s.server_ca, Some(&aggregator)), &url, &headers).await;
    assert_eq!(status, 200, "the newly allowed name is trusted: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_file_flag_authenticates_x509_users() {
    let users = ca("users-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("users-ca.crt");
    std::fs::write(&ca_path, &users.pem).unwrap();
    let s = setup(&["--client-ca-file", ca_path.to_str().unwrap()], |_, _| {}).await;
    let url = format!("{}{PATH}", s.base);

    let dave = client_cert(&users, "dave", Some("ops"));
    let (status, body) = get(&client(&s.server_ca, Some(&dave)), &url, &[]).await;
    assert_eq!(status, 200, "{body}");
    let review = review_of(&s.api, "dave").expect("a review for dave");
    let groups = review["spec"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&json!("ops")) && groups.contains(&json!("system:authenticated")),
        "{review}"
    );

    // The same name from a CA the server does not trust is refused (401),
    // as Kubernetes refuses an unverifiable client certificate.
    let stranger = client_cert(&ca("other-ca"), "dave", Some("ops"));
    let (status, body) = get(&client(&s.server_ca, Some(&stranger)), &url, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"], "Unauthorized",
        "only what Kubernetes says: {body}"
    );

    // A denied x509 user gets a Status naming them.
    s.api.deny_user("erin");
    let erin = client_cert(&users, "erin", None);
    let (status, body) = get(&client(&s.server_ca, Some(&erin)), &url, &[]).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("Forbidden")));
    assert!(body["message"].as_str().unwrap().contains("erin"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_reviews_are_reused_until_the_ttl_and_a_slow_api_server_gives_503() {
    let users = ca("users-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("users-ca.crt");
    std::fs::write(&ca_path, &users.pem).unwrap();
    const TTL: Duration = Duration::from_secs(3);
    let s = setup(
        &[
            "--client-ca-file",
            ca_path.to_str().unwrap(),
            "--authorization-webhook-cache-authorized-ttl",
            "3s",
        ],
        |_, _| {},
    )
    .await;
    let url = format!("{}{PATH}", s.base);
    let frank = client(&s.server_ca, Some(&client_cert(&users, "frank", None)));
    let reviews_of = |user: &str| {
        s.api
            .access_reviews()
            .iter()
            .filter(|r| r["spec"]["user"] == user)
            .count()
    };

    // Allowed: one review, then the answer is reused.
    let started = Instant::now();
    for _ in 0..5 {
        let (status, body) = get(&frank, &url, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let burst = started.elapsed();
    let reviews = reviews_of("frank");
    if burst < TTL {
        assert_eq!(reviews, 1, "five requests within the TTL, one review");
    } else {
        // A very slow machine: at least the cache held within each TTL.
        assert!(reviews < 5, "{reviews} reviews for 5 requests in {burst:?}");
    }
    // After the TTL the answer is reviewed again (a revoked permission shows).
    s.api.deny_user("frank");
    let body = eventually(
        Duration::from_secs(20),
        "a new review after the allow TTL",
        || async {
            let (status, body) = get(&frank, &url, &[]).await;
            (status == 403).then_some(body)
        },
    )
    .await;
    assert!(reviews_of("frank") > reviews, "{body}");

    // The API server answers reviews slower than the server waits: 503
    // Status (the HPA retries), not a hang and not an allow.
    s.api.delay_reviews(Duration::from_secs(6));
    let grace = client(&s.server_ca, Some(&client_cert(&users, "grace", None)));
    let (status, body) = get(&grace, &url, &[]).await;
    assert_eq!(
        (status, body["kind"].as_str(), body["reason"].as_str()),
        (503, Some("Status"), Some("ServiceUnavailable")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("SubjectAccessReview"),
        "{body}"
    );
    // The failure is not cached: once the API server answers, grace is served.
    s.api.delay_reviews(Duration::ZERO);
    eventually(Duration::from_secs(20), "grace to be served", || async {
        let (status, _) = get(&grace, &url, &[]).await;
        (status == 200).then_some(())
    })
    .await;
}

/// Overload: with the API server answering SubjectAccessReviews slowly,
/// requests stay in flight (authorization is the one step of a request
/// that may wait on the network, bounded by its own timeout); beyond
/// `--max-concurrent-requests` the excess is shed at once as a 503 Status
/// that says so, and service resumes when the API server does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_as_503_and_service_resumes() {
    let users = ca("users-ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("users-ca.crt");
    std::fs::write(&ca_path, &users.pem).unwrap();
    let s = setup(
        &[
            "--client-ca-file",
            ca_path.to_str().unwrap(),
            "--max-concurrent-requests",
            "2",
        ],
        |_, _| {},
    )
    .await;
    let url = format!("{}{PATH}", s.base);
    s.api.delay_reviews(Duration::from_secs(3));
    let mut tasks = Vec::new();
    for i in 0..8 {
        // Distinct users: no review answer is shared between them.
        let c = client(
            &s.server_ca,
            Some(&client_cert(&users, &format!("user-{i}"), None)),
        );
        let url = url.clone();
        tasks.push(tokio::spawn(async move { get(&c, &url, &[]).await }));
    }
    let mut shed = 0;
    let mut answers = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 503, "every answer is a 503 here: {body}");
        assert_eq!(
            (body["kind"].as_str(), body["reason"].as_str()),
            (Some("Status"), Some("ServiceUnavailable")),
            "{body}"
        );
        if body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too many requests")
        {
            shed += 1;
        }
        answers.push(body["message"].clone());
    }
    // Two admitted requests waited for their reviews (and timed out on
    // them); the others were shed without waiting.
    assert!(shed >= 4, "the excess is shed: {answers:?}");
    assert!(shed < 8, "some requests were admitted: {answers:?}");
    s.api.delay_reviews(Duration::ZERO);
    let c = client(&s.server_ca, Some(&client_cert(&users, "after", None)));
    eventually(
        Duration::from_secs(20),
        "service after the overload",
        || async { (get(&c, &url, &[]).await.0 == 200).then_some(()) },
    )
    .await;
}
