//! The deterministic ensemble beside the stochastic one (`ensemble.compare_deterministic`,
//! `--compare-deterministic`): the same models, loaded once, run one noise-free pass each into a
//! second aggregator, and the report's `comparison` section puts both side by side.
//!
//! Inputs are the deterministic `Aggregate` and the stochastic run's label map, both on the
//! canonical crop the ensemble ran on (`[z, y, x]`), so a stochastic blob's voxels index the
//! deterministic maps directly. Each stochastic blob's deterministic confidence is the mean of the
//! deterministic aggregated logit (f32) over the blob's voxels; per-model means and the
//! deterministic pass agreement come from the per-pass f16 copies (one pass per model), as the
//! stochastic ones do. Case-level statistics use the stochastic run's histogram edges so the two
//! histograms are comparable bin by bin.

use std::collections::BTreeMap;

use ndarray::{Array3, Zip};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::blobs::{self, Blob};
use crate::pipeline::{Decision, Decisions};
use crate::stats;
use crate::stats::{DistributionInfo, Statistics, UncertaintyStatistics};
use crate::uncertainty::UncertaintyMaps;

/// The report's `comparison` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub deterministic: DeterministicSummary,
    /// One entry per stochastic blob, in blob-id order.
    pub blobs: Vec<BlobComparison>,
}

/// The deterministic ensemble's own numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeterministicSummary {
    pub passes_per_model: usize,
    pub sigma: f32,
    /// Same shape as the report's `statistics`, with the stochastic run's histogram edges.
    pub statistics: Statistics,
    /// Per model: its (single, noise-free) logits over the brain, from the f16 pass copies.
    pub model_statistics: BTreeMap<String, DistributionInfo>,
    /// Blobs the deterministic aggregate gives on its own (same threshold, connectivity and
    /// minimum size).
    pub blobs_found: usize,
    /// Its uncertainty maps over the brain, on the stochastic run's edges: with one noise-free
    /// pass per model only the models disagree (no within-model variance). Absent from reports
    /// of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<UncertaintyStatistics>,
}

/// One stochastic blob under both ensembles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobComparison {
    pub id: u32,
    pub voxels: usize,
    pub stochastic_mean_logit: f64,
    pub deterministic_mean_logit: f64,
    pub stochastic_pass_agreement: f64,
    /// Fraction of models whose noise-free blob-mean logit exceeds the threshold.
    pub deterministic_pass_agreement: f64,
    pub deterministic_model_mean_logits: BTreeMap<String, f64>,
    /// Mean entropy and mutual information (bits) over the blob under both ensembles, and the
    /// deterministic between-model logit variance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stochastic_mean_entropy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic_mean_entropy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stochastic_mean_mutual_information: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic_mean_mutual_information: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic_mean_logit_variance_between: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stochastic_decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deterministic_decision: Option<Decision>,
}

/// What `build` needs beside the deterministic aggregate.
pub struct CompareInputs<'a> {
    /// Stochastic blob ids on the canonical crop.
    pub labels: &'a Array3<u32>,
    pub stochastic_blobs: &'a [Blob],
    pub model_names: &'a [String],
    pub brain: &'a Array3<bool>,
    pub threshold: f32,
    pub decisions: Option<Decisions>,
    /// The stochastic run's histogram edges, of the logits and of the logit variances.
    pub edges: &'a [f64],
    pub variance_edges: &'a [Vec<f64>; 2],
    pub histogram_bins: usize,
    /// Blobs the deterministic aggregate gives on its own.
    pub deterministic_blobs_found: usize,
}

/// The comparison section; fails only when a spilled pass cannot be read back.
pub fn build(det: &Aggregate, inputs: &CompareInputs) -> std::io::Result<Comparison> {
    let statistics = statistics(&det.logit, inputs.brain, inputs.threshold, inputs.edges);
    let model_statistics = model_statistics(det, inputs)?;
    let n = inputs.stochastic_blobs.len();
    let means = blob_means(inputs.labels, n, &det.logit);
    let u = &det.uncertainty;
    let entropy = blob_means(inputs.labels, n, &u.entropy);
    let information = blob_means(inputs.labels, n, &u.mutual_information);
    let between = blob_means(inputs.labels, n, &u.variance_between);
    let pass_sums = blobs::pass_sums(inputs.labels, n, det)?;
    let models = det.passes.models().to_vec();
    let blobs = inputs
        .stochastic_blobs
        .iter()
        .map(|b| {
            let id = b.id as usize;
            let per_pass: Vec<f64> = pass_sums.iter().map(|s| s[id] / b.voxels as f64).collect();
            let agreeing = per_pass
                .iter()
                .filter(|&&v| v > f64::from(inputs.threshold))
                .count();
            let model_means = inputs
                .model_names
                .iter()
                .enumerate()
                .map(|(m, name)| {
                    let own: Vec<f64> = models
                        .iter()
                        .zip(&per_pass)
                        .filter(|(&pm, _)| pm == m)
                        .map(|(_, &v)| v)
                        .collect();
                    let mean = own.iter().sum::<f64>() / own.len().max(1) as f64;
                    (name.clone(), mean)
                })
                .collect();
            BlobComparison {
                id: b.id,
                voxels: b.voxels,
                stochastic_mean_logit: b.mean_logit,
                deterministic_mean_logit: means[id],
                stochastic_pass_agreement: b.pass_agreement,
                deterministic_pass_agreement: agreeing as f64 / per_pass.len().max(1) as f64,
                deterministic_model_mean_logits: model_means,
                stochastic_mean_entropy: Some(b.mean_entropy),
                deterministic_mean_entropy: Some(entropy[id]),
                stochastic_mean_mutual_information: Some(b.mean_mutual_information),
                deterministic_mean_mutual_information: Some(information[id]),
                deterministic_mean_logit_variance_between: Some(between[id]),
                stochastic_decision: inputs.decisions.map(|d| d.decide(b.mean_logit)),
                deterministic_decision: inputs.decisions.map(|d| d.decide(means[id])),
            }
        })
        .collect();
    Ok(Comparison {
        deterministic: DeterministicSummary {
            passes_per_model: 1,
            sigma: 0.0,
            statistics,
            model_statistics,
            blobs_found: inputs.deterministic_blobs_found,
            uncertainty: Some(uncertainty_statistics(
                u,
                inputs.brain,
                inputs.histogram_bins,
                inputs.variance_edges,
            )),
        },
        blobs,
    })
}

/// `means[id]`: mean of `logit` over the voxels labelled `id` (ids 1..=n; 0 for an empty id).
pub fn blob_means(labels: &Array3<u32>, n: usize, logit: &Array3<f32>) -> Vec<f64> {
    let mut sums = vec![0.0f64; n + 1];
    let mut counts = vec![0usize; n + 1];
    Zip::from(labels).and(logit).for_each(|&l, &v| {
        if l > 0 && (l as usize) <= n {
            sums[l as usize] += f64::from(v);
            counts[l as usize] += 1;
        }
    });
    sums.iter()
        .zip(&counts)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect()
}

/// Case-level statistics of `logit` over `brain` and over `logit > threshold`, binned on `edges`.
pub fn statistics(
    logit: &Array3<f32>,
    brain: &Array3<bool>,
    threshold: f32,
    edges: &[f64],
) -> Statistics {
    let mut inside = Vec::new();
    let mut positive = Vec::new();
    Zip::from(logit).and(brain).for_each(|&v, &b| {
        if b {
            inside.push(v);
        }
        if v > threshold {
            positive.push(v);
        }
    });
    Statistics {
        brain_voxels: inside.len(),
        positive_voxels: positive.len(),
        brain: describe(&inside, edges),
        positive: describe(&positive, edges),
    }
}

/// The uncertainty maps over `brain`: entropies on `bins` bins of `[0, 1]`, the between- and
/// within-model variances on `variance_edges` (one set each).
pub fn uncertainty_statistics(
    u: &UncertaintyMaps,
    brain: &Array3<bool>,
    bins: usize,
    variance_edges: &[Vec<f64>; 2],
) -> UncertaintyStatistics {
    let unit = stats::edges(0.0, 1.0, bins);
    let over = |map: &Array3<f32>, edges: &[f64]| {
        let values: Vec<f32> = map
            .iter()
            .zip(brain.iter())
            .filter(|(_, &b)| b)
            .map(|(&v, _)| v)
            .collect();
        describe(&values, edges)
    };
    UncertaintyStatistics {
        entropy: over(&u.entropy, &unit),
        expected_entropy: over(&u.expected_entropy, &unit),
        mutual_information: over(&u.mutual_information, &unit),
        logit_variance_between: over(&u.variance_between, &variance_edges[0]),
        logit_variance_within: over(&u.variance_within, &variance_edges[1]),
    }
}

/// Edges for the between- and within-model logit variances over `brain`: `bins` bins from 0 to
/// the ceiling of the largest of each (at least 1).
pub fn variance_edges(u: &UncertaintyMaps, brain: &Array3<bool>, bins: usize) -> [Vec<f64>; 2] {
    [&u.variance_between, &u.variance_within].map(|map| {
        let top = map
            .iter()
            .zip(brain.iter())
            .filter(|(_, &b)| b)
            .fold(0.0f32, |top, (&v, _)| top.max(v));
        stats::edges(0.0, f64::from(top.ceil()).max(1.0), bins)
    })
}

fn describe(values: &[f32], edges: &[f64]) -> DistributionInfo {
    DistributionInfo {
        moments: stats::moments(values),
        histogram: stats::histogram(values, edges),
    }
}

fn model_statistics(
    det: &Aggregate,
    inputs: &CompareInputs,
) -> std::io::Result<BTreeMap<String, DistributionInfo>> {
    let mut out = BTreeMap::new();
    det.passes.for_each(|_, m, logits| {
        let mut values = Vec::new();
        Zip::from(&logits).and(inputs.brain).for_each(|&v, &b| {
            if b {
                values.push(v.to_f32());
            }
        });
        let name = inputs
            .model_names
            .get(m)
            .cloned()
            .unwrap_or_else(|| format!("model-{m}"));
        out.insert(name, describe(&values, inputs.edges));
    })?;
    Ok(out)
}

/// Per model, the mean of its passes' logits over the brain (for the stochastic ensemble, the
/// model's own ten-pass ensemble), binned on `edges`; one running sum per model and brain voxel
/// (f64), filled in one read of the per-pass f16 copies.
pub fn model_mean_statistics(
    agg: &Aggregate,
    brain: &Array3<bool>,
    model_names: &[String],
    edges: &[f64],
) -> std::io::Result<BTreeMap<String, DistributionInfo>> {
    let inside = brain.iter().filter(|&&b| b).count();
    let mut sums = vec![vec![0.0f64; inside]; model_names.len()];
    let mut passes = vec![0usize; model_names.len()];
    agg.passes.for_each(|_, m, logits| {
        if let (Some(sum), Some(n)) = (sums.get_mut(m), passes.get_mut(m)) {
            *n += 1;
            let values = logits.iter().zip(brain.iter()).filter(|(_, &b)| b);
            for (s, (v, _)) in sum.iter_mut().zip(values) {
                *s += f64::from(v.to_f32());
            }
        }
    })?;
    Ok(model_names
        .iter()
        .zip(sums.iter().zip(&passes))
        .filter(|(_, (_, &n))| n > 0)
        .map(|(name, (sum, &n))| {
            let means: Vec<f32> = sum.iter().map(|&s| (s / n as f64) as f32).collect();
            (name.clone(), describe(&means, edges))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_means_average_each_label() {
        let labels = Array3::from_shape_vec((1, 1, 5), vec![0, 1, 1, 2, 0]).unwrap();
        let logit = Array3::from_shape_vec((1, 1, 5), vec![9.0, 1.0, 2.0, -3.0, 9.0]).unwrap();
        assert_eq!(blob_means(&labels, 2, &logit), vec![0.0, 1.5, -3.0]);
    }

    #[test]
    fn model_means_average_each_models_passes_over_the_brain() {
        use crate::aggregate::{Aggregator, PassStore};
        use crate::pipeline::Aggregation;
        let mut agg = Aggregator::new(
            [1, 1, 3],
            Aggregation::MeanLogit,
            PassStore::in_memory([1, 1, 3]),
        );
        let pass = |v: [f32; 3]| Array3::from_shape_vec((1, 1, 3), v.to_vec()).unwrap();
        agg.add(0, pass([1.0, -3.0, 9.0]).view());
        agg.add(1, pass([2.0, 2.0, 9.0]).view());
        agg.add(0, pass([3.0, -1.0, 9.0]).view());
        let agg = agg.finish().unwrap();
        let brain = Array3::from_shape_vec((1, 1, 3), vec![true, true, false]).unwrap();
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let got = model_mean_statistics(&agg, &brain, &names, &[-4.0, 0.0, 4.0]).unwrap();
        // model a: means 2 and -2; model b: 2 and 2; model c ran no pass
        assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(got["a"].histogram.counts, vec![1, 1]);
        assert_eq!(got["a"].moments.mean, 0.0);
        assert_eq!(got["b"].histogram.counts, vec![0, 2]);
    }

    #[test]
    fn statistics_use_the_given_edges() {
        let logit = Array3::from_shape_vec((1, 1, 4), vec![-2.0, -0.5, 0.5, 3.0]).unwrap();
        let brain = Array3::from_shape_vec((1, 1, 4), vec![true, true, true, false]).unwrap();
        let s = statistics(&logit, &brain, 0.0, &[-4.0, 0.0, 4.0]);
        assert_eq!(s.brain_voxels, 3);
        assert_eq!(s.positive_voxels, 2);
        assert_eq!(s.brain.histogram.counts, vec![2, 1]);
        assert_eq!(s.positive.histogram.counts, vec![0, 2]);
        assert_eq!(s.brain.histogram.edges, vec![-4.0, 0.0, 4.0]);
    }

    #[test]
    fn decisions_split_on_accept_and_reject() {
        let d = Decisions {
            accept: 2.0,
            reject: 0.5,
        };
        assert_eq!(d.decide(2.0), Decision::Accept);
        assert_eq!(d.decide(1.0), Decision::Review);
        assert_eq!(d.decide(0.5), Decision::Review);
        assert_eq!(d.decide(0.4), Decision::Reject);
    }
}
