//! Who a request is, exactly as Kubernetes' delegated authentication
//! decides it, case by case against the in-process API server (TokenReview,
//! SubjectAccessReview) and a real `serve` process with real certificates:
//! the SubjectAccessReview each request causes shows the identity the
//! server settled on.

mod common;

use std::time::Duration;

use common::apiserver::ApiServer;
use common::{eventually, free_port, make_pki, Proc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A client certificate signed by `ca` with these subject attributes.
fn client_cert(ca: &Ca, subject: &[(DnType, &str)]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client(server_ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    wva_metrics_server::install_crypto_provider();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

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
    let pki = make_pki(dir.path());
    let front_proxy = ca("front-proxy-ca");
    let client_ca = ca("client-ca");
    let other_ca = ca("other-ca");
    let fp_path = dir.path().join("front-proxy-ca.crt");
    let cc_path = dir.path().join("client-ca.crt");
    std::fs::write(&fp_path, &front_proxy.pem).unwrap();
    std::fs::write(&cc_path, &client_ca.pem).unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let port = free_port();
    let _serve = Proc::spawn_with(
        "serve",
        &[
            "serve",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
            "--tls-cert-file",
            pki.cert_path.to_str().unwrap(),
            "--tls-private-key-file",
            pki.key_path.to_str().unwrap(),
            "--inventory",
            "kube",
            "--metrics-backend",
            "scrape",
            "--requestheader-client-ca-file",
            fp_path.to_str().unwrap(),
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--requestheader-uid-headers",
            "X-Remote-Uid",
            "--client-ca-file",
            cc_path.to_str().unwrap(),
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        Some(&dir.path().join("serve.log")),
    );
    let base = format!("https://127.0.0.1:{port}");
    let plain = client(&pki.ca_pem, None);
    eventually(Duration::from_secs(30), "serve to become ready", || async {
        plain
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;

    let proxy = client_cert(&front_proxy, &[(CN, "front-proxy-client")]);
    // rcgen keeps one value per attribute type: the second CN goes under
    // the same OID (2.5.4.3) as a custom type.
    let two_cns = client_cert(
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
            identity: Some(client_cert(&other_ca, &[(CN, "mallory")])),
            headers: vec![("X-Remote-User", "mallory")],
            review: None,
        },
        Case {
            name: "front-proxy certificate with a name not allowed: 401",
            identity: Some(client_cert(&front_proxy, &[(CN, "not-the-proxy")])),
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
        let c = client(&pki.ca_pem, case.identity.as_ref());
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
    let c = client(&pki.ca_pem, Some(&proxy));
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
