//! Who a request is, exactly as Kubernetes' delegated authentication
//! decides it, case by case against the in-process API server (TokenReview,
//! SubjectAccessReview) and a real `serve` process with real certificates:
//! the SubjectAccessReview each request causes shows the identity the
//! server settled on.

mod common;

use common::apiserver::ApiServer;
use common::pki::{ca, client, client_cert_with_subject, serve_kube};
use rcgen::DnType;
use serde_json::{json, Value};

const CN: DnType = DnType::CommonName;

struct Case {
    name: &'static str,
    identity: Option<(String, String)>,
    headers: Vec<(&'static str, &'static str)>,
    /// None: 401 and no review. Some: the review's spec (user, uid, groups, extra).
    review: Option<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_the_ones_kubernetes_would_give() {
    let api = ApiServer::start().await;
    api.add_token_user(
        "tok-erin",
        json!({"username": "erin", "uid": "uid-erin", "groups": ["token-users", ""],
               "extra": {"": ["x"], "k": ["v"]}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let front_proxy = ca("front-proxy-ca");
    let client_ca = ca("client-ca");
    let other_ca = ca("other-ca");
    let fp_path = dir.path().join("front-proxy-ca.crt");
    let cc_path = dir.path().join("client-ca.crt");
    std::fs::write(&fp_path, &front_proxy.pem).unwrap();
    std::fs::write(&cc_path, &client_ca.pem).unwrap();
    let serve = serve_kube(
        &api,
        dir.path(),
        &[
            "--requestheader-client-ca-file",
            fp_path.to_str().unwrap(),
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--requestheader-uid-headers",
            "X-Remote-Uid",
            "--client-ca-file",
            cc_path.to_str().unwrap(),
        ],
    )
    .await;
    let base = &serve.base;
    let server_ca = &serve.server_ca;

    let proxy = client_cert_with_subject(&front_proxy, &[(CN, "front-proxy-client")]);
    // rcgen keeps one value per attribute type: the second CN goes under
    // the same OID (2.5.4.3) as a custom type.
    let two_cns = client_cert_with_subject(
        &client_ca,
        &[
            (CN, "first"),
            (DnType::OrganizationName, "team"),
            (DnType::CustomDnType(vec![2, 5, 4, 3]), "last"),
        ],
    );
    let cases = vec![
        Case {
            name: "front-proxied anonymous keeps only system:unauthenticated",
            identity: Some(proxy.clone()),
            headers: vec![
                ("X-Remote-User", "system:anonymous"),
                ("X-Remote-Group", "system:unauthenticated"),
            ],
            review: Some(
                json!({"user": "system:anonymous", "groups": ["system:unauthenticated"], "extra": {}}),
            ),
        },
        Case {
            name: "a user in system:unauthenticated gets no system:authenticated",
            identity: Some(proxy.clone()),
            headers: vec![
                ("X-Remote-User", "carol"),
                ("X-Remote-Group", "system:unauthenticated"),
            ],
            review: Some(
                json!({"user": "carol", "groups": ["system:unauthenticated"], "extra": {}}),
            ),
        },
        Case {
            name: "front-proxied UID kept, empty group and empty extra key dropped",
            identity: Some(proxy.clone()),
            headers: vec![
                ("X-Remote-User", "dave"),
                ("X-Remote-Uid", "uid-dave"),
                ("X-Remote-Group", ""),
                ("X-Remote-Group", "dev"),
                ("X-Remote-Extra-", "x"),
                ("X-Remote-Extra-Scopes", "s"),
            ],
            review: Some(json!({"user": "dave", "uid": "uid-dave",
                "groups": ["dev", "system:authenticated"], "extra": {"scopes": ["s"]}})),
        },
        Case {
            name: "client certificate: the last CN is the user",
            identity: Some(two_cns),
            headers: vec![],
            review: Some(
                json!({"user": "last", "groups": ["team", "system:authenticated"], "extra": {}}),
            ),
        },
        Case {
            name: "client certificate no CA verifies: 401",
            identity: Some(client_cert_with_subject(&other_ca, &[(CN, "mallory")])),
            headers: vec![("X-Remote-User", "mallory")],
            review: None,
        },
        Case {
            name: "front-proxy certificate with a name not allowed: 401",
            identity: Some(client_cert_with_subject(
                &front_proxy,
                &[(CN, "not-the-proxy")],
            )),
            headers: vec![("X-Remote-User", "mallory")],
            review: None,
        },
        Case {
            name: "lower-case bearer; TokenReview's UID kept, empty group and extra key dropped",
            identity: None,
            headers: vec![("Authorization", "bearer tok-erin")],
            review: Some(json!({"user": "erin", "uid": "uid-erin",
                "groups": ["token-users", "system:authenticated"], "extra": {"k": ["v"]}})),
        },
        Case {
            name: "a token TokenReview rejects: 401",
            identity: None,
            headers: vec![("Authorization", "Bearer nope")],
            review: None,
        },
        Case {
            name: "no credentials: anonymous",
            identity: None,
            headers: vec![],
            review: Some(
                json!({"user": "system:anonymous", "groups": ["system:unauthenticated"], "extra": {}}),
            ),
        },
        Case {
            name: "not a bearer header: anonymous, as Kubernetes reads it",
            identity: None,
            headers: vec![("Authorization", "Basic ZXJpbjpwdw==")],
            review: Some(
                json!({"user": "system:anonymous", "groups": ["system:unauthenticated"], "extra": {}}),
            ),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        // Each case asks in its own namespace, which names its review.
        let ns = format!("case-{i}");
        let url = format!(
            "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/wva_desired_replicas?labelSelector=target_name%3Dx"
        );
        let c = client(server_ca, case.identity.as_ref());
        let mut req = c.get(&url);
        for (k, v) in &case.headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or_default();
        let reviews: Vec<Value> = api
            .access_reviews()
            .into_iter()
            .filter(|r| r["spec"]["resourceAttributes"]["namespace"] == json!(ns))
            .collect();
        match &case.review {
            None => {
                assert_eq!(
                    (status, body["reason"].as_str()),
                    (401, Some("Unauthorized")),
                    "{}: {body}",
                    case.name
                );
                assert!(reviews.is_empty(), "{}: no review for a 401", case.name);
            }
            Some(want) => {
                assert!(
                    status != 401 && status != 403,
                    "{}: {status} {body}",
                    case.name
                );
                assert_eq!(reviews.len(), 1, "{}", case.name);
                let spec = &reviews[0]["spec"];
                let got = json!({
                    "user": spec["user"],
                    "uid": spec["uid"],
                    "groups": spec["groups"],
                    "extra": spec["extra"],
                });
                let mut want = want.clone();
                if want["uid"].is_null() {
                    want["uid"] = Value::Null;
                }
                assert_eq!(got, want, "{}", case.name);
            }
        }
    }

    // The UID is part of the review cache key: the same name with another
    // UID is a different user and gets its own review.
    let c = client(server_ca, Some(&proxy));
    let url = format!(
        "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/uids/wva_desired_replicas?labelSelector=target_name%3Dx"
    );
    for uid in ["u1", "u2", "u1", "u2"] {
        let r = c
            .get(&url)
            .header("X-Remote-User", "frank")
            .header("X-Remote-Uid", uid)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status().as_u16(), 403);
    }
    let uids: Vec<Value> = api
        .access_reviews()
        .into_iter()
        .filter(|r| r["spec"]["resourceAttributes"]["namespace"] == "uids")
        .map(|r| r["spec"]["uid"].clone())
        .collect();
    assert_eq!(
        uids,
        [json!("u1"), json!("u2")],
        "one review per UID, then cached"
    );
}
