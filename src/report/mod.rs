//! The per-case report: its types (`types`, as `schemas/report.schema.yaml` describes them), how
//! a run's facts become one (`build`), and how a written report is read back as one (`read`).
//! Serialized as YAML and JSON, validated against the schema before it is written.

mod build;
mod read;
mod types;

pub use build::{build, EnsembleCost, Facts};
#[cfg(test)]
pub(crate) use read::sample;
pub use read::{parse, read, ReadError};
pub use types::*;
