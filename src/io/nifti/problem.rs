//! What can be wrong with a NIfTI-1 file, typed, each with what the reader expected and what
//! the header holds; `InputError::Nifti` adds the file. nifti-rs's own errors are the cause
//! (`Reader`), told in words a user can act on ("file is truncated", "bad magic").

use nifti::{NiftiError, NiftiType};

/// Why a NIfTI file cannot be read as one 3-D volume.
#[derive(Debug, thiserror::Error)]
pub enum NiftiProblem {
    #[error("file is empty (0 bytes)")]
    Empty,
    #[error("{}", describe(.0))]
    Reader(#[source] NiftiError),
    #[error("vox_offset {vox_offset} in a .hdr/.img pair is not supported (0 is)")]
    PairVoxOffset { vox_offset: f64 },
    #[error("vox_offset {vox_offset} is not a byte offset from 352 (the header's end) to {max}")]
    VoxOffset { vox_offset: f64, max: usize },
    #[error("file is truncated (it ends before vox_offset {vox_offset})")]
    EndsBeforeVoxels { vox_offset: usize },
    #[error(
        "vox_offset {vox_offset} leaves {gap} bytes before the voxels but no extension is declared"
    )]
    UndeclaredExtension { vox_offset: usize, gap: usize },
    #[error("extension at byte {at} runs past vox_offset {vox_offset}")]
    ExtensionPastOffset { at: usize, vox_offset: usize },
    #[error("extension at byte {at} has size {esize}, which does not fit between the header and vox_offset {vox_offset}")]
    ExtensionSize {
        at: usize,
        esize: i32,
        vox_offset: usize,
    },
    #[error("datatype {code} is not a NIfTI-1 datatype")]
    UnknownDatatype { code: i16 },
    #[error(
        "datatype {code} ({kind:?}) is not supported (a scalar integer or float type is needed)"
    )]
    UnsupportedDatatype { code: i16, kind: NiftiType },
    #[error("bitpix {bitpix} does not match datatype {code} ({kind:?}, {bits} bits)")]
    Bitpix {
        bitpix: i16,
        code: i16,
        kind: NiftiType,
        bits: usize,
    },
    #[error("datatype {kind:?} is not supported")]
    Undecodable { kind: NiftiType },
    #[error("scl_slope {slope} with a non-finite scl_inter {inter}")]
    Intercept { slope: f64, inter: f64 },
    #[error("voxel data does not match the header dimensions")]
    VoxelCount,
    #[error("header dim[0] = {dim0} is not a valid rank (1 to 7) in either byte order")]
    Rank { dim0: u16 },
    #[error("header has a negative dimension {dim}: {dims:?}")]
    NegativeDimension { dim: i16, dims: Vec<i16> },
    #[error("header has a zero dimension: {dims:?}")]
    ZeroDimension { dims: Vec<usize> },
    #[error("expected one 3-D volume, got a {rank}-D image of shape {dims:?}")]
    NotOneVolume { rank: usize, dims: Vec<usize> },
    #[error("the affine (sform/qform) is singular or not finite")]
    Affine,
    #[error("qform needs positive pixdim[1..3], got {pixdim:?}")]
    QformPixdim { pixdim: [f64; 3] },
}

/// nifti-rs's error in a user's words, on one line.
fn describe(e: &NiftiError) -> String {
    match e {
        NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file is truncated".to_string()
        }
        NiftiError::Io(io) => format!("cannot read: {}", one_line(&io.to_string())),
        NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic)".to_string(),
        NiftiError::IncompatibleLength(got, expected) => {
            format!("file is truncated ({got} of {expected} bytes of voxel data)")
        }
        other => one_line(&other.to_string().to_lowercase()),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
