//! Discovery documents. They are built once at start-up and never depend on
//! Prometheus or the cluster cache: the aggregator probes them every 30 s and
//! marks the whole APIService unavailable on any failure.

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIGroup, APIGroupList, APIResource, APIResourceList, GroupVersionForDiscovery,
};
use k8s_openapi::apimachinery::pkg::version::Info;
use serde_json::json;

use super::custom::{self, CustomVersion};
use super::metrics::SERVED_NAMES;

pub(crate) const GROUP: &str = "external.metrics.k8s.io";
pub(crate) const VERSION: &str = "v1beta1";
pub(crate) const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";

/// Which API groups this server serves (`--api-groups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedGroups {
    pub(crate) external: bool,
    pub(crate) custom: bool,
}

impl Default for ServedGroups {
    fn default() -> Self {
        ServedGroups {
            external: true,
            custom: true,
        }
    }
}

/// Pre-serialised discovery bodies.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryDocuments {
    pub(crate) groups: ServedGroups,
    pub(crate) api_group_list: Bytes,
    pub(crate) api_group: Bytes,
    pub(crate) api_resource_list: Bytes,
    pub(crate) version: Bytes,
    pub(crate) openapi_v2: Bytes,
    pub(crate) openapi_v3_root: Bytes,
    pub(crate) openapi_v3_group: Bytes,
    pub(crate) custom_api_group: Bytes,
    pub(crate) custom_v1beta1: Bytes,
    pub(crate) custom_v1beta2: Bytes,
}

fn group() -> APIGroup {
    let gv = GroupVersionForDiscovery {
        group_version: GROUP_VERSION.to_owned(),
        version: VERSION.to_owned(),
    };
    APIGroup {
        name: GROUP.to_owned(),
        preferred_version: Some(gv.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![gv],
    }
}

/// The APIResourceList: one resource per served metric name (never empty).
pub(crate) fn resource_list() -> APIResourceList {
    APIResourceList {
        group_version: GROUP_VERSION.to_owned(),
        resources: SERVED_NAMES
            .iter()
            .map(|(name, _)| APIResource {
                name: (*name).to_owned(),
                singular_name: String::new(),
                namespaced: true,
                kind: "ExternalMetricValueList".to_owned(),
                verbs: vec!["get".to_owned()],
                ..Default::default()
            })
            .collect(),
    }
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Bytes {
    // The documents are built from constant data; serialising them cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl DiscoveryDocuments {
    /// The documents of a server that serves both groups.
    #[cfg(test)]
    pub(crate) fn build() -> Self {
        Self::build_for(ServedGroups::default())
    }

    /// The documents of a server that serves `groups`.
    pub(crate) fn build_for(groups: ServedGroups) -> Self {
        let version = Info {
            major: "0".to_owned(),
            minor: "1".to_owned(),
            git_version: format!("v{}", env!("CARGO_PKG_VERSION")),
            platform: format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
            compiler: "rustc".to_owned(),
            ..Default::default()
        };
        let openapi_v2 = json!({
            "swagger": "2.0",
            "info": {"title": "wva-metrics-server", "version": env!("CARGO_PKG_VERSION")},
            "paths": {},
            "definitions": {}
        });
        let mut paths = serde_json::Map::new();
        let mut group_versions = Vec::new();
        if groups.external {
            group_versions.push(GROUP_VERSION.to_owned());
        }
        if groups.custom {
            group_versions.extend(
                CustomVersion::ALL
                    .iter()
                    .map(|v| v.group_version().to_owned()),
            );
        }
        for gv in group_versions {
            paths.insert(
                format!("apis/{gv}"),
                json!({"serverRelativeURL": format!("/openapi/v3/apis/{gv}")}),
            );
        }
        let openapi_v3_root = json!({ "paths": paths });
        let mut served = Vec::new();
        if groups.external {
            served.push(group());
        }
        if groups.custom {
            served.push(custom::api_group());
        }
        let openapi_v3_group = json!({
            "openapi": "3.0.0",
            "info": {"title": "wva-metrics-server", "version": env!("CARGO_PKG_VERSION")},
            "paths": {},
            "components": {}
        });
        DiscoveryDocuments {
            groups,
            api_group_list: to_bytes(&APIGroupList { groups: served }),
            api_group: to_bytes(&group()),
            api_resource_list: to_bytes(&resource_list()),
            version: to_bytes(&version),
            openapi_v2: to_bytes(&openapi_v2),
            openapi_v3_root: to_bytes(&openapi_v3_root),
            openapi_v3_group: to_bytes(&openapi_v3_group),
            custom_api_group: to_bytes(&custom::api_group()),
            custom_v1beta1: to_bytes(&custom::resource_list(CustomVersion::V1beta1)),
            custom_v1beta2: to_bytes(&custom::resource_list(CustomVersion::V1beta2)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_list_follows_the_served_groups() {
        let names = |g: ServedGroups| -> Vec<String> {
            let d = DiscoveryDocuments::build_for(g);
            let v: serde_json::Value = serde_json::from_slice(&d.api_group_list).unwrap();
            v["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(ServedGroups::default()),
            ["external.metrics.k8s.io", "custom.metrics.k8s.io"]
        );
        assert_eq!(
            names(ServedGroups {
                external: false,
                custom: true
            }),
            ["custom.metrics.k8s.io"]
        );
        let d = DiscoveryDocuments::build_for(ServedGroups {
            external: true,
            custom: false,
        });
        let root: serde_json::Value = serde_json::from_slice(&d.openapi_v3_root).unwrap();
        assert_eq!(root["paths"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn documents_have_kubernetes_kinds() {
        let d = DiscoveryDocuments::build();
        let list: serde_json::Value = serde_json::from_slice(&d.api_group_list).unwrap();
        assert_eq!(list["kind"], "APIGroupList");
        assert_eq!(list["groups"][0]["name"], GROUP);
        assert_eq!(
            list["groups"][0]["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
        let group: serde_json::Value = serde_json::from_slice(&d.api_group).unwrap();
        assert_eq!(group["kind"], "APIGroup");
        let res: serde_json::Value = serde_json::from_slice(&d.api_resource_list).unwrap();
        assert_eq!(res["kind"], "APIResourceList");
        assert_eq!(res["groupVersion"], GROUP_VERSION);
        let names: Vec<&str> = res["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"wva_desired_ratio"));
        assert!(names.contains(&"inferno_desired_ratio"));
        for r in res["resources"].as_array().unwrap() {
            assert_eq!(r["namespaced"], true);
            assert_eq!(r["kind"], "ExternalMetricValueList");
            assert_eq!(r["verbs"], serde_json::json!(["get"]));
        }
    }
}
