//! What `evaluate` writes into its output folder:
//!
//! | file | rows / content |
//! |---|---|
//! | `evaluation.yaml` | the [`Evaluation`] |
//! | `evaluation-cases.csv` | each case's primary region ([`CaseResult`]) |
//! | `evaluation-blobs.csv` | the primary regions' blobs ([`BlobResult`]) |
//! | `evaluation-regions.csv` | each case and region ([`RegionCaseResult`]) |
//! | `evaluation-region-blobs.csv` | every region's blobs, led by `region` and `folder` columns |
//! | `evaluation-labels.csv` | each case and label of the label maps ([`LabelDice`]), when some run has one |
//! | `evaluation-qubrats.csv` | the QU-BraTS curves of each case and region with an uncertainty map, one row per threshold |
//! | `evaluation-retention.csv` | the retention curve of each case and region with an uncertainty map, one row per referred fraction |
//! | `evaluation-roc.png`, `evaluation-calibration.png` | the primary regions' blob ROC and calibration |
//! | `evaluation-reliability.png` | per region, the pooled voxel calibration bins (fraction in the GT against mean probability) |
//! | `evaluation-retention.png` | per region, the mean retention curve (Dice against the referred fraction) |
//!
//! The last four only when some case has the maps they need.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::case::{BlobResult, CaseEvaluation, RegionCase, RegionCaseResult};
use super::cohort::Evaluation;
use super::detect::roc_curve;
use crate::figures::curves::{curves_png, Series, PALETTE};
use crate::output::OutputError;

/// One blob of one region (a row of `evaluation-region-blobs.csv`).
#[derive(Debug, Serialize)]
struct RegionBlobRow<'a> {
    region: &'a str,
    folder: &'a str,
    case: &'a str,
    id: u32,
    voxels: usize,
    overlap_voxels: usize,
    is_true: bool,
    mean_logit: f64,
    mean_probability: f64,
    deterministic_mean_logit: Option<f64>,
}

impl<'a> RegionBlobRow<'a> {
    fn new(region: &'a RegionCaseResult, b: &'a BlobResult) -> RegionBlobRow<'a> {
        RegionBlobRow {
            region: &region.region,
            folder: &region.folder,
            case: &b.case,
            id: b.id,
            voxels: b.voxels,
            overlap_voxels: b.overlap_voxels,
            is_true: b.is_true,
            mean_logit: b.mean_logit,
            mean_probability: b.mean_probability,
            deterministic_mean_logit: b.deterministic_mean_logit,
        }
    }
}

/// One threshold of one case's QU-BraTS curves (a row of `evaluation-qubrats.csv`).
#[derive(Debug, Serialize)]
struct QuBratsRow<'a> {
    folder: &'a str,
    case: &'a str,
    region: &'a str,
    threshold: f64,
    dice: f64,
    ftp_ratio: f64,
    ftn_ratio: f64,
}

/// One point of one case's retention curve (a row of `evaluation-retention.csv`).
#[derive(Debug, Serialize)]
struct RetentionRow<'a> {
    folder: &'a str,
    case: &'a str,
    region: &'a str,
    referred_fraction: f64,
    dice: f64,
}

fn qubrats_rows<'a>(r: &'a RegionCase) -> Vec<QuBratsRow<'a>> {
    let Some(q) = &r.uncertainty.qubrats else {
        return Vec::new();
    };
    (0..q.thresholds.len())
        .map(|i| QuBratsRow {
            folder: &r.row.folder,
            case: &r.row.case,
            region: &r.row.region,
            threshold: q.thresholds[i],
            dice: q.dice[i],
            ftp_ratio: q.ftp_ratio[i],
            ftn_ratio: q.ftn_ratio[i],
        })
        .collect()
}

fn retention_rows<'a>(r: &'a RegionCase) -> Vec<RetentionRow<'a>> {
    let Some(c) = &r.uncertainty.retention else {
        return Vec::new();
    };
    c.referred_fraction
        .iter()
        .zip(&c.dice)
        .map(|(&referred_fraction, &dice)| RetentionRow {
            folder: &r.row.folder,
            case: &r.row.case,
            region: &r.row.region,
            referred_fraction,
            dice,
        })
        .collect()
}

fn io_error(path: &Path, reason: String) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// Writes every file into `opts.out` (created); returns their paths.
pub fn write(
    out: &Path,
    evaluation: &Evaluation,
    cases: &[CaseEvaluation],
) -> Result<Vec<PathBuf>, OutputError> {
    std::fs::create_dir_all(out).map_err(|e| io_error(out, e.to_string()))?;
    let yaml_path = out.join("evaluation.yaml");
    let yaml = crate::yaml::to_string(evaluation).map_err(|e| io_error(&yaml_path, e))?;
    std::fs::write(&yaml_path, yaml).map_err(|e| io_error(&yaml_path, e.to_string()))?;
    let primary_blobs: Vec<&BlobResult> = cases
        .iter()
        .filter_map(|c| c.regions.first())
        .flat_map(|r| &r.blobs)
        .collect();
    let region_rows: Vec<_> = cases.iter().flat_map(|c| &c.regions).collect();
    let region_blobs: Vec<RegionBlobRow> = region_rows
        .iter()
        .flat_map(|r| r.blobs.iter().map(|b| RegionBlobRow::new(&r.row, b)))
        .collect();
    let mut files = vec![yaml_path];
    files.push(csv_file(out, "evaluation-cases.csv", &evaluation.cases)?);
    files.push(csv_file(out, "evaluation-blobs.csv", &primary_blobs)?);
    let rows: Vec<_> = region_rows.iter().map(|r| &r.row).collect();
    files.push(csv_file(out, "evaluation-regions.csv", &rows)?);
    files.push(csv_file(out, "evaluation-region-blobs.csv", &region_blobs)?);
    if let Some(labels) = &evaluation.label_map {
        files.push(csv_file(out, "evaluation-labels.csv", &labels.cases)?);
    }
    let qubrats: Vec<QuBratsRow> = region_rows.iter().flat_map(|r| qubrats_rows(r)).collect();
    if !qubrats.is_empty() {
        files.push(csv_file(out, "evaluation-qubrats.csv", &qubrats)?);
    }
    let retention: Vec<RetentionRow> = region_rows.iter().flat_map(|r| retention_rows(r)).collect();
    if !retention.is_empty() {
        files.push(csv_file(out, "evaluation-retention.csv", &retention)?);
    }
    let plots = write_plots(out, evaluation, &primary_blobs)
        .and_then(|mut p| {
            p.extend(write_uncertainty_plots(out, evaluation)?);
            Ok(p)
        })
        .map_err(|(p, e)| io_error(&p, e.to_string()))?;
    files.extend(plots);
    Ok(files)
}

fn csv_file<T: Serialize>(out: &Path, name: &str, rows: &[T]) -> Result<PathBuf, OutputError> {
    let path = out.join(name);
    write_csv(&path, rows).map_err(|e| io_error(&path, e))?;
    Ok(path)
}

fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), String> {
    let mut w = csv::Writer::from_path(path).map_err(|e| e.to_string())?;
    for r in rows {
        w.serialize(r).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

/// `evaluation-roc.png` (blob confidence as a detector of true blobs: the stochastic and, when
/// the runs compared, the deterministic mean logit) and `evaluation-calibration.png` (fraction
/// of true blobs against mean probability, per calibration bin), of the primary regions. None
/// without both classes.
fn write_plots(
    out: &Path,
    evaluation: &Evaluation,
    blobs: &[&BlobResult],
) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
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
    let roc_path = out.join("evaluation-roc.png");
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
    let calibration_path = out.join("evaluation-calibration.png");
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

/// `evaluation-reliability.png` (per region, the pooled voxel calibration bins) and
/// `evaluation-retention.png` (per region, the mean retention curve), each when some region has
/// its numbers; regions in name order, coloured from the palette.
fn write_uncertainty_plots(
    out: &Path,
    evaluation: &Evaluation,
) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
    let mut reliability: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
    let mut retention: Vec<(String, Vec<[f64; 2]>)> = Vec::new();
    for (name, r) in &evaluation.regions {
        if let Some(c) = &r.voxel_calibration {
            let points = c
                .bins
                .iter()
                .filter_map(|b| Some([b.mean_probability?, b.fraction_in_gt?]))
                .collect();
            reliability.push((name.clone(), points));
        }
        if let Some(c) = &r.retention {
            let points = c
                .referred_fraction
                .iter()
                .zip(&c.dice)
                .map(|(&f, &d)| [f, d])
                .collect();
            retention.push((name.clone(), points));
        }
    }
    let mut files = Vec::new();
    let plots = [
        (
            "evaluation-reliability.png",
            "VOXEL RELIABILITY",
            ["MEAN PROBABILITY", "FRACTION IN GT"],
            &reliability,
        ),
        (
            "evaluation-retention.png",
            "RETENTION",
            ["FRACTION REFERRED", "DICE"],
            &retention,
        ),
    ];
    for (file, title, axes, curves) in plots {
        if curves.is_empty() {
            continue;
        }
        let names: Vec<String> = curves.iter().map(|(n, _)| n.to_uppercase()).collect();
        let series: Vec<Series> = curves
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, ((_, points), name))| Series {
                name,
                colour: PALETTE[i % PALETTE.len()],
                points,
            })
            .collect();
        let path = out.join(file);
        curves_png(&path, title, axes, &series).map_err(|e| (path.clone(), e))?;
        files.push(path);
    }
    Ok(files)
}
