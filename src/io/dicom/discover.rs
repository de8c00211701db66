//! Finding the image series under a folder, headers only: every file under the folder
//! (recursively, symlinks followed, loops skipped) whose bytes 128..132 are `DICM` (a DICOM
//! Part 10 file) is read up to the pixel data only (`OpenFileOptions::read_until(PixelData)`);
//! other files are skipped, and so are DICOM objects that are not images (SR, presentation
//! states, SEG, RT, KO, raw data, documents, waveforms, DICOMDIR, and anything without Rows). A
//! DICOM file whose header cannot be read is an error, not skipped. Images are grouped by
//! SeriesInstanceUID into a `Scan`, its series ordered by SeriesNumber, then UID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom::dictionary_std::tags;
use rayon::prelude::*;

use super::header::{clean, slice_header, text, SliceHeader};
use super::open::{file_error, open, Extent};
use super::problem::FileProblem;
use crate::io::InputError;

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

/// One series found in a folder: its image files, unsorted and unchecked.
#[derive(Debug, Clone)]
pub struct SeriesFiles {
    pub uid: String,
    pub description: String,
    pub number: String,
    pub(super) slices: Vec<SliceHeader>,
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
    // every file examined, in name order, so that of several broken files the error always
    // names the first, whichever thread reaches it first
    let examined: Vec<Result<Found, InputError>> = files.par_iter().map(|p| examine(p)).collect();
    let found: Vec<Found> = examined.into_iter().collect::<Result<_, _>>()?;
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
                return Err(file_error(&path, FileProblem::List(e)));
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
    let obj = open(path, Extent::Header).map_err(|e| file_error(path, FileProblem::Header(e)))?;
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
    let header = slice_header(path, &obj, sop_class, transfer_syntax)
        .map_err(|problem| file_error(path, problem))?;
    Ok(Found::Image(Box::new(header)))
}

fn non_image_kind(sop_class: &str) -> Option<String> {
    NON_IMAGE_CLASSES
        .iter()
        .find(|(prefix, _)| sop_class.starts_with(prefix))
        .map(|(_, kind)| kind.to_string())
}
