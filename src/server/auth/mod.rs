//! Authentication and authorization as Kubernetes extension API servers do
//! them: front-proxy request headers (only from a client certificate that
//! chains to the request-header CA with an allowed name), x509 client
//! certificates, bearer tokens by TokenReview, else anonymous; then a
//! SubjectAccessReview per request, cached.

pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod cache;
pub(crate) mod chain;
pub mod cluster;
pub(crate) mod handshake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;

pub(crate) use authn::{RequestHeaderNames, UserInfo};
pub(crate) use authz::Attributes;
pub(crate) use cache::CacheBounds;

use crate::k8s::status::ApiError;
use crate::kube_client::rate_limit::{with_call_context, BudgetRefused, CallContext, Priority};
use crate::server::log_limit::LogLimiter;
use cache::{KeyHasher, NoRandomKey, ReviewCache};

/// The client certificate chain of a connection, as a request extension,
/// with what it proved under the trust configuration last used: a chain is
/// verified at most once per connection and configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerCertificates(pub Arc<PeerChain>);

/// A connection's client certificates and their verdict.
#[derive(Debug, Default)]
pub(crate) struct PeerChain {
    certs: Vec<CertificateDer<'static>>,
    /// The verdict and the configuration it was reached under; the lock
    /// makes concurrent first requests of an HTTP/2 connection share one
    /// verification.
    verdict: tokio::sync::Mutex<Option<(Arc<AuthConfig>, Arc<chain::Verdict>)>>,
}

impl PeerChain {
    pub(crate) fn new(certs: Vec<CertificateDer<'static>>) -> Self {
        PeerChain {
            certs,
            verdict: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// How a request's user was proven; reviews for it get the matching
/// priority in the review budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Proof(pub Priority);

/// Front-proxy settings.
#[derive(Clone)]
pub(crate) struct RequestHeaderAuth {
    pub(crate) ca: Arc<dyn ClientCertVerifier>,
    pub(crate) names: RequestHeaderNames,
}

/// The trust configuration; replaced as a whole when the cluster's
/// `extension-apiserver-authentication` ConfigMap changes.
#[derive(Clone, Default)]
pub(crate) struct AuthConfig {
    pub(crate) request_header: Option<RequestHeaderAuth>,
    pub(crate) client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

/// Settings of the authenticator and authorizer.
#[derive(Debug, Clone)]
pub(crate) struct AuthzSettings {
    pub(crate) always_allow_paths: Vec<String>,
    /// How long an allowing SubjectAccessReview is reused.
    pub(crate) allow_ttl: Duration,
    /// How long a denying SubjectAccessReview is reused.
    pub(crate) deny_ttl: Duration,
    /// How long a TokenReview answer (accepted or rejected) is reused.
    pub(crate) token_ttl: Duration,
    /// Bounds of the TokenReview cache.
    pub(crate) token_cache: CacheBounds,
    /// Bounds of the SubjectAccessReview cache.
    pub(crate) review_cache: CacheBounds,
    /// Bound on one TokenReview or SubjectAccessReview call, well inside
    /// the aggregator's 5 s discovery budget.
    pub(crate) review_timeout: Duration,
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
pub(crate) struct Auth {
    config: ArcSwap<AuthConfig>,
    client: kube::Client,
    settings: AuthzSettings,
    hasher: KeyHasher,
    /// TokenReview answers: the user, or None for a rejected token.
    tokens: ReviewCache<Option<UserInfo>>,
    /// SubjectAccessReview answers: (allowed, reason).
    reviews: ReviewCache<(bool, String)>,
    /// Chain verifications run one at a time on the blocking pool, so that
    /// hostile chains take at most one core and never a request thread.
    verify_slots: Arc<tokio::sync::Semaphore>,
    /// Chain verifications run (for tests and diagnostics).
    verifications: std::sync::atomic::AtomicU64,
    /// Why requests were not authenticated, logged at most once a second.
    refusal_log: LogLimiter,
}

impl Auth {
    /// Counts the token and access-review caches' hits and misses into
    /// `family` (labels `cache`: `token`, `access_review`; `result`: `hit`, `miss`).
    pub(crate) fn count_cache_lookups(
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

    pub(crate) fn new(
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
            verify_slots: Arc::new(tokio::sync::Semaphore::new(1)),
            verifications: std::sync::atomic::AtomicU64::new(0),
            refusal_log: LogLimiter::new(Duration::from_secs(1)),
        })
    }

    /// Replaces the trust configuration.
    pub(crate) fn set_config(&self, config: AuthConfig) {
        self.config.store(Arc::new(config));
    }

    pub(crate) fn always_allowed(&self, path: &str) -> bool {
        self.settings.always_allow_paths.iter().any(|p| p == path)
    }

    /// Client certificate chains verified so far (each connection's chain
    /// at most once per trust configuration).
    #[cfg(test)]
    pub(crate) fn chain_verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What a connection's chain proves under `config`: computed once per
    /// connection and configuration, on the blocking pool, one chain at a
    /// time.
    async fn chain_verdict(
        &self,
        peer: &PeerChain,
        config: &Arc<AuthConfig>,
    ) -> Arc<chain::Verdict> {
        let mut cached = peer.verdict.lock().await;
        if let Some((c, v)) = cached.as_ref() {
            if Arc::ptr_eq(c, config) {
                return Arc::clone(v);
            }
        }
        let verdict = match chain::precheck(&peer.certs) {
            Err(reason) => Arc::new(chain::Verdict::refused(reason)),
            Ok(()) => {
                // The semaphore is never closed; if it were, verifying
                // without a slot is still correct.
                let _slot = self.verify_slots.acquire().await.ok();
                self.verifications
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let certs = peer.certs.clone();
                let cfg = Arc::clone(config);
                match tokio::task::spawn_blocking(move || chain::verify(&cfg, &certs)).await {
                    Ok(v) => Arc::new(v),
                    Err(e) => Arc::new(chain::Verdict::refused(format!(
                        "the chain verification did not finish: {e}"
                    ))),
                }
            }
        };
        *cached = Some((Arc::clone(config), Arc::clone(&verdict)));
        verdict
    }

    /// The user of a request, as Kubernetes' delegated authentication
    /// decides it: front proxy, client certificate, bearer token, in that
    /// order; the first that identifies a user wins. A client certificate
    /// that no configured CA verifies, or a bearer token TokenReview
    /// rejects, is 401 unless a later method identifies the user; a
    /// request that presents no credential at all is anonymous. The 401
    /// says only `Unauthorized`, as Kubernetes does; why goes to the log.
    /// Also says how the user was proven.
    pub(crate) async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&PeerCertificates>,
    ) -> Result<(UserInfo, Proof), ApiError> {
        let config = self.config.load_full();
        let mut failures: Vec<String> = Vec::new();
        if let Some(peer) = peer.filter(|p| !p.0.is_empty()) {
            let verdict = self.chain_verdict(&peer.0, &config).await;
            if verdict.front_proxy {
                if let Some(rh) = &config.request_header {
                    if let Some(user) = rh.names.user(headers) {
                        return Ok((user.authenticated(), Proof(Priority::Verified)));
                    }
                }
            }
            if let Some(user) = &verdict.client_user {
                return Ok((user.clone().authenticated(), Proof(Priority::Verified)));
            }
            failures.extend(verdict.failures.iter().cloned());
        }
        if let Some(token) = authn::bearer_token(headers) {
            if token.len() > authn::MAX_TOKEN_BYTES {
                failures.push(format!(
                    "the bearer token is longer than {} bytes",
                    authn::MAX_TOKEN_BYTES
                ));
            } else {
                match self.review_token(token).await? {
                    Some(user) => return Ok((user.authenticated(), Proof(Priority::Normal))),
                    None => {
                        failures.push("the bearer token was not accepted by TokenReview".into())
                    }
                }
            }
        }
        if failures.is_empty() {
            return Ok((UserInfo::anonymous(), Proof(Priority::Unverified)));
        }
        if let Some(suppressed) = self.refusal_log.allow() {
            tracing::info!(reasons = ?failures, suppressed, "request not authenticated (401); further refusals within a second are only counted");
        }
        Err(ApiError::unauthorized("Unauthorized"))
    }

    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, ApiError> {
        let key = self.hasher.digest([token.as_bytes()]);
        let ttl = self.settings.token_ttl;
        self.tokens
            .get_or_review(key, async move {
                // Anyone can send a token: its review waits behind reviews
                // for proven identities.
                self.in_review_context(Priority::Unverified, self.call_token_review(token))
                    .await
                    .map(|u| (u, ttl))
            })
            .await
            .map_err(|e| e.as_ref().clone())
    }

    /// Runs a review call with its deadline (the review timeout) and
    /// priority in the review budget, bounded by the same timeout.
    async fn in_review_context<T>(
        &self,
        priority: Priority,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let timeout = self.settings.review_timeout;
        let context = CallContext {
            deadline: Some(tokio::time::Instant::now() + timeout),
            priority,
        };
        with_call_context(context, call).await
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
            .map_err(|e| review_error("TokenReview", &e))?;
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
    pub(crate) async fn authorize(
        &self,
        user: &UserInfo,
        proof: Proof,
        attrs: &Attributes,
    ) -> Result<(), ApiError> {
        if user.groups.iter().any(|g| g == authn::MASTERS) {
            return Ok(());
        }
        let key = self.review_key(user, attrs);
        let (allow_ttl, deny_ttl) = (self.settings.allow_ttl, self.settings.deny_ttl);
        let (allowed, reason) = self
            .reviews
            .get_or_review(key, async move {
                let review = self.review_access(user, attrs);
                self.in_review_context(proof.0, review).await.map(|answer| {
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
            .map_err(|e| review_error("SubjectAccessReview", &e))?;
        let status = answer.status.unwrap_or_default();
        Ok((status.allowed, status.reason.unwrap_or_default()))
    }
}

/// A failed review call: 429 when the client-side budget refused it (the
/// client may retry shortly, as after Kubernetes' own priority and fairness
/// refusals), else 503.
fn review_error(what: &str, e: &kube::Error) -> ApiError {
    if BudgetRefused::is_in(e) {
        let mut err = ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("too many requests are waiting for a {what}; try again shortly"),
        );
        err.retry_after = Some(1);
        return err;
    }
    ApiError::service_unavailable(format!("{what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client for an API server that is never called.
    fn offline_client() -> kube::Client {
        crate::certs::install_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn users_ca_and_leaf() -> (String, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "users-ca");
        let pem = p.self_signed(&key).unwrap().pem();
        let issuer = rcgen::Issuer::new(p, key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut l = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        l.distinguished_name = rcgen::DistinguishedName::new();
        l.distinguished_name.push(rcgen::DnType::CommonName, "dave");
        l.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = l.signed_by(&leaf_key, &issuer).unwrap().der().clone();
        (pem, leaf)
    }

    #[tokio::test]
    async fn a_connection_s_chain_is_verified_once_per_trust_configuration() {
        let (pem, leaf) = users_ca_and_leaf();
        let config = AuthConfig {
            request_header: None,
            client_ca: Some(handshake::ca_verifier(pem.as_bytes()).unwrap()),
        };
        let auth = Auth::new(config.clone(), offline_client(), AuthzSettings::default()).unwrap();
        let connection = |certs| PeerCertificates(Arc::new(PeerChain::new(certs)));
        let headers = http::HeaderMap::new();
        let first = connection(vec![leaf.clone()]);
        for _ in 0..5 {
            let (user, proof) = auth.authenticate(&headers, Some(&first)).await.unwrap();
            assert_eq!(
                (user.name.as_str(), proof),
                ("dave", Proof(Priority::Verified))
            );
        }
        assert_eq!(auth.chain_verifications(), 1, "once for five requests");
        // Another connection with the same chain has a verdict of its own.
        let second = connection(vec![leaf.clone()]);
        auth.authenticate(&headers, Some(&second)).await.unwrap();
        assert_eq!(auth.chain_verifications(), 2);
        // A new trust configuration: judged again, once.
        auth.set_config(config);
        for _ in 0..3 {
            auth.authenticate(&headers, Some(&first)).await.unwrap();
        }
        assert_eq!(auth.chain_verifications(), 3);
        // A chain over the bound: 401 saying only "Unauthorized", and no
        // verification at all.
        let long = connection(vec![leaf; chain::MAX_CHAIN_CERTIFICATES + 1]);
        for _ in 0..3 {
            let e = auth.authenticate(&headers, Some(&long)).await.unwrap_err();
            assert_eq!((e.code.as_u16(), e.message.as_str()), (401, "Unauthorized"));
        }
        assert_eq!(auth.chain_verifications(), 3);
        // No certificate: anonymous, the lowest review priority.
        let (user, proof) = auth.authenticate(&headers, None).await.unwrap();
        assert!(user.is_anonymous());
        assert_eq!(proof, Proof(Priority::Unverified));
    }
}
