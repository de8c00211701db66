//! Streaming aggregation of the ensemble's logit maps.
//!
//! Passes arrive one at a time; per voxel the aggregator keeps the running mean and the sum of
//! squared deviations (Welford's update, f32, one pass over memory), the running mean of
//! probabilities when that aggregation is chosen, and a compact f16 copy of each pass's logits
//! (2 bytes per voxel per pass, for per-blob pass agreement and per-model means). It never holds
//! the passes as f32. The spread is the sample standard deviation across passes (0 with one pass).
//! Maps are `[z, y, x]` on whatever grid the passes come on (the canonical crop).

use half::f16;
use ndarray::{Array3, ArrayView3, Zip};

use crate::pipeline::Aggregation;

/// One pass's logits, compact.
#[derive(Debug, Clone)]
pub struct PassMap {
    pub model: usize,
    pub logits: Array3<f16>,
}

/// Running statistics over passes; `finish` consumes it.
pub struct Aggregator {
    aggregation: Aggregation,
    count: usize,
    mean: Array3<f32>,
    m2: Array3<f32>,
    prob_mean: Option<Array3<f32>>,
    passes: Vec<PassMap>,
}

/// The aggregated maps.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// The logit that is thresholded: the mean logit, or the logit of the mean probability.
    pub logit: Array3<f32>,
    pub mean_logit: Array3<f32>,
    pub std_logit: Array3<f32>,
    pub probability: Array3<f32>,
    pub passes: Vec<PassMap>,
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

impl Aggregator {
    pub fn new(shape: [usize; 3], aggregation: Aggregation) -> Aggregator {
        Aggregator {
            aggregation,
            count: 0,
            mean: Array3::zeros(shape),
            m2: Array3::zeros(shape),
            prob_mean: (aggregation == Aggregation::MeanProbability).then(|| Array3::zeros(shape)),
            passes: Vec::new(),
        }
    }

    /// Adds one pass of `model`.
    pub fn add(&mut self, model: usize, logits: ArrayView3<f32>) {
        self.count += 1;
        let inv_n = 1.0 / self.count as f32;
        Zip::from(&mut self.mean)
            .and(&mut self.m2)
            .and(&logits)
            .par_for_each(|mean, m2, &x| {
                let delta = x - *mean;
                *mean += delta * inv_n;
                *m2 += delta * (x - *mean);
            });
        if let Some(p) = self.prob_mean.as_mut() {
            Zip::from(p)
                .and(&logits)
                .par_for_each(|p, &x| *p += (sigmoid(x) - *p) * inv_n);
        }
        let mut compact = Array3::from_elem(logits.raw_dim(), f16::ZERO);
        Zip::from(&mut compact)
            .and(&logits)
            .par_for_each(|c, &x| *c = f16::from_f32(x));
        self.passes.push(PassMap {
            model,
            logits: compact,
        });
    }

    pub fn finish(self) -> Aggregate {
        let n = self.count;
        let std_logit = self.m2.mapv(|m2| {
            if n > 1 {
                (m2.max(0.0) / (n - 1) as f32).sqrt()
            } else {
                0.0
            }
        });
        let (logit_map, probability) = match (self.aggregation, self.prob_mean) {
            (Aggregation::MeanProbability, Some(p)) => (p.mapv(logit), p),
            _ => (self.mean.clone(), self.mean.mapv(sigmoid)),
        };
        Aggregate {
            logit: logit_map,
            mean_logit: self.mean,
            std_logit,
            probability,
            passes: self.passes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_two_pass_statistics() {
        let values = [1.5f32, -2.0, 0.25, 3.0, 7.5];
        let mut agg = Aggregator::new([1, 1, 2], Aggregation::MeanLogit);
        for (i, v) in values.iter().enumerate() {
            agg.add(i % 2, Array3::from_elem((1, 1, 2), *v).view());
        }
        let a = agg.finish();
        let mean = values.iter().sum::<f32>() / 5.0;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!((a.mean_logit[[0, 0, 1]] - mean).abs() < 1e-6);
        assert!((a.std_logit[[0, 0, 0]] - var.sqrt()).abs() < 1e-5);
        assert_eq!(a.passes.len(), 5);
        assert_eq!(a.passes[3].model, 1);
        assert_eq!(a.passes[2].logits[[0, 0, 0]], f16::from_f32(0.25));
    }

    #[test]
    fn mean_probability_aggregation() {
        let mut agg = Aggregator::new([1, 1, 1], Aggregation::MeanProbability);
        agg.add(0, Array3::from_elem((1, 1, 1), 10.0).view());
        agg.add(0, Array3::from_elem((1, 1, 1), -10.0).view());
        let a = agg.finish();
        assert!((a.probability[[0, 0, 0]] - 0.5).abs() < 1e-6);
        assert!(a.logit[[0, 0, 0]].abs() < 1e-4);
        assert_eq!(a.mean_logit[[0, 0, 0]], 0.0);
    }
}
