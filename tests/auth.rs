//! Authentication and authorization as an aggregated API server: the
//! front proxy's client certificate, request headers trusted only from it,
//! SubjectAccessReview for every metric request, cached. Real certificates,
//! a real `serve` process, reviews answered by the in-process API server.

#![cfg(feature = "emulator")] // starts `emulate` replicas (or uses the emulator's types)

mod common;

use std::time::Duration;

use common::apiserver::{three_replica_llama, ApiServer};
use common::pki::{ca, client, client_cert, serve_behind_front_proxy, Ca, FrontProxyServe};
use common::{eventually, Emulator, Proc};
use serde_json::json;

const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama-decode";
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

struct Setup {
    api: ApiServer,
    base: String,
    server_ca: String,
    front_proxy: Ca,
    dir: tempfile::TempDir,
    _serve: Proc,
    _emulators: Vec<Emulator>,
}

async fn setup() -> Setup {
    let api = ApiServer::start().await;
    let emulators = three_replica_llama(&api).await;
    let FrontProxyServe {
        serve,
        front_proxy,
        dir,
    } = serve_behind_front_proxy(
        &api,
        &[
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--authorization-webhook-cache-authorized-ttl",
            "30s",
            "--authorization-webhook-cache-unauthorized-ttl",
            "30s",
        ],
    )
    .await;
    Setup {
        api,
        base: serve.base,
        server_ca: serve.server_ca,
        front_proxy,
        dir,
        _serve: serve.proc,
        _emulators: emulators,
    }
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let mut r = c.get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_proxy_headers_are_trusted_only_from_the_allowed_proxy() {
    let s = setup().await;
    let url = format!("{}{PATH}", s.base);
    let headers = [
        ("X-Remote-User", HPA_USER),
        ("X-Remote-Group", "system:serviceaccounts"),
    ];

    let proxy = client_cert(&s.front_proxy, "front-proxy-client", None);
    let c = client(&s.server_ca, Some(&proxy));
    let (status, body) = eventually(
        Duration::from_secs(10),
        "the value through the front proxy",
        || async {
            let (status, body) = get(&c, &url, &headers).await;
            // The first answers may predate the first scrape (holding at 3).
            (status == 200 && body["items"][0]["value"] == "2").then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["value"], "2");
    let review = s
        .api
        .access_reviews()
        .into_iter()
        .find(|r| r["spec"]["user"] == HPA_USER)
        .expect("a review for the HPA user");
    let attrs = &review["spec"]["resourceAttributes"];
    assert_eq!(attrs["verb"], "list");
    assert_eq!(attrs["group"], "external.metrics.k8s.io");
    assert_eq!(attrs["resource"], "wva_desired_replicas");
    assert_eq!(attrs["namespace"], "llm");
    let groups = review["spec"]["groups"].as_array().unwrap();
    assert!(
        groups.contains(&json!("system:serviceaccounts"))
            && groups.contains(&json!("system:authenticated")),
        "{review}"
    );

    // The same headers are never trusted without the proxy's certificate:
    // without any certificate the request is anonymous (and denied); with a
    // certificate that does not verify, or a proxy name not allowed, it is
    // 401, as Kubernetes answers.
    let other_ca = ca("other-ca");
    let cases = [
        ("no client certificate", None, 403, "system:anonymous"),
        (
            "a certificate from another CA",
            Some(client_cert(&other_ca, "front-proxy-client", None)),
            401,
            "does not verify",
        ),
        (
            "a CN not in the allowed names",
            Some(client_cert(&s.front_proxy, "mallory", None)),
            401,
            "is not in the allowed names",
        ),
    ];
    for (what, identity, want, mention) in cases {
        let c = client(&s.server_ca, identity.as_ref());
        let (status, body) = get(&c, &url, &headers).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(body["kind"], "Status", "{what}");
        let message = body["message"].as_str().unwrap();
        if want == 401 {
            // As Kubernetes: the body says only "Unauthorized"; why is logged.
            assert_eq!(message, "Unauthorized", "{what}");
            // Refusals are logged at most once a second: ask again until
            // this one's reason shows.
            let log_path = s.dir.path().join("serve.log");
            eventually(Duration::from_secs(20), "the reason logged", || async {
                let _ = get(&c, &url, &headers).await;
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .contains(mention)
                    .then_some(())
            })
            .await;
        } else {
            assert!(message.contains(mention), "{what}: {message}");
        }
        assert!(
            !message.contains(HPA_USER),
            "{what}: the headers were ignored: {message}"
        );
    }

    // curl as a client with the proxy's certificate.
    let cert = s.dir.path().join("proxy.crt");
    let key = s.dir.path().join("proxy.key");
    std::fs::write(&cert, &proxy.0).unwrap();
    std::fs::write(&key, &proxy.1).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(s.dir.path().join("ca.crt"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-H", &format!("X-Remote-User: {HPA_USER}"), &url])
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["items"][0]["value"], "2", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_name_who_and_what_and_reviews_are_cached() {
    let s = setup().await;
    let url = format!("{}{PATH}", s.base);
    let proxy = client_cert(&s.front_proxy, "front-proxy-client", None);
    let c = client(&s.server_ca, Some(&proxy));
    s.api.deny_user("alice");
    let (status, body) = eventually(Duration::from_secs(10), "a 403 for alice", || async {
        let (status, body) = get(&c, &url, &[("X-Remote-User", "alice")]).await;
        (status == 403).then_some((status, body))
    })
    .await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("Forbidden")));
    let message = body["message"].as_str().unwrap();
    for part in ["alice", "list", "wva_desired_replicas", "llm"] {
        assert!(message.contains(part), "message names {part}: {message}");
    }
    let alice_reviews = || {
        s.api
            .access_reviews()
            .iter()
            .filter(|r| r["spec"]["user"] == "alice")
            .count()
    };
    let reviews = alice_reviews();
    for _ in 0..5 {
        let (status, _) = get(&c, &url, &[("X-Remote-User", "alice")]).await;
        assert_eq!(status, 403);
    }
    assert_eq!(
        alice_reviews(),
        reviews,
        "repeated requests within the cache time make no second review"
    );

    // A bearer token reviewed by TokenReview; a bad one is 401.
    s.api.add_token("good-token", "bob");
    let plain = client(&s.server_ca, None);
    // Readiness means the first fetch cycle ran, which may precede the
    // model's first data ("not fetched yet", 503): wait past that; the
    // token's outcome is what is asserted.
    let (status, body) = eventually(
        Duration::from_secs(10),
        "bob's request past 503",
        || async {
            let (status, body) = get(&plain, &url, &[("Authorization", "Bearer good-token")]).await;
            (status != 503).then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&plain, &url, &[("Authorization", "Bearer bad-token")]).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    // Health checks need nothing.
    let (status, _) = get(&plain, &format!("{}/healthz", s.base), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_metrics_are_reviewed_as_the_described_object_s_subresource() {
    let s = setup().await;
    let url = format!(
        "{}/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/deployments.apps/llama-decode/wva_desired_replicas",
        s.base
    );
    let proxy = client_cert(&s.front_proxy, "front-proxy-client", None);
    let c = client(&s.server_ca, Some(&proxy));
    let headers = [("X-Remote-User", "custom-reader")];
    let (status, body) = eventually(
        Duration::from_secs(10),
        "the Object metric through the front proxy",
        || async {
            let (status, body) = get(&c, &url, &headers).await;
            (status == 200 && body["items"][0]["value"] == "2").then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let review = s
        .api
        .access_reviews()
        .into_iter()
        .find(|r| r["spec"]["user"] == "custom-reader")
        .expect("a review for the reader");
    let attrs = &review["spec"]["resourceAttributes"];
    assert_eq!(attrs["verb"], "get");
    assert_eq!(attrs["group"], "custom.metrics.k8s.io");
    assert_eq!(attrs["version"], "v1beta2");
    assert_eq!(attrs["resource"], "deployments.apps");
    assert_eq!(attrs["name"], "llama-decode");
    assert_eq!(attrs["subresource"], "wva_desired_replicas");
    assert_eq!(attrs["namespace"], "llm");

    // A denied user is told what it may not read.
    s.api.deny_user("custom-denied");
    let (status, body) = get(&c, &url, &[("X-Remote-User", "custom-denied")]).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("Forbidden")));
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("deployments.apps/wva_desired_replicas")
            && message.contains("custom.metrics.k8s.io"),
        "{message}"
    );
}
