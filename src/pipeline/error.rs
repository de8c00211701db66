//! The configuration's error type: problems with the pipeline config or the command line, all
//! exit code 2.

use std::path::PathBuf;

/// Problems with the configuration or the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read pipeline config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {reason}")]
    Yaml { path: PathBuf, reason: String },
    #[error("{path}: {problem}")]
    Schema { path: PathBuf, problem: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// The same error with control characters in its text escaped.
    pub(super) fn one_line(self) -> ConfigError {
        use crate::text::escape_controls as esc;
        match self {
            ConfigError::Yaml { path, reason } => ConfigError::Yaml {
                path,
                reason: esc(&reason),
            },
            ConfigError::Schema { path, problem } => ConfigError::Schema {
                path,
                problem: esc(&problem),
            },
            ConfigError::Invalid(s) => ConfigError::Invalid(esc(&s)),
            other => other,
        }
    }
}
