//! What the DICOM objects of a run are anchored to: the study and frame of reference they
//! join, the planes their frames lie on, and the source series the SEGs reference.
//!
//! DICOM input: the SEGs join the study of the DICOM channels' first series, take its planes
//! (its own ImageOrientationPatient / ImagePositionPatient / PixelSpacing strings) and
//! reference every DICOM channel's series in that study, slice k of each for frame k; a series
//! in another study is left out with a warning. NIfTI input: a new de-identified study, planes
//! from the affine, and no references, unless the channels are written as MR series
//! (`write_source_dicom`), which are then referenced.

use std::path::Path;

use ndarray::Axis;

use crate::io::case::{Case, DicomSource, Source};

use super::mr::{self, SourceDicomInfo};
use super::plane::Planes;
use super::segment::Algorithm;
use super::segmentation::{Common, SourceSeries};
use super::study::{NewPatient, Study};
use super::values::Timestamp;
use super::{SegError, SegOptions, SOURCE_DICOM_DIR};

/// The study, planes and referenced source series every SEG of a run shares.
#[derive(Debug)]
pub(crate) struct Anchor {
    pub study: Study,
    pub planes: Planes,
    pub sources: Vec<SourceSeries>,
    /// MR series written from NIfTI channels (their `SourceSeries` are in `sources`).
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
    let seg_path = dir.join(super::SEG_FILE);
    let dicom = dicom_sources(case);
    let Some((_, first)) = dicom.first() else {
        return nifti_anchor(dir, case, opts, now, algorithm);
    };
    if opts.write_source_dicom {
        tracing::info!(
            "write_source_dicom: the input is DICOM, so its own series are referenced and none is written"
        );
    }
    let planes =
        Planes::from_dicom(&case.geometry, first).map_err(|r| SegError::new(&seg_path, r))?;
    let study = Study::from_dicom(first);
    let sources = referenced_sources(&dicom, &study, &seg_path)?;
    Ok(Anchor {
        study,
        planes,
        sources,
        source_dicom: Vec::new(),
    })
}

/// A new de-identified study on the affine's planes, with the channels written as MR series
/// (and referenced) when asked.
fn nifti_anchor(
    dir: &Path,
    case: &Case,
    opts: &SegOptions,
    now: &Timestamp,
    algorithm: &Algorithm,
) -> Result<Anchor, SegError> {
    let seg_path = dir.join(super::SEG_FILE);
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
    let study = Study::new_deidentified(&patient, now);
    let mut anchor = Anchor {
        study,
        planes,
        sources: Vec::new(),
        source_dicom: Vec::new(),
    };
    if opts.write_source_dicom {
        write_source_series(dir, case, &mut anchor, now, algorithm)?;
    }
    Ok(anchor)
}

/// Writes every channel as an MR series under `source-dicom/<channel>/` and references it.
fn write_source_series(
    dir: &Path,
    case: &Case,
    anchor: &mut Anchor,
    now: &Timestamp,
    algorithm: &Algorithm,
) -> Result<(), SegError> {
    let common = Common {
        study: &anchor.study,
        planes: &anchor.planes,
        sources: &[],
        now,
        algorithm,
    };
    for (c, name) in case.channels.iter().enumerate() {
        let channel = mr::Channel {
            name,
            series_number: c as i64 + 1,
            volume: case.images.index_axis(Axis(0), c),
        };
        let folder = format!("{SOURCE_DICOM_DIR}/{name}");
        let (series, info) = mr::write_series(dir, &folder, channel, common)?;
        anchor.sources.push(series);
        anchor.source_dicom.push(info);
    }
    Ok(())
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
