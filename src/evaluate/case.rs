//! One run folder against its ground truth: every region the report lists (the primary region
//! first, then the others by name) with its Dice, lesion-wise scores and blob truths, and the
//! per-label Dice of the BraTS label map when the run wrote one.
//!
//! Maps are read with stochseg's NIfTI reader as `[z, y, x]` arrays on their own grid; label maps
//! become whole numbers (values at most 0.5 are 0). A region's files carry its suffix: none for
//! the primary region (`labels.nii.gz`), `-<region>` for the others (`labels-TC.nii.gz`), the
//! names `pipeline::MapKind` gives them; blob ids are the values of the region's labels map.
//! Every region's uncertainty map is `uncertainty-<region>.nii.gz` (whole numbers 0-100); the
//! brain mask the uncertainty measures need comes from the run's inputs.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ndarray::{Array3, Zip};
use serde::Serialize;

use super::options::EvaluateOptions;
use super::uncertainty::{self, QuBrats, Reliability, Retention, Tally, MAX_UNCERTAINTY};
use crate::compare::Comparison;
use crate::error::Error;
use crate::io::case::CaseSpec;
use crate::io::{nifti, InputError};
use crate::lesionwise;
use crate::pipeline::{DicomInput, MapKind, LABEL_MAP_FILE};
use crate::report::{BlobEntry, InputEntry, LabelMapInfo, Report};

/// What one run folder gave.
#[derive(Debug, Clone)]
pub struct CaseEvaluation {
    pub folder: String,
    pub case: String,
    /// The primary region first.
    pub regions: Vec<RegionCase>,
    /// Per-label Dice of the label map (empty without one).
    pub labels: Vec<LabelDice>,
}

/// One region of one case.
#[derive(Debug, Clone)]
pub struct RegionCase {
    pub row: RegionCaseResult,
    pub blobs: Vec<BlobResult>,
    pub uncertainty: RegionUncertainty,
}

/// A region's uncertainty measures, each absent when its map (or the brain mask) is, with why.
#[derive(Debug, Clone, Default)]
pub struct RegionUncertainty {
    pub qubrats: Option<QuBrats>,
    pub retention: Option<Retention>,
    pub reliability: Option<Reliability>,
    pub notes: Vec<String>,
}

/// One region of one case (a row of `evaluation-regions.csv`).
#[derive(Debug, Clone, Serialize)]
pub struct RegionCaseResult {
    pub folder: String,
    pub case: String,
    pub region: String,
    /// The GT labels the region covers, `;`-separated, or `nonzero` (every non-zero label).
    pub labels: String,
    pub gt_voxels: usize,
    pub predicted_voxels: usize,
    pub dice: f64,
    /// GT lesions under the rule's dilation, small ones included.
    pub gt_lesions: usize,
    /// Lesions of at most the rule's volume, left out of the lesion-wise score.
    pub small_lesions: usize,
    pub lesion_tp: usize,
    pub lesion_fn: usize,
    pub lesion_fp: usize,
    pub lesion_dice: f64,
    pub lesion_sensitivity: Option<f64>,
    pub blobs: usize,
    pub true_blobs: usize,
    pub false_blobs: usize,
    /// The QU-BraTS score and its curves' areas (with `uncertainty-<region>.nii.gz`).
    pub qubrats_score: Option<f64>,
    pub qubrats_auc_dice: Option<f64>,
    pub qubrats_auc_ftp: Option<f64>,
    pub qubrats_auc_ftn: Option<f64>,
    /// The area under the retention curve (with `uncertainty-<region>.nii.gz`).
    pub retention_auc: Option<f64>,
    /// The voxels' expected calibration error (with the region's probability map).
    pub ece: Option<f64>,
    /// Why a measure above is missing.
    pub uncertainty_note: Option<String>,
}

/// One blob of one region (a row of `evaluation-blobs.csv` for the primary region).
#[derive(Debug, Clone, Serialize)]
pub struct BlobResult {
    pub case: String,
    pub id: u32,
    pub voxels: usize,
    /// The blob's voxels in the region's GT.
    pub overlap_voxels: usize,
    pub is_true: bool,
    pub mean_logit: f64,
    pub mean_probability: f64,
    pub deterministic_mean_logit: Option<f64>,
}

/// One label of a case's label map (a row of `evaluation-labels.csv`).
#[derive(Debug, Clone, Serialize)]
pub struct LabelDice {
    pub folder: String,
    pub case: String,
    pub label: u8,
    pub name: String,
    pub gt_voxels: usize,
    pub predicted_voxels: usize,
    pub dice: f64,
}

/// A region as the report gives it.
struct RegionSource<'a> {
    name: &'a str,
    labels: Option<&'a [u8]>,
    /// Whether it is the run's primary region (whose maps have no `-<region>` suffix).
    primary: bool,
    blobs: &'a [BlobEntry],
    comparison: Option<&'a Comparison>,
}

/// What every region of a case is compared with.
struct CaseContext<'a> {
    folder: &'a Path,
    folder_name: &'a str,
    case: &'a str,
    gt: &'a Array3<u32>,
    gt_path: &'a Path,
    voxel_volume_mm3: f64,
    opts: &'a EvaluateOptions,
    inputs: &'a [InputEntry],
    /// The brain mask, read from the inputs when a region first needs it.
    brain: OnceCell<Result<Array3<bool>, String>>,
}

impl CaseContext<'_> {
    /// A map of the run folder on the GT's grid.
    fn read_grid(&self, name: &str) -> Result<(PathBuf, Array3<f32>), Error> {
        let path = self.folder.join(name);
        let map = nifti::read_volume(&path, usize::MAX)?.data;
        if map.dim() != self.gt.dim() {
            return Err(InputError::Format {
                path: self.gt_path.to_path_buf(),
                reason: format!(
                    "grid {:?} differs from {}'s {:?}",
                    self.gt.dim(),
                    path.display(),
                    map.dim()
                ),
            }
            .into());
        }
        Ok((path, map))
    }

    /// A map of the run folder as whole numbers, on the GT's grid.
    fn read_map(&self, name: &str) -> Result<Array3<u32>, Error> {
        Ok(whole_numbers(&self.read_grid(name)?.1))
    }

    /// An uncertainty map: whole numbers 0..=100.
    fn read_uncertainty(&self, name: &str) -> Result<Array3<u8>, Error> {
        let (path, map) = self.read_grid(name)?;
        let max = f32::from(MAX_UNCERTAINTY);
        if let Some(v) = map
            .iter()
            .find(|&&v| !(v.fract() == 0.0 && (0.0..=max).contains(&v)))
        {
            return Err(format_error(
                &path,
                format!("an uncertainty map holds whole numbers from 0 to 100, not {v}"),
            ));
        }
        Ok(map.mapv(|v| v as u8))
    }

    /// A probability map: values in [0, 1].
    fn read_probability(&self, name: &str) -> Result<Array3<f32>, Error> {
        let (path, map) = self.read_grid(name)?;
        if let Some(v) = map.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(format_error(
                &path,
                format!("a probability map holds values from 0 to 1, not {v}"),
            ));
        }
        Ok(map)
    }

    /// The brain mask, or why there is none.
    fn brain(&self) -> Result<&Array3<bool>, String> {
        self.brain
            .get_or_init(|| load_brain(self.inputs, self.gt.dim()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn format_error(path: &Path, reason: String) -> Error {
    InputError::Format {
        path: path.to_path_buf(),
        reason,
    }
    .into()
}

/// The brain mask of the run's inputs (`case.inputs`, read with stochseg's own case reader;
/// relative paths against the working directory, as the run had them): every voxel where any
/// channel is nonzero, as the run's preprocessing defines it.
fn load_brain(inputs: &[InputEntry], shape: (usize, usize, usize)) -> Result<Array3<bool>, String> {
    if inputs.is_empty() {
        return Err("the report lists no input".into());
    }
    let files: Vec<(String, PathBuf)> = inputs
        .iter()
        .map(|i| (i.channel.clone(), i.path.clone()))
        .collect();
    let channels: Vec<String> = files.iter().map(|(c, _)| c.clone()).collect();
    let resolved =
        crate::io::case::resolve(&CaseSpec::Files(files), &channels, &DicomInput::default())
            .map_err(|e| e.to_string())?;
    let case = crate::io::case::load(&resolved, usize::MAX).map_err(|e| e.to_string())?;
    let brain = crate::preprocess::brain_mask(case.images.view());
    if brain.dim() != shape {
        return Err(format!(
            "the inputs' grid {:?} differs from the GT's {shape:?}",
            brain.dim()
        ));
    }
    Ok(brain)
}

/// Evaluates the run in `folder`.
pub fn evaluate_case(folder: &Path, opts: &EvaluateOptions) -> Result<CaseEvaluation, Error> {
    let report = crate::report::read(&folder.join("report.json"))?;
    let folder_name = folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gt_path = gt_path(opts, &report.case.id, &folder_name);
    let (gt, voxel_volume_mm3) = read_labels(&gt_path)?;
    let ctx = CaseContext {
        folder,
        folder_name: &folder_name,
        case: &report.case.id,
        gt: &gt,
        gt_path: &gt_path,
        voxel_volume_mm3,
        opts,
        inputs: &report.case.inputs,
        brain: OnceCell::new(),
    };
    let regions = region_sources(&report)
        .iter()
        .map(|source| region_case(&ctx, source))
        .collect::<Result<Vec<_>, Error>>()?;
    let labels = match &report.label_map {
        Some(info) => label_dice(&ctx, info)?,
        None => Vec::new(),
    };
    Ok(CaseEvaluation {
        folder: folder_name.clone(),
        case: report.case.id.clone(),
        regions,
        labels,
    })
}

fn gt_path(opts: &EvaluateOptions, case: &str, folder: &str) -> PathBuf {
    opts.gt_dir.join(
        opts.gt_pattern
            .replace("{case}", case)
            .replace("{folder}", folder),
    )
}

/// The primary region, then the report's other regions by name.
fn region_sources(report: &Report) -> Vec<RegionSource<'_>> {
    let primary = RegionSource {
        name: &report.region.name,
        labels: report.region.labels.as_deref(),
        primary: true,
        blobs: &report.blobs,
        comparison: report.comparison.as_ref(),
    };
    let others = report
        .regions
        .iter()
        .flatten()
        .filter(|(name, _)| **name != report.region.name)
        .map(|(name, entry)| RegionSource {
            name,
            labels: entry.labels.as_deref(),
            primary: false,
            blobs: &entry.blobs,
            comparison: entry.comparison.as_ref(),
        });
    std::iter::once(primary).chain(others).collect()
}

/// The GT voxels of a region: label in `labels`, or any non-zero label without labels.
pub fn region_mask(gt: &Array3<u32>, labels: Option<&[u8]>) -> Array3<bool> {
    match labels {
        None => gt.mapv(|g| g > 0),
        Some(labels) => gt.mapv(|g| labels.iter().any(|&l| u32::from(l) == g)),
    }
}

fn region_case(ctx: &CaseContext, source: &RegionSource) -> Result<RegionCase, Error> {
    let blob_ids = ctx.read_map(&MapKind::Labels.file_name_for(source.name, source.primary))?;
    let truth = region_mask(ctx.gt, source.labels);
    let pred = blob_ids.mapv(|l| l > 0);
    let rule = &ctx.opts.lesion_rule;
    let lesions = lesionwise::group(truth.view(), rule.gt_dilation);
    let scores = lesionwise::score(&lesions, pred.view(), ctx.voxel_volume_mm3, rule);
    let blobs = blob_results(ctx.case, source, &blob_ids, &truth, &lesions.dilated);
    let overlap = Overlap::of(&pred, &truth);
    let true_blobs = blobs.iter().filter(|b| b.is_true).count();
    let u = region_uncertainty(ctx, source, &pred, &truth)?;
    for note in &u.notes {
        tracing::warn!(folder = ctx.folder_name, region = source.name, "{note}");
    }
    let row = RegionCaseResult {
        folder: ctx.folder_name.to_string(),
        case: ctx.case.to_string(),
        region: source.name.to_string(),
        labels: labels_text(source.labels),
        gt_voxels: overlap.truth,
        predicted_voxels: overlap.predicted,
        dice: overlap.dice(),
        gt_lesions: scores.gt_lesions,
        small_lesions: scores.small_lesions,
        lesion_tp: scores.true_positives,
        lesion_fn: scores.false_negatives,
        lesion_fp: scores.false_positives,
        lesion_dice: scores.dice,
        lesion_sensitivity: scores.sensitivity,
        blobs: blobs.len(),
        true_blobs,
        false_blobs: blobs.len() - true_blobs,
        qubrats_score: u.qubrats.as_ref().map(|q| q.score),
        qubrats_auc_dice: u.qubrats.as_ref().map(|q| q.auc_dice),
        qubrats_auc_ftp: u.qubrats.as_ref().map(|q| q.auc_ftp),
        qubrats_auc_ftn: u.qubrats.as_ref().map(|q| q.auc_ftn),
        retention_auc: u.retention.as_ref().map(|r| r.auc),
        ece: u.reliability.as_ref().and_then(Reliability::ece),
        uncertainty_note: (!u.notes.is_empty()).then(|| u.notes.join("; ")),
    };
    Ok(RegionCase {
        row,
        blobs,
        uncertainty: u,
    })
}

/// The QU-BraTS curves and retention from `uncertainty-<region>.nii.gz`, the voxel calibration
/// from the region's probability map; a missing map (or brain mask) skips its measures, noted.
fn region_uncertainty(
    ctx: &CaseContext,
    source: &RegionSource,
    pred: &Array3<bool>,
    truth: &Array3<bool>,
) -> Result<RegionUncertainty, Error> {
    let uncertainty_name = MapKind::Uncertainty.file_name_for(source.name, source.primary);
    let probability_name = MapKind::Probability.file_name_for(source.name, source.primary);
    let has_uncertainty = ctx.folder.join(&uncertainty_name).is_file();
    let has_probability = ctx.folder.join(&probability_name).is_file();
    let mut out = RegionUncertainty::default();
    if !has_uncertainty {
        out.notes.push(format!(
            "no {uncertainty_name}: QU-BraTS and retention skipped"
        ));
    }
    if !has_probability {
        out.notes
            .push(format!("no {probability_name}: voxel calibration skipped"));
    }
    if !(has_uncertainty || has_probability) {
        return Ok(out);
    }
    let brain = match ctx.brain() {
        Ok(brain) => brain,
        Err(reason) => {
            out.notes.push(format!(
                "no brain mask from case.inputs ({reason}): QU-BraTS, retention and voxel calibration skipped"
            ));
            return Ok(out);
        }
    };
    let opts = ctx.opts;
    if has_uncertainty {
        let map = ctx.read_uncertainty(&uncertainty_name)?;
        let tally = Tally::new(pred, truth, brain, &map);
        out.qubrats = Some(uncertainty::qubrats(&tally, opts.qubrats_points));
        out.retention = Some(uncertainty::retention(&tally, opts.retention_steps));
    }
    if has_probability {
        let map = ctx.read_probability(&probability_name)?;
        out.reliability = Some(Reliability::of(&map, truth, brain, opts.ece_bins));
    }
    Ok(out)
}

fn labels_text(labels: Option<&[u8]>) -> String {
    match labels {
        None => "nonzero".into(),
        Some(labels) => labels
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(";"),
    }
}

/// Voxel counts of a prediction against a truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    pub both: usize,
    pub predicted: usize,
    pub truth: usize,
}

impl Overlap {
    pub fn of(pred: &Array3<bool>, truth: &Array3<bool>) -> Overlap {
        let mut o = Overlap {
            both: 0,
            predicted: 0,
            truth: 0,
        };
        Zip::from(pred).and(truth).for_each(|&p, &t| {
            o.both += usize::from(p && t);
            o.predicted += usize::from(p);
            o.truth += usize::from(t);
        });
        o
    }

    /// `2 |P & T| / (|P| + |T|)`; 1 when both are empty.
    pub fn dice(&self) -> f64 {
        let total = self.predicted + self.truth;
        if total == 0 {
            1.0
        } else {
            2.0 * self.both as f64 / total as f64
        }
    }
}

/// The region's blobs with their voxels in the region's GT and their truth (a voxel in
/// `near_gt`).
fn blob_results(
    case: &str,
    source: &RegionSource,
    blob_ids: &Array3<u32>,
    truth: &Array3<bool>,
    near_gt: &Array3<bool>,
) -> Vec<BlobResult> {
    let mut overlap: BTreeMap<u32, usize> = BTreeMap::new();
    let mut near: BTreeSet<u32> = BTreeSet::new();
    Zip::from(blob_ids)
        .and(truth)
        .and(near_gt)
        .for_each(|&l, &t, &n| {
            if l > 0 && t {
                *overlap.entry(l).or_default() += 1;
            }
            if l > 0 && n {
                near.insert(l);
            }
        });
    let deterministic: BTreeMap<u32, f64> = source
        .comparison
        .iter()
        .flat_map(|c| &c.blobs)
        .map(|b| (b.id, b.deterministic_mean_logit))
        .collect();
    source
        .blobs
        .iter()
        .map(|b| BlobResult {
            case: case.to_string(),
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

/// The Dice of each label of the label map against the same GT label.
fn label_dice(ctx: &CaseContext, info: &LabelMapInfo) -> Result<Vec<LabelDice>, Error> {
    let map = ctx.read_map(LABEL_MAP_FILE)?;
    Ok(info
        .labels
        .iter()
        .map(|l| {
            let label = u32::from(l.label);
            let o = Overlap::of(&map.mapv(|v| v == label), &ctx.gt.mapv(|v| v == label));
            LabelDice {
                folder: ctx.folder_name.to_string(),
                case: ctx.case.to_string(),
                label: l.label,
                name: l.name.clone(),
                gt_voxels: o.truth,
                predicted_voxels: o.predicted,
                dice: o.dice(),
            }
        })
        .collect())
}

/// A label map as whole numbers (values at most 0.5 are 0) and its voxel volume in mm³.
fn read_labels(path: &Path) -> Result<(Array3<u32>, f64), Error> {
    let image = nifti::read_volume(path, usize::MAX)?;
    Ok((
        whole_numbers(&image.data),
        image.geometry.voxel_volume_mm3(),
    ))
}

fn whole_numbers(map: &Array3<f32>) -> Array3<u32> {
    map.mapv(|v| if v > 0.5 { v.round() as u32 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_masks_follow_the_labels() {
        let gt = Array3::from_shape_vec((1, 1, 5), vec![0, 1, 2, 3, 4]).unwrap();
        let any: Vec<bool> = region_mask(&gt, None).iter().copied().collect();
        assert_eq!(any, [false, true, true, true, true]);
        let tc: Vec<bool> = region_mask(&gt, Some(&[1, 3])).iter().copied().collect();
        assert_eq!(tc, [false, true, false, true, false]);
        assert_eq!(labels_text(Some(&[1, 3])), "1;3");
        assert_eq!(labels_text(None), "nonzero");
    }

    #[test]
    fn dice_of_known_overlaps() {
        let p = Array3::from_shape_vec((1, 1, 4), vec![true, true, false, false]).unwrap();
        let t = Array3::from_shape_vec((1, 1, 4), vec![false, true, true, true]).unwrap();
        let o = Overlap::of(&p, &t);
        assert_eq!((o.both, o.predicted, o.truth), (1, 2, 3));
        assert_eq!(o.dice(), 0.4);
        let empty = Array3::from_elem((1, 1, 4), false);
        assert_eq!(Overlap::of(&empty, &empty).dice(), 1.0);
        assert_eq!(Overlap::of(&empty, &t).dice(), 0.0);
    }
}
