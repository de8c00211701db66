//! The input channels as DICOM MR series (MR Image Storage, one single-frame instance per
//! k-slice, on exactly the SEG's planes, in the SEG's study and frame of reference), so that a
//! viewer that needs the SEG's source images (OHIF) can show a NIfTI case. Used for NIfTI input
//! on request; DICOM input already has its source series.
//!
//! Pixels are signed 16-bit with RescaleSlope and RescaleIntercept chosen per series: integer
//! data that fits 16 bits is stored exactly (slope 1); anything else is spread over the 16-bit
//! range, so the stored value times the slope plus the intercept is within half a slope of the
//! NIfTI value (the report records the largest error).

use std::path::Path;

use dicom::core::{DataElement, PrimitiveValue, VR};
use dicom::dictionary_std::{tags, uids};
use ndarray::{ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use super::element::{int_string, item, text, texts, us, write_file, Elem};
use super::request::SegError;
use super::segmentation::{equipment_elements, Common, SourceSeries};
use super::values::{format_ds, long_string, new_uid};

/// How stored int16 values map to the NIfTI values: `value = stored x slope + intercept`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescale {
    pub slope: f64,
    pub intercept: f64,
    slope_ds: String,
    intercept_ds: String,
}

impl Rescale {
    /// The mapping for values in `[min, max]`, exact when every value is an integer and the
    /// range spans at most 65536 values. Slope and intercept are the values their DS strings
    /// give back, so readers reconstruct exactly what we computed.
    pub fn choose(min: f64, max: f64, integral: bool) -> Rescale {
        let (slope, intercept) = if integral && max - min <= 65535.0 {
            let fits = min >= -32768.0 && max <= 32767.0;
            (1.0, if fits { 0.0 } else { min + 32768.0 })
        } else if max > min {
            let slope = (max - min) / 65534.0;
            (slope, min + 32767.0 * slope)
        } else {
            (1.0, min)
        };
        let (slope_ds, intercept_ds) = (format_ds(slope), format_ds(intercept));
        Rescale {
            slope: slope_ds.parse().unwrap_or(slope),
            intercept: intercept_ds.parse().unwrap_or(intercept),
            slope_ds,
            intercept_ds,
        }
    }

    /// The stored value of `v`.
    pub fn store(&self, v: f32) -> i16 {
        ((f64::from(v) - self.intercept) / self.slope)
            .round()
            .clamp(-32768.0, 32767.0) as i16
    }

    /// The value a reader reconstructs from `stored`.
    pub fn value(&self, stored: i16) -> f64 {
        f64::from(stored) * self.slope + self.intercept
    }
}

/// What the report says about one written series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceDicomInfo {
    pub channel: String,
    /// Folder relative to the output folder.
    pub folder: String,
    pub series_instance_uid: String,
    pub instances: usize,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// Largest |reconstructed - NIfTI value| over the volume (0 when stored exactly).
    pub max_abs_error: f64,
}

/// One channel to write.
#[derive(Debug, Clone, Copy)]
pub struct Channel<'a> {
    pub name: &'a str,
    pub series_number: i64,
    /// `[k, j, i]` values on the input grid.
    pub volume: ArrayView3<'a, f32>,
}

/// Writes one channel as an MR series into `out_dir/folder`, one file per k-slice.
pub fn write_series(
    out_dir: &Path,
    folder: &str,
    channel: Channel,
    common: Common,
) -> Result<(SourceSeries, SourceDicomInfo), SegError> {
    let dir = out_dir.join(folder);
    std::fs::create_dir_all(&dir).map_err(|e| SegError::new(&dir, e.to_string()))?;
    let v = channel.volume;
    let (min, max) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(f64::from(x)), hi.max(f64::from(x)))
        });
    let integral = v.iter().all(|x| x.fract() == 0.0);
    let rescale = Rescale::choose(min, max, integral);
    let series_uid = new_uid();
    let mut instances = Vec::with_capacity(v.len_of(Axis(0)));
    let mut max_abs_error: f64 = 0.0;
    for k in 0..v.len_of(Axis(0)) {
        let slice = v.index_axis(Axis(0), k);
        let stored: Vec<i16> = slice.iter().map(|&x| rescale.store(x)).collect();
        for (&s, &x) in stored.iter().zip(slice.iter()) {
            max_abs_error = max_abs_error.max((rescale.value(s) - f64::from(x)).abs());
        }
        let sop_uid = new_uid();
        let mut elements = slice_elements(common, channel, &series_uid, &sop_uid, k);
        elements.extend(pixel_elements(common, &rescale, (min, max), stored));
        let path = dir.join(format!("{:04}.dcm", k + 1));
        write_file(item(elements), &path)?;
        instances.push((uids::MR_IMAGE_STORAGE.to_string(), sop_uid));
    }
    let info = SourceDicomInfo {
        channel: channel.name.to_string(),
        folder: folder.to_string(),
        series_instance_uid: series_uid.clone(),
        instances: instances.len(),
        rescale_slope: rescale.slope,
        rescale_intercept: rescale.intercept,
        max_abs_error,
    };
    let source = SourceSeries {
        channel: channel.name.to_string(),
        series_instance_uid: series_uid,
        instances,
    };
    Ok((source, info))
}

/// Everything but the pixels of slice `k`: SOP Common, Patient, Study, Series, Frame of
/// Reference, Equipment, General Image, Image Plane and MR Image.
fn slice_elements(
    common: Common,
    ch: Channel,
    series_uid: &str,
    sop_uid: &str,
    k: usize,
) -> Vec<Elem> {
    let now = common.now;
    let planes = common.planes;
    let mut e = vec![
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        texts(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY", "OTHER"]),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &now.date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &now.time),
        text(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE),
        text(tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        text(tags::SERIES_DATE, VR::DA, &now.date),
        text(tags::SERIES_TIME, VR::TM, &now.time),
        text(tags::CONTENT_DATE, VR::DA, &now.date),
        text(tags::CONTENT_TIME, VR::TM, &now.time),
        text(tags::MODALITY, VR::CS, "MR"),
        // General Series: the brain is not a paired structure, so Laterality (2C) is absent;
        // PatientPosition (2C) is unknown for a NIfTI source
        text(tags::BODY_PART_EXAMINED, VR::CS, "BRAIN"),
        text(tags::PATIENT_POSITION, VR::CS, ""),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            &long_string(&format!("{} (from NIfTI, stochseg)", ch.name)),
        ),
        text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        int_string(tags::SERIES_NUMBER, ch.series_number),
        int_string(tags::INSTANCE_NUMBER, k as i64 + 1),
        texts(tags::IMAGE_POSITION_PATIENT, VR::DS, &planes.positions[k]),
        texts(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &planes.orientation),
        texts(tags::PIXEL_SPACING, VR::DS, &planes.pixel_spacing),
        text(
            tags::SLICE_THICKNESS,
            VR::DS,
            &planes.spacing_between_slices,
        ),
        text(
            tags::SPACING_BETWEEN_SLICES,
            VR::DS,
            &planes.spacing_between_slices,
        ),
        text(tags::SCANNING_SEQUENCE, VR::CS, "RM"),
        text(tags::SEQUENCE_VARIANT, VR::CS, "NONE"),
        text(tags::SCAN_OPTIONS, VR::CS, ""),
        text(tags::MR_ACQUISITION_TYPE, VR::CS, "3D"),
        text(tags::REPETITION_TIME, VR::DS, ""),
        text(tags::ECHO_TIME, VR::DS, ""),
        text(tags::ECHO_TRAIN_LENGTH, VR::IS, ""),
    ];
    e.extend(equipment_elements(common.algorithm));
    e.extend(common.study.elements());
    e
}

/// Image Pixel (signed 16 bit), the rescale, a window over the volume's range, and the pixels.
fn pixel_elements(
    common: Common,
    rescale: &Rescale,
    range: (f64, f64),
    stored: Vec<i16>,
) -> Vec<Elem> {
    let planes = common.planes;
    let (min, max) = range;
    vec![
        us(tags::SAMPLES_PER_PIXEL, &[1]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, &[planes.rows as u16]),
        us(tags::COLUMNS, &[planes.columns as u16]),
        us(tags::BITS_ALLOCATED, &[16]),
        us(tags::BITS_STORED, &[16]),
        us(tags::HIGH_BIT, &[15]),
        us(tags::PIXEL_REPRESENTATION, &[1]),
        text(tags::RESCALE_INTERCEPT, VR::DS, &rescale.intercept_ds),
        text(tags::RESCALE_SLOPE, VR::DS, &rescale.slope_ds),
        text(tags::WINDOW_CENTER, VR::DS, &format_ds((min + max) / 2.0)),
        text(tags::WINDOW_WIDTH, VR::DS, &format_ds((max - min).max(1.0))),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::I16(stored.into_iter().collect()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_stored_exactly() {
        let r = Rescale::choose(0.0, 4000.0, true);
        assert_eq!((r.slope, r.intercept), (1.0, 0.0));
        assert_eq!(r.store(4000.0), 4000);
        let u = Rescale::choose(0.0, 65535.0, true);
        assert_eq!(u.intercept, 32768.0);
        for v in [0.0f32, 1.0, 32768.0, 65535.0] {
            assert_eq!(u.value(u.store(v)), f64::from(v));
        }
    }

    #[test]
    fn floats_are_quantized_within_half_a_slope() {
        let r = Rescale::choose(-1.5, 2.25, false);
        assert!(r.slope_ds.len() <= 16 && r.intercept_ds.len() <= 16);
        for v in [-1.5f32, -0.3, 0.0, 1.0 / 3.0, 2.25] {
            let s = r.store(v);
            assert!(
                (r.value(s) - f64::from(v)).abs() <= r.slope / 2.0 + 1e-12,
                "{v}"
            );
        }
        let c = Rescale::choose(7.5, 7.5, false);
        assert_eq!(c.value(c.store(7.5)), 7.5);
    }
}
