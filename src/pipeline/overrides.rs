//! Command-line values over a loaded config (`--passes`, `--device`, `--model`, ...): each
//! replaces the config's, then the result is checked again as a loaded config is.

use super::config::Pipeline;
use super::ensemble::Mode;
use super::error::{ConfigError, ConfigProblem};
use super::execution::{Device, Precision};
use super::models::ModelSpec;
use crate::schema::{self, SchemaKind};

/// Values given on the command line; each replaces the config's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub models: Vec<ModelSpec>,
    pub passes: Option<usize>,
    pub sigma: Option<f32>,
    pub seed: Option<u64>,
    pub deterministic: bool,
    pub compare_deterministic: bool,
    /// `--figures` (Some(true)) or `--no-figures` (Some(false)); None keeps the config's.
    pub figures: Option<bool>,
    pub threshold: Option<f32>,
    pub device: Option<Device>,
    /// `--precision`: OpenVINO's precision (needs the OpenVINO provider).
    pub precision: Option<Precision>,
    pub allow_fallback: bool,
    pub threads: Option<usize>,
    pub batch_size: Option<usize>,
    pub overlap: Option<f64>,
    pub write_source_dicom: bool,
}

impl Pipeline {
    /// Applies command-line values, then re-checks the result against the schema and as a
    /// loaded config is checked.
    pub fn apply(mut self, mut o: Overrides) -> Result<Pipeline, ConfigError> {
        if !o.models.is_empty() {
            self.models = std::mem::take(&mut o.models);
        }
        self.apply_ensemble(&o);
        if let Some(figures) = o.figures {
            self.outputs.figures = figures;
        }
        set(&mut self.blobs.threshold, o.threshold);
        self.apply_execution(&o)?;
        set(&mut self.inference.batch_size, o.batch_size);
        set(&mut self.inference.overlap, o.overlap);
        self.dicom_output.write_source_dicom |= o.write_source_dicom;
        self.recheck()?;
        Ok(self)
    }

    fn apply_ensemble(&mut self, o: &Overrides) {
        if o.deterministic {
            self.ensemble.mode = Mode::Deterministic;
        }
        self.ensemble.compare_deterministic |= o.compare_deterministic;
        set(&mut self.ensemble.passes, o.passes);
        set(&mut self.ensemble.sigma, o.sigma);
        set(&mut self.ensemble.seed, o.seed);
    }

    fn apply_execution(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(device) = o.device {
            // `--device X --allow-fallback`: X, then the CPU
            let fallback = o.allow_fallback && device != Device::Cpu;
            self.execution.providers = vec![device];
            if fallback {
                self.execution.providers.push(Device::Cpu);
            }
        }
        self.execution.allow_fallback |= o.allow_fallback;
        if let Some(precision) = o.precision {
            if !self.execution.providers.contains(&Device::OpenVino) {
                return Err(ConfigError::PrecisionNeedsOpenVino {
                    precision,
                    providers: self.execution.providers.clone(),
                });
            }
            self.execution.openvino.precision = precision;
        }
        set(&mut self.execution.threads, o.threads);
        Ok(())
    }

    /// The checks of a loaded config, on the config with the command line's values.
    fn recheck(&self) -> Result<(), ConfigProblem> {
        let value =
            serde_json::to_value(self).map_err(|source| ConfigProblem::Serialize { source })?;
        schema::validate(SchemaKind::Pipeline, &value)
            .map_err(|problems| ConfigProblem::AfterOverrides { problems })?;
        self.check()
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn overrides_are_checked() {
        let p = Pipeline::from_yaml("models: [{path: m.onnx}]", Path::new(".")).unwrap();
        let e = p
            .apply(Overrides {
                passes: Some(0),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("/ensemble/passes"), "{e}");
    }

    #[test]
    fn precision_needs_the_openvino_provider() {
        let p = Pipeline::from_yaml("models: [{path: m.onnx}]", Path::new(".")).unwrap();
        let e = p
            .clone()
            .apply(Overrides {
                precision: Some(Precision::Bf16),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.to_string().contains("--device openvino"), "{e}");
        let p = p
            .apply(Overrides {
                device: Some(Device::OpenVino),
                precision: Some(Precision::Bf16),
                allow_fallback: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(p.execution.providers, [Device::OpenVino, Device::Cpu]);
        assert_eq!(p.execution.openvino.precision, Precision::Bf16);
    }
}
