//! How a fatal error reaches the user: one message, printed once, and a
//! class ([`CommandError`]) that decides the exit code (the README's table:
//! 0 success, 1 runtime failure, 2 configuration or usage) and, where the
//! same error reaches a client, the HTTP status of the answer. Pure: `main`
//! does the printing.

use std::error::Error;

/// Exit code of a failure the user can fix in what they gave the program
/// (a flag, a file, an environment variable): the same as clap's for a bad
/// flag.
pub(crate) const EXIT_INVALID_CONFIGURATION: u8 = 2;
/// Exit code of every other fatal error.
pub(crate) const EXIT_FAILURE: u8 = 1;

/// A mistake in the configuration given at start-up, with what to do about
/// it. Anywhere in an error's chain, it makes the error a
/// [`CommandError::Configuration`] (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfiguration(pub String);

/// Why a command failed, by who can fix it. Every command's failure goes
/// through it on its way out of `main`: its class decides the exit code,
/// and the HTTP status where the same failure answers a client.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The command line does not parse (an unknown flag, a bad value).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A mistake in what the user gave the program (a flag's value, a file
    /// it names, an environment variable), found before anything ran.
    #[error(transparent)]
    Configuration(anyhow::Error),
    /// The environment failed: a port taken, no cluster, a backend gone.
    #[error(transparent)]
    Runtime(anyhow::Error),
}

impl CommandError {
    /// A configuration mistake said in words.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        CommandError::Configuration(InvalidConfiguration(message.into()).into())
    }

    /// A configuration mistake carried by a typed error (a file that does
    /// not parse, with its path and line).
    pub(crate) fn configuration(
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> anyhow::Error {
        CommandError::Configuration(anyhow::Error::new(error)).into()
    }

    /// The process exit code: 2 for usage and configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) | CommandError::Configuration(_) => EXIT_INVALID_CONFIGURATION,
            CommandError::Runtime(_) => EXIT_FAILURE,
        }
    }

    /// The HTTP status of an answer this failure decides: a request the
    /// client must change is 400; a server that was given a configuration
    /// it cannot work with is 500 (retrying does not help); a failure of
    /// the environment is 503 (retrying may).
    pub fn status_code(&self) -> http::StatusCode {
        match self {
            CommandError::Usage(_) => http::StatusCode::BAD_REQUEST,
            CommandError::Configuration(_) => http::StatusCode::INTERNAL_SERVER_ERROR,
            CommandError::Runtime(_) => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn is_configuration(&self) -> bool {
        matches!(
            self,
            CommandError::Usage(_) | CommandError::Configuration(_)
        )
    }
}

/// Classifies an error by its chain: a configuration mistake anywhere in it
/// (a [`CommandError`] that is one, [`InvalidConfiguration`], an inventory
/// file, a backend setting, a certificate or key file given on the command
/// line) makes it [`CommandError::Configuration`]; anything else is
/// [`CommandError::Runtime`]. An error that is a `CommandError` keeps it.
impl From<anyhow::Error> for CommandError {
    fn from(error: anyhow::Error) -> Self {
        use crate::collector::CollectorError;
        use crate::server::tls::TlsError;
        let error = match error.downcast::<CommandError>() {
            Ok(classified) => return classified,
            Err(error) => error,
        };
        let invalid = error.chain().any(|e| {
            e.downcast_ref::<CommandError>()
                .is_some_and(CommandError::is_configuration)
                || e.is::<InvalidConfiguration>()
                || e.is::<clap::Error>()
                || e.is::<crate::inventory::file::InventoryFileError>()
                || e.is::<crate::collector::prometheus::ConfigError>()
                || matches!(
                    e.downcast_ref::<CollectorError>(),
                    Some(CollectorError::Configuration { .. })
                )
                // A certificate or key file given on the command line that
                // is missing or unusable (not a failure to generate one).
                || e
                    .downcast_ref::<TlsError>()
                    .is_some_and(|t| !matches!(t, TlsError::Generate(_)))
        });
        if invalid {
            CommandError::Configuration(error)
        } else {
            CommandError::Runtime(error)
        }
    }
}

impl From<InvalidConfiguration> for CommandError {
    fn from(error: InvalidConfiguration) -> Self {
        CommandError::Configuration(error.into())
    }
}

/// The error and its causes on one line, each piece said once.
///
/// Many errors already include their source in their own message (kube's
/// kubeconfig errors nest three deep this way, `std::io::Error` repeats its
/// text), so a cause whose text the message already holds is left out.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: String,
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    }

    fn chain(texts: &[&str]) -> Box<dyn Error + Send + Sync> {
        let mut source: Option<Box<dyn Error + Send + Sync>> = None;
        for t in texts.iter().rev() {
            source = Some(Box::new(Layer {
                text: (*t).to_owned(),
                source,
            }));
        }
        source.unwrap_or_else(|| {
            Box::new(Layer {
                text: String::new(),
                source: None,
            })
        })
    }

    #[test]
    fn each_piece_of_the_chain_is_said_once() {
        let table: &[(&[&str], &str)] = &[
            (&["a"], "a"),
            (&["a", "b", "c"], "a: b: c"),
            // A cause that repeats itself (std::io::Error inside a wrapper).
            (
                &["cannot read x.yaml: No such file or directory (os error 2)", "No such file or directory (os error 2)"],
                "cannot read x.yaml: No such file or directory (os error 2)",
            ),
            // Errors that format their whole chain into their message.
            (
                &["no cluster: failed to infer config: in-cluster: (no env), kubeconfig: (no file)", "failed to infer config: in-cluster: (no env), kubeconfig: (no file)", "kubeconfig: (no file)"],
                "no cluster: failed to infer config: in-cluster: (no env), kubeconfig: (no file)",
            ),
            (&["outer", "", "inner"], "outer: inner"),
        ];
        for (texts, want) in table {
            let e = chain(texts);
            assert_eq!(one_line(e.as_ref()), *want, "{texts:?}");
        }
    }

    #[test]
    fn a_real_io_error_is_not_repeated() {
        // The inventory file error says its io cause and also returns it as
        // its source, as thiserror's `source` fields do.
        let path = std::path::PathBuf::from("/nonexistent/wva-metrics-server/x");
        let source = std::fs::read(&path).unwrap_err();
        let e =
            anyhow::Error::new(crate::inventory::file::InventoryFileError::Read { path, source });
        let line = one_line(e.as_ref());
        assert_eq!(line.matches("os error 2").count(), 1, "{line}");
        assert_eq!(
            CommandError::from(e).exit_code(),
            EXIT_INVALID_CONFIGURATION
        );
        let other =
            anyhow::Error::new(std::fs::read("/nonexistent/wva-metrics-server/y").unwrap_err())
                .context("cannot bind");
        assert_eq!(CommandError::from(other).exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn configuration_mistakes_exit_with_2() {
        let e = anyhow::Error::new(InvalidConfiguration("PROMETHEUS_URL is not set".into()))
            .context("cannot start");
        assert_eq!(
            CommandError::from(e).exit_code(),
            EXIT_INVALID_CONFIGURATION
        );
        assert_eq!(
            CommandError::from(anyhow::anyhow!("cannot bind")).exit_code(),
            EXIT_FAILURE
        );
    }

    /// The README's exit-code table and the status of the same failure,
    /// one row per class and per way an error is classified.
    #[test]
    fn each_class_decides_its_exit_code_and_status() {
        use http::StatusCode;
        let usage = clap::Error::raw(
            clap::error::ErrorKind::UnknownArgument,
            "unexpected argument '--nonsense'",
        );
        let missing_file = anyhow::Error::new(
            std::fs::read("/nonexistent/wva-metrics-server/inventory").unwrap_err(),
        );
        use crate::collector::CollectorError;
        let backend = |e: CollectorError| CommandError::from(anyhow::Error::new(e));
        let table: Vec<(&str, CommandError, u8, StatusCode)> = vec![
            (
                "usage",
                CommandError::from(usage),
                2,
                StatusCode::BAD_REQUEST,
            ),
            (
                "said in words",
                CommandError::invalid("--leader-elect needs --inventory kube"),
                2,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "a marker deep in the chain",
                CommandError::from(
                    anyhow::Error::new(InvalidConfiguration("no URL".into()))
                        .context("cannot start"),
                ),
                2,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "a classified error under context keeps its class",
                CommandError::from(
                    CommandError::configuration(InvalidConfiguration("bad file".into()))
                        .context("loading"),
                ),
                2,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "a backend setting",
                backend(CollectorError::Configuration {
                    backend: "prometheus",
                    message: "not a URL".into(),
                }),
                2,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                "a backend that cannot be reached",
                backend(CollectorError::Unreachable {
                    backend: "prometheus",
                    message: "connection refused".into(),
                }),
                1,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                "an unclassified I/O failure",
                CommandError::from(missing_file.context("cannot bind")),
                1,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                "a runtime failure stays one",
                CommandError::from(anyhow::Error::new(CommandError::Runtime(anyhow::anyhow!(
                    "no cluster"
                )))),
                1,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (what, error, exit, status) in table {
            assert_eq!(
                (error.exit_code(), error.status_code()),
                (exit, status),
                "{what}: {error}"
            );
        }
    }
}
