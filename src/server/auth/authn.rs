//! Who is asking: the pure parts of authentication (request-header
//! parsing, allowed names, user from a client certificate).

use std::collections::BTreeMap;

use http::HeaderMap;

/// The authenticated user, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct UserInfo {
    pub(crate) name: String,
    /// Kubernetes' user UID (from TokenReview or the front proxy's UID
    /// header); empty when unknown.
    pub(crate) uid: String,
    pub(crate) groups: Vec<String>,
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}

pub(crate) const ANONYMOUS: &str = "system:anonymous";
pub(crate) const UNAUTHENTICATED: &str = "system:unauthenticated";
pub(crate) const AUTHENTICATED: &str = "system:authenticated";
pub(crate) const MASTERS: &str = "system:masters";

impl UserInfo {
    pub(crate) fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.to_owned(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED.to_owned()],
            extra: BTreeMap::new(),
        }
    }

    /// Adds `system:authenticated` as Kubernetes' authenticated-group adder
    /// does: not to `system:anonymous`, and not to a user who already is in
    /// `system:authenticated` or in `system:unauthenticated` (a front proxy
    /// forwarding an anonymous request says so with that group).
    pub(crate) fn authenticated(mut self) -> Self {
        let marked = self
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED);
        if self.name != ANONYMOUS && !marked {
            self.groups.push(AUTHENTICATED.to_owned());
        }
        self
    }

    #[cfg(test)]
    pub(crate) fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS
    }
}

/// Header names of the front-proxy (request-header) authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHeaderNames {
    pub(crate) username: Vec<String>,
    /// Headers that carry the user's UID (`requestheader-uid-headers`).
    pub(crate) uid: Vec<String>,
    pub(crate) group: Vec<String>,
    pub(crate) extra_prefix: Vec<String>,
    /// Common names allowed to act as the front proxy; empty = any signed by the CA.
    pub(crate) allowed_names: Vec<String>,
}

impl Default for RequestHeaderNames {
    fn default() -> Self {
        RequestHeaderNames {
            username: vec!["X-Remote-User".into()],
            uid: Vec::new(),
            group: vec!["X-Remote-Group".into()],
            extra_prefix: vec!["X-Remote-Extra-".into()],
            allowed_names: Vec::new(),
        }
    }
}

impl RequestHeaderNames {
    /// Whether a proxy certificate with this common name may assert users.
    pub(crate) fn name_allowed(&self, common_name: &str) -> bool {
        self.allowed_names.is_empty() || self.allowed_names.iter().any(|n| n == common_name)
    }

    /// The user the front proxy asserts: the first non-empty value of the
    /// username headers (and of the UID headers); every non-empty value of
    /// the group headers; extra keys lower-cased and URL-unescaped, keys
    /// that end up empty dropped. None when no username header is set.
    pub(crate) fn user(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let first = |names: &[String]| {
            names
                .iter()
                .flat_map(|h| headers.get_all(h.as_str()).iter())
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .find(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let name = first(&self.username)?;
        let uid = first(&self.uid).unwrap_or_default();
        let groups = self
            .group
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefix {
            let p = prefix.to_ascii_lowercase();
            for (key, value) in headers {
                let Some(rest) = key.as_str().strip_prefix(p.as_str()) else {
                    continue;
                };
                let k = percent_encoding::percent_decode_str(rest)
                    .decode_utf8_lossy()
                    .to_lowercase();
                if k.is_empty() {
                    continue;
                }
                if let Ok(v) = value.to_str() {
                    extra.entry(k).or_default().push(v.to_owned());
                }
            }
        }
        Some(UserInfo {
            name,
            uid,
            groups,
            extra,
        })
    }
}

/// Tokens longer than this are refused without a TokenReview: no
/// Kubernetes-issued token comes near it (service-account JWTs are about
/// 1 KiB), and reviewing arbitrary blobs would let any client make the API
/// server do work and this server hold memory.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The token of an `Authorization: Bearer <token>` header, as Kubernetes
/// reads it: the value trimmed, split at spaces, the scheme compared
/// case-insensitively, the second field the token. None when the header is
/// absent, not a bearer, or the token is empty (such a request is
/// anonymous, not rejected).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.trim().splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// User = CN, groups = O of a client certificate (as Kubernetes' x509
/// authenticator). None when the certificate has no common name.
pub(crate) fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = common_name_of(cert.subject())?;
    let groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// The common name of a certificate: as Go's `pkix.Name.CommonName`, the
/// LAST CN attribute of the subject when there are several.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    common_name_of(cert.subject())
}

fn common_name_of(subject: &x509_parser::x509::X509Name<'_>) -> Option<String> {
    let cn = subject.iter_common_name().last()?.as_str().ok()?;
    (!cn.is_empty()).then(|| cn.to_owned())
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
        let user = |name: &str, groups: &[&str]| UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        };
        // (name, groups before, groups after): Kubernetes' group adder.
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("alice", &["dev"], &["dev", AUTHENTICATED]),
            ("alice", &[], &[AUTHENTICATED]),
            ("alice", &[AUTHENTICATED, "dev"], &[AUTHENTICATED, "dev"]),
            (ANONYMOUS, &[UNAUTHENTICATED], &[UNAUTHENTICATED]),
            (ANONYMOUS, &[], &[]),
            ("bob", &[UNAUTHENTICATED], &[UNAUTHENTICATED]),
        ];
        for (name, before, after) in cases {
            assert_eq!(
                user(name, before).authenticated().groups,
                *after,
                "{name} {before:?}"
            );
        }
    }

    #[test]
    fn uid_empty_groups_and_empty_extra_keys() {
        let names = RequestHeaderNames {
            uid: vec!["X-Remote-Uid".into()],
            ..RequestHeaderNames::default()
        };
        let u = names
            .user(&headers(&[
                ("X-Remote-User", "alice"),
                ("X-Remote-Uid", ""),
                ("X-Remote-Uid", "1234-abcd"),
                ("X-Remote-Group", ""),
                ("X-Remote-Group", "dev"),
                ("X-Remote-Extra-", "no key"),
                ("X-Remote-Extra-%20", "a space is a key"),
                ("X-Remote-Extra-Team", ""),
            ]))
            .unwrap();
        assert_eq!(u.uid, "1234-abcd");
        assert_eq!(u.groups, ["dev"]);
        assert_eq!(
            u.extra.keys().collect::<Vec<_>>(),
            [" ", "team"],
            "the empty key is dropped; values are kept as sent"
        );
        let no_uid_header = RequestHeaderNames::default()
            .user(&headers(&[("X-Remote-User", "a"), ("X-Remote-Uid", "u")]))
            .unwrap();
        assert_eq!(no_uid_header.uid, "", "only configured UID headers count");
    }

    #[test]
    fn bearer_tokens_as_kubernetes_reads_them() {
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (None, None),
            (Some("Bearer abc"), Some("abc")),
            (Some("bearer abc"), Some("abc")),
            (Some("BEARER abc"), Some("abc")),
            (Some("  Bearer abc  "), Some("abc")),
            (Some("Bearer abc extra"), Some("abc")),
            (Some("Bearer  abc"), None),
            (Some("Bearer"), None),
            (Some("Bearer "), None),
            (Some("Basic YWxpY2U6cHc="), None),
            (Some("Bearerabc"), None),
        ];
        for (value, want) in cases {
            let h = match value {
                Some(v) => headers(&[("Authorization", v)]),
                None => HeaderMap::new(),
            };
            assert_eq!(bearer_token(&h), *want, "{value:?}");
        }
    }

    fn cert_with(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            p.distinguished_name.push(t.clone(), *v);
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_user_takes_the_last_common_name() {
        use rcgen::DnType::{CommonName, CustomDnType, OrganizationName};
        // rcgen keeps one value per attribute type: the second CN is written
        // under the same OID (2.5.4.3) as a custom type.
        let der = cert_with(&[
            (CommonName, "first"),
            (OrganizationName, "team-a"),
            (CustomDnType(vec![2, 5, 4, 3]), "last"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("last"));
        let u = user_from_certificate(&der).unwrap();
        assert_eq!(
            (u.name.as_str(), u.groups.clone()),
            ("last", vec!["team-a".to_owned()])
        );
        assert_eq!(
            user_from_certificate(&cert_with(&[(OrganizationName, "o")])),
            None
        );
    }
}
