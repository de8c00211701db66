//! What a run found, region by region, on the canonical crop the ensemble ran on: the value the
//! writers (maps, DICOM SEG, figures, report) read. Each region has its aggregated maps, its blob
//! label map (`[z, y, x]`, values = blob ids), its blobs, its case-level statistics and, with the
//! deterministic comparison, the comparison; the first region is the run's primary region (the
//! whole tumor in the BraTS convention), whose results keep the file names and report fields of
//! a one-region run.

use std::collections::BTreeMap;

use ndarray::Array3;

use crate::aggregate::Aggregate;
use crate::blobs::Blob;
use crate::compare::Comparison;
use crate::regions::{LabelRule, Region};
use crate::stats::{DistributionInfo, Statistics, UncertaintyStatistics};

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
