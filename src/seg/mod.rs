//! DICOM outputs of a run: `seg.dcm` always (Segmentation Storage, BINARY, Explicit VR Little
//! Endian), `prob-seg.dcm` on request (FRACTIONAL PROBABILITY of the probability map), and on
//! request `prob-levels-seg.dcm` (BINARY, one segment per probability level, for viewers
//! that cannot read FRACTIONAL), and on request the input channels as DICOM MR series under `source-dicom/<channel>/` (NIfTI input
//! only). The SEGs reference one series, the reference channel's (`dicom_output.
//! reference_channel`): the input's own series for DICOM input, the written one for NIfTI.
//!
//! Inputs are on the input grid, arrays `[k, j, i]`: the blob label map (the values of
//! `labels.nii.gz`), the probability map, the case's `Geometry` and channel sources, and the
//! blobs. Frames are the k-slices (`plane` says how the grid becomes DICOM planes). The mask a
//! reader reconstructs on the input grid equals the label map voxel for voxel.
//!
//! The jobs are split: `reference` decides what the objects are anchored to (study, frame of
//! reference, planes, referenced source series; `mr` writes the NIfTI channels as MR series),
//! `content` what each SEG holds (its segments, names and series number), `segmentation` the
//! Segmentation IOD data set itself, and `summary` what the report says; `request` holds what
//! they all read (the options, the inputs, the file names). `write` runs them.
//!
//! Checklist followed: the DICOM standard PS3.3 A.51, C.8.20, C.7.6.16/17, and what highdicom
//! 0.28 and dcmqi write. dicom-rs has no SEG support; `element` is the only
//! module that touches its types directly.

mod content;
mod element;
pub mod mr;
pub mod pack;
pub mod plane;
mod reference;
mod request;
pub mod segment;
pub mod segmentation;
mod select;
pub mod study;
pub mod summary;
pub mod values;

use std::path::Path;

pub use request::{
    LabelMapSeg, RegionSeg, SegError, SegInputs, SegOptions, PROBABILITY_LEVELS_SEG_FILE,
    PROBABILITY_SEG_FILE, SEG_FILE, SOURCE_DICOM_DIR,
};
pub use select::{select, LabelMapSelection, RegionSelection, SegSelection};

use segment::Algorithm;
use segmentation::Common;
use values::Timestamp;

pub use summary::{ReferencedSeries, SegFile, SegSummary, SegmentInfo};

/// Writes the DICOM outputs into `dir` (the staging folder) and says what was written.
pub fn write(dir: &Path, inputs: &SegInputs, opts: &SegOptions) -> Result<SegSummary, SegError> {
    let now = Timestamp::now();
    let algorithm = Algorithm {
        name: "stochseg".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        parameters: inputs.algorithm_parameters.to_string(),
    };
    let anchor = reference::anchor(dir, inputs.case, opts, &now, &algorithm)?;
    let common = Common {
        study: &anchor.study,
        planes: &anchor.planes,
        source: anchor.source.as_ref(),
        now: &now,
        algorithm: &algorithm,
    };
    let binary = content::write_binary(dir, inputs, opts, common)?;
    let probabilities = |file: &str| {
        inputs
            .regions
            .iter()
            .map(|r| r.probability)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| SegError::new(&dir.join(file), "no probability map was given"))
    };
    let fractional = match opts.probability_seg {
        true => {
            let maps = probabilities(PROBABILITY_SEG_FILE)?;
            Some(content::write_fractional(dir, inputs, &maps, opts, common)?)
        }
        false => None,
    };
    let levels = match opts.probability_levels.is_empty() {
        true => None,
        false => {
            let maps = probabilities(PROBABILITY_LEVELS_SEG_FILE)?;
            Some(content::write_levels(dir, inputs, &maps, opts, common)?)
        }
    };
    let study = &anchor.study;
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
        levels,
        referenced_series: anchor
            .source
            .iter()
            .map(|s| ReferencedSeries {
                channel: s.channel.clone(),
                series_instance_uid: s.series_instance_uid.clone(),
                instances: s.instances.len(),
            })
            .collect(),
        source_dicom: anchor.source_dicom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::Blob;
    use crate::io::case::Case;
    use crate::io::case::Source;
    use crate::io::dicom::DicomSource;
    use crate::volume::Geometry;
    use dicom::dictionary_std::tags;
    use dicom::object::open_file;
    use ndarray::{Array3, Array4};
    use std::path::PathBuf;

    /// 13 x 11 x 3 grid (143 pixels a frame), two blobs.
    pub(super) fn case(sources: Vec<Source>) -> (Case, Array3<u32>) {
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

    pub(super) fn blob(id: u32, voxels: usize) -> Blob {
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
            mean_entropy: 0.2,
            mean_mutual_information: 0.05,
            mean_logit_variance_between: 1.5,
            mean_logit_variance_within: 0.3,
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
    fn nifti_case_gets_a_standalone_seg_with_per_blob_segments() {
        let (case, labels) = case(vec![Source::Nifti(Default::default())]);
        let dir = tempfile::tempdir().unwrap();
        let blobs = [blob(1, 2), blob(2, 1)];
        let regions = [RegionSeg {
            name: "WT",
            labels: labels.view(),
            probability: None,
            blobs: &blobs,
        }];
        let inputs = SegInputs {
            case: &case,
            regions: &regions,
            label_map: None,
            algorithm_parameters: "test",
        };
        let opts = SegOptions {
            per_blob_segments: true,
            omit_empty_frames: true,
            reference_channel: "t1n".into(),
            ..Default::default()
        };
        let s = write(dir.path(), &inputs, &opts).unwrap();
        // frames: tumor at k 0 and 2, blob 1 at k 0, blob 2 at k 2
        assert_eq!(s.binary.frames, 4);
        assert_eq!(s.segment_of_blob(None, 2), Some(3));
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
        let regions = [RegionSeg {
            name: "WT",
            labels: empty.view(),
            probability: Some(probability.view()),
            blobs: &[],
        }];
        let inputs = SegInputs {
            case: &case,
            regions: &regions,
            label_map: None,
            algorithm_parameters: "test",
        };
        let opts = SegOptions {
            probability_seg: true,
            omit_empty_frames: true,
            write_source_dicom: true,
            reference_channel: "t1n".into(),
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
        let regions = [RegionSeg {
            name: "WT",
            labels: labels.view(),
            probability: None,
            blobs: &[],
        }];
        let inputs = SegInputs {
            case: &case,
            regions: &regions,
            label_map: None,
            algorithm_parameters: "",
        };
        let opts = SegOptions {
            reference_channel: "t1n".into(),
            ..Default::default()
        };
        let e = write(dir.path(), &inputs, &opts).unwrap_err();
        assert!(e.reason.contains("ImagePositionPatient"), "{e}");
    }
}
