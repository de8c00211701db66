//! The `Pipeline` itself: the config's top level with its defaults, the config a run made of
//! command-line models only, and the values derived from several sections (reference channel,
//! passes per model, effective noise sigma).

use serde::{Deserialize, Serialize};

use super::blobs::Blobs;
use super::declarations::RegionDecl;
use super::dicom::{DicomInput, DicomOutput};
use super::ensemble::{Ensemble, Mode};
use super::execution::Execution;
use super::inference::{Inference, Limits, Preprocess};
use super::models::ModelSpec;
use super::outputs::Outputs;
use crate::volume::AxisCodes;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    #[serde(default = "default_orientation")]
    pub orientation: AxisCodes,
    pub models: Vec<ModelSpec>,
    /// The tumor regions the run reports (`regions::RegionPlan`); empty: derived from what the
    /// models declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionDecl>,
    #[serde(default)]
    pub preprocess: Preprocess,
    #[serde(default)]
    pub inference: Inference,
    #[serde(default)]
    pub ensemble: Ensemble,
    #[serde(default)]
    pub blobs: Blobs,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub execution: Execution,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub dicom: DicomInput,
    #[serde(default)]
    pub dicom_output: DicomOutput,
}

/// The default reference channel of the SEGs: BraTS's T2-FLAIR.
const DEFAULT_REFERENCE_CHANNEL: &str = "t2f";

fn default_name() -> String {
    "unnamed".to_string()
}
fn default_channels() -> Vec<String> {
    ["t1n", "t1c", "t2w", "t2f"].map(String::from).to_vec()
}
fn default_orientation() -> AxisCodes {
    AxisCodes::LPS
}

impl Pipeline {
    /// The config used when only `--model` is given.
    pub fn from_models(models: Vec<ModelSpec>) -> Pipeline {
        Pipeline {
            name: "command-line".to_string(),
            description: String::new(),
            channels: default_channels(),
            orientation: default_orientation(),
            models,
            regions: Vec::new(),
            preprocess: Preprocess::default(),
            inference: Inference::default(),
            ensemble: Ensemble::default(),
            blobs: Blobs::default(),
            outputs: Outputs::default(),
            execution: Execution::default(),
            limits: Limits::default(),
            dicom: DicomInput::default(),
            dicom_output: DicomOutput::default(),
        }
    }

    /// The channel whose series the SEGs reference: `dicom_output.reference_channel`, else
    /// `t2f` (FLAIR, where the whole tumor's extent shows; docs/dicom.md) when it is one of the
    /// channels, else the first channel.
    pub fn reference_channel(&self) -> &str {
        let default = || {
            self.channels
                .iter()
                .find(|c| c.as_str() == DEFAULT_REFERENCE_CHANNEL)
                .or(self.channels.first())
        };
        self.dicom_output
            .reference_channel
            .as_ref()
            .or_else(default)
            .map_or(DEFAULT_REFERENCE_CHANNEL, String::as_str)
    }

    /// Passes per model: K in stochastic mode, one in deterministic mode.
    pub fn passes_per_model(&self) -> usize {
        match self.ensemble.mode {
            Mode::Stochastic => self.ensemble.passes,
            Mode::Deterministic => 1,
        }
    }

    /// Noise sigma actually applied (zero in deterministic mode).
    pub fn effective_sigma(&self) -> f32 {
        match self.ensemble.mode {
            Mode::Stochastic => self.ensemble.sigma,
            Mode::Deterministic => 0.0,
        }
    }
}
