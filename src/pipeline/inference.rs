//! How a case is prepared and windowed: the `preprocess`, `inference` and `limits` sections,
//! with their defaults.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preprocess {
    pub normalization: Normalization,
    pub crop_to_nonzero: bool,
    pub crop_margin_voxels: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    ZscoreNonzero,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inference {
    pub overlap: f64,
    pub weighting: Weighting,
    pub batch_size: usize,
    pub max_batch_voxels: usize,
    pub outside_logit: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    Gaussian,
    Constant,
}

impl Weighting {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Weighting::Gaussian => "gaussian",
            Weighting::Constant => "constant",
        }
    }
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            normalization: Normalization::ZscoreNonzero,
            crop_to_nonzero: true,
            crop_margin_voxels: 0,
        }
    }
}
impl Default for Inference {
    fn default() -> Self {
        Inference {
            overlap: 0.5,
            weighting: Weighting::Gaussian,
            batch_size: 4,
            max_batch_voxels: 1 << 18,
            outside_logit: -10.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_voxels: usize,
    /// Refuse a case whose run is estimated (`crate::estimate`, from the headers) to need more.
    pub max_memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // 512^3 voxels: a 4-channel f32 case of that size needs about 2 GiB for the inputs alone
        Limits {
            max_voxels: 512 * 512 * 512,
            // far above a BraTS case (about 1 GiB with the study's 30 passes), far below what
            // a 512^3 case with many passes would take
            max_memory_mib: 32 * 1024,
        }
    }
}
