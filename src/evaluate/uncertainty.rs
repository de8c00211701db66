//! What a region's uncertainty and probability maps are worth against the ground truth: the
//! QU-BraTS score, the voxels' calibration and the retention curve. Pure functions of voxel
//! masks on one grid (`[z, y, x]`) and the maps.
//!
//! **QU-BraTS** (Mehta et al., MELBA 2022, and the challenge's scorer `BraTS_Seg_Uncertainty.py`):
//! uncertainty maps hold whole numbers 0-100 (100 most uncertain). For thresholds tau from 100
//! down to 0 in `points` steps (40: 100, 97.5, ..., 0), voxels with uncertainty > tau are filtered
//! out; at each tau the Dice of the prediction and the GT on the voxels that remain (over the
//! whole grid; 1 when both are empty there), the filtered true positives ratio (true positives
//! inside the brain with uncertainty > tau, over all true positives inside the brain) and the
//! filtered true negatives ratio (the same for true negatives). As in the scorer, each ratio is
//! `filtered / (all + eps)`, eps the float32 machine epsilon, so a case without true positives has
//! ratio 0. Each curve's area is taken by the trapezoid rule over tau / 100 in [0, 1]; score =
//! (AUC_Dice + (1 - AUC_FTP) + (1 - AUC_FTN)) / 3.
//!
//! **Voxel calibration**: the brain's voxels in `bins` equal bins of the region's probability
//! over [0, 1] (the last includes 1); per bin the voxels, their mean probability and the fraction
//! in the region's GT; ECE = sum over bins of voxels / all voxels x |mean probability - fraction
//! in the GT|.
//!
//! **Retention**: the brain's voxels ordered from the most uncertain; a fraction f of them (0,
//! 1/steps, ..., 1) is referred to a reader, who labels them as the GT does; the Dice over the
//! brain after referral. Voxels of equal uncertainty are referred together in proportion (the
//! expected counts when ties are broken at random), so the curve does not depend on voxel order.
//! Its area by the trapezoid rule over f.

use ndarray::{Array3, Zip};
use serde::Serialize;

/// The largest uncertainty value; maps hold whole numbers 0..=100.
pub const MAX_UNCERTAINTY: u8 = 100;
const LEVELS: usize = MAX_UNCERTAINTY as usize + 1;
/// The scorer's guard against an empty denominator: float32's machine epsilon.
const EPS: f64 = f32::EPSILON as f64;

/// Voxel counts per uncertainty value: over the whole grid (`tp`, `fp`, `fn_`) and inside the
/// brain (`brain`: true positives, false positives, false negatives, true negatives).
#[derive(Debug, Clone)]
pub struct Tally {
    tp: [u64; LEVELS],
    fp: [u64; LEVELS],
    fn_: [u64; LEVELS],
    brain: [[u64; 4]; LEVELS],
}

const TP: usize = 0;
const FP: usize = 1;
const FN: usize = 2;
const TN: usize = 3;

impl Tally {
    /// Counts `pred` against `truth` per value of `uncertainty` (values above 100 count as 100).
    pub fn new(
        pred: &Array3<bool>,
        truth: &Array3<bool>,
        brain: &Array3<bool>,
        uncertainty: &Array3<u8>,
    ) -> Tally {
        let mut t = Tally {
            tp: [0; LEVELS],
            fp: [0; LEVELS],
            fn_: [0; LEVELS],
            brain: [[0; 4]; LEVELS],
        };
        Zip::from(pred)
            .and(truth)
            .and(brain)
            .and(uncertainty)
            .for_each(|&p, &g, &b, &u| {
                let u = usize::from(u.min(MAX_UNCERTAINTY));
                let class = match (p, g) {
                    (true, true) => TP,
                    (true, false) => FP,
                    (false, true) => FN,
                    (false, false) => TN,
                };
                match class {
                    TP => t.tp[u] += 1,
                    FP => t.fp[u] += 1,
                    FN => t.fn_[u] += 1,
                    _ => {}
                }
                if b {
                    t.brain[u][class] += 1;
                }
            });
        t
    }

    /// Brain voxels of `class` with uncertainty at most `tau`, and in all.
    fn brain_kept(&self, class: usize, tau: f64) -> (u64, u64) {
        let all = self.brain.iter().map(|c| c[class]).sum();
        let kept = (0..LEVELS)
            .filter(|&u| u as f64 <= tau)
            .map(|u| self.brain[u][class])
            .sum();
        (kept, all)
    }

    /// The Dice of the voxels with uncertainty at most `tau`; 1 when none is predicted or GT.
    fn dice_kept(&self, tau: f64) -> f64 {
        let (mut both, mut total) = (0u64, 0u64);
        for u in (0..LEVELS).filter(|&u| u as f64 <= tau) {
            both += self.tp[u];
            total += 2 * self.tp[u] + self.fp[u] + self.fn_[u];
        }
        if total == 0 {
            1.0
        } else {
            2.0 * both as f64 / total as f64
        }
    }
}

/// The QU-BraTS curves of one case and region, their areas and the score.
#[derive(Debug, Clone, Serialize)]
pub struct QuBrats {
    pub thresholds: Vec<f64>,
    pub dice: Vec<f64>,
    pub ftp_ratio: Vec<f64>,
    pub ftn_ratio: Vec<f64>,
    pub auc_dice: f64,
    pub auc_ftp: f64,
    pub auc_ftn: f64,
    pub score: f64,
}

/// The thresholds 100, ..., 0 in `points` equal steps.
pub fn thresholds(points: usize) -> Vec<f64> {
    let points = points.max(1);
    let step = 100.0 / points as f64;
    (0..=points).rev().map(|k| k as f64 * step).collect()
}

/// The QU-BraTS curves and score of a tally.
pub fn qubrats(t: &Tally, points: usize) -> QuBrats {
    let taus = thresholds(points);
    let ratio = |class: usize, tau: f64| {
        let (kept, all) = t.brain_kept(class, tau);
        (all - kept) as f64 / (all as f64 + EPS)
    };
    let dice: Vec<f64> = taus.iter().map(|&tau| t.dice_kept(tau)).collect();
    let ftp_ratio: Vec<f64> = taus.iter().map(|&tau| ratio(TP, tau)).collect();
    let ftn_ratio: Vec<f64> = taus.iter().map(|&tau| ratio(TN, tau)).collect();
    let x: Vec<f64> = taus.iter().map(|tau| tau / 100.0).collect();
    let (auc_dice, auc_ftp, auc_ftn) = (
        trapezoid(&x, &dice),
        trapezoid(&x, &ftp_ratio),
        trapezoid(&x, &ftn_ratio),
    );
    QuBrats {
        score: (auc_dice + (1.0 - auc_ftp) + (1.0 - auc_ftn)) / 3.0,
        thresholds: taus,
        dice,
        ftp_ratio,
        ftn_ratio,
        auc_dice,
        auc_ftp,
        auc_ftn,
    }
}

/// The area under `y` over `x` (monotone, either direction) by the trapezoid rule.
pub fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum::<f64>()
        .abs()
}

/// The retention curve of one case and region.
#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    pub referred_fraction: Vec<f64>,
    pub dice: Vec<f64>,
    pub auc: f64,
}

/// The fractions 0, 1/steps, ..., 1.
pub fn fractions(steps: usize) -> Vec<f64> {
    let steps = steps.max(1);
    (0..=steps).map(|i| i as f64 / steps as f64).collect()
}

/// The retention curve of a tally, `steps` + 1 points.
pub fn retention(t: &Tally, steps: usize) -> Retention {
    let referred_fraction = fractions(steps);
    let voxels: u64 = t.brain.iter().flatten().sum();
    let dice: Vec<f64> = referred_fraction
        .iter()
        .map(|&f| dice_after_referral(t, f * voxels as f64))
        .collect();
    Retention {
        auc: trapezoid(&referred_fraction, &dice),
        referred_fraction,
        dice,
    }
}

/// The brain's Dice once the `referred` most uncertain voxels carry the GT's label.
fn dice_after_referral(t: &Tally, referred: f64) -> f64 {
    let (mut tp, mut fp, mut fn_, mut before) = (0.0, 0.0, 0.0, 0.0);
    for counts in t.brain.iter().rev() {
        let group = counts.iter().sum::<u64>() as f64;
        let q = if group == 0.0 {
            0.0
        } else {
            ((referred - before) / group).clamp(0.0, 1.0)
        };
        tp += counts[TP] as f64 + q * counts[FN] as f64;
        fp += (1.0 - q) * counts[FP] as f64;
        fn_ += (1.0 - q) * counts[FN] as f64;
        before += group;
    }
    let total = 2.0 * tp + fp + fn_;
    if total == 0.0 {
        1.0
    } else {
        2.0 * tp / total
    }
}

/// Voxel counts per probability bin, summable over cases.
#[derive(Debug, Clone, PartialEq)]
pub struct Reliability {
    voxels: Vec<u64>,
    probability_sum: Vec<f64>,
    in_gt: Vec<u64>,
}

/// One bin of the voxel calibration.
#[derive(Debug, Clone, Serialize)]
pub struct VoxelBin {
    pub lo: f64,
    pub hi: f64,
    pub voxels: u64,
    pub mean_probability: Option<f64>,
    pub fraction_in_gt: Option<f64>,
}

impl Reliability {
    pub fn empty(bins: usize) -> Reliability {
        let bins = bins.max(1);
        Reliability {
            voxels: vec![0; bins],
            probability_sum: vec![0.0; bins],
            in_gt: vec![0; bins],
        }
    }

    /// The brain's voxels of `probability` (in [0, 1]) against `truth`.
    pub fn of(
        probability: &Array3<f32>,
        truth: &Array3<bool>,
        brain: &Array3<bool>,
        bins: usize,
    ) -> Reliability {
        let mut r = Reliability::empty(bins);
        let n = r.voxels.len();
        Zip::from(probability)
            .and(truth)
            .and(brain)
            .for_each(|&p, &g, &b| {
                if b {
                    let p = f64::from(p);
                    let bin = ((p * n as f64) as usize).min(n - 1);
                    r.voxels[bin] += 1;
                    r.probability_sum[bin] += p;
                    r.in_gt[bin] += u64::from(g);
                }
            });
        r
    }

    /// Adds another case's counts (same bins).
    pub fn add(&mut self, other: &Reliability) {
        for b in 0..self.voxels.len().min(other.voxels.len()) {
            self.voxels[b] += other.voxels[b];
            self.probability_sum[b] += other.probability_sum[b];
            self.in_gt[b] += other.in_gt[b];
        }
    }

    pub fn voxels(&self) -> u64 {
        self.voxels.iter().sum()
    }

    /// The expected calibration error; None without a voxel.
    pub fn ece(&self) -> Option<f64> {
        let n = self.voxels();
        (n > 0).then(|| {
            self.bins()
                .iter()
                .filter_map(|b| {
                    let gap = (b.mean_probability? - b.fraction_in_gt?).abs();
                    Some(b.voxels as f64 / n as f64 * gap)
                })
                .sum()
        })
    }

    pub fn bins(&self) -> Vec<VoxelBin> {
        let n = self.voxels.len();
        (0..n)
            .map(|b| {
                let count = self.voxels[b];
                VoxelBin {
                    lo: b as f64 / n as f64,
                    hi: (b + 1) as f64 / n as f64,
                    voxels: count,
                    mean_probability: (count > 0).then(|| self.probability_sum[b] / count as f64),
                    fraction_in_gt: (count > 0).then(|| self.in_gt[b] as f64 / count as f64),
                }
            })
            .collect()
    }
}

/// The QU-BraTS numbers of a region over the cases with an uncertainty map: the mean score and
/// areas, and the mean curves.
#[derive(Debug, Clone, Serialize)]
pub struct QuBratsSummary {
    pub cases: usize,
    pub score: f64,
    pub auc_dice: f64,
    pub auc_ftp: f64,
    pub auc_ftn: f64,
    pub thresholds: Vec<f64>,
    pub dice: Vec<f64>,
    pub ftp_ratio: Vec<f64>,
    pub ftn_ratio: Vec<f64>,
}

impl QuBratsSummary {
    /// None without a case.
    pub fn mean(all: &[&QuBrats]) -> Option<QuBratsSummary> {
        let first = all.first()?;
        let mean =
            |f: fn(&QuBrats) -> f64| all.iter().map(|q| f(q)).sum::<f64>() / all.len() as f64;
        Some(QuBratsSummary {
            cases: all.len(),
            score: mean(|q| q.score),
            auc_dice: mean(|q| q.auc_dice),
            auc_ftp: mean(|q| q.auc_ftp),
            auc_ftn: mean(|q| q.auc_ftn),
            thresholds: first.thresholds.clone(),
            dice: mean_curve(all.iter().map(|q| q.dice.as_slice())),
            ftp_ratio: mean_curve(all.iter().map(|q| q.ftp_ratio.as_slice())),
            ftn_ratio: mean_curve(all.iter().map(|q| q.ftn_ratio.as_slice())),
        })
    }
}

/// The retention of a region over the cases with an uncertainty map: the mean curve and area.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionSummary {
    pub cases: usize,
    pub auc: f64,
    pub referred_fraction: Vec<f64>,
    pub dice: Vec<f64>,
}

impl RetentionSummary {
    /// None without a case.
    pub fn mean(all: &[&Retention]) -> Option<RetentionSummary> {
        let first = all.first()?;
        Some(RetentionSummary {
            cases: all.len(),
            auc: all.iter().map(|r| r.auc).sum::<f64>() / all.len() as f64,
            referred_fraction: first.referred_fraction.clone(),
            dice: mean_curve(all.iter().map(|r| r.dice.as_slice())),
        })
    }
}

/// The voxel calibration of a region pooled over the brain voxels of the cases with a
/// probability map.
#[derive(Debug, Clone, Serialize)]
pub struct VoxelCalibration {
    pub cases: usize,
    pub voxels: u64,
    pub ece: Option<f64>,
    pub bins: Vec<VoxelBin>,
}

impl VoxelCalibration {
    /// None without a case.
    pub fn pooled(all: &[&Reliability]) -> Option<VoxelCalibration> {
        let mut sum = Reliability::empty(all.first()?.voxels.len());
        all.iter().for_each(|r| sum.add(r));
        Some(VoxelCalibration {
            cases: all.len(),
            voxels: sum.voxels(),
            ece: sum.ece(),
            bins: sum.bins(),
        })
    }
}

/// The point-by-point mean of curves of one length.
fn mean_curve<'a>(curves: impl Iterator<Item = &'a [f64]> + Clone) -> Vec<f64> {
    let n = curves.clone().count().max(1) as f64;
    let len = curves.clone().map(<[f64]>::len).min().unwrap_or(0);
    (0..len)
        .map(|i| curves.clone().map(|c| c[i]).sum::<f64>() / n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(values: &[u8]) -> Array3<u8> {
        Array3::from_shape_vec((1, 1, values.len()), values.to_vec()).unwrap()
    }

    fn mask(values: &[u8]) -> Array3<bool> {
        line(values).mapv(|v| v > 0)
    }

    #[test]
    fn thresholds_are_the_scorers() {
        let t = thresholds(40);
        assert_eq!(t.len(), 41);
        assert_eq!((t[0], t[1], t[39], t[40]), (100.0, 97.5, 2.5, 0.0));
        assert_eq!(fractions(4), [0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn a_certain_map_filters_nothing() {
        // TP, FP, FN, TN, TN; all certain
        let (p, g) = (mask(&[1, 1, 0, 0, 0]), mask(&[1, 0, 1, 0, 0]));
        let brain = mask(&[1, 1, 1, 1, 1]);
        let q = qubrats(&Tally::new(&p, &g, &brain, &line(&[0; 5])), 40);
        assert!(q.dice.iter().all(|&d| d == 0.5));
        assert!(q.ftp_ratio.iter().chain(&q.ftn_ratio).all(|&r| r == 0.0));
        assert!((q.auc_dice - 0.5).abs() < 1e-12);
        assert!((q.score - 2.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn uncertain_errors_raise_the_dice_as_they_are_filtered() {
        // TP certain, FP at 60, FN at 80, TN at 60 and 0
        let (p, g) = (mask(&[1, 1, 0, 0, 0]), mask(&[1, 0, 1, 0, 0]));
        let brain = mask(&[1, 1, 1, 1, 1]);
        let t = Tally::new(&p, &g, &brain, &line(&[0, 60, 80, 60, 0]));
        let q = qubrats(&t, 40);
        let at = |tau: f64| q.thresholds.iter().position(|&x| x == tau).unwrap();
        assert_eq!(q.dice[at(100.0)], 0.5);
        assert_eq!(q.dice[at(77.5)], 2.0 / 3.0);
        assert_eq!(q.dice[at(57.5)], 1.0);
        let half = 1.0 / (2.0 + EPS);
        assert_eq!((q.ftn_ratio[at(60.0)], q.ftn_ratio[at(57.5)]), (0.0, half));
        assert!(q.ftp_ratio.iter().all(|&r| r == 0.0));
        // retention: referring the FN (most uncertain) first, then FP and a TN (tied at 60)
        let r = retention(&t, 5);
        assert_eq!(r.dice[0], 0.5);
        // the FN referred: 2 TP, 1 FP
        assert_eq!(r.dice[1], 0.8);
        // 2 of the 3 referred: the FN, then half of the (FP, TN) tie
        assert!((r.dice[2] - 2.0 * 2.0 / (4.0 + 0.5)).abs() < 1e-12);
        assert_eq!(r.dice[5], 1.0);
    }

    #[test]
    fn empty_prediction_and_empty_gt() {
        let none = mask(&[0, 0, 0]);
        let gt = mask(&[1, 1, 0]);
        let brain = mask(&[1, 1, 1]);
        let u = line(&[100, 0, 0]);
        let q = qubrats(&Tally::new(&none, &gt, &brain, &u), 40);
        // the uncertain GT voxel leaves below tau = 100: Dice 0 while the certain one stays
        assert!(q.dice.iter().all(|&d| d == 0.0));
        assert!(q.ftp_ratio.iter().all(|&r| r == 0.0));
        let q = qubrats(&Tally::new(&none, &none, &brain, &u), 40);
        assert!(q.dice.iter().all(|&d| d == 1.0));
        assert_eq!(q.ftn_ratio[1], 1.0 / (3.0 + EPS));
        let r = retention(&Tally::new(&none, &none, &brain, &u), 4);
        assert!(r.dice.iter().all(|&d| d == 1.0));
    }

    #[test]
    fn calibration_of_known_bins() {
        let p = Array3::from_shape_vec((1, 1, 5), vec![0.05f32, 0.05, 0.95, 1.0, 0.5]).unwrap();
        let g = mask(&[0, 1, 1, 1, 0]);
        let brain = mask(&[1, 1, 1, 1, 0]);
        let r = Reliability::of(&p, &g, &brain, 10);
        assert_eq!(r.voxels(), 4);
        let bins = r.bins();
        assert_eq!((bins[0].voxels, bins[9].voxels, bins[5].voxels), (2, 2, 0));
        // bin 0: mean 0.05, half in the GT; bin 9: mean 0.975, all in the GT
        let expected =
            0.5 * (0.5f64 - 0.05f32 as f64).abs() + 0.5 * (1.0 - (0.95f32 as f64 + 1.0) / 2.0);
        assert!((r.ece().unwrap() - expected).abs() < 1e-12);
        let mut sum = Reliability::empty(10);
        sum.add(&r);
        sum.add(&r);
        assert_eq!(sum.voxels(), 8);
        assert!((sum.ece().unwrap() - expected).abs() < 1e-12);
        assert_eq!(Reliability::empty(10).ece(), None);
    }
}
