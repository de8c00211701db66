//! Blob confidence as a detector of true blobs, pooled over a cohort: ROC AUC (Mann-Whitney,
//! ties count one half) and its curve, average precision (as scikit-learn defines it: the sum
//! over distinct thresholds of recall increments times precision), percentile bootstrap 95% CIs
//! (blobs resampled with replacement, ChaCha8 seeded; resamples with one class only are
//! skipped), the threshold maximising Youden's J (a blob is called true when its score >= the
//! threshold), and a calibration table of blob probabilities in equal bins of [0, 1]. Pure
//! functions of scores and truths.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    pub value: f64,
    pub ci95: [f64; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct Detector {
    pub score: String,
    pub auc: Option<Interval>,
    pub average_precision: Option<Interval>,
    pub youden_threshold: Option<f64>,
    pub youden_j: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationBin {
    pub lo: f64,
    pub hi: f64,
    pub blobs: usize,
    pub mean_probability: Option<f64>,
    pub fraction_true: Option<f64>,
}

/// How the intervals are drawn.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
}

/// The detector `name` of `scores` against `truth`.
pub fn detector(name: &str, scores: &[f64], truth: &[bool], bootstrap: Bootstrap) -> Detector {
    let (youden_threshold, youden_j) = match youden(scores, truth) {
        Some((t, j)) => (Some(t), Some(j)),
        None => (None, None),
    };
    Detector {
        score: name.into(),
        auc: with_ci(scores, truth, bootstrap, roc_auc),
        average_precision: with_ci(scores, truth, bootstrap, average_precision),
        youden_threshold,
        youden_j,
    }
}

/// The statistic and its percentile bootstrap 95% interval.
fn with_ci(
    scores: &[f64],
    truth: &[bool],
    bootstrap: Bootstrap,
    f: fn(&[f64], &[bool]) -> Option<f64>,
) -> Option<Interval> {
    let value = f(scores, truth)?;
    let mut rng = ChaCha8Rng::seed_from_u64(bootstrap.seed);
    let n = scores.len();
    let mut draws = Vec::with_capacity(bootstrap.resamples);
    let (mut s, mut t) = (vec![0.0; n], vec![false; n]);
    for _ in 0..bootstrap.resamples {
        for i in 0..n {
            let j = rng.random_range(0..n);
            s[i] = scores[j];
            t[i] = truth[j];
        }
        if let Some(v) = f(&s, &t) {
            draws.push(v);
        }
    }
    draws.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if draws.is_empty() {
            value
        } else {
            draws[((q * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)]
        }
    };
    Some(Interval {
        value,
        ci95: [pick(0.025), pick(0.975)],
    })
}

/// The counts of positives and negatives in `truth`; None unless both occur.
fn both_classes(truth: &[bool]) -> Option<(usize, usize)> {
    let pos = truth.iter().filter(|&&t| t).count();
    let neg = truth.len() - pos;
    (pos > 0 && neg > 0).then_some((pos, neg))
}

/// Indices of `scores` from the highest score to the lowest.
fn descending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// ROC AUC by ranks (Mann-Whitney U), ties counted one half; None without both classes.
pub fn roc_auc(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let (pos, neg) = both_classes(truth)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| truth[k]).count() as f64 * rank;
        i = j + 1;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

/// The ROC curve: (false positive rate, true positive rate) from (0, 0) to (1, 1), one point
/// per distinct score (high to low, tied scores together); None without both classes. Its
/// trapezoid area is `roc_auc`.
pub fn roc_curve(scores: &[f64], truth: &[bool]) -> Option<Vec<[f64; 2]>> {
    let (pos, neg) = both_classes(truth)?;
    let order = descending(scores);
    let mut points = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (i, &k) in order.iter().enumerate() {
        if truth[k] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order
            .get(i + 1)
            .is_none_or(|&next| scores[next] != scores[k]);
        if last_of_tie {
            points.push([fp as f64 / neg as f64, tp as f64 / pos as f64]);
        }
    }
    Some(points)
}

/// Average precision as scikit-learn computes it: sum over distinct thresholds (high to low) of
/// (recall increment) x precision; None without a positive.
pub fn average_precision(scores: &[f64], truth: &[bool]) -> Option<f64> {
    let pos = truth.iter().filter(|&&t| t).count();
    if pos == 0 {
        return None;
    }
    let order = descending(scores);
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            if truth[k] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        let recall = tp as f64 / pos as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

/// The score threshold (>= is called true) maximising TPR - FPR, and that J; the highest such
/// threshold on ties. None without both classes.
pub fn youden(scores: &[f64], truth: &[bool]) -> Option<(f64, f64)> {
    let pos = truth.iter().filter(|&&t| t).count() as f64;
    let neg = truth.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let mut thresholds: Vec<f64> = scores.to_vec();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut best: Option<(f64, f64)> = None;
    for t in thresholds {
        let tp = scores
            .iter()
            .zip(truth)
            .filter(|(&s, &y)| y && s >= t)
            .count() as f64;
        let fp = scores
            .iter()
            .zip(truth)
            .filter(|(&s, &y)| !y && s >= t)
            .count() as f64;
        let j = tp / pos - fp / neg;
        if best.is_none_or(|(_, bj)| j > bj) {
            best = Some((t, j));
        }
    }
    best
}

/// Equal bins of [0, 1] over `probability` (the last includes 1): count, mean, fraction true.
pub fn calibration(probability: &[f64], truth: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sum = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    let mut trues = vec![0usize; bins];
    for (&p, &t) in probability.iter().zip(truth) {
        if !p.is_finite() {
            continue;
        }
        let b = ((p.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sum[b] += p;
        count[b] += 1;
        trues[b] += usize::from(t);
    }
    (0..bins)
        .map(|b| CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            blobs: count[b],
            mean_probability: (count[b] > 0).then(|| sum[b] / count[b] as f64),
            fraction_true: (count[b] > 0).then(|| trues[b] as f64 / count[b] as f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roc_curve_has_the_auc_as_its_area() {
        let s = [0.9, 0.8, 0.8, 0.7, 0.6, 0.6, 0.2, 0.1];
        let t = [true, false, true, true, false, true, false, false];
        let curve = roc_curve(&s, &t).unwrap();
        assert_eq!(curve.first(), Some(&[0.0, 0.0]));
        assert_eq!(curve.last(), Some(&[1.0, 1.0]));
        // one point per distinct score
        assert_eq!(curve.len(), 1 + 6);
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
            .sum();
        assert!((area - roc_auc(&s, &t).unwrap()).abs() < 1e-12);
        assert_eq!(roc_curve(&s, &[true; 8]), None);
    }

    #[test]
    fn auc_and_ap_of_a_known_ranking() {
        let s = [0.9, 0.8, 0.7, 0.6];
        let t = [true, false, true, false];
        assert_eq!(roc_auc(&s, &t), Some(0.75));
        // precision at recall 0.5: 1, at recall 1: 2/3
        let ap = average_precision(&s, &t).unwrap();
        assert!((ap - (0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(roc_auc(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(roc_auc(&s, &[true; 4]), None);
        assert_eq!(youden(&s, &t), Some((0.9, 0.5)));
    }

    #[test]
    fn calibration_bins_count_every_blob() {
        let c = calibration(&[0.05, 0.95, 1.0, 0.5], &[false, true, true, false], 2);
        assert_eq!(c[0].blobs, 1);
        assert_eq!(c[1].blobs, 3);
        assert_eq!(c[1].fraction_true, Some(2.0 / 3.0));
    }
}
