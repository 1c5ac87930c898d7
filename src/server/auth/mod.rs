//! Authentication and authorization as Kubernetes extension API servers do
//! them: front-proxy request headers (only from a client certificate that
//! chains to the request-header CA with an allowed name), x509 client
//! certificates, bearer tokens by TokenReview, else anonymous; then a
//! SubjectAccessReview per request, cached.

pub mod authn;
pub mod authz;
pub mod cache;
pub mod cluster;
pub mod handshake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

pub use authn::{RequestHeaderNames, UserInfo};
pub use authz::Attributes;
pub use cache::CacheBounds;

use crate::k8s::status::ApiError;
use cache::{KeyHasher, NoRandomKey, ReviewCache};

/// The client certificate chain of a connection, as a request extension.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Front-proxy settings.
#[derive(Clone)]
pub struct RequestHeaderAuth {
    pub ca: Arc<dyn ClientCertVerifier>,
    pub names: RequestHeaderNames,
}

/// The trust configuration; replaced as a whole when the cluster's
/// `extension-apiserver-authentication` ConfigMap changes.
#[derive(Clone, Default)]
pub struct AuthConfig {
    pub request_header: Option<RequestHeaderAuth>,
    pub client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// Settings of the authenticator and authorizer.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    pub always_allow_paths: Vec<String>,
    /// How long an allowing SubjectAccessReview is reused.
    pub allow_ttl: Duration,
    /// How long a denying SubjectAccessReview is reused.
    pub deny_ttl: Duration,
    /// How long a TokenReview answer (accepted or rejected) is reused.
    pub token_ttl: Duration,
    /// Bounds of the TokenReview cache.
    pub token_cache: CacheBounds,
    /// Bounds of the SubjectAccessReview cache.
    pub review_cache: CacheBounds,
    /// Bound on one TokenReview or SubjectAccessReview call, well inside
    /// the aggregator's 5 s discovery budget.
    pub review_timeout: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "request_header",
                &self.request_header.as_ref().map(|r| &r.names),
            )
            .field("client_ca", &self.client_ca.is_some())
            .finish()
    }
}

impl Default for AuthzSettings {
    fn default() -> Self {
        AuthzSettings {
            always_allow_paths: vec!["/healthz".into(), "/livez".into(), "/readyz".into()],
            allow_ttl: Duration::from_secs(10),
            deny_ttl: Duration::from_secs(10),
            token_ttl: Duration::from_secs(10),
            // 10,000 users or reviews in 16 MiB: a few KiB per entry on
            // average, far more than a Kubernetes identity needs.
            token_cache: CacheBounds {
                max_entries: 10_000,
                max_bytes: 16 * 1024 * 1024,
            },
            review_cache: CacheBounds {
                max_entries: 10_000,
                max_bytes: 16 * 1024 * 1024,
            },
            review_timeout: Duration::from_secs(2),
        }
    }
}

/// Estimated heap bytes of a user.
fn user_bytes(u: &UserInfo) -> usize {
    let strings = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
    u.name.len()
        + u.uid.len()
        + strings(&u.groups)
        + u.extra
            .iter()
            .map(|(k, v)| k.len() + 48 + strings(v))
            .sum::<usize>()
}

/// Authenticates and authorizes requests.
pub struct Auth {
    config: ArcSwap<AuthConfig>,
    client: kube::Client,
    settings: AuthzSettings,
    hasher: KeyHasher,
    /// TokenReview answers: the user, or None for a rejected token.
    tokens: ReviewCache<Option<UserInfo>>,
    /// SubjectAccessReview answers: (allowed, reason).
    reviews: ReviewCache<(bool, String)>,
}

impl Auth {
    /// Counts the token and access-review caches' hits and misses into
    /// `family` (labels `cache`: `token`, `access_review`; `result`: `hit`, `miss`).
    pub fn count_cache_lookups(
        &self,
        family: &prometheus_client::metrics::family::Family<
            crate::telemetry::AuthCacheLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) {
        // One call per counter: the read guard `get_or_create` returns must be
        // dropped before the next call, which may insert (a write lock); two
        // calls in one struct expression deadlocked.
        let counter = |cache: &str, result: &str| {
            let labels = crate::telemetry::AuthCacheLabels {
                cache: cache.to_owned(),
                result: result.to_owned(),
            };
            family.get_or_create(&labels).clone()
        };
        let counters = |cache: &str| {
            let hit = counter(cache, "hit");
            let miss = counter(cache, "miss");
            cache::CacheCounters { hit, miss }
        };
        self.tokens.count_lookups(counters("token"));
        self.reviews.count_lookups(counters("access_review"));
    }

    pub fn new(
        config: AuthConfig,
        client: kube::Client,
        settings: AuthzSettings,
    ) -> Result<Self, NoRandomKey> {
        Ok(Auth {
            config: ArcSwap::from_pointee(config),
            client,
            hasher: KeyHasher::random()?,
            tokens: ReviewCache::new(settings.token_cache, |u| u.as_ref().map_or(0, user_bytes)),
            reviews: ReviewCache::new(settings.review_cache, |(_, reason)| reason.len()),
            settings,
        })
    }

    /// Replaces the trust configuration.
    pub fn set_config(&self, config: AuthConfig) {
        self.config.store(Arc::new(config));
    }

    pub fn always_allowed(&self, path: &str) -> bool {
        self.settings.always_allow_paths.iter().any(|p| p == path)
    }

    /// Cached TokenReview answers (for tests and diagnostics).
    pub async fn cached_tokens(&self) -> u64 {
        self.tokens.entry_count().await
    }

    /// The user of a request, as Kubernetes' delegated authentication
    /// decides it: front proxy, client certificate, bearer token, in that
    /// order; the first that identifies a user wins. A client certificate
    /// that no configured CA verifies, or a bearer token TokenReview
    /// rejects, is 401 unless a later method identifies the user; a
    /// request that presents no credential at all is anonymous.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Result<UserInfo, ApiError> {
        let config = self.config.load_full();
        let mut failures: Vec<String> = Vec::new();
        if let Some((leaf, intermediates)) = peer.and_then(|p| p.0.split_first()) {
            let now = UnixTime::now();
            if let Some(rh) = &config.request_header {
                match rh.ca.verify_client_cert(leaf, intermediates, now) {
                    Ok(_) => {
                        let cn = authn::common_name(leaf).unwrap_or_default();
                        if rh.names.name_allowed(&cn) {
                            if let Some(user) = rh.names.user(headers) {
                                return Ok(user.authenticated());
                            }
                        } else {
                            failures.push(format!(
                                "the front-proxy certificate's common name {cn:?} is not in the allowed names"
                            ));
                        }
                    }
                    Err(e) => failures.push(format!(
                        "the client certificate does not verify against the request-header CA: {e}"
                    )),
                }
            }
            if let Some(ca) = &config.client_ca {
                match ca.verify_client_cert(leaf, intermediates, now) {
                    Ok(_) => {
                        if let Some(user) = authn::user_from_certificate(leaf) {
                            return Ok(user.authenticated());
                        }
                    }
                    Err(e) => failures.push(format!(
                        "the client certificate does not verify against the client CA: {e}"
                    )),
                }
            }
        }
        if let Some(token) = authn::bearer_token(headers) {
            if token.len() > authn::MAX_TOKEN_BYTES {
                failures.push(format!(
                    "the bearer token is longer than {} bytes",
                    authn::MAX_TOKEN_BYTES
                ));
            } else {
                match self.review_token(token).await? {
                    Some(user) => return Ok(user.authenticated()),
                    None => {
                        failures.push("the bearer token was not accepted by TokenReview".into())
                    }
                }
            }
        }
        if failures.is_empty() {
            return Ok(UserInfo::anonymous());
        }
        tracing::debug!(reasons = ?failures, "request not authenticated");
        Err(ApiError::unauthorized(failures.join("; ")))
    }

    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        let key = self.hasher.digest([token.as_bytes()]);
        let ttl = self.settings.token_ttl;
        self.tokens
            .get_or_review(key, async move {
                self.call_token_review(token).await.map(|u| (u, ttl))
            })
            .await
            .map_err(|e| e.as_ref().clone())
    }

    async fn call_token_review(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let params = kube::api::PostParams::default();
        let call = api.create(&params, &review);
        let answer = tokio::time::timeout(self.settings.review_timeout, call)
            .await
            .map_err(|_| ApiError::service_unavailable("TokenReview timed out"))?
            .map_err(|e| ApiError::service_unavailable(format!("TokenReview failed: {e}")))?;
        let status = answer.status.unwrap_or_default();
        Ok((status.authenticated == Some(true))
            .then_some(status.user)
            .flatten()
            .and_then(|u| {
                Some(UserInfo {
                    name: u.username.filter(|n| !n.is_empty())?,
                    uid: u.uid.unwrap_or_default(),
                    groups: u
                        .groups
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|g| !g.is_empty())
                        .collect(),
                    extra: u
                        .extra
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| !k.is_empty())
                        .collect(),
                })
            }))
    }

    /// The cache key of a review: every field of the user (UID included)
    /// and of the attributes, length-prefixed, under the keyed hash.
    fn review_key(&self, user: &UserInfo, attrs: &Attributes) -> cache::Digest {
        let mut fields: Vec<&[u8]> = vec![user.name.as_bytes(), user.uid.as_bytes()];
        let n_groups = user.groups.len().to_le_bytes();
        fields.push(&n_groups);
        fields.extend(user.groups.iter().map(|g| g.as_bytes()));
        let n_extra = user.extra.len().to_le_bytes();
        fields.push(&n_extra);
        let counts: Vec<[u8; 8]> = user.extra.values().map(|v| v.len().to_le_bytes()).collect();
        for ((k, v), n) in user.extra.iter().zip(&counts) {
            fields.push(k.as_bytes());
            fields.push(n);
            fields.extend(v.iter().map(|x| x.as_bytes()));
        }
        match attrs {
            Attributes::Resource {
                verb,
                group,
                version,
                resource,
                namespace,
                name,
                subresource,
            } => fields.extend([
                &b"resource"[..],
                verb.as_bytes(),
                group.as_bytes(),
                version.as_bytes(),
                resource.as_bytes(),
                namespace.as_bytes(),
                // Absent and empty differ: a marker before each optional part.
                if name.is_some() { b"name" } else { b"----" },
                name.as_deref().unwrap_or_default().as_bytes(),
                if subresource.is_some() {
                    b"sub"
                } else {
                    b"---"
                },
                subresource.as_deref().unwrap_or_default().as_bytes(),
            ]),
            Attributes::NonResource { verb, path } => {
                fields.extend([&b"non-resource"[..], verb.as_bytes(), path.as_bytes()])
            }
        }
        self.hasher.digest(fields)
    }

    /// Allows or denies: `system:masters` without a review, else a cached
    /// SubjectAccessReview.
    pub async fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == authn::MASTERS) {
            return Ok(());
        }
        let key = self.review_key(user, attrs);
        let (allow_ttl, deny_ttl) = (self.settings.allow_ttl, self.settings.deny_ttl);
        let (allowed, reason) = self
            .reviews
            .get_or_review(key, async move {
                self.review_access(user, attrs).await.map(|answer| {
                    let ttl = if answer.0 { allow_ttl } else { deny_ttl };
                    (answer, ttl)
                })
            })
            .await
            .map_err(|e| e.as_ref().clone())?;
        if allowed {
            return Ok(());
        }
        Err(ApiError::forbidden(authz::denied_message(
            &user.name, attrs, &reason,
        )))
    }
    async fn review_access(
        &self,
        user: &UserInfo,
        attrs: &Attributes,
    ) -> Result<(bool, String), ApiError> {
        let (resource_attributes, non_resource_attributes) = match attrs {
            Attributes::Resource {
                verb,
                group,
                version,
                resource,
                namespace,
                name,
                subresource,
            } => (
                Some(ResourceAttributes {
                    verb: Some((*verb).to_owned()),
                    group: Some((*group).to_owned()),
                    version: Some((*version).to_owned()),
                    resource: Some(resource.clone()),
                    namespace: Some(namespace.clone()),
                    name: name.clone(),
                    subresource: subresource.clone(),
                    ..Default::default()
                }),
                None,
            ),
            Attributes::NonResource { verb, path } => (
                None,
                Some(NonResourceAttributes {
                    verb: Some((*verb).to_owned()),
                    path: Some(path.clone()),
                }),
            ),
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone().into_iter().collect::<BTreeMap<_, _>>()),
                resource_attributes,
                non_resource_attributes,
            },
            ..Default::default()
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let params = kube::api::PostParams::default();
        let call = api.create(&params, &review);
        let answer = tokio::time::timeout(self.settings.review_timeout, call)
            .await
            .map_err(|_| ApiError::service_unavailable("SubjectAccessReview timed out"))?
            .map_err(|e| {
                ApiError::service_unavailable(format!("SubjectAccessReview failed: {e}"))
            })?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}
