//! Authentication and authorization as Kubernetes extension API servers do
//! them: front-proxy request headers (only from a client certificate that
//! chains to the request-header CA with an allowed name), x509 client
//! certificates, bearer tokens by TokenReview, else anonymous; then a
//! SubjectAccessReview per request, cached.

pub mod authn;
pub mod authz;
pub mod cluster;
pub mod handshake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

pub use authn::{RequestHeaderNames, UserInfo};
pub use authz::Attributes;

use crate::api::status::ApiError;

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

/// Settings of the authorizer.
#[derive(Debug, Clone)]
pub struct AuthzSettings {
    pub always_allow_paths: Vec<String>,
    pub allow_ttl: Duration,
    pub deny_ttl: Duration,
    /// Bound on cached reviews.
    pub cache_size: usize,
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
            cache_size: 10_000,
            review_timeout: Duration::from_secs(2),
        }
    }
}

/// How long a TokenReview result is reused.
const TOKEN_TTL: Duration = Duration::from_secs(10);

type Cached<T> = DashMap<String, (Instant, T)>;

/// Authenticates and authorizes requests.
pub struct Auth {
    config: ArcSwap<AuthConfig>,
    client: kube::Client,
    settings: AuthzSettings,
    tokens: Cached<Option<UserInfo>>,
    reviews: Cached<(bool, String)>,
}

fn cache_get<T: Clone>(c: &Cached<T>, key: &str) -> Option<T> {
    let e = c.get(key)?;
    (Instant::now() < e.0).then(|| e.1.clone())
}

fn cache_put<T>(c: &Cached<T>, key: String, ttl: Duration, value: T, cap: usize) {
    if c.len() >= cap {
        let now = Instant::now();
        c.retain(|_, (until, _)| *until > now);
        if c.len() >= cap {
            c.clear();
        }
    }
    c.insert(key, (Instant::now() + ttl, value));
}

impl Auth {
    pub fn new(config: AuthConfig, client: kube::Client, settings: AuthzSettings) -> Self {
        Auth {
            config: ArcSwap::from_pointee(config),
            client,
            settings,
            tokens: DashMap::new(),
            reviews: DashMap::new(),
        }
    }

    /// Replaces the trust configuration.
    pub fn set_config(&self, config: AuthConfig) {
        self.config.store(Arc::new(config));
    }

    pub fn always_allowed(&self, path: &str) -> bool {
        self.settings.always_allow_paths.iter().any(|p| p == path)
    }

    /// The user of a request.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Result<UserInfo, ApiError> {
        let config = self.config.load_full();
        if let Some((leaf, intermediates)) = peer.and_then(|p| p.0.split_first()) {
            let now = UnixTime::now();
            if let Some(rh) = &config.request_header {
                let verified = rh.ca.verify_client_cert(leaf, intermediates, now);
                if let Err(e) = &verified {
                    tracing::debug!(error = %e, "client certificate does not chain to the request-header CA");
                }
                if verified.is_ok() {
                    let cn = authn::common_name(leaf).unwrap_or_default();
                    if rh.names.name_allowed(&cn) {
                        if let Some(user) = rh.names.user(headers) {
                            return Ok(user.authenticated());
                        }
                    } else {
                        tracing::debug!(
                            cn,
                            "front-proxy certificate name not in allowed names; headers ignored"
                        );
                    }
                }
            }
            if let Some(ca) = &config.client_ca {
                if ca.verify_client_cert(leaf, intermediates, now).is_ok() {
                    if let Some(user) = authn::user_from_certificate(leaf) {
                        return Ok(user.authenticated());
                    }
                }
            }
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match bearer {
            Some(token) => match self.review_token(token).await? {
                Some(user) => Ok(user.authenticated()),
                None => Err(ApiError::unauthorized(
                    "the bearer token was not accepted by TokenReview",
                )),
            },
            None => Ok(UserInfo::anonymous()),
        }
    }

    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        if let Some(hit) = cache_get(&self.tokens, token) {
            return Ok(hit);
        }
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
        let user = (status.authenticated == Some(true))
            .then_some(status.user)
            .flatten()
            .and_then(|u| {
                Some(UserInfo {
                    name: u.username?,
                    groups: u.groups.unwrap_or_default(),
                    extra: u.extra.unwrap_or_default().into_iter().collect(),
                })
            });
        cache_put(
            &self.tokens,
            token.to_owned(),
            TOKEN_TTL,
            user.clone(),
            self.settings.cache_size,
        );
        Ok(user)
    }

    /// Allows or denies: `system:masters` without a review, else a cached
    /// SubjectAccessReview.
    pub async fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == authn::MASTERS) {
            return Ok(());
        }
        let key = format!("{user:?}|{attrs:?}");
        let (allowed, reason) = match cache_get(&self.reviews, &key) {
            Some(hit) => hit,
            None => {
                let answer = self.review_access(user, attrs).await?;
                let ttl = if answer.0 {
                    self.settings.allow_ttl
                } else {
                    self.settings.deny_ttl
                };
                cache_put(
                    &self.reviews,
                    key,
                    ttl,
                    answer.clone(),
                    self.settings.cache_size,
                );
                answer
            }
        };
        if allowed {
            return Ok(());
        }
        let message = authz::denied_message(&user.name, attrs, &reason);
        if user.is_anonymous() {
            // Nobody was authenticated: say so, as the API server does.
            Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "Forbidden",
                message,
            ))
        } else {
            Err(ApiError::forbidden(message))
        }
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
                groups: Some(user.groups.clone()),
                extra: Some(user.extra.clone().into_iter().collect::<BTreeMap<_, _>>()),
                resource_attributes,
                non_resource_attributes,
                ..Default::default()
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
