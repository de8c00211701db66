//! Pixels: classic single-frame images only (MR Image Storage and other single-frame cross-
//! sectional images; `series` refuses Enhanced/Legacy-converted multi-frame objects). Pixel data
//! is decoded by dicom-pixeldata (`decode_pixel_data`): native (implicit/explicit VR little
//! endian, deflated) and the encapsulated syntaxes this build decodes (RLE Lossless, JPEG
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

use dicom::dictionary_std::tags;
use dicom::pixeldata::{PixelDecoder, PixelRepresentation};
use ndarray::Array3;
use rayon::prelude::*;

use super::header::SliceHeader;
use super::open::{file_error, guarded, open, Extent};
use super::problem::{FileProblem, ReadError, SampleProblem, SeriesProblem};
use super::series::Series;
use crate::io::InputError;

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
        .ok_or_else(|| series.problem(SeriesProblem::NotContiguous))?;
    // every slice decoded, then the first failure in slice order reported: the same error
    // whichever thread fails first
    let decoded: Vec<Result<(), InputError>> = out
        .par_chunks_exact_mut(nx * ny)
        .zip(series.slices.par_iter())
        .map(|(plane, slice)| read_slice(slice, plane))
        .collect();
    decoded.into_iter().collect::<Result<(), _>>()?;
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
    let obj = open(path, Extent::Whole).map_err(|e| file_error(path, FileProblem::Read(e)))?;
    if obj.get(tags::PIXEL_DATA).is_none() {
        return Err(file_error(path, FileProblem::NoPixelData));
    }
    let decoded = guarded(|| obj.decode_pixel_data())
        .and_then(|r| r.map_err(ReadError::Decode))
        .map_err(|e| file_error(path, FileProblem::Decode(e)))?;
    if decoded.rows() != slice.rows
        || decoded.columns() != slice.columns
        || decoded.number_of_frames() != 1
        || decoded.samples_per_pixel() != 1
    {
        return Err(file_error(
            path,
            FileProblem::DecodedShape {
                frames: decoded.number_of_frames(),
                rows: decoded.rows(),
                columns: decoded.columns(),
                samples: decoded.samples_per_pixel(),
                expected_rows: slice.rows,
                expected_columns: slice.columns,
            },
        ));
    }
    let layout = SampleLayout {
        bits_allocated: decoded.bits_allocated(),
        bits_stored: decoded.bits_stored(),
        high_bit: decoded.high_bit(),
        signed: decoded.pixel_representation() == PixelRepresentation::Signed,
    };
    let (slope, intercept) = slice
        .rescale
        .clone()
        .map_err(|p| file_error(path, p.into()))?;
    samples_to_f32(decoded.data(), layout, slope, intercept, out)
        .map_err(|p| file_error(path, p.into()))
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
) -> Result<(), SampleProblem> {
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
        bits_allocated => return Err(SampleProblem::BitsAllocated { bits_allocated }),
    };
    if bits_stored == 0
        || bits_stored > bits_allocated
        || high_bit >= bits_allocated
        || high_bit + 1 < bits_stored
    {
        return Err(SampleProblem::Bits {
            bits_allocated,
            bits_stored,
            high_bit,
        });
    }
    let needed = out.len() * width;
    if bytes.len() < needed {
        return Err(SampleProblem::Short {
            found: bytes.len(),
            expected: needed,
        });
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
