//! A report from what a run did and found (`Facts`): every field filled from the value that owns
//! it, the primary region's results at the top level and, with several regions, every region
//! under `regions`.

use std::collections::BTreeMap;
use std::path::Path;

use super::types::{
    BlobEntry, CaseInfo, EnsembleInfo, GeometryInfo, InputEntry, LabelMapInfo, LabelName,
    ModelEntry, PipelineInfo, PluginInfo, PreprocessInfo, RegionEntry, RegionInfo, Report,
    RuntimeInfo, Thresholds, Tool, SCHEMA_VERSION,
};
use crate::ensemble::PassDone;
use crate::infer::{capped_batch, Engine, Model};
use crate::install::PipelineSource;
use crate::io::case::Case;
use crate::pipeline::{MapKind, Pipeline, LABEL_MAP_FILE};
use crate::preprocess::Prepared;
use crate::regions::{LabelRule, RegionPlan};
use crate::results::{RegionResult, Results};
use crate::seg::SegSummary;

/// Everything the report says, as the run has it.
pub struct Facts<'a> {
    pub pipeline: &'a Pipeline,
    pub pipeline_path: Option<&'a Path>,
    pub pipeline_source: PipelineSource,
    pub engine: Engine,
    pub threads: usize,
    pub case: &'a Case,
    pub prepared: &'a Prepared,
    pub models: &'a [Box<dyn Model>],
    pub plan: &'a RegionPlan,
    pub results: &'a Results,
    pub cost: &'a EnsembleCost,
    pub seg: SegSummary,
    /// The NIfTI maps written, in order.
    pub maps: Vec<String>,
    /// The figures written, as `figures/<name>`.
    pub figures: Vec<String>,
    pub timings_s: BTreeMap<String, f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Where the ensemble's time went, summed over passes.
#[derive(Debug, Clone, Default)]
pub struct EnsembleCost {
    noise_seconds: f64,
    aggregate_seconds: f64,
    window_seconds: f64,
    onnxruntime_seconds: f64,
    patches: usize,
    reused: usize,
}

impl EnsembleCost {
    pub fn add(&mut self, d: &PassDone) {
        self.noise_seconds += d.noise_seconds;
        self.aggregate_seconds += d.aggregate_seconds;
        self.window_seconds += d.inference_seconds;
        self.onnxruntime_seconds += d.model_seconds;
        self.patches += d.patches;
        self.reused += d.reused;
    }

    /// Timings for the report: ONNX Runtime, the sliding window's own work, and the noise and
    /// aggregation done beside them on a helper thread.
    pub fn record(&self, timings: &mut BTreeMap<String, f64>) {
        timings.insert("ensemble_noise".into(), self.noise_seconds);
        timings.insert("ensemble_aggregate".into(), self.aggregate_seconds);
        timings.insert("ensemble_onnxruntime".into(), self.onnxruntime_seconds);
        timings.insert(
            "ensemble_window".into(),
            (self.window_seconds - self.onnxruntime_seconds).max(0.0),
        );
    }
}

/// The report of a run.
pub fn build(f: &Facts) -> Report {
    let p = f.pipeline;
    let names: Vec<String> = f.models.iter().map(|m| m.name().to_string()).collect();
    let primary = f.results.primary();
    let seg = &f.seg;
    let multi = f.results.multi_region();
    let primary_name = multi.then_some(primary.region.name.as_str());
    let blobs = blob_entries(primary, &names, p, |id| {
        seg.segment_of_blob(primary_name, id)
    });
    let regions = f.results.multi_region().then(|| {
        f.results
            .regions
            .iter()
            .enumerate()
            .map(|(r, result)| {
                let entry = region_entry(f, r, result, &names);
                (result.region.name.clone(), entry)
            })
            .collect()
    });
    Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "stochseg".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        case: case_info(f.case),
        pipeline: PipelineInfo {
            name: p.name.clone(),
            config: f.pipeline_path.map(Path::to_path_buf),
            source: f.pipeline_source,
        },
        runtime: RuntimeInfo {
            onnxruntime_version: f.engine.version.clone(),
            onnxruntime_library: f.engine.library.clone(),
            providers_requested: p
                .execution
                .providers
                .iter()
                .map(|d| d.to_string())
                .collect(),
            allow_fallback: p.execution.allow_fallback,
            threads: f.threads,
        },
        models: model_entries(f.models, p),
        ensemble: ensemble_info(p, f.cost),
        preprocess: preprocess_info(f.prepared, p, &f.case.channels),
        thresholds: Thresholds {
            logit: p.blobs.threshold,
            connectivity: p.blobs.connectivity,
            min_voxels: p.blobs.min_voxels,
            decisions: p.blobs.decisions,
        },
        region: RegionInfo {
            name: primary.region.name.clone(),
            labels: primary.region.labels.clone(),
            models: feeder_names(primary, &names),
        },
        statistics: primary.statistics.clone(),
        uncertainty: Some(primary.uncertainty.clone()),
        model_statistics: primary.model_statistics.clone(),
        blobs,
        comparison: primary.comparison.clone(),
        regions,
        label_map: f.results.label_map.as_ref().map(|l| LabelMapInfo {
            file: LABEL_MAP_FILE.to_string(),
            rule: match l.rule {
                LabelRule::Argmax { .. } => "argmax",
                LabelRule::Nested { .. } => "nested",
            }
            .to_string(),
            labels: l
                .names
                .iter()
                .map(|(label, name)| LabelName {
                    label: *label,
                    name: name.clone(),
                })
                .collect(),
        }),
        outputs: f
            .maps
            .iter()
            .cloned()
            .chain(seg.files())
            .chain(f.figures.iter().cloned())
            .chain(["report.yaml".to_string(), "report.json".to_string()])
            .collect(),
        seg: f.seg.clone(),
        timings_s: f.timings_s.clone(),
        peak_rss_mib: f.peak_rss_mib,
    }
}

/// One region's entry under `regions`.
fn region_entry(f: &Facts, r: usize, result: &RegionResult, names: &[String]) -> RegionEntry {
    // the region's own segments (every region of a run with several regions)

    let region = Some(result.region.name.as_str());
    let segment = |id: u32| f.seg.segment_of_blob(region, id);
    RegionEntry {
        labels: result.region.labels.clone(),
        models: feeder_names(result, names),
        outputs: f
            .pipeline
            .outputs
            .maps
            .iter()
            .map(|k: &MapKind| k.file_name_for(&result.region.name, r == 0))
            .collect(),
        statistics: result.statistics.clone(),
        uncertainty: Some(result.uncertainty.clone()),
        model_statistics: result.model_statistics.clone(),
        blobs: blob_entries(result, names, f.pipeline, segment),
        comparison: result.comparison.clone(),
    }
}

fn feeder_names(result: &RegionResult, names: &[String]) -> Vec<String> {
    result.feeders.iter().map(|&m| names[m].clone()).collect()
}

/// The blobs of one region, with their decisions and SEG segments.
fn blob_entries(
    result: &RegionResult,
    names: &[String],
    p: &Pipeline,
    segment: impl Fn(u32) -> Option<u16>,
) -> Vec<BlobEntry> {
    let feeders = feeder_names(result, names);
    result
        .blobs
        .iter()
        .map(|b| BlobEntry {
            seg_segment_number: segment(b.id),
            decision: p.blobs.decisions.map(|d| d.decide(b.mean_logit)),
            ..BlobEntry::new(b, &feeders)
        })
        .collect()
}

fn case_info(case: &Case) -> CaseInfo {
    let g = &case.geometry;
    CaseInfo {
        id: case.id.clone(),
        inputs: case
            .channels
            .iter()
            .zip(&case.paths)
            .map(|(c, path)| InputEntry {
                channel: c.clone(),
                path: path.clone(),
            })
            .collect(),
        geometry: GeometryInfo {
            shape_ijk: g.shape_ijk,
            spacing_mm: g.spacing_mm(),
            axis_codes: g.axis_codes().iter().collect(),
            coordinate_system: "LPS".into(),
            affine_lps: g.affine_lps,
        },
    }
}

fn model_entries(models: &[Box<dyn Model>], p: &Pipeline) -> Vec<ModelEntry> {
    models
        .iter()
        .map(|m| {
            let placement = m.placement();
            ModelEntry {
                name: m.name().to_string(),
                path: m.info().path.clone(),
                sha256: m.info().sha256.clone(),
                patch_size: m.patch_size(),
                batch_size: m.fixed_batch().unwrap_or(capped_batch(
                    m.patch_size(),
                    p.inference.batch_size,
                    p.inference.max_batch_voxels,
                )),
                execution_provider: placement.device.provider_name().to_string(),
                precision: Some(placement.precision.to_string()),
                plugin: placement.plugin.map(|p| PluginInfo {
                    library: p.library,
                    version: p.version,
                }),
                metadata: m.info().metadata.clone(),
                outputs: m.outputs().clone(),
            }
        })
        .collect()
}

fn ensemble_info(p: &Pipeline, cost: &EnsembleCost) -> EnsembleInfo {
    EnsembleInfo {
        patches_run: cost.patches,
        patches_reused: cost.reused,
        mode: p.ensemble.mode,
        passes_per_model: p.passes_per_model(),
        total_passes: p.passes_per_model() * p.models.len(),
        sigma: p.effective_sigma(),
        seed: p.ensemble.seed,
        noise_region: p.ensemble.noise_region,
        noise_on: p.ensemble.noise_on,
        aggregation: p.ensemble.aggregation,
        overlap: p.inference.overlap,
        weighting: p.inference.weighting,
    }
}

fn preprocess_info(prepared: &Prepared, p: &Pipeline, channels: &[String]) -> PreprocessInfo {
    PreprocessInfo {
        model_orientation: p.orientation,
        normalization: "zscore_nonzero".into(),
        crop_to_nonzero: p.preprocess.crop_to_nonzero,
        crop_canonical_zyx: prepared.crop,
        outside_logit: p.inference.outside_logit,
        channel_stats: channels
            .iter()
            .cloned()
            .zip(prepared.channel_stats.iter().copied())
            .collect(),
    }
}
