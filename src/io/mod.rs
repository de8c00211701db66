//! Input adapters: they turn files into a `Case` (channels on one grid plus geometry) and know
//! nothing of models. `case` finds a case's files; `nifti` reads and writes NIfTI; `dicom`
//! finds, checks and reads DICOM MR series. What a reader refuses is typed in `nifti::problem`
//! and `dicom::problem`; `InputError`, the readers' error, ties it to the file or folder.

pub mod case;
pub mod dicom;
pub mod nifti;

use std::path::PathBuf;

use crate::io::dicom::problem::{ChoiceProblem, FileProblem, SeriesProblem};
use crate::io::nifti::problem::NiftiProblem;

/// Input rejected (exit code 3). Every variant names the file or folder at fault.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: {problem}")]
    Nifti {
        path: PathBuf,
        #[source]
        problem: NiftiProblem,
    },
    #[error("{path}: {problem}")]
    DicomFile {
        path: PathBuf,
        #[source]
        problem: Box<FileProblem>,
    },
    #[error("{path}: {voxels} voxels exceed the limit of {max_voxels} (raise limits.max_voxels in the pipeline config)")]
    TooLarge {
        path: PathBuf,
        voxels: usize,
        max_voxels: usize,
    },
    #[error("{path}: a run on this {shape} case needs an estimated {needed_mib} MiB, over the limit of {max_mib} MiB (raise limits.max_memory_mib in the pipeline config, or use fewer passes or a smaller batch)")]
    MemoryLimit {
        path: PathBuf,
        shape: String,
        needed_mib: u64,
        max_mib: u64,
    },
    #[error("{path}: {count} voxels are NaN or infinite")]
    NonFinite { path: PathBuf, count: usize },
    #[error("{path}: channel {channel} is all zero")]
    EmptyChannel { path: PathBuf, channel: String },
    #[error("{path}: channel {channel} is on a different grid than {reference} ({detail})")]
    GridMismatch {
        path: PathBuf,
        channel: String,
        reference: PathBuf,
        detail: String,
    },
    #[error("{dir}: no file for channel {channel} (expected a name ending in -{channel}.nii.gz or -{channel}.nii)")]
    MissingChannel { dir: PathBuf, channel: String },
    #[error("{dir}: several files for channel {channel}: {found}")]
    AmbiguousChannel {
        dir: PathBuf,
        channel: String,
        found: String,
    },
    #[error("{dir}: no DICOM image series found ({detail})")]
    NoDicomSeries { dir: PathBuf, detail: String },
    #[error("{dir}: channel {channel}: {problem}; series found: {found}")]
    DicomSeriesChoice {
        dir: PathBuf,
        channel: String,
        #[source]
        problem: Box<ChoiceProblem>,
        found: String,
    },
    #[error("{dir}: series {uid} ({description}): {problem}")]
    DicomSeries {
        dir: PathBuf,
        uid: String,
        description: String,
        #[source]
        problem: Box<SeriesProblem>,
    },
    #[error("{path}: transfer syntax {uid} ({name}) cannot be decoded by this build (supported: uncompressed, deflated, RLE, JPEG baseline/extended/lossless, JPEG 2000)")]
    UnsupportedTransferSyntax {
        path: PathBuf,
        uid: String,
        name: String,
    },
}
