//! The command line: the top-level parser and its subcommands, each of
//! whose arguments live next to the command (`cli::ServeArgs` for `serve`,
//! `demo::DemoArgs`, `emulator::EmulateArgs`, `simulate::SimulateArgs`).
//! The top layer of the crate: nothing uses it but `main`.

use clap::{Parser, Subcommand};

use crate::cli::{CertsArgs, ServeArgs};
use crate::demo::DemoArgs;
use crate::emulator::EmulateArgs;
use crate::simulate::SimulateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "wva-metrics-server",
    version,
    about = "Kubernetes external metrics API that answers wva_desired_ratio from live vLLM saturation metrics"
)]
pub struct Cli {
    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true, env = "LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io/v1beta1 over HTTPS.
    Serve(Box<ServeArgs>),
    /// Run everything on loopback with emulated vLLM replicas and a scripted load: no cluster, no Prometheus.
    Demo(DemoArgs),
    /// Run one emulated vLLM replica that serves vLLM-format /metrics.
    Emulate(EmulateArgs),
    /// Print the VariantAutoscaling CRD (YAML) generated from the server's types.
    Crd,
    /// Write a CA, a serving certificate for the Service and apiservice.yaml with its caBundle.
    Certs(CertsArgs),
    /// Replay a load trace offline through the real analysis and the HPA's algorithm, per policy, in virtual time; print a table and write summary.json and report.html.
    Simulate(Box<SimulateArgs>),
}
