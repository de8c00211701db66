//! The model seam: a `Model` maps a batch of patches to its output channels, and says what
//! it is (`ModelInfo`: the file's tensors and metadata) and what its channels mean (its outputs
//! declaration, see `regions`). The window, ensemble and aggregation code is tested with the
//! plain-Rust models of `testing`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::{Array5, ArrayView5};

use crate::pipeline::{Device, OutputDecl};

/// Model or inference failure (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library not found; tried: {tried}. Run `make setup` (installs the onnxruntime wheel into .venv) or `make install` again (an installed tree), pass --ort-lib PATH, or set ORT_DYLIB_PATH")]
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
    #[error(transparent)]
    Regions(#[from] crate::regions::RegionError),
    #[error("{0}")]
    Provider(String),
    #[error("interrupted")]
    Interrupted,
}

/// A tensor as the graph declares it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub element_type: String,
    /// Dimensions; -1 where dynamic.
    pub shape: Vec<i64>,
    pub dimension_names: Vec<String>,
}

/// What a model file declares, for `inspect` and the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub sha256: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
}

/// Where a model runs, for the log and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub device: Device,
    /// `f32`, or `bf16` / `fp16` where the provider computes in less.
    pub precision: &'static str,
    /// The library of a provider loaded as a plugin (OpenVINO).
    pub plugin: Option<PluginIdentity>,
}

impl Placement {
    /// ONNX Runtime's own CPU provider, at f32.
    pub const CPU: Placement = Placement {
        device: Device::Cpu,
        precision: "f32",
        plugin: None,
    };
}

/// A plugin provider's library and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIdentity {
    pub library: PathBuf,
    pub version: String,
}

/// `batch_size` capped so that a batch of `patch`es holds at most `max_batch_voxels` voxels
/// (large patches run one at a time: on the CPU a batch costs the same per patch, and the
/// activations of a big batch cost memory).
pub fn capped_batch(patch: [usize; 3], batch_size: usize, max_batch_voxels: usize) -> usize {
    let voxels: usize = patch.iter().product();
    batch_size
        .min((max_batch_voxels / voxels.max(1)).max(1))
        .max(1)
}

/// A segmentation network that maps a batch of patches `(N, C, D, H, W)` to its output
/// channels `(N, K, D, H, W)` (`K = output_channels()`).
pub trait Model {
    /// Name used in logs and the report.
    fn name(&self) -> &str;
    /// What the model file declares.
    fn info(&self) -> &ModelInfo;
    /// The execution provider the model runs on, its precision and plugin.
    fn placement(&self) -> Placement {
        Placement::CPU
    }
    /// The execution provider the model runs on.
    fn device(&self) -> Device {
        self.placement().device
    }
    /// Channels of each output patch.
    fn output_channels(&self) -> usize {
        1
    }
    /// What the output channels are (see `regions`).
    fn outputs(&self) -> &OutputDecl;
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
    fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array5<f32>, ModelError>;
    /// Runs one batch after adding Gaussian noise where `mask` (`(N, 1, D, H, W)`) is 1, on the
    /// model's own device (`ensemble.noise_on: device`, see `noise`).
    fn predict_noisy(
        &mut self,
        batch: ArrayView5<f32>,
        mask: ArrayView5<f32>,
    ) -> Result<Array5<f32>, ModelError> {
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
    fn info(&self) -> &ModelInfo {
        (**self).info()
    }
    fn placement(&self) -> Placement {
        (**self).placement()
    }
    fn output_channels(&self) -> usize {
        (**self).output_channels()
    }
    fn outputs(&self) -> &OutputDecl {
        (**self).outputs()
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
    fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array5<f32>, ModelError> {
        (**self).predict(batch)
    }
    fn predict_noisy(
        &mut self,
        batch: ArrayView5<f32>,
        mask: ArrayView5<f32>,
    ) -> Result<Array5<f32>, ModelError> {
        (**self).predict_noisy(batch, mask)
    }
}

/// Plain-Rust models for tests of the code around the backend.
#[cfg(test)]
pub mod testing {
    use super::*;
    use ndarray::{Axis, Zip};

    /// A pointwise linear model: output channel k is `sum_c w[k][c] x[c] + b[k]`, voxel by voxel
    /// (by default one channel, `first channel + 1`).
    pub struct Pointwise {
        patch: [usize; 3],
        batch: Option<usize>,
        /// `(weights per input channel, bias)` of each output channel.
        outputs: Vec<(Vec<f32>, f32)>,
        declared: OutputDecl,
        info: ModelInfo,
        pub full_batches: bool,
        pub batch_sizes_seen: Vec<usize>,
    }

    impl Pointwise {
        pub fn new(patch: [usize; 3], batch: Option<usize>) -> Pointwise {
            Pointwise::linear(patch, batch, vec![(vec![1.0], 1.0)])
        }

        /// Output channel k from `outputs[k] = (weights, bias)`.
        pub fn linear(
            patch: [usize; 3],
            batch: Option<usize>,
            outputs: Vec<(Vec<f32>, f32)>,
        ) -> Pointwise {
            let declared = OutputDecl::Logit(crate::pipeline::RegionDecl {
                name: crate::regions::DEFAULT_REGION.to_string(),
                labels: None,
            });
            Pointwise {
                patch,
                batch,
                outputs,
                declared,
                info: ModelInfo {
                    path: PathBuf::from("pointwise.onnx"),
                    sha256: String::new(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    metadata: BTreeMap::new(),
                },
                full_batches: false,
                batch_sizes_seen: Vec::new(),
            }
        }

        /// The same model, declaring its outputs as `declared`.
        pub fn declaring(self, declared: OutputDecl) -> Pointwise {
            Pointwise { declared, ..self }
        }
    }

    impl Model for Pointwise {
        fn name(&self) -> &str {
            "pointwise"
        }
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn output_channels(&self) -> usize {
            self.outputs.len()
        }
        fn outputs(&self) -> &OutputDecl {
            &self.declared
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
        fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array5<f32>, ModelError> {
            self.batch_sizes_seen.push(batch.shape()[0]);
            let (n, [d, h, w]) = (batch.shape()[0], self.patch);
            let mut out = Array5::zeros((n, self.outputs.len(), d, h, w));
            for (k, (weights, bias)) in self.outputs.iter().enumerate() {
                let mut channel = out.index_axis_mut(Axis(1), k);
                for (c, &wc) in weights.iter().enumerate() {
                    Zip::from(&mut channel)
                        .and(&batch.index_axis(Axis(1), c))
                        .for_each(|o, &x| *o += wc * x);
                }
                channel.mapv_inplace(|o| o + bias);
            }
            Ok(out)
        }
        /// "Noise" that shows the mask: every output channel gets `+ 10 * mask`.
        fn predict_noisy(
            &mut self,
            batch: ArrayView5<f32>,
            mask: ArrayView5<f32>,
        ) -> Result<Array5<f32>, ModelError> {
            let mut out = self.predict(batch)?;
            for mut channel in out.axis_iter_mut(Axis(1)) {
                channel.zip_mut_with(&mask.index_axis(Axis(1), 0), |o, &m| *o += 10.0 * m);
            }
            Ok(out)
        }
    }
}
