//! The BraTS 2023/2024 lesion-wise rule for one case and one region (the region's GT mask vs its
//! predicted mask: `seg > 0` vs `labels > 0` for the whole tumor), as the challenge's metrics
//! code (BraTS-2023-Metrics, `brats_metrics.py`) defines it.
//!
//! Inputs: the GT and predicted masks on one grid (`[z, y, x]`), the voxel volume in mm³ and a
//! [`LesionRule`]. GT voxels are grouped into lesions by the 26-connected components of the GT
//! dilated `gt_dilation` times with the 18-neighbourhood (`generate_binary_structure(3, 2)`), each
//! lesion keeping only its own GT voxels (so GT components closer than about `2 * gt_dilation`
//! voxels form one lesion). A prediction component (26-connected) matches every lesion whose own
//! `gt_dilation`-times dilation it touches; a lesion's Dice is that of the union of its matches
//! against the lesion (0 without a match); a prediction component that matches no lesion is a
//! false positive (Dice 0). Lesions of at most `min_volume_mm3` leave the score (their matches
//! are not false positives). Lesion-wise Dice = sum of kept lesions' Dice / (kept lesions + false
//! positives), 1 when both are 0. True positives / false negatives count kept lesions with / without
//! a match (BraTS's `Num_TP`, `Num_FN`), false positives the unmatched components (`Num_FP`).
//! Dilation and labelling are [`crate::blobs::dilate`] and [`crate::blobs::label`].

use ndarray::{s, Array3, ArrayView3, Zip};

use crate::blobs;

/// Parameters of the lesion-wise rule. BraTS 2023/2024: `gt_dilation` 3 for glioma, SSA and
/// paediatric tumours, 1 for meningioma and metastases; `min_volume_mm3` 50 (2 for metastases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LesionRule {
    pub gt_dilation: usize,
    pub min_volume_mm3: f64,
}

impl Default for LesionRule {
    fn default() -> LesionRule {
        LesionRule {
            gt_dilation: 3,
            min_volume_mm3: 50.0,
        }
    }
}

/// Ground-truth lesions of one case under a rule's dilation.
#[derive(Debug, Clone)]
pub struct GtLesions {
    /// The GT mask dilated `gt_dilation` times (18-neighbourhood): the union of every lesion's
    /// own dilation, so a prediction touches some lesion's dilation iff it touches this.
    pub dilated: Array3<bool>,
    /// Lesion ids 1..=count on the GT voxels, 0 elsewhere.
    pub labels: Array3<u32>,
    pub count: usize,
    gt_dilation: usize,
}

/// Lesion-wise counts and Dice of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionScores {
    /// Every lesion, small ones included.
    pub gt_lesions: usize,
    /// Lesions of at most the volume threshold, left out of the score.
    pub small_lesions: usize,
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
    pub dice: f64,
    /// true_positives / kept lesions; None without a kept lesion.
    pub sensitivity: Option<f64>,
}

/// Groups the GT voxels into lesions by the components of the dilated GT.
pub fn group(gt: ArrayView3<bool>, gt_dilation: usize) -> GtLesions {
    let dilated = blobs::dilate(gt, 18, gt_dilation);
    let (mut labels, count) = blobs::label(dilated.view(), 26);
    Zip::from(&mut labels)
        .and(gt)
        .for_each(|l, &inside| *l *= u32::from(inside));
    GtLesions {
        dilated,
        labels,
        count,
        gt_dilation,
    }
}

/// Voxel count and inclusive `[z, y, x]` bounding box of one lesion.
#[derive(Debug, Clone, Copy)]
struct Extent {
    voxels: usize,
    /// Lesion voxels that are predicted.
    hits: usize,
    min: [usize; 3],
    max: [usize; 3],
}

fn extents(lesions: &GtLesions, pred: ArrayView3<bool>) -> Vec<Extent> {
    let empty = Extent {
        voxels: 0,
        hits: 0,
        min: [usize::MAX; 3],
        max: [0; 3],
    };
    let mut out = vec![empty; lesions.count + 1];
    for (((z, y, x), &l), &p) in lesions.labels.indexed_iter().zip(pred.iter()) {
        if l == 0 {
            continue;
        }
        let e = &mut out[l as usize];
        e.voxels += 1;
        e.hits += usize::from(p);
        for (a, v) in [z, y, x].into_iter().enumerate() {
            e.min[a] = e.min[a].min(v);
            e.max[a] = e.max[a].max(v);
        }
    }
    out
}

/// Prediction components (ids of `components`) touching lesion `id`'s own dilation, ascending.
fn matches(lesions: &GtLesions, id: u32, e: &Extent, components: &Array3<u32>) -> Vec<u32> {
    let d = lesions.gt_dilation;
    let shape = components.shape();
    let lo: [usize; 3] = [0, 1, 2].map(|a| e.min[a].saturating_sub(d));
    let hi: [usize; 3] = [0, 1, 2].map(|a| (e.max[a] + d + 1).min(shape[a]));
    let window = s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]];
    let own = lesions.labels.slice(window).mapv(|l| l == id);
    let reach = blobs::dilate(own.view(), 18, d);
    let mut found: Vec<u32> =
        Zip::from(&reach)
            .and(components.slice(window))
            .fold(Vec::new(), |mut acc, &r, &c| {
                if r && c > 0 {
                    acc.push(c);
                }
                acc
            });
    found.sort_unstable();
    found.dedup();
    found
}

/// Scores the prediction against the grouped lesions.
pub fn score(
    lesions: &GtLesions,
    pred: ArrayView3<bool>,
    voxel_volume_mm3: f64,
    rule: &LesionRule,
) -> LesionScores {
    let (components, n) = blobs::label(pred, 26);
    let component_voxels = blobs::sizes(components.view(), n);
    let mut matched = vec![false; n + 1];
    let (mut small, mut tp, mut fn_, mut dice_sum) = (0, 0, 0, 0.0);
    for (id, e) in extents(lesions, pred).iter().enumerate().skip(1) {
        let found = matches(lesions, id as u32, e, &components);
        found.iter().for_each(|&c| matched[c as usize] = true);
        if e.voxels as f64 * voxel_volume_mm3 <= rule.min_volume_mm3 {
            small += 1;
        } else if found.is_empty() {
            fn_ += 1;
        } else {
            tp += 1;
            let predicted: usize = found.iter().map(|&c| component_voxels[c as usize]).sum();
            dice_sum += 2.0 * e.hits as f64 / (e.voxels + predicted) as f64;
        }
    }
    let fp = matched.iter().skip(1).filter(|&&m| !m).count();
    let kept = tp + fn_;
    LesionScores {
        gt_lesions: lesions.count,
        small_lesions: small,
        true_positives: tp,
        false_negatives: fn_,
        false_positives: fp,
        dice: if kept + fp == 0 {
            1.0
        } else {
            dice_sum / (kept + fp) as f64
        },
        sensitivity: (kept > 0).then(|| tp as f64 / kept as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(a: &mut Array3<bool>, lo: [usize; 3], hi: [usize; 3]) {
        a.slice_mut(s![lo[0]..hi[0], lo[1]..hi[1], lo[2]..hi[2]])
            .fill(true);
    }

    #[test]
    fn nearby_components_merge_and_near_misses_match() {
        let mut gt = Array3::from_elem((12, 12, 30), false);
        cube(&mut gt, [2, 2, 2], [6, 6, 6]);
        cube(&mut gt, [2, 2, 8], [6, 6, 12]); // 2 voxels away: one lesion under dilation 3
        cube(&mut gt, [2, 2, 20], [6, 6, 24]);
        let mut pred = Array3::from_elem(gt.dim(), false);
        cube(&mut pred, [2, 2, 2], [6, 6, 6]); // half of the merged lesion
        cube(&mut pred, [2, 2, 26], [4, 4, 28]); // 2 voxels past the third: matches, no overlap
        let lesions = group(gt.view(), 3);
        assert_eq!(lesions.count, 2);
        let r = score(&lesions, pred.view(), 1.0, &LesionRule::default());
        assert_eq!(
            (r.true_positives, r.false_negatives, r.false_positives),
            (2, 0, 0)
        );
        // (2 * 64 / (128 + 64) + 0) / 2
        assert!((r.dice - 1.0 / 3.0).abs() < 1e-12);
        // without dilation: three lesions, the near miss is a false positive
        let plain = score(
            &group(gt.view(), 0),
            pred.view(),
            1.0,
            &LesionRule::default(),
        );
        assert_eq!(
            (
                plain.true_positives,
                plain.false_negatives,
                plain.false_positives
            ),
            (1, 2, 1)
        );
        assert!((plain.dice - 0.25).abs() < 1e-12);
    }

    #[test]
    fn small_lesions_leave_the_score_and_empty_is_perfect() {
        let mut gt = Array3::from_elem((8, 8, 8), false);
        cube(&mut gt, [1, 1, 1], [4, 4, 4]); // 27 voxels
        let pred = Array3::from_elem(gt.dim(), false);
        let lesions = group(gt.view(), 1);
        let r = score(&lesions, pred.view(), 1.0, &LesionRule::default());
        assert_eq!((r.small_lesions, r.dice, r.sensitivity), (1, 1.0, None));
        // 27 voxels of 2 mm³ are 54 mm³: kept, and missed
        let r = score(&lesions, pred.view(), 2.0, &LesionRule::default());
        assert_eq!(
            (r.false_negatives, r.dice, r.sensitivity),
            (1, 0.0, Some(0.0))
        );
    }
}
