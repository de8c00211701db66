//! The report's types: what ran, on what, with what result, as `schemas/report.schema.yaml`
//! describes it. Coordinates are on the input grid: voxel indices `(i, j, k)` (NIfTI array order)
//! and patient positions in LPS mm. Top-level `statistics`, `blobs`, `model_statistics` and
//! `comparison` are those of the primary region (`region`); a run with several regions also
//! has `regions`, each entry holding the same fields for one region, and the `label_map`. The
//! types deserialize too, as `read` reads a written report back; the serialized form is the
//! schema's, and the few `serde(default)`s only fill what the schema allows to be absent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::blobs::Blob;
use crate::install::PipelineSource;
use crate::pipeline::Weighting;
use crate::pipeline::{Aggregation, Decision, Decisions, Mode, NoiseOn, NoiseRegion, OutputDecl};
use crate::preprocess::{ChannelStats, CropBox};
use crate::schema::{self, SchemaKind};
use crate::stats::{DistributionInfo, Statistics, UncertaintyStatistics};
use crate::volume::AxisCodes;

/// The report's structure version: 2 added the regions (`region`, `regions`, `label_map`,
/// `models[].outputs`).
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: Tool,
    pub case: CaseInfo,
    pub pipeline: PipelineInfo,
    pub runtime: RuntimeInfo,
    pub models: Vec<ModelEntry>,
    pub ensemble: EnsembleInfo,
    pub preprocess: PreprocessInfo,
    pub thresholds: Thresholds,
    /// The primary region, whose results the top-level fields hold.
    pub region: RegionInfo,
    pub statistics: Statistics,
    /// The uncertainty maps over the brain (entropy, mutual information, the logit variance
    /// between and within models); absent from reports of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<UncertaintyStatistics>,
    /// Per model, the mean of its passes over the brain (with figures or the comparison).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_statistics: Option<BTreeMap<String, DistributionInfo>>,
    pub blobs: Vec<BlobEntry>,
    /// The deterministic ensemble beside the stochastic one (`--compare-deterministic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::compare::Comparison>,
    /// Every region, with several regions (the primary one too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<BTreeMap<String, RegionEntry>>,
    /// The label map in the BraTS convention (with several regions, when they allow one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_map: Option<LabelMapInfo>,
    pub outputs: Vec<String>,
    /// The DICOM SEG(s) written (`seg.dcm`, optionally `prob-seg.dcm`).
    pub seg: crate::seg::SegSummary,
    pub timings_s: BTreeMap<String, f64>,
    /// Peak resident memory of the run up to writing the report.
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseInfo {
    pub id: String,
    pub inputs: Vec<InputEntry>,
    pub geometry: GeometryInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputEntry {
    pub channel: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeometryInfo {
    pub shape_ijk: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub axis_codes: String,
    pub coordinate_system: String,
    pub affine_lps: [[f64; 4]; 4],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub name: String,
    pub config: Option<PathBuf>,
    pub source: PipelineSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub onnxruntime_version: String,
    pub onnxruntime_library: PathBuf,
    pub providers_requested: Vec<String>,
    pub allow_fallback: bool,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub patch_size: [usize; 3],
    pub batch_size: usize,
    pub execution_provider: String,
    /// `f32`, or `bf16` / `fp16` where the provider computes in less. Always written; None
    /// only when read from a version 1 TensorRT run, which did not record whether it ran fp16.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The library of a plugin provider (OpenVINO) and its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginInfo>,
    pub metadata: BTreeMap<String, String>,
    /// What the output channels are (from the config, the metadata, or the default).
    pub outputs: OutputDecl,
}

/// An execution provider loaded as a plugin library.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    pub library: PathBuf,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleInfo {
    pub mode: Mode,
    /// Patches run through the models over all passes.
    pub patches_run: usize,
    /// Patches whose output was reused from the model's first pass instead of run again
    /// (windows without a brain voxel when `noise_region` is `brain`). Optional in the schema:
    /// read as 0 when absent (reports written before the reuse existed).
    #[serde(default)]
    pub patches_reused: usize,
    pub passes_per_model: usize,
    pub total_passes: usize,
    pub sigma: f32,
    pub seed: u64,
    pub noise_region: NoiseRegion,
    /// Optional in the schema: read as `host` when absent (reports written before noise on the
    /// device existed).
    #[serde(default = "noise_on_host")]
    pub noise_on: NoiseOn,
    pub aggregation: Aggregation,
    pub overlap: f64,
    pub weighting: Weighting,
}

/// The noise site of a report that does not name one.
fn noise_on_host() -> NoiseOn {
    NoiseOn::Host
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreprocessInfo {
    pub model_orientation: AxisCodes,
    pub normalization: String,
    pub crop_to_nonzero: bool,
    /// Crop box in the canonical (model) orientation, `[z, y, x]`, end exclusive.
    pub crop_canonical_zyx: CropBox,
    pub outside_logit: f32,
    pub channel_stats: BTreeMap<String, ChannelStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Thresholds {
    pub logit: f32,
    pub connectivity: u8,
    pub min_voxels: usize,
    /// Per-blob decision thresholds (`blobs.decisions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Decisions>,
}

/// A region: its name, the labels it covers (none: every non-zero label) and the models whose
/// passes fed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionInfo {
    pub name: String,
    pub labels: Option<Vec<u8>>,
    pub models: Vec<String>,
}

/// One region's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionEntry {
    pub labels: Option<Vec<u8>>,
    pub models: Vec<String>,
    /// This region's map files.
    pub outputs: Vec<String>,
    pub statistics: Statistics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncertainty: Option<UncertaintyStatistics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_statistics: Option<BTreeMap<String, DistributionInfo>>,
    pub blobs: Vec<BlobEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::compare::Comparison>,
}

/// The label map file and its labels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelMapInfo {
    pub file: String,
    /// `argmax` (of the class probabilities averaged over every pass) or `nested` (of the
    /// regions' aggregated logits).
    pub rule: String,
    pub labels: Vec<LabelName>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelName {
    pub label: u8,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub id: u32,
    pub voxels: usize,
    pub volume_mm3: f64,
    pub centroid_voxel: [f64; 3],
    pub centroid_mm: [f64; 3],
    pub bbox: BBox,
    pub mean_logit: f64,
    pub mean_probability: f64,
    pub max_logit: f64,
    pub mean_spread: f64,
    /// Means over the blob of the uncertainty maps; absent from reports of version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_entropy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_mutual_information: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_logit_variance_between: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_logit_variance_within: Option<f64>,
    pub model_mean_logits: BTreeMap<String, f64>,
    pub pass_agreement: f64,
    pub pass_logit_std: f64,
    /// Segment number of this blob in `seg.dcm` (only with per-blob segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seg_segment_number: Option<u16>,
    /// accept / review / reject from `blobs.decisions` on `mean_logit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BBox {
    pub min_voxel: [usize; 3],
    pub max_voxel: [usize; 3],
}

impl BlobEntry {
    pub fn new(blob: &Blob, model_names: &[String]) -> BlobEntry {
        let n = blob.pass_mean_logits.len().max(1) as f64;
        let mean = blob.pass_mean_logits.iter().sum::<f64>() / n;
        let var = blob
            .pass_mean_logits
            .iter()
            .map(|v| (v - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        BlobEntry {
            id: blob.id,
            voxels: blob.voxels,
            volume_mm3: blob.volume_mm3,
            centroid_voxel: blob.centroid_ijk,
            centroid_mm: blob.centroid_lps_mm,
            bbox: BBox {
                min_voxel: blob.bbox_min_ijk,
                max_voxel: blob.bbox_max_ijk,
            },
            mean_logit: blob.mean_logit,
            mean_probability: blob.mean_probability,
            max_logit: blob.max_logit,
            mean_spread: blob.mean_spread,
            mean_entropy: Some(blob.mean_entropy),
            mean_mutual_information: Some(blob.mean_mutual_information),
            mean_logit_variance_between: Some(blob.mean_logit_variance_between),
            mean_logit_variance_within: Some(blob.mean_logit_variance_within),
            model_mean_logits: model_names
                .iter()
                .cloned()
                .zip(blob.model_mean_logits.iter().copied())
                .collect(),
            pass_agreement: blob.pass_agreement,
            pass_logit_std: var.sqrt(),
            seg_segment_number: None,
            decision: None,
        }
    }
}

/// Report serialization and schema problems (an output failure).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report does not conform to its schema: {0}")]
    Schema(String),
    #[error("cannot serialize the report: {0}")]
    Serialize(String),
}

impl Report {
    /// YAML and JSON text of the report, after validating it against the schema.
    pub fn render(&self) -> Result<(String, String), ReportError> {
        let value =
            serde_json::to_value(self).map_err(|e| ReportError::Serialize(e.to_string()))?;
        schema::validate(SchemaKind::Report, &value)
            .map_err(|p| ReportError::Schema(p.join("; ")))?;
        let json = serde_json::to_string_pretty(&value)
            .map_err(|e| ReportError::Serialize(e.to_string()))?;
        let yaml = crate::yaml::to_string(&value).map_err(ReportError::Serialize)?;
        Ok((yaml, json + "\n"))
    }
}
