//! Who is asking: the pure parts of authentication (request-header
//! parsing, allowed names, user from a client certificate).

use std::collections::BTreeMap;

use http::HeaderMap;

/// The authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

pub const ANONYMOUS: &str = "system:anonymous";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.to_owned(),
            groups: vec![UNAUTHENTICATED.to_owned()],
            extra: BTreeMap::new(),
        }
    }

    /// Adds `system:authenticated`, as every authenticator does.
    pub fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.to_owned());
        }
        self
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }
}

/// Header names of the front-proxy (request-header) authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderNames {
    pub username: Vec<String>,
    pub group: Vec<String>,
    pub extra_prefix: Vec<String>,
    /// Common names allowed to act as the front proxy; empty = any signed by the CA.
    pub allowed_names: Vec<String>,
}

impl Default for RequestHeaderNames {
    fn default() -> Self {
        RequestHeaderNames {
            username: vec!["X-Remote-User".into()],
            group: vec!["X-Remote-Group".into()],
            extra_prefix: vec!["X-Remote-Extra-".into()],
            allowed_names: Vec::new(),
        }
    }
}

impl RequestHeaderNames {
    /// Whether a proxy certificate with this common name may assert users.
    pub fn name_allowed(&self, common_name: &str) -> bool {
        self.allowed_names.is_empty() || self.allowed_names.iter().any(|n| n == common_name)
    }

    /// The user the front proxy asserts: the first non-empty username
    /// header; every value of the group headers; extra keys lower-cased and
    /// URL-unescaped. None when no username header is set.
    pub fn user(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let name = self
            .username
            .iter()
            .filter_map(|h| headers.get(h.as_str()))
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .find(|v| !v.is_empty())?
            .to_owned();
        let groups = self
            .group
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in headers {
            let key = key.as_str();
            for prefix in &self.extra_prefix {
                let p = prefix.to_ascii_lowercase();
                if let Some(rest) = key.strip_prefix(p.as_str()) {
                    let k = percent_encoding::percent_decode_str(rest)
                        .decode_utf8_lossy()
                        .to_lowercase();
                    if let Ok(v) = value.to_str() {
                        extra.entry(k).or_default().push(v.to_owned());
                    }
                }
            }
        }
        Some(UserInfo {
            name,
            groups,
            extra,
        })
    }
}

/// User = CN, groups = O of a client certificate (as Kubernetes' x509 authenticator).
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo {
        name,
        groups,
        extra: BTreeMap::new(),
    })
}

/// The common name of a certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_headers_give_the_user() {
        let names = RequestHeaderNames::default();
        let u = names
            .user(&headers(&[
                (
                    "X-Remote-User",
                    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                ),
                ("X-Remote-Group", "system:serviceaccounts"),
                ("X-Remote-Group", "system:serviceaccounts:kube-system"),
                ("X-Remote-Extra-Scopes", "a"),
                ("X-Remote-Extra-Scopes", "b"),
                (
                    "X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name",
                    "p",
                ),
            ]))
            .unwrap();
        assert_eq!(
            u.name,
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
        );
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system"
            ]
        );
        assert_eq!(u.extra["scopes"], ["a", "b"]);
        assert_eq!(u.extra["authentication.kubernetes.io/pod-name"], ["p"]);
        assert_eq!(
            names.user(&headers(&[("X-Remote-Group", "g")])),
            None,
            "no user header, no user"
        );
        assert_eq!(names.user(&headers(&[("X-Remote-User", " ")])), None);
    }

    #[test]
    fn allowed_names() {
        let mut names = RequestHeaderNames::default();
        assert!(
            names.name_allowed("anything"),
            "empty list allows any name signed by the CA"
        );
        names.allowed_names = vec!["front-proxy-client".into(), "aggregator".into()];
        let cases = [
            ("front-proxy-client", true),
            ("aggregator", true),
            ("mallory", false),
            ("", false),
        ];
        for (cn, ok) in cases {
            assert_eq!(names.name_allowed(cn), ok, "{cn}");
        }
    }

    #[test]
    fn anonymous_and_authenticated_groups() {
        let a = UserInfo::anonymous();
        assert!(a.is_anonymous());
        assert_eq!(a.groups, [UNAUTHENTICATED]);
        let u = UserInfo {
            name: "alice".into(),
            groups: vec!["dev".into()],
            extra: BTreeMap::new(),
        }
        .authenticated();
        assert_eq!(u.groups, ["dev", AUTHENTICATED]);
    }
}
