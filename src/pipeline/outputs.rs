//! The `outputs` section: which NIfTI maps a run writes and their file names, the uncertainty
//! measure, pass maps and figures.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    MeanLogits,
    StdLogits,
    Probability,
    Labels,
    Entropy,
    ExpectedEntropy,
    MutualInformation,
    LogitVarianceBetween,
    LogitVarianceWithin,
    /// `uncertainty-<region>.nii.gz`, uint8 0-100 (`outputs.uncertainty_measure`).
    Uncertainty,
}

/// The measure `uncertainty-<region>.nii.gz` scales to 0-100 (all three are in bits, 0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertaintyMeasure {
    /// Total: the entropy of the mean pass probability.
    #[default]
    Entropy,
    /// Epistemic: entropy minus the mean pass entropy.
    MutualInformation,
    /// Aleatoric: the mean pass entropy.
    ExpectedEntropy,
}

impl UncertaintyMeasure {
    /// The name the config and the maps' descriptions use.
    pub fn name(self) -> &'static str {
        match self {
            UncertaintyMeasure::Entropy => "entropy",
            UncertaintyMeasure::MutualInformation => "mutual_information",
            UncertaintyMeasure::ExpectedEntropy => "expected_entropy",
        }
    }
}

/// The folder of the pass maps (`outputs.pass_maps`).
pub const PASS_MAPS_DIR: &str = "passes";

/// The label map in the BraTS convention (runs whose regions give one, see `regions`).
pub const LABEL_MAP_FILE: &str = "labels-brats.nii.gz";

impl MapKind {
    /// The map's file name for `region`: with `-<region>` before the extension unless the
    /// region is the primary one (`mean_logits-TC.nii.gz`); the uncertainty map always names
    /// its region (`uncertainty-WT.nii.gz`).
    pub fn file_name_for(self, region: &str, primary: bool) -> String {
        let stem = self.file_name().trim_end_matches(".nii.gz");
        match (self, primary) {
            (MapKind::Uncertainty, _) | (_, false) => format!("{stem}-{region}.nii.gz"),
            _ => self.file_name().to_string(),
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            MapKind::MeanLogits => "mean_logits.nii.gz",
            MapKind::StdLogits => "std_logits.nii.gz",
            MapKind::Probability => "probability.nii.gz",
            MapKind::Labels => "labels.nii.gz",
            MapKind::Entropy => "entropy.nii.gz",
            MapKind::ExpectedEntropy => "expected_entropy.nii.gz",
            MapKind::MutualInformation => "mutual_information.nii.gz",
            MapKind::LogitVarianceBetween => "logit_variance_between.nii.gz",
            MapKind::LogitVarianceWithin => "logit_variance_within.nii.gz",
            MapKind::Uncertainty => "uncertainty.nii.gz",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    pub maps: Vec<MapKind>,
    pub histogram_bins: usize,
    /// What `uncertainty-<region>.nii.gz` shows.
    pub uncertainty_measure: UncertaintyMeasure,
    /// Also write every pass's region logits (`passes/<region>/<model>-pass<NN>.nii.gz`).
    pub pass_maps: bool,
    /// PNG figures in `figures/` (see `figures`).
    pub figures: bool,
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            maps: vec![
                MapKind::MeanLogits,
                MapKind::StdLogits,
                MapKind::Probability,
                MapKind::Labels,
                MapKind::Entropy,
                MapKind::ExpectedEntropy,
                MapKind::MutualInformation,
                MapKind::LogitVarianceBetween,
                MapKind::LogitVarianceWithin,
                MapKind::Uncertainty,
            ],
            histogram_bins: 64,
            uncertainty_measure: UncertaintyMeasure::default(),
            pass_maps: false,
            figures: false,
        }
    }
}
