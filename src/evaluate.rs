//! `stochseg evaluate`: finished runs of a cohort against ground truth.
//!
//! Inputs: a cohort folder of run outputs (`COHORT/<folder>/report.json` + `labels.nii.gz`) and a
//! ground-truth folder where `gt_pattern` (default `{case}/{case}-seg.nii.gz`; `{case}` is the
//! report's `case.id`, `{folder}` the run's folder name) names each case's BraTS label map. Label
//! maps are compared voxel for voxel on their own grid (they must have the same shape).
//!
//! Per case: whole-tumor Dice (`labels > 0` vs `seg > 0`; 1 when both are empty) and the BraTS
//! 2023/2024 lesion-wise rule on the whole tumor ([`crate::lesionwise`]: GT dilation
//! `gt_dilation`, lesions of at most `min_volume_mm3` left out, the voxel volume from the GT's
//! affine): lesion-wise Dice, true/false positives, false negatives and sensitivity. A predicted
//! blob is true when at least one of its voxels lies in the GT dilated `gt_dilation` times (the
//! union of every lesion's own dilation), else false; with 26-connected blobs (the default) a
//! blob is true exactly when its prediction component matches a lesion, small ones included.
//!
//! Blob confidence as a detector of true blobs, pooled over the cohort: ROC AUC (Mann-Whitney,
//! ties count one half), average precision (as scikit-learn defines it: the sum over distinct
//! thresholds of recall increments times precision), percentile bootstrap 95% CIs (blobs
//! resampled with replacement, ChaCha8 seeded; resamples with one class only are skipped), the
//! threshold maximising Youden's J (a blob is called true when its score >= the threshold), and a
//! calibration table of `mean_probability` in equal bins of [0, 1]. Scores: the stochastic
//! `mean_logit`, and the `comparison.blobs[].deterministic_mean_logit` when every case has it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ndarray::{Array3, Zip};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::Error;
use crate::io::{nifti, InputError};
use crate::lesionwise::{self, LesionRule};
use crate::output::OutputError;
use crate::report::Report;

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
}

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

#[derive(Debug, Clone, Serialize)]
pub struct BlobResult {
    pub case: String,
    pub id: u32,
    pub voxels: usize,
    pub overlap_voxels: usize,
    pub is_true: bool,
    pub mean_logit: f64,
    pub mean_probability: f64,
    pub deterministic_mean_logit: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub value: f64,
    pub ci95: [f64; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct Detector {
    pub score: String,
    pub auc: Option<Interval>,
    pub average_precision: Option<Interval>,
    pub youden_threshold: Option<f64>,
    pub youden_j: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub blobs: usize,
    pub mean_probability: Option<f64>,
    pub fraction_true: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub rule: String,
    pub gt_dilation: usize,
    pub lesion_min_volume_mm3: f64,
    pub cases: Vec<CaseResult>,
    pub totals: Totals,
    pub detectors: Vec<Detector>,
    pub calibration: Vec<CalibrationBin>,
    pub bootstrap: usize,
    pub seed: u64,
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

/// The lesion-wise rule and blob truth in words, with the rule's parameters.
fn rule_text(rule: &LesionRule) -> String {
    format!(
        "BraTS 2023/2024 lesion-wise, whole tumor: GT lesions are the 26-connected components of \
         seg > 0 dilated {d} times (18-neighbourhood), each keeping its own GT voxels; a 26-connected \
         prediction component matches every lesion whose own {d}-times dilation it touches, else it \
         is a false positive; lesions of at most {v} mm3 leave the score; a blob is true when any \
         voxel lies in seg > 0 dilated {d} times",
        d = rule.gt_dilation,
        v = rule.min_volume_mm3
    )
}

/// Evaluates the cohort and writes `evaluation.yaml`, `evaluation-cases.csv`,
/// `evaluation-blobs.csv` and the plots (`evaluation-roc.png`, `evaluation-calibration.png`)
/// into `opts.out`.
pub fn evaluate(opts: &EvaluateOptions) -> Result<(Evaluation, Vec<PathBuf>), Error> {
    let (cases, blobs) = collect(opts)?;
    let evaluation = summarize(cases, &blobs, opts);
    let files = write(opts, &evaluation, &blobs)?;
    Ok((evaluation, files))
}

fn collect(opts: &EvaluateOptions) -> Result<(Vec<CaseResult>, Vec<BlobResult>), Error> {
    let entries = std::fs::read_dir(&opts.cohort).map_err(|_| InputError::NotFound {
        path: opts.cohort.clone(),
    })?;
    let mut folders: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("report.json").is_file())
        .collect();
    folders.sort();
    let (mut cases, mut blobs) = (Vec::new(), Vec::new());
    for folder in folders {
        let (case, mut found) = evaluate_case(&folder, opts)?;
        cases.push(case);
        blobs.append(&mut found);
    }
    Ok((cases, blobs))
}

fn format_error(path: &Path, reason: impl Into<String>) -> InputError {
    InputError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn evaluate_case(
    folder: &Path,
    opts: &EvaluateOptions,
) -> Result<(CaseResult, Vec<BlobResult>), Error> {
    let report = crate::report::read(&folder.join("report.json"))?;
    let folder_name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let case_id = report.case.id.clone();
    let gt_path = opts.gt_dir.join(
        opts.gt_pattern
            .replace("{case}", &case_id)
            .replace("{folder}", &folder_name),
    );
    let (labels, _) = read_labels(&folder.join("labels.nii.gz"))?;
    let (gt, voxel_volume_mm3) = read_labels(&gt_path)?;
    if labels.dim() != gt.dim() {
        return Err(format_error(
            &gt_path,
            format!(
                "grid {:?} differs from {}'s {:?}",
                gt.dim(),
                folder.join("labels.nii.gz").display(),
                labels.dim()
            ),
        )
        .into());
    }
    let rule = &opts.lesion_rule;
    let pred = labels.mapv(|l| l > 0);
    let lesions = lesionwise::group(gt.mapv(|v| v > 0).view(), rule.gt_dilation);
    let scores = lesionwise::score(&lesions, pred.view(), voxel_volume_mm3, rule);
    let found = blob_results(&report, &case_id, &labels, &gt, &lesions.dilated);
    let true_blobs = found.iter().filter(|b| b.is_true).count();
    let case = CaseResult {
        folder: folder_name,
        case: case_id,
        dice: dice(&labels, &gt),
        gt_lesions: scores.gt_lesions,
        small_lesions: scores.small_lesions,
        lesion_tp: scores.true_positives,
        lesion_fn: scores.false_negatives,
        lesion_fp: scores.false_positives,
        lesion_dice: scores.dice,
        lesion_sensitivity: scores.sensitivity,
        gt_dilation: rule.gt_dilation,
        lesion_min_volume_mm3: rule.min_volume_mm3,
        blobs: found.len(),
        true_blobs,
        false_blobs: found.len() - true_blobs,
    };
    Ok((case, found))
}

/// Whole-tumor Dice of two label maps; 1 when both are empty.
fn dice(labels: &Array3<u32>, gt: &Array3<u32>) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    Zip::from(labels).and(gt).for_each(|&l, &g| {
        both += usize::from(l > 0 && g > 0);
        total += usize::from(l > 0) + usize::from(g > 0);
    });
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

/// The report's blobs with their voxels in `seg > 0` and their truth (a voxel in `near_gt`).
fn blob_results(
    report: &Report,
    case_id: &str,
    labels: &Array3<u32>,
    gt: &Array3<u32>,
    near_gt: &Array3<bool>,
) -> Vec<BlobResult> {
    let mut overlap: BTreeMap<u32, usize> = BTreeMap::new();
    let mut near: BTreeSet<u32> = BTreeSet::new();
    Zip::from(labels)
        .and(gt)
        .and(near_gt)
        .for_each(|&l, &g, &n| {
            if l > 0 && g > 0 {
                *overlap.entry(l).or_default() += 1;
            }
            if l > 0 && n {
                near.insert(l);
            }
        });
    let deterministic: BTreeMap<u32, f64> = report
        .comparison
        .iter()
        .flat_map(|c| &c.blobs)
        .map(|b| (b.id, b.deterministic_mean_logit))
        .collect();
    report
        .blobs
        .iter()
        .map(|b| BlobResult {
            case: case_id.to_string(),
            id: b.id,
            voxels: b.voxels,
            overlap_voxels: overlap.get(&b.id).copied().unwrap_or(0),
            is_true: near.contains(&b.id),
            mean_logit: b.mean_logit,
            mean_probability: b.mean_probability,
            deterministic_mean_logit: deterministic.get(&b.id).copied(),
        })
        .collect()
}

/// A label map as whole numbers (values at most 0.5 are 0) and its voxel volume in mm³.
fn read_labels(path: &Path) -> Result<(Array3<u32>, f64), Error> {
    let image = nifti::read_volume(path, usize::MAX)?;
    let labels = image
        .data
        .mapv(|v| if v > 0.5 { v.round() as u32 } else { 0 });
    Ok((labels, image.geometry.voxel_volume_mm3()))
}

fn summarize(cases: Vec<CaseResult>, blobs: &[BlobResult], opts: &EvaluateOptions) -> Evaluation {
    let truth: Vec<bool> = blobs.iter().map(|b| b.is_true).collect();
    let mut detectors = vec![detector(
        "mean_logit",
        &blobs.iter().map(|b| b.mean_logit).collect::<Vec<_>>(),
        &truth,
        opts,
    )];
    let det: Option<Vec<f64>> = blobs.iter().map(|b| b.deterministic_mean_logit).collect();
    if let Some(scores) = det.filter(|s| !s.is_empty()) {
        detectors.push(detector("deterministic_mean_logit", &scores, &truth, opts));
    }
    let probabilities: Vec<f64> = blobs.iter().map(|b| b.mean_probability).collect();
    let n = cases.len();
    let totals = Totals {
        cases: n,
        mean_dice: cases.iter().map(|c| c.dice).sum::<f64>() / n.max(1) as f64,
        mean_lesion_dice: cases.iter().map(|c| c.lesion_dice).sum::<f64>() / n.max(1) as f64,
        gt_lesions: cases.iter().map(|c| c.gt_lesions).sum(),
        small_lesions: cases.iter().map(|c| c.small_lesions).sum(),
        lesion_tp: cases.iter().map(|c| c.lesion_tp).sum(),
        lesion_fn: cases.iter().map(|c| c.lesion_fn).sum(),
        lesion_fp: cases.iter().map(|c| c.lesion_fp).sum(),
        blobs: blobs.len(),
        true_blobs: truth.iter().filter(|&&t| t).count(),
        false_blobs: truth.iter().filter(|&&t| !t).count(),
    };
    Evaluation {
        rule: rule_text(&opts.lesion_rule),
        gt_dilation: opts.lesion_rule.gt_dilation,
        lesion_min_volume_mm3: opts.lesion_rule.min_volume_mm3,
        cases,
        totals,
        detectors,
        calibration: calibration(&probabilities, &truth, opts.calibration_bins),
        bootstrap: opts.bootstrap,
        seed: opts.seed,
    }
}

fn detector(name: &str, scores: &[f64], truth: &[bool], opts: &EvaluateOptions) -> Detector {
    let (youden_threshold, youden_j) = match youden(scores, truth) {
        Some((t, j)) => (Some(t), Some(j)),
        None => (None, None),
    };
    Detector {
        score: name.into(),
        auc: with_ci(scores, truth, opts, roc_auc),
        average_precision: with_ci(scores, truth, opts, average_precision),
        youden_threshold,
        youden_j,
    }
}

/// The statistic and its percentile bootstrap 95% interval.
fn with_ci(
    scores: &[f64],
    truth: &[bool],
    opts: &EvaluateOptions,
    f: fn(&[f64], &[bool]) -> Option<f64>,
) -> Option<Interval> {
    let value = f(scores, truth)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let n = scores.len();
    let mut draws = Vec::with_capacity(opts.bootstrap);
    let (mut s, mut t) = (vec![0.0; n], vec![false; n]);
    for _ in 0..opts.bootstrap {
        for i in 0..n {
            let j = rng.random_range(0..n);
            s[i] = scores[j];
            t[i] = truth[j];
        }
        if let Some(v) = f(&s, &t) {
            draws.push(v);
        }
    }
    draws.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if draws.is_empty() {
            value
        } else {
            draws[((q * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)]
        }
    };
    Some(Interval {
        value,
        ci95: [pick(0.025), pick(0.975)],
    })
}

/// The counts of positives and negatives in `truth`; None unless both occur.
fn both_classes(truth: &[bool]) -> Option<(usize, usize)> {
    let pos = truth.iter().filter(|&&t| t).count();
    let neg = truth.len() - pos;
    (pos > 0 && neg > 0).then_some((pos, neg))
}

/// Indices of `scores` from the highest score to the lowest.
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// ROC AUC by ranks (Mann-Whitney U), ties counted one half; None without both classes.
pub fn roc_auc(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let (pos, neg) = both_classes(truth)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| truth[k]).count() as f64 * rank;
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

/// The ROC curve: (false positive rate, true positive rate) from (0, 0) to (1, 1), one point
/// per distinct score (high to low, tied scores together); None without both classes. Its
/// trapezoid area is `roc_auc`.
pub fn roc_curve(scores: &[f64], truth: &[bool]) -> Option<Vec<[f64; 2]>> {
    let (pos, neg) = both_classes(truth)?;
    let order = descending(scores);
    let mut points = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (i, &k) in order.iter().enumerate() {
        if truth[k] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order
            .get(i + 1)
            .is_none_or(|&next| scores[next] != scores[k]);
        if last_of_tie {
            points.push([fp as f64 / neg as f64, tp as f64 / pos as f64]);
        }
    }
    Some(points)
}

/// Average precision as scikit-learn computes it: sum over distinct thresholds (high to low) of
/// (recall increment) x precision; None without a positive.
pub fn average_precision(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let pos = truth.iter().filter(|&&t| t).count();
    if pos == 0 {
        return None;
    }
    let order = descending(scores);
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            if truth[k] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        let recall = tp as f64 / pos as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// The score threshold (>= is called true) maximising TPR - FPR, and that J; the highest such
/// threshold on ties. None without both classes.
pub fn youden(scores: &[f64], truth: &[bool]) -> Option<(f64, f64)> {
    let pos = truth.iter().filter(|&&t| t).count() as f64;
    let neg = truth.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let mut thresholds: Vec<f64> = scores.to_vec();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut best: Option<(f64, f64)> = None;
    for t in thresholds {
        let tp = scores
            .iter()
            .zip(truth)
            .filter(|(&s, &y)| y && s >= t)
            .count() as f64;
        let fp = scores
            .iter()
            .zip(truth)
            .filter(|(&s, &y)| !y && s >= t)
            .count() as f64;
        let j = tp / pos - fp / neg;
        if best.is_none_or(|(_, bj)| j > bj) {
            best = Some((t, j));
        }
    }
    best
}

/// Equal bins of [0, 1] over `probability` (the last includes 1): count, mean, fraction true.
pub fn calibration(probability: &[f64], truth: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sum = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    let mut trues = vec![0usize; bins];
    for (&p, &t) in probability.iter().zip(truth) {
        if !p.is_finite() {
            continue;
        }
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum[b] += p;
        count[b] += 1;
        trues[b] += usize::from(t);
    }
    (0..bins)
        .map(|b| CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            blobs: count[b],
            mean_probability: (count[b] > 0).then(|| sum[b] / count[b] as f64),
            fraction_true: (count[b] > 0).then(|| trues[b] as f64 / count[b] as f64),
        })
        .collect()
}

fn write(
    opts: &EvaluateOptions,
    evaluation: &Evaluation,
    blobs: &[BlobResult],
) -> Result<Vec<PathBuf>, OutputError> {
    let io = |path: &Path, e: String| OutputError::Io {
        path: path.to_path_buf(),
        reason: e,
    };
    std::fs::create_dir_all(&opts.out).map_err(|e| io(&opts.out, e.to_string()))?;
    let yaml_path = opts.out.join("evaluation.yaml");
    let yaml = crate::yaml::to_string(evaluation).map_err(|e| io(&yaml_path, e))?;
    std::fs::write(&yaml_path, yaml).map_err(|e| io(&yaml_path, e.to_string()))?;
    let cases_path = opts.out.join("evaluation-cases.csv");
    let blobs_path = opts.out.join("evaluation-blobs.csv");
    write_csv(&cases_path, &evaluation.cases).map_err(|e| io(&cases_path, e))?;
    write_csv(&blobs_path, blobs).map_err(|e| io(&blobs_path, e))?;
    let plots = write_plots(opts, evaluation, blobs).map_err(|(p, e)| io(&p, e.to_string()))?;
    Ok([yaml_path, cases_path, blobs_path]
        .into_iter()
        .chain(plots)
        .collect())
}

/// `evaluation-roc.png` (blob confidence as a detector of true blobs: the stochastic and, when
/// the runs compared, the deterministic mean logit) and `evaluation-calibration.png` (fraction
/// of true blobs against mean probability, per calibration bin). None without both classes.
fn write_plots(
    opts: &EvaluateOptions,
    evaluation: &Evaluation,
    blobs: &[BlobResult],
) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    use crate::figures::curves::{curves_png, Series};
    use crate::figures::{BLUE, ORANGE};
    let truth: Vec<bool> = blobs.iter().map(|b| b.is_true).collect();
    let stochastic: Vec<f64> = blobs.iter().map(|b| b.mean_logit).collect();
    let deterministic: Option<Vec<f64>> =
        blobs.iter().map(|b| b.deterministic_mean_logit).collect();
    let Some(roc) = roc_curve(&stochastic, &truth) else {
        return Ok(Vec::new());
    };
    let det_roc = deterministic.and_then(|d| roc_curve(&d, &truth));
    let mut series = vec![Series {
        name: "STOCHASTIC",
        colour: BLUE,
        points: &roc,
    }];
    if let Some(points) = &det_roc {
        series.push(Series {
            name: "DETERMINISTIC",
            colour: ORANGE,
            points,
        });
    }
    let roc_path = opts.out.join("evaluation-roc.png");
    curves_png(
        &roc_path,
        "BLOB ROC",
        ["FALSE POSITIVE RATE", "TRUE POSITIVE RATE"],
        &series,
    )
    .map_err(|e| (roc_path.clone(), e))?;
    let reliability: Vec<[f64; 2]> = evaluation
        .calibration
        .iter()
        .filter_map(|b| Some([b.mean_probability?, b.fraction_true?]))
        .collect();
    let calibration_path = opts.out.join("evaluation-calibration.png");
    let bins = [Series {
        name: "BLOBS PER BIN",
        colour: BLUE,
        points: &reliability,
    }];
    curves_png(
        &calibration_path,
        "CALIBRATION",
        ["MEAN PROBABILITY", "FRACTION TRUE"],
        &bins,
    )
    .map_err(|e| (calibration_path.clone(), e))?;
    Ok(vec![roc_path, calibration_path])
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| e.to_string())?;
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roc_curve_has_the_auc_as_its_area() {
        let s = [0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.2, 0.1];
        let t = [true, false, true, true, false, true, false, false];
        let curve = roc_curve(&s, &t).unwrap();
        assert_eq!(curve.first(), Some(&[0.0, 0.0]));
        assert_eq!(curve.last(), Some(&[1.0, 1.0]));
        // one point per distinct score
        assert_eq!(curve.len(), 1 + 6);
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
            .sum();
        assert!((area - roc_auc(&s, &t).unwrap()).abs() < 1e-12);
        assert_eq!(roc_curve(&s, &[true; 8]), None);
    }

    #[test]
    fn auc_and_ap_of_a_known_ranking() {
        let s = [0.9, 0.8, 0.7, 0.6];
        let t = [true, false, true, false];
        assert_eq!(roc_auc(&s, &t), Some(0.75));
        // precision at recall 0.5: 1, at recall 1: 2/3
        let ap = average_precision(&s, &t).unwrap();
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(roc_auc(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&s, &[true; 4]), None);
        assert_eq!(youden(&s, &t), Some((0.9, 0.5)));
    }

    #[test]
    fn calibration_bins_count_every_blob() {
        let c = calibration(&[0.05, 0.95, 1.0, 0.5], &[false, true, true, false], 2);
        assert_eq!(c[0].blobs, 1);
        assert_eq!(c[1].blobs, 3);
        assert_eq!(c[1].fraction_true, Some(2.0 / 3.0));
    }
}
