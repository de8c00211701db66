//! Where the doubt comes from: the per-voxel decomposition of an ensemble's uncertainty,
//! accumulated pass by pass (running sums, never the passes themselves).
//!
//! With pass probabilities `p_t = sigmoid(l_t)` over the `N` passes that feed a region, and
//! `H(p) = -p log2 p - (1 - p) log2 (1 - p)` the binary entropy in bits (0 to 1):
//! - `entropy` = `H(mean_t p_t)`, the total uncertainty (of the mean of the pass probabilities);
//! - `expected_entropy` = `mean_t H(p_t)`, the aleatoric part (what each pass is unsure of);
//! - `mutual_information` = entropy - expected entropy, the epistemic part (BALD; Houlsby et al.
//!   2011), clamped at 0 against rounding (Jensen's inequality makes it non-negative);
//! - the population variance of the pass logits split by the law of total variance into the
//!   `within`-model part `sum_m M2_m / N` (each model's sum of squared deviations of its passes
//!   from its own mean) and the `between`-model part, the rest: `sum_m n_m (mean_m - mean)^2 /
//!   N`. With the same number of passes per model these are the mean of the models' pass
//!   variances and the variance of the models' mean logits.
//!
//! Each pass's entropy is computed from its logit without forming `p` near 0 or 1:
//! `H(sigmoid(l)) = (p softplus(-l) + (1 - p) softplus(l)) / ln 2`. Passes arrive model by model
//! (the ensemble runs each model's passes in turn), so one model's running mean and squared
//! deviations are kept at a time and folded into the within-model sum when the next model
//! starts. All maps are `[z, y, x]` f32 on the grid the passes come on.

use ndarray::{Array3, ArrayView3, Zip};

/// The decomposed uncertainty of a region.
#[derive(Debug)]
pub struct UncertaintyMaps {
    /// Mean of the pass probabilities.
    pub probability: Array3<f32>,
    pub entropy: Array3<f32>,
    pub expected_entropy: Array3<f32>,
    pub mutual_information: Array3<f32>,
    /// Between-model part of the population variance of the pass logits.
    pub variance_between: Array3<f32>,
    /// Within-model part.
    pub variance_within: Array3<f32>,
}

/// Running sums over the passes of one region.
pub struct UncertaintyAccumulator {
    count: usize,
    probability: Array3<f32>,
    expected_entropy: Array3<f32>,
    /// The model whose passes arrive now, and how many have.
    model: Option<(usize, usize)>,
    model_mean: Array3<f32>,
    model_m2: Array3<f32>,
    within_m2: Array3<f32>,
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Binary entropy, in bits, of `sigmoid(logit)`.
pub fn logit_entropy_bits(logit: f32) -> f32 {
    let p = 1.0 / (1.0 + (-logit).exp());
    (p * softplus(-logit) + (1.0 - p) * softplus(logit)) / std::f32::consts::LN_2
}

/// Binary entropy, in bits, of probability `p` (0 at 0 and 1).
pub fn entropy_bits(p: f32) -> f32 {
    if p <= 0.0 || p >= 1.0 {
        return 0.0;
    }
    -(p * p.log2() + (1.0 - p) * (1.0 - p).log2())
}

impl UncertaintyAccumulator {
    pub fn new(shape: [usize; 3]) -> UncertaintyAccumulator {
        UncertaintyAccumulator {
            count: 0,
            probability: Array3::zeros(shape),
            expected_entropy: Array3::zeros(shape),
            model: None,
            model_mean: Array3::zeros(shape),
            model_m2: Array3::zeros(shape),
            within_m2: Array3::zeros(shape),
        }
    }

    /// Adds one pass of `model`.
    pub fn add(&mut self, model: usize, logits: ArrayView3<f32>) {
        self.count += 1;
        let inv_n = 1.0 / self.count as f32;
        Zip::from(&mut self.probability)
            .and(&mut self.expected_entropy)
            .and(&logits)
            .par_for_each(|p, h, &x| {
                *p += (1.0 / (1.0 + (-x).exp()) - *p) * inv_n;
                *h += (logit_entropy_bits(x) - *h) * inv_n;
            });
        let passes = match self.model {
            Some((m, n)) if m == model => n + 1,
            _ => {
                self.fold_model();
                1
            }
        };
        self.model = Some((model, passes));
        let inv_m = 1.0 / passes as f32;
        Zip::from(&mut self.model_mean)
            .and(&mut self.model_m2)
            .and(&logits)
            .par_for_each(|mean, m2, &x| {
                let delta = x - *mean;
                *mean += delta * inv_m;
                *m2 += delta * (x - *mean);
            });
    }

    /// Adds the current model's squared deviations to the within-model sum and starts afresh.
    fn fold_model(&mut self) {
        if self.model.is_some() {
            Zip::from(&mut self.within_m2)
                .and(&mut self.model_mean)
                .and(&mut self.model_m2)
                .par_for_each(|w, mean, m2| {
                    *w += *m2;
                    *mean = 0.0;
                    *m2 = 0.0;
                });
        }
    }

    /// The maps, given the sum of squared deviations of all passes from their mean (`total_m2`,
    /// the aggregator's Welford M2 over the same passes).
    pub fn finish(mut self, total_m2: &Array3<f32>) -> UncertaintyMaps {
        self.fold_model();
        let inv_n = 1.0 / self.count.max(1) as f32;
        let entropy = self.probability.mapv(entropy_bits);
        let mut mutual_information = entropy.clone();
        Zip::from(&mut mutual_information)
            .and(&self.expected_entropy)
            .par_for_each(|mi, &h| *mi = (*mi - h).max(0.0));
        let variance_within = self.within_m2.mapv(|w| w.max(0.0) * inv_n);
        let mut variance_between = total_m2.mapv(|t| t.max(0.0) * inv_n);
        Zip::from(&mut variance_between)
            .and(&variance_within)
            .par_for_each(|b, &w| *b = (*b - w).max(0.0));
        UncertaintyMaps {
            probability: self.probability,
            entropy,
            expected_entropy: self.expected_entropy,
            mutual_information,
            variance_between,
            variance_within,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_a_logit_is_the_entropy_of_its_probability() {
        for l in [-30.0f32, -5.0, -0.5, 0.0, 0.7, 4.0, 25.0] {
            let p = 1.0 / (1.0 + f64::from(-l).exp());
            let h = if p <= 0.0 || p >= 1.0 {
                0.0
            } else {
                -(p * p.log2() + (1.0 - p) * (1.0 - p).log2())
            };
            assert!((f64::from(logit_entropy_bits(l)) - h).abs() < 1e-6, "{l}");
        }
        assert_eq!(logit_entropy_bits(0.0), 1.0);
        assert_eq!(entropy_bits(0.5), 1.0);
        assert_eq!((entropy_bits(0.0), entropy_bits(1.0)), (0.0, 0.0));
    }

    /// Two models, three passes each: the parts against a direct two-level computation.
    #[test]
    fn the_variance_splits_into_between_and_within_models() {
        let passes = [
            (0, 1.0f32),
            (0, 2.0),
            (0, 4.0),
            (1, -1.0),
            (1, 0.5),
            (1, 0.0),
        ];
        let mut aggregator = crate::aggregate::Aggregator::new(
            [1, 1, 1],
            crate::pipeline::Aggregation::MeanLogit,
            crate::aggregate::PassStore::in_memory([1, 1, 1]),
        );
        for &(m, v) in &passes {
            aggregator.add(m, Array3::from_elem((1, 1, 1), v).view());
        }
        let maps = aggregator.finish().unwrap().uncertainty;
        let values: Vec<f64> = passes.iter().map(|&(_, v)| f64::from(v)).collect();
        let mean = values.iter().sum::<f64>() / 6.0;
        let means = [7.0 / 3.0, -0.5 / 3.0];
        let between = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / 2.0;
        let within = [&values[..3], &values[3..]]
            .iter()
            .zip(means)
            .map(|(vs, m)| vs.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 3.0)
            .sum::<f64>()
            / 2.0;
        assert!((f64::from(maps.variance_between[[0, 0, 0]]) - between).abs() < 1e-5);
        assert!((f64::from(maps.variance_within[[0, 0, 0]]) - within).abs() < 1e-5);
        let p: Vec<f64> = values.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let h = |p: f64| -(p * p.log2() + (1.0 - p) * (1.0 - p).log2());
        let p_mean = p.iter().sum::<f64>() / 6.0;
        let expected = p.iter().map(|&q| h(q)).sum::<f64>() / 6.0;
        assert!((f64::from(maps.entropy[[0, 0, 0]]) - h(p_mean)).abs() < 1e-5);
        assert!((f64::from(maps.expected_entropy[[0, 0, 0]]) - expected).abs() < 1e-5);
        let mi = h(p_mean) - expected;
        assert!((f64::from(maps.mutual_information[[0, 0, 0]]) - mi).abs() < 1e-5);
    }
}
