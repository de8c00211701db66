//! DICOM outputs of a run: `seg.dcm` always (Segmentation Storage, BINARY, Explicit VR Little
//! Endian), `prob-seg.dcm` on request (FRACTIONAL PROBABILITY of the probability map), and on
//! request the input channels as DICOM MR series under `source-dicom/<channel>/` (NIfTI input
//! only), which the SEG then references.
//!
//! Inputs are on the input grid, arrays `[k, j, i]`: the blob label map (the values of
//! `labels.nii.gz`), the probability map, the case's `Geometry` and channel sources, and the
//! blobs. Frames are the k-slices (`plane` says how the grid becomes DICOM planes). Segment 1
//! is the whole tumor (label > 0); with per-blob segments, blob `n`-th in the report's order
//! (id `n`) is segment `n + 1` (label == id). The mask a reader reconstructs on the input grid
//! equals the label map voxel for voxel.
//!
//! DICOM input: the SEG joins the source's study and frame of reference, copies its patient,
//! keeps its ImageOrientationPatient / ImagePositionPatient / PixelSpacing strings and
//! references every source series (Common Instance Reference) and, per frame, slice k of each
//! (Derivation Image). NIfTI input: a new de-identified patient and study (PatientName and
//! PatientID from the pipeline config's `dicom_output`), new UIDs `2.25.<uuid>`, geometry from
//! the affine; a stand-alone SEG unless the MR series are written too.
//!
//! Checklist followed: /work/shared/design/notes-dicom-seg.md (PS3.3 A.51, C.8.20, C.7.6.16/17;
//! what highdicom 0.28 and dcmqi write). dicom-rs has no SEG support; `element` is the only
//! module that touches its types directly.

mod element;
pub mod mr;
pub mod pack;
pub mod plane;
pub mod segment;
pub mod segmentation;
pub mod study;
pub mod values;

use std::path::{Path, PathBuf};

use ndarray::{ArrayView3, Axis};
use serde::Serialize;

use crate::blobs::Blob;
use crate::io::case::{Case, Source};
use crate::io::dicom::DicomSource;
use crate::output::OutputError;
use crate::pipeline::{Decision, Decisions};

use mr::SourceDicomInfo;
use plane::Planes;
use segment::{blob_colour, Algorithm, Segment, SegmentKind, TUMOR_COLOUR};
use segmentation::{Common, Pixels, SegSpec, SourceSeries};
use study::{NewPatient, Study};
use values::{new_uid, Timestamp};

pub const SEG_FILE: &str = "seg.dcm";
pub const PROBABILITY_SEG_FILE: &str = "prob-seg.dcm";
pub const SOURCE_DICOM_DIR: &str = "source-dicom";
const SEG_SERIES_NUMBER: i64 = 901;
const PROBABILITY_SERIES_NUMBER: i64 = 902;

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

impl From<SegError> for OutputError {
    fn from(e: SegError) -> OutputError {
        OutputError::Io {
            path: e.path,
            reason: e.reason,
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
    pub omit_empty_frames: bool,
    pub write_source_dicom: bool,
    /// PatientName for NIfTI input.
    pub patient_name: String,
    /// PatientID for NIfTI input; empty = the case id.
    pub patient_id: String,
}

/// A run's results, on the input grid (`[k, j, i]`).
#[derive(Debug, Clone, Copy)]
pub struct SegInputs<'a> {
    pub case: &'a Case,
    /// Blob ids (0 = background), the values of `labels.nii.gz`.
    pub labels: ArrayView3<'a, u32>,
    /// Needed when `probability_seg` is asked for.
    pub probability: Option<ArrayView3<'a, f32>>,
    pub blobs: &'a [Blob],
    /// Free text recorded as AlgorithmParameters.
    pub algorithm_parameters: &'a str,
}

/// The report's `seg` section.
#[derive(Debug, Clone, Serialize)]
pub struct SegSummary {
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// `dicom_source` (patient and study copied from the input) or `new` (de-identified).
    pub study_origin: String,
    pub binary: SegFile,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fractional: Option<SegFile>,
    /// Series the SEGs reference (source images); empty for a stand-alone SEG.
    pub referenced_series: Vec<ReferencedSeries>,
    /// MR series written from the NIfTI channels (`--write-source-dicom`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_dicom: Vec<SourceDicomInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegFile {
    pub file: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub segmentation_type: String,
    pub frames: usize,
    pub segments: Vec<SegmentInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    pub number: u16,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_id: Option<u32>,
    /// Voxels in the segment (FRACTIONAL: voxels with a nonzero stored value).
    pub voxels: usize,
}

#[derive(Debug, Clone, Serialize)]
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
        out.extend(self.source_dicom.iter().map(|s| format!("{}/", s.folder)));
        out
    }

    /// Segment number of blob `id` in `seg.dcm`, when per-blob segments were written.
    pub fn segment_of_blob(&self, id: u32) -> Option<u16> {
        self.binary
            .segments
            .iter()
            .find(|s| s.blob_id == Some(id))
            .map(|s| s.number)
    }
}

/// Writes the DICOM outputs into `dir` (the staging folder) and says what was written.
pub fn write(dir: &Path, inputs: &SegInputs, opts: &SegOptions) -> Result<SegSummary, SegError> {
    let seg_path = dir.join(SEG_FILE);
    let now = Timestamp::now();
    let algorithm = Algorithm {
        name: "stochseg".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        parameters: inputs.algorithm_parameters.to_string(),
    };
    let case = inputs.case;
    let dicom = dicom_sources(case);
    let (study, planes, mut sources) = match dicom.first() {
        Some((_, first)) => {
            if opts.write_source_dicom {
                tracing::info!(
                    "write_source_dicom: the input is DICOM, so its own series are referenced and none is written"
                );
            }
            let planes = Planes::from_dicom(&case.geometry, first)
                .map_err(|r| SegError::new(&seg_path, r))?;
            let study = Study::from_dicom(first);
            let sources = referenced_sources(&dicom, &study, &seg_path)?;
            (study, planes, sources)
        }
        None => {
            let planes =
                Planes::from_geometry(&case.geometry).map_err(|r| SegError::new(&seg_path, r))?;
            let patient_id = if opts.patient_id.is_empty() {
                case.id.as_str()
            } else {
                opts.patient_id.as_str()
            };
            let patient = NewPatient {
                patient_name: &opts.patient_name,
                patient_id,
                study_description: "stochseg segmentation",
            };
            (Study::new_deidentified(&patient, &now), planes, Vec::new())
        }
    };
    let mut source_dicom = Vec::new();
    if opts.write_source_dicom && dicom.is_empty() {
        let common = Common {
            study: &study,
            planes: &planes,
            sources: &[],
            now: &now,
            algorithm: &algorithm,
        };
        for (c, name) in case.channels.iter().enumerate() {
            let channel = mr::Channel {
                name,
                series_number: c as i64 + 1,
                volume: case.images.index_axis(Axis(0), c),
            };
            let folder = format!("{SOURCE_DICOM_DIR}/{name}");
            let (series, info) = mr::write_series(dir, &folder, channel, common)?;
            sources.push(series);
            source_dicom.push(info);
        }
    }
    let common = Common {
        study: &study,
        planes: &planes,
        sources: &sources,
        now: &now,
        algorithm: &algorithm,
    };
    let binary = write_binary(dir, inputs, opts, common)?;
    let fractional = match (opts.probability_seg, inputs.probability) {
        (true, Some(p)) => Some(write_fractional(dir, p, opts, common)?),
        (true, None) => {
            return Err(SegError::new(
                &dir.join(PROBABILITY_SEG_FILE),
                "no probability map was given",
            ))
        }
        (false, _) => None,
    };
    Ok(SegSummary {
        study_instance_uid: study.study_instance_uid.clone(),
        frame_of_reference_uid: study.frame_of_reference_uid.clone(),
        study_origin: if study.from_source {
            "dicom_source"
        } else {
            "new"
        }
        .to_string(),
        binary,
        fractional,
        referenced_series: sources
            .iter()
            .map(|s| ReferencedSeries {
                channel: s.channel.clone(),
                series_instance_uid: s.series_instance_uid.clone(),
                instances: s.instances.len(),
            })
            .collect(),
        source_dicom,
    })
}

fn dicom_sources(case: &Case) -> Vec<(&str, &DicomSource)> {
    case.channels
        .iter()
        .zip(&case.sources)
        .filter_map(|(c, s)| match s {
            Source::Dicom(d) => Some((c.as_str(), d)),
            Source::Nifti(_) => None,
        })
        .collect()
}

/// The DICOM channels' series in the SEG's study (a SEG references other studies only through
/// a sequence we do not write; those are left out with a warning).
fn referenced_sources(
    dicom: &[(&str, &DicomSource)],
    study: &Study,
    seg_path: &Path,
) -> Result<Vec<SourceSeries>, SegError> {
    let slices = dicom.first().map_or(0, |(_, d)| d.instances.len());
    let mut out = Vec::new();
    for (channel, d) in dicom {
        if d.study_instance_uid != study.study_instance_uid {
            tracing::warn!(
                channel = *channel,
                series = %d.series_instance_uid,
                "source series is in another study; the SEG does not reference it"
            );
            continue;
        }
        if d.instances.len() != slices {
            return Err(SegError::new(
                seg_path,
                format!(
                    "source series {} of channel {channel} has {} instances, expected {slices}",
                    d.series_instance_uid,
                    d.instances.len()
                ),
            ));
        }
        if out
            .iter()
            .any(|s: &SourceSeries| s.series_instance_uid == d.series_instance_uid)
        {
            continue;
        }
        out.push(SourceSeries {
            channel: channel.to_string(),
            series_instance_uid: d.series_instance_uid.clone(),
            instances: d.instances.clone(),
        });
    }
    Ok(out)
}

/// Segment 1 is the whole tumor; then, with decision segments, accept, review and reject (all
/// three, so their numbers do not depend on the case; one without blobs is empty); then, with
/// per-blob segments, one per blob in report order.
fn binary_segments(
    blobs: &[Blob],
    opts: &SegOptions,
    path: &Path,
) -> Result<Vec<Segment>, SegError> {
    let mut segments = vec![Segment {
        number: 1,
        kind: SegmentKind::Tumor,
        label: "Tumor".to_string(),
        description: "every blob of the thresholded ensemble logit".to_string(),
        rgb: TUMOR_COLOUR,
        tracking: None,
    }];
    if let Some(d) = opts.decision_segments {
        segments.extend(decision_segments(blobs, d));
    }
    if opts.per_blob_segments {
        let first = segments.len() + 1;
        if first + blobs.len() > usize::from(u16::MAX) + 1 {
            return Err(SegError::new(
                path,
                format!(
                    "{} blobs do not fit in one SEG (at most {} per-blob segments)",
                    blobs.len(),
                    usize::from(u16::MAX) + 1 - first
                ),
            ));
        }
        for (n, b) in blobs.iter().enumerate() {
            segments.push(Segment {
                number: (first + n) as u16,
                kind: SegmentKind::Blob(b.id),
                label: format!("Blob {} (confidence {:.2})", b.id, b.mean_logit),
                description: format!(
                    "{} voxels, mean logit {:.3}, pass agreement {:.2}",
                    b.voxels, b.mean_logit, b.pass_agreement
                ),
                rgb: blob_colour(n),
                tracking: Some((format!("Blob {}", b.id), new_uid())),
            });
        }
    }
    Ok(segments)
}

/// Segments 2, 3, 4: the blobs whose decision is accept, review, reject.
fn decision_segments(blobs: &[Blob], d: Decisions) -> Vec<Segment> {
    let (a, r) = (d.accept, d.reject);
    [
        (Decision::Accept, format!("mean logit >= {a}"), [255, 90, 0]),
        (Decision::Review, format!("{r} <= mean logit < {a}"), [255, 215, 0]),
        (Decision::Reject, format!("mean logit < {r}"), [110, 140, 255]),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (decision, rule, rgb))| {
        let mut ids: Vec<u32> = blobs
            .iter()
            .filter(|b| d.decide(b.mean_logit) == decision)
            .map(|b| b.id)
            .collect();
        ids.sort_unstable();
        let name = decision_name(decision);
        Segment {
            number: n as u16 + 2,
            label: format!("Tumor: {name}"),
            description: format!(
                "blobs whose decision is {name}: {rule} (blobs.decisions accept {a}, reject {r}); {} blob(s)",
                ids.len()
            ),
            kind: SegmentKind::Blobs(ids),
            rgb,
            tracking: None,
        }
    })
    .collect()
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Accept => "accept",
        Decision::Review => "review",
        Decision::Reject => "reject",
    }
}

fn write_binary(
    dir: &Path,
    inputs: &SegInputs,
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let path = dir.join(SEG_FILE);
    let segments = binary_segments(inputs.blobs, opts, &path)?;
    let spec = SegSpec {
        content_label: "TUMOR_SEG",
        content_description: "Tumor segmentation of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor segmentation",
        series_number: SEG_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let built = segmentation::build(common, &spec, Pixels::Binary(inputs.labels))
        .map_err(|r| SegError::new(&path, r))?;
    let file = seg_file(SEG_FILE, "BINARY", &built, &segments);
    element::write_file(built.obj, &path)?;
    tracing::info!(
        file = SEG_FILE,
        frames = file.frames,
        segments = segments.len(),
        "DICOM SEG written"
    );
    Ok(file)
}

fn write_fractional(
    dir: &Path,
    probability: ArrayView3<f32>,
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let path = dir.join(PROBABILITY_SEG_FILE);
    let segments = [Segment {
        number: 1,
        kind: SegmentKind::Tumor,
        label: "Tumor probability".to_string(),
        description: "sigmoid of the aggregated ensemble logit".to_string(),
        rgb: TUMOR_COLOUR,
        tracking: None,
    }];
    let spec = SegSpec {
        content_label: "TUMOR_PROB",
        content_description: "Tumor probability of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor probability",
        series_number: PROBABILITY_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let built = segmentation::build(common, &spec, Pixels::Fractional(probability))
        .map_err(|r| SegError::new(&path, r))?;
    let file = seg_file(PROBABILITY_SEG_FILE, "FRACTIONAL", &built, &segments);
    element::write_file(built.obj, &path)?;
    tracing::info!(
        file = PROBABILITY_SEG_FILE,
        frames = file.frames,
        "DICOM SEG written"
    );
    Ok(file)
}

fn seg_file(name: &str, kind: &str, built: &segmentation::Built, segments: &[Segment]) -> SegFile {
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
                    SegmentKind::Tumor | SegmentKind::Blobs(_) => None,
                },
                voxels,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;
    use dicom::dictionary_std::tags;
    use dicom::object::open_file;
    use ndarray::{Array3, Array4};

    /// 13 x 11 x 3 grid (143 pixels a frame), two blobs.
    fn case(sources: Vec<Source>) -> (Case, Array3<u32>) {
        let geometry = Geometry {
            shape_ijk: [13, 11, 3],
            affine_lps: [
                [0.5, 0.0, 0.0, -3.0],
                [0.0, 0.5, 0.0, 4.0],
                [0.0, 0.0, 2.0, 10.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let mut labels = Array3::<u32>::zeros((3, 11, 13));
        labels[[0, 1, 2]] = 1;
        labels[[0, 1, 3]] = 1;
        labels[[2, 10, 12]] = 2;
        let channels = vec!["t1n".to_string()];
        let case = Case {
            id: "CASE-1".into(),
            paths: vec![PathBuf::from("t1n.nii.gz")],
            images: Array4::from_elem((1, 3, 11, 13), 7.0),
            geometry,
            sources,
            channels,
        };
        (case, labels)
    }

    fn blob(id: u32, voxels: usize) -> Blob {
        Blob {
            id,
            voxels,
            volume_mm3: voxels as f64,
            centroid_ijk: [0.0; 3],
            centroid_lps_mm: [0.0; 3],
            bbox_min_ijk: [0; 3],
            bbox_max_ijk: [0; 3],
            mean_logit: 2.468,
            mean_probability: 0.9,
            max_logit: 5.0,
            mean_spread: 0.1,
            model_mean_logits: vec![3.0],
            pass_mean_logits: vec![3.0],
            pass_agreement: 1.0,
        }
    }

    fn text(obj: &dicom::object::InMemDicomObject, tag: dicom::core::Tag) -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    }

    #[test]
    fn decision_segments_follow_the_tumor_and_precede_the_blobs() {
        let with_logit = |id: u32, mean_logit: f64| Blob {
            mean_logit,
            ..blob(id, 10)
        };
        let blobs = [with_logit(1, 3.0), with_logit(2, 0.5), with_logit(3, 2.5)];
        let opts = SegOptions {
            per_blob_segments: true,
            decision_segments: Some(Decisions {
                accept: 2.5,
                reject: 1.0,
            }),
            ..SegOptions::default()
        };
        let s = binary_segments(&blobs, &opts, Path::new("seg.dcm")).unwrap();
        let kinds: Vec<_> = s.iter().map(|s| (s.number, s.kind.clone())).collect();
        assert_eq!(
            kinds[..4],
            [
                (1, SegmentKind::Tumor),
                (2, SegmentKind::Blobs(vec![1, 3])),
                (3, SegmentKind::Blobs(vec![])),
                (4, SegmentKind::Blobs(vec![2])),
            ]
        );
        assert_eq!(s[2].label, "Tumor: review");
        assert!(s[2].description.contains("1 <= mean logit < 2.5"));
        assert_eq!(
            kinds[4..],
            [
                (5, SegmentKind::Blob(1)),
                (6, SegmentKind::Blob(2)),
                (7, SegmentKind::Blob(3))
            ]
        );
    }

    #[test]
    fn nifti_case_gets_a_standalone_seg_with_per_blob_segments() {
        let (case, labels) = case(vec![Source::Nifti(Default::default())]);
        let dir = tempfile::tempdir().unwrap();
        let blobs = [blob(1, 2), blob(2, 1)];
        let inputs = SegInputs {
            case: &case,
            labels: labels.view(),
            probability: None,
            blobs: &blobs,
            algorithm_parameters: "test",
        };
        let opts = SegOptions {
            per_blob_segments: true,
            omit_empty_frames: true,
            ..Default::default()
        };
        let s = write(dir.path(), &inputs, &opts).unwrap();
        // frames: tumor at k 0 and 2, blob 1 at k 0, blob 2 at k 2
        assert_eq!(s.binary.frames, 4);
        assert_eq!(s.segment_of_blob(2), Some(3));
        assert_eq!(s.binary.segments[1].label, "Blob 1 (confidence 2.47)");
        assert_eq!(s.study_origin, "new");
        assert!(s.referenced_series.is_empty() && s.fractional.is_none());
        let obj = open_file(dir.path().join(SEG_FILE)).unwrap();
        assert_eq!(text(&obj, tags::SOP_CLASS_UID), SEGMENTATION_STORAGE);
        assert_eq!(text(&obj, tags::NUMBER_OF_FRAMES), "4");
        assert_eq!(text(&obj, tags::PATIENT_ID), "CASE-1");
        assert_eq!(
            text(&obj, tags::SOP_INSTANCE_UID),
            s.binary.sop_instance_uid
        );
        // 4 frames x 143 bits = 572 bits = 72 bytes (even)
        let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(pixels.len(), 72);
        assert!(obj.element(tags::REFERENCED_SERIES_SEQUENCE).is_err());
    }

    const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

    #[test]
    fn dicom_case_joins_and_references_the_source() {
        let positions = (0..3).map(|k| format!("-3\\4\\{}", 10 + 2 * k)).collect();
        let src = DicomSource {
            study_instance_uid: "1.2.3".into(),
            series_instance_uid: "1.2.3.4".into(),
            frame_of_reference_uid: "1.2.3.5".into(),
            instances: (0..3)
                .map(|k| ("1.2.840.10008.5.1.4.1.1.4".into(), format!("1.2.3.4.{k}")))
                .collect(),
            attributes: vec![("PatientID".into(), "SRC-7".into())],
            image_orientation: "1\\0\\0\\0\\1\\0".into(),
            image_positions: positions,
            pixel_spacing: "0.5\\0.5".into(),
        };
        let (case, labels) = case(vec![Source::Dicom(src)]);
        let empty = Array3::<u32>::zeros(labels.dim());
        let probability = labels.mapv(|l| if l > 0 { 0.75f32 } else { 0.0 });
        let dir = tempfile::tempdir().unwrap();
        let inputs = SegInputs {
            case: &case,
            labels: empty.view(),
            probability: Some(probability.view()),
            blobs: &[],
            algorithm_parameters: "test",
        };
        let opts = SegOptions {
            probability_seg: true,
            omit_empty_frames: true,
            write_source_dicom: true,
            ..Default::default()
        };
        let s = write(dir.path(), &inputs, &opts).unwrap();
        assert_eq!(s.binary.frames, 1, "an empty segment keeps one frame");
        assert_eq!(s.fractional.as_ref().unwrap().frames, 2);
        assert_eq!(s.study_instance_uid, "1.2.3");
        assert_eq!(s.frame_of_reference_uid, "1.2.3.5");
        assert_eq!(s.referenced_series.len(), 1);
        assert!(
            s.source_dicom.is_empty(),
            "DICOM input: no source series written"
        );
        assert!(!dir.path().join(SOURCE_DICOM_DIR).exists());
        let obj = open_file(dir.path().join(SEG_FILE)).unwrap();
        assert_eq!(text(&obj, tags::PATIENT_ID), "SRC-7");
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), "1.2.3");
        let refs = obj.element(tags::REFERENCED_SERIES_SEQUENCE).unwrap();
        let items = refs.items().unwrap();
        assert_eq!(text(&items[0], tags::SERIES_INSTANCE_UID), "1.2.3.4");
        let frac = open_file(dir.path().join(PROBABILITY_SEG_FILE)).unwrap();
        let pixels = frac.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(pixels.len(), 2 * 143, "already even, no padding");
        assert_eq!(pixels.iter().filter(|&&v| v == 191).count(), 3);
    }

    #[test]
    fn a_mismatched_source_is_an_output_error() {
        let src = DicomSource {
            image_orientation: "1\\0\\0\\0\\1\\0".into(),
            image_positions: vec!["0\\0\\0".into(); 3],
            instances: vec![("c".into(), "i".into()); 3],
            pixel_spacing: "0.5\\0.5".into(),
            ..Default::default()
        };
        let (case, labels) = case(vec![Source::Dicom(src)]);
        let dir = tempfile::tempdir().unwrap();
        let inputs = SegInputs {
            case: &case,
            labels: labels.view(),
            probability: None,
            blobs: &[],
            algorithm_parameters: "",
        };
        let e = write(dir.path(), &inputs, &SegOptions::default()).unwrap_err();
        assert!(e.reason.contains("ImagePositionPatient"), "{e}");
        let out: OutputError = e.into();
        assert!(matches!(out, OutputError::Io { .. }));
    }
}
