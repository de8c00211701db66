//! The DICOM sections: `dicom` (which series of a folder holds which channel) and
//! `dicom_output` (the SEGs and source series written beside the NIfTI maps).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How DICOM input is read: which series in a folder holds which channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomInput {
    /// Series rule per channel; channels not listed use the built-in rules for the BraTS names
    /// (`crate::io::dicom::default_rule`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, SeriesRule>,
}

/// Picks one DICOM series: every regular expression given must match (a search, not a full
/// match, unless anchored) and `exclude_description` must not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
}

impl SeriesRule {
    /// `(key, pattern)` of each regular expression the rule sets.
    pub fn patterns(&self) -> Vec<(&'static str, &str)> {
        [
            ("series_description", &self.series_description),
            ("exclude_description", &self.exclude_description),
            ("series_number", &self.series_number),
            ("series_instance_uid", &self.series_instance_uid),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// DICOM objects written with the NIfTI maps: `seg.dcm` always, the rest on request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomOutput {
    /// One more segment per blob in `seg.dcm`, besides the whole tumor.
    pub per_blob_segments: bool,
    /// Which blobs `seg.dcm` carries.
    pub seg_blobs: SegBlobs,
    /// Segments 2-4 of `seg.dcm`: the blobs whose decision is accept, review, reject (needs
    /// `blobs.decisions` and `seg_blobs: all`).
    pub decision_segments: bool,
    /// Also write `prob-seg.dcm`, a FRACTIONAL (probability) SEG of the probability map.
    pub probability_seg: bool,
    /// Also write `prob-levels-seg.dcm`, a BINARY SEG with one segment per level (the voxels
    /// whose probability is at least the level); increasing, in (0, 1]. Empty: not written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probability_levels: Vec<f64>,
    /// Leave out frames with no segmented voxel (a segment keeps one frame if all are empty).
    pub omit_empty_frames: bool,
    /// Write the input channels as DICOM MR series under `source-dicom/` (NIfTI input only).
    pub write_source_dicom: bool,
    /// The channel whose series the SEGs reference, the one a viewer draws them on; `None`:
    /// `t2f` when it is a channel, else the first channel (`Pipeline::reference_channel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_channel: Option<String>,
    /// PatientName of the objects written for NIfTI input (DICOM input keeps the source's).
    pub patient_name: String,
    /// PatientID of the objects written for NIfTI input; empty = the case id.
    pub patient_id: String,
}

impl Default for DicomOutput {
    fn default() -> Self {
        DicomOutput {
            per_blob_segments: false,
            seg_blobs: SegBlobs::All,
            decision_segments: false,
            probability_seg: false,
            probability_levels: Vec::new(),
            omit_empty_frames: true,
            write_source_dicom: false,
            reference_channel: None,
            patient_name: "Anonymous^".to_string(),
            patient_id: String::new(),
        }
    }
}

/// Blobs the DICOM SEG carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegBlobs {
    /// Every blob: the SEG equals `labels.nii.gz`.
    #[default]
    All,
    /// Only blobs whose decision is accept (needs `blobs.decisions`).
    Accepted,
}
