//! wva-metrics-server: a Kubernetes aggregated API server for
//! `external.metrics.k8s.io/v1beta1` and `custom.metrics.k8s.io` (v1beta1
//! and v1beta2, `--api-groups`) that answers `wva_desired_ratio` by running
//! the WVA saturation analysis on demand over cached vLLM metrics.
//!
//! Layout: modules depend on each other one way, from `k8s` (Kubernetes
//! vocabulary: label selectors, quantities, Status) at the bottom to
//! `command` (the command line) at the top; the layers are listed in
//! docs/architecture.md and checked by tests/module_layers.rs. A request
//! goes `server` (accept loop, TLS, tower stack) -> `api` (routing,
//! discovery, values; no I/O) -> `decision` (joins `inventory`, the
//! `collector` cache and the pure `saturation` analysis).

pub mod api;
pub mod certs;
pub mod cli;
pub mod collector;
pub mod command;
pub mod config_file;
pub mod decision;
#[cfg(feature = "emulator")]
pub mod demo;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod fatal;
pub(crate) mod file_watch;
pub mod hpa;
pub mod inventory;
pub mod k8s;
pub mod keda;
pub mod kube_client;
pub mod leader;
pub mod run;
pub mod saturation;
pub mod server;
pub mod simulate;
pub mod telemetry;
pub mod writeback;
