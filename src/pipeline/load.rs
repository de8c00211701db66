//! Reading a pipeline config: YAML text to a JSON value, validated against
//! `schemas/pipeline.schema.yaml` (unknown keys rejected; errors name the key path), typed,
//! model paths resolved relative to the config's folder, then the checks the schema cannot
//! express.

use std::path::{Path, PathBuf};

use super::config::Pipeline;
use super::dicom::SegBlobs;
use super::ensemble::Mode;
use super::error::ConfigError;
use crate::schema::{self, SchemaKind};

impl Pipeline {
    /// Loads and validates a config file; model paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Pipeline::from_yaml(&text, base).map_err(|e| match e {
            ConfigError::Invalid(problem) => ConfigError::Schema {
                path: path.into(),
                problem,
            },
            ConfigError::Yaml { reason, .. } => ConfigError::Yaml {
                path: path.into(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a config from YAML text; relative model paths are joined to `base`. Errors are one
    /// line (control characters in quoted keys or values are escaped).
    pub fn from_yaml(text: &str, base: &Path) -> Result<Pipeline, ConfigError> {
        Pipeline::parse_yaml(text, base).map_err(ConfigError::one_line)
    }

    fn parse_yaml(text: &str, base: &Path) -> Result<Pipeline, ConfigError> {
        let value = crate::yaml::parse(text).map_err(|reason| ConfigError::Yaml {
            path: PathBuf::new(),
            reason,
        })?;
        schema::validate(SchemaKind::Pipeline, &value)
            .map_err(|p| ConfigError::Invalid(p.join("; ")))?;
        let mut pipeline: Pipeline =
            serde_json::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for m in &mut pipeline.models {
            if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
        }
        pipeline.check()?;
        Ok(pipeline)
    }

    /// Checks the schema cannot express.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.preprocess.crop_to_nonzero && self.blobs.threshold <= self.inference.outside_logit {
            return Err(ConfigError::Invalid(format!(
                "/blobs/threshold: {} must be above /inference/outside_logit ({}), the logit outside the crop",
                self.blobs.threshold, self.inference.outside_logit
            )));
        }
        if self.ensemble.compare_deterministic && self.ensemble.mode == Mode::Deterministic {
            return Err(ConfigError::Invalid(
                "/ensemble/compare_deterministic: needs the stochastic mode (the run is already deterministic)"
                    .into(),
            ));
        }
        if self.dicom_output.seg_blobs == SegBlobs::Accepted && self.blobs.decisions.is_none() {
            return Err(ConfigError::Invalid(
                "/dicom_output/seg_blobs: 'accepted' needs /blobs/decisions".into(),
            ));
        }
        if self.dicom_output.decision_segments {
            if self.blobs.decisions.is_none() {
                return Err(ConfigError::Invalid(
                    "/dicom_output/decision_segments: needs /blobs/decisions".into(),
                ));
            }
            if self.dicom_output.seg_blobs != SegBlobs::All {
                return Err(ConfigError::Invalid(
                    "/dicom_output/decision_segments: needs /dicom_output/seg_blobs 'all' (an accepted-only SEG has no review or reject blobs)".into(),
                ));
            }
        }
        if self
            .dicom_output
            .probability_levels
            .windows(2)
            .any(|w| w[1] <= w[0])
        {
            return Err(ConfigError::Invalid(format!(
                "/dicom_output/probability_levels: {:?} must increase",
                self.dicom_output.probability_levels
            )));
        }
        if let Some(d) = self.blobs.decisions {
            if d.reject > d.accept {
                return Err(ConfigError::Invalid(format!(
                    "/blobs/decisions: reject ({}) must not be above accept ({})",
                    d.reject, d.accept
                )));
            }
        }
        self.check_dicom()
    }

    /// Every DICOM series rule names a channel and compiles; the SEG's reference channel is a
    /// channel.
    fn check_dicom(&self) -> Result<(), ConfigError> {
        if let Some(c) = &self.dicom_output.reference_channel {
            if !self.channels.contains(c) {
                return Err(ConfigError::Invalid(format!(
                    "/dicom_output/reference_channel: '{c}' is not one of the channels ({})",
                    self.channels.join(", ")
                )));
            }
        }
        for (channel, rule) in &self.dicom.series {
            if !self.channels.contains(channel) {
                return Err(ConfigError::Invalid(format!(
                    "/dicom/series/{channel}: not one of the channels ({})",
                    self.channels.join(", ")
                )));
            }
            for (key, pattern) in rule.patterns() {
                if let Err(e) = regex::Regex::new(pattern) {
                    let why = e.to_string();
                    let why = why.lines().last().unwrap_or("").trim();
                    return Err(ConfigError::Invalid(format!(
                        "/dicom/series/{channel}/{key}: invalid regular expression '{pattern}' ({why})"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Overrides;

    #[test]
    fn defaults_fill_a_minimal_config() {
        let p = Pipeline::from_yaml("models: [{path: m.onnx}]", Path::new("/cfg")).unwrap();
        assert_eq!(p.models[0].path, Path::new("/cfg/m.onnx"));
        assert_eq!(p.ensemble.passes, 10);
        assert_eq!(p.blobs.connectivity, 26);
        assert_eq!(p.channels, ["t1n", "t1c", "t2w", "t2f"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Pipeline::from_yaml(
            "models: [{path: m.onnx}]\nensemble: {pases: 3}",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("pases"), "{e}");
    }

    /// Found by the pipeline_config fuzz target: a key with a line break (a multi-line plain
    /// scalar in a flow mapping) was quoted verbatim, breaking the one-line error contract.
    #[test]
    fn fuzz_regression_keys_with_line_breaks_stay_on_one_line() {
        let input = include_str!("../../fuzz/regressions/pipeline_config/multi-line-key");
        let e = Pipeline::from_yaml(input, Path::new("/cfg"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("batch_sie\\n"), "{e}");
        let e = Pipeline::from_yaml(
            "models: [{path: m.onnx}]\ndicom: {series: {t1n: {series_description: \"(a\\nb\"}}}",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn reference_channel_defaults_to_flair_and_must_be_a_channel() {
        let load = |extra: &str| {
            Pipeline::from_yaml(
                &format!("models: [{{path: m.onnx}}]\n{extra}"),
                Path::new("."),
            )
        };
        assert_eq!(load("").unwrap().reference_channel(), "t2f");
        let custom = load("channels: [pd, flair2]").unwrap();
        assert_eq!(
            custom.reference_channel(),
            "pd",
            "no t2f: the first channel"
        );
        let chosen = load("dicom_output: {reference_channel: t1c}").unwrap();
        assert_eq!(chosen.reference_channel(), "t1c");
        let e = load("dicom_output: {reference_channel: flair}").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("/dicom_output/reference_channel: 'flair' is not one of the channels (t1n, t1c, t2w, t2f)"), "{e}");
        let e = load("dicom_output: {probability_levels: [0.5, 0.5]}").unwrap_err();
        assert!(
            e.to_string()
                .contains("/dicom_output/probability_levels: [0.5, 0.5] must increase"),
            "{e}"
        );
        assert!(load("dicom_output: {probability_levels: [0, 0.5]}").is_err());
    }

    #[test]
    fn dicom_series_rules_are_checked() {
        let ok = "models: [{path: m.onnx}]\ndicom: {series: {t1c: {series_number: '^7$'}}}";
        let p = Pipeline::from_yaml(ok, Path::new(".")).unwrap();
        assert_eq!(p.dicom.series["t1c"].series_number.as_deref(), Some("^7$"));
        // survives the re-check after command-line overrides
        let p = p.apply(Overrides::default()).unwrap();
        assert_eq!(p.dicom.series.len(), 1);
        for (bad, path) in [
            (
                "{t1n: {series_description: '(x'}}",
                "/dicom/series/t1n/series_description",
            ),
            ("{adc: {series_description: 'ADC'}}", "/dicom/series/adc"),
            ("{t1n: {descripton: 'T1'}}", "descripton"),
            ("{t1n: {}}", "/dicom/series/t1n"),
        ] {
            let yaml = format!("models: [{{path: m.onnx}}]\ndicom: {{series: {bad}}}");
            let e = Pipeline::from_yaml(&yaml, Path::new(".")).unwrap_err();
            assert!(e.to_string().contains(path), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
