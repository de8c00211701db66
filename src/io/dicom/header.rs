//! One image file's header, read up to the pixel data: the values grouping, choosing, sorting
//! and reading need (UIDs, size, orientation, position, spacing, rescale), each parsed once
//! here, plus the attributes copied into derived objects. Header strings that reach a message go
//! through `clean` (one line, at most 64 characters).

use std::path::{Path, PathBuf};

use dicom::core::Tag;
use dicom::dictionary_std::tags;
use dicom::object::InMemDicomObject;

use super::problem::{FileProblem, RescaleProblem};

/// Patient, study, series and equipment attributes copied into `DicomSource::attributes`
/// (when present in the first slice; present-but-empty ones are copied empty).
const COPIED: &[(&str, Tag)] = &[
    ("SpecificCharacterSet", tags::SPECIFIC_CHARACTER_SET),
    ("PatientName", tags::PATIENT_NAME),
    ("PatientID", tags::PATIENT_ID),
    ("IssuerOfPatientID", tags::ISSUER_OF_PATIENT_ID),
    ("PatientBirthDate", tags::PATIENT_BIRTH_DATE),
    ("PatientSex", tags::PATIENT_SEX),
    ("PatientAge", tags::PATIENT_AGE),
    ("PatientSize", tags::PATIENT_SIZE),
    ("PatientWeight", tags::PATIENT_WEIGHT),
    ("StudyDate", tags::STUDY_DATE),
    ("StudyTime", tags::STUDY_TIME),
    ("StudyID", tags::STUDY_ID),
    ("AccessionNumber", tags::ACCESSION_NUMBER),
    ("ReferringPhysicianName", tags::REFERRING_PHYSICIAN_NAME),
    ("StudyDescription", tags::STUDY_DESCRIPTION),
    ("Modality", tags::MODALITY),
    ("SeriesNumber", tags::SERIES_NUMBER),
    ("SeriesDescription", tags::SERIES_DESCRIPTION),
    ("SeriesDate", tags::SERIES_DATE),
    ("SeriesTime", tags::SERIES_TIME),
    ("BodyPartExamined", tags::BODY_PART_EXAMINED),
    ("PatientPosition", tags::PATIENT_POSITION),
    (
        "PositionReferenceIndicator",
        tags::POSITION_REFERENCE_INDICATOR,
    ),
    ("Manufacturer", tags::MANUFACTURER),
    ("ManufacturerModelName", tags::MANUFACTURER_MODEL_NAME),
    ("InstitutionName", tags::INSTITUTION_NAME),
    ("SliceThickness", tags::SLICE_THICKNESS),
    ("SpacingBetweenSlices", tags::SPACING_BETWEEN_SLICES),
];

/// The header of one image file: what grouping, choosing, sorting and reading need.
#[derive(Debug, Clone)]
pub(super) struct SliceHeader {
    pub(super) path: PathBuf,
    pub(super) sop_class_uid: String,
    pub(super) sop_instance_uid: String,
    pub(super) study_uid: String,
    pub(super) series_uid: String,
    pub(super) frame_of_reference_uid: String,
    pub(super) series_description: String,
    pub(super) series_number: String,
    pub(super) transfer_syntax: String,
    pub(super) rows: u32,
    pub(super) columns: u32,
    pub(super) frames: u32,
    pub(super) samples_per_pixel: u32,
    pub(super) photometric: String,
    pub(super) pixel_spacing: Option<[f64; 2]>,
    pub(super) pixel_spacing_text: String,
    pub(super) orientation: Option<[f64; 6]>,
    pub(super) orientation_text: String,
    pub(super) position: Option<[f64; 3]>,
    pub(super) position_text: String,
    /// `(slope, intercept)`, or why they are unusable.
    pub(super) rescale: Result<(f64, f64), RescaleProblem>,
    pub(super) slice_thickness: Option<f64>,
    pub(super) spacing_between_slices: Option<f64>,
    pub(super) attributes: Vec<(String, String)>,
}

impl SliceHeader {
    pub(super) fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

pub(super) fn slice_header(
    path: &Path,
    obj: &InMemDicomObject,
    sop_class_uid: String,
    transfer_syntax: String,
) -> Result<SliceHeader, FileProblem> {
    let series_uid = text(obj, tags::SERIES_INSTANCE_UID)
        .filter(|s| !s.is_empty())
        .ok_or(FileProblem::Missing {
            keyword: "SeriesInstanceUID",
        })?;
    let uint = |tag: Tag| obj.get(tag).and_then(|e| e.to_int::<u32>().ok());
    let pixel_spacing = floats(obj, tags::PIXEL_SPACING).and_then(|v| <[f64; 2]>::try_from(v).ok());
    let orientation =
        floats(obj, tags::IMAGE_ORIENTATION_PATIENT).and_then(|v| <[f64; 6]>::try_from(v).ok());
    let position =
        floats(obj, tags::IMAGE_POSITION_PATIENT).and_then(|v| <[f64; 3]>::try_from(v).ok());
    Ok(SliceHeader {
        path: path.to_path_buf(),
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        sop_class_uid,
        study_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        series_description: clean(&text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default()),
        series_number: clean(&text(obj, tags::SERIES_NUMBER).unwrap_or_default()),
        series_uid: clean(&series_uid),
        transfer_syntax,
        rows: uint(tags::ROWS).unwrap_or(0),
        columns: uint(tags::COLUMNS).unwrap_or(0),
        frames: uint(tags::NUMBER_OF_FRAMES).unwrap_or(1),
        samples_per_pixel: uint(tags::SAMPLES_PER_PIXEL).unwrap_or(1),
        photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        pixel_spacing,
        pixel_spacing_text: text(obj, tags::PIXEL_SPACING).unwrap_or_default(),
        orientation,
        orientation_text: text(obj, tags::IMAGE_ORIENTATION_PATIENT).unwrap_or_default(),
        position,
        position_text: text(obj, tags::IMAGE_POSITION_PATIENT).unwrap_or_default(),
        rescale: rescale(obj),
        slice_thickness: floats(obj, tags::SLICE_THICKNESS).and_then(|v| v.first().copied()),
        spacing_between_slices: floats(obj, tags::SPACING_BETWEEN_SLICES)
            .and_then(|v| v.first().copied()),
        attributes: COPIED
            .iter()
            .filter_map(|(keyword, tag)| {
                obj.get(*tag)
                    .map(|_| (keyword.to_string(), text(obj, *tag).unwrap_or_default()))
            })
            .collect(),
    })
}

fn rescale(obj: &InMemDicomObject) -> Result<(f64, f64), RescaleProblem> {
    let one = |tag: Tag, default: f64, keyword: &'static str| match obj.get(tag) {
        None => Ok(default),
        Some(e) => e
            .to_float64()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(RescaleProblem::NotFinite { keyword }),
    };
    let slope = one(tags::RESCALE_SLOPE, 1.0, "RescaleSlope")?;
    let intercept = one(tags::RESCALE_INTERCEPT, 0.0, "RescaleIntercept")?;
    if slope == 0.0 {
        return Err(RescaleProblem::ZeroSlope);
    }
    Ok((slope, intercept))
}

/// A text value with trailing padding removed (multiple values joined by `\`).
pub(super) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    Some(s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
}

/// All values as finite f64, or `None`.
fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// A header string made safe for a one-line message: no control characters, at most 64 chars.
pub(super) fn clean(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.trim();
    if s.chars().count() > 64 {
        format!("{}...", s.chars().take(61).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_strings_are_made_safe() {
        assert_eq!(clean("a\nb\tc "), "a b c");
        assert_eq!(clean(&"x".repeat(100)).chars().count(), 64);
    }
}
