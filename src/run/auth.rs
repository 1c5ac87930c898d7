//! Authentication and authorization of `serve` from its flags.

use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::server::auth::Auth;

/// Authentication from the flags, or from the cluster's
/// extension-apiserver-authentication ConfigMap when none are given.
pub(super) fn build_auth(
    args: &ServeArgs,
    client: kube::Client,
    shutdown: &CancellationToken,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Arc<Auth>> {
    use crate::server::auth::{
        cluster, handshake, AuthConfig, AuthzSettings, RequestHeaderAuth, RequestHeaderNames,
    };
    let read = |path: &Path,
                what: &str|
     -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let pem = std::fs::read(path).map_err(|e| {
            crate::fatal::InvalidConfiguration(format!(
                "cannot read {what} {}: {e}",
                path.display()
            ))
        })?;
        handshake::ca_verifier(&pem).map_err(|e| {
            crate::fatal::InvalidConfiguration(format!("{what} {}: {e}", path.display())).into()
        })
    };
    let request_header = match &args.authentication.requestheader_client_ca_file {
        Some(path) => Some(RequestHeaderAuth {
            ca: read(path, "--requestheader-client-ca-file")?,
            names: RequestHeaderNames {
                username: args.authentication.requestheader_username_headers.clone(),
                uid: args
                    .authentication
                    .requestheader_uid_headers
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
                group: args.authentication.requestheader_group_headers.clone(),
                extra_prefix: args
                    .authentication
                    .requestheader_extra_headers_prefix
                    .clone(),
                allowed_names: args
                    .authentication
                    .requestheader_allowed_names
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
            },
        }),
        None => None,
    };
    let client_ca = match &args.authentication.client_ca_file {
        Some(path) => Some(read(path, "--client-ca-file")?),
        None => None,
    };
    let from_flags = request_header.is_some() || client_ca.is_some();
    let settings = AuthzSettings {
        always_allow_paths: args.authorization.authorization_always_allow_paths.clone(),
        allow_ttl: args
            .authorization
            .authorization_webhook_cache_authorized_ttl,
        deny_ttl: args
            .authorization
            .authorization_webhook_cache_unauthorized_ttl,
        token_ttl: args.authentication.authentication_token_webhook_cache_ttl,
        ..AuthzSettings::default()
    };
    let auth = Arc::new(Auth::new(
        AuthConfig {
            request_header,
            client_ca,
        },
        client.clone(),
        settings,
    )?);
    if !from_flags && !args.authentication.authentication_skip_lookup {
        tasks.push(cluster::watch(client, Arc::clone(&auth), shutdown.clone()));
    }
    Ok(auth)
}
