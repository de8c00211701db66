//! The command line's config flags turned into checked library values before any work starts
//! (parsed once, at the edge): the pipeline from `--pipeline`, `--model`,
//! `--device` and the values that override the config's; the case from `--case` or
//! `--input NAME=PATH`; the lesion-wise rule of `evaluate`. The binary keeps the flags'
//! definitions (clap) and hands their plain values here; every refusal is a [`ConfigError`].

use std::path::{Path, PathBuf};

use crate::install::{self, PipelineChoice};
use crate::io::case::CaseSpec;
use crate::lesionwise::LesionRule;
use crate::pipeline::{self, ConfigError, Device, Overrides, Pipeline};

/// The flags that pick a pipeline config, as typed on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigFlags<'a> {
    /// `--pipeline`: a YAML file or a shipped pipeline's name.
    pub pipeline: Option<&'a Path>,
    /// `--model PATH[:DxHxW]`, each replacing the config's models.
    pub models: &'a [String],
    /// `--device`: replaces the config's provider list.
    pub device: Option<&'a str>,
}

/// The pipeline config the flags ask for (a file, a shipped name, the default, or the command
/// line's models), with `overrides` and the flags' models and device applied, and where it came
/// from.
pub fn load_pipeline(
    flags: ConfigFlags,
    overrides: Overrides,
) -> Result<(Pipeline, PipelineChoice), ConfigError> {
    let models = flags
        .models
        .iter()
        .map(|m| pipeline::parse_model_arg(m))
        .collect::<Result<Vec<_>, _>>()?;
    let device = flags
        .device
        .map(|d| d.parse::<Device>().map_err(ConfigError::Device))
        .transpose()?;
    let choice = install::choose_pipeline(flags.pipeline, !models.is_empty())?;
    let base = match &choice.path {
        Some(path) => Pipeline::load(path)?,
        None => Pipeline::from_models(Vec::new()),
    };
    let overrides = Overrides {
        models,
        device,
        ..overrides
    };
    Ok((base.apply(overrides)?, choice))
}

/// The case of `--case DIR`, else of one `--input NAME=PATH` per channel (in the channels'
/// order).
pub fn case_spec(
    case: Option<&Path>,
    inputs: &[String],
    channels: &[String],
) -> Result<CaseSpec, ConfigError> {
    if let Some(dir) = case {
        return Ok(CaseSpec::Folder(dir.to_path_buf()));
    }
    if inputs.is_empty() {
        return Err(ConfigError::NoCase);
    }
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for item in inputs {
        let (name, path) = input_item(item, channels)?;
        if files.iter().any(|(n, _)| *n == name) {
            return Err(ConfigError::InputTwice { name });
        }
        files.push((name, path));
    }
    let ordered = channels
        .iter()
        .map(|c| {
            files
                .iter()
                .find(|(n, _)| n == c)
                .cloned()
                .ok_or_else(|| ConfigError::InputMissing { channel: c.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaseSpec::Files(ordered))
}

/// [`case_spec`] when `--case` or `--input` is given, else None.
pub fn case_spec_if_given(
    case: Option<&Path>,
    inputs: &[String],
    channels: &[String],
) -> Result<Option<CaseSpec>, ConfigError> {
    (case.is_some() || !inputs.is_empty())
        .then(|| case_spec(case, inputs, channels))
        .transpose()
}

/// One `--input NAME=PATH`: a channel of `channels` and a non-empty path.
fn input_item(item: &str, channels: &[String]) -> Result<(String, PathBuf), ConfigError> {
    let (name, path) = item
        .split_once('=')
        .ok_or_else(|| ConfigError::InputNotNamed {
            item: item.to_string(),
        })?;
    if path.is_empty() {
        return Err(ConfigError::InputWithoutPath {
            item: item.to_string(),
        });
    }
    if !channels.iter().any(|c| c == name) {
        return Err(ConfigError::InputUnknownChannel {
            item: item.to_string(),
            name: name.to_string(),
            channels: channels.to_vec(),
        });
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// The lesion-wise rule of `--gt-dilation` and `--lesion-min-volume-mm3` (a finite volume >= 0).
pub fn lesion_rule(gt_dilation: usize, min_volume_mm3: f64) -> Result<LesionRule, ConfigError> {
    if !(min_volume_mm3.is_finite() && min_volume_mm3 >= 0.0) {
        return Err(ConfigError::LesionMinVolume {
            volume_mm3: min_volume_mm3,
        });
    }
    Ok(LesionRule {
        gt_dilation,
        min_volume_mm3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Vec<String> {
        ["t1n", "t1c"].map(String::from).to_vec()
    }

    #[test]
    fn inputs_follow_the_channels_order() {
        let inputs = ["t1c=b.nii.gz", "t1n=a.nii.gz"].map(String::from);
        let CaseSpec::Files(files) = case_spec(None, &inputs, &channels()).unwrap() else {
            panic!("not files");
        };
        assert_eq!(files[0], ("t1n".to_string(), PathBuf::from("a.nii.gz")));
        assert_eq!(files[1], ("t1c".to_string(), PathBuf::from("b.nii.gz")));
    }

    #[test]
    fn bad_inputs_are_named() {
        for (inputs, expected) in [
            (&["t1n"][..], "--input 't1n': expected NAME=PATH"),
            (&["t1n="][..], "--input 't1n=': no path after '='"),
            (
                &["adc=x"][..],
                "--input 'adc=x': unknown channel 'adc' (expected one of t1n, t1c)",
            ),
            (
                &["t1n=a", "t1n=b"][..],
                "--input: channel 't1n' given twice",
            ),
            (&["t1n=a"][..], "--input: missing channel 't1c'"),
            (
                &[][..],
                "give --case DIR or --input NAME=PATH for each channel",
            ),
        ] {
            let inputs: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
            let e = case_spec(None, &inputs, &channels()).unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
        assert!(case_spec_if_given(None, &[], &channels())
            .unwrap()
            .is_none());
    }

    #[test]
    fn lesion_volume_must_be_finite_and_not_negative() {
        assert_eq!(lesion_rule(1, 2.0).unwrap().min_volume_mm3, 2.0);
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(matches!(
                lesion_rule(3, bad),
                Err(ConfigError::LesionMinVolume { .. })
            ));
        }
    }
}
