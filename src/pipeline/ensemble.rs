//! The `ensemble` section: stochastic or deterministic mode, passes, noise (level, region, where
//! it is drawn), seed and aggregation, with their defaults.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ensemble {
    pub mode: Mode,
    pub passes: usize,
    pub sigma: f32,
    pub noise_region: NoiseRegion,
    /// Where the noise is drawn: `host` (the reference: one ChaCha8 stream per slice) or
    /// `device` (an ONNX Runtime graph before each model, on the model's provider; see
    /// `infer::noise` for how the two differ).
    pub noise_on: NoiseOn,
    pub seed: u64,
    pub aggregation: Aggregation,
    /// Also run the deterministic ensemble (same models, no noise, one pass each) in the same
    /// run and report it beside the stochastic one (stochastic mode only).
    pub compare_deterministic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Stochastic,
    Deterministic,
}

impl Mode {
    /// The name the config and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stochastic => "stochastic",
            Mode::Deterministic => "deterministic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseRegion {
    Volume,
    Brain,
}

impl NoiseRegion {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            NoiseRegion::Volume => "volume",
            NoiseRegion::Brain => "brain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseOn {
    Host,
    Device,
}

impl NoiseOn {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            NoiseOn::Host => "host",
            NoiseOn::Device => "device",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    MeanLogit,
    MeanProbability,
}

impl Aggregation {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::MeanLogit => "mean_logit",
            Aggregation::MeanProbability => "mean_probability",
        }
    }
}

impl Default for Ensemble {
    fn default() -> Self {
        Ensemble {
            mode: Mode::Stochastic,
            passes: 10,
            sigma: 0.2,
            noise_region: NoiseRegion::Volume,
            noise_on: NoiseOn::Host,
            seed: 0,
            aggregation: Aggregation::MeanLogit,
            compare_deterministic: false,
        }
    }
}
