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
//! | `evaluation-roc.png`, `evaluation-calibration.png` | the primary regions' blob ROC and calibration |

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::case::{BlobResult, CaseEvaluation, RegionCaseResult};
use super::detect::roc_curve;
use super::Evaluation;
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
    files.extend(
        write_plots(out, evaluation, &primary_blobs)
            .map_err(|(p, e)| io_error(&p, e.to_string()))?,
    );
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
