//! How a fatal error reaches the user: one message, printed once, and an
//! exit code that tells a configuration mistake (2, as for a bad flag) from
//! a failure of the environment (1). Pure: `main` does the printing.

use std::error::Error;

/// Exit code of a failure the user can fix in what they gave the program
/// (a flag, a file, an environment variable): the same as clap's for a bad
/// flag.
pub(crate) const EXIT_INVALID_CONFIGURATION: u8 = 2;
/// Exit code of every other fatal error.
pub(crate) const EXIT_FAILURE: u8 = 1;

/// A mistake in the configuration given at start-up, with what to do about
/// it. Anywhere in an error's chain, it makes the exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfiguration(pub String);

/// The exit code for a fatal error: 2 when its chain holds a configuration
/// mistake, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    use crate::collector::CollectorError;
    use crate::server::tls::TlsError;
    let invalid = error.chain().any(|e| {
        e.is::<InvalidConfiguration>()
            || e.is::<crate::inventory::file::InventoryFileError>()
            || e.is::<crate::collector::prometheus::ConfigError>()
            || matches!(
                e.downcast_ref::<CollectorError>(),
                Some(CollectorError::Configuration { .. })
            )
            // A certificate or key file given on the command line that is
            // missing or unusable (not a failure to generate one).
            || e
                .downcast_ref::<TlsError>()
                .is_some_and(|t| !matches!(t, TlsError::Generate(_)))
    });
    if invalid {
        EXIT_INVALID_CONFIGURATION
    } else {
        EXIT_FAILURE
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
        assert_eq!(exit_code(&e), EXIT_INVALID_CONFIGURATION);
        let other =
            anyhow::Error::new(std::fs::read("/nonexistent/wva-metrics-server/y").unwrap_err())
                .context("cannot bind");
        assert_eq!(exit_code(&other), EXIT_FAILURE);
    }

    #[test]
    fn configuration_mistakes_exit_with_2() {
        let e = anyhow::Error::new(InvalidConfiguration("PROMETHEUS_URL is not set".into()))
            .context("cannot start");
        assert_eq!(exit_code(&e), EXIT_INVALID_CONFIGURATION);
        assert_eq!(exit_code(&anyhow::anyhow!("cannot bind")), EXIT_FAILURE);
    }
}
