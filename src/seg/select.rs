//! What the DICOM SEGs carry, on the input grid: each region's blobs (all, or only the accepted
//! ones with `dicom_output.seg_blobs: accepted`, other blobs' voxels set to 0, ids kept) and its
//! probability (for the FRACTIONAL and levels SEGs), the label map in the BraTS convention when
//! the run has one, and the AlgorithmParameters text that says what produced the masks.

use ndarray::Array3;

use crate::aggregate::sigmoid;
use crate::blobs::Blob;
use crate::io::case::Case;
use crate::pipeline::{Decision, Pipeline, SegBlobs};
use crate::preprocess::Prepared;
use crate::results::{RegionResult, Results};
use crate::seg::request::{LabelMapSeg, RegionSeg, SegInputs};

/// The SEGs' content.
#[derive(Debug, Clone)]
pub struct SegSelection {
    /// One per region, the primary first.
    pub regions: Vec<RegionSelection>,
    /// The label map in the BraTS convention on the input grid, and its labels' names.
    pub label_map: Option<LabelMapSelection>,
    pub parameters: String,
}

/// The label map on the input grid (as u32) and the names of its non-zero labels.
#[derive(Debug, Clone)]
pub struct LabelMapSelection {
    pub map: Array3<u32>,
    pub names: Vec<(u8, String)>,
}

/// One region's content.
#[derive(Debug, Clone)]
pub struct RegionSelection {
    pub name: String,
    /// Blob ids on the input grid (`[k, j, i]`), 0 outside the selected blobs.
    pub labels: Array3<u32>,
    pub blobs: Vec<Blob>,
    /// The probability on the input grid, for `prob-seg.dcm` and `prob-levels-seg.dcm`.
    pub probability: Option<Array3<f32>>,
}

/// The SEGs' content from a run's results; `names` are the models' names.
pub fn select(
    results: &Results,
    prepared: &Prepared,
    p: &Pipeline,
    names: &[String],
) -> SegSelection {
    let regions = results
        .regions
        .iter()
        .map(|r| region_selection(r, prepared, p))
        .collect();
    let label_map = results.label_map.as_ref().map(|l| LabelMapSelection {
        map: prepared.to_input_grid(l.map.view(), 0).mapv(u32::from),
        names: l.names.clone(),
    });
    SegSelection {
        regions,
        label_map,
        parameters: algorithm_parameters(p, names),
    }
}

impl SegSelection {
    /// The regions as the SEG writer takes them.
    pub fn region_inputs(&self) -> Vec<RegionSeg<'_>> {
        self.regions
            .iter()
            .map(|r| RegionSeg {
                name: &r.name,
                labels: r.labels.view(),
                probability: r.probability.as_ref().map(|a| a.view()),
                blobs: &r.blobs,
            })
            .collect()
    }

    /// The SEG writer's inputs for `case`, over `regions` (from `region_inputs`).
    pub fn inputs<'a>(&'a self, case: &'a Case, regions: &'a [RegionSeg<'a>]) -> SegInputs<'a> {
        SegInputs {
            case,
            regions,
            label_map: self.label_map.as_ref().map(|l| LabelMapSeg {
                map: l.map.view(),
                names: &l.names,
            }),
            algorithm_parameters: &self.parameters,
        }
    }
}

fn region_selection(result: &RegionResult, prepared: &Prepared, p: &Pipeline) -> RegionSelection {
    let labels = prepared.to_input_grid(result.labels.view(), 0);
    let (labels, blobs) = selected_blobs(labels, &result.blobs, p);
    let d = &p.dicom_output;
    let probability = (d.probability_seg || !d.probability_levels.is_empty()).then(|| {
        let fill = sigmoid(p.inference.outside_logit);
        prepared.to_input_grid(result.aggregate.probability.view(), fill)
    });
    RegionSelection {
        name: result.region.name.clone(),
        labels,
        blobs,
        probability,
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
