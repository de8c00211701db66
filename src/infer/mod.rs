//! Model execution. `Model` is the seam between the ensemble and a backend: the window,
//! ensemble and aggregation code is tested with plain-Rust models, and ONNX Runtime (`ort`
//! module) is one implementation. `runtime` finds and loads the ONNX Runtime library,
//! `providers` and `openvino` put sessions on execution providers.

pub mod noise;
pub mod openvino;
pub mod ort;
pub mod providers;
pub mod runtime;

use std::path::PathBuf;

use ndarray::{Array4, ArrayView5};

/// Model or inference failure (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found; tried: {tried}. Run `make setup` (installs the onnxruntime wheel into .venv), pass --ort-lib PATH, or set ORT_DYLIB_PATH")]
    RuntimeNotFound { tried: String },
    #[error("{path}: cannot load ONNX Runtime: {reason}")]
    RuntimeLoad { path: PathBuf, reason: String },
    #[error("{path}: no such model file")]
    NotFound { path: PathBuf },
    #[error("{path}: cannot load model: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Incompatible { path: PathBuf, reason: String },
    #[error("{model}: inference failed: {reason}")]
    Inference { model: String, reason: String },
    #[error("{model}: output contains {count} NaN or infinite values")]
    NonFinite { model: String, count: usize },
    #[error("{0}")]
    Provider(String),
    #[error("interrupted")]
    Interrupted,
}

/// A segmentation network that maps a batch of patches `(N, C, D, H, W)` to one logit map per
/// patch `(N, D, H, W)`.
pub trait Model {
    /// Name used in logs and the report.
    fn name(&self) -> &str;
    /// Patch size `(D, H, W)` the model runs on.
    fn patch_size(&self) -> [usize; 3];
    /// Batch size the model requires, when its batch dimension is fixed.
    fn fixed_batch(&self) -> Option<usize>;
    /// Whether every call should get a full batch (the last one padded): on GPUs, where one
    /// shape per session avoids new algorithm searches or engine builds. Otherwise the last
    /// batch holds only the patches left.
    fn prefers_full_batches(&self) -> bool {
        false
    }
    /// Runs one batch.
    fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array4<f32>, ModelError>;
    /// Runs one batch after adding Gaussian noise where `mask` (`(N, 1, D, H, W)`) is 1, on the
    /// model's own device (`ensemble.noise_on: device`, see `noise`).
    fn predict_noisy(
        &mut self,
        batch: ArrayView5<f32>,
        mask: ArrayView5<f32>,
    ) -> Result<Array4<f32>, ModelError> {
        let _ = (batch, mask);
        Err(ModelError::Inference {
            model: self.name().to_string(),
            reason: "this model adds no noise on its device".to_string(),
        })
    }
}

/// A borrowed model is a model.
impl<M: Model + ?Sized> Model for &mut M {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn patch_size(&self) -> [usize; 3] {
        (**self).patch_size()
    }
    fn fixed_batch(&self) -> Option<usize> {
        (**self).fixed_batch()
    }
    fn prefers_full_batches(&self) -> bool {
        (**self).prefers_full_batches()
    }
    fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array4<f32>, ModelError> {
        (**self).predict(batch)
    }
    fn predict_noisy(
        &mut self,
        batch: ArrayView5<f32>,
        mask: ArrayView5<f32>,
    ) -> Result<Array4<f32>, ModelError> {
        (**self).predict_noisy(batch, mask)
    }
}

/// Plain-Rust models for tests of the code around the backend.
#[cfg(test)]
pub mod testing {
    use super::*;
    use ndarray::Axis;

    /// `first channel + 1`, voxel by voxel.
    pub struct Pointwise {
        patch: [usize; 3],
        batch: Option<usize>,
        pub full_batches: bool,
        pub batch_sizes_seen: Vec<usize>,
    }

    impl Pointwise {
        pub fn new(patch: [usize; 3], batch: Option<usize>) -> Pointwise {
            Pointwise {
                patch,
                batch,
                full_batches: false,
                batch_sizes_seen: Vec::new(),
            }
        }
    }

    impl Model for Pointwise {
        fn name(&self) -> &str {
            "pointwise"
        }
        fn patch_size(&self) -> [usize; 3] {
            self.patch
        }
        fn fixed_batch(&self) -> Option<usize> {
            self.batch
        }
        fn prefers_full_batches(&self) -> bool {
            self.full_batches
        }
        fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array4<f32>, ModelError> {
            self.batch_sizes_seen.push(batch.shape()[0]);
            Ok(batch.index_axis(Axis(1), 0).mapv(|v| v + 1.0))
        }
        /// "Noise" that shows the mask: `first channel + 1 + 10 * mask`.
        fn predict_noisy(
            &mut self,
            batch: ArrayView5<f32>,
            mask: ArrayView5<f32>,
        ) -> Result<Array4<f32>, ModelError> {
            let mut out = self.predict(batch)?;
            out.zip_mut_with(&mask.index_axis(Axis(1), 0), |o, &m| *o += 10.0 * m);
            Ok(out)
        }
    }
}
