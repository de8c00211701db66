//! What each SEG of a run holds and how it is named: `seg.dcm` (BINARY), `prob-seg.dcm`
//! (FRACTIONAL: the probability map) and `prob-levels-seg.dcm` (BINARY: segment n holds the
//! voxels whose probability is at least the n-th of `dicom_output.probability_levels`; the
//! segments nest, so they overlap). Each is built by `segmentation::build` on the run's shared
//! study, planes and references, written with `element::write_file`, and described for the
//! report (`summary::seg_file`).
//!
//! One region: `seg.dcm` segment 1 is the whole tumor (label > 0); with decision segments, 2, 3
//! and 4 are the accepted, review and rejected blobs; with per-blob segments, blob `n`-th in the
//! report's order (id `n`) follows them (label == id). `prob-seg.dcm` has one segment, and
//! `prob-levels-seg.dcm` one per level.
//!
//! Several regions: `seg.dcm` segments 1..L are the labels of the BraTS label map (NETC, SNFH,
//! ET, coded as the DICOM standard codes brain lesion segments, PS3.16 CID 7168), or, when the
//! regions give no label map, one segment per region (label > 0 in its labels map); then, with
//! decision segments, three per region (accept, review, reject; regions in order, so every
//! number is the same for every case); then, with per-blob segments, every region's blobs in
//! region order. `prob-seg.dcm` has one segment per region, `prob-levels-seg.dcm` one per
//! region and level (region-major).

use std::path::Path;

use ndarray::{Array3, ArrayView3};

use crate::blobs::Blob;
use crate::pipeline::{Decision, Decisions};
use crate::regions::BRATS_LABELS;

use super::element::{self, Code};
use super::request::{
    RegionSeg, SegError, SegInputs, SegOptions, PROBABILITY_LEVELS_SEG_FILE, PROBABILITY_SEG_FILE,
    SEG_FILE,
};
use super::segment::{
    blob_colour, Segment, SegmentKind, TUMOR_COLOUR, TYPE_EDEMA, TYPE_ENHANCING, TYPE_NECROSIS,
    TYPE_NEOPLASM,
};
use super::segmentation::{self, Common, Pixels, SegSpec};
use super::summary::{seg_file, SegFile};
use super::values::new_uid;

const SEG_SERIES_NUMBER: i64 = 901;
const PROBABILITY_SERIES_NUMBER: i64 = 902;
const LEVELS_SERIES_NUMBER: i64 = 903;

/// The segments of `seg.dcm` and the maps they are drawn from.
pub(crate) fn binary_segments<'a>(
    inputs: &SegInputs<'a>,
    opts: &SegOptions,
    path: &Path,
) -> Result<(Vec<Segment>, Vec<ArrayView3<'a, u32>>), SegError> {
    let multi = inputs.regions.len() > 1;
    let mut maps = Vec::new();
    let mut segments = Vec::new();
    let first_region_map = match (multi, inputs.label_map) {
        (true, Some(labels)) => {
            maps.push(labels.map);
            segments.extend(label_segments(labels.names));
            1
        }
        _ => 0,
    };
    maps.extend(inputs.regions.iter().map(|r| r.labels));
    if segments.is_empty() {
        segments.extend(inputs.regions.iter().enumerate().map(|(r, region)| {
            let mut s = tumor_segment(
                r + 1,
                SegmentKind::Tumor,
                "every blob of the thresholded ensemble logit",
            );
            s.map = first_region_map + r;
            if multi {
                s.label = region.name.to_string();
                s.description = format!("region {}: {}", region.name, s.description);
                s.region = Some(region.name.to_string());
            }
            s
        }));
    }
    if let Some(d) = opts.decision_segments {
        for (r, region) in inputs.regions.iter().enumerate() {
            let first = segments.len() + 1;
            let mut decided = decision_segments(region.blobs, d, first);
            for s in &mut decided {
                s.map = first_region_map + r;
                if multi {
                    s.label = s.label.replacen("Tumor", region.name, 1);
                    s.region = Some(region.name.to_string());
                }
            }
            segments.extend(decided);
        }
    }
    if opts.per_blob_segments {
        for (r, region) in inputs.regions.iter().enumerate() {
            let blobs = blob_segments(region, multi, segments.len() + 1, path)?;
            segments.extend(blobs.into_iter().map(|s| Segment {
                map: first_region_map + r,
                ..s
            }));
        }
    }
    Ok((segments, maps))
}

/// A segment of the whole tumor (or a region, or a probability) numbered `number`.
fn tumor_segment(number: usize, kind: SegmentKind, description: &str) -> Segment {
    Segment {
        number: number as u16,
        map: 0,
        kind,
        property: TYPE_NEOPLASM,
        label: "Tumor".to_string(),
        description: description.to_string(),
        rgb: TUMOR_COLOUR,
        tracking: None,
        region: None,
    }
}

/// One segment per label of the BraTS label map (map 0), numbered from 1.
fn label_segments(names: &[(u8, String)]) -> Vec<Segment> {
    names
        .iter()
        .enumerate()
        .map(|(n, (label, name))| {
            let (property, rgb) = label_code(name);
            Segment {
                number: n as u16 + 1,
                map: 0,
                kind: SegmentKind::Label(u32::from(*label)),
                property,
                label: name.clone(),
                description: format!(
                    "label {label} ({name}) of the label map in the BraTS convention"
                ),
                rgb,
                tracking: None,
                region: None,
            }
        })
        .collect()
}

/// Property type and colour of a BraTS label by name (other labels: a neoplasm).
fn label_code(name: &str) -> (Code, [u8; 3]) {
    let brats = |n: u8| BRATS_LABELS.iter().any(|(l, m)| *l == n && *m == name);
    if brats(1) {
        (TYPE_NECROSIS, [255, 60, 60])
    } else if brats(2) {
        (TYPE_EDEMA, [60, 200, 60])
    } else if brats(3) {
        (TYPE_ENHANCING, [255, 215, 0])
    } else {
        (TYPE_NEOPLASM, TUMOR_COLOUR)
    }
}

/// One segment per blob of `region`, numbered from `first`.
fn blob_segments(
    region: &RegionSeg,
    multi: bool,
    first: usize,
    path: &Path,
) -> Result<Vec<Segment>, SegError> {
    let blobs = region.blobs;
    if first + blobs.len() > usize::from(u16::MAX) + 1 {
        return Err(SegError::new(
            path,
            format!(
                "{} blobs do not fit in one SEG (at most {} per-blob segments)",
                blobs.len(),
                usize::from(u16::MAX) + 1 - first
            ),
        ));
    }
    let prefix = if multi {
        format!("{} blob", region.name)
    } else {
        "Blob".to_string()
    };
    Ok(blobs
        .iter()
        .enumerate()
        .map(|(n, b)| Segment {
            number: (first + n) as u16,
            map: 0,
            kind: SegmentKind::Blob(b.id),
            property: TYPE_NEOPLASM,
            label: format!("{prefix} {} (confidence {:.2})", b.id, b.mean_logit),
            description: format!(
                "{} voxels, mean logit {:.3}, pass agreement {:.2}",
                b.voxels, b.mean_logit, b.pass_agreement
            ),
            rgb: blob_colour(n),
            tracking: Some((format!("{prefix} {}", b.id), new_uid())),
            region: multi.then(|| region.name.to_string()),
        })
        .collect())
}

/// Three segments from `first`: the blobs whose decision is accept, review, reject.
fn decision_segments(blobs: &[Blob], d: Decisions, first: usize) -> Vec<Segment> {
    let (a, r) = (d.accept, d.reject);
    [
        (Decision::Accept, format!("mean logit >= {a}"), [255, 90, 0]),
        (Decision::Review, format!("{r} <= mean logit < {a}"), [255, 215, 0]),
        (Decision::Reject, format!("mean logit < {r}"), [110, 140, 255]),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (decision, rule, rgb))| {
        let mut ids: Vec<u32> = blobs
            .iter()
            .filter(|b| d.decide(b.mean_logit) == decision)
            .map(|b| b.id)
            .collect();
        ids.sort_unstable();
        let name = decision_name(decision);
        Segment {
            number: (first + n) as u16,
            map: 0,
            label: format!("Tumor: {name}"),
            description: format!(
                "blobs whose decision is {name}: {rule} (blobs.decisions accept {a}, reject {r}); {} blob(s)",
                ids.len()
            ),
            kind: SegmentKind::Blobs(ids),
            property: TYPE_NEOPLASM,
            rgb,
            tracking: None,
            region: None,
        }
    })
    .collect()
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Accept => "accept",
        Decision::Review => "review",
        Decision::Reject => "reject",
    }
}

/// Builds and writes `seg.dcm`.
pub(crate) fn write_binary(
    dir: &Path,
    inputs: &SegInputs,
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let path = dir.join(SEG_FILE);
    let (segments, maps) = binary_segments(inputs, opts, &path)?;
    let spec = SegSpec {
        content_label: "TUMOR_SEG",
        content_description: "Tumor segmentation of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor segmentation",
        series_number: SEG_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    build_and_write(dir, SEG_FILE, common, &spec, Pixels::Binary(&maps))
}

/// Builds and writes `prob-seg.dcm`: one segment per region (`probabilities` in region order).
pub(crate) fn write_fractional(
    dir: &Path,
    inputs: &SegInputs,
    probabilities: &[ArrayView3<f32>],
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let multi = inputs.regions.len() > 1;
    let segments: Vec<Segment> = inputs
        .regions
        .iter()
        .enumerate()
        .map(|(r, region)| {
            let mut s = tumor_segment(
                r + 1,
                SegmentKind::Tumor,
                "sigmoid of the aggregated ensemble logit",
            );
            s.map = r;
            s.label = "Tumor probability".to_string();
            if multi {
                s.label = format!("{} probability", region.name);
                s.region = Some(region.name.to_string());
            }
            s
        })
        .collect();
    let spec = SegSpec {
        content_label: "TUMOR_PROB",
        content_description: "Tumor probability of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor probability",
        series_number: PROBABILITY_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let pixels = Pixels::Fractional(probabilities);
    build_and_write(dir, PROBABILITY_SEG_FILE, common, &spec, pixels)
}

/// How many of the increasing `levels` each voxel's probability reaches (compared in f64).
fn levels_reached(probability: ArrayView3<f32>, levels: &[f64]) -> Array3<u32> {
    probability.mapv(|p| levels.iter().filter(|&&l| f64::from(p) >= l).count() as u32)
}

/// One segment per level, the lowest first, numbered from `first` and drawn from `map`;
/// colours from yellow (lowest) to red (highest).
fn level_segments(levels: &[f64], region: Option<&str>, first: usize, map: usize) -> Vec<Segment> {
    let last = levels.len().saturating_sub(1).max(1) as f64;
    let what = region.map_or("Tumor".to_string(), str::to_string);
    levels
        .iter()
        .enumerate()
        .map(|(n, l)| Segment {
            number: (first + n) as u16,
            map,
            kind: SegmentKind::AtLeast(n as u32 + 1),
            property: TYPE_NEOPLASM,
            label: format!("{what} probability >= {l}"),
            description: format!(
                "voxels whose {} probability (sigmoid of the aggregated ensemble logit) is at least {l}",
                region.unwrap_or("tumor")
            ),
            rgb: [255, (215.0 * (1.0 - n as f64 / last)).round() as u8, 0],
            tracking: None,
            region: region.map(str::to_string),
        })
        .collect()
}

/// Builds and writes `prob-levels-seg.dcm`.
pub(crate) fn write_levels(
    dir: &Path,
    inputs: &SegInputs,
    probabilities: &[ArrayView3<f32>],
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let multi = inputs.regions.len() > 1;
    let levels = &opts.probability_levels;
    let reached: Vec<Array3<u32>> = probabilities
        .iter()
        .map(|p| levels_reached(*p, levels))
        .collect();
    let segments: Vec<Segment> = inputs
        .regions
        .iter()
        .enumerate()
        .flat_map(|(r, region)| {
            let name = multi.then_some(region.name);
            level_segments(levels, name, r * levels.len() + 1, r)
        })
        .collect();
    let spec = SegSpec {
        content_label: "PROB_LEVELS",
        content_description: "Tumor probability levels of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor probability levels",
        series_number: LEVELS_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let maps: Vec<ArrayView3<u32>> = reached.iter().map(|m| m.view()).collect();
    build_and_write(
        dir,
        PROBABILITY_LEVELS_SEG_FILE,
        common,
        &spec,
        Pixels::Binary(&maps),
    )
}

/// Builds the SEG of `spec`, writes it as `dir/name` and describes it for the report.
fn build_and_write(
    dir: &Path,
    name: &str,
    common: Common,
    spec: &SegSpec,
    pixels: Pixels,
) -> Result<SegFile, SegError> {
    let path = dir.join(name);
    let built = segmentation::build(common, spec, pixels).map_err(|r| SegError::new(&path, r))?;
    let kind = match pixels {
        Pixels::Binary(_) => "BINARY",
        Pixels::Fractional(_) => "FRACTIONAL",
    };
    let file = seg_file(name, kind, &built, spec.segments);
    element::write_file(built.obj, &path)?;
    tracing::info!(
        file = name,
        frames = file.frames,
        segments = spec.segments.len(),
        "DICOM SEG written"
    );
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seg::request::LabelMapSeg;

    fn region<'a>(name: &'a str, labels: ArrayView3<'a, u32>, blobs: &'a [Blob]) -> RegionSeg<'a> {
        RegionSeg {
            name,
            labels,
            probability: None,
            blobs,
        }
    }

    fn inputs<'a>(
        case: &'a crate::io::case::Case,
        regions: &'a [RegionSeg<'a>],
        label_map: Option<LabelMapSeg<'a>>,
    ) -> SegInputs<'a> {
        SegInputs {
            case,
            regions,
            label_map,
            algorithm_parameters: "",
        }
    }

    /// Several regions: the label map's labels first (coded as CID 7168 codes them), then
    /// three decision segments per region, then each region's blobs, each from its own map.
    #[test]
    fn sub_region_segments_are_numbered_predictably() {
        let case = crate::seg::tests::case(Vec::new()).0;
        let map = Array3::<u32>::zeros((3, 11, 13));
        let names: Vec<(u8, String)> = [(1, "NETC"), (2, "SNFH"), (3, "ET")]
            .iter()
            .map(|(l, n)| (*l, n.to_string()))
            .collect();
        let (wt, tc, et) = ([blob(1, 3.0), blob(2, 0.5)], [blob(1, 2.6)], []);
        let regions = [
            region("WT", map.view(), &wt),
            region("TC", map.view(), &tc),
            region("ET", map.view(), &et),
        ];
        let label_map = LabelMapSeg {
            map: map.view(),
            names: &names,
        };
        let inputs = inputs(&case, &regions, Some(label_map));
        let opts = SegOptions {
            per_blob_segments: true,
            decision_segments: Some(Decisions {
                accept: 2.5,
                reject: 1.0,
            }),
            ..SegOptions::default()
        };
        let (s, maps) = binary_segments(&inputs, &opts, Path::new("seg.dcm")).unwrap();
        assert_eq!(maps.len(), 4);
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels[..3], ["NETC", "SNFH", "ET"]);
        assert_eq!(s[2].property.value, "C113842");
        assert_eq!(s[0].property.value, "6574001");
        assert_eq!((s[0].map, s[0].kind.clone()), (0, SegmentKind::Label(1)));
        assert_eq!(labels[3..12].len(), 9);
        assert_eq!((labels[6], s[6].map), ("TC: accept", 2));
        assert_eq!(s[6].kind, SegmentKind::Blobs(vec![1]));
        assert_eq!((s[12].number, s[12].map), (13, 1));
        assert!(s[12].label.starts_with("WT blob 1"));
        assert_eq!(
            (s[14].number, s[14].map, s[14].region.as_deref()),
            (15, 2, Some("TC"))
        );
        assert_eq!(s.len(), 15);
        assert!(s
            .iter()
            .enumerate()
            .all(|(n, s)| s.number as usize == n + 1));
    }

    fn blob(id: u32, mean_logit: f64) -> Blob {
        Blob {
            mean_logit,
            ..crate::seg::tests::blob(id, 10)
        }
    }

    #[test]
    fn levels_nest() {
        let p = ndarray::arr3(&[[[0.0f32, 0.25, 0.5, 0.7, 1.0]]]);
        let reached = levels_reached(p.view(), &[0.25, 0.5, 0.9]);
        assert_eq!(reached.into_raw_vec_and_offset().0, [0, 1, 2, 2, 3]);
        let s = level_segments(&[0.25, 0.5, 0.9], None, 1, 0);
        assert_eq!(s[1].label, "Tumor probability >= 0.5");
        assert_eq!((s[0].rgb, s[2].rgb), ([255, 215, 0], [255, 0, 0]));
        assert!(s[2].kind.contains(3) && !s[2].kind.contains(2));
    }

    #[test]
    fn decision_segments_follow_the_tumor_and_precede_the_blobs() {
        let blobs = [blob(1, 3.0), blob(2, 0.5), blob(3, 2.5)];
        let opts = SegOptions {
            per_blob_segments: true,
            decision_segments: Some(Decisions {
                accept: 2.5,
                reject: 1.0,
            }),
            ..SegOptions::default()
        };
        let case = crate::seg::tests::case(Vec::new()).0;
        let labels = Array3::<u32>::zeros((3, 11, 13));
        let regions = [region("WT", labels.view(), &blobs)];
        let inputs = inputs(&case, &regions, None);
        let (s, maps) = binary_segments(&inputs, &opts, Path::new("seg.dcm")).unwrap();
        assert_eq!(maps.len(), 1);
        let kinds: Vec<_> = s.iter().map(|s| (s.number, s.kind.clone())).collect();
        assert_eq!(
            kinds[..4],
            [
                (1, SegmentKind::Tumor),
                (2, SegmentKind::Blobs(vec![1, 3])),
                (3, SegmentKind::Blobs(vec![])),
                (4, SegmentKind::Blobs(vec![2])),
            ]
        );
        assert_eq!(s[2].label, "Tumor: review");
        assert!(s[2].description.contains("1 <= mean logit < 2.5"));
        assert_eq!(
            kinds[4..],
            [
                (5, SegmentKind::Blob(1)),
                (6, SegmentKind::Blob(2)),
                (7, SegmentKind::Blob(3))
            ]
        );
    }
}
