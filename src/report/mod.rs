//! The per-case report: its types (`types`, as `schemas/report.schema.yaml` describes them), and
//! how a run's facts become one (`build`). Serialized as YAML and JSON, validated against the
//! schema before it is written.

mod build;
mod types;

pub use build::{build, EnsembleCost, Facts};
pub use types::*;
