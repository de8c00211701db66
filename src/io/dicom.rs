//! DICOM adapter: finds the MR image series under a folder, picks one per channel, checks that
//! its slices form one regular grid, and reads it into a `[k, j, i]` f32 volume with the same
//! `Geometry` the NIfTI adapter would give, plus the `DicomSource` derived objects (a SEG) need.
//!
//! Discovery: every file under the folder (recursively, symlinks followed, loops skipped) whose
//! bytes 128..132 are `DICM` (a DICOM Part 10 file) is read up to the pixel data only
//! (`OpenFileOptions::read_until(PixelData)`); other files are skipped, and so are DICOM objects
//! that are not images (SR, presentation states, SEG, RT, KO, raw data, documents, waveforms,
//! DICOMDIR, and anything without Rows). A DICOM file whose header cannot be read is an error,
//! not skipped. Images are grouped by SeriesInstanceUID. Which series is which channel is decided
//! by `SeriesRule`s (regular expressions on SeriesDescription, SeriesNumber and
//! SeriesInstanceUID; `default_rule` gives the built-in ones for the BraTS channel names).
//!
//! Grid: slices are sorted by their position along the slice normal, `IPP . (row x column)`
//! (never by InstanceNumber, SliceLocation or file name). The series must have one orientation
//! (ImageOrientationPatient equal within 1e-4), one Rows/Columns and PixelSpacing, no two slices
//! at one position (closer than 0.01 mm), no missing slice (a gap over 1.5x the median gap),
//! uniform spacing (every gap within 1% of the median) and slices stacked along the normal (no
//! gantry tilt or shear: each slice within 1% of the spacing of where the normal puts it).
//! Voxel `(i, j, k)` is column `i`, row `j` of the `k`-th slice in that order; the LPS affine's
//! columns are the row cosine times the column spacing (PixelSpacing[1]), the column cosine
//! times the row spacing (PixelSpacing[0]) and the unit normal times the slice spacing (first to
//! last position over `n - 1`), and its origin is the first slice's ImagePositionPatient. DICOM
//! patient coordinates are already LPS, so no flip is needed; a case written as NIfTI and as
//! DICOM gives the same `Geometry`. A single slice takes its spacing from SpacingBetweenSlices,
//! else SliceThickness.
//!
//! Pixels: classic single-frame images only (MR Image Storage and other single-frame cross-
//! sectional images); Enhanced/Legacy-converted multi-frame objects are refused with a message.
//! Pixel data is decoded by dicom-pixeldata (`decode_pixel_data`): native (implicit/explicit VR
//! little endian, deflated) and the encapsulated syntaxes this build decodes (RLE Lossless, JPEG
//! baseline/extended/lossless, JPEG 2000 through OpenJPEG); any other transfer syntax (JPEG-LS,
//! JPEG XL, HTJ2K, video, ...) is refused naming its UID and name. Only one-sample grayscale
//! (MONOCHROME1/MONOCHROME2) is accepted. The decoded samples are turned into numbers here, not
//! by dicom-pixeldata's LUT path (which neither masks BitsStored nor handles 32-bit or signed
//! 8-bit samples): each sample is masked to BitsStored below HighBit, sign-extended when
//! PixelRepresentation is 1, then the slice's own RescaleSlope and RescaleIntercept (1 and 0 when
//! absent) are applied in f64 and the result stored as f32. Philips private scale slopes
//! (2005,100E/100D, "floating point" values) are NOT applied: the values are the stored values
//! after the standard rescale, as dcm2niix gives with `-p n` and most readers give by default.
//! PixelPaddingValue and VOI windows are ignored.
//!
//! Errors name the folder and series (UID and description) or the file. Patient name, ID,
//! birth date and accession number are copied into `DicomSource::attributes` for derived objects
//! but never appear in messages or logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom::core::Tag;
use dicom::dictionary_std::tags;
use dicom::encoding::TransferSyntaxIndex;
use dicom::object::{InMemDicomObject, OpenFileOptions};
use dicom::pixeldata::{PixelDecoder, PixelRepresentation};
use dicom::transfer_syntax::TransferSyntaxRegistry;
use ndarray::Array3;
use rayon::prelude::*;
use regex::Regex;

mod lengths;

use crate::io::case::DicomSource;
use crate::io::InputError;
use crate::pipeline::SeriesRule;
use crate::volume::Geometry;

/// ImageOrientationPatient components of one series may differ by at most this.
const IOP_TOLERANCE: f64 = 1e-4;
/// PixelSpacing of one series may differ by at most this (mm).
const PIXEL_SPACING_TOLERANCE_MM: f64 = 1e-4;
/// Two slices closer than this along the normal are at the same position (mm).
const DUPLICATE_MM: f64 = 0.01;
/// A gap larger than this times the median gap means a slice is missing.
const MISSING_FACTOR: f64 = 1.5;
/// Each gap must be within this fraction of the median gap.
const SPACING_TOLERANCE: f64 = 0.01;
/// Folders deeper than this under the given one are not searched.
const MAX_DEPTH: usize = 32;

/// SOP class UID prefixes of objects that are not images, with a short name for messages.
const NON_IMAGE_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.88.", "SR"),
    ("1.2.840.10008.5.1.4.1.1.11.", "PR"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data/registration"),
    ("1.2.840.10008.5.1.4.1.1.67", "real world value map"),
    ("1.2.840.10008.5.1.4.1.1.68.", "surface"),
    ("1.2.840.10008.5.1.4.1.1.481.", "RT"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.9.", "waveform"),
    ("1.2.840.10008.1.3.10", "DICOMDIR"),
];

/// Multi-frame (enhanced) image SOP classes: MR, MR color, legacy converted MR, CT, legacy CT.
const ENHANCED_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.4.1",
    "1.2.840.10008.5.1.4.1.1.4.3",
    "1.2.840.10008.5.1.4.1.1.4.4",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.2.2",
];

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
struct SliceHeader {
    path: PathBuf,
    sop_class_uid: String,
    sop_instance_uid: String,
    study_uid: String,
    series_uid: String,
    frame_of_reference_uid: String,
    series_description: String,
    series_number: String,
    transfer_syntax: String,
    rows: u32,
    columns: u32,
    frames: u32,
    samples_per_pixel: u32,
    photometric: String,
    pixel_spacing: Option<[f64; 2]>,
    pixel_spacing_text: String,
    orientation: Option<[f64; 6]>,
    orientation_text: String,
    position: Option<[f64; 3]>,
    position_text: String,
    /// `(slope, intercept)`, or why they are unusable.
    rescale: Result<(f64, f64), String>,
    slice_thickness: Option<f64>,
    spacing_between_slices: Option<f64>,
    attributes: Vec<(String, String)>,
}

impl SliceHeader {
    fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// One series found in a folder: its image files, unsorted and unchecked.
#[derive(Debug, Clone)]
pub struct SeriesFiles {
    pub uid: String,
    pub description: String,
    pub number: String,
    slices: Vec<SliceHeader>,
}

impl SeriesFiles {
    pub fn file_count(&self) -> usize {
        self.slices.len()
    }

    fn summary(&self) -> String {
        let number = if self.number.is_empty() {
            String::new()
        } else {
            format!(" #{}", self.number)
        };
        format!(
            "{} \"{}\"{} ({} files)",
            self.uid,
            self.description,
            number,
            self.slices.len()
        )
    }
}

/// Everything found under one folder.
#[derive(Debug, Clone)]
pub struct Scan {
    pub dir: PathBuf,
    /// Image series, ordered by SeriesNumber, then UID.
    pub series: Vec<SeriesFiles>,
    /// Files that are not DICOM Part 10 files.
    pub non_dicom: usize,
    /// Kinds of the DICOM objects skipped as non-images (e.g. "SR"), one per file.
    pub non_image: Vec<String>,
}

impl Scan {
    /// One-line list of the series, for messages.
    pub fn listing(&self) -> String {
        self.series
            .iter()
            .map(SeriesFiles::summary)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A checked series: slices sorted along the normal, on one regular grid.
#[derive(Debug, Clone)]
pub struct Series {
    /// The folder that was searched.
    pub dir: PathBuf,
    /// The deepest folder holding all of the series' files.
    pub folder: PathBuf,
    pub uid: String,
    pub description: String,
    pub number: String,
    pub geometry: Geometry,
    slices: Vec<SliceHeader>,
}

impl Series {
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// What derived objects need to reference this series (slices in k order).
    pub fn source(&self) -> DicomSource {
        let Some(first) = self.slices.first() else {
            return DicomSource::default();
        };
        DicomSource {
            study_instance_uid: first.study_uid.clone(),
            series_instance_uid: self.uid.clone(),
            frame_of_reference_uid: first.frame_of_reference_uid.clone(),
            instances: self
                .slices
                .iter()
                .map(|s| (s.sop_class_uid.clone(), s.sop_instance_uid.clone()))
                .collect(),
            attributes: first.attributes.clone(),
            image_orientation: first.orientation_text.clone(),
            image_positions: self
                .slices
                .iter()
                .map(|s| s.position_text.clone())
                .collect(),
            pixel_spacing: first.pixel_spacing_text.clone(),
        }
    }

    fn problem(&self, problem: impl Into<String>) -> InputError {
        InputError::DicomSeries {
            dir: self.dir.clone(),
            uid: self.uid.clone(),
            description: self.description.clone(),
            problem: problem.into(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// discovery
// ------------------------------------------------------------------------------------------

/// What one file turned out to be.
enum Found {
    NotDicom,
    NonImage(String),
    Image(Box<SliceHeader>),
}

/// Finds the image series under `dir` (headers only). A folder without any is an error.
pub fn scan(dir: &Path) -> Result<Scan, InputError> {
    if !dir.is_dir() {
        return Err(InputError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    let files = list_files(dir)?;
    let found: Vec<Found> = files
        .par_iter()
        .map(|p| examine(p))
        .collect::<Result<_, _>>()?;
    let mut groups: BTreeMap<String, Vec<SliceHeader>> = BTreeMap::new();
    let (mut non_dicom, mut non_image) = (0, Vec::new());
    for f in found {
        match f {
            Found::NotDicom => non_dicom += 1,
            Found::NonImage(kind) => non_image.push(kind),
            Found::Image(h) => groups.entry(h.series_uid.clone()).or_default().push(*h),
        }
    }
    let mut series: Vec<SeriesFiles> = groups
        .into_iter()
        .map(|(uid, slices)| SeriesFiles {
            uid,
            description: slices[0].series_description.clone(),
            number: slices[0].series_number.clone(),
            slices,
        })
        .collect();
    series.sort_by(|a, b| {
        let num = |s: &SeriesFiles| s.number.parse::<i64>().unwrap_or(i64::MAX);
        num(a).cmp(&num(b)).then_with(|| a.uid.cmp(&b.uid))
    });
    let scan = Scan {
        dir: dir.to_path_buf(),
        series,
        non_dicom,
        non_image,
    };
    if scan.series.is_empty() {
        return Err(InputError::NoDicomSeries {
            dir: dir.to_path_buf(),
            detail: empty_detail(files.len(), &scan),
        });
    }
    Ok(scan)
}

fn empty_detail(files: usize, scan: &Scan) -> String {
    if files == 0 {
        return "the folder holds no files".to_string();
    }
    let mut parts = Vec::new();
    if scan.non_dicom > 0 {
        parts.push(format!("{} not DICOM", scan.non_dicom));
    }
    if !scan.non_image.is_empty() {
        let mut kinds = scan.non_image.clone();
        kinds.sort();
        kinds.dedup();
        let plural = if scan.non_image.len() == 1 { "" } else { "s" };
        parts.push(format!(
            "{} non-image DICOM object{plural} ({})",
            scan.non_image.len(),
            kinds.join(", ")
        ));
    }
    let plural = if files == 1 { "" } else { "s" };
    format!("{files} file{plural}: {}", parts.join(", "))
}

/// Every regular file under `dir`, in name order.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let mut files = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .max_depth(MAX_DEPTH)
        .sort_by_file_name();
    for entry in walk {
        match entry {
            Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
            Ok(_) => {}
            Err(e) if e.loop_ancestor().is_some() => {}
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                return Err(InputError::Format {
                    path,
                    reason: format!("cannot list: {}", one_line(&e.to_string())),
                });
            }
        }
    }
    Ok(files)
}

/// True when the file starts like a DICOM Part 10 file (`DICM` after the 128-byte preamble).
fn is_part10(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}

fn examine(path: &Path) -> Result<Found, InputError> {
    if !is_part10(path) {
        return Ok(Found::NotDicom);
    }
    lengths::check(path, true)
        .map_err(|why| file_error(path, format!("cannot read the DICOM header: {why}")))?;
    let obj = guarded(|| {
        OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
    })
    .and_then(|r| r.map_err(|e| chain(&e)))
    .map_err(|why| file_error(path, format!("cannot read the DICOM header: {why}")))?;
    let sop_class = text(&obj, tags::SOP_CLASS_UID).unwrap_or_else(|| {
        obj.meta()
            .media_storage_sop_class_uid
            .trim_end_matches('\0')
            .to_string()
    });
    if let Some(kind) = non_image_kind(&sop_class) {
        return Ok(Found::NonImage(kind));
    }
    if obj.get(tags::ROWS).is_none() {
        let kind = text(&obj, tags::MODALITY).unwrap_or_else(|| format!("SOP class {sop_class}"));
        return Ok(Found::NonImage(clean(&kind)));
    }
    let transfer_syntax = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let header = slice_header(path, &obj, sop_class, transfer_syntax)?;
    Ok(Found::Image(Box::new(header)))
}

fn non_image_kind(sop_class: &str) -> Option<String> {
    NON_IMAGE_CLASSES
        .iter()
        .find(|(prefix, _)| sop_class.starts_with(prefix))
        .map(|(_, kind)| kind.to_string())
}

fn slice_header(
    path: &Path,
    obj: &InMemDicomObject,
    sop_class_uid: String,
    transfer_syntax: String,
) -> Result<SliceHeader, InputError> {
    let required = |tag: Tag, name: &str| {
        text(obj, tag)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| file_error(path, format!("no {name}")))
    };
    let series_uid = required(tags::SERIES_INSTANCE_UID, "SeriesInstanceUID")?;
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

fn rescale(obj: &InMemDicomObject) -> Result<(f64, f64), String> {
    let one = |tag: Tag, default: f64, name: &str| match obj.get(tag) {
        None => Ok(default),
        Some(e) => e
            .to_float64()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("{name} is not a finite number")),
    };
    let slope = one(tags::RESCALE_SLOPE, 1.0, "RescaleSlope")?;
    let intercept = one(tags::RESCALE_INTERCEPT, 0.0, "RescaleIntercept")?;
    if slope == 0.0 {
        return Err("RescaleSlope is 0".to_string());
    }
    Ok((slope, intercept))
}

/// A text value with trailing padding removed (multiple values joined by `\`).
fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.get(tag)?;
    let s = e.to_str().ok()?;
    Some(s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
}

/// All values as finite f64, or `None`.
fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    v.iter().all(|x| x.is_finite()).then_some(v)
}

/// Runs a third-party reader, turning a panic inside it into an error (see `guard`).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    crate::guard::guarded(f).ok_or_else(|| "the DICOM reader failed on this file".to_string())
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    one_line(&parts.join(": "))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A header string made safe for a one-line message: no control characters, at most 64 chars.
fn clean(s: &str) -> String {
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

fn file_error(path: &Path, reason: impl Into<String>) -> InputError {
    InputError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

// ------------------------------------------------------------------------------------------
// choosing a series
// ------------------------------------------------------------------------------------------

/// Built-in rule for the BraTS channel names: t1n (native T1: T1, T1 pre, MPRAGE, SPGR), t1c
/// (T1 with contrast: T1CE, T1C, T1Gd, T1 post, T1+C, post-contrast MPRAGE), t2w (T2 but not
/// FLAIR, T2*, SWI, DWI) and t2f (FLAIR, T2F, dark fluid; not T1 FLAIR).
pub fn default_rule(channel: &str) -> Option<SeriesRule> {
    const T1: &str = "(t1|mprage|spgr|bravo)";
    const CONTRAST: &str = "(post|contrast|\\+c|gado|(^|[^a-z])(gd|gad|ce|c)([^a-z]|$))";
    let t1c_short = "t1.{0,3}(c|ce|gd|gad)([^a-z]|$)";
    let (include, exclude) = match channel {
        "t1n" => (format!("(?i){T1}"), format!("(?i){t1c_short}|{CONTRAST}|t2|flair")),
        "t1c" => (
            format!("(?i){t1c_short}|{T1}.*{CONTRAST}|{CONTRAST}.*{T1}"),
            "(?i)t2|flair".to_string(),
        ),
        "t2w" => (
            "(?i)t2".to_string(),
            "(?i)flair|t2.{0,3}f([^a-z]|$)|t2.?(\\*|star)|dark.?fluid|(^|[^a-z])(swi|dwi|adc|gre)([^a-z]|$)"
                .to_string(),
        ),
        "t2f" => (
            "(?i)flair|t2.{0,3}f([^a-z]|$)|dark.?fluid".to_string(),
            "(?i)t1".to_string(),
        ),
        _ => return None,
    };
    Some(SeriesRule {
        series_description: Some(include),
        exclude_description: Some(exclude),
        series_number: None,
        series_instance_uid: None,
    })
}

/// The rule that applies to `channel`: the config's, else the built-in one.
pub fn rule_for(configured: &BTreeMap<String, SeriesRule>, channel: &str) -> Option<SeriesRule> {
    configured
        .get(channel)
        .cloned()
        .or_else(|| default_rule(channel))
}

fn describe_rule(rule: &SeriesRule) -> String {
    rule.patterns()
        .iter()
        .map(|(k, p)| format!("{k} /{p}/"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a series satisfies a rule.
fn rule_matches(rule: &SeriesRule, s: &SeriesFiles) -> Result<bool, String> {
    let test = |pattern: &Option<String>, value: &str| -> Result<Option<bool>, String> {
        match pattern {
            None => Ok(None),
            Some(p) => Regex::new(p)
                .map(|r| Some(r.is_match(value)))
                .map_err(|_| format!("invalid regular expression /{p}/")),
        }
    };
    let include = [
        test(&rule.series_description, &s.description)?,
        test(&rule.series_number, &s.number)?,
        test(&rule.series_instance_uid, &s.uid)?,
    ];
    let excluded = test(&rule.exclude_description, &s.description)?.unwrap_or(false);
    Ok(include.iter().all(|m| m.unwrap_or(true)) && !excluded)
}

/// Picks the series of `channel` in `scan`. A folder with one series needs no rule when
/// `sole_ok`; otherwise the rule must match exactly one series.
pub fn choose<'a>(
    scan: &'a Scan,
    channel: &str,
    rule: Option<&SeriesRule>,
    sole_ok: bool,
) -> Result<&'a SeriesFiles, InputError> {
    if sole_ok && scan.series.len() == 1 {
        return Ok(&scan.series[0]);
    }
    let fail = |problem: String| InputError::DicomSeriesChoice {
        dir: scan.dir.clone(),
        channel: channel.to_string(),
        problem,
        found: scan.listing(),
    };
    let Some(rule) = rule else {
        return Err(fail(format!(
            "{} series and no rule to choose one (set dicom.series.{channel} in the pipeline config)",
            scan.series.len()
        )));
    };
    let mut matching = Vec::new();
    for s in &scan.series {
        if rule_matches(rule, s).map_err(&fail)? {
            matching.push(s);
        }
    }
    match matching.len() {
        1 => Ok(matching[0]),
        0 => Err(fail(format!(
            "no series matches {} (set dicom.series.{channel} in the pipeline config)",
            describe_rule(rule)
        ))),
        n => Err(fail(format!(
            "{n} series match {} (narrow dicom.series.{channel}, e.g. with series_number or series_instance_uid)",
            describe_rule(rule)
        ))),
    }
}

// ------------------------------------------------------------------------------------------
// checking a series and building its grid
// ------------------------------------------------------------------------------------------

/// Checks a series (one orientation, size and spacing; a regular stack; decodable pixels) and
/// sorts its slices along the normal. No pixel data is read.
pub fn prepare(scan_dir: &Path, files: &SeriesFiles) -> Result<Series, InputError> {
    let mut series = Series {
        dir: scan_dir.to_path_buf(),
        folder: common_folder(files.slices.iter().map(|s| s.path.as_path())),
        uid: files.uid.clone(),
        description: files.description.clone(),
        number: files.number.clone(),
        geometry: Geometry {
            shape_ijk: [0; 3],
            affine_lps: [[0.0; 4]; 4],
        },
        slices: files.slices.clone(),
    };
    check_kind(&series)?;
    check_transfer_syntaxes(&series)?;
    let Some(first) = series.slices.first() else {
        return Err(series.problem("no image files"));
    };
    let orientation = first.orientation.ok_or_else(|| {
        series.problem(format!(
            "{}: no valid ImageOrientationPatient",
            first.name()
        ))
    })?;
    let pixel_spacing = first
        .pixel_spacing
        .ok_or_else(|| series.problem(format!("{}: no valid PixelSpacing", first.name())))?;
    check_uniform(&series, orientation, pixel_spacing)?;
    let [row, col, normal] = plane_axes(orientation).map_err(|p| series.problem(p))?;
    let positions: Vec<[f64; 3]> = series
        .slices
        .iter()
        .map(|s| {
            s.position.ok_or_else(|| {
                series.problem(format!("{}: no valid ImagePositionPatient", s.name()))
            })
        })
        .collect::<Result<_, _>>()?;
    let single = first.spacing_between_slices.or(first.slice_thickness);
    let shape_ij = [first.columns as usize, first.rows as usize];
    let stack = stack_slices(normal, &positions, single).map_err(|p| {
        let names: Vec<String> = series.slices.iter().map(SliceHeader::name).collect();
        series.problem(p.describe(&names))
    })?;
    series.slices = stack
        .order
        .iter()
        .map(|&i| series.slices[i].clone())
        .collect();
    let origin = positions[stack.order[0]];
    series.geometry = Geometry {
        shape_ijk: [shape_ij[0], shape_ij[1], series.slices.len()],
        affine_lps: affine_lps(row, col, normal, pixel_spacing, stack.spacing_mm, origin),
    };
    Ok(series)
}

fn check_kind(series: &Series) -> Result<(), InputError> {
    for s in &series.slices {
        if ENHANCED_CLASSES.contains(&s.sop_class_uid.as_str()) || s.frames > 1 {
            return Err(series.problem(format!(
                "{}: enhanced (multi-frame) images are not supported; export the series as classic single-frame images",
                s.name()
            )));
        }
        if s.samples_per_pixel != 1 || !s.photometric.starts_with("MONOCHROME") {
            return Err(series.problem(format!(
                "{}: photometric interpretation {} with {} samples per pixel is not supported (grayscale MONOCHROME1/MONOCHROME2 only)",
                s.name(),
                clean(&s.photometric),
                s.samples_per_pixel
            )));
        }
        if let Err(why) = &s.rescale {
            return Err(series.problem(format!("{}: {why}", s.name())));
        }
    }
    Ok(())
}

fn check_transfer_syntaxes(series: &Series) -> Result<(), InputError> {
    let mut seen: Vec<&str> = Vec::new();
    for s in &series.slices {
        let uid = s.transfer_syntax.as_str();
        if seen.contains(&uid) {
            continue;
        }
        seen.push(uid);
        let name = match TransferSyntaxRegistry.get(uid) {
            Some(ts) if ts.can_decode_all() => continue,
            Some(ts) => ts.name().to_string(),
            None => "unknown transfer syntax".to_string(),
        };
        return Err(InputError::UnsupportedTransferSyntax {
            path: s.path.clone(),
            uid: clean(uid),
            name,
        });
    }
    Ok(())
}

fn check_uniform(
    series: &Series,
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
) -> Result<(), InputError> {
    let first = &series.slices[0];
    if first.rows == 0 || first.columns == 0 {
        return Err(series.problem(format!("{}: image has no rows or columns", first.name())));
    }
    for s in &series.slices[1..] {
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(series.problem(format!(
                "mixed image sizes: {}x{} (rows x columns) in {} but {}x{} in {}",
                first.rows,
                first.columns,
                first.name(),
                s.rows,
                s.columns,
                s.name()
            )));
        }
        let same_spacing = s.pixel_spacing.is_some_and(|p| {
            (0..2).all(|a| (p[a] - pixel_spacing[a]).abs() <= PIXEL_SPACING_TOLERANCE_MM)
        });
        if !same_spacing {
            return Err(series.problem(format!(
                "mixed PixelSpacing: {} in {} but {} in {}",
                clean(&first.pixel_spacing_text),
                first.name(),
                clean(&s.pixel_spacing_text),
                s.name()
            )));
        }
        let same_orientation = s
            .orientation
            .is_some_and(|o| (0..6).all(|a| (o[a] - orientation[a]).abs() <= IOP_TOLERANCE));
        if !same_orientation {
            return Err(series.problem(format!(
                "mixed orientations: ImageOrientationPatient {} in {} but {} in {}",
                clean(&first.orientation_text),
                first.name(),
                clean(&s.orientation_text),
                s.name()
            )));
        }
    }
    if pixel_spacing.iter().any(|&p| p <= 0.0) {
        return Err(series.problem(format!(
            "PixelSpacing {} is not positive",
            clean(&first.pixel_spacing_text)
        )));
    }
    Ok(())
}

/// Unit row cosine, column cosine and slice normal (row x column) from ImageOrientationPatient.
fn plane_axes(iop: [f64; 6]) -> Result<[[f64; 3]; 3], String> {
    let row = [iop[0], iop[1], iop[2]];
    let col = [iop[3], iop[4], iop[5]];
    let (nr, nc) = (norm(row), norm(col));
    if (nr - 1.0).abs() > 1e-3 || (nc - 1.0).abs() > 1e-3 || dot(row, col).abs() > 1e-3 {
        return Err(format!(
            "ImageOrientationPatient {iop:?} is not two orthogonal unit vectors"
        ));
    }
    let row = row.map(|v| v / nr);
    let col = col.map(|v| v / nc);
    let n = cross(row, col);
    let nn = norm(n);
    Ok([row, col, n.map(|v| v / nn)])
}

/// The sorted stack: `order[k]` is the input index of slice `k`.
#[derive(Debug, Clone, PartialEq)]
struct Stack {
    order: Vec<usize>,
    spacing_mm: f64,
}

/// Why slices do not form a regular stack. Positions are in mm along the normal.
#[derive(Debug, Clone, PartialEq)]
enum StackProblem {
    Duplicate {
        position_mm: f64,
        first: usize,
        second: usize,
    },
    Missing {
        from_mm: f64,
        to_mm: f64,
        spacing_mm: f64,
        more: usize,
    },
    Uneven {
        from_mm: f64,
        to_mm: f64,
        gap_mm: f64,
        spacing_mm: f64,
    },
    Sheared {
        slice: usize,
        offset_mm: f64,
    },
    SingleSlice,
}

impl StackProblem {
    /// One-line description; `names` are the slices' file names in input order.
    fn describe(&self, names: &[String]) -> String {
        let name = |i: usize| names.get(i).cloned().unwrap_or_default();
        match self {
            StackProblem::Duplicate {
                position_mm,
                first,
                second,
            } => format!(
                "duplicate slice position: {} and {} both at {position_mm:.3} mm along the slice normal",
                name(*first),
                name(*second)
            ),
            StackProblem::Missing {
                from_mm,
                to_mm,
                spacing_mm,
                more,
            } => {
                let others = if *more > 0 {
                    format!(" and {more} more gaps")
                } else {
                    String::new()
                };
                format!(
                    "slice missing between {from_mm:.3} and {to_mm:.3} mm along the slice normal (spacing {spacing_mm:.3} mm){others}"
                )
            }
            StackProblem::Uneven {
                from_mm,
                to_mm,
                gap_mm,
                spacing_mm,
            } => format!(
                "slice spacing is not uniform: gap of {gap_mm:.4} mm between {from_mm:.3} and {to_mm:.3} mm along the slice normal, median spacing {spacing_mm:.4} mm (tolerance {:.0}%)",
                SPACING_TOLERANCE * 100.0
            ),
            StackProblem::Sheared { slice, offset_mm } => format!(
                "slices are not stacked along the slice normal: {} is {offset_mm:.3} mm off it in-plane (gantry tilt or shear; resample the series first)",
                name(*slice)
            ),
            StackProblem::SingleSlice => {
                "a single slice without SpacingBetweenSlices or SliceThickness".to_string()
            }
        }
    }
}

/// Sorts slices by position along `normal` and checks they form a regular stack.
fn stack_slices(
    normal: [f64; 3],
    positions: &[[f64; 3]],
    single_spacing_mm: Option<f64>,
) -> Result<Stack, StackProblem> {
    let along: Vec<f64> = positions.iter().map(|&p| dot(p, normal)).collect();
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.sort_by(|&a, &b| along[a].total_cmp(&along[b]));
    if order.len() < 2 {
        return match single_spacing_mm.filter(|s| *s > 0.0 && s.is_finite()) {
            Some(spacing_mm) => Ok(Stack { order, spacing_mm }),
            None => Err(StackProblem::SingleSlice),
        };
    }
    let sorted: Vec<f64> = order.iter().map(|&i| along[i]).collect();
    let gaps: Vec<f64> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    if let Some(k) = gaps.iter().position(|&g| g < DUPLICATE_MM) {
        return Err(StackProblem::Duplicate {
            position_mm: sorted[k],
            first: order[k],
            second: order[k + 1],
        });
    }
    let median = median(&gaps);
    let missing: Vec<usize> = (0..gaps.len())
        .filter(|&k| gaps[k] > MISSING_FACTOR * median)
        .collect();
    if let Some(&k) = missing.first() {
        return Err(StackProblem::Missing {
            from_mm: sorted[k],
            to_mm: sorted[k + 1],
            spacing_mm: median,
            more: missing.len() - 1,
        });
    }
    let worst = (0..gaps.len())
        .max_by(|&a, &b| {
            (gaps[a] - median)
                .abs()
                .total_cmp(&(gaps[b] - median).abs())
        })
        .unwrap_or(0);
    if (gaps[worst] - median).abs() > SPACING_TOLERANCE * median {
        return Err(StackProblem::Uneven {
            from_mm: sorted[worst],
            to_mm: sorted[worst + 1],
            gap_mm: gaps[worst],
            spacing_mm: median,
        });
    }
    let spacing_mm = (sorted[sorted.len() - 1] - sorted[0]) / (sorted.len() - 1) as f64;
    let p0 = positions[order[0]];
    for &i in &order {
        let d = along[i] - sorted[0];
        let expected = [0, 1, 2].map(|a| p0[a] + normal[a] * d);
        let offset_mm = norm([0, 1, 2].map(|a| positions[i][a] - expected[a]));
        if offset_mm > SPACING_TOLERANCE * spacing_mm + 1e-3 {
            return Err(StackProblem::Sheared {
                slice: i,
                offset_mm,
            });
        }
    }
    Ok(Stack { order, spacing_mm })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Voxel `(i, j, k)` to LPS: columns row * PixelSpacing[1], column * PixelSpacing[0],
/// normal * slice spacing; origin at the first slice's position.
fn affine_lps(
    row: [f64; 3],
    col: [f64; 3],
    normal: [f64; 3],
    pixel_spacing: [f64; 2],
    slice_spacing_mm: f64,
    origin: [f64; 3],
) -> [[f64; 4]; 4] {
    let axes = [
        row.map(|v| v * pixel_spacing[1]),
        col.map(|v| v * pixel_spacing[0]),
        normal.map(|v| v * slice_spacing_mm),
    ];
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r] = [axes[0][r], axes[1][r], axes[2][r], origin[r]];
    }
    a[3][3] = 1.0;
    a
}

fn common_folder<'a>(paths: impl Iterator<Item = &'a Path>) -> PathBuf {
    let parents: Vec<&Path> = paths.filter_map(Path::parent).collect();
    let Some(mut common) = parents.first().map(|p| p.to_path_buf()) else {
        return PathBuf::new();
    };
    while !parents.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    common
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

// ------------------------------------------------------------------------------------------
// pixels
// ------------------------------------------------------------------------------------------

/// Reads the series' pixels: `[k, j, i]` f32 after each slice's rescale. Refuses more than
/// `max_voxels` voxels before decoding anything.
pub fn read_volume(series: &Series, max_voxels: usize) -> Result<Array3<f32>, InputError> {
    let [nx, ny, nz] = series.geometry.shape_ijk;
    let voxels = nx
        .checked_mul(ny)
        .and_then(|v| v.checked_mul(nz))
        .unwrap_or(usize::MAX);
    if voxels > max_voxels {
        return Err(InputError::TooLarge {
            path: series.folder.clone(),
            voxels,
            max_voxels,
        });
    }
    let mut data = Array3::<f32>::zeros((nz, ny, nx));
    let out = data
        .as_slice_mut()
        .ok_or_else(|| series.problem("internal: volume is not contiguous"))?;
    out.par_chunks_exact_mut(nx * ny)
        .zip(series.slices.par_iter())
        .try_for_each(|(plane, slice)| read_slice(slice, plane))?;
    let bad = data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(InputError::NonFinite {
            path: series.folder.clone(),
            count: bad,
        });
    }
    Ok(data)
}

/// Decodes one slice into `out` (rows x columns, row-major).
fn read_slice(slice: &SliceHeader, out: &mut [f32]) -> Result<(), InputError> {
    let path = slice.path.as_path();
    lengths::check(path, false).map_err(|why| file_error(path, format!("cannot read: {why}")))?;
    let obj = guarded(|| OpenFileOptions::new().open_file(path))
        .and_then(|r| r.map_err(|e| chain(&e)))
        .map_err(|why| file_error(path, format!("cannot read: {why}")))?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(file_error(path, "no pixel data (7FE0,0010)"));
    }
    let decoded = guarded(|| obj.decode_pixel_data())
        .and_then(|r| r.map_err(|e| chain(&e)))
        .map_err(|why| file_error(path, format!("cannot decode the pixel data: {why}")))?;
    if decoded.rows() != slice.rows
        || decoded.columns() != slice.columns
        || decoded.number_of_frames() != 1
        || decoded.samples_per_pixel() != 1
    {
        return Err(file_error(
            path,
            format!(
                "decoded pixel data is {} frame(s) of {}x{}x{}, expected one {}x{} grayscale frame",
                decoded.number_of_frames(),
                decoded.rows(),
                decoded.columns(),
                decoded.samples_per_pixel(),
                slice.rows,
                slice.columns
            ),
        ));
    }
    let layout = SampleLayout {
        bits_allocated: decoded.bits_allocated(),
        bits_stored: decoded.bits_stored(),
        high_bit: decoded.high_bit(),
        signed: decoded.pixel_representation() == PixelRepresentation::Signed,
    };
    let (slope, intercept) = slice.rescale.clone().map_err(|why| file_error(path, why))?;
    samples_to_f32(decoded.data(), layout, slope, intercept, out)
        .map_err(|why| file_error(path, why))
}

/// How samples are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SampleLayout {
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
}

/// Native-endian samples to `value * slope + intercept` (see the module docs).
fn samples_to_f32(
    bytes: &[u8],
    layout: SampleLayout,
    slope: f64,
    intercept: f64,
    out: &mut [f32],
) -> Result<(), String> {
    let SampleLayout {
        bits_allocated,
        bits_stored,
        high_bit,
        signed,
    } = layout;
    let width = match bits_allocated {
        8 => 1,
        16 => 2,
        32 => 4,
        b => return Err(format!("BitsAllocated {b} is not supported (8, 16 or 32)")),
    };
    if bits_stored == 0
        || bits_stored > bits_allocated
        || high_bit >= bits_allocated
        || high_bit + 1 < bits_stored
    {
        return Err(format!(
            "inconsistent BitsAllocated {bits_allocated}, BitsStored {bits_stored}, HighBit {high_bit}"
        ));
    }
    let needed = out.len() * width;
    if bytes.len() < needed {
        return Err(format!(
            "pixel data holds {} bytes, {needed} expected",
            bytes.len()
        ));
    }
    let shift = u32::from(high_bit + 1 - bits_stored);
    let stored = u32::from(bits_stored);
    let mask: u64 = (1u64 << stored) - 1;
    let sign_bit: u64 = 1u64 << (stored - 1);
    for (o, chunk) in out.iter_mut().zip(bytes.chunks_exact(width)) {
        let raw: u64 = match width {
            1 => u64::from(chunk[0]),
            2 => u64::from(u16::from_ne_bytes([chunk[0], chunk[1]])),
            _ => u64::from(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
        };
        let v = (raw >> shift) & mask;
        let value = if signed && v & sign_bit != 0 {
            v as f64 - (1u64 << stored) as f64
        } else {
            v as f64
        };
        *o = (value * slope + intercept) as f32;
    }
    Ok(())
}

/// Writes one input of the `dicom_series` fuzz target (files separated by its separator) into
/// `dir`, as the target does.
#[cfg(test)]
pub(crate) fn write_fuzz_input(dir: &Path, input: &[u8]) {
    const SEPARATOR: &[u8] = b"\n--stochseg-fuzz-next-file--\n";
    let mut rest = input;
    for i in 0.. {
        let at = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR);
        let end = at.unwrap_or(rest.len());
        std::fs::write(dir.join(format!("{i:03}.dcm")), &rest[..end]).unwrap();
        match at {
            Some(at) => rest = &rest[at + SEPARATOR.len()..],
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `dicom_series` fuzz target (fuzz/regressions/dicom_series/panic-rle-decode):
    /// RLE Lossless pixel data whose segment offsets point outside the fragment made dicom-rs's
    /// decoder index out of bounds. The series is refused with an error, not a panic.
    #[test]
    fn a_panicking_pixel_decoder_gives_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_fuzz_input(
            dir.path(),
            include_bytes!("../../fuzz/regressions/dicom_series/panic-rle-decode"),
        );
        let scan = scan(dir.path()).unwrap();
        let rule = default_rule("t1n");
        let files = choose(&scan, "t1n", rule.as_ref(), true).unwrap();
        let series = prepare(dir.path(), files).unwrap();
        let e = read_volume(&series, 1 << 16).unwrap_err().to_string();
        assert!(e.contains("the DICOM reader failed on this file"), "{e}");
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    #[test]
    fn sorts_by_position_along_the_normal() {
        // axial, z = 10, 12, ..., shuffled
        let [_, _, n] = plane_axes(AXIAL).unwrap();
        let z = [14.0, 10.0, 18.0, 12.0, 16.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [-5.0, 3.0, z]).collect();
        let stack = stack_slices(n, &positions, None).unwrap();
        assert_eq!(stack.order, vec![1, 3, 0, 4, 2]);
        assert!(close(stack.spacing_mm, 2.0));
    }

    #[test]
    fn a_flipped_column_cosine_reverses_the_stack() {
        // column cosine -y: normal is -z, so k runs from superior to inferior
        let [row, col, n] = plane_axes([1.0, 0.0, 0.0, 0.0, -1.0, 0.0]).unwrap();
        assert_eq!(n, [0.0, 0.0, -1.0]);
        let positions: Vec<[f64; 3]> = (0..4).map(|k| [0.0, 0.0, k as f64 * 1.5]).collect();
        let stack = stack_slices(n, &positions, None).unwrap();
        assert_eq!(stack.order, vec![3, 2, 1, 0]);
        let a = affine_lps(row, col, n, [0.5, 0.8], stack.spacing_mm, positions[3]);
        // k = 3 lands on the slice at z = 0
        assert!(close(a[2][2] * 3.0 + a[2][3], 0.0));
        assert!(close(a[0][0], 0.8) && close(a[1][1], -0.5) && close(a[2][2], -1.5));
    }

    #[test]
    fn affine_matches_positions_for_an_oblique_stack() {
        // rotate 30 degrees about x: row = x, column = (0, cos, sin)
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let iop = [1.0, 0.0, 0.0, 0.0, c, s];
        let [row, col, n] = plane_axes(iop).unwrap();
        let origin = [-40.0, 20.0, 5.0];
        let positions: Vec<[f64; 3]> = [2, 0, 1, 3]
            .iter()
            .map(|&k| [0, 1, 2].map(|a| origin[a] + n[a] * 3.0 * k as f64))
            .collect();
        let stack = stack_slices(n, &positions, None).unwrap();
        assert_eq!(stack.order, vec![1, 2, 0, 3]);
        let a = affine_lps(row, col, n, [0.9, 1.1], stack.spacing_mm, positions[1]);
        let g = Geometry {
            shape_ijk: [4, 4, 4],
            affine_lps: a,
        };
        for k in 0..4 {
            let p = g.index_to_lps_mm([0.0, 0.0, k as f64]);
            let q = positions[stack.order[k]];
            assert!((0..3).all(|r| (p[r] - q[r]).abs() < 1e-9), "{p:?} {q:?}");
        }
        // one column step moves along the row cosine by PixelSpacing[1]
        let p = g.index_to_lps_mm([1.0, 0.0, 0.0]);
        assert!(close(p[0] - origin[0], 1.1));
        let p = g.index_to_lps_mm([0.0, 1.0, 0.0]);
        assert!(close(p[1] - origin[1], 0.9 * c) && close(p[2] - origin[2], 0.9 * s));
        assert!(close(g.spacing_mm()[2], 3.0));
    }

    #[test]
    fn duplicate_positions_are_refused() {
        let positions = [
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 2.0],
        ];
        let e = stack_slices([0.0, 0.0, 1.0], &positions, None).unwrap_err();
        assert!(
            matches!(
                e,
                StackProblem::Duplicate {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let names: Vec<String> = (0..4).map(|i| format!("f{i}.dcm")).collect();
        let msg = e.describe(&names);
        assert!(
            msg.contains("f1.dcm and f2.dcm") && msg.contains("1.000 mm"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_slice_is_found() {
        let z = [12.0, 13.5, 10.5, 9.0, 16.5, 18.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        let e = stack_slices([0.0, 0.0, 1.0], &positions, None).unwrap_err();
        assert_eq!(
            e,
            StackProblem::Missing {
                from_mm: 13.5,
                to_mm: 16.5,
                spacing_mm: 1.5,
                more: 0
            }
        );
        let msg = e.describe(&[]);
        assert!(
            msg.contains("between 13.500 and 16.500 mm") && msg.contains("spacing 1.500 mm"),
            "{msg}"
        );
    }

    #[test]
    fn uneven_spacing_reports_the_gap() {
        let z = [0.0, 1.0, 2.0, 3.05, 4.05];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        let e = stack_slices([0.0, 0.0, 1.0], &positions, None).unwrap_err();
        match e {
            StackProblem::Uneven {
                gap_mm, spacing_mm, ..
            } => {
                assert!((gap_mm - 1.05).abs() < 1e-9 && close(spacing_mm, 1.0))
            }
            other => panic!("{other:?}"),
        }
        // within 1% passes
        let z = [0.0, 1.0, 2.0, 3.005, 4.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        assert!(stack_slices([0.0, 0.0, 1.0], &positions, None).is_ok());
    }

    #[test]
    fn sheared_stacks_are_refused() {
        // gantry tilt: each slice shifted 0.2 mm in y per mm in z
        let positions: Vec<[f64; 3]> = (0..5).map(|k| [0.0, 0.2 * k as f64, k as f64]).collect();
        let e = stack_slices([0.0, 0.0, 1.0], &positions, None).unwrap_err();
        assert!(matches!(e, StackProblem::Sheared { .. }), "{e:?}");
    }

    #[test]
    fn a_single_slice_needs_a_thickness() {
        let p = [[1.0, 2.0, 3.0]];
        assert_eq!(
            stack_slices([0.0, 0.0, 1.0], &p, None).unwrap_err(),
            StackProblem::SingleSlice
        );
        assert!(close(
            stack_slices([0.0, 0.0, 1.0], &p, Some(2.5))
                .unwrap()
                .spacing_mm,
            2.5
        ));
    }

    #[test]
    fn bad_orientations_are_refused() {
        assert!(plane_axes([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).is_err());
        assert!(plane_axes([2.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_err());
        assert!(plane_axes([0.0; 6]).is_err());
    }

    #[test]
    fn samples_are_masked_sign_extended_and_rescaled() {
        // 12 bits stored in 16, signed: 0x0FFF is -1, 0x0800 is -2048, high garbage ignored
        let raw: Vec<u16> = vec![0x0FFF, 0x0800, 0x07FF, 0xF001];
        let bytes: Vec<u8> = raw.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let layout = SampleLayout {
            bits_allocated: 16,
            bits_stored: 12,
            high_bit: 11,
            signed: true,
        };
        let mut out = [0f32; 4];
        samples_to_f32(&bytes, layout, 1.0, 0.0, &mut out).unwrap();
        assert_eq!(out, [-1.0, -2048.0, 2047.0, 1.0]);
        let unsigned = SampleLayout {
            signed: false,
            bits_stored: 16,
            high_bit: 15,
            ..layout
        };
        samples_to_f32(&bytes, unsigned, 0.5, -1000.0, &mut out).unwrap();
        assert_eq!(
            out,
            [
                0x0FFF as f32 * 0.5 - 1000.0,
                0x0800 as f32 * 0.5 - 1000.0,
                0x07FF as f32 * 0.5 - 1000.0,
                0xF001 as f32 * 0.5 - 1000.0
            ]
        );
        // 8-bit signed and 32-bit signed
        let b8 = [0xFFu8, 0x7F];
        let s8 = SampleLayout {
            bits_allocated: 8,
            bits_stored: 8,
            high_bit: 7,
            signed: true,
        };
        let mut o2 = [0f32; 2];
        samples_to_f32(&b8, s8, 1.0, 0.0, &mut o2).unwrap();
        assert_eq!(o2, [-1.0, 127.0]);
        let b32: Vec<u8> = [-5i32, 70000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let s32 = SampleLayout {
            bits_allocated: 32,
            bits_stored: 32,
            high_bit: 31,
            signed: true,
        };
        samples_to_f32(&b32, s32, 2.0, 1.0, &mut o2).unwrap();
        assert_eq!(o2, [-9.0, 140001.0]);
    }

    #[test]
    fn short_or_inconsistent_pixel_data_is_an_error() {
        let layout = SampleLayout {
            bits_allocated: 16,
            bits_stored: 16,
            high_bit: 15,
            signed: false,
        };
        let mut out = [0f32; 4];
        assert!(samples_to_f32(&[0u8; 6], layout, 1.0, 0.0, &mut out).is_err());
        let bad = SampleLayout {
            bits_stored: 17,
            ..layout
        };
        assert!(samples_to_f32(&[0u8; 8], bad, 1.0, 0.0, &mut out).is_err());
        let odd = SampleLayout {
            bits_allocated: 12,
            ..layout
        };
        assert!(samples_to_f32(&[0u8; 8], odd, 1.0, 0.0, &mut out).is_err());
    }

    fn series(description: &str, number: &str, uid: &str) -> SeriesFiles {
        SeriesFiles {
            uid: uid.to_string(),
            description: description.to_string(),
            number: number.to_string(),
            slices: Vec::new(),
        }
    }

    fn picks(channel: &str, description: &str) -> bool {
        let rule = default_rule(channel).unwrap();
        rule_matches(&rule, &series(description, "1", "1.2.3")).unwrap()
    }

    #[test]
    fn default_rules_know_common_names() {
        let cases: &[(&str, &[&str])] = &[
            (
                "t1n",
                &[
                    "T1",
                    "t1n",
                    "AX T1 pre",
                    "T1_MPRAGE",
                    "t1_se_tra",
                    "T1W_3D_TFE",
                    "sag T1 SPACE",
                ],
            ),
            (
                "t1c",
                &[
                    "T1CE",
                    "t1c",
                    "T1Gd",
                    "T1 post",
                    "AX T1 POST GD",
                    "T1+C",
                    "t1_mprage_post",
                    "T1W_3D_TFE+C",
                    "post-contrast T1",
                    "T1 CE",
                    "t1_ce",
                ],
            ),
            ("t2w", &["T2", "t2w", "AX T2 TSE", "t2_tse_tra", "T2 FSE"]),
            (
                "t2f",
                &[
                    "FLAIR",
                    "t2f",
                    "AX T2 FLAIR",
                    "t2_tirm_tra_dark-fluid",
                    "T2F",
                ],
            ),
        ];
        let channels = ["t1n", "t1c", "t2w", "t2f"];
        for (channel, names) in cases {
            for name in *names {
                let hits: Vec<&str> = channels
                    .iter()
                    .copied()
                    .filter(|c| picks(c, name))
                    .collect();
                assert_eq!(hits, vec![*channel], "{name:?}");
            }
        }
        for other in [
            "T1 FLAIR",
            "DWI",
            "SWI",
            "T2*",
            "localizer",
            "ADC",
            "T2 star",
        ] {
            let hits: Vec<&str> = channels
                .iter()
                .copied()
                .filter(|c| picks(c, other))
                .collect();
            assert!(hits.is_empty(), "{other}: {hits:?}");
        }
        assert!(default_rule("adc").is_none());
    }

    fn scan_of(series: Vec<SeriesFiles>) -> Scan {
        Scan {
            dir: PathBuf::from("/d"),
            series,
            non_dicom: 0,
            non_image: Vec::new(),
        }
    }

    #[test]
    fn choosing_a_series() {
        let scan = scan_of(vec![
            series("AX T1 pre", "3", "1.2.3"),
            series("AX T1 post Gd", "7", "1.2.7"),
            series("T2", "4", "1.2.4"),
        ]);
        let t1c = choose(&scan, "t1c", default_rule("t1c").as_ref(), true).unwrap();
        assert_eq!(t1c.uid, "1.2.7");
        let by_number = SeriesRule {
            series_number: Some("^3$".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&scan, "t1n", Some(&by_number), false).unwrap().uid,
            "1.2.3"
        );
        let e = choose(&scan, "t2f", default_rule("t2f").as_ref(), true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/d: channel t2f: no series matches"), "{e}");
        assert!(e.contains("1.2.7 \"AX T1 post Gd\" #7 (0 files)"), "{e}");
        let any_t1 = SeriesRule {
            series_description: Some("T1".into()),
            ..Default::default()
        };
        let e = choose(&scan, "t1n", Some(&any_t1), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 series match"), "{e}");
        let e = choose(&scan, "x", None, true).unwrap_err().to_string();
        assert!(e.contains("no rule"), "{e}");
        // a lone series needs no rule when allowed
        let one = scan_of(vec![series("whatever", "", "9.9")]);
        assert_eq!(choose(&one, "t1n", None, true).unwrap().uid, "9.9");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn header_strings_are_made_safe() {
        assert_eq!(clean("a\nb\tc "), "a b c");
        assert_eq!(clean(&"x".repeat(100)).chars().count(), 64);
        let paths = [Path::new("/a/b/c/1.dcm"), Path::new("/a/b/d/2.dcm")];
        assert_eq!(common_folder(paths.into_iter()), PathBuf::from("/a/b"));
    }
}
