//! wva-metrics-server: a Kubernetes aggregated API server for
//! `external.metrics.k8s.io/v1beta1` that answers `wva_desired_ratio` by
//! running the WVA saturation analysis on demand over cached vLLM metrics.

pub mod collector;
pub mod inventory;
pub mod telemetry;
pub mod api;

/// Installs rustls' `ring` provider as the process default. Only `ring` is
/// in the dependency tree; every TLS user (server, kube client, reqwest)
/// picks it up from here. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
