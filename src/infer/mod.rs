//! Model execution. Two seams: a `Backend` opens and describes models (`backend`), and a
//! `Model` runs batches of patches (`model`). ONNX Runtime (`ort`, reached through
//! [`onnx_runtime`]) is one backend, and nothing outside this module names its types:
//! `runtime` finds and loads the library, `providers` places sessions on execution providers
//! (`openvino` registers the OpenVINO plugin provider), and device noise (`noise`) is an ONNX Runtime feature behind `Backend::open`.

mod backend;
mod model;
pub mod noise;
pub mod openvino;
pub mod ort;
pub mod providers;
pub mod runtime;

pub use crate::pipeline::Device;
pub use backend::{open_models, Backend, Engine, NoiseOnDevice, SessionOptions, Threads};
#[cfg(test)]
pub use model::testing;
pub use model::{
    capped_batch, Model, ModelError, ModelInfo, Placement, PluginIdentity, TensorInfo,
};
pub use providers::ProviderPlan;

/// The ONNX Runtime backend (loads the library once per process).
pub fn onnx_runtime(opts: SessionOptions) -> Result<Box<dyn Backend>, ModelError> {
    Ok(Box::new(ort::OrtBackend::new(opts)?))
}

/// A model's inputs, outputs and metadata (`stochseg inspect`), read with ONNX Runtime's CPU
/// provider from `library` (None: the usual search).
pub fn inspect(
    library: Option<std::path::PathBuf>,
    model: &std::path::Path,
) -> Result<ModelInfo, ModelError> {
    let backend = onnx_runtime(SessionOptions {
        library,
        plan: ProviderPlan::cpu_only(),
        threads: Threads::ONE,
        batch_size: 1,
        max_batch_voxels: 1,
    })?;
    backend.describe(model)
}
