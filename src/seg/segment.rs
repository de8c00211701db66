//! Segments and their description (Segment Description Macro, PS3.3 C.8.20.4): numbers 1..N in
//! sequence order, the whole tumor first, then (optionally) one segment per decision (accept,
//! review, reject), then (optionally) one segment per blob. Every segment is AUTOMATIC, names
//! the algorithm, and is coded as a neoplasm, a morphologically abnormal structure (SNOMED CT,
//! baseline CIDs 7150 and 7151) in the brain.

use dicom::core::VR;
use dicom::dictionary_std::tags;

use super::element::{code_seq, item, seq, text, us, Code, Obj};
use super::values::long_string;

pub const CATEGORY_ABNORMAL: Code = Code {
    value: "49755003",
    scheme: "SCT",
    meaning: "Morphologically Abnormal Structure",
};
pub const TYPE_NEOPLASM: Code = Code {
    value: "108369006",
    scheme: "SCT",
    meaning: "Neoplasm",
};
/// The BraTS sub-regions as the DICOM standard codes brain lesion segments (PS3.16 CID 7168,
/// Brain Lesion Segmentation Type With Necrosis): NETC as necrosis, SNFH as edema, ET as an
/// enhancing lesion (NCIt, as the context group gives it).
pub const TYPE_NECROSIS: Code = Code {
    value: "6574001",
    scheme: "SCT",
    meaning: "Necrosis",
};
pub const TYPE_EDEMA: Code = Code {
    value: "79654002",
    scheme: "SCT",
    meaning: "Edema",
};
pub const TYPE_ENHANCING: Code = Code {
    value: "C113842",
    scheme: "NCIt",
    meaning: "Enhancing Lesion",
};
pub const REGION_BRAIN: Code = Code {
    value: "12738006",
    scheme: "SCT",
    meaning: "Brain",
};
pub const FAMILY_AI: Code = Code {
    value: "123110",
    scheme: "DCM",
    meaning: "Artificial Intelligence",
};

/// What voxels a segment holds, in terms of the label map (blob ids, 0 = background).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Every blob: label > 0.
    Tumor,
    /// One blob: label == id.
    Blob(u32),
    /// A set of blobs (ids sorted ascending, possibly none): label is one of them.
    Blobs(Vec<u32>),
    /// A probability level, on a map of how many levels each voxel reaches: label >= n.
    AtLeast(u32),
    /// One value of a label map (BraTS labels): label == value.
    Label(u32),
}

impl SegmentKind {
    pub fn contains(&self, label: u32) -> bool {
        match self {
            SegmentKind::Tumor => label > 0,
            SegmentKind::Blob(id) => label == *id,
            SegmentKind::Blobs(ids) => label > 0 && ids.binary_search(&label).is_ok(),
            SegmentKind::AtLeast(n) => label >= *n,
            SegmentKind::Label(value) => label == *value,
        }
    }
}

/// One segment of a SEG.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub number: u16,
    /// Which of the SEG's maps the segment's voxels come from (`segmentation::Pixels`).
    pub map: usize,
    pub kind: SegmentKind,
    /// Segmented Property Type (the category is always a morphologically abnormal structure).
    pub property: Code,
    pub label: String,
    pub description: String,
    pub rgb: [u8; 3],
    /// TrackingID and TrackingUID (both or neither).
    pub tracking: Option<(String, String)>,
    /// The region the segment belongs to, in a SEG of several regions.
    pub region: Option<String>,
}

/// The algorithm every segment names.
#[derive(Debug, Clone)]
pub struct Algorithm {
    pub name: String,
    pub version: String,
    /// Free text (LT), e.g. the ensemble's passes, sigma and threshold.
    pub parameters: String,
}

/// Display colours of per-blob segments, in turn (the tumor segment is red).
const BLOB_COLOURS: [[u8; 3]; 8] = [
    [255, 165, 0],
    [255, 255, 0],
    [0, 200, 255],
    [0, 220, 0],
    [190, 100, 255],
    [255, 105, 180],
    [0, 128, 128],
    [160, 82, 45],
];
pub const TUMOR_COLOUR: [u8; 3] = [220, 40, 40];

/// Colour of the `n`-th blob segment (0-based).
pub fn blob_colour(n: usize) -> [u8; 3] {
    BLOB_COLOURS[n % BLOB_COLOURS.len()]
}

/// The Segment Sequence item of `s`.
pub(crate) fn segment_item(s: &Segment, algorithm: &Algorithm) -> Obj {
    let mut elements = vec![
        us(tags::SEGMENT_NUMBER, &[s.number]),
        text(tags::SEGMENT_LABEL, VR::LO, &long_string(&s.label)),
        text(tags::SEGMENT_DESCRIPTION, VR::ST, &s.description),
        text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
        text(
            tags::SEGMENT_ALGORITHM_NAME,
            VR::LO,
            &long_string(&algorithm.name),
        ),
        seq(
            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
            vec![item(vec![
                code_seq(tags::ALGORITHM_FAMILY_CODE_SEQUENCE, FAMILY_AI),
                text(tags::ALGORITHM_NAME, VR::LO, &long_string(&algorithm.name)),
                text(
                    tags::ALGORITHM_VERSION,
                    VR::LO,
                    &long_string(&algorithm.version),
                ),
                text(tags::ALGORITHM_PARAMETERS, VR::LT, &algorithm.parameters),
            ])],
        ),
        code_seq(
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            CATEGORY_ABNORMAL,
        ),
        code_seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, s.property),
        code_seq(tags::ANATOMIC_REGION_SEQUENCE, REGION_BRAIN),
        us(
            tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
            &srgb_to_scaled_cielab(s.rgb),
        ),
    ];
    if let Some((id, uid)) = &s.tracking {
        elements.push(text(tags::TRACKING_ID, VR::UT, id));
        elements.push(text(tags::TRACKING_UID, VR::UI, uid));
    }
    item(elements)
}

/// sRGB (D65) to CIELab, scaled to the 16-bit PCS values of RecommendedDisplayCIELabValue
/// (PS3.3 C.10.7.1.1): L* x 65535 / 100, (a* + 128) x 65535 / 255, (b* + 128) x 65535 / 255.
/// Conversion constants: IEC 61966-2-1 (sRGB) and CIE 15 (Lab).
pub fn srgb_to_scaled_cielab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = rgb.map(|c| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    let [r, g, b] = lin;
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f64| {
        let d: f64 = 6.0 / 29.0;
        if t > d * d * d {
            t.cbrt()
        } else {
            t / (3.0 * d * d) + 4.0 / 29.0
        }
    };
    let l = 116.0 * f(y) - 16.0;
    let a = 500.0 * (f(x) - f(y));
    let bb = 200.0 * (f(y) - f(z));
    let scale =
        |v: f64, lo: f64, span: f64| ((v - lo) / span * 65535.0).round().clamp(0.0, 65535.0) as u16;
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 255.0),
        scale(bb, -128.0, 255.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cielab_of_white_black_and_red() {
        // white: L* 100, a* = b* = 0 -> (65535, 128/255 * 65535, same)
        let w = srgb_to_scaled_cielab([255, 255, 255]);
        assert!(w[0] >= 65530);
        assert!((i32::from(w[1]) - 32896).abs() <= 30 && (i32::from(w[2]) - 32896).abs() <= 30);
        assert_eq!(srgb_to_scaled_cielab([0, 0, 0]), [0, 32896, 32896]);
        // pure red: L* 53.24, a* 80.09, b* 67.20 (standard sRGB values)
        let r = srgb_to_scaled_cielab([255, 0, 0]);
        let back = [
            f64::from(r[0]) * 100.0 / 65535.0,
            f64::from(r[1]) * 255.0 / 65535.0 - 128.0,
            f64::from(r[2]) * 255.0 / 65535.0 - 128.0,
        ];
        for (x, y) in back.iter().zip([53.24, 80.09, 67.20]) {
            assert!((x - y).abs() < 0.1, "{back:?}");
        }
    }

    #[test]
    fn kinds_select_labels() {
        assert!(SegmentKind::Tumor.contains(3) && !SegmentKind::Tumor.contains(0));
        let set = SegmentKind::Blobs(vec![2, 5]);
        assert!(set.contains(5) && !set.contains(3) && !set.contains(0));
        assert!(!SegmentKind::Blobs(Vec::new()).contains(1));
        assert!(SegmentKind::Blob(2).contains(2) && !SegmentKind::Blob(2).contains(3));
    }
}
