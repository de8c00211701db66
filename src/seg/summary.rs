//! What the report says about the DICOM outputs (its `seg` section): the study and frame of
//! reference the objects share, each SEG file with its segments and voxel counts, the series
//! the SEGs reference and the MR series written from NIfTI channels.

use serde::{Deserialize, Serialize};

use super::mr::SourceDicomInfo;
use super::segment::{Segment, SegmentKind};
use super::segmentation::Built;

/// The report's `seg` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegSummary {
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// `dicom_source` (patient and study copied from the input) or `new` (de-identified).
    pub study_origin: String,
    pub binary: SegFile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fractional: Option<SegFile>,
    /// `prob-levels-seg.dcm`: the probability thresholded at `dicom_output.probability_levels`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<SegFile>,
    /// Series the SEGs reference (source images); empty for a stand-alone SEG.
    pub referenced_series: Vec<ReferencedSeries>,
    /// MR series written from the NIfTI channels (`--write-source-dicom`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_dicom: Vec<SourceDicomInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegFile {
    pub file: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub segmentation_type: String,
    pub frames: usize,
    pub segments: Vec<SegmentInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub number: u16,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<u32>,
    /// The region of the segment, in the SEGs of a run with several regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Voxels in the segment (FRACTIONAL: voxels with a nonzero stored value).
    pub voxels: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferencedSeries {
    pub channel: String,
    pub series_instance_uid: String,
    pub instances: usize,
}

impl SegSummary {
    /// Files and folders written, relative to the output folder.
    pub fn files(&self) -> Vec<String> {
        let mut out = vec![self.binary.file.clone()];
        out.extend(self.fractional.iter().map(|f| f.file.clone()));
        out.extend(self.levels.iter().map(|f| f.file.clone()));
        out.extend(self.source_dicom.iter().map(|s| format!("{}/", s.folder)));
        out
    }

    /// Segment number of blob `id` of `region` (none in a one-region run) in `seg.dcm`, when
    /// per-blob segments were written.
    pub fn segment_of_blob(&self, region: Option<&str>, id: u32) -> Option<u16> {
        self.binary
            .segments
            .iter()
            .find(|s| s.blob_id == Some(id) && s.region.as_deref() == region)
            .map(|s| s.number)
    }
}

/// The report's entry for a built SEG written as `name`.
pub(crate) fn seg_file(name: &str, kind: &str, built: &Built, segments: &[Segment]) -> SegFile {
    SegFile {
        file: name.to_string(),
        sop_instance_uid: built.sop_instance_uid.clone(),
        series_instance_uid: built.series_instance_uid.clone(),
        segmentation_type: kind.to_string(),
        frames: built.frames,
        segments: segments
            .iter()
            .zip(&built.voxels)
            .map(|(s, &voxels)| SegmentInfo {
                number: s.number,
                label: s.label.clone(),
                blob_id: match s.kind {
                    SegmentKind::Blob(id) => Some(id),
                    SegmentKind::Tumor
                    | SegmentKind::Blobs(_)
                    | SegmentKind::AtLeast(_)
                    | SegmentKind::Label(_) => None,
                },
                region: s.region.clone(),
                voxels,
            })
            .collect(),
    }
}
