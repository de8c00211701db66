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
use crate::report::{ReadError, ReportError};

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
    /// The report could not be serialized or does not conform to its schema (an output failure).
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A written report that cannot be read back (`evaluate`, `summarize`): input rejected.
    #[error(transparent)]
    ReportRead(#[from] ReadError),
    #[error("interrupted")]
    Interrupted,
    /// A check of `stochseg doctor` failed: which one, and why (the cause's exit code).
    #[error("doctor: {check}: {source}")]
    Check {
        check: &'static str,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Usage,
            Error::Input(_) | Error::ReportRead(_) => ExitCode::Input,
            Error::Model(ModelError::Interrupted) | Error::Interrupted => ExitCode::Interrupted,
            Error::Model(_) => ExitCode::Model,
            Error::Output(_) | Error::Report(_) => ExitCode::Output,
            Error::Check { source, .. } => source.exit_code(),
        }
    }
}
