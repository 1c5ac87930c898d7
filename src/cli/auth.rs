//! The authentication and authorization flags of `serve`, and the
//! configuration each group builds: `run` only assembles them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::values::parse_duration;
use crate::fatal::CommandError;
use crate::server::auth::{AuthConfig, AuthzSettings, RequestHeaderAuth, RequestHeaderNames};

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Authentication")]
pub(crate) struct AuthenticationArgs {
    /// CA bundle that signs the front proxy's (aggregator's) client certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) requestheader_client_ca_file: Option<PathBuf>,
    /// Common names allowed as front proxy (comma list; empty = any signed by the CA).
    #[arg(long, value_delimiter = ',')]
    pub(crate) requestheader_allowed_names: Vec<String>,
    /// Headers that carry the user name.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    pub(crate) requestheader_username_headers: Vec<String>,
    /// Headers that carry the user's UID (empty: none).
    #[arg(long, value_delimiter = ',')]
    pub(crate) requestheader_uid_headers: Vec<String>,
    /// Headers that carry the groups.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    pub(crate) requestheader_group_headers: Vec<String>,
    /// Header prefixes that carry extra user information.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    pub(crate) requestheader_extra_headers_prefix: Vec<String>,
    /// CA bundle for direct client certificates (user = CN, groups = O).
    #[arg(long, value_name = "FILE")]
    pub(crate) client_ca_file: Option<PathBuf>,
    /// Do not read kube-system/extension-apiserver-authentication when no requestheader flag is given.
    #[arg(long)]
    pub(crate) authentication_skip_lookup: bool,
    /// How long a TokenReview answer (accepted or rejected token) is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) authentication_token_webhook_cache_ttl: Duration,
    /// Standalone only (--inventory file:): serve everyone without authentication or authorization.
    #[arg(long)]
    pub(crate) insecure_disable_auth: bool,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Authorization")]
pub(crate) struct AuthorizationArgs {
    /// Paths served without authentication or authorization.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/livez,/readyz")]
    pub(crate) authorization_always_allow_paths: Vec<String>,
    /// How long an allowing SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denying SubjectAccessReview is reused.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) authorization_webhook_cache_unauthorized_ttl: Duration,
}

impl AuthenticationArgs {
    /// The authentication the flags give: the front proxy's CA and header
    /// names, the direct clients' CA. The CA files are read and checked
    /// here: a missing or unusable one is a configuration error (exit 2).
    pub(crate) fn config(&self) -> Result<AuthConfig, CommandError> {
        let request_header = match &self.requestheader_client_ca_file {
            Some(path) => Some(RequestHeaderAuth {
                ca: client_ca(path, "--requestheader-client-ca-file")?,
                names: RequestHeaderNames {
                    username: self.requestheader_username_headers.clone(),
                    uid: non_empty(&self.requestheader_uid_headers),
                    group: self.requestheader_group_headers.clone(),
                    extra_prefix: self.requestheader_extra_headers_prefix.clone(),
                    allowed_names: non_empty(&self.requestheader_allowed_names),
                },
            }),
            None => None,
        };
        let client_ca = match &self.client_ca_file {
            Some(path) => Some(client_ca(path, "--client-ca-file")?),
            None => None,
        };
        Ok(AuthConfig {
            request_header,
            client_ca,
        })
    }

    /// Whether the cluster's extension-apiserver-authentication ConfigMap
    /// decides authentication: no CA flag is given and the lookup is not
    /// skipped.
    pub(crate) fn follows_cluster(&self) -> bool {
        self.requestheader_client_ca_file.is_none()
            && self.client_ca_file.is_none()
            && !self.authentication_skip_lookup
    }
}

impl AuthorizationArgs {
    /// The authorization settings, with `authentication`'s TokenReview
    /// cache (the one delegation client serves both).
    pub(crate) fn settings(&self, authentication: &AuthenticationArgs) -> AuthzSettings {
        AuthzSettings {
            always_allow_paths: self.authorization_always_allow_paths.clone(),
            allow_ttl: self.authorization_webhook_cache_authorized_ttl,
            deny_ttl: self.authorization_webhook_cache_unauthorized_ttl,
            token_ttl: authentication.authentication_token_webhook_cache_ttl,
            ..AuthzSettings::default()
        }
    }
}

/// The names given, without the empty ones (`--flag=` means none).
fn non_empty(names: &[String]) -> Vec<String> {
    names.iter().filter(|n| !n.is_empty()).cloned().collect()
}

/// A client CA bundle named by `flag`, read and made a verifier.
fn client_ca(
    path: &Path,
    flag: &str,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CommandError> {
    let pem = std::fs::read(path).map_err(|e| {
        CommandError::invalid(format!("cannot read {flag} {}: {e}", path.display()))
    })?;
    crate::server::auth::handshake::ca_verifier(&pem)
        .map_err(|e| CommandError::invalid(format!("{flag} {}: {e}", path.display())))
}
