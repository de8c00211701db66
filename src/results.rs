//! What a run found, region by region, on the canonical crop the ensemble ran on: the value the
//! writers (maps, DICOM SEG, figures, report) read. Each region has its aggregated maps, its blob
//! label map (`[z, y, x]`, values = blob ids), its blobs, its case-level statistics and, with the
//! deterministic comparison, the comparison; the first region is the run's primary region (the
//! whole tumor in the BraTS convention), whose results keep the file names and report fields of
//! a one-region run. The functions below build them from the aggregates, stage by stage.

use std::collections::BTreeMap;

use ndarray::{Array3, ArrayView3, Zip};

use crate::aggregate::{Aggregate, RegionAggregates};
use crate::blobs::{self, Blob, BlobOptions, Frame};
use crate::compare::{self, CompareInputs, Comparison};
use crate::pipeline::Pipeline;
use crate::preprocess::Prepared;
use crate::regions::{self, LabelRule, Region, RegionPlan};
use crate::stats::{self, DistributionInfo, Statistics, UncertaintyStatistics};

/// One region's results.
#[derive(Debug)]
pub struct RegionResult {
    pub region: Region,
    /// Indices of the models whose passes fed it, in model order.
    pub feeders: Vec<usize>,
    pub aggregate: Aggregate,
    /// Blob ids on the canonical crop (0 = background).
    pub labels: Array3<u32>,
    pub blobs: Vec<Blob>,
    pub statistics: Statistics,
    /// The histogram edges of `statistics` (the comparison bins on the same edges).
    pub edges: Vec<f64>,
    /// The uncertainty maps over the brain, and the edges of its logit variances.
    pub uncertainty: UncertaintyStatistics,
    pub variance_edges: [Vec<f64>; 2],
    /// Per feeding model, the mean of its passes over the brain (with figures or the
    /// comparison).
    pub model_statistics: Option<BTreeMap<String, DistributionInfo>>,
    pub comparison: Option<Comparison>,
}

/// The label map in the BraTS convention, on the canonical crop.
#[derive(Debug)]
pub struct LabelMap {
    pub map: Array3<u8>,
    pub rule: LabelRule,
    /// `(label, name)` of each non-zero label, ascending.
    pub names: Vec<(u8, String)>,
}

/// Everything a run found.
#[derive(Debug)]
pub struct Results {
    /// Region results in the run's region order (the primary region first).
    pub regions: Vec<RegionResult>,
    pub label_map: Option<LabelMap>,
}

impl Results {
    pub fn primary(&self) -> &RegionResult {
        &self.regions[0]
    }

    /// Whether the run reports more than one region.
    pub fn multi_region(&self) -> bool {
        self.regions.len() > 1
    }
}

/// Blob ids on the canonical crop and the blobs, of one region.
pub type Found = (Array3<u32>, Vec<Blob>);

/// Each region's blobs, and the label map.
pub fn find_blobs(
    aggregates: &RegionAggregates,
    plan: &RegionPlan,
    p: &Pipeline,
    frame: &Frame,
) -> std::io::Result<(Vec<Found>, Option<LabelMap>)> {
    let opts = blob_options(p);
    let found = aggregates
        .regions
        .iter()
        .enumerate()
        .map(|(r, aggregate)| blobs::find(aggregate, &plan.feeders(r), &opts, frame))
        .collect::<std::io::Result<Vec<_>>>()?;
    let label_map = plan.label_map.as_ref().map(|(rule, names)| LabelMap {
        map: label_map(rule, aggregates, p.blobs.threshold),
        rule: rule.clone(),
        names: names.clone(),
    });
    Ok((found, label_map))
}

/// The label map by `rule` from the regions' aggregated logits or averaged class probabilities.
fn label_map(rule: &LabelRule, aggregates: &RegionAggregates, threshold: f32) -> Array3<u8> {
    match rule {
        LabelRule::Argmax { labels } => {
            let means = aggregates
                .class_means
                .as_ref()
                .expect("the region aggregator keeps the class means for the argmax rule");
            regions::argmax_labels(labels, means.view())
        }
        LabelRule::Nested { steps } => {
            let logits: Vec<ArrayView3<f32>> =
                aggregates.regions.iter().map(|a| a.logit.view()).collect();
            regions::nested_labels(steps, &logits, threshold)
        }
    }
}

/// Each region's results with its case-level statistics.
pub fn region_results(
    aggregates: RegionAggregates,
    found: Vec<Found>,
    plan: &RegionPlan,
    p: &Pipeline,
    prepared: &Prepared,
    label_map: Option<LabelMap>,
) -> Results {
    let regions = aggregates
        .regions
        .into_iter()
        .zip(found)
        .enumerate()
        .map(|(r, (aggregate, (labels, blobs)))| {
            let edges = histogram_edges(&aggregate.logit, &prepared.brain, p);
            let statistics =
                compare::statistics(&aggregate.logit, &prepared.brain, p.blobs.threshold, &edges);
            let bins = p.outputs.histogram_bins;
            let u = &aggregate.uncertainty;
            let variance_edges = compare::variance_edges(u, &prepared.brain, bins);
            let uncertainty =
                compare::uncertainty_statistics(u, &prepared.brain, bins, &variance_edges);
            RegionResult {
                region: plan.regions[r].clone(),
                feeders: plan.feeders(r),
                aggregate,
                labels,
                blobs,
                statistics,
                edges,
                uncertainty,
                variance_edges,
                model_statistics: None,
                comparison: None,
            }
        })
        .collect();
    Results { regions, label_map }
}

pub fn blob_options(p: &Pipeline) -> BlobOptions {
    BlobOptions {
        threshold: p.blobs.threshold,
        connectivity: p.blobs.connectivity,
        min_voxels: p.blobs.min_voxels,
    }
}

/// Histogram edges of the case-level statistics: `histogram_bins` bins from the floor of the
/// lowest to the ceiling of the highest aggregated logit in the brain.
fn histogram_edges(logit: &Array3<f32>, brain: &Array3<bool>, p: &Pipeline) -> Vec<f64> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    Zip::from(logit).and(brain).for_each(|&v, &inside| {
        if inside {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    });
    if lo > hi {
        stats::edges(0.0, 1.0, p.outputs.histogram_bins)
    } else {
        stats::edges(
            f64::from(lo.floor()),
            f64::from(hi.ceil()),
            p.outputs.histogram_bins,
        )
    }
}

/// Puts the deterministic ensemble (same models, no noise, one pass each) beside each region's
/// stochastic results (see `compare`).
pub fn compare_deterministic(
    results: &mut Results,
    det: RegionAggregates,
    p: &Pipeline,
    names: &[String],
    frame: &Frame,
    prepared: &Prepared,
) -> std::io::Result<()> {
    let opts = blob_options(p);
    for (result, det) in results.regions.iter_mut().zip(&det.regions) {
        let (_, own) = blobs::find(det, &result.feeders, &opts, frame)?;
        let inputs = CompareInputs {
            labels: &result.labels,
            stochastic_blobs: &result.blobs,
            model_names: names,
            brain: &prepared.brain,
            threshold: p.blobs.threshold,
            decisions: p.blobs.decisions,
            edges: &result.edges,
            variance_edges: &result.variance_edges,
            histogram_bins: p.outputs.histogram_bins,
            deterministic_blobs_found: own.len(),
        };
        result.comparison = Some(compare::build(det, &inputs)?);
    }
    Ok(())
}

/// Per region, each feeding model's mean over its passes in the brain.
pub fn model_statistics(
    results: &mut Results,
    names: &[String],
    prepared: &Prepared,
) -> std::io::Result<()> {
    for result in &mut results.regions {
        result.model_statistics = Some(compare::model_mean_statistics(
            &result.aggregate,
            &prepared.brain,
            names,
            &result.edges,
        )?);
    }
    Ok(())
}
