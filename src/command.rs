//! The command line: the top-level parser and its subcommands, each of
//! whose arguments live next to the command (`cli::ServeArgs` for `serve`,
//! `demo::DemoArgs`, `emulator::EmulateArgs`, `simulate::SimulateArgs`).
//! The top layer of the crate: nothing uses it but `main`.
//!
//! `demo` and `emulate` exist only with the `emulator` cargo feature (on by
//! default). A build without it (the container image) leaves them out of
//! `--help` and answers them with [`not_in_this_build`], exit code 2.

use clap::{Args, Parser, Subcommand};

use crate::cli::{CertsArgs, ServeArgs};
#[cfg(feature = "emulator")]
use crate::demo::DemoArgs;
#[cfg(feature = "emulator")]
use crate::emulator::EmulateArgs;
use crate::fatal::InvalidConfiguration;
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
    #[cfg(feature = "emulator")]
    Demo(DemoArgs),
    /// Run one emulated vLLM replica that serves vLLM-format /metrics.
    #[cfg(feature = "emulator")]
    Emulate(EmulateArgs),
    /// Not in this build (built without the `emulator` feature).
    #[cfg(not(feature = "emulator"))]
    #[command(hide = true, disable_help_flag = true)]
    Demo(NotBuilt),
    /// Not in this build (built without the `emulator` feature).
    #[cfg(not(feature = "emulator"))]
    #[command(hide = true, disable_help_flag = true)]
    Emulate(NotBuilt),
    /// Print the VariantAutoscaling CRD (YAML) generated from the server's types.
    Crd,
    /// Write a CA, a serving certificate for the Service and apiservice.yaml with its caBundle.
    Certs(CertsArgs),
    /// Replay a load trace offline through the real analysis and the HPA's algorithm, per policy, in virtual time; print a table and write summary.json and report.html.
    Simulate(Box<SimulateArgs>),
}

/// The arguments of a command this build leaves out, taken as they come
/// (`--help` included), so that the command says it is not built rather
/// than failing on its first flag.
#[derive(Debug, Clone, Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub args: Vec<String>,
}

/// What `demo` and `emulate` answer in a build without the `emulator`
/// feature: a configuration error (exit code 2) that says how to get them.
pub fn not_in_this_build(command: &str) -> InvalidConfiguration {
    InvalidConfiguration(format!(
        "`{command}` is not in this build: it was built without the `emulator` cargo feature \
         (`--no-default-features`, as the container image is); build with the default features \
         to run it, for example `cargo run --release -- {command}`"
    ))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["wva-metrics-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().command
    }

    #[test]
    fn a_command_left_out_says_so_and_exits_2() {
        let error = anyhow::Error::new(not_in_this_build("demo"));
        assert_eq!(
            error.to_string(),
            "`demo` is not in this build: it was built without the `emulator` cargo feature \
             (`--no-default-features`, as the container image is); build with the default \
             features to run it, for example `cargo run --release -- demo`"
        );
        assert_eq!(
            crate::fatal::exit_code(&error),
            crate::fatal::EXIT_INVALID_CONFIGURATION
        );
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn with_the_emulator_demo_and_emulate_parse_and_are_listed() {
        match parse(&["demo", "--port", "9443"]) {
            Command::Demo(args) => assert_eq!(args.port, 9443),
            other => panic!("{other:?}"),
        }
        match parse(&["emulate", "--port", "9000", "--model-name", "m"]) {
            Command::Emulate(args) => {
                assert_eq!((args.port, args.model_name.as_str()), (9000, "m"))
            }
            other => panic!("{other:?}"),
        }
        let help = Cli::command().render_help().to_string();
        assert!(
            help.contains("  demo ") && help.contains("  emulate "),
            "{help}"
        );
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn without_the_emulator_demo_and_emulate_are_unlisted_and_take_any_arguments() {
        for (args, rest) in [
            (&["demo", "--port", "9443"][..], &["--port", "9443"][..]),
            (&["demo", "--help"], &["--help"]),
            (
                &["emulate", "--model-name", "m", "-x"],
                &["--model-name", "m", "-x"],
            ),
        ] {
            match parse(args) {
                Command::Demo(n) | Command::Emulate(n) => assert_eq!(n.args, rest, "{args:?}"),
                other => panic!("{other:?}"),
            }
        }
        let help = Cli::command().render_help().to_string();
        assert!(
            !help.contains("demo") && !help.contains("emulate"),
            "{help}"
        );
        assert!(
            help.contains("  serve ") && help.contains("  simulate "),
            "{help}"
        );
    }
}
