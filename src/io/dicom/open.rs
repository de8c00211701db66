//! Opening one DICOM file with dicom-rs, safely: the element lengths are checked first
//! (`lengths`, as dicom-rs reserves whatever a length field claims), and a panic inside dicom-rs
//! becomes an error (`guard`). Errors come out on one line, their causes joined by `: `.

use std::path::Path;

use dicom::dictionary_std::tags;
use dicom::object::{DefaultDicomObject, OpenFileOptions};

use super::lengths;
use crate::io::InputError;

/// How much of a file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extent {
    /// Up to the top-level PixelData element.
    Header,
    /// Everything.
    Whole,
}

/// Opens `path` with dicom-rs after checking its element lengths; why it cannot, on one line.
pub(super) fn open(path: &Path, extent: Extent) -> Result<DefaultDicomObject, String> {
    let header_only = extent == Extent::Header;
    lengths::check(path, header_only)?;
    guarded(|| {
        let options = OpenFileOptions::new();
        if header_only {
            options.read_until(tags::PIXEL_DATA).open_file(path)
        } else {
            options.open_file(path)
        }
    })
    .and_then(|r| r.map_err(|e| chain(&e)))
}

/// Runs a third-party reader, turning a panic inside it into an error (see `guard`).
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    crate::guard::guarded(f).ok_or_else(|| "the DICOM reader failed on this file".to_string())
}

/// An error and its causes on one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
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

pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn file_error(path: &Path, reason: impl Into<String>) -> InputError {
    InputError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}
