//! What the DICOM SEG carries, on the input grid: the primary region's blobs (all, or only the
//! accepted ones with `dicom_output.seg_blobs: accepted`, other blobs' voxels set to 0, ids
//! kept), its probability for the FRACTIONAL SEG, and the AlgorithmParameters text that says
//! what produced the mask.

use ndarray::Array3;

use crate::aggregate::sigmoid;
use crate::blobs::Blob;
use crate::pipeline::{Decision, Pipeline, SegBlobs};
use crate::preprocess::Prepared;
use crate::results::Results;

/// The SEG's content.
#[derive(Debug, Clone)]
pub struct SegSelection {
    /// Blob ids on the input grid (`[k, j, i]`), 0 outside the selected blobs.
    pub labels: Array3<u32>,
    pub blobs: Vec<Blob>,
    /// The probability on the input grid, for `prob-seg.dcm`.
    pub probability: Option<Array3<f32>>,
    pub parameters: String,
}

/// The SEG's content from a run's results; `names` are the models' names.
pub fn select(
    results: &Results,
    prepared: &Prepared,
    p: &Pipeline,
    names: &[String],
) -> SegSelection {
    let primary = results.primary();
    let labels = prepared.to_input_grid(primary.labels.view(), 0);
    let (labels, blobs) = selected_blobs(labels, &primary.blobs, p);
    let d = &p.dicom_output;
    let probability = (d.probability_seg || !d.probability_levels.is_empty()).then(|| {
        let fill = sigmoid(p.inference.outside_logit);
        prepared.to_input_grid(primary.aggregate.probability.view(), fill)
    });
    SegSelection {
        labels,
        blobs,
        probability,
        parameters: algorithm_parameters(p, names),
    }
}

/// All blobs, or only the accepted ones (other blobs' voxels set to 0).
fn selected_blobs(
    mut labels: Array3<u32>,
    found: &[Blob],
    p: &Pipeline,
) -> (Array3<u32>, Vec<Blob>) {
    let decisions = match (p.dicom_output.seg_blobs, p.blobs.decisions) {
        (SegBlobs::Accepted, Some(d)) => d,
        _ => return (labels, found.to_vec()),
    };
    let kept: Vec<Blob> = found
        .iter()
        .filter(|b| decisions.decide(b.mean_logit) == Decision::Accept)
        .cloned()
        .collect();
    let mut keep = vec![false; found.iter().map(|b| b.id as usize).max().unwrap_or(0) + 1];
    for b in &kept {
        keep[b.id as usize] = true;
    }
    labels.mapv_inplace(|l| if keep[l as usize] { l } else { 0 });
    (labels, kept)
}

/// AlgorithmParameters of the SEG segments: what produced the mask.
fn algorithm_parameters(p: &Pipeline, names: &[String]) -> String {
    let selection = match (p.dicom_output.seg_blobs, p.blobs.decisions) {
        (SegBlobs::Accepted, Some(d)) => {
            format!("; blobs: accepted only (mean logit >= {})", d.accept)
        }
        _ => String::new(),
    };
    format!(
        "models: {}; mode: {}; passes per model: {}; sigma: {}; seed: {}; aggregation: {}; \
         threshold: {}; connectivity: {}; min voxels: {}{selection}",
        names.join(", "),
        p.ensemble.mode.name(),
        p.passes_per_model(),
        p.effective_sigma(),
        p.ensemble.seed,
        p.ensemble.aggregation.name(),
        p.blobs.threshold,
        p.blobs.connectivity,
        p.blobs.min_voxels
    )
}
