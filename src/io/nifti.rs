//! NIfTI-1 adapter: reads one channel into a `[z, y, x]` f32 array with its `Geometry`, and
//! writes result maps on exactly the grid of a reference header.
//!
//! The affine follows the NIfTI standard as nibabel applies it: sform when `sform_code > 0`,
//! else qform when `qform_code > 0`, else nibabel's base affine (centred, x flipped). NIfTI's RAS
//! is converted to the library's LPS here and nowhere else. Values are scaled by
//! `scl_slope`/`scl_inter` when the slope is non-zero. Output files copy the reference header
//! (sform, qform, pixdim, units) so they carry the input's affine bit for bit.
//!
//! What the reader refuses is a `problem::NiftiProblem`, which `InputError::Nifti` ties to the
//! file.

pub mod problem;

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3};
use nifti::writer::WriterOptions;
use nifti::{
    DataElement, InMemNiftiObject, InMemNiftiVolume, NiftiHeader, NiftiObject, NiftiType,
    ReaderOptions,
};

use crate::io::InputError;
use crate::volume::Geometry;
use problem::NiftiProblem;

/// One NIfTI volume: voxels `[k, j, i]` and the header it came with.
#[derive(Debug, Clone)]
pub struct NiftiImage {
    pub path: PathBuf,
    pub data: Array3<f32>,
    pub geometry: Geometry,
    pub header: NiftiHeader,
}

/// The input error for `problem` with the file at `path`.
fn nifti_error(path: &Path, problem: NiftiProblem) -> InputError {
    InputError::Nifti {
        path: path.to_path_buf(),
        problem,
    }
}

/// Reads only the header and checks that the file describes one 3-D volume of at most
/// `max_voxels` voxels that this reader can decode, before any voxel is allocated.
pub fn read_header(path: &Path, max_voxels: usize) -> Result<(NiftiHeader, Geometry), InputError> {
    if !path.is_file() {
        return Err(InputError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(nifti_error(path, NiftiProblem::Empty));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| nifti_error(path, NiftiProblem::Reader(nifti::NiftiError::Io(e))))?;
    let file = std::io::BufReader::new(file);
    // as nifti 0.18 decides: a name ending in .gz is gzip-compressed
    if path.extension().is_some_and(|e| e == "gz") {
        read_head(path, flate2::read::GzDecoder::new(file), max_voxels)
    } else {
        read_head(path, file, max_voxels)
    }
}

/// Reads a 3-D volume (a 4-D file with one volume is accepted) as f32.
pub fn read_volume(path: &Path, max_voxels: usize) -> Result<NiftiImage, InputError> {
    let (_, geometry) = read_header(path, max_voxels)?;
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| nifti_error(path, NiftiProblem::Reader(e)))?;
    finish(path, object, geometry)
}

/// Reads a NIfTI-1 volume held in memory, gzip-compressed or not (told by its first two bytes);
/// `path` only names it in messages. The same checks as `read_volume` (the fuzz targets' entry).
pub fn read_volume_from_bytes(
    path: &Path,
    bytes: &[u8],
    max_voxels: usize,
) -> Result<NiftiImage, InputError> {
    let gzipped = bytes.starts_with(&[0x1f, 0x8b]);
    let source = || -> Box<dyn Read + '_> {
        if gzipped {
            Box::new(flate2::read::GzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        }
    };
    let (_, geometry) = read_head(path, source(), max_voxels)?;
    let object = InMemNiftiObject::from_reader(source())
        .map_err(|e| nifti_error(path, NiftiProblem::Reader(e)))?;
    finish(path, object, geometry)
}

/// Largest `vox_offset` accepted: the header plus this much of extensions.
const MAX_VOX_OFFSET: usize = 64 << 20;

/// The header from the start of a (decompressed) stream, checked (`check_header`), and the
/// bytes up to `vox_offset` checked against the extension sizes (`check_layout`).
fn read_head(
    path: &Path,
    mut source: impl Read,
    max_voxels: usize,
) -> Result<(NiftiHeader, Geometry), InputError> {
    let mut head = vec![0u8; 348];
    source
        .read_exact(&mut head)
        .map_err(|e| nifti_error(path, NiftiProblem::Reader(nifti::NiftiError::Io(e))))?;
    let header = NiftiHeader::from_reader(&head[..])
        .map_err(|e| nifti_error(path, NiftiProblem::Reader(e)))?;
    let geometry = check_header(path, &header, max_voxels)?;
    check_layout(&header, &mut head, source).map_err(|p| nifti_error(path, p))?;
    Ok((header, geometry))
}

/// nifti 0.18 trusts each extension's `esize` (reserving that much memory) and reads the voxels
/// right after the last extension, whatever `vox_offset` says. So the extensions must exactly
/// fill the bytes from 352 to `vox_offset`, each at least 8 bytes; `head` holds the first 348.
fn check_layout(
    h: &NiftiHeader,
    head: &mut Vec<u8>,
    source: impl Read,
) -> Result<(), NiftiProblem> {
    let offset = f64::from(h.vox_offset);
    if &h.magic == b"ni1\0" {
        // a .hdr/.img pair: the voxels start the .img file
        return match offset {
            0.0 => Ok(()),
            _ => Err(NiftiProblem::PairVoxOffset { vox_offset: offset }),
        };
    }
    if !(352.0..=MAX_VOX_OFFSET as f64).contains(&offset) || offset.fract() != 0.0 {
        return Err(NiftiProblem::VoxOffset {
            vox_offset: offset,
            max: MAX_VOX_OFFSET,
        });
    }
    let offset = offset as usize;
    let wanted = (offset - head.len()) as u64;
    let read = source
        .take(wanted)
        .read_to_end(head)
        .map_err(|e| NiftiProblem::Reader(nifti::NiftiError::Io(e)))?;
    if (read as u64) < wanted {
        return Err(NiftiProblem::EndsBeforeVoxels { vox_offset: offset });
    }
    if offset > 352 && head[348] == 0 {
        return Err(NiftiProblem::UndeclaredExtension {
            vox_offset: offset,
            gap: offset - 352,
        });
    }
    check_extensions(h, head, offset)
}

/// The extensions in `head[352..vox_offset]` fill it exactly, each at least 8 bytes.
fn check_extensions(h: &NiftiHeader, head: &[u8], vox_offset: usize) -> Result<(), NiftiProblem> {
    let mut at = 352;
    while at < vox_offset {
        let bytes: [u8; 4] = head
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(NiftiProblem::ExtensionPastOffset { at, vox_offset })?;
        let esize = match h.endianness {
            nifti::Endianness::Little => i32::from_le_bytes(bytes),
            nifti::Endianness::Big => i32::from_be_bytes(bytes),
        };
        if esize < 8 || esize as usize > vox_offset - at {
            return Err(NiftiProblem::ExtensionSize {
                at,
                esize,
                vox_offset,
            });
        }
        at += esize as usize;
    }
    Ok(())
}

/// Everything the header must satisfy before voxels are read: one 3-D volume within the limit,
/// a scalar datatype whose `bitpix` matches, a usable scaling and a regular affine.
fn check_header(path: &Path, h: &NiftiHeader, max_voxels: usize) -> Result<Geometry, InputError> {
    let shape = spatial_shape(h).map_err(|p| nifti_error(path, p))?;
    let voxels = shape
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .unwrap_or(usize::MAX);
    if voxels > max_voxels {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            voxels,
            max_voxels,
        });
    }
    check_datatype(h).map_err(|p| nifti_error(path, p))?;
    scaling(h).map_err(|p| nifti_error(path, p))?;
    let affine_lps = affine_lps(h).map_err(|p| nifti_error(path, p))?;
    Ok(Geometry {
        shape_ijk: shape,
        affine_lps,
    })
}

/// A scalar datatype (no complex, RGB or 128-bit types) with `bitpix` = 8 x its size (nifti 0.18
/// sizes the voxel buffer from `bitpix` but decodes by `datatype`, and panics when they differ).
fn check_datatype(h: &NiftiHeader) -> Result<NiftiType, NiftiProblem> {
    use NiftiType::*;
    let code = h.datatype;
    let t = h
        .data_type()
        .map_err(|_| NiftiProblem::UnknownDatatype { code })?;
    if !matches!(
        t,
        Uint8 | Int8 | Uint16 | Int16 | Uint32 | Int32 | Uint64 | Int64 | Float32 | Float64
    ) {
        return Err(NiftiProblem::UnsupportedDatatype { code, kind: t });
    }
    if i64::from(h.bitpix) != 8 * t.size_of() as i64 {
        return Err(NiftiProblem::Bitpix {
            bitpix: h.bitpix,
            code,
            kind: t,
            bits: 8 * t.size_of(),
        });
    }
    Ok(t)
}

/// `(slope, intercept)` as nibabel applies them: none when `scl_slope` is 0 or not finite; a
/// usable slope with a non-finite intercept is an error.
fn scaling(h: &NiftiHeader) -> Result<Option<(f64, f64)>, NiftiProblem> {
    let (slope, inter) = (f64::from(h.scl_slope), f64::from(h.scl_inter));
    if slope == 0.0 || !slope.is_finite() {
        return Ok(None);
    }
    if !inter.is_finite() {
        return Err(NiftiProblem::Intercept { slope, inter });
    }
    Ok(Some((slope, inter)))
}

/// The voxels of a read object on `geometry`, scaled, as `[k, j, i]` f32.
fn finish(
    path: &Path,
    object: InMemNiftiObject,
    geometry: Geometry,
) -> Result<NiftiImage, InputError> {
    let header = object.header().clone();
    let datatype = check_datatype(&header).map_err(|p| nifti_error(path, p))?;
    let scale = scaling(&header).map_err(|p| nifti_error(path, p))?;
    let values = to_f64(object.into_volume(), datatype).map_err(|p| nifti_error(path, p))?;
    let [nx, ny, nz] = geometry.shape_ijk;
    if values.len() != nx * ny * nz {
        return Err(nifti_error(path, NiftiProblem::VoxelCount));
    }
    let scaled: Vec<f32> = match scale {
        Some((slope, inter)) => values.iter().map(|&v| (v * slope + inter) as f32).collect(),
        None => values.iter().map(|&v| v as f32).collect(),
    };
    // NIfTI stores i fastest, so the values in file order are a standard-layout [k, j, i] array
    let data = Array3::from_shape_vec((nz, ny, nx), scaled)
        .map_err(|_| nifti_error(path, NiftiProblem::VoxelCount))?;
    let bad = data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(InputError::NonFinite {
            path: path.to_path_buf(),
            count: bad,
        });
    }
    Ok(NiftiImage {
        path: path.to_path_buf(),
        data,
        geometry,
        header,
    })
}

/// The voxel values in file order, by the header's datatype.
fn to_f64(volume: InMemNiftiVolume, datatype: NiftiType) -> Result<Vec<f64>, NiftiProblem> {
    fn typed<T: DataElement + Into<f64>>(v: InMemNiftiVolume) -> Result<Vec<f64>, NiftiProblem> {
        v.into_nifti_typed_data::<T>()
            .map(|d| d.into_iter().map(Into::into).collect())
            .map_err(NiftiProblem::Reader)
    }
    fn wide<T: DataElement>(
        v: InMemNiftiVolume,
        f: fn(T) -> f64,
    ) -> Result<Vec<f64>, NiftiProblem> {
        v.into_nifti_typed_data::<T>()
            .map(|d| d.into_iter().map(f).collect())
            .map_err(NiftiProblem::Reader)
    }
    use NiftiType::*;
    match datatype {
        Uint8 => typed::<u8>(volume),
        Int8 => typed::<i8>(volume),
        Uint16 => typed::<u16>(volume),
        Int16 => typed::<i16>(volume),
        Uint32 => typed::<u32>(volume),
        Int32 => typed::<i32>(volume),
        Uint64 => wide::<u64>(volume, |v| v as f64),
        Int64 => wide::<i64>(volume, |v| v as f64),
        Float32 => typed::<f32>(volume),
        Float64 => typed::<f64>(volume),
        kind => Err(NiftiProblem::Undecodable { kind }),
    }
}

/// Spatial size of the one 3-D volume the header describes.
fn spatial_shape(h: &NiftiHeader) -> Result<[usize; 3], NiftiProblem> {
    let rank = h.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(NiftiProblem::Rank { dim0: h.dim[0] });
    }
    // NIfTI-1 dimensions are signed 16-bit values; nifti 0.18 reads them unsigned
    let signed: Vec<i16> = h.dim[1..=rank].iter().map(|&d| d as i16).collect();
    if let Some(&dim) = signed.iter().find(|&&d| d < 0) {
        return Err(NiftiProblem::NegativeDimension { dim, dims: signed });
    }
    let dims: Vec<usize> = h.dim[1..=rank].iter().map(|&d| d as usize).collect();
    if dims.contains(&0) {
        return Err(NiftiProblem::ZeroDimension { dims });
    }
    if rank > 3 && dims[3..].iter().any(|&d| d != 1) {
        return Err(NiftiProblem::NotOneVolume { rank, dims });
    }
    let mut shape = [1; 3];
    for (s, d) in shape.iter_mut().zip(dims.iter()) {
        *s = *d;
    }
    Ok(shape)
}

/// Voxel-to-LPS affine per the NIfTI rules (see module docs).
fn affine_lps(h: &NiftiHeader) -> Result<[[f64; 4]; 4], NiftiProblem> {
    let ras = if h.sform_code > 0 {
        sform(h)
    } else if h.qform_code > 0 {
        qform(h)?
    } else {
        base_affine(h)
    };
    let a = crate::volume::flip_xy(ras);
    let finite = a.iter().flatten().all(|v| v.is_finite());
    let probe = Geometry {
        shape_ijk: [1; 3],
        affine_lps: a,
    };
    if !finite || probe.voxel_volume_mm3() < 1e-12 {
        return Err(NiftiProblem::Affine);
    }
    Ok(a)
}

fn sform(h: &NiftiHeader) -> [[f64; 4]; 4] {
    let r = |row: [f32; 4]| row.map(f64::from);
    [r(h.srow_x), r(h.srow_y), r(h.srow_z), [0.0, 0.0, 0.0, 1.0]]
}

fn qform(h: &NiftiHeader) -> Result<[[f64; 4]; 4], NiftiProblem> {
    let zooms = [h.pixdim[1], h.pixdim[2], h.pixdim[3]].map(f64::from);
    if zooms.iter().any(|&z| z <= 0.0 || !z.is_finite()) {
        return Err(NiftiProblem::QformPixdim { pixdim: zooms });
    }
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let (b, c, d) = (
        f64::from(h.quatern_b),
        f64::from(h.quatern_c),
        f64::from(h.quatern_d),
    );
    let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
    let rot = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let scale = [zooms[0], zooms[1], zooms[2] * qfac];
    let t = [h.quatern_x, h.quatern_y, h.quatern_z].map(f64::from);
    let mut out = [[0.0; 4]; 4];
    for r in 0..3 {
        for col in 0..3 {
            out[r][col] = rot[r][col] * scale[col];
        }
        out[r][3] = t[r];
    }
    out[3][3] = 1.0;
    Ok(out)
}

/// nibabel's fallback when neither form is set: centred grid, x flipped.
fn base_affine(h: &NiftiHeader) -> [[f64; 4]; 4] {
    let shape = spatial_shape(h).unwrap_or([1; 3]);
    let mut zooms =
        [h.pixdim[1], h.pixdim[2], h.pixdim[3]].map(|z| if z > 0.0 { f64::from(z) } else { 1.0 });
    zooms[0] = -zooms[0];
    let mut out = [[0.0; 4]; 4];
    for a in 0..3 {
        out[a][a] = zooms[a];
        out[a][3] = -((shape[a] as f64 - 1.0) / 2.0) * zooms[a];
    }
    out[3][3] = 1.0;
    out
}

/// A voxel type maps are written in (float32 maps, int32 blob ids, uint8 labels, int16 images).
pub trait MapValue: DataElement + bytemuck::Pod {}
impl MapValue for f32 {}
impl MapValue for i32 {}
impl MapValue for u8 {}
impl MapValue for i16 {}

/// Writes a `[z, y, x]` map as NIfTI on `geometry`. With a `reference` header (the input was
/// NIfTI) its geometry fields (sform, qform, pixdim, units) are copied verbatim, so the output
/// carries the input's affine bit for bit; otherwise sform and qform are built from `geometry`.
pub fn write_map<T>(
    path: &Path,
    data: ArrayView3<T>,
    geometry: &Geometry,
    reference: Option<&NiftiHeader>,
    description: &str,
) -> std::io::Result<()>
where
    T: MapValue,
{
    let mut header = match reference {
        Some(h) => h.clone(),
        None => header_for(geometry),
    };
    header.cal_min = 0.0;
    header.cal_max = 0.0;
    header.intent_code = 0;
    let mut descrip: Vec<u8> = description.bytes().take(79).collect();
    descrip.resize(80, 0);
    header.descrip = descrip;
    // the writer expects [i, j, k] indexing; the reversed view of [k, j, i] is exactly that
    WriterOptions::new(path)
        .reference_header(&header)
        .write_nifti(&data.reversed_axes())
        .map_err(|e| match e {
            nifti::NiftiError::Io(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
}

/// A header whose sform (and qform, when the axes are orthogonal) encode `geometry`.
pub fn header_for(geometry: &Geometry) -> NiftiHeader {
    let ras = crate::volume::flip_xy(geometry.affine_lps);
    let mut h = NiftiHeader::default();
    let spacing = geometry.spacing_mm();
    h.pixdim = [
        1.0,
        spacing[0] as f32,
        spacing[1] as f32,
        spacing[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    h.xyzt_units = 2; // millimetres
    h.sform_code = 1;
    h.srow_x = ras[0].map(|v| v as f32);
    h.srow_y = ras[1].map(|v| v as f32);
    h.srow_z = ras[2].map(|v| v as f32);
    set_qform(&mut h, &ras, spacing);
    h
}

/// Quaternion form of a rotation-and-scaling affine (NIfTI-1 standard, method 2).
fn set_qform(h: &mut NiftiHeader, ras: &[[f64; 4]; 4], spacing: [f64; 3]) {
    let mut r = [[0.0; 3]; 3];
    for (row, out) in r.iter_mut().enumerate() {
        for (c, v) in out.iter_mut().enumerate() {
            *v = ras[row][c] / spacing[c];
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    if qfac < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d) = if trace > -0.99 {
        let a = 0.5 * (1.0 + trace).sqrt();
        (
            a,
            0.25 * (r[2][1] - r[1][2]) / a,
            0.25 * (r[0][2] - r[2][0]) / a,
            0.25 * (r[1][0] - r[0][1]) / a,
        )
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let b = 0.5 * (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt();
        (
            0.25 * (r[2][1] - r[1][2]) / b,
            b,
            0.25 * (r[0][1] + r[1][0]) / b,
            0.25 * (r[0][2] + r[2][0]) / b,
        )
    } else if r[1][1] > r[2][2] {
        let c = 0.5 * (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt();
        (
            0.25 * (r[0][2] - r[2][0]) / c,
            0.25 * (r[0][1] + r[1][0]) / c,
            c,
            0.25 * (r[1][2] + r[2][1]) / c,
        )
    } else {
        let d = 0.5 * (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt();
        (
            0.25 * (r[1][0] - r[0][1]) / d,
            0.25 * (r[0][2] + r[2][0]) / d,
            0.25 * (r[1][2] + r[2][1]) / d,
            d,
        )
    };
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    h.qform_code = 1;
    h.pixdim[0] = qfac as f32;
    h.quatern_b = (sign * b) as f32;
    h.quatern_c = (sign * c) as f32;
    h.quatern_d = (sign * d) as f32;
    h.quatern_x = ras[0][3] as f32;
    h.quatern_y = ras[1][3] as f32;
    h.quatern_z = ras[2][3] as f32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_for_round_trips_through_both_forms() {
        // oblique, flipped, anisotropic
        let (c, s) = (0.8f64, 0.6f64);
        let g = Geometry {
            shape_ijk: [5, 6, 7],
            affine_lps: [
                [-c * 0.9, s * 1.1, 0.0, 10.0],
                [s * 0.9, c * 1.1, 0.0, -20.0],
                [0.0, 0.0, -2.5, 30.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let mut h = header_for(&g);
        h.dim = [3, 5, 6, 7, 1, 1, 1, 1];
        let from_sform = affine_lps(&h).unwrap();
        h.sform_code = 0;
        let from_qform = affine_lps(&h).unwrap();
        for r in 0..3 {
            for col in 0..4 {
                assert!((from_sform[r][col] - g.affine_lps[r][col]).abs() < 1e-5);
                assert!(
                    (from_qform[r][col] - g.affine_lps[r][col]).abs() < 1e-5,
                    "{from_qform:?}"
                );
            }
        }
    }

    /// A small int16 volume written by this module's writer, as `.nii` bytes.
    fn sample_nii() -> Vec<u8> {
        let g = Geometry {
            shape_ijk: [4, 3, 2],
            affine_lps: [
                [-1.0, 0.0, 0.0, 0.0],
                [0.0, -1.0, 0.0, 0.0],
                [0.0, 0.0, 2.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let data = Array3::from_shape_fn((2, 3, 4), |(k, j, i)| (100 * k + 10 * j + i) as i16);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nii");
        write_map(&path, data.view(), &g, None, "test").unwrap();
        std::fs::read(path).unwrap()
    }

    fn read(bytes: &[u8]) -> Result<NiftiImage, InputError> {
        read_volume_from_bytes(Path::new("x.nii"), bytes, 1 << 20)
    }

    fn refused(bytes: &[u8], words: &str) {
        let e = read(bytes).unwrap_err().to_string();
        assert!(e.contains(words), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bytes_plain_and_gzipped_read_the_same() {
        let nii = sample_nii();
        let img = read(&nii).unwrap();
        assert_eq!(img.data.shape(), [2, 3, 4]);
        assert_eq!(img.data[[1, 2, 3]], 123.0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &nii).unwrap();
        assert_eq!(read(&gz.finish().unwrap()).unwrap().data, img.data);
    }

    #[test]
    fn scaling_follows_nibabel() {
        let mut nii = sample_nii();
        let set =
            |b: &mut Vec<u8>, at: usize, v: f32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        set(&mut nii, 112, f32::NAN); // no scaling, as nibabel reads it
        assert_eq!(read(&nii).unwrap().data[[1, 2, 3]], 123.0);
        set(&mut nii, 112, 2.0);
        set(&mut nii, 116, 1.0);
        assert_eq!(read(&nii).unwrap().data[[1, 2, 3]], 247.0);
        set(&mut nii, 116, f32::INFINITY);
        refused(&nii, "scl_inter");
    }

    #[test]
    fn extensions_must_fill_the_gap_to_vox_offset() {
        let nii = sample_nii();
        let with_extension = |esize: i32, vox_offset: f32| {
            let mut b = nii.clone();
            b[348] = 1;
            b[108..112].copy_from_slice(&vox_offset.to_le_bytes());
            let mut ext = esize.to_le_bytes().to_vec();
            ext.extend(6i32.to_le_bytes()); // ecode 6: a comment
            ext.resize(32, b' ');
            b.splice(352..352, ext);
            b
        };
        let good = read(&with_extension(32, 384.0)).unwrap();
        assert_eq!(good.data[[1, 2, 3]], 123.0);
        refused(
            &with_extension(1 << 30, 384.0),
            "extension at byte 352 has size",
        );
        refused(
            &with_extension(4, 384.0),
            "extension at byte 352 has size 4",
        );
        refused(&with_extension(16, 384.0), "extension at byte 368");
    }

    #[test]
    fn a_refusal_carries_its_problem_typed() {
        let mut nii = sample_nii();
        nii[72..74].copy_from_slice(&8i16.to_le_bytes());
        let e = read(&nii).unwrap_err();
        assert!(
            matches!(
                &e,
                InputError::Nifti { problem: NiftiProblem::Bitpix { bitpix: 8, code: 4, bits: 16, .. }, path }
                    if path == Path::new("x.nii")
            ),
            "{e:?}"
        );
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("bitpix 8 does not match datatype 4 (Int16, 16 bits)")
        );
    }

    #[test]
    fn header_fields_nifti_0_18_trusts_are_checked() {
        let nii = sample_nii();
        let edit = |at: usize, bytes: &[u8]| {
            let mut b = nii.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        refused(
            &edit(72, &8i16.to_le_bytes()),
            "bitpix 8 does not match datatype 4",
        );
        refused(&edit(70, &32i16.to_le_bytes()), "not supported");
        refused(&edit(42, &(-3i16).to_le_bytes()), "negative dimension -3");
        refused(&edit(108, &353.5f32.to_le_bytes()), "vox_offset 353.5");
        refused(
            &edit(40, &[4, 0, 4, 0, 3, 0, 2, 0, 2, 0]),
            "expected one 3-D volume",
        );
        refused(&nii[..200], "truncated");
        refused(&nii[..nii.len() - 1], "truncated");
        refused(&[], "truncated");
    }
}
