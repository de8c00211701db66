//! The NIfTI maps of a run, on exactly the input grid (the input's affine and header geometry):
//! per region the maps `outputs.maps` names (`mean_logits`, `std_logits`, `probability`,
//! `labels`: the primary region under today's names, every other region with `-<region>` before
//! the extension), and the label map in the BraTS convention (`labels-brats.nii.gz`, uint8) when
//! the run has one. Outside the crop the maps hold `inference.outside_logit` (its sigmoid for the
//! probability), a spread of 0 and label 0.

use ndarray::Array3;

use super::staging::{OutputError, Staging};
use crate::aggregate::sigmoid;
use crate::io::case::Case;
use crate::io::nifti;
use crate::pipeline::{MapKind, Pipeline, LABEL_MAP_FILE};
use crate::preprocess::Prepared;
use crate::results::Results;

/// Writes every map; returns their file names in the order written.
pub fn write_maps(
    staging: &Staging,
    case: &Case,
    prepared: &Prepared,
    results: &Results,
    p: &Pipeline,
) -> Result<Vec<String>, OutputError> {
    let outside = p.inference.outside_logit;
    let mut written = Vec::new();
    for (r, result) in results.regions.iter().enumerate() {
        let suffix = results.file_suffix(r);
        let named = |what: &str| match r {
            0 => format!("stochseg {what}"),
            _ => format!("stochseg {what} ({})", result.region.name),
        };
        let a = &result.aggregate;
        for &kind in &p.outputs.maps {
            let name = kind.file_name_for(&suffix);
            let map = Map {
                staging,
                case,
                name: &name,
            };
            match kind {
                MapKind::MeanLogits => map.write(
                    &prepared.to_input_grid(a.mean_logit.view(), outside),
                    &named("mean logit"),
                ),
                MapKind::StdLogits => map.write(
                    &prepared.to_input_grid(a.std_logit.view(), 0.0),
                    &named("logit std"),
                ),
                MapKind::Probability => map.write(
                    &prepared.to_input_grid(a.probability.view(), sigmoid(outside)),
                    &named("probability"),
                ),
                MapKind::Labels => map.write(
                    &prepared
                        .to_input_grid(result.labels.view(), 0)
                        .mapv(|v| v as i32),
                    &named("blob ids"),
                ),
            }?;
            written.push(name);
        }
    }
    if let Some(labels) = &results.label_map {
        let map = Map {
            staging,
            case,
            name: LABEL_MAP_FILE,
        };
        map.write(
            &prepared.to_input_grid(labels.map.view(), 0u8),
            "stochseg BraTS labels",
        )?;
        written.push(LABEL_MAP_FILE.to_string());
    }
    Ok(written)
}

/// One map file of the staging folder, with the input's geometry.
struct Map<'a> {
    staging: &'a Staging,
    case: &'a Case,
    name: &'a str,
}

impl Map<'_> {
    fn write<T>(&self, data: &Array3<T>, description: &str) -> Result<(), OutputError>
    where
        T: nifti::MapValue,
    {
        let path = self.staging.file(self.name);
        nifti::write_map(
            &path,
            data.view(),
            &self.case.geometry,
            self.case.nifti_header(),
            description,
        )
        .map_err(|e| {
            self.staging.relabel(OutputError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })
        })
    }
}
