//! wva-metrics-server: a Kubernetes aggregated API server for
//! `external.metrics.k8s.io/v1beta1` that answers `wva_desired_ratio` by
//! running the WVA saturation analysis on demand over cached vLLM metrics.
//!
//! Layout: `server` (accept loop, TLS, tower stack) -> `api` (routing,
//! discovery, values, Status errors; no I/O) -> `decision` (joins
//! `inventory`, the `collector` cache and the pure `saturation` analysis).

pub mod api;
pub mod certs;
pub mod cli;
pub mod collector;
pub mod decision;
pub mod demo;
pub mod emulator;
pub mod fatal;
pub mod hpa;
pub mod inventory;
pub mod keda;
pub mod kube_client;
pub mod leader;
pub mod run;
pub mod saturation;
pub mod server;
pub mod simulate;
pub mod telemetry;

/// Installs rustls' `ring` provider as the process default. Only `ring` is
/// in the dependency tree; every TLS user (server, kube client, reqwest)
/// picks it up from here. Safe to call more than once.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
