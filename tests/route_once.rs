//! Issue 29: a request's route is parsed once. The routing layer parses the
//! method, path and query into an owned request kept in the request's
//! extensions; authentication, authorization and the handlers read it
//! there. `wva_routes_parsed_total` counts every parse in the process, so
//! over a run of requests through all the layers (a front proxy's user,
//! SubjectAccessReviews answered by the in-process API server) it grows by
//! exactly the number of requests.

#![cfg(feature = "emulator")] // starts `emulate` replicas

mod common;

use std::time::Duration;

use common::apiserver::{three_replica_llama, ApiServer};
use common::eventually;
use common::pki::{client, client_cert, serve_behind_front_proxy, FrontProxyServe};

const EXTERNAL: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=target_name%3Dllama-decode";

/// The counter's value in a `/metrics` page.
fn routes_parsed(page: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix("wva_routes_parsed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wva_routes_parsed_total in:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_parsed_once_through_authentication_authorization_and_handler() {
    let api = ApiServer::start().await;
    let _emulators = three_replica_llama(&api).await;
    let FrontProxyServe {
        serve,
        front_proxy,
        dir: _dir,
    } = serve_behind_front_proxy(
        &api,
        &["--requestheader-allowed-names", "front-proxy-client"],
    )
    .await;
    let proxy = client_cert(&front_proxy, "front-proxy-client", None);
    let c = client(&serve.server_ca, Some(&proxy));
    let get = |path: &str, user: &'static str| {
        let r = c
            .get(format!("{}{path}", serve.base))
            .header("X-Remote-User", user);
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    // Past the first data: the values request below answers 200.
    eventually(Duration::from_secs(20), "llama-decode's values", || async {
        (get(EXTERNAL, "hpa").await.0 == 200).then_some(())
    })
    .await;
    api.deny_user("mallory");

    let (status, page) = get("/metrics", "hpa").await;
    assert_eq!(status, 200, "{page}");
    let before = routes_parsed(&page);
    // Every kind of request, through every layer: values (external, Object,
    // Pods), discovery, a 400 from the handler (a bad selector), a 403 from
    // authorization, a 404 and a 405 from routing, a health check that
    // skips authentication.
    let requests: [(&str, &str, u16); 10] = [
        (EXTERNAL, "hpa", 200),
        (
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/deployments.apps/llama-decode/wva_desired_replicas",
            "hpa",
            200,
        ),
        (
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/llm/pods/*/vllm_kv_cache_usage",
            "hpa",
            200,
        ),
        ("/apis", "hpa", 200),
        ("/apis/custom.metrics.k8s.io/v1beta1", "hpa", 200),
        (
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/wva_desired_replicas?labelSelector=a%20in%20(",
            "hpa",
            400,
        ),
        (EXTERNAL, "mallory", 403),
        ("/apis/nothing.here", "hpa", 404),
        ("/healthz", "hpa", 200),
        ("/livez", "hpa", 200),
    ];
    for (path, user, want) in requests {
        let (status, body) = get(path, user).await;
        assert_eq!(status, want, "{user} {path}: {body}");
    }
    let post = c
        .post(format!("{}/apis", serve.base))
        .header("X-Remote-User", "hpa")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    let (status, page) = get("/metrics", "hpa").await;
    assert_eq!(status, 200, "{page}");
    // The ten requests, the POST, and this /metrics request itself (parsed
    // before its handler renders the page).
    assert_eq!(
        routes_parsed(&page) - before,
        requests.len() as u64 + 2,
        "one parse per request"
    );
}
