//! The backend seam: a `Backend` opens the models of a pipeline (checking what they declare
//! against it, placing each on an execution provider) and describes model files, so that the
//! run, `validate` and the estimate never touch a runtime's own types.

use std::path::{Path, PathBuf};

use super::model::{Model, ModelError, ModelInfo};
use super::providers::ProviderPlan;
use crate::pipeline::{ModelSpec, NoiseOn, Pipeline};
use crate::streams::NoiseStreams;

/// ONNX Runtime's intra-op threads of each session.
#[derive(Debug, Clone, Copy)]
pub struct Threads {
    pub intra: usize,
    /// Spin between operators instead of sleeping.
    pub spinning: bool,
}

impl Threads {
    /// One thread, for sessions that only check or describe a model.
    pub const ONE: Threads = Threads {
        intra: 1,
        spinning: false,
    };
}

/// Where the backend's library came from, for the report.
#[derive(Debug, Clone)]
pub struct Engine {
    pub version: String,
    pub library: PathBuf,
}

/// Gaussian noise N(0, sigma^2) a model adds to its input on its own device before each call
/// (`ensemble.noise_on: device`), from the stream `seed`.
#[derive(Debug, Clone, Copy)]
pub struct NoiseOnDevice {
    pub sigma: f32,
    pub seed: u64,
}

/// Opens and describes models.
pub trait Backend {
    /// The library that runs the models.
    fn engine(&self) -> Engine;
    /// Opens `spec` for the pipeline's input `channels`, checks what it declares against them,
    /// and puts it on the first execution provider that can be had.
    fn open(
        &self,
        spec: &ModelSpec,
        channels: &[String],
        noise: Option<NoiseOnDevice>,
    ) -> Result<Box<dyn Model>, ModelError>;
    /// What a model file declares, without checking it against a pipeline.
    fn describe(&self, path: &Path) -> Result<ModelInfo, ModelError>;
}

/// How the ONNX Runtime backend makes its sessions.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// `--ort-lib`: the library to load instead of searching for it (see `runtime`).
    pub library: Option<PathBuf>,
    pub plan: ProviderPlan,
    pub threads: Threads,
    /// Patches per call for models with a dynamic batch dimension (capped by voxels, see
    /// `capped_batch`).
    pub batch_size: usize,
    pub max_batch_voxels: usize,
}

/// Opens every model of the pipeline, each with its device noise stream when noise is drawn on
/// the device.
pub fn open_models(
    backend: &dyn Backend,
    p: &Pipeline,
    streams: &NoiseStreams,
) -> Result<Vec<Box<dyn Model>>, ModelError> {
    let sigma = p.effective_sigma();
    let on_device = sigma > 0.0 && p.ensemble.noise_on == NoiseOn::Device;
    p.models
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let noise = on_device.then(|| NoiseOnDevice {
                sigma,
                seed: streams.device(index),
            });
            backend.open(spec, &p.channels, noise)
        })
        .collect()
}
