//! The figures and the DICOM objects of a run, written into the staging folder by their
//! writers (`figures`, `seg`), with failures named by the file they were headed to.

use super::staging::{OutputError, Staging};
use crate::figures::{self, FigureInputs};
use crate::io::case::Case;
use crate::pipeline::Pipeline;
use crate::preprocess::Prepared;
use crate::results::Results;
use crate::seg::{self, SegOptions, SegSelection, SegSummary};

/// `figures/` of the primary region (see `figures`); returns the files as `figures/<name>`.
pub fn write_figures(
    staging: &Staging,
    results: &Results,
    prepared: &Prepared,
    p: &Pipeline,
    names: &[String],
) -> Result<Vec<String>, OutputError> {
    let primary = results.primary();
    let inputs = FigureInputs {
        statistics: &primary.statistics,
        uncertainty: &primary.uncertainty,
        model_statistics: primary.model_statistics.as_ref(),
        comparison: primary.comparison.as_ref(),
        threshold: f64::from(p.blobs.threshold),
        channels: &p.channels,
        image: &prepared.image,
        labels: &primary.labels,
        spread: &primary.aggregate.std_logit,
        found: &primary.blobs,
        names,
    };
    let dir = staging.file("figures");
    figures::write_all(&dir, &inputs).map_err(|(name, e)| {
        staging.relabel(OutputError::Io {
            path: dir.join(name),
            reason: e.to_string(),
        })
    })
}

/// The DICOM SEG(s) of `selection` (and, on request, the source channels as DICOM).
pub fn write_dicom(
    staging: &Staging,
    case: &Case,
    selection: &SegSelection,
    p: &Pipeline,
) -> Result<SegSummary, OutputError> {
    let d = &p.dicom_output;
    let options = SegOptions {
        per_blob_segments: d.per_blob_segments,
        decision_segments: p.blobs.decisions.filter(|_| d.decision_segments),
        probability_seg: d.probability_seg,
        probability_levels: d.probability_levels.clone(),
        omit_empty_frames: d.omit_empty_frames,
        write_source_dicom: d.write_source_dicom,
        reference_channel: p.reference_channel().to_string(),
        patient_name: d.patient_name.clone(),
        patient_id: d.patient_id.clone(),
    };
    let regions = selection.region_inputs();
    let inputs = selection.inputs(case, &regions);
    seg::write(staging.dir(), &inputs, &options).map_err(|e| {
        staging.relabel(OutputError::Io {
            path: e.path,
            reason: e.reason,
        })
    })
}
