//! What the DICOM objects of a run are anchored to: the study and frame of reference they
//! join, the planes their frames lie on, and the one source series the SEGs reference, the
//! series a viewer draws them on (`dicom_output.reference_channel`).
//!
//! DICOM input: the SEGs join the reference channel's series: its study, patient and frame of
//! reference, its planes (its own ImageOrientationPatient / ImagePositionPatient / PixelSpacing
//! strings), and each frame derives from its slice k. (A case that mixes NIfTI and DICOM
//! channels whose reference channel is NIfTI uses the first DICOM channel, with a warning.)
//! NIfTI input: a new de-identified study, planes from the affine, and no reference, unless
//! the channels are written as MR series (`write_source_dicom`): all of them are written, and
//! the reference channel's is referenced.
//!
//! Why one series: PS3.3 C.12.2 lists in the Common Instance Reference module every instance
//! the object references anywhere (ReferencedSeriesSequence for this study, Studies Containing
//! Other Referenced Instances Sequence for others), so a frame whose Source Image Sequence
//! named every channel's slice would put every channel's series in ReferencedSeriesSequence.
//! OHIF then draws the SEG on whichever of those series it loaded first, and Cornerstone's
//! adapter uses only the first Source Image item of a frame; highdicom accepts source images
//! of one series only. A SEG drawn on one image series references that series, as the
//! Segmentation IOD allows ("one or more referenced images"); the other channels are inputs of
//! the model, listed in the report (and written under `source-dicom/` for NIfTI input).

use std::path::Path;

use ndarray::Axis;

use crate::io::case::{Case, Source};
use crate::io::dicom::DicomSource;

use super::mr::{self, SourceDicomInfo};
use super::plane::Planes;
use super::request::{SegError, SegOptions, SEG_FILE, SOURCE_DICOM_DIR};
use super::segment::Algorithm;
use super::segmentation::{Common, SourceSeries};
use super::study::{NewPatient, Study};
use super::values::Timestamp;

/// The study, planes and referenced source series every SEG of a run shares.
#[derive(Debug)]
pub(crate) struct Anchor {
    pub study: Study,
    pub planes: Planes,
    /// The series the SEGs are drawn on; none for a stand-alone SEG.
    pub source: Option<SourceSeries>,
    /// MR series written from NIfTI channels (the referenced one among them).
    pub source_dicom: Vec<SourceDicomInfo>,
}

/// Where the SEGs of `case` belong; writes the channels as MR series when asked (NIfTI input).
pub(crate) fn anchor(
    dir: &Path,
    case: &Case,
    opts: &SegOptions,
    now: &Timestamp,
    algorithm: &Algorithm,
) -> Result<Anchor, SegError> {
    let seg_path = dir.join(SEG_FILE);
    let reference = case
        .channels
        .iter()
        .position(|c| *c == opts.reference_channel)
        .ok_or_else(|| {
            SegError::new(
                &seg_path,
                format!(
                    "reference channel '{}' is not one of the case's channels ({})",
                    opts.reference_channel,
                    case.channels.join(", ")
                ),
            )
        })?;
    let Some((channel, src)) = dicom_reference(case, reference) else {
        return nifti_anchor(dir, case, (opts, reference), now, algorithm);
    };
    if opts.write_source_dicom {
        tracing::info!(
            "write_source_dicom: the input is DICOM, so its own series are referenced and none is written"
        );
    }
    let planes =
        Planes::from_dicom(&case.geometry, src).map_err(|r| SegError::new(&seg_path, r))?;
    tracing::info!(
        channel,
        series = %src.series_instance_uid,
        "the SEGs reference the reference channel's series"
    );
    Ok(Anchor {
        study: Study::from_dicom(src),
        planes,
        source: Some(SourceSeries {
            channel: channel.to_string(),
            series_instance_uid: src.series_instance_uid.clone(),
            instances: src.instances.clone(),
        }),
        source_dicom: Vec::new(),
    })
}

/// The DICOM series the SEGs are drawn on: the reference channel's, or, when that channel was
/// read from NIfTI in a case that mixes both, the first DICOM channel's (with a warning).
fn dicom_reference(case: &Case, reference: usize) -> Option<(&str, &DicomSource)> {
    let dicom: Vec<(usize, &str, &DicomSource)> = case
        .channels
        .iter()
        .zip(&case.sources)
        .enumerate()
        .filter_map(|(c, (name, s))| match s {
            Source::Dicom(d) => Some((c, name.as_str(), d)),
            Source::Nifti(_) => None,
        })
        .collect();
    if let Some(&(_, name, d)) = dicom.iter().find(|(c, _, _)| *c == reference) {
        return Some((name, d));
    }
    let &(_, name, d) = dicom.first()?;
    tracing::warn!(
        reference = %case.channels[reference],
        used = name,
        "the reference channel was read from NIfTI; the SEGs reference the first DICOM channel's series"
    );
    Some((name, d))
}

/// A new de-identified study on the affine's planes, with the channels written as MR series
/// when asked and the reference channel's series referenced.
fn nifti_anchor(
    dir: &Path,
    case: &Case,
    (opts, reference): (&SegOptions, usize),
    now: &Timestamp,
    algorithm: &Algorithm,
) -> Result<Anchor, SegError> {
    let seg_path = dir.join(SEG_FILE);
    let planes = Planes::from_geometry(&case.geometry).map_err(|r| SegError::new(&seg_path, r))?;
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
    let mut anchor = Anchor {
        study: Study::new_deidentified(&patient, now),
        planes,
        source: None,
        source_dicom: Vec::new(),
    };
    if opts.write_source_dicom {
        let mut written = write_source_series(dir, case, &anchor, now, algorithm)?;
        anchor.source_dicom = written.iter().map(|(_, info)| info.clone()).collect();
        anchor.source = Some(written.swap_remove(reference).0);
    }
    Ok(anchor)
}

/// Writes every channel as an MR series under `source-dicom/<channel>/`, in channel order.
fn write_source_series(
    dir: &Path,
    case: &Case,
    anchor: &Anchor,
    now: &Timestamp,
    algorithm: &Algorithm,
) -> Result<Vec<(SourceSeries, SourceDicomInfo)>, SegError> {
    let common = Common {
        study: &anchor.study,
        planes: &anchor.planes,
        source: None,
        now,
        algorithm,
    };
    let mut out = Vec::with_capacity(case.channels.len());
    for (c, name) in case.channels.iter().enumerate() {
        let channel = mr::Channel {
            name,
            series_number: c as i64 + 1,
            volume: case.images.index_axis(Axis(0), c),
        };
        let folder = format!("{SOURCE_DICOM_DIR}/{name}");
        out.push(mr::write_series(dir, &folder, channel, common)?);
    }
    Ok(out)
}
