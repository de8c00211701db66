//! The configuration's errors, all exit code 2: [`ConfigError`] for the config file, the command
//! line and the installation's shipped pipelines, and [`ConfigProblem`] for what is wrong inside
//! a config (its YAML, its schema, the checks the schema cannot express), which a file's error
//! prefixes with the file's path. Every message is one line: text quoted from a config is shown
//! with its control characters escaped.

use std::path::{Path, PathBuf};

use super::execution::{Device, Precision, UnknownDevice};
use crate::text::escape_controls as esc;

/// Problems with the configuration or the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read pipeline config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A config file whose content is refused.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: ConfigProblem,
    },
    /// Config content refused with no file to name: YAML text given directly, or a config after
    /// the command line's values.
    #[error(transparent)]
    Content(#[from] ConfigProblem),
    #[error("--device: {0}")]
    Device(#[source] UnknownDevice),
    #[error("--model '{arg}': no model path")]
    ModelWithoutPath { arg: String },
    #[error("--model: patch size '{text}' is not DxHxW (e.g. 16x64x64)")]
    BadPatchSize { text: String },
    #[error(
        "--precision {}: applies to the OpenVINO provider, and the providers are [{}] (add --device openvino)",
        .precision.name(),
        joined(.providers)
    )]
    PrecisionNeedsOpenVino {
        precision: Precision,
        providers: Vec<Device>,
    },
    #[error("give --case DIR or --input NAME=PATH for each channel")]
    NoCase,
    #[error("--input '{item}': expected NAME=PATH")]
    InputNotNamed { item: String },
    #[error("--input '{item}': no path after '='")]
    InputWithoutPath { item: String },
    #[error("--input '{item}': unknown channel '{name}' (expected one of {})", .channels.join(", "))]
    InputUnknownChannel {
        item: String,
        name: String,
        channels: Vec<String>,
    },
    #[error("--input: channel '{name}' given twice")]
    InputTwice { name: String },
    #[error("--input: missing channel '{channel}'")]
    InputMissing { channel: String },
    #[error("--lesion-min-volume-mm3 {volume_mm3}: expected a finite volume >= 0")]
    LesionMinVolume { volume_mm3: f64 },
    /// `--pipeline NAME` names no file and no shipped pipeline; `pipelines_dir`: where the
    /// shipped ones were looked for (None: the binary has no data folder).
    #[error(
        "--pipeline {name}: no such file, and no shipped pipeline of that name ({})",
        shipped_or_none(.shipped, .pipelines_dir.as_deref())
    )]
    UnknownPipeline {
        name: String,
        shipped: Vec<String>,
        pipelines_dir: Option<PathBuf>,
    },
    #[error(
        "no --pipeline or --model given, and the shipped default pipeline {name} is missing ({}); give --pipeline YAML or --model PATH",
        looked_in(.pipelines_dir.as_deref())
    )]
    NoDefaultPipeline {
        name: &'static str,
        pipelines_dir: Option<PathBuf>,
    },
    #[error("no shipped pipelines: {}", looked_in(.pipelines_dir.as_deref()))]
    NoShippedPipelines { pipelines_dir: Option<PathBuf> },
    /// `doctor` found the data folder without the default pipeline.
    #[error("no shipped pipeline {name} in {}", .pipelines_dir.display())]
    DefaultPipelineMissing {
        name: &'static str,
        pipelines_dir: PathBuf,
    },
    #[error("{}: not in an installed tree (PREFIX/bin beside PREFIX/share/stochseg/pipelines) or a checkout (target/release); no shipped pipelines or models", .executable.display())]
    NotInstalled { executable: PathBuf },
    /// A value the binary prints (a model's description, a validation) could not be written as
    /// YAML: the emitter's message, free-form because it comes from serializing the value, which
    /// the library's plain structs do not make fail.
    #[error("{reason}")]
    Print { reason: String },
}

/// What is wrong inside a config (shown after the file's path when it came from one).
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("not valid YAML: {}", esc(&.source.to_string()))]
    Yaml { source: crate::yaml::ParseError },
    /// Each problem is `<JSON pointer>: <message>` (`schema::validate`).
    #[error("{}", esc(&.problems.join("; ")))]
    Schema { problems: Vec<String> },
    /// The values fit the schema but not the config's types.
    #[error("{}", esc(&.source.to_string()))]
    Types { source: serde_json::Error },
    /// The config with the command line's values could not be turned back into a value to check.
    #[error("{}", esc(&.source.to_string()))]
    Serialize { source: serde_json::Error },
    #[error("after command-line overrides: {}", esc(&.problems.join("; ")))]
    AfterOverrides { problems: Vec<String> },
    #[error("/blobs/threshold: {threshold} must be above /inference/outside_logit ({outside_logit}), the logit outside the crop")]
    ThresholdInsideCrop { threshold: f32, outside_logit: f32 },
    #[error("/ensemble/compare_deterministic: needs the stochastic mode (the run is already deterministic)")]
    CompareNeedsStochastic,
    #[error("/dicom_output/seg_blobs: 'accepted' needs /blobs/decisions")]
    AcceptedNeedsDecisions,
    #[error("/dicom_output/decision_segments: needs /blobs/decisions")]
    DecisionSegmentsNeedDecisions,
    #[error("/dicom_output/decision_segments: needs /dicom_output/seg_blobs 'all' (an accepted-only SEG has no review or reject blobs)")]
    DecisionSegmentsNeedAllBlobs,
    #[error("/dicom_output/probability_levels: {levels:?} must increase")]
    LevelsNotIncreasing { levels: Vec<f64> },
    #[error("/blobs/decisions: reject ({reject}) must not be above accept ({accept})")]
    DecisionsReversed { accept: f64, reject: f64 },
    #[error(
        "/dicom_output/reference_channel: '{}' is not one of the channels ({})",
        esc(.channel),
        esc(&.channels.join(", "))
    )]
    UnknownReferenceChannel {
        channel: String,
        channels: Vec<String>,
    },
    #[error("/dicom/series/{}: not one of the channels ({})", esc(.channel), esc(&.channels.join(", ")))]
    UnknownSeriesChannel {
        channel: String,
        channels: Vec<String>,
    },
    #[error(
        "/dicom/series/{}/{key}: invalid regular expression '{}' ({})",
        esc(.channel),
        esc(.pattern),
        esc(&last_line(.source))
    )]
    BadSeriesPattern {
        channel: String,
        key: &'static str,
        pattern: String,
        source: regex::Error,
    },
}

fn joined(devices: &[Device]) -> String {
    let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
    names.join(", ")
}

/// The last line of a regular expression's error (the first lines repeat the pattern).
fn last_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines().last().unwrap_or("").trim().to_string()
}

/// Where the shipped pipelines were looked for.
fn looked_in(pipelines_dir: Option<&Path>) -> String {
    match pipelines_dir {
        Some(d) => format!("looked in {}", d.display()),
        None => {
            "the binary is neither in an installed tree (PREFIX/bin) nor in a checkout".to_string()
        }
    }
}

fn shipped_or_none(shipped: &[String], pipelines_dir: Option<&Path>) -> String {
    if shipped.is_empty() {
        format!("no shipped pipelines ({})", looked_in(pipelines_dir))
    } else {
        format!("shipped pipelines: {}", shipped.join(", "))
    }
}
