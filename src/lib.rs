//! stochseg: uncertainty-aware brain-tumor segmentation with a stochastic ensemble of ONNX
//! U-Nets. Data flows one way: `io` (files to a `Case`) -> `preprocess` -> `ensemble` (models x
//! noisy passes through `window` and `infer`) -> `aggregate` -> `blobs` and `stats` -> `report`
//! and the writers, orchestrated per case by `run`. The binary (`src/bin/stochseg/`) only
//! parses flags; `cli_config` turns their values into checked library values.

pub mod aggregate;
pub mod blobs;
pub mod cancel;
pub mod cli_config;
pub mod compare;
pub mod doctor;
pub mod ensemble;
pub mod error;
pub mod estimate;
pub mod evaluate;
pub mod figures;
pub mod guard;
pub mod infer;
pub mod install;
pub mod io;
pub mod lesionwise;
pub mod output;
pub mod pipeline;
pub mod preprocess;
pub mod progress;
pub mod regions;
pub mod report;
pub mod resources;
pub mod results;
pub mod run;
pub mod schema;
pub mod seg;
pub mod stats;
pub mod streams;
pub mod summarize;
pub mod text;
pub mod uncertainty;
pub mod validate;
pub mod vec3;
pub mod volume;
pub mod window;
pub mod yaml;

pub use error::{Error, ExitCode};
