//! The library's error and the exit codes workflow engines see.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also with zero blobs) |
//! | 2 | usage or pipeline config error |
//! | 3 | input rejected |
//! | 4 | model or inference failure (including a missing ONNX Runtime or execution provider) |
//! | 5 | output failure |
//! | 130 | interrupted |

use crate::infer::ModelError;
use crate::io::InputError;
use crate::output::OutputError;
use crate::pipeline::ConfigError;

/// Process exit codes, a contract with workflow engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    Usage = 2,
    Input = 3,
    Model = 4,
    Output = 5,
    Interrupted = 130,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("interrupted")]
    Interrupted,
}

/// `s` with control characters (a newline inside a YAML key, say) shown as escapes, so that a
/// message that quotes user input stays on one line.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Usage,
            Error::Input(_) => ExitCode::Input,
            Error::Model(ModelError::Interrupted) | Error::Interrupted => ExitCode::Interrupted,
            Error::Model(_) => ExitCode::Model,
            Error::Output(_) => ExitCode::Output,
        }
    }
}
