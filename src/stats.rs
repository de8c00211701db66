//! Case-level statistics of logit distributions, as the study compares them: mean, standard
//! deviation, skewness and excess kurtosis (population moments, accumulated in f64), and
//! histograms with explicit bin edges; and the median the DICOM slice-gap check and the cohort
//! summary use.

use serde::{Deserialize, Serialize};

/// Moments of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub skewness: f64,
    pub excess_kurtosis: f64,
}

/// Histogram with `edges.len() == counts.len() + 1`; the last bin includes its right edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// The uncertainty maps (`uncertainty`) over the brain: entropies in bits on `[0, 1]`, the
/// logit variances on edges from 0 to the ceiling of the largest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UncertaintyStatistics {
    pub entropy: DistributionInfo,
    pub expected_entropy: DistributionInfo,
    pub mutual_information: DistributionInfo,
    pub logit_variance_between: DistributionInfo,
    pub logit_variance_within: DistributionInfo,
}

/// A case's aggregated logits: over the brain, and over the voxels above the blob threshold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statistics {
    pub brain_voxels: usize,
    pub positive_voxels: usize,
    pub brain: DistributionInfo,
    pub positive: DistributionInfo,
}

/// Moments and histogram of one distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistributionInfo {
    #[serde(flatten)]
    pub moments: Moments,
    pub histogram: Histogram,
}

/// Two-pass moments; skewness and kurtosis are 0 when the spread is 0 or the sample is empty.
pub fn moments(values: &[f32]) -> Moments {
    let n = values.len();
    if n == 0 {
        return Moments {
            count: 0,
            mean: 0.0,
            std: 0.0,
            skewness: 0.0,
            excess_kurtosis: 0.0,
        };
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
    for &v in values {
        let d = f64::from(v) - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    let (m2, m3, m4) = (m2 / n as f64, m3 / n as f64, m4 / n as f64);
    let (skewness, excess_kurtosis) = if m2 > 0.0 {
        (m3 / m2.powf(1.5), m4 / (m2 * m2) - 3.0)
    } else {
        (0.0, 0.0)
    };
    Moments {
        count: n,
        mean,
        std: m2.sqrt(),
        skewness,
        excess_kurtosis,
    }
}

/// Median (the mean of the middle two for an even count), `None` for no values. Values are
/// ordered by `f64::total_cmp`.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(0.5 * (v[n / 2 - 1] + v[n / 2])),
    }
}

/// `bins` equal bins spanning `[lo, hi]`.
pub fn edges(lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let hi = if hi > lo { hi } else { lo + 1.0 };
    (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect()
}

/// Counts `values` into the bins of `edges`; values outside are not counted.
pub fn histogram(values: &[f32], edges: &[f64]) -> Histogram {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0u64; bins];
    if bins > 0 {
        let (lo, hi) = (edges[0], edges[bins]);
        let width = (hi - lo) / bins as f64;
        for &v in values {
            let v = f64::from(v);
            if v < lo || v > hi {
                continue;
            }
            let mut b = ((v - lo) / width) as usize;
            b = b.min(bins - 1);
            // guard the rounding at bin boundaries
            while b > 0 && v < edges[b] {
                b -= 1;
            }
            while b + 1 < bins && v >= edges[b + 1] {
                b += 1;
            }
            counts[b] += 1;
        }
    }
    Histogram {
        edges: edges.to_vec(),
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_of_a_known_sample() {
        let m = moments(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(m.count, 5);
        assert!((m.mean - 4.0).abs() < 1e-12);
        // population: var = (9+4+1+0+36)/5 = 10
        assert!((m.std - 10f64.sqrt()).abs() < 1e-12);
        // m3 = (-27-8-1+0+216)/5 = 36
        assert!((m.skewness - 36.0 / 10f64.powf(1.5)).abs() < 1e-12);
        // m4 = (81+16+1+0+1296)/5 = 278.8
        assert!((m.excess_kurtosis - (278.8 / 100.0 - 3.0)).abs() < 1e-12);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 9.0, 2.0]), Some(3.0));
    }

    #[test]
    fn histogram_counts_every_value_in_range() {
        let e = edges(0.0, 1.0, 4);
        let h = histogram(&[0.0, 0.25, 0.3, 0.99, 1.0, 1.5, -0.1], &e);
        assert_eq!(h.counts, vec![1, 2, 0, 2]);
    }
}
