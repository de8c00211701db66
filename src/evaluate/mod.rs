//! `stochseg evaluate`: finished runs of a cohort against ground truth, region by region.
//!
//! Inputs: a cohort folder of run outputs (`COHORT/<folder>/report.json` and the maps) and a
//! ground-truth folder where `gt_pattern` (default `{case}/{case}-seg.nii.gz`; `{case}` is the
//! report's `case.id`, `{folder}` the run's folder name) names each case's BraTS label map. Maps
//! are compared voxel for voxel on their own grid (they must have the same shape). Reports are
//! read as typed reports ([`crate::report::read`]).
//!
//! Every region a run reports is evaluated ([`case`]): the primary region (`report.region`, maps
//! `labels.nii.gz`, ...) and, in a run of several regions, the others (`report.regions`, maps
//! `labels-<region>.nii.gz`, ...). A region's GT is the GT voxels whose label is one of the
//! region's labels (no labels: every non-zero label, so a one-region run is evaluated against
//! `seg > 0`), its prediction `labels[-<region>] > 0`. Per case and region: Dice (1 when both are
//! empty), the BraTS 2023/2024 lesion-wise rule ([`crate::lesionwise`]: GT dilation
//! `gt_dilation`, lesions of at most `min_volume_mm3` left out, the voxel volume from the GT's
//! affine), and blob truth: a blob of the region is true when at least one of its voxels lies in
//! the region's GT dilated `gt_dilation` times. With a label map in the BraTS convention
//! (`labels-brats.nii.gz`, report `label_map`), the Dice of each of its labels as well.
//!
//! Pooled over the cohort, per region: mean Dice and lesion-wise Dice, summed counts, and blob
//! confidence as a detector of true blobs ([`detect`]) for the stochastic `mean_logit` and, when
//! every blob has one, the comparison's `deterministic_mean_logit`. The top-level keys of
//! `evaluation.yaml`, `evaluation-cases.csv` and `evaluation-blobs.csv` are those of each case's
//! primary region, as they were before regions existed; `regions` holds every region.
//!
//! With a region's uncertainty map (`uncertainty-<region>.nii.gz`, whole numbers 0-100) and its
//! probability map, the QU-BraTS score, the retention curve and the voxels' calibration
//! ([`uncertainty`]) per case and pooled, inside the brain mask of the run's inputs; a missing map
//! (an older run) or unreadable inputs skip those measures for that case, said in the case's
//! `uncertainty_note` and on stderr. Modules: [`options`], [`case`] (one run folder), [`cohort`]
//! (pooling), [`detect`] and [`uncertainty`] (the statistics), `write` (the files).

pub mod case;
pub mod cohort;
pub mod detect;
pub mod options;
pub mod uncertainty;
mod write;

use std::path::PathBuf;

use crate::error::Error;
use crate::io::InputError;
pub use case::{BlobResult, CaseEvaluation, LabelDice, RegionCase, RegionCaseResult};
pub use cohort::{
    CaseResult, Evaluation, LabelMapEvaluation, RegionEvaluation, Totals, UncertaintyRules,
};
pub use detect::{
    average_precision, calibration, roc_auc, roc_curve, youden, Bootstrap, CalibrationBin,
    Detector, Interval,
};
pub use options::EvaluateOptions;

/// Evaluates the cohort and writes `evaluation.yaml`, the CSVs and the plots into `opts.out`
/// (see [`write`] for the list).
pub fn evaluate(opts: &EvaluateOptions) -> Result<(Evaluation, Vec<PathBuf>), Error> {
    let cases = collect(opts)?;
    let evaluation = cohort::summarize(&cases, opts);
    let files = write::write(&opts.out, &evaluation, &cases)?;
    Ok((evaluation, files))
}

/// Every run folder of the cohort (those with a `report.json`), in name order.
fn collect(opts: &EvaluateOptions) -> Result<Vec<CaseEvaluation>, Error> {
    let entries = std::fs::read_dir(&opts.cohort).map_err(|_| InputError::NotFound {
        path: opts.cohort.clone(),
    })?;
    let mut folders: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    folders.sort();
    folders
        .iter()
        .map(|folder| case::evaluate_case(folder, opts))
        .collect()
}
