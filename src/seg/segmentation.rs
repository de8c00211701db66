//! The Segmentation IOD (PS3.3 A.51): one instance of Segmentation Storage, BINARY (1 bit,
//! bit-packed) or FRACTIONAL PROBABILITY (8 bit, MaximumFractionalValue 255).
//!
//! Frames are (segment, k-slice) pairs, segment-major, then in k order; frames with no
//! segmented pixel are left out when asked, but a segment always keeps at least one frame
//! (slice 0 when it is empty everywhere), so a case without blobs still gets a valid SEG.
//! Shared functional groups: Pixel Measures and Plane Orientation. Per frame: Frame Content
//! (DimensionIndexValues = [segment number, k + 1]), Plane Position, Segment Identification,
//! and, when the SEG has a source series, Derivation Image (that series' slice k). The source
//! series is also the one item of the Common Instance Reference's ReferencedSeriesSequence
//! (`reference` says which series it is and why only one). The dimension index is
//! [ReferencedSegmentNumber, ImagePositionPatient], as highdicom and dcmqi write it.

use dicom::core::VR;
use dicom::dictionary_std::{tags, uids};
use ndarray::{ArrayView3, Axis};

use super::element::{
    at, bytes, code_item, code_seq, int_string, item, seq, text, texts, ul, us, Code, Elem, Obj,
};
use super::pack::BitPacker;
use super::plane::Planes;
use super::segment::{segment_item, Algorithm, Segment};
use super::study::Study;
use super::values::{is_code_string, new_uid, Timestamp};

pub const DERIVATION_SEGMENTATION: Code = Code {
    value: "113076",
    scheme: "DCM",
    meaning: "Segmentation",
};
pub const PURPOSE_SOURCE_IMAGE: Code = Code {
    value: "121322",
    scheme: "DCM",
    meaning: "Source image for image processing operation",
};

/// Value of the highest fractional value (probability 1).
pub const MAX_FRACTIONAL_VALUE: u8 = 255;

/// The source series a SEG references (the series it is drawn on): one instance per k-slice
/// of the grid.
#[derive(Debug, Clone)]
pub struct SourceSeries {
    pub channel: String,
    pub series_instance_uid: String,
    /// `(SOPClassUID, SOPInstanceUID)` of each k-slice.
    pub instances: Vec<(String, String)>,
}

/// What every object of a run shares.
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    pub study: &'a Study,
    pub planes: &'a Planes,
    /// The referenced source series (same study); none for a stand-alone SEG.
    pub source: Option<&'a SourceSeries>,
    pub now: &'a Timestamp,
    pub algorithm: &'a Algorithm,
}

/// The pixels of a SEG, on the input grid (`[k, j, i]`).
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// Label maps (blob ids, BraTS labels, levels reached); each segment's kind selects its
    /// voxels in its map (`Segment::map`).
    Binary(&'a [ArrayView3<'a, u32>]),
    /// Probabilities in [0, 1], one map per segment (`Segment::map`), stored as round(p x 255).
    Fractional(&'a [ArrayView3<'a, f32>]),
}

impl Pixels<'_> {
    /// Shape of the maps, when they all have the same one.
    fn shape(&self) -> Option<(usize, usize, usize)> {
        let shapes: Vec<_> = match self {
            Pixels::Binary(maps) => maps.iter().map(|m| m.dim()).collect(),
            Pixels::Fractional(maps) => maps.iter().map(|m| m.dim()).collect(),
        };
        let first = *shapes.first()?;
        shapes.iter().all(|&s| s == first).then_some(first)
    }
}

/// One SEG instance to build.
#[derive(Debug, Clone)]
pub struct SegSpec<'a> {
    pub content_label: &'a str,
    pub content_description: &'a str,
    pub series_description: &'a str,
    pub series_number: i64,
    pub segments: &'a [Segment],
    pub omit_empty_frames: bool,
}

/// A built SEG data set and what the report says about it.
#[derive(Debug)]
pub struct Built {
    pub(crate) obj: Obj,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frames: usize,
    /// Voxels in each segment (nonzero voxels for FRACTIONAL), in segment order.
    pub voxels: Vec<usize>,
}

/// A frame: segment (index into the segment list) and k-slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameRef {
    segment: usize,
    k: usize,
}

/// round(p x 255), p clamped to [0, 1], computed in f64 as numpy does on float32 input.
pub fn quantize_probability(p: f32) -> u8 {
    (f64::from(p).clamp(0.0, 1.0) * f64::from(MAX_FRACTIONAL_VALUE)).round() as u8
}

/// Number of voxels of each segment in each k-slice: `counts[segment][k]`.
fn slice_counts(pixels: Pixels, segments: &[Segment]) -> Vec<Vec<usize>> {
    match pixels {
        Pixels::Binary(maps) => {
            let per_map: Vec<Vec<Vec<usize>>> = maps
                .iter()
                .map(|m| m.outer_iter().map(label_counts).collect())
                .collect();
            segments
                .iter()
                .map(|seg| {
                    per_map[seg.map]
                        .iter()
                        .map(|per_label| {
                            (0..per_label.len())
                                .filter(|&l| seg.kind.contains(l as u32))
                                .map(|l| per_label[l])
                                .sum()
                        })
                        .collect()
                })
                .collect()
        }
        Pixels::Fractional(maps) => segments
            .iter()
            .map(|seg| {
                maps[seg.map]
                    .outer_iter()
                    .map(|slice| {
                        slice
                            .iter()
                            .filter(|&&v| quantize_probability(v) > 0)
                            .count()
                    })
                    .collect()
            })
            .collect(),
    }
}

/// Voxels of each label value in one slice (index = value).
fn label_counts(slice: ndarray::ArrayView2<u32>) -> Vec<usize> {
    let max = slice.iter().copied().max().unwrap_or(0) as usize;
    let mut per_label = vec![0usize; max + 1];
    for &l in slice.iter() {
        per_label[l as usize] += 1;
    }
    per_label
}

/// Frames in order: segment-major, then k; empty ones left out when asked, never all of a
/// segment's.
fn select_frames(counts: &[Vec<usize>], omit_empty: bool) -> Vec<FrameRef> {
    let mut frames = Vec::new();
    for (segment, per_k) in counts.iter().enumerate() {
        let before = frames.len();
        frames.extend(
            (0..per_k.len())
                .filter(|&k| !omit_empty || per_k[k] > 0)
                .map(|k| FrameRef { segment, k }),
        );
        if frames.len() == before && !per_k.is_empty() {
            frames.push(FrameRef { segment, k: 0 });
        }
    }
    frames
}

fn pixel_data(pixels: Pixels, segments: &[Segment], frames: &[FrameRef]) -> Vec<u8> {
    match pixels {
        Pixels::Binary(maps) => {
            let frame_len = maps[0].len_of(Axis(1)) * maps[0].len_of(Axis(2));
            let mut packer = BitPacker::with_capacity(frame_len * frames.len());
            for f in frames {
                let segment = &segments[f.segment];
                packer.extend(
                    maps[segment.map]
                        .index_axis(Axis(0), f.k)
                        .iter()
                        .map(|&l| segment.kind.contains(l)),
                );
            }
            packer.finish()
        }
        Pixels::Fractional(maps) => {
            let frame_len = maps[0].len_of(Axis(1)) * maps[0].len_of(Axis(2));
            let mut out = Vec::with_capacity(frame_len * frames.len() + 1);
            for f in frames {
                out.extend(
                    maps[segments[f.segment].map]
                        .index_axis(Axis(0), f.k)
                        .iter()
                        .map(|&v| quantize_probability(v)),
                );
            }
            if !out.len().is_multiple_of(2) {
                out.push(0);
            }
            out
        }
    }
}

/// Builds the SEG data set.
pub fn build(common: Common, spec: &SegSpec, pixels: Pixels) -> Result<Built, String> {
    if !is_code_string(spec.content_label) {
        return Err(format!(
            "ContentLabel '{}' is not a valid code string",
            spec.content_label
        ));
    }
    if spec.segments.is_empty() || spec.segments.len() > usize::from(u16::MAX) {
        return Err(format!(
            "{} segments (a SEG holds 1 to 65535)",
            spec.segments.len()
        ));
    }
    let shape = pixels
        .shape()
        .ok_or_else(|| "the maps of a SEG must all have one shape".to_string())?;
    let maps = match pixels {
        Pixels::Binary(m) => m.len(),
        Pixels::Fractional(m) => m.len(),
    };
    if let Some(s) = spec.segments.iter().find(|s| s.map >= maps) {
        return Err(format!(
            "segment {} names map {} of {maps}",
            s.number, s.map
        ));
    }
    let planes = common.planes;
    if shape != (planes.positions.len(), planes.rows, planes.columns) {
        return Err(format!(
            "pixel array {shape:?} does not match the planes ({}, {}, {})",
            planes.positions.len(),
            planes.rows,
            planes.columns
        ));
    }
    let counts = slice_counts(pixels, spec.segments);
    let frames = select_frames(&counts, spec.omit_empty_frames);
    let sop_instance_uid = new_uid();
    let series_instance_uid = new_uid();
    let mut elements = header_elements(common, spec, &sop_instance_uid, &series_instance_uid);
    elements.extend(image_elements(pixels, planes, frames.len()));
    elements.extend(segmentation_elements(common, spec, pixels));
    elements.extend(dimension_elements());
    elements.push(shared_groups(planes));
    elements.push(per_frame_groups(common, spec.segments, &frames));
    if let Some(source) = common.source {
        elements.push(referenced_series(source));
    }
    elements.push(bytes(
        tags::PIXEL_DATA,
        VR::OB,
        pixel_data(pixels, spec.segments, &frames),
    ));
    Ok(Built {
        obj: item(elements),
        sop_instance_uid,
        series_instance_uid,
        frames: frames.len(),
        voxels: counts.iter().map(|c| c.iter().sum()).collect(),
    })
}

/// SOP Common, General Series, Segmentation Series, General and Enhanced General Equipment,
/// General Image, Patient, General Study and Frame of Reference.
fn header_elements(common: Common, spec: &SegSpec, sop_uid: &str, series_uid: &str) -> Vec<Elem> {
    let now = common.now;
    let mut e = vec![
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        texts(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &now.date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &now.time),
        text(tags::SOP_CLASS_UID, VR::UI, uids::SEGMENTATION_STORAGE),
        text(tags::SOP_INSTANCE_UID, VR::UI, sop_uid),
        text(tags::SERIES_DATE, VR::DA, &now.date),
        text(tags::SERIES_TIME, VR::TM, &now.time),
        text(tags::CONTENT_DATE, VR::DA, &now.date),
        text(tags::CONTENT_TIME, VR::TM, &now.time),
        text(tags::MODALITY, VR::CS, "SEG"),
        text(tags::SERIES_DESCRIPTION, VR::LO, spec.series_description),
        text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        int_string(tags::SERIES_NUMBER, spec.series_number),
        int_string(tags::INSTANCE_NUMBER, 1),
    ];
    e.extend(equipment_elements(common.algorithm));
    e.extend(common.study.elements());
    e
}

/// General Equipment and Enhanced General Equipment (all four type 1 there).
pub(crate) fn equipment_elements(algorithm: &Algorithm) -> Vec<Elem> {
    vec![
        text(tags::MANUFACTURER, VR::LO, &algorithm.name),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &algorithm.name),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        text(tags::SOFTWARE_VERSIONS, VR::LO, &algorithm.version),
    ]
}

/// Image Pixel and the pixel-related attributes of the Segmentation Image module.
fn image_elements(pixels: Pixels, planes: &Planes, frames: usize) -> Vec<Elem> {
    let (bits, segmentation_type) = match pixels {
        Pixels::Binary(_) => (1u16, "BINARY"),
        Pixels::Fractional(_) => (8u16, "FRACTIONAL"),
    };
    let mut e = vec![
        us(tags::SAMPLES_PER_PIXEL, &[1]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        int_string(tags::NUMBER_OF_FRAMES, frames as i64),
        us(tags::ROWS, &[planes.rows as u16]),
        us(tags::COLUMNS, &[planes.columns as u16]),
        us(tags::BITS_ALLOCATED, &[bits]),
        us(tags::BITS_STORED, &[bits]),
        us(tags::HIGH_BIT, &[bits - 1]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::SEGMENTATION_TYPE, VR::CS, segmentation_type),
    ];
    if let Pixels::Fractional(_) = pixels {
        e.push(text(
            tags::SEGMENTATION_FRACTIONAL_TYPE,
            VR::CS,
            "PROBABILITY",
        ));
        e.push(us(
            tags::MAXIMUM_FRACTIONAL_VALUE,
            &[u16::from(MAX_FRACTIONAL_VALUE)],
        ));
    }
    e
}

/// Segment Sequence, content identification and overlap.
fn segmentation_elements(common: Common, spec: &SegSpec, pixels: Pixels) -> Vec<Elem> {
    let overlap = match pixels {
        _ if spec.segments.len() == 1 => "NO",
        Pixels::Binary(_) => "YES",
        Pixels::Fractional(_) => "UNDEFINED",
    };
    vec![
        text(tags::SEGMENTS_OVERLAP, VR::CS, overlap),
        seq(
            tags::SEGMENT_SEQUENCE,
            spec.segments
                .iter()
                .map(|s| segment_item(s, common.algorithm))
                .collect(),
        ),
        text(tags::CONTENT_LABEL, VR::CS, spec.content_label),
        text(tags::CONTENT_DESCRIPTION, VR::LO, spec.content_description),
    ]
}

/// Multi-frame Dimension module: [ReferencedSegmentNumber, ImagePositionPatient].
fn dimension_elements() -> Vec<Elem> {
    let organization = new_uid();
    let index = |pointer, group, label: &str| {
        item(vec![
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organization),
            at(tags::DIMENSION_INDEX_POINTER, &[pointer]),
            at(tags::FUNCTIONAL_GROUP_POINTER, &[group]),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    vec![
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![text(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                &organization,
            )])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                index(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Segment Number",
                ),
                index(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        ),
    ]
}

/// Shared Functional Groups: Pixel Measures and Plane Orientation.
fn shared_groups(planes: &Planes) -> Elem {
    seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![
            seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(vec![
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
                    texts(tags::PIXEL_SPACING, VR::DS, &planes.pixel_spacing),
                ])],
            ),
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(vec![texts(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    &planes.orientation,
                )])],
            ),
        ])],
    )
}

/// Per-frame Functional Groups, one item per frame.
fn per_frame_groups(common: Common, segments: &[Segment], frames: &[FrameRef]) -> Elem {
    let items = frames
        .iter()
        .map(|f| {
            let number = segments[f.segment].number;
            let mut groups = vec![
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(vec![ul(
                        tags::DIMENSION_INDEX_VALUES,
                        &[u32::from(number), f.k as u32 + 1],
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![texts(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        &common.planes.positions[f.k],
                    )])],
                ),
                seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![us(tags::REFERENCED_SEGMENT_NUMBER, &[number])])],
                ),
            ];
            if let Some(source) = common.source {
                groups.push(derivation(source, f.k));
            }
            item(groups)
        })
        .collect();
    seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, items)
}

/// Derivation Image of a frame: slice k of the source series (PS3.3 A.51.5.1 codes).
fn derivation(source: &SourceSeries, k: usize) -> Elem {
    let (class, instance) = &source.instances[k];
    let image = item(vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
        code_seq(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            PURPOSE_SOURCE_IMAGE,
        ),
        text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
    ]);
    seq(
        tags::DERIVATION_IMAGE_SEQUENCE,
        vec![item(vec![
            seq(
                tags::DERIVATION_CODE_SEQUENCE,
                vec![code_item(DERIVATION_SEGMENTATION)],
            ),
            seq(tags::SOURCE_IMAGE_SEQUENCE, vec![image]),
        ])],
    )
}

/// Common Instance Reference: every instance of the source series.
fn referenced_series(source: &SourceSeries) -> Elem {
    let instances = source
        .instances
        .iter()
        .map(|(class, instance)| {
            item(vec![
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
            ])
        })
        .collect();
    seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
            text(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                &source.series_instance_uid,
            ),
        ])],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seg::segment::SegmentKind;
    use ndarray::Array3;

    fn segment(number: u16, kind: SegmentKind) -> Segment {
        Segment {
            number,
            map: 0,
            kind,
            property: crate::seg::segment::TYPE_NEOPLASM,
            label: format!("s{number}"),
            description: String::new(),
            rgb: [0, 0, 0],
            tracking: None,
            region: None,
        }
    }

    #[test]
    fn empty_frames_are_omitted_but_never_all() {
        let mut labels = Array3::<u32>::zeros((4, 2, 3));
        labels[[1, 0, 0]] = 1;
        labels[[2, 1, 2]] = 2;
        let segs = [
            segment(1, SegmentKind::Tumor),
            segment(2, SegmentKind::Blob(1)),
            segment(3, SegmentKind::Blob(2)),
            segment(4, SegmentKind::Blob(7)),
        ];
        let maps = [labels.view()];
        let counts = slice_counts(Pixels::Binary(&maps), &segs);
        assert_eq!(counts[0], [0, 1, 1, 0]);
        let frames = select_frames(&counts, true);
        let pairs: Vec<(usize, usize)> = frames.iter().map(|f| (f.segment, f.k)).collect();
        assert_eq!(pairs, [(0, 1), (0, 2), (1, 1), (2, 2), (3, 0)]);
        assert_eq!(select_frames(&counts, false).len(), 16);
        // 6-pixel frames, one bit stream: k=1 sets bit 0, k=2 sets bit 6 + 5 = 11
        let data = pixel_data(Pixels::Binary(&maps), &segs, &frames[..2]);
        assert_eq!(data, vec![0b0000_0001, 0b0000_1000]);
    }

    #[test]
    fn probabilities_are_rounded() {
        assert_eq!(quantize_probability(0.0), 0);
        assert_eq!(quantize_probability(0.5), 128);
        assert_eq!(quantize_probability(1.0), 255);
        assert_eq!(quantize_probability(1.0 / 510.0 - 1e-6), 0);
        assert_eq!(quantize_probability(4.5e-5), 0);
    }
}
