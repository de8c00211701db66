//! What the SEG writers all read: the options (from the pipeline config's `dicom_output`), the
//! run's results on the input grid, the files' names, and the error they fail with.

use std::path::{Path, PathBuf};

use ndarray::ArrayView3;

use crate::blobs::Blob;
use crate::io::case::Case;
use crate::pipeline::Decisions;

pub const SEG_FILE: &str = "seg.dcm";
pub const PROBABILITY_SEG_FILE: &str = "prob-seg.dcm";
pub const PROBABILITY_LEVELS_SEG_FILE: &str = "prob-levels-seg.dcm";
pub const SOURCE_DICOM_DIR: &str = "source-dicom";

/// A DICOM output could not be made or written (an output failure, exit code 5).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SegError {
    pub path: PathBuf,
    pub reason: String,
}

impl SegError {
    pub fn new(path: &Path, reason: impl Into<String>) -> SegError {
        SegError {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// What to write (from the pipeline config's `dicom_output`).
#[derive(Debug, Clone, Default)]
pub struct SegOptions {
    pub per_blob_segments: bool,
    /// One segment per decision (accept, review, reject) after the tumor segment, by these
    /// thresholds (`dicom_output.decision_segments`).
    pub decision_segments: Option<Decisions>,
    pub probability_seg: bool,
    /// Probability levels of `prob-levels-seg.dcm` (increasing, in (0, 1]); none: not written.
    pub probability_levels: Vec<f64>,
    pub omit_empty_frames: bool,
    pub write_source_dicom: bool,
    /// The channel whose series the SEGs reference (are drawn on); one of the case's channels.
    pub reference_channel: String,
    /// PatientName for NIfTI input.
    pub patient_name: String,
    /// PatientID for NIfTI input; empty = the case id.
    pub patient_id: String,
}

/// A run's results, on the input grid (`[k, j, i]`).
#[derive(Debug, Clone, Copy)]
pub struct SegInputs<'a> {
    pub case: &'a Case,
    /// One per region, the primary first. A one-region run's SEG holds the whole tumor, then
    /// the decision and blob segments; with several regions, see `content`.
    pub regions: &'a [RegionSeg<'a>],
    /// The label map in the BraTS convention, when the run has one.
    pub label_map: Option<LabelMapSeg<'a>>,
    /// Free text recorded as AlgorithmParameters.
    pub algorithm_parameters: &'a str,
}

/// The label map in the BraTS convention (as u32) and the names of its non-zero labels.
#[derive(Debug, Clone, Copy)]
pub struct LabelMapSeg<'a> {
    pub map: ArrayView3<'a, u32>,
    pub names: &'a [(u8, String)],
}

/// One region's results on the input grid.
#[derive(Debug, Clone, Copy)]
pub struct RegionSeg<'a> {
    pub name: &'a str,
    /// Blob ids (0 = background), the values of the region's labels map.
    pub labels: ArrayView3<'a, u32>,
    /// Needed when `probability_seg` or `probability_levels` are asked for.
    pub probability: Option<ArrayView3<'a, f32>>,
    pub blobs: &'a [Blob],
}
