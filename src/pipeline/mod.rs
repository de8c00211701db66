//! The pipeline config: what a run does, with defaults, loaded from YAML, validated against
//! `schemas/pipeline.schema.yaml` (unknown keys rejected; errors name the key path), then
//! overridden by command-line values. Model paths are resolved relative to the config file.
//!
//! One module per job: `config` (the top level), a module per section (`ensemble`,
//! `inference`, `blobs`, `outputs`, `execution`, `dicom`, `models`, `declarations`), `load`
//! (reading and checking a file), `overrides` (command-line values) and `error`. Every type is
//! re-exported here, so the rest of the crate writes `crate::pipeline::X`.

mod blobs;
mod config;
mod declarations;
mod dicom;
mod ensemble;
mod error;
mod execution;
mod inference;
mod load;
mod models;
mod outputs;
mod overrides;

pub use blobs::{Blobs, Decision, Decisions};
pub use config::Pipeline;
pub use declarations::{ClassDecl, OutputDecl, RegionDecl};
pub use dicom::{DicomInput, DicomOutput, SegBlobs, SeriesRule};
pub use ensemble::{Aggregation, Ensemble, Mode, NoiseOn, NoiseRegion};
pub use error::{ConfigError, ConfigProblem};
pub use execution::{
    ConvSearch, CudaOptions, Device, Execution, OpenVinoOptions, Precision, TensorRtOptions,
    UnknownDevice,
};
pub use inference::{Inference, Limits, Normalization, Preprocess, Weighting};
pub use models::{parse_model_arg, ModelSpec};
pub use outputs::{MapKind, Outputs, UncertaintyMeasure, LABEL_MAP_FILE, PASS_MAPS_DIR};
pub use overrides::Overrides;
