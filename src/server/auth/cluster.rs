//! The trust configuration from the cluster: ConfigMap
//! `kube-system/extension-apiserver-authentication`, which kube-apiserver
//! keeps current, followed with a watch.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::handshake::ca_verifier;
use super::{Auth, AuthConfig, RequestHeaderAuth, RequestHeaderNames};

pub(crate) const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "extension-apiserver-authentication";

fn json_list(data: &BTreeMap<String, String>, key: &str) -> Result<Option<Vec<String>>, String> {
    match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => serde_json::from_str(v)
            .map(Some)
            .map_err(|e| format!("{key} is not a JSON list of strings: {e}")),
    }
}

/// Builds the trust configuration from the ConfigMap's data. Pure.
pub(crate) fn config_from_data(data: &BTreeMap<String, String>) -> Result<AuthConfig, String> {
    let request_header = match data.get("requestheader-client-ca-file") {
        None => None,
        Some(pem) => {
            let d = RequestHeaderNames::default();
            let names = RequestHeaderNames {
                username: json_list(data, "requestheader-username-headers")?.unwrap_or(d.username),
                uid: json_list(data, "requestheader-uid-headers")?.unwrap_or(d.uid),
                group: json_list(data, "requestheader-group-headers")?.unwrap_or(d.group),
                extra_prefix: json_list(data, "requestheader-extra-headers-prefix")?
                    .unwrap_or(d.extra_prefix),
                allowed_names: json_list(data, "requestheader-allowed-names")?.unwrap_or_default(),
            };
            Some(RequestHeaderAuth {
                ca: ca_verifier(pem.as_bytes())
                    .map_err(|e| format!("requestheader-client-ca-file: {e}"))?,
                names,
            })
        }
    };
    let client_ca = match data.get("client-ca-file") {
        None => None,
        Some(pem) => Some(ca_verifier(pem.as_bytes()).map_err(|e| format!("client-ca-file: {e}"))?),
    };
    Ok(AuthConfig {
        request_header,
        client_ca,
    })
}

/// Follows the ConfigMap; a version that does not parse keeps the previous
/// configuration and logs why.
pub(crate) fn watch(
    client: kube::Client,
    auth: Arc<Auth>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    crate::kube_client::configmap::watch_configmap(
        client,
        NAMESPACE,
        NAME,
        shutdown,
        move |cm: ConfigMap| match config_from_data(&cm.data.unwrap_or_default()) {
            Ok(c) => {
                tracing::info!(
                    front_proxy = c.request_header.is_some(),
                    client_ca = c.client_ca.is_some(),
                    "authentication configuration loaded from {NAMESPACE}/{NAME}"
                );
                auth.set_config(c);
            }
            Err(e) => {
                tracing::error!(error = %e, "{NAMESPACE}/{NAME} is not usable; keeping the previous configuration")
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn reads_the_configmap_keys() {
        let pem = ca_pem();
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", pem.as_str()),
            ("requestheader-allowed-names", "[\"front-proxy-client\"]"),
            ("requestheader-username-headers", "[\"X-Remote-User\"]"),
            ("requestheader-uid-headers", "[\"X-Remote-Uid\"]"),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
            (
                "requestheader-extra-headers-prefix",
                "[\"X-Remote-Extra-\"]",
            ),
            ("client-ca-file", pem.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = config_from_data(&data).unwrap();
        let rh = c.request_header.unwrap();
        assert_eq!(rh.names.allowed_names, ["front-proxy-client"]);
        assert_eq!(rh.names.username, ["X-Remote-User"]);
        assert_eq!(rh.names.uid, ["X-Remote-Uid"]);
        assert!(c.client_ca.is_some());

        let empty = config_from_data(&BTreeMap::new()).unwrap();
        assert!(empty.request_header.is_none() && empty.client_ca.is_none());
        let mut bad = data.clone();
        bad.insert(
            "requestheader-allowed-names".into(),
            "front-proxy-client".into(),
        );
        assert!(config_from_data(&bad)
            .unwrap_err()
            .contains("requestheader-allowed-names"));
        bad = data;
        bad.insert("client-ca-file".into(), "not pem".into());
        assert!(config_from_data(&bad)
            .unwrap_err()
            .contains("client-ca-file"));
    }
}
