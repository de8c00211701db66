//! `stochseg validate`: a pipeline config and its models checked without running them (every
//! model opened on its execution provider, its outputs declaration resolved, the regions
//! planned), and with a case, the run's expected peak memory and output size from the case's
//! headers (`estimate`; the crop is assumed to be the whole grid).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::estimate::{self, RegionLoad};
use crate::infer::{self, Device, ModelError, ProviderPlan, SessionOptions, Threads};
use crate::install::{PipelineChoice, PipelineSource};
use crate::io::case::CaseSpec;
use crate::pipeline::Pipeline;
use crate::regions::RegionPlan;
use crate::streams::NoiseStreams;

/// What `validate` found; printed as text or YAML.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub pipeline: String,
    /// The config file (none when the command line gave only models): a workflow's dependency.
    pub pipeline_config: Option<PathBuf>,
    pub pipeline_source: PipelineSource,
    pub ok: bool,
    pub execution: ExecutionCheck,
    pub models: Vec<ModelCheck>,
    /// The config the run would use: the file and the flags, every default filled in.
    pub effective_config: Pipeline,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateCheck>,
}

/// The providers a run asks for, in order, for a batch system sizing its jobs: `gpu` when the
/// first is a GPU provider (the others are fallbacks), so a job asks for a GPU even where
/// `validate` itself ran on a host without one and fell back.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionCheck {
    pub providers: Vec<String>,
    pub allow_fallback: bool,
    pub gpu: bool,
}

/// One model as a run would use it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCheck {
    pub name: String,
    pub path: PathBuf,
    pub patch_size: [usize; 3],
    pub fixed_batch: Option<usize>,
    pub execution_provider: String,
    /// `f32`, or `bf16` / `fp16` where the provider computes in less.
    pub precision: String,
    /// The plugin provider's version (OpenVINO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
}

/// The case's grid.
#[derive(Debug, Clone, Serialize)]
pub struct CaseCheck {
    pub id: String,
    pub shape_ijk: [usize; 3],
    pub voxels: usize,
    pub crop: String,
}

/// The estimate for the case.
#[derive(Debug, Clone, Serialize)]
pub struct EstimateCheck {
    pub peak_memory_mib: u64,
    pub output_mib: u64,
    pub peak_memory_bytes: u64,
    pub output_bytes: u64,
    pub memory_parts: BTreeMap<String, u64>,
    pub output_parts: BTreeMap<String, u64>,
}

/// Checks `p` (and estimates a run on `case`) with ONNX Runtime from `library` (else the
/// library search); `choice` is where the config came from.
pub fn validate(
    p: &Pipeline,
    choice: &PipelineChoice,
    case: Option<&CaseSpec>,
    library: Option<PathBuf>,
) -> Result<Validation, Error> {
    let plan = ProviderPlan::from_config(&p.execution);
    let execution = ExecutionCheck {
        providers: p
            .execution
            .providers
            .iter()
            .map(|d| d.to_string())
            .collect(),
        allow_fallback: plan.allow_fallback,
        gpu: matches!(
            plan.devices.first(),
            Some(Device::Cuda(_) | Device::TensorRt(_))
        ),
    };
    let backend = infer::onnx_runtime(SessionOptions {
        library,
        plan,
        threads: Threads::ONE,
        batch_size: p.inference.batch_size,
        max_batch_voxels: p.inference.max_batch_voxels,
    })?;
    let models = infer::open_models(backend.as_ref(), p, &NoiseStreams::new(p.ensemble.seed))?;
    let declared: Vec<_> = models
        .iter()
        .map(|m| (m.info().path.display().to_string(), m.outputs().clone()))
        .collect();
    let plan = RegionPlan::new(&p.regions, &declared).map_err(ModelError::from)?;
    let checks = models
        .iter()
        .map(|m| {
            let placement = m.placement();
            ModelCheck {
                name: m.name().to_string(),
                path: m.info().path.clone(),
                patch_size: m.patch_size(),
                fixed_batch: m.fixed_batch(),
                execution_provider: placement.device.provider_name().to_string(),
                precision: placement.precision.to_string(),
                plugin_version: placement.plugin.map(|p| p.version),
            }
        })
        .collect();
    let mut validation = Validation {
        pipeline: p.name.clone(),
        pipeline_config: choice.path.clone(),
        pipeline_source: choice.source,
        ok: true,
        execution,
        models: checks,
        effective_config: p.clone(),
        case: None,
        estimate: None,
    };
    if let Some(spec) = case {
        let grid = estimate::case_grid(spec, p)?;
        let plans: Vec<_> = models
            .iter()
            .map(|m| estimate::model_plan(m.as_ref()))
            .collect();
        let regions = RegionLoad::of(&plan, p.passes_per_model());
        let e = estimate::estimate(p, &plans, &regions, &grid);
        validation.case = Some(CaseCheck {
            id: grid.id.clone(),
            shape_ijk: grid.geometry.shape_ijk,
            voxels: grid.geometry.voxel_count(),
            crop: "assumed to be the whole grid".to_string(),
        });
        validation.estimate = Some(EstimateCheck {
            peak_memory_mib: e.peak_memory_mib(),
            output_mib: e.output_mib(),
            peak_memory_bytes: e.peak_memory_bytes,
            output_bytes: e.output_bytes,
            memory_parts: e.memory_parts,
            output_parts: e.output_parts,
        });
    }
    Ok(validation)
}

impl Validation {
    /// The human-readable lines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for m in &self.models {
            out += &format!(
                "model {}: patch {:?}, batch {:?}, provider {} ({}), ok\n",
                m.name, m.patch_size, m.fixed_batch, m.execution_provider, m.precision
            );
        }
        if let (Some(c), Some(e)) = (&self.case, &self.estimate) {
            let [x, y, z] = c.shape_ijk;
            out += &format!(
                "case {}: grid {x}x{y}x{z} ({} voxels; crop assumed to be the whole grid)\n",
                c.id, c.voxels
            );
            out += &format!("expected peak memory: {} MiB\n", e.peak_memory_mib);
            out += &format!("expected output size: {} MiB\n", e.output_mib);
        }
        let from = match (&self.pipeline_config, self.pipeline_source) {
            (Some(path), PipelineSource::Default) => {
                format!("the shipped default, {}", path.display())
            }
            (Some(path), _) => path.display().to_string(),
            (None, _) => "command line".to_string(),
        };
        out += &format!("pipeline {} ({from}): ok\n", self.pipeline);
        out
    }
}
