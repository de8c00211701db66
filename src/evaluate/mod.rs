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

pub mod case;
pub mod detect;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::io::InputError;
use crate::lesionwise::LesionRule;
pub use case::{BlobResult, CaseEvaluation, LabelDice, RegionCaseResult};
pub use detect::{
    average_precision, calibration, roc_auc, roc_curve, youden, Bootstrap, CalibrationBin,
    Detector, Interval,
};

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
        }
    }

    fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            resamples: self.bootstrap,
            seed: self.seed,
        }
    }
}

/// One case's primary region, with the rule's parameters (a row of `evaluation-cases.csv`).
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub folder: String,
    pub case: String,
    pub dice: f64,
    /// GT lesions under the rule's dilation, small ones included.
    pub gt_lesions: usize,
    /// Lesions of at most `lesion_min_volume_mm3`, left out of the lesion-wise score.
    pub small_lesions: usize,
    pub lesion_tp: usize,
    pub lesion_fn: usize,
    pub lesion_fp: usize,
    pub lesion_dice: f64,
    pub lesion_sensitivity: Option<f64>,
    pub gt_dilation: usize,
    pub lesion_min_volume_mm3: f64,
    pub blobs: usize,
    pub true_blobs: usize,
    pub false_blobs: usize,
}

impl CaseResult {
    fn of_primary(r: &RegionCaseResult, rule: &LesionRule) -> CaseResult {
        CaseResult {
            folder: r.folder.clone(),
            case: r.case.clone(),
            dice: r.dice,
            gt_lesions: r.gt_lesions,
            small_lesions: r.small_lesions,
            lesion_tp: r.lesion_tp,
            lesion_fn: r.lesion_fn,
            lesion_fp: r.lesion_fp,
            lesion_dice: r.lesion_dice,
            lesion_sensitivity: r.lesion_sensitivity,
            gt_dilation: rule.gt_dilation,
            lesion_min_volume_mm3: rule.min_volume_mm3,
            blobs: r.blobs,
            true_blobs: r.true_blobs,
            false_blobs: r.false_blobs,
        }
    }
}

/// The cohort's results (`evaluation.yaml`).
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub rule: String,
    pub gt_dilation: usize,
    pub lesion_min_volume_mm3: f64,
    /// Each case's primary region.
    pub cases: Vec<CaseResult>,
    pub totals: Totals,
    pub detectors: Vec<Detector>,
    pub calibration: Vec<CalibrationBin>,
    pub bootstrap: usize,
    pub seed: u64,
    /// Every region of the cohort by name, the primary ones too.
    pub regions: BTreeMap<String, RegionEvaluation>,
    /// Per-label Dice of the label maps, when some run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_map: Option<LabelMapEvaluation>,
}

/// One region over the cases that report it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionEvaluation {
    pub cases: Vec<RegionCaseResult>,
    pub totals: Totals,
    pub detectors: Vec<Detector>,
    pub calibration: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub cases: usize,
    pub mean_dice: f64,
    pub mean_lesion_dice: f64,
    pub gt_lesions: usize,
    pub small_lesions: usize,
    pub lesion_tp: usize,
    pub lesion_fn: usize,
    pub lesion_fp: usize,
    pub blobs: usize,
    pub true_blobs: usize,
    pub false_blobs: usize,
}

/// The label maps' per-label Dice: one row per case and label, and the mean per label name.
#[derive(Debug, Clone, Serialize)]
pub struct LabelMapEvaluation {
    pub cases: Vec<LabelDice>,
    pub mean_dice: BTreeMap<String, f64>,
}

/// The lesion-wise rule and blob truth in words, with the rule's parameters.
fn rule_text(rule: &LesionRule) -> String {
    format!(
        "BraTS 2023/2024 lesion-wise, per region: the region's GT is seg in the region's labels \
         (seg > 0 for a region without labels); GT lesions are the 26-connected components of \
         the region's GT dilated {d} times (18-neighbourhood), each keeping its own GT voxels; a \
         26-connected prediction component matches every lesion whose own {d}-times dilation it \
         touches, else it is a false positive; lesions of at most {v} mm3 leave the score; a blob \
         is true when any voxel lies in the region's GT dilated {d} times",
        d = rule.gt_dilation,
        v = rule.min_volume_mm3
    )
}

/// Evaluates the cohort and writes `evaluation.yaml`, the CSVs and the plots into `opts.out`
/// (see [`write`] for the list).
pub fn evaluate(opts: &EvaluateOptions) -> Result<(Evaluation, Vec<PathBuf>), Error> {
    let cases = collect(opts)?;
    let evaluation = summarize(&cases, opts);
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

fn summarize(cases: &[CaseEvaluation], opts: &EvaluateOptions) -> Evaluation {
    let primary: Vec<(&RegionCaseResult, &[BlobResult])> = cases
        .iter()
        .filter_map(|c| c.regions.first())
        .map(|r| (&r.row, r.blobs.as_slice()))
        .collect();
    let pooled = pool(&primary, opts);
    let mut by_name: BTreeMap<String, Vec<(&RegionCaseResult, &[BlobResult])>> = BTreeMap::new();
    for r in cases.iter().flat_map(|c| &c.regions) {
        by_name
            .entry(r.row.region.clone())
            .or_default()
            .push((&r.row, r.blobs.as_slice()));
    }
    let regions = by_name
        .into_iter()
        .map(|(name, rows)| (name, pool(&rows, opts)))
        .collect();
    Evaluation {
        rule: rule_text(&opts.lesion_rule),
        gt_dilation: opts.lesion_rule.gt_dilation,
        lesion_min_volume_mm3: opts.lesion_rule.min_volume_mm3,
        cases: primary
            .iter()
            .map(|(r, _)| CaseResult::of_primary(r, &opts.lesion_rule))
            .collect(),
        totals: pooled.totals,
        detectors: pooled.detectors,
        calibration: pooled.calibration,
        bootstrap: opts.bootstrap,
        seed: opts.seed,
        regions,
        label_map: label_map_evaluation(cases),
    }
}

/// One region's cases and blobs pooled.
fn pool(rows: &[(&RegionCaseResult, &[BlobResult])], opts: &EvaluateOptions) -> RegionEvaluation {
    let blobs: Vec<&BlobResult> = rows.iter().flat_map(|(_, b)| b.iter()).collect();
    let truth: Vec<bool> = blobs.iter().map(|b| b.is_true).collect();
    let scores: Vec<f64> = blobs.iter().map(|b| b.mean_logit).collect();
    let mut detectors = vec![detect::detector(
        "mean_logit",
        &scores,
        &truth,
        opts.bootstrap(),
    )];
    let det: Option<Vec<f64>> = blobs.iter().map(|b| b.deterministic_mean_logit).collect();
    if let Some(scores) = det.filter(|s| !s.is_empty()) {
        detectors.push(detect::detector(
            "deterministic_mean_logit",
            &scores,
            &truth,
            opts.bootstrap(),
        ));
    }
    let probabilities: Vec<f64> = blobs.iter().map(|b| b.mean_probability).collect();
    let cases: Vec<RegionCaseResult> = rows.iter().map(|(r, _)| (*r).clone()).collect();
    RegionEvaluation {
        totals: totals(&cases, &truth),
        cases,
        detectors,
        calibration: calibration(&probabilities, &truth, opts.calibration_bins),
    }
}

fn totals(cases: &[RegionCaseResult], truth: &[bool]) -> Totals {
    let n = cases.len();
    let mean = |f: fn(&RegionCaseResult) -> f64| cases.iter().map(f).sum::<f64>() / n.max(1) as f64;
    let sum = |f: fn(&RegionCaseResult) -> usize| cases.iter().map(f).sum::<usize>();
    Totals {
        cases: n,
        mean_dice: mean(|c| c.dice),
        mean_lesion_dice: mean(|c| c.lesion_dice),
        gt_lesions: sum(|c| c.gt_lesions),
        small_lesions: sum(|c| c.small_lesions),
        lesion_tp: sum(|c| c.lesion_tp),
        lesion_fn: sum(|c| c.lesion_fn),
        lesion_fp: sum(|c| c.lesion_fp),
        blobs: truth.len(),
        true_blobs: truth.iter().filter(|&&t| t).count(),
        false_blobs: truth.iter().filter(|&&t| !t).count(),
    }
}

/// Per-label Dice rows of every case with a label map, and the mean per label name.
fn label_map_evaluation(cases: &[CaseEvaluation]) -> Option<LabelMapEvaluation> {
    let rows: Vec<LabelDice> = cases.iter().flat_map(|c| c.labels.clone()).collect();
    if rows.is_empty() {
        return None;
    }
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for r in &rows {
        let e = sums.entry(r.name.clone()).or_default();
        e.0 += r.dice;
        e.1 += 1;
    }
    Some(LabelMapEvaluation {
        cases: rows,
        mean_dice: sums
            .into_iter()
            .map(|(name, (s, n))| (name, s / n as f64))
            .collect(),
    })
}
