//! NIfTI-1 adapter: reads one channel into a `[z, y, x]` f32 array with its `Geometry`, and
//! writes result maps on exactly the grid of a reference header.
//!
//! The affine follows the NIfTI standard as nibabel applies it: sform when `sform_code > 0`,
//! else qform when `qform_code > 0`, else nibabel's base affine (centred, x flipped). NIfTI's RAS
//! is converted to the library's LPS here and nowhere else. Values are scaled by
//! `scl_slope`/`scl_inter` when the slope is non-zero. Output files copy the reference header
//! (sform, qform, pixdim, units) so they carry the input's affine bit for bit.

use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, Ix3};
use nifti::writer::WriterOptions;
use nifti::{DataElement, IntoNdArray, NiftiHeader, NiftiObject, ReaderOptions};

use crate::io::InputError;
use crate::volume::Geometry;

/// One NIfTI volume: voxels `[k, j, i]` and the header it came with.
#[derive(Debug, Clone)]
pub struct NiftiImage {
    pub path: PathBuf,
    pub data: Array3<f32>,
    pub geometry: Geometry,
    pub header: NiftiHeader,
}

fn format_error(path: &Path, reason: impl Into<String>) -> InputError {
    InputError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads only the header and checks that the file describes one 3-D volume of at most
/// `max_voxels` voxels, before any voxel is allocated.
pub fn read_header(path: &Path, max_voxels: usize) -> Result<(NiftiHeader, Geometry), InputError> {
    if !path.is_file() {
        return Err(InputError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let header = NiftiHeader::from_file(path).map_err(|e| format_error(path, describe(&e)))?;
    let shape = spatial_shape(&header).map_err(|r| format_error(path, r))?;
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
    let affine_lps = affine_lps(&header).map_err(|r| format_error(path, r))?;
    Ok((
        header,
        Geometry {
            shape_ijk: shape,
            affine_lps,
        },
    ))
}

/// Reads a 3-D volume (a 4-D file with one volume is accepted) as f32.
pub fn read_volume(path: &Path, max_voxels: usize) -> Result<NiftiImage, InputError> {
    let (_, geometry) = read_header(path, max_voxels)?;
    let object = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| format_error(path, describe(&e)))?;
    let header = object.header().clone();
    let array = object
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| format_error(path, describe(&e)))?;
    let mut array = array;
    while array.ndim() > 3 && array.shape()[array.ndim() - 1] == 1 {
        let last = ndarray::Axis(array.ndim() - 1);
        array = array.index_axis_move(last, 0);
    }
    while array.ndim() < 3 {
        array.insert_axis_inplace(ndarray::Axis(array.ndim()));
    }
    let data = array
        .into_dimensionality::<Ix3>()
        .map_err(|_| format_error(path, "not a 3-D volume"))?;
    if data.shape() != geometry.shape_ijk {
        return Err(format_error(
            path,
            "voxel data does not match the header dimensions",
        ));
    }
    // NIfTI arrays index [i, j, k]; reversing the axes gives the library's [k, j, i]
    let data = data.reversed_axes().as_standard_layout().into_owned();
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

fn describe(e: &nifti::NiftiError) -> String {
    match e {
        nifti::NiftiError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "file is truncated".to_string()
        }
        nifti::NiftiError::Io(io) => format!("cannot read: {io}"),
        nifti::NiftiError::InvalidFormat => "not a NIfTI-1 file (bad magic)".to_string(),
        other => other.to_string().to_lowercase(),
    }
}

/// Spatial size of the one 3-D volume the header describes.
fn spatial_shape(h: &NiftiHeader) -> Result<[usize; 3], String> {
    let rank = h.dim[0] as usize;
    if !(1..=7).contains(&rank) {
        return Err(format!("header dim[0] = {} is not a valid rank", h.dim[0]));
    }
    let dims: Vec<usize> = h.dim[1..=rank].iter().map(|&d| d as usize).collect();
    if dims.contains(&0) {
        return Err(format!("header has a zero dimension: {dims:?}"));
    }
    if rank > 3 && dims[3..].iter().any(|&d| d != 1) {
        return Err(format!(
            "expected one 3-D volume, got a {rank}-D image of shape {dims:?}"
        ));
    }
    let mut shape = [1; 3];
    for (s, d) in shape.iter_mut().zip(dims.iter()) {
        *s = *d;
    }
    Ok(shape)
}

/// Voxel-to-LPS affine per the NIfTI rules (see module docs).
fn affine_lps(h: &NiftiHeader) -> Result<[[f64; 4]; 4], String> {
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
        return Err("the affine (sform/qform) is singular or not finite".to_string());
    }
    Ok(a)
}

fn sform(h: &NiftiHeader) -> [[f64; 4]; 4] {
    let r = |row: [f32; 4]| row.map(f64::from);
    [r(h.srow_x), r(h.srow_y), r(h.srow_z), [0.0, 0.0, 0.0, 1.0]]
}

fn qform(h: &NiftiHeader) -> Result<[[f64; 4]; 4], String> {
    let zooms = [h.pixdim[1], h.pixdim[2], h.pixdim[3]].map(f64::from);
    if zooms.iter().any(|&z| z <= 0.0 || !z.is_finite()) {
        return Err(format!("qform needs positive pixdim[1..3], got {zooms:?}"));
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
    T: DataElement + bytemuck::Pod,
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
        .map_err(|e| std::io::Error::other(format!("cannot write {}: {e}", path.display())))
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
}
