//! What each SEG of a run holds and how it is named: `seg.dcm` (BINARY: the whole tumor, then
//! on request one segment per decision and one per blob), `prob-seg.dcm` (FRACTIONAL: the
//! probability map as one segment) and `prob-levels-seg.dcm` (BINARY: segment n holds the
//! voxels whose probability is at least the n-th of `dicom_output.probability_levels`; the
//! segments nest, so they overlap). Each is built by `segmentation::build` on the run's shared
//! study, planes and references, written with `element::write_file`, and described for the
//! report (`summary::seg_file`).
//!
//! Segment numbers follow `segment`'s order: 1 is the whole tumor (label > 0); with decision
//! segments, 2, 3 and 4 are the accepted, review and rejected blobs; with per-blob segments,
//! blob `n`-th in the report's order (id `n`) follows them (label == id).

use std::path::Path;

use ndarray::{Array3, ArrayView3};

use crate::blobs::Blob;
use crate::pipeline::{Decision, Decisions};

use super::element;
use super::request::{
    SegError, SegInputs, SegOptions, PROBABILITY_LEVELS_SEG_FILE, PROBABILITY_SEG_FILE, SEG_FILE,
};
use super::segment::{blob_colour, Segment, SegmentKind, TUMOR_COLOUR};
use super::segmentation::{self, Common, Pixels, SegSpec};
use super::summary::{seg_file, SegFile};
use super::values::new_uid;

const SEG_SERIES_NUMBER: i64 = 901;
const PROBABILITY_SERIES_NUMBER: i64 = 902;
const LEVELS_SERIES_NUMBER: i64 = 903;

/// Segment 1 is the whole tumor; then, with decision segments, accept, review and reject (all
/// three, so their numbers do not depend on the case; one without blobs is empty); then, with
/// per-blob segments, one per blob in report order.
pub(crate) fn binary_segments(
    blobs: &[Blob],
    opts: &SegOptions,
    path: &Path,
) -> Result<Vec<Segment>, SegError> {
    let mut segments = vec![Segment {
        number: 1,
        kind: SegmentKind::Tumor,
        label: "Tumor".to_string(),
        description: "every blob of the thresholded ensemble logit".to_string(),
        rgb: TUMOR_COLOUR,
        tracking: None,
    }];
    if let Some(d) = opts.decision_segments {
        segments.extend(decision_segments(blobs, d));
    }
    if opts.per_blob_segments {
        let first = segments.len() + 1;
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
        for (n, b) in blobs.iter().enumerate() {
            segments.push(Segment {
                number: (first + n) as u16,
                kind: SegmentKind::Blob(b.id),
                label: format!("Blob {} (confidence {:.2})", b.id, b.mean_logit),
                description: format!(
                    "{} voxels, mean logit {:.3}, pass agreement {:.2}",
                    b.voxels, b.mean_logit, b.pass_agreement
                ),
                rgb: blob_colour(n),
                tracking: Some((format!("Blob {}", b.id), new_uid())),
            });
        }
    }
    Ok(segments)
}

/// Segments 2, 3, 4: the blobs whose decision is accept, review, reject.
fn decision_segments(blobs: &[Blob], d: Decisions) -> Vec<Segment> {
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
            number: n as u16 + 2,
            label: format!("Tumor: {name}"),
            description: format!(
                "blobs whose decision is {name}: {rule} (blobs.decisions accept {a}, reject {r}); {} blob(s)",
                ids.len()
            ),
            kind: SegmentKind::Blobs(ids),
            rgb,
            tracking: None,
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
    let segments = binary_segments(inputs.blobs, opts, &path)?;
    let spec = SegSpec {
        content_label: "TUMOR_SEG",
        content_description: "Tumor segmentation of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor segmentation",
        series_number: SEG_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    build_and_write(dir, SEG_FILE, common, &spec, Pixels::Binary(inputs.labels))
}

/// Builds and writes `prob-seg.dcm`.
pub(crate) fn write_fractional(
    dir: &Path,
    probability: ArrayView3<f32>,
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let segments = [Segment {
        number: 1,
        kind: SegmentKind::Tumor,
        label: "Tumor probability".to_string(),
        description: "sigmoid of the aggregated ensemble logit".to_string(),
        rgb: TUMOR_COLOUR,
        tracking: None,
    }];
    let spec = SegSpec {
        content_label: "TUMOR_PROB",
        content_description: "Tumor probability of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor probability",
        series_number: PROBABILITY_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let pixels = Pixels::Fractional(probability);
    build_and_write(dir, PROBABILITY_SEG_FILE, common, &spec, pixels)
}

/// How many of the increasing `levels` each voxel's probability reaches (compared in f64).
fn levels_reached(probability: ArrayView3<f32>, levels: &[f64]) -> Array3<u32> {
    probability.mapv(|p| levels.iter().filter(|&&l| f64::from(p) >= l).count() as u32)
}

/// One segment per level, the lowest first; colours from yellow (lowest) to red (highest).
fn level_segments(levels: &[f64]) -> Vec<Segment> {
    let last = levels.len().saturating_sub(1).max(1) as f64;
    levels
        .iter()
        .enumerate()
        .map(|(n, l)| Segment {
            number: n as u16 + 1,
            kind: SegmentKind::AtLeast(n as u32 + 1),
            label: format!("Tumor probability >= {l}"),
            description: format!(
                "voxels whose tumor probability (sigmoid of the aggregated ensemble logit) is at least {l}"
            ),
            rgb: [255, (215.0 * (1.0 - n as f64 / last)).round() as u8, 0],
            tracking: None,
        })
        .collect()
}

/// Builds and writes `prob-levels-seg.dcm`.
pub(crate) fn write_levels(
    dir: &Path,
    probability: ArrayView3<f32>,
    opts: &SegOptions,
    common: Common,
) -> Result<SegFile, SegError> {
    let segments = level_segments(&opts.probability_levels);
    let reached = levels_reached(probability, &opts.probability_levels);
    let spec = SegSpec {
        content_label: "PROB_LEVELS",
        content_description: "Tumor probability levels of a stochastic ONNX U-Net ensemble",
        series_description: "stochseg tumor probability levels",
        series_number: LEVELS_SERIES_NUMBER,
        segments: &segments,
        omit_empty_frames: opts.omit_empty_frames,
    };
    let pixels = Pixels::Binary(reached.view());
    build_and_write(dir, PROBABILITY_LEVELS_SEG_FILE, common, &spec, pixels)
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
        let s = level_segments(&[0.25, 0.5, 0.9]);
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
        let s = binary_segments(&blobs, &opts, Path::new("seg.dcm")).unwrap();
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
