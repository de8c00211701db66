//! What `evaluate` is asked: the cohort and GT folders, where the files go, and the parameters
//! of the lesion-wise rule, the bootstrap and the uncertainty measures.

use std::path::PathBuf;

use super::detect::Bootstrap;
use crate::lesionwise::LesionRule;

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    pub cohort: PathBuf,
    pub gt_dir: PathBuf,
    pub gt_pattern: String,
    /// Where evaluation.yaml and the CSVs go.
    pub out: PathBuf,
    pub bootstrap: usize,
    pub seed: u64,
    pub calibration_bins: usize,
    pub lesion_rule: LesionRule,
    /// QU-BraTS: uncertainty thresholds from 100 to 0 in this many steps (the challenge: 40).
    pub qubrats_points: usize,
    /// Equal bins of [0, 1] for the voxels' calibration.
    pub ece_bins: usize,
    /// Retention: the referred fraction from 0 to 1 in this many steps.
    pub retention_steps: usize,
}

impl EvaluateOptions {
    pub fn new(cohort: PathBuf, gt_dir: PathBuf) -> EvaluateOptions {
        EvaluateOptions {
            out: cohort.clone(),
            cohort,
            gt_dir,
            gt_pattern: "{case}/{case}-seg.nii.gz".into(),
            bootstrap: 1000,
            seed: 0,
            calibration_bins: 10,
            lesion_rule: LesionRule::default(),
            qubrats_points: 40,
            ece_bins: 10,
            retention_steps: 20,
        }
    }

    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            resamples: self.bootstrap,
            seed: self.seed,
        }
    }
}
