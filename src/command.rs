//! The command line: the top-level parser and its subcommands, each of
//! whose arguments live next to the command (`cli::ServeArgs` for `serve`,
//! `demo::DemoArgs`, `emulator::EmulateArgs`, `simulate::SimulateArgs`).
//! The top layer of the crate: nothing uses it but `main`.
//!
//! `demo` and `emulate` exist only with the `emulator` cargo feature (on by
//! default). A build without it (the container image) leaves them out of
//! `--help` and answers them with [`not_in_this_build`], exit code 2.

use clap::{Args, Parser, Subcommand};

use crate::cli::{parse_bool, BoolFlag, CertsArgs, ServeArgs};
#[cfg(feature = "emulator")]
use crate::demo::DemoArgs;
#[cfg(feature = "emulator")]
use crate::emulator::EmulateArgs;
#[cfg(any(test, not(feature = "emulator")))]
use crate::fatal::CommandError;
use crate::simulate::SimulateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "wva-metrics-server",
    version,
    about = "Kubernetes external and custom metrics API that answers wva_desired_ratio from live vLLM saturation metrics"
)]
pub struct Cli {
    /// Log as JSON lines (for log collectors) instead of human-readable text.
    #[arg(long, global = true, env = "LOG_JSON", bool_flag = false, value_parser = parse_bool)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io/v1beta1 and custom.metrics.k8s.io (v1beta1, v1beta2) over HTTPS (--api-groups).
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
    /// Replay a load trace offline through the real analysis and the HPA's algorithm, per policy, in virtual time; print a table and write summary.json, minutes.csv and report.html.
    Simulate(Box<SimulateArgs>),
}

/// Parses the command line (and the flags' environment variables). A bad
/// value that came from an environment variable, not from the command
/// line, is reported with the variable's name, so that a user looking at a
/// manifest finds it.
pub fn parse_cli<I, T>(argv: I, env: impl Fn(&str) -> Option<String>) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
    let mut command = without_blank_env(Cli::command(), &env);
    // The subcommand is the first argument that is not a flag (the global
    // flag takes its value with `=`).
    let subcommand = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'));
    if subcommand == Some("serve") {
        command = with_config_file(command, &argv)?;
    }
    let parsed = command
        .try_get_matches_from_mut(argv.iter().cloned())
        .and_then(|m| Cli::from_arg_matches(&m));
    let mut cli = parsed
        .map_err(|e| with_renamed_flag_hint(with_env_source(e, &mut command, &argv, env), &argv))?;
    if let Command::Serve(args) = &mut cli.command {
        crate::config_file::apply_upstream_settings(args).map_err(|message| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{message}\n"),
            )
        })?;
    }
    Ok(cli)
}

/// `serve` with upstream WVA's config file read (`--config-file`, by
/// default /etc/wva/config.yaml when it exists): its keys become the
/// defaults of the flags whose environment variables they name.
fn with_config_file(
    command: clap::Command,
    argv: &[std::ffi::OsString],
) -> Result<clap::Command, clap::Error> {
    let refused = |e: crate::config_file::ConfigFileError| {
        clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))
    };
    let (path, named) = crate::config_file::config_file_of(argv);
    let Some(settings) = crate::config_file::read(&path, named).map_err(refused)? else {
        return Ok(command);
    };
    let mut error = None;
    let command =
        command.mut_subcommand(
            "serve",
            |serve| match crate::config_file::with_file_defaults(serve.clone(), &path, &settings) {
                Ok(with) => with,
                Err(e) => {
                    error = Some(e);
                    serve
                }
            },
        );
    match error {
        Some(e) => Err(refused(e)),
        None => Ok(command),
    }
}

/// Flags of other commands (or of other tools) a user is likely to type,
/// and this command's flag for the same thing: clap suggests only names
/// that look alike, and `--port` (the demo's flag) does not look like
/// `--secure-port`.
const RENAMED_FLAGS: &[(&str, &str, &str)] = &[
    ("serve", "--port", "--secure-port"),
    ("serve", "--bind", "--bind-address"),
    ("serve", "--cert", "--tls-cert-file"),
    ("serve", "--key", "--tls-private-key-file"),
];

/// Adds "tip: a similar argument exists: '--secure-port'" to an unknown
/// argument error for a flag of [`RENAMED_FLAGS`].
fn with_renamed_flag_hint(mut error: clap::Error, argv: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = given.split('=').next().unwrap_or_default().to_owned();
    let command = argv
        .iter()
        .skip(1)
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'));
    let hint = RENAMED_FLAGS
        .iter()
        .find(|(c, from, _)| Some(*c) == command && *from == flag)
        .map(|(_, _, to)| *to);
    if let Some(to) = hint {
        error.insert(
            ContextKind::SuggestedArg,
            ContextValue::String(to.to_owned()),
        );
    }
    error
}

/// A variable set to blanks (`value: ""` in a manifest, as templates
/// render an unset value) counts as unset: its flag keeps its default.
fn without_blank_env(
    mut command: clap::Command,
    env: &impl Fn(&str) -> Option<String>,
) -> clap::Command {
    let blank = |a: &clap::Arg| {
        a.get_env()
            .and_then(|v| v.to_str())
            .and_then(env)
            .is_some_and(|v| v.trim().is_empty())
    };
    let ids: Vec<clap::Id> = command
        .get_arguments()
        .filter(|a| blank(a))
        .map(|a| a.get_id().clone())
        .collect();
    for id in ids {
        command = command.mut_arg(id, |a| a.env(None));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |c| without_blank_env(c, env));
    }
    command
}

/// Adds "from environment variable X" to an invalid-value error whose flag
/// has a variable that is set while the flag is not on the command line.
fn with_env_source(
    mut error: clap::Error,
    command: &mut clap::Command,
    argv: &[std::ffi::OsString],
    env: impl Fn(&str) -> Option<String>,
) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return error;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    // "--flag <VALUE>" or "--flag[=<VALUE>]": the long name.
    let long = shown
        .trim_start_matches("--")
        .split([' ', '=', '[', '<'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let on_command_line = argv.iter().any(|a| {
        a.to_str().is_some_and(|a| {
            a.strip_prefix("--")
                .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
        })
    });
    if on_command_line {
        return error;
    }
    command.build();
    let commands = std::iter::once(&*command).chain(command.get_subcommands());
    let variable = commands
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env())
        .and_then(|v| v.to_str())
        .map(str::to_owned);
    if let Some(variable) = variable.filter(|v| env(v).is_some()) {
        error.insert(
            ContextKind::InvalidArg,
            ContextValue::String(format!("{shown} (from environment variable {variable})")),
        );
    }
    error
}

/// The arguments of a command this build leaves out, taken as they come
/// (`--help` included), so that the command says it is not built rather
/// than failing on its first flag.
#[derive(Debug, Clone, Args)]
pub struct NotBuilt {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub(crate) args: Vec<String>,
}

/// What `demo` and `emulate` answer in a build without the `emulator`
/// feature: a configuration error (exit code 2) that says how to get them.
#[cfg(any(test, not(feature = "emulator")))]
pub fn not_in_this_build(command: &str) -> CommandError {
    CommandError::invalid(format!(
        "`{command}` is not in this build: it was built without the `emulator` cargo feature \
         (`--no-default-features`, as the container image is); build with the default features \
         to run it, for example `cargo run --release -- {command}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The note on a bad value names the variable only when the value
    /// came from it: the variable is set and the flag is not on the command line.
    #[test]
    fn a_bad_value_names_its_variable_only_when_it_came_from_it() {
        let env = |set: &[(&str, &str)]| {
            let set: Vec<(String, String)> = set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| set.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let error = || {
            Cli::command()
                .try_get_matches_from(["w", "serve", "--prometheus-query-timeout=soon"])
                .unwrap_err()
        };
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            // The flag is on the command line: the value is its.
            (
                &["w", "serve", "--prometheus-query-timeout=soon"],
                &[("PROMETHEUS_QUERY_TIMEOUT", "soon")],
                false,
            ),
            (
                &["w", "serve", "--prometheus-query-timeout", "soon"],
                &[("PROMETHEUS_QUERY_TIMEOUT", "soon")],
                false,
            ),
            // Not on the command line, variable set: from the variable.
            (
                &["w", "serve"],
                &[("PROMETHEUS_QUERY_TIMEOUT", "soon")],
                true,
            ),
            // Neither (cannot happen for a value error, but no false note).
            (&["w", "serve"], &[], false),
        ];
        for (argv, vars, named) in cases {
            let argv: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
            let e = with_env_source(error(), &mut Cli::command(), &argv, env(vars)).to_string();
            assert_eq!(
                e.contains("(from environment variable PROMETHEUS_QUERY_TIMEOUT)"),
                *named,
                "{argv:?} {vars:?}: {e}"
            );
        }
    }

    #[test]
    fn flags_of_other_commands_point_to_this_one() {
        let argv = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        for (args, want) in [
            (&["w", "serve", "--port", "8443"][..], Some("--secure-port")),
            (&["w", "serve", "--port=8443"], Some("--secure-port")),
            (&["w", "serve", "--bind", "0.0.0.0"], Some("--bind-address")),
            (&["w", "serve", "--nonsense"], None),
        ] {
            let e = parse_cli(argv(args), |_| None).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            let text = e.to_string();
            match want {
                Some(to) => assert!(
                    text.contains(&format!("a similar argument exists: '{to}'")),
                    "{args:?}: {text}"
                ),
                None => assert!(!text.contains("similar argument"), "{text}"),
            }
        }
    }

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["wva-metrics-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().command
    }

    #[test]
    fn a_command_left_out_says_so_and_exits_2() {
        let error = not_in_this_build("demo");
        assert_eq!(
            error.to_string(),
            "`demo` is not in this build: it was built without the `emulator` cargo feature \
             (`--no-default-features`, as the container image is); build with the default \
             features to run it, for example `cargo run --release -- demo`"
        );
        assert_eq!(error.exit_code(), crate::fatal::EXIT_INVALID_CONFIGURATION);
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
