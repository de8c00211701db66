//! What can be wrong with DICOM input, typed: a file that cannot be read (`FileProblem`, with
//! dicom-rs's error as its cause in `ReadError`), a series that is not one regular grid of
//! grayscale images (`SeriesProblem`), a channel whose series cannot be chosen
//! (`ChoiceProblem`). Each carries what was expected and what was found, and file names, never
//! patient data; `InputError` (exit code 3) adds the file, or the folder and series, it concerns.
//! Messages are one line: dicom-rs's own messages are joined with their causes by `: `.

use super::grid::{OrientationProblem, StackProblem};
use super::lengths::LengthError;

/// Why dicom-rs could not read or decode a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Lengths(#[from] LengthError),
    /// dicom-rs panicked (caught by `guard`).
    #[error("the DICOM reader failed on this file")]
    Panicked,
    #[error("{}", chain(.0))]
    Parse(#[source] dicom::object::ReadError),
    #[error("{}", chain(.0))]
    Decode(#[source] dicom::pixeldata::Error),
}

/// Why one file cannot be used; `InputError::DicomFile` names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot list: {}", one_line(&.0.to_string()))]
    List(#[source] walkdir::Error),
    #[error("cannot read the DICOM header: {0}")]
    Header(#[source] ReadError),
    #[error("no {keyword}")]
    Missing { keyword: &'static str },
    #[error("cannot read: {0}")]
    Read(#[source] ReadError),
    #[error("no pixel data (7FE0,0010)")]
    NoPixelData,
    #[error("cannot decode the pixel data: {0}")]
    Decode(#[source] ReadError),
    #[error(
        "decoded pixel data is {frames} frame(s) of {rows}x{columns}x{samples}, expected one {expected_rows}x{expected_columns} grayscale frame"
    )]
    DecodedShape {
        frames: u32,
        rows: u32,
        columns: u32,
        samples: u16,
        expected_rows: u32,
        expected_columns: u32,
    },
    #[error(transparent)]
    Rescale(#[from] RescaleProblem),
    #[error(transparent)]
    Samples(#[from] SampleProblem),
}

/// An unusable RescaleSlope or RescaleIntercept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RescaleProblem {
    #[error("{keyword} is not a finite number")]
    NotFinite { keyword: &'static str },
    #[error("RescaleSlope is 0")]
    ZeroSlope,
}

/// Decoded samples that cannot be turned into numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleProblem {
    #[error("BitsAllocated {bits_allocated} is not supported (8, 16 or 32)")]
    BitsAllocated { bits_allocated: u16 },
    #[error(
        "inconsistent BitsAllocated {bits_allocated}, BitsStored {bits_stored}, HighBit {high_bit}"
    )]
    Bits {
        bits_allocated: u16,
        bits_stored: u16,
        high_bit: u16,
    },
    #[error("pixel data holds {found} bytes, {expected} expected")]
    Short { found: usize, expected: usize },
}

/// Why a series is not one regular grid of grayscale images this build reads;
/// `InputError::DicomSeries` names the folder and the series. `file` is a file's name.
#[derive(Debug, thiserror::Error)]
pub enum SeriesProblem {
    #[error("no image files")]
    NoImageFiles,
    #[error("{file}: no valid {keyword}")]
    Missing { file: String, keyword: &'static str },
    #[error("{file}: enhanced (multi-frame) images are not supported; export the series as classic single-frame images")]
    MultiFrame { file: String },
    #[error("{file}: photometric interpretation {photometric} with {samples} samples per pixel is not supported (grayscale MONOCHROME1/MONOCHROME2 only)")]
    NotGrayscale {
        file: String,
        photometric: String,
        samples: u32,
    },
    #[error("{file}: {problem}")]
    Rescale {
        file: String,
        #[source]
        problem: RescaleProblem,
    },
    #[error("{file}: image has no rows or columns")]
    NoPixels { file: String },
    #[error(
        "mixed image sizes: {}x{} (rows x columns) in {first_file} but {}x{} in {file}",
        first[0],
        first[1],
        found[0],
        found[1]
    )]
    MixedSizes {
        first: [u32; 2],
        first_file: String,
        found: [u32; 2],
        file: String,
    },
    #[error("mixed PixelSpacing: {first} in {first_file} but {found} in {file}")]
    MixedPixelSpacing {
        first: String,
        first_file: String,
        found: String,
        file: String,
    },
    #[error(
        "mixed orientations: ImageOrientationPatient {first} in {first_file} but {found} in {file}"
    )]
    MixedOrientations {
        first: String,
        first_file: String,
        found: String,
        file: String,
    },
    #[error("PixelSpacing {pixel_spacing} is not positive")]
    PixelSpacing { pixel_spacing: String },
    #[error(transparent)]
    Orientation(#[from] OrientationProblem),
    #[error(transparent)]
    Stack(#[from] StackProblem),
    #[error("internal: volume is not contiguous")]
    NotContiguous,
}

/// Why a channel's series cannot be chosen; `InputError::DicomSeriesChoice` names the folder,
/// the channel and the series found.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceProblem {
    #[error("{count} series and no rule to choose one (set dicom.series.{channel} in the pipeline config)")]
    NoRule { count: usize, channel: String },
    #[error("no series matches {rule} (set dicom.series.{channel} in the pipeline config)")]
    NoMatch { rule: String, channel: String },
    #[error("{count} series match {rule} (narrow dicom.series.{channel}, e.g. with series_number or series_instance_uid)")]
    SeveralMatch {
        count: usize,
        rule: String,
        channel: String,
    },
    #[error("invalid regular expression /{pattern}/")]
    Pattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("series {uid} (\"{description}\") was already chosen for channel {other}")]
    AlreadyChosen {
        uid: String,
        description: String,
        other: String,
    },
}

/// An error and its causes on one line (a cause already in the text is not repeated).
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
