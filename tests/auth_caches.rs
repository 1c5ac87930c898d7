//! The authentication caches against a hostile client, on a real `serve`
//! process with TokenReview answered by the in-process API server:
//! thousands of distinct large tokens cost neither memory nor TokenReviews,
//! concurrent requests with one unknown token share a review, a rejected
//! token is reviewed again once its TTL has passed, and valid tokens keep
//! working throughout.

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::eventually;
use common::pki::{client_with_timeout, serve_kube, KubeServe};
use futures::StreamExt;

const DISCOVERY: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// `serve` with TokenReview answers cached for 1 s, and a client for it (30 s timeout).
async fn serve_with_token_cache(
    api: &ApiServer,
    dir: &std::path::Path,
) -> (KubeServe, reqwest::Client) {
    let serve = serve_kube(
        api,
        dir,
        &[
            "--authentication-skip-lookup",
            "--authentication-token-webhook-cache-ttl",
            "1s",
        ],
    )
    .await;
    let c = client_with_timeout(&serve.server_ca, None, Duration::from_secs(30));
    (serve, c)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

async fn status_with_token(c: &reqwest::Client, url: &str, token: &str) -> u16 {
    c.get(url)
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A token of `len` bytes that differs for every `i`.
fn token(i: usize, len: usize) -> String {
    let head = format!("t{i:08}-");
    head.clone() + &"x".repeat(len - head.len())
}

fn count_reviews_of(api: &ApiServer, token: &str) -> usize {
    api.token_reviews()
        .iter()
        .filter(|r| r["spec"]["token"] == token)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_cost_no_memory_and_no_reviews() {
    let api = ApiServer::start().await;
    api.add_token("good-token", "bob");
    let dir = tempfile::tempdir().unwrap();
    let (serve, c) = serve_with_token_cache(&api, dir.path()).await;
    let pid = serve.proc.child.id();
    let url = format!("{}{DISCOVERY}", serve.base);
    assert_eq!(status_with_token(&c, &url, "good-token").await, 200);

    // 3,000 distinct 60 KB tokens: 401 at once, no TokenReview, no memory.
    let before = rss_kib(pid);
    let reviews_before = api.token_reviews().len();
    let statuses: Vec<u16> = futures::stream::iter(0..3_000)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            async move { status_with_token(&c, &url, &token(i, 60_000)).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every oversize token is 401"
    );
    assert_eq!(
        api.token_reviews().len(),
        reviews_before,
        "no TokenReview for a token over 8 KiB"
    );
    let grown = rss_kib(pid).saturating_sub(before);
    println!("RSS grew by {grown} KiB over 3,000 distinct 60 KB tokens");
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");

    // 3,000 distinct tokens just under the limit: one review each (they are
    // rejected), cached under a 32-byte digest instead of the token.
    let before = rss_kib(pid);
    let statuses: Vec<u16> = futures::stream::iter(0..3_000)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            async move { status_with_token(&c, &url, &token(i, 8 * 1024)).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 401));
    assert_eq!(api.token_reviews().len(), reviews_before + 3_000);
    let grown = rss_kib(pid).saturating_sub(before);
    println!("RSS grew by {grown} KiB over 3,000 distinct 8 KiB tokens");
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");

    // The valid token is still served.
    assert_eq!(status_with_token(&c, &url, "good-token").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_review_per_token_and_ttl_then_a_fresh_one() {
    let api = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (serve, c) = serve_with_token_cache(&api, dir.path()).await;
    let url = format!("{}{DISCOVERY}", serve.base);

    // 20 requests at once with one unknown token, while TokenReview is slow.
    api.set_token_review_delay(Duration::from_millis(500));
    let statuses: Vec<u16> =
        futures::future::join_all((0..20).map(|_| status_with_token(&c, &url, "late-token"))).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(
        count_reviews_of(&api, "late-token"),
        1,
        "concurrent requests share one TokenReview"
    );
    api.set_token_review_delay(Duration::ZERO);

    // The token becomes valid; the rejection is reused until its TTL
    // (1 s here) passes, then the token is reviewed again and accepted.
    api.add_token("late-token", "carol");
    let status = eventually(
        Duration::from_secs(15),
        "the rejection to expire",
        || async {
            let s = status_with_token(&c, &url, "late-token").await;
            (s == 200).then_some(s)
        },
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        count_reviews_of(&api, "late-token"),
        2,
        "one more review after the TTL, none before"
    );
}
