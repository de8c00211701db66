//! The NIfTI maps of a run, on exactly the input grid (the input's affine and header geometry):
//! per region the maps `outputs.maps` names (`mean_logits`, `std_logits`, `probability`,
//! `labels`, the uncertainty decomposition of `uncertainty`, float32, and
//! `uncertainty-<region>.nii.gz`, uint8 0-100: the primary region under the plain names, every
//! other region with `-<region>` before the extension), and the label map in the BraTS
//! convention (`labels-brats.nii.gz`, uint8) when the run has one. Outside the crop every pass
//! has the logit `inference.outside_logit`: the maps hold it (its sigmoid for the probability,
//! its entropy for the entropies), a spread, variance and mutual information of 0, and label 0.

use ndarray::Array3;

use super::staging::{OutputError, Staging};
use crate::aggregate::{sigmoid, PassMap, PassWriter};
use crate::io::case::Case;
use crate::io::nifti;
use crate::pipeline::UncertaintyMeasure;
use crate::pipeline::{MapKind, Pipeline, LABEL_MAP_FILE, PASS_MAPS_DIR};
use crate::preprocess::Prepared;
use crate::results::Results;
use crate::uncertainty::{logit_entropy_bits, UncertaintyMaps};

/// Writes every map; returns their file names in the order written.
pub fn write_maps(
    staging: &Staging,
    case: &Case,
    prepared: &Prepared,
    results: &Results,
    p: &Pipeline,
) -> Result<Vec<String>, OutputError> {
    let outside = p.inference.outside_logit;
    let outside_entropy = logit_entropy_bits(outside);
    let mut written = Vec::new();
    for (r, result) in results.regions.iter().enumerate() {
        let named = |what: &str| match r {
            0 => format!("stochseg {what}"),
            _ => format!("stochseg {what} ({})", result.region.name),
        };
        let a = &result.aggregate;
        let u = &a.uncertainty;
        for &kind in &p.outputs.maps {
            let name = kind.file_name_for(&result.region.name, r == 0);
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
                MapKind::Entropy => map.write(
                    &prepared.to_input_grid(u.entropy.view(), outside_entropy),
                    &named("entropy (bits)"),
                ),
                MapKind::ExpectedEntropy => map.write(
                    &prepared.to_input_grid(u.expected_entropy.view(), outside_entropy),
                    &named("expected entropy (bits)"),
                ),
                MapKind::MutualInformation => map.write(
                    &prepared.to_input_grid(u.mutual_information.view(), 0.0),
                    &named("mutual information (bits)"),
                ),
                MapKind::LogitVarianceBetween => map.write(
                    &prepared.to_input_grid(u.variance_between.view(), 0.0),
                    &named("logit variance between models"),
                ),
                MapKind::LogitVarianceWithin => map.write(
                    &prepared.to_input_grid(u.variance_within.view(), 0.0),
                    &named("logit variance within models"),
                ),
                MapKind::Uncertainty => {
                    let measure = p.outputs.uncertainty_measure;
                    let (values, fill) = uncertainty_source(u, measure, outside_entropy);
                    let percent = prepared.to_input_grid(values.view(), fill).mapv(percent);
                    map.write(
                        &percent,
                        &named(&format!("uncertainty 0-100 ({})", measure.name())),
                    )
                }
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

/// A writer of each pass's region logits on the input grid (`outside` outside the crop),
/// `passes/<region>/<model>-pass<NN>.nii.gz` (`outputs.pass_maps`); the folders are made here.
pub fn pass_writer<'a>(
    staging: &'a Staging,
    case: &'a Case,
    prepared: &'a Prepared,
    regions: Vec<String>,
    models: Vec<String>,
    outside: f32,
) -> Result<PassWriter<'a>, OutputError> {
    for region in &regions {
        let dir = staging.file(&format!("{PASS_MAPS_DIR}/{region}"));
        std::fs::create_dir_all(&dir).map_err(|e| {
            staging.relabel(OutputError::Io {
                path: dir.clone(),
                reason: e.to_string(),
            })
        })?;
    }
    Ok(Box::new(move |pass: PassMap| {
        let name = format!(
            "{PASS_MAPS_DIR}/{}/{}-pass{:02}.nii.gz",
            regions[pass.region], models[pass.model], pass.pass
        );
        let logits = prepared.to_input_grid(pass.logits, outside);
        let description = format!("stochseg pass logits ({})", regions[pass.region]);
        nifti::write_map(
            &staging.file(&name),
            logits.view(),
            &case.geometry,
            case.nifti_header(),
            &description,
        )
    }))
}

/// The map `uncertainty-<region>.nii.gz` scales, and its value outside the crop.
fn uncertainty_source(
    u: &UncertaintyMaps,
    measure: UncertaintyMeasure,
    outside_entropy: f32,
) -> (&ndarray::Array3<f32>, f32) {
    match measure {
        UncertaintyMeasure::Entropy => (&u.entropy, outside_entropy),
        UncertaintyMeasure::MutualInformation => (&u.mutual_information, 0.0),
        UncertaintyMeasure::ExpectedEntropy => (&u.expected_entropy, outside_entropy),
    }
}

/// A measure in bits (0 to 1) as a percentage, 0 to 100.
fn percent(bits: f32) -> u8 {
    (bits.clamp(0.0, 1.0) * 100.0).round() as u8
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
