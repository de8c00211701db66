//! Reading a pipeline config: YAML text to a JSON value, validated against
//! `schemas/pipeline.schema.yaml` (unknown keys rejected; errors name the key path), typed,
//! model paths resolved relative to the config's folder, then the checks the schema cannot
//! express.

use std::path::Path;

use super::config::Pipeline;
use super::dicom::SegBlobs;
use super::ensemble::Mode;
use super::error::{ConfigError, ConfigProblem};
use crate::schema::{self, SchemaKind};

impl Pipeline {
    /// Loads and validates a config file; model paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Pipeline::from_yaml(&text, base).map_err(|source| ConfigError::File {
            path: path.into(),
            source,
        })
    }

    /// Parses a config from YAML text; relative model paths are joined to `base`. Errors are one
    /// line (control characters in quoted keys or values are escaped).
    pub fn from_yaml(text: &str, base: &Path) -> Result<Pipeline, ConfigProblem> {
        let value = crate::yaml::parse(text).map_err(|source| ConfigProblem::Yaml { source })?;
        schema::validate(SchemaKind::Pipeline, &value)
            .map_err(|problems| ConfigProblem::Schema { problems })?;
        let mut pipeline: Pipeline =
            serde_json::from_value(value).map_err(|source| ConfigProblem::Types { source })?;
        for m in &mut pipeline.models {
            if m.path.is_relative() {
                m.path = base.join(&m.path);
            }
        }
        pipeline.check()?;
        Ok(pipeline)
    }

    /// Checks the schema cannot express.
    pub(super) fn check(&self) -> Result<(), ConfigProblem> {
        if self.preprocess.crop_to_nonzero && self.blobs.threshold <= self.inference.outside_logit {
            return Err(ConfigProblem::ThresholdInsideCrop {
                threshold: self.blobs.threshold,
                outside_logit: self.inference.outside_logit,
            });
        }
        if self.ensemble.compare_deterministic && self.ensemble.mode == Mode::Deterministic {
            return Err(ConfigProblem::CompareNeedsStochastic);
        }
        self.check_dicom_output()?;
        if let Some(d) = self.blobs.decisions {
            if d.reject > d.accept {
                return Err(ConfigProblem::DecisionsReversed {
                    accept: d.accept,
                    reject: d.reject,
                });
            }
        }
        self.check_dicom()
    }

    /// The SEG options agree with each other and with `blobs.decisions`.
    fn check_dicom_output(&self) -> Result<(), ConfigProblem> {
        let out = &self.dicom_output;
        let decisions = self.blobs.decisions.is_some();
        if out.seg_blobs == SegBlobs::Accepted && !decisions {
            return Err(ConfigProblem::AcceptedNeedsDecisions);
        }
        if out.decision_segments && !decisions {
            return Err(ConfigProblem::DecisionSegmentsNeedDecisions);
        }
        if out.decision_segments && out.seg_blobs != SegBlobs::All {
            return Err(ConfigProblem::DecisionSegmentsNeedAllBlobs);
        }
        if out.probability_levels.windows(2).any(|w| w[1] <= w[0]) {
            return Err(ConfigProblem::LevelsNotIncreasing {
                levels: out.probability_levels.clone(),
            });
        }
        Ok(())
    }

    /// Every DICOM series rule names a channel and compiles; the SEG's reference channel is a
    /// channel.
    fn check_dicom(&self) -> Result<(), ConfigProblem> {
        let channels = || self.channels.clone();
        if let Some(c) = &self.dicom_output.reference_channel {
            if !self.channels.contains(c) {
                return Err(ConfigProblem::UnknownReferenceChannel {
                    channel: c.clone(),
                    channels: channels(),
                });
            }
        }
        for (channel, rule) in &self.dicom.series {
            if !self.channels.contains(channel) {
                return Err(ConfigProblem::UnknownSeriesChannel {
                    channel: channel.clone(),
                    channels: channels(),
                });
            }
            for (key, pattern) in rule.patterns() {
                if let Err(source) = regex::Regex::new(pattern) {
                    return Err(ConfigProblem::BadSeriesPattern {
                        channel: channel.clone(),
                        key,
                        pattern: pattern.to_string(),
                        source,
                    });
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
        assert!(
            matches!(e, ConfigProblem::UnknownReferenceChannel { .. }),
            "{e}"
        );
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
