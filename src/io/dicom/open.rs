//! Opening one DICOM file with dicom-rs, safely: the element lengths are checked first
//! (`lengths`, as dicom-rs reserves whatever a length field claims), and a panic inside dicom-rs
//! becomes an error (`guard`).

use std::path::Path;

use dicom::dictionary_std::tags;
use dicom::object::{DefaultDicomObject, OpenFileOptions};

use super::lengths;
use super::problem::{FileProblem, ReadError};
use crate::io::InputError;

/// How much of a file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extent {
    /// Up to the top-level PixelData element.
    Header,
    /// Everything.
    Whole,
}

/// Opens `path` with dicom-rs after checking its element lengths.
pub(super) fn open(path: &Path, extent: Extent) -> Result<DefaultDicomObject, ReadError> {
    let header_only = extent == Extent::Header;
    lengths::check(path, header_only)?;
    guarded(|| {
        let options = OpenFileOptions::new();
        if header_only {
            options.read_until(tags::PIXEL_DATA).open_file(path)
        } else {
            options.open_file(path)
        }
    })?
    .map_err(ReadError::Parse)
}

/// Runs a third-party reader, turning a panic inside it into an error (see `guard`).
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, ReadError> {
    crate::guard::guarded(f).ok_or(ReadError::Panicked)
}

/// The input error for a problem with the file at `path`.
pub(super) fn file_error(path: &Path, problem: FileProblem) -> InputError {
    InputError::DicomFile {
        path: path.to_path_buf(),
        problem: Box::new(problem),
    }
}
