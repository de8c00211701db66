//! The cohort's results: each case's regions pooled per region name (totals, blob detectors and
//! calibration, the uncertainty measures), the primary regions at the top level as before
//! regions existed, the label maps' per-label Dice, and the rules in words.

use std::collections::BTreeMap;

use serde::Serialize;

use super::case::{BlobResult, CaseEvaluation, LabelDice, RegionCase, RegionCaseResult};
use super::detect::{self, calibration, CalibrationBin, Detector};
use super::options::EvaluateOptions;
use super::uncertainty::{QuBratsSummary, RetentionSummary, VoxelCalibration};
use crate::lesionwise::LesionRule;

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
    /// The uncertainty measures in words, with their parameters.
    pub uncertainty_rules: UncertaintyRules,
}

/// One region over the cases that report it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionEvaluation {
    pub cases: Vec<RegionCaseResult>,
    pub totals: Totals,
    pub detectors: Vec<Detector>,
    pub calibration: Vec<CalibrationBin>,
    /// Over the cases with `uncertainty-<region>.nii.gz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qubrats: Option<QuBratsSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSummary>,
    /// Over the brain voxels of the cases with the region's probability map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voxel_calibration: Option<VoxelCalibration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UncertaintyRules {
    pub qubrats: String,
    pub retention: String,
    pub voxel_calibration: String,
}

fn uncertainty_rules(opts: &EvaluateOptions) -> UncertaintyRules {
    let brain = "the brain is every voxel where an input channel (report case.inputs) is nonzero";
    UncertaintyRules {
        qubrats: format!(
            "QU-BraTS (Mehta et al., MELBA 2022), from uncertainty-<region>.nii.gz (0-100): for \
             {n} + 1 thresholds tau from 100 down to 0, voxels with uncertainty > tau are filtered \
             out; Dice of what remains (whole grid, 1 when empty), filtered true positives and \
             filtered true negatives over all of them inside the brain (each over its count plus \
             the float32 epsilon); areas by the trapezoid rule over tau / 100; score = (AUC_Dice + \
             (1 - AUC_FTP) + (1 - AUC_FTN)) / 3; pooled: means over the cases; {brain}",
            n = opts.qubrats_points
        ),
        retention: format!(
            "the brain's voxels from the most uncertain (uncertainty-<region>.nii.gz), a fraction \
             0, 1/{s}, ..., 1 of them referred to a reader who labels them as the GT does (ties \
             referred in proportion); Dice over the brain after referral; area by the trapezoid \
             rule; pooled: means over the cases; {brain}",
            s = opts.retention_steps
        ),
        voxel_calibration: format!(
            "the brain's voxels in {b} equal bins of the region's probability map over [0, 1] (the \
             last includes 1); ECE = sum over bins of voxels / all voxels x |mean probability - \
             fraction in the region's GT|; pooled: over every brain voxel of the cases; {brain}",
            b = opts.ece_bins
        ),
    }
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

/// The cohort's results from its cases.
pub fn summarize(cases: &[CaseEvaluation], opts: &EvaluateOptions) -> Evaluation {
    let primary: Vec<&RegionCase> = cases.iter().filter_map(|c| c.regions.first()).collect();
    let pooled = pool(&primary, opts);
    let mut by_name: BTreeMap<String, Vec<&RegionCase>> = BTreeMap::new();
    for r in cases.iter().flat_map(|c| &c.regions) {
        by_name.entry(r.row.region.clone()).or_default().push(r);
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
            .map(|r| CaseResult::of_primary(&r.row, &opts.lesion_rule))
            .collect(),
        totals: pooled.totals,
        detectors: pooled.detectors,
        calibration: pooled.calibration,
        bootstrap: opts.bootstrap,
        seed: opts.seed,
        regions,
        label_map: label_map_evaluation(cases),
        uncertainty_rules: uncertainty_rules(opts),
    }
}

/// One region's cases, blobs and uncertainty measures pooled.
fn pool(regions: &[&RegionCase], opts: &EvaluateOptions) -> RegionEvaluation {
    let blobs: Vec<&BlobResult> = regions.iter().flat_map(|r| &r.blobs).collect();
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
    let cases: Vec<RegionCaseResult> = regions.iter().map(|r| r.row.clone()).collect();
    let u: Vec<_> = regions.iter().map(|r| &r.uncertainty).collect();
    RegionEvaluation {
        totals: totals(&cases, &truth),
        cases,
        detectors,
        calibration: calibration(&probabilities, &truth, opts.calibration_bins),
        qubrats: QuBratsSummary::mean(
            &u.iter()
                .filter_map(|u| u.qubrats.as_ref())
                .collect::<Vec<_>>(),
        ),
        retention: RetentionSummary::mean(
            &u.iter()
                .filter_map(|u| u.retention.as_ref())
                .collect::<Vec<_>>(),
        ),
        voxel_calibration: VoxelCalibration::pooled(
            &u.iter()
                .filter_map(|u| u.reliability.as_ref())
                .collect::<Vec<_>>(),
        ),
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
