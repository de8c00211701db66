//! The pipeline config: what a run does, with defaults, loaded from YAML, validated against
//! `schemas/pipeline.schema.yaml` (unknown keys rejected; errors name the key path), then
//! overridden by command-line values. Model paths are resolved relative to the config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::schema::{self, SchemaKind};
use crate::volume::AxisCodes;

/// Problems with the configuration or the command line (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read pipeline config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {reason}")]
    Yaml { path: PathBuf, reason: String },
    #[error("{path}: {problem}")]
    Schema { path: PathBuf, problem: String },
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// The same error with control characters in its text escaped.
    fn one_line(self) -> ConfigError {
        use crate::text::escape_controls as esc;
        match self {
            ConfigError::Yaml { path, reason } => ConfigError::Yaml {
                path,
                reason: esc(&reason),
            },
            ConfigError::Schema { path, problem } => ConfigError::Schema {
                path,
                problem: esc(&problem),
            },
            ConfigError::Invalid(s) => ConfigError::Invalid(esc(&s)),
            other => other,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    #[serde(default = "default_orientation")]
    pub orientation: AxisCodes,
    pub models: Vec<ModelSpec>,
    /// The tumor regions the run reports (`regions::RegionPlan`); empty: derived from what the
    /// models declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionDecl>,
    #[serde(default)]
    pub preprocess: Preprocess,
    #[serde(default)]
    pub inference: Inference,
    #[serde(default)]
    pub ensemble: Ensemble,
    #[serde(default)]
    pub blobs: Blobs,
    #[serde(default)]
    pub outputs: Outputs,
    #[serde(default)]
    pub execution: Execution,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub dicom: DicomInput,
    #[serde(default)]
    pub dicom_output: DicomOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<[usize; 3]>,
    /// Reads this one channel of a multi-channel output as the model's one logit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_channel: Option<usize>,
    /// What the output channels are; wins over the model's `outputs` metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OutputDecl>,
}

/// What a model's output channels are (the `outputs` key of a model in the config, or of the
/// ONNX model's metadata as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputDecl {
    /// One channel: the logit of one region.
    Logit(RegionDecl),
    /// Channel i is the logit of class i of a softmax over the channels.
    Softmax(Vec<ClassDecl>),
    /// Channel i is the (sigmoid) logit of region i.
    Sigmoid(Vec<RegionDecl>),
}

/// A region: a name and the label values (of a BraTS-style label map) it covers; no labels
/// means every non-zero label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDecl {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<u8>>,
}

/// One class of a softmax output: its name and label value (0 is the background).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDecl {
    pub name: String,
    pub label: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preprocess {
    pub normalization: Normalization,
    pub crop_to_nonzero: bool,
    pub crop_margin_voxels: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    ZscoreNonzero,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inference {
    pub overlap: f64,
    pub weighting: Weighting,
    pub batch_size: usize,
    pub max_batch_voxels: usize,
    pub outside_logit: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    Gaussian,
    Constant,
}

impl Weighting {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Weighting::Gaussian => "gaussian",
            Weighting::Constant => "constant",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ensemble {
    pub mode: Mode,
    pub passes: usize,
    pub sigma: f32,
    pub noise_region: NoiseRegion,
    /// Where the noise is drawn: `host` (the reference: one ChaCha8 stream per slice) or
    /// `device` (an ONNX Runtime graph before each model, on the model's provider; see
    /// `infer::noise` for how the two differ).
    pub noise_on: NoiseOn,
    pub seed: u64,
    pub aggregation: Aggregation,
    /// Also run the deterministic ensemble (same models, no noise, one pass each) in the same
    /// run and report it beside the stochastic one (stochastic mode only).
    pub compare_deterministic: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Stochastic,
    Deterministic,
}

impl Mode {
    /// The name the config and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stochastic => "stochastic",
            Mode::Deterministic => "deterministic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseRegion {
    Volume,
    Brain,
}

impl NoiseRegion {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            NoiseRegion::Volume => "volume",
            NoiseRegion::Brain => "brain",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseOn {
    Host,
    Device,
}

impl NoiseOn {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            NoiseOn::Host => "host",
            NoiseOn::Device => "device",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    MeanLogit,
    MeanProbability,
}

impl Aggregation {
    /// The name the config and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::MeanLogit => "mean_logit",
            Aggregation::MeanProbability => "mean_probability",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blobs {
    pub threshold: f32,
    pub connectivity: u8,
    pub min_voxels: usize,
    /// Per-blob decision thresholds on the blob's confidence (mean aggregated logit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Decisions>,
}

/// Blobs the DICOM SEG carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegBlobs {
    /// Every blob: the SEG equals `labels.nii.gz`.
    #[default]
    All,
    /// Only blobs whose decision is accept (needs `blobs.decisions`).
    Accepted,
}

/// A blob with confidence >= `accept` is accepted, one below `reject` rejected, the rest go to
/// review (`reject <= accept`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decisions {
    pub accept: f64,
    pub reject: f64,
}

/// The decision on one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Review,
    Reject,
}

impl Decisions {
    /// The decision for a blob whose confidence is `confidence`.
    pub fn decide(&self, confidence: f64) -> Decision {
        if confidence >= self.accept {
            Decision::Accept
        } else if confidence < self.reject {
            Decision::Reject
        } else {
            Decision::Review
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    MeanLogits,
    StdLogits,
    Probability,
    Labels,
    Entropy,
    ExpectedEntropy,
    MutualInformation,
    LogitVarianceBetween,
    LogitVarianceWithin,
    /// `uncertainty-<region>.nii.gz`, uint8 0-100 (`outputs.uncertainty_measure`).
    Uncertainty,
}

/// The measure `uncertainty-<region>.nii.gz` scales to 0-100 (all three are in bits, 0 to 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncertaintyMeasure {
    /// Total: the entropy of the mean pass probability.
    #[default]
    Entropy,
    /// Epistemic: entropy minus the mean pass entropy.
    MutualInformation,
    /// Aleatoric: the mean pass entropy.
    ExpectedEntropy,
}

impl UncertaintyMeasure {
    /// The name the config and the maps' descriptions use.
    pub fn name(self) -> &'static str {
        match self {
            UncertaintyMeasure::Entropy => "entropy",
            UncertaintyMeasure::MutualInformation => "mutual_information",
            UncertaintyMeasure::ExpectedEntropy => "expected_entropy",
        }
    }
}

/// The folder of the pass maps (`outputs.pass_maps`).
pub const PASS_MAPS_DIR: &str = "passes";

/// The label map in the BraTS convention (runs whose regions give one, see `regions`).
pub const LABEL_MAP_FILE: &str = "labels-brats.nii.gz";

impl MapKind {
    /// The map's file name for `region`: with `-<region>` before the extension unless the
    /// region is the primary one (`mean_logits-TC.nii.gz`); the uncertainty map always names
    /// its region (`uncertainty-WT.nii.gz`).
    pub fn file_name_for(self, region: &str, primary: bool) -> String {
        let stem = self.file_name().trim_end_matches(".nii.gz");
        match (self, primary) {
            (MapKind::Uncertainty, _) | (_, false) => format!("{stem}-{region}.nii.gz"),
            _ => self.file_name().to_string(),
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            MapKind::MeanLogits => "mean_logits.nii.gz",
            MapKind::StdLogits => "std_logits.nii.gz",
            MapKind::Probability => "probability.nii.gz",
            MapKind::Labels => "labels.nii.gz",
            MapKind::Entropy => "entropy.nii.gz",
            MapKind::ExpectedEntropy => "expected_entropy.nii.gz",
            MapKind::MutualInformation => "mutual_information.nii.gz",
            MapKind::LogitVarianceBetween => "logit_variance_between.nii.gz",
            MapKind::LogitVarianceWithin => "logit_variance_within.nii.gz",
            MapKind::Uncertainty => "uncertainty.nii.gz",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outputs {
    pub maps: Vec<MapKind>,
    pub histogram_bins: usize,
    /// What `uncertainty-<region>.nii.gz` shows.
    pub uncertainty_measure: UncertaintyMeasure,
    /// Also write every pass's region logits (`passes/<region>/<model>-pass<NN>.nii.gz`).
    pub pass_maps: bool,
    /// PNG figures in `figures/` (see `figures`).
    pub figures: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Execution {
    pub providers: Vec<Device>,
    pub allow_fallback: bool,
    pub tensorrt: TensorRtOptions,
    pub cuda: CudaOptions,
    pub openvino: OpenVinoOptions,
    pub threads: usize,
    /// ONNX Runtime's intra-op threads spin between ops instead of sleeping.
    pub spinning: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtOptions {
    /// Engine and timing caches; empty = `$XDG_CACHE_HOME/stochseg/tensorrt`.
    pub cache_dir: String,
    pub fp16: bool,
}

/// Where a model's session runs: one entry of `execution.providers` (and `--device`), parsed
/// once when the config is read and written back as its canonical spelling (`cpu`, `cuda`,
/// `cuda:1`, `tensorrt`, `tensorrt:1`, `openvino`; device 0 is written without its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's own CPU provider.
    Cpu,
    Cuda(i32),
    TensorRt(i32),
    /// The OpenVINO plugin provider on the CPU.
    OpenVino,
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `tensorrt`, `tensorrt:N`, `openvino`.
    pub fn parse(s: &str) -> Option<Device> {
        let (kind, id) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n.parse::<i32>().ok().filter(|&n| n >= 0)?)),
            None => (s, None),
        };
        match (kind, id) {
            ("cpu", None) => Some(Device::Cpu),
            ("openvino", None) => Some(Device::OpenVino),
            ("cuda", id) => Some(Device::Cuda(id.unwrap_or(0))),
            ("tensorrt", id) => Some(Device::TensorRt(id.unwrap_or(0))),
            _ => None,
        }
    }

    /// The execution provider's name as ONNX Runtime reports it.
    pub fn provider_name(self) -> &'static str {
        match self {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda(_) => "CUDAExecutionProvider",
            Device::TensorRt(_) => "TensorrtExecutionProvider",
            Device::OpenVino => "OpenVINOExecutionProvider",
        }
    }

    /// Whether the model runs on the host's cores (the CPU and OpenVINO providers), rather
    /// than on a GPU while the cores are free for other work.
    pub fn on_host(self) -> bool {
        matches!(self, Device::Cpu | Device::OpenVino)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Device::Cpu => f.write_str("cpu"),
            Device::OpenVino => f.write_str("openvino"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::TensorRt(0) => f.write_str("tensorrt"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Device, ConfigError> {
        Device::parse(s).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "unknown device '{s}': use cpu, cuda[:N], tensorrt[:N] or openvino"
            ))
        })
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The OpenVINO provider (`execution.openvino`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenVinoOptions {
    /// The plugin library; empty = `$STOCHSEG_OPENVINO_PLUGIN`, else the
    /// `onnxruntime_ep_openvino` package beside the loaded ONNX Runtime.
    pub library: String,
    pub precision: Precision,
    /// Compiled models; empty = `$XDG_CACHE_HOME/stochseg/openvino`.
    pub cache_dir: String,
}

/// Arithmetic precision OpenVINO runs the models in (`INFERENCE_PRECISION_HINT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Results match ONNX Runtime's CPU provider.
    #[default]
    F32,
    /// bfloat16 arithmetic, on CPUs that have it (AVX512_BF16 or AMX).
    Bf16,
}

impl Precision {
    /// The name the config, the report and OpenVINO use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    pub conv_algorithm_search: ConvSearch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvSearch {
    #[default]
    Exhaustive,
    Heuristic,
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_voxels: usize,
    /// Refuse a case whose run is estimated (`crate::estimate`, from the headers) to need more.
    pub max_memory_mib: u64,
}

/// How DICOM input is read: which series in a folder holds which channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomInput {
    /// Series rule per channel; channels not listed use the built-in rules for the BraTS names
    /// (`crate::io::dicom::default_rule`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, SeriesRule>,
}

/// Picks one DICOM series: every regular expression given must match (a search, not a full
/// match, unless anchored) and `exclude_description` must not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
}

impl SeriesRule {
    /// `(key, pattern)` of each regular expression the rule sets.
    pub fn patterns(&self) -> Vec<(&'static str, &str)> {
        [
            ("series_description", &self.series_description),
            ("exclude_description", &self.exclude_description),
            ("series_number", &self.series_number),
            ("series_instance_uid", &self.series_instance_uid),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// DICOM objects written with the NIfTI maps: `seg.dcm` always, the rest on request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DicomOutput {
    /// One more segment per blob in `seg.dcm`, besides the whole tumor.
    pub per_blob_segments: bool,
    /// Which blobs `seg.dcm` carries.
    pub seg_blobs: SegBlobs,
    /// Segments 2-4 of `seg.dcm`: the blobs whose decision is accept, review, reject (needs
    /// `blobs.decisions` and `seg_blobs: all`).
    pub decision_segments: bool,
    /// Also write `prob-seg.dcm`, a FRACTIONAL (probability) SEG of the probability map.
    pub probability_seg: bool,
    /// Also write `prob-levels-seg.dcm`, a BINARY SEG with one segment per level (the voxels
    /// whose probability is at least the level); increasing, in (0, 1]. Empty: not written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probability_levels: Vec<f64>,
    /// Leave out frames with no segmented voxel (a segment keeps one frame if all are empty).
    pub omit_empty_frames: bool,
    /// Write the input channels as DICOM MR series under `source-dicom/` (NIfTI input only).
    pub write_source_dicom: bool,
    /// The channel whose series the SEGs reference, the one a viewer draws them on; `None`:
    /// `t2f` when it is a channel, else the first channel (`Pipeline::reference_channel`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_channel: Option<String>,
    /// PatientName of the objects written for NIfTI input (DICOM input keeps the source's).
    pub patient_name: String,
    /// PatientID of the objects written for NIfTI input; empty = the case id.
    pub patient_id: String,
}

impl Default for DicomOutput {
    fn default() -> Self {
        DicomOutput {
            per_blob_segments: false,
            seg_blobs: SegBlobs::All,
            decision_segments: false,
            probability_seg: false,
            probability_levels: Vec::new(),
            omit_empty_frames: true,
            write_source_dicom: false,
            reference_channel: None,
            patient_name: "Anonymous^".to_string(),
            patient_id: String::new(),
        }
    }
}

/// The default reference channel of the SEGs: BraTS's T2-FLAIR.
const DEFAULT_REFERENCE_CHANNEL: &str = "t2f";

fn default_name() -> String {
    "unnamed".to_string()
}
fn default_channels() -> Vec<String> {
    ["t1n", "t1c", "t2w", "t2f"].map(String::from).to_vec()
}
fn default_orientation() -> AxisCodes {
    AxisCodes::LPS
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            normalization: Normalization::ZscoreNonzero,
            crop_to_nonzero: true,
            crop_margin_voxels: 0,
        }
    }
}
impl Default for Inference {
    fn default() -> Self {
        Inference {
            overlap: 0.5,
            weighting: Weighting::Gaussian,
            batch_size: 4,
            max_batch_voxels: 1 << 18,
            outside_logit: -10.0,
        }
    }
}
impl Default for Ensemble {
    fn default() -> Self {
        Ensemble {
            mode: Mode::Stochastic,
            passes: 10,
            sigma: 0.2,
            noise_region: NoiseRegion::Volume,
            noise_on: NoiseOn::Host,
            seed: 0,
            aggregation: Aggregation::MeanLogit,
            compare_deterministic: false,
        }
    }
}
impl Default for Blobs {
    fn default() -> Self {
        Blobs {
            threshold: 0.0,
            connectivity: 26,
            min_voxels: 1,
            decisions: None,
        }
    }
}
impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            maps: vec![
                MapKind::MeanLogits,
                MapKind::StdLogits,
                MapKind::Probability,
                MapKind::Labels,
                MapKind::Entropy,
                MapKind::ExpectedEntropy,
                MapKind::MutualInformation,
                MapKind::LogitVarianceBetween,
                MapKind::LogitVarianceWithin,
                MapKind::Uncertainty,
            ],
            histogram_bins: 64,
            uncertainty_measure: UncertaintyMeasure::default(),
            pass_maps: false,
            figures: false,
        }
    }
}
impl Default for Execution {
    fn default() -> Self {
        Execution {
            providers: vec![Device::Cpu],
            allow_fallback: false,
            tensorrt: TensorRtOptions::default(),
            cuda: CudaOptions::default(),
            openvino: OpenVinoOptions::default(),
            threads: 0,
            spinning: false,
        }
    }
}
impl Default for Limits {
    fn default() -> Self {
        // 512^3 voxels: a 4-channel f32 case of that size needs about 2 GiB for the inputs alone
        Limits {
            max_voxels: 512 * 512 * 512,
            // far above a BraTS case (about 1 GiB with the study's 30 passes), far below what
            // a 512^3 case with many passes would take
            max_memory_mib: 32 * 1024,
        }
    }
}

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

    /// The config used when only `--model` is given.
    pub fn from_models(models: Vec<ModelSpec>) -> Pipeline {
        Pipeline {
            name: "command-line".to_string(),
            description: String::new(),
            channels: default_channels(),
            orientation: default_orientation(),
            models,
            regions: Vec::new(),
            preprocess: Preprocess::default(),
            inference: Inference::default(),
            ensemble: Ensemble::default(),
            blobs: Blobs::default(),
            outputs: Outputs::default(),
            execution: Execution::default(),
            limits: Limits::default(),
            dicom: DicomInput::default(),
            dicom_output: DicomOutput::default(),
        }
    }

    /// The channel whose series the SEGs reference: `dicom_output.reference_channel`, else
    /// `t2f` (FLAIR, where the whole tumor's extent shows; docs/dicom.md) when it is one of the
    /// channels, else the first channel.
    pub fn reference_channel(&self) -> &str {
        let default = || {
            self.channels
                .iter()
                .find(|c| c.as_str() == DEFAULT_REFERENCE_CHANNEL)
                .or(self.channels.first())
        };
        self.dicom_output
            .reference_channel
            .as_ref()
            .or_else(default)
            .map_or(DEFAULT_REFERENCE_CHANNEL, String::as_str)
    }

    /// Applies command-line values, then re-checks the result against the schema.
    pub fn apply(self, o: Overrides) -> Result<Pipeline, ConfigError> {
        self.apply_overrides(o).map_err(ConfigError::one_line)
    }

    fn apply_overrides(mut self, o: Overrides) -> Result<Pipeline, ConfigError> {
        if !o.models.is_empty() {
            self.models = o.models;
        }
        if o.deterministic {
            self.ensemble.mode = Mode::Deterministic;
        }
        self.ensemble.compare_deterministic |= o.compare_deterministic;
        if let Some(figures) = o.figures {
            self.outputs.figures = figures;
        }
        set(&mut self.ensemble.passes, o.passes);
        set(&mut self.ensemble.sigma, o.sigma);
        set(&mut self.ensemble.seed, o.seed);
        set(&mut self.blobs.threshold, o.threshold);
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
                return Err(ConfigError::Invalid(format!(
                    "--precision {}: applies to the OpenVINO provider, and the providers are [{}] (add --device openvino)",
                    precision.name(),
                    self.execution.providers.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            self.execution.openvino.precision = precision;
        }
        set(&mut self.execution.threads, o.threads);
        set(&mut self.inference.batch_size, o.batch_size);
        set(&mut self.inference.overlap, o.overlap);
        self.dicom_output.write_source_dicom |= o.write_source_dicom;
        let value = serde_json::to_value(&self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        schema::validate(SchemaKind::Pipeline, &value).map_err(|p| {
            ConfigError::Invalid(format!("after command-line overrides: {}", p.join("; ")))
        })?;
        self.check()?;
        Ok(self)
    }

    /// Checks the schema cannot express.
    fn check(&self) -> Result<(), ConfigError> {
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

    /// Passes per model: K in stochastic mode, one in deterministic mode.
    pub fn passes_per_model(&self) -> usize {
        match self.ensemble.mode {
            Mode::Stochastic => self.ensemble.passes,
            Mode::Deterministic => 1,
        }
    }

    /// Noise sigma actually applied (zero in deterministic mode).
    pub fn effective_sigma(&self) -> f32 {
        match self.ensemble.mode {
            Mode::Stochastic => self.ensemble.sigma,
            Mode::Deterministic => 0.0,
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Parses `PATH[:DxHxW]` as given to `--model`.
pub fn parse_model_arg(arg: &str) -> Result<ModelSpec, ConfigError> {
    let (path, patch) = match arg.rsplit_once(':') {
        Some((p, size)) if looks_like_patch(size) => (p, Some(parse_patch(size)?)),
        _ => (arg, None),
    };
    if path.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "--model '{arg}': no model path"
        )));
    }
    Ok(ModelSpec {
        path: PathBuf::from(path),
        name: None,
        patch_size: patch,
        output_channel: None,
        outputs: None,
    })
}

fn looks_like_patch(s: &str) -> bool {
    s.contains('x') && s.chars().all(|c| c.is_ascii_digit() || c == 'x')
}

fn parse_patch(s: &str) -> Result<[usize; 3], ConfigError> {
    let bad = || {
        ConfigError::Invalid(format!(
            "--model: patch size '{s}' is not DxHxW (e.g. 16x64x64)"
        ))
    };
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let patch: [usize; 3] = parts.try_into().map_err(|_| bad())?;
    if patch.contains(&0) {
        return Err(bad());
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn devices_parse_and_print_back() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("openvino", Device::OpenVino),
            ("cuda", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("tensorrt", Device::TensorRt(0)),
            ("tensorrt:2", Device::TensorRt(2)),
        ] {
            assert_eq!(Device::parse(text), Some(device), "{text}");
            assert_eq!(device.to_string(), text);
        }
        // device 0 is written without its index
        assert_eq!(Device::parse("cuda:0").unwrap().to_string(), "cuda");
        for bad in ["cpu:1", "openvino:0", "gpu", "cuda:-1", "cuda:", ""] {
            assert_eq!(Device::parse(bad), None, "{bad}");
        }
        assert!(Device::OpenVino.on_host() && !Device::Cuda(0).on_host());
    }

    #[test]
    fn providers_are_typed_at_load_and_written_back_as_strings() {
        let yaml = "models: [{path: m.onnx}]\nexecution: {providers: [openvino, cuda:1, cpu], openvino: {precision: bf16}}";
        let p = Pipeline::from_yaml(yaml, Path::new(".")).unwrap();
        assert_eq!(
            p.execution.providers,
            [Device::OpenVino, Device::Cuda(1), Device::Cpu]
        );
        assert_eq!(p.execution.openvino.precision, Precision::Bf16);
        let v = serde_json::to_value(&p.execution).unwrap();
        assert_eq!(
            v["providers"],
            serde_json::json!(["openvino", "cuda:1", "cpu"])
        );
        assert_eq!(v["openvino"]["precision"], "bf16");
        let e = Pipeline::from_yaml(
            "models: [{path: m.onnx}]\nexecution: {providers: [npu]}",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/execution/providers"), "{e}");
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

    #[test]
    fn model_argument_with_patch() {
        let m = parse_model_arg("a/b.onnx:16x64x64").unwrap();
        assert_eq!(m.patch_size, Some([16, 64, 64]));
        assert_eq!(parse_model_arg("c:/x.onnx").unwrap().patch_size, None);
        assert!(parse_model_arg("m.onnx:16x0x4").is_err());
    }

    /// Found by the pipeline_config fuzz target: a key with a line break (a multi-line plain
    /// scalar in a flow mapping) was quoted verbatim, breaking the one-line error contract.
    #[test]
    fn fuzz_regression_keys_with_line_breaks_stay_on_one_line() {
        let input = include_str!("../fuzz/regressions/pipeline_config/multi-line-key");
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
