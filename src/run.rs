//! One case, end to end: load, reorient and normalize, run the ensemble, aggregate, find blobs,
//! and write maps, the DICOM SEG and the report atomically into the output folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array3, Zip};

use crate::aggregate::{sigmoid, Aggregate, Aggregator, PassStore};
use crate::blobs::{self, Blob, BlobOptions, Frame};
use crate::ensemble::{self, EnsembleOptions, PassDone};
use crate::error::Error;
use crate::estimate;
use crate::infer::ort::{OpenOptions, OrtModel, Threads};
use crate::infer::providers::ProviderPlan;
use crate::infer::{runtime, Model};
use crate::io::case::{self, Case, CaseSpec};
use crate::io::nifti;
use crate::io::InputError;
use crate::output::{OutputError, Staging};
use crate::pipeline::{ConfigError, MapKind, Pipeline};
use crate::preprocess::{self, Prepared};
use crate::report::{self, Report};
use crate::seg::{self, SegInputs, SegOptions, SegSummary};
use crate::stats;
use crate::volume::{parse_axis_codes, AxisMap};
use crate::window::WindowOptions;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub pipeline: Pipeline,
    pub pipeline_path: Option<PathBuf>,
    pub case: CaseSpec,
    pub out: PathBuf,
    pub overwrite: bool,
    pub ort_lib: Option<PathBuf>,
}

/// Progress as the run goes.
#[derive(Debug, Clone)]
pub enum Event {
    StageStart {
        name: &'static str,
    },
    StageDone {
        name: &'static str,
        seconds: f64,
    },
    /// A pass finished; `done.done` and `done.total` count over all of the run's passes (the
    /// ensemble's, then the deterministic comparison's), `ensemble` says which one it was.
    Pass {
        done: PassDone,
        ensemble: &'static str,
    },
}

/// Where one ensemble's passes stand among all the passes of the run.
#[derive(Debug, Clone, Copy)]
struct PassCount {
    before: usize,
    all: usize,
    ensemble: &'static str,
}

impl PassCount {
    /// The run's ensemble, whose passes come first (those of a deterministic comparison follow).
    fn ensemble(p: &Pipeline, models: usize) -> PassCount {
        let comparison = if p.ensemble.compare_deterministic {
            models
        } else {
            0
        };
        PassCount {
            before: 0,
            all: p.passes_per_model() * models + comparison,
            ensemble: p.ensemble.mode.name(),
        }
    }

    /// The deterministic comparison's passes, one per model, after the ensemble's.
    fn comparison(self, models: usize) -> PassCount {
        PassCount {
            before: self.all - models,
            ensemble: crate::pipeline::Mode::Deterministic.name(),
            ..self
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out: PathBuf,
    pub blobs: usize,
}

/// Stage timer that records into the report's `timings_s` and reports each stage.
struct Clock<'a> {
    timings: BTreeMap<String, f64>,
    started: Instant,
    on_event: &'a mut dyn FnMut(Event),
}

impl Clock<'_> {
    fn stage<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let t = self.start(name);
        let out = f();
        self.record(name, t);
        out
    }

    /// Reports that stage `name` starts; its `record` ends it.
    fn start(&mut self, name: &'static str) -> Instant {
        (self.on_event)(Event::StageStart { name });
        Instant::now()
    }

    fn record(&mut self, name: &'static str, since: Instant) {
        let seconds = since.elapsed().as_secs_f64();
        self.timings.insert(name.to_string(), seconds);
        (self.on_event)(Event::StageDone { name, seconds });
    }
}

/// Threads to use: the configured count, else the CPU quota (`SLURM_CPUS_PER_TASK`, then the
/// cgroup/affinity-aware count the OS reports).
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    if let Some(n) = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Runs one case.
pub fn run(req: &RunRequest, on_event: &mut dyn FnMut(Event)) -> Result<RunSummary, Error> {
    let p = &req.pipeline;
    // taken first: refuses an existing output or a concurrent run before any work is done
    let staging = Staging::new(&req.out, req.overwrite)?;
    let plan = ProviderPlan::from_config(&p.execution)?;
    let threads = thread_count(p.execution.threads);
    let mut clock = Clock {
        timings: BTreeMap::new(),
        started: Instant::now(),
        on_event,
    };

    // the channels' headers first (size limit, one grid), then the models, so that the memory
    // estimate refuses an oversized run before any voxel is read
    let t = clock.start("inspect_input");
    let files = case::resolve(&req.case, &p.channels, &p.dicom)?;
    let (case_id, grid) = case::header_grid(&files, p.limits.max_voxels)?;
    clock.record("inspect_input", t);
    let (env, rt) = runtime::init(req.ort_lib.as_deref())?;
    let open = OpenOptions {
        plan: &plan,
        runtime: rt,
        threads: Threads {
            intra: threads,
            spinning: p.execution.spinning,
        },
        batch_size: p.inference.batch_size,
        max_batch_voxels: p.inference.max_batch_voxels,
    };
    let mut models: Vec<OrtModel> = clock.stage("load_models", || {
        p.models
            .iter()
            .enumerate()
            .map(|(i, m)| open_model(env, m, i, p, &open))
            .collect::<Result<Vec<_>, _>>()
    })?;
    check_memory(
        p,
        &models,
        &files[0].path,
        estimate::CaseGrid {
            id: case_id,
            geometry: grid,
        },
    )?;
    stop_if_cancelled()?;

    let case = clock.stage("load", || case::load(&files, p.limits.max_voxels))?;
    stop_if_cancelled()?;
    let target = parse_axis_codes(&p.orientation)
        .ok_or_else(|| ConfigError::Invalid("/orientation: invalid".into()))?;
    let axis_map = AxisMap::between(case.geometry.axis_codes(), target)
        .ok_or_else(|| ConfigError::Invalid("/orientation: cannot map the input's axes".into()))?;
    let prepared = clock.stage("preprocess", || {
        let canonical = axis_map.to_canonical4(case.images.view());
        preprocess::prepare(
            canonical,
            p.preprocess.crop_to_nonzero,
            p.preprocess.crop_margin_voxels,
        )
    });
    let model_entries = model_entries(&models, p);
    let t = clock.start("ensemble");
    let spill = staging.file(".passes.f16");
    let count = PassCount::ensemble(p, models.len());
    let (aggregate, cost) = run_ensemble(
        &mut models,
        &prepared,
        p,
        &spill,
        count,
        &mut *clock.on_event,
    )?;
    cost.record(&mut clock.timings);
    clock.record("ensemble", t);

    let frame = Frame {
        crop: prepared.crop,
        axis_map,
        input: &case.geometry,
    };
    let blob_opts = BlobOptions {
        threshold: p.blobs.threshold,
        connectivity: p.blobs.connectivity,
        min_voxels: p.blobs.min_voxels,
    };
    let (labels, found) = clock
        .stage("blobs", || {
            blobs::find(&aggregate, models.len(), &blob_opts, &frame)
        })
        .map_err(|e| spill_error(&spill, e))?;
    let edges = histogram_edges(&aggregate, &prepared, p);
    let statistics = clock.stage("statistics", || {
        crate::compare::statistics(&aggregate.logit, &prepared.brain, p.blobs.threshold, &edges)
    });
    let names: Vec<String> = models.iter().map(|m| m.name().to_string()).collect();
    let comparison = if p.ensemble.compare_deterministic {
        let t = clock.start("deterministic_comparison");
        let inputs = CompareRun {
            prepared: &prepared,
            labels: &labels,
            found: &found,
            names: &names,
            edges: &edges,
            blob_opts: &blob_opts,
            frame: &frame,
        };
        let count = count.comparison(models.len());
        let comparison = compare_deterministic(
            &mut models,
            p,
            &inputs,
            &staging.file(".passes-deterministic.f16"),
            count,
            &mut *clock.on_event,
        )?;
        clock.record("deterministic_comparison", t);
        Some(comparison)
    } else {
        None
    };

    let model_statistics = (p.outputs.figures || comparison.is_some())
        .then(|| {
            let (brain, edges) = (&prepared.brain, &edges);
            crate::compare::model_mean_statistics(&aggregate, brain, &names, edges)
        })
        .transpose()
        .map_err(|e| spill_error(&spill, e))?;
    let figures = if p.outputs.figures {
        let inputs = crate::figures::FigureInputs {
            statistics: &statistics,
            model_statistics: model_statistics.as_ref(),
            comparison: comparison.as_ref(),
            threshold: f64::from(p.blobs.threshold),
            channels: &p.channels,
            image: &prepared.image,
            labels: &labels,
            spread: &aggregate.std_logit,
            found: &found,
            names: &names,
        };
        clock
            .stage("write_figures", || write_figures(&staging, &inputs))
            .map_err(|e| staging.relabel(e))?
    } else {
        Vec::new()
    };
    let outputs = clock
        .stage("write_maps", || {
            write_maps(&staging, &case, &prepared, axis_map, &aggregate, &labels, p)
        })
        .map_err(|e| staging.relabel(e))?;
    let seg = clock
        .stage("write_dicom", || {
            let labels = on_input_grid(&labels, &prepared, axis_map, 0);
            let (labels, found) = seg_selection(labels, &found, p);
            let d = &p.dicom_output;
            let probability = (d.probability_seg || !d.probability_levels.is_empty()).then(|| {
                let fill = sigmoid(p.inference.outside_logit);
                on_input_grid(&aggregate.probability, &prepared, axis_map, fill)
            });
            let parameters = algorithm_parameters(p, &models);
            let grids = (&labels, probability.as_ref());
            write_dicom(&staging, &case, grids, &found, p, &parameters)
        })
        .map_err(|e| staging.relabel(e))?;
    clock
        .timings
        .insert("total".to_string(), clock.started.elapsed().as_secs_f64());
    let report = Report {
        schema_version: 2,
        tool: report::Tool {
            name: "stochseg".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        case: case_info(&case),
        pipeline: report::PipelineInfo {
            name: p.name.clone(),
            config: req.pipeline_path.clone(),
        },
        runtime: report::RuntimeInfo {
            onnxruntime_version: rt.version.clone(),
            onnxruntime_library: rt.library.clone(),
            providers_requested: p.execution.providers.clone(),
            allow_fallback: p.execution.allow_fallback,
            threads,
        },
        models: model_entries,
        ensemble: ensemble_info(p, &cost),
        preprocess: preprocess_info(&prepared, p, &case.channels),
        thresholds: report::Thresholds {
            logit: p.blobs.threshold,
            connectivity: p.blobs.connectivity,
            min_voxels: p.blobs.min_voxels,
            decisions: p.blobs.decisions,
        },
        statistics,
        model_statistics,
        comparison,
        blobs: found
            .iter()
            .map(|b| report::BlobEntry {
                seg_segment_number: seg.segment_of_blob(b.id),
                decision: p.blobs.decisions.map(|d| d.decide(b.mean_logit)),
                ..report::BlobEntry::new(b, &names)
            })
            .collect(),
        outputs: outputs
            .iter()
            .cloned()
            .chain(seg.files())
            .chain(figures)
            .chain(["report.yaml".to_string(), "report.json".to_string()])
            .collect(),
        seg,
        timings_s: clock.timings.clone(),
        peak_rss_mib: peak_rss_mib(),
    };
    let (yaml, json) = report.render().map_err(OutputError::from)?;
    staging.write("report.yaml", &yaml)?;
    staging.write("report.json", &json)?;
    // an interrupt that came after the ensemble still leaves nothing behind
    stop_if_cancelled()?;
    drop(aggregate); // removes the spill file before the folder is committed
    let out = staging.commit()?;
    Ok(RunSummary {
        out,
        blobs: found.len(),
    })
}

/// Refuses the run when its estimated peak memory exceeds `limits.max_memory_mib`.
fn check_memory(
    p: &Pipeline,
    models: &[OrtModel],
    first_input: &std::path::Path,
    grid: estimate::CaseGrid,
) -> Result<(), Error> {
    let plans: Vec<estimate::ModelPlan> = models
        .iter()
        .map(|m| estimate::model_plan(&m.info.path, m.name(), m.patch_size(), m.fixed_batch()))
        .collect();
    let needed_mib = estimate::estimate(p, &plans, &grid)?.peak_memory_mib();
    tracing::debug!(
        needed_mib,
        max_mib = p.limits.max_memory_mib,
        "memory estimate"
    );
    if needed_mib > p.limits.max_memory_mib {
        let [x, y, z] = grid.geometry.shape_ijk;
        return Err(InputError::MemoryLimit {
            path: first_input.to_path_buf(),
            shape: format!("{x}x{y}x{z}"),
            needed_mib,
            max_mib: p.limits.max_memory_mib,
        }
        .into());
    }
    Ok(())
}

/// `Error::Interrupted` once SIGINT/SIGTERM was received (the staging folder is then dropped).
fn stop_if_cancelled() -> Result<(), Error> {
    if crate::cancel::requested() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Per-pass maps larger than this go to a spill file instead of memory.
const SPILL_ABOVE_BYTES: usize = 128 << 20;

/// Opens model `index` of the pipeline, with its noise graph when noise is drawn on the device
/// (seeded per model from the ensemble's seed).
fn open_model(
    env: &ort::environment::Environment,
    spec: &crate::pipeline::ModelSpec,
    index: usize,
    p: &Pipeline,
    open: &OpenOptions,
) -> Result<OrtModel, crate::infer::ModelError> {
    let mut model = OrtModel::open(env, spec, &p.channels, open)?;
    let sigma = p.effective_sigma();
    if sigma > 0.0 && p.ensemble.noise_on == crate::pipeline::NoiseOn::Device {
        let seed = ensemble::stream_seed(p.ensemble.seed, [index as u64, u64::MAX, 0, 0]);
        model.add_device_noise(env, open, sigma, seed)?;
    }
    Ok(model)
}

fn spill_error(path: &std::path::Path, e: std::io::Error) -> Error {
    OutputError::Io {
        path: path.to_path_buf(),
        reason: format!("per-pass spill file: {e}"),
    }
    .into()
}

fn run_ensemble(
    models: &mut [OrtModel],
    prepared: &Prepared,
    p: &Pipeline,
    spill: &std::path::Path,
    count: PassCount,
    on_event: &mut dyn FnMut(Event),
) -> Result<(Aggregate, EnsembleCost), Error> {
    let opts = EnsembleOptions {
        passes: p.passes_per_model(),
        sigma: p.effective_sigma(),
        seed: p.ensemble.seed,
        noise_region: p.ensemble.noise_region,
        noise_on: p.ensemble.noise_on,
        overlap_noise: models
            .iter()
            .any(|m| m.device() != crate::infer::providers::Device::Cpu),
        window: WindowOptions {
            overlap: p.inference.overlap,
            weighting: p.inference.weighting,
            batch_size: p.inference.batch_size,
            max_batch_voxels: p.inference.max_batch_voxels,
        },
    };
    let shape = prepared.crop.shape();
    let pass_bytes = shape.iter().product::<usize>()
        * std::mem::size_of::<half::f16>()
        * opts.passes
        * models.len();
    let store = if pass_bytes > SPILL_ABOVE_BYTES {
        PassStore::spilled(shape, spill).map_err(|e| spill_error(spill, e))?
    } else {
        PassStore::in_memory(shape)
    };
    let mut aggregator = Aggregator::new(shape, p.ensemble.aggregation, store);
    let mut cost = EnsembleCost::default();
    let mut boxed: Vec<Box<dyn Model + '_>> = models
        .iter_mut()
        .map(|m| Box::new(m) as Box<dyn Model>)
        .collect();
    ensemble::run(
        &mut boxed,
        prepared.image.view(),
        prepared.brain.view(),
        &opts,
        &mut aggregator,
        &mut |d| {
            cost.add(&d);
            let done = PassDone {
                done: count.before + d.done,
                total: count.all,
                ..d
            };
            on_event(Event::Pass {
                done,
                ensemble: count.ensemble,
            })
        },
    )?;
    let aggregate = aggregator.finish().map_err(|e| spill_error(spill, e))?;
    Ok((aggregate, cost))
}

/// Where the ensemble's time went, summed over passes.
#[derive(Debug, Clone, Default)]
struct EnsembleCost {
    noise_seconds: f64,
    aggregate_seconds: f64,
    window_seconds: f64,
    onnxruntime_seconds: f64,
    patches: usize,
    reused: usize,
}

impl EnsembleCost {
    fn add(&mut self, d: &PassDone) {
        self.noise_seconds += d.noise_seconds;
        self.aggregate_seconds += d.aggregate_seconds;
        self.window_seconds += d.inference_seconds;
        self.onnxruntime_seconds += d.model_seconds;
        self.patches += d.patches;
        self.reused += d.reused;
    }

    /// Timings for the report: ONNX Runtime, the sliding window's own work, and the noise and
    /// aggregation done beside them on a helper thread.
    fn record(&self, timings: &mut BTreeMap<String, f64>) {
        timings.insert("ensemble_noise".into(), self.noise_seconds);
        timings.insert("ensemble_aggregate".into(), self.aggregate_seconds);
        timings.insert("ensemble_onnxruntime".into(), self.onnxruntime_seconds);
        timings.insert(
            "ensemble_window".into(),
            (self.window_seconds - self.onnxruntime_seconds).max(0.0),
        );
    }
}

/// Histogram edges of the case-level statistics: `histogram_bins` bins from the floor of the
/// lowest to the ceiling of the highest aggregated logit in the brain.
fn histogram_edges(aggregate: &Aggregate, prepared: &Prepared, p: &Pipeline) -> Vec<f64> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    Zip::from(&aggregate.logit)
        .and(&prepared.brain)
        .for_each(|&v, &inside| {
            if inside {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        });
    if lo > hi {
        stats::edges(0.0, 1.0, p.outputs.histogram_bins)
    } else {
        stats::edges(
            f64::from(lo.floor()),
            f64::from(hi.ceil()),
            p.outputs.histogram_bins,
        )
    }
}

/// What the deterministic comparison needs from the stochastic run.
struct CompareRun<'a> {
    prepared: &'a Prepared,
    labels: &'a Array3<u32>,
    found: &'a [Blob],
    names: &'a [String],
    edges: &'a [f64],
    blob_opts: &'a BlobOptions,
    frame: &'a Frame<'a>,
}

/// Runs the deterministic ensemble (same models, no noise, one pass each) into its own
/// aggregator and compares it with the stochastic run (see `compare`).
fn compare_deterministic(
    models: &mut [OrtModel],
    p: &Pipeline,
    run: &CompareRun,
    spill: &std::path::Path,
    count: PassCount,
    on_event: &mut dyn FnMut(Event),
) -> Result<crate::compare::Comparison, Error> {
    let mut det_p = p.clone();
    det_p.ensemble.mode = crate::pipeline::Mode::Deterministic;
    let (det, _) = run_ensemble(models, run.prepared, &det_p, spill, count, on_event)?;
    let (_, own) = blobs::find(&det, models.len(), run.blob_opts, run.frame)
        .map_err(|e| spill_error(spill, e))?;
    let inputs = crate::compare::CompareInputs {
        labels: run.labels,
        stochastic_blobs: run.found,
        model_names: run.names,
        brain: &run.prepared.brain,
        threshold: p.blobs.threshold,
        decisions: p.blobs.decisions,
        edges: run.edges,
        deterministic_blobs_found: own.len(),
    };
    crate::compare::build(&det, &inputs).map_err(|e| spill_error(spill, e))
}

fn write_maps(
    staging: &Staging,
    case: &Case,
    prepared: &Prepared,
    axis_map: AxisMap,
    aggregate: &Aggregate,
    labels: &Array3<u32>,
    p: &Pipeline,
) -> Result<Vec<String>, OutputError> {
    let outside = p.inference.outside_logit;
    let to_input_f32 = |m: &Array3<f32>, fill: f32| {
        axis_map.to_input(preprocess::uncrop(
            m.view(),
            &prepared.crop,
            prepared.canonical_shape,
            fill,
        ))
    };
    let mut written = Vec::new();
    for kind in &p.outputs.maps {
        let path = staging.file(kind.file_name());
        let result = match kind {
            MapKind::MeanLogits => nifti::write_map(
                &path,
                to_input_f32(&aggregate.mean_logit, outside).view(),
                &case.geometry,
                case.nifti_header(),
                "stochseg mean logit",
            ),
            MapKind::StdLogits => nifti::write_map(
                &path,
                to_input_f32(&aggregate.std_logit, 0.0).view(),
                &case.geometry,
                case.nifti_header(),
                "stochseg logit std",
            ),
            MapKind::Probability => nifti::write_map(
                &path,
                to_input_f32(&aggregate.probability, sigmoid(outside)).view(),
                &case.geometry,
                case.nifti_header(),
                "stochseg probability",
            ),
            MapKind::Labels => {
                let full = axis_map.to_input(preprocess::uncrop(
                    labels.view(),
                    &prepared.crop,
                    prepared.canonical_shape,
                    0,
                ));
                let as_i32 = full.mapv(|v| v as i32);
                nifti::write_map(
                    &path,
                    as_i32.view(),
                    &case.geometry,
                    case.nifti_header(),
                    "stochseg blob ids",
                )
            }
        };
        result.map_err(|e| OutputError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        written.push(kind.file_name().to_string());
    }
    Ok(written)
}

/// A canonical-crop result mapped back onto the input grid (`fill` outside the crop), as the
/// NIfTI maps are.
fn on_input_grid<T: Clone>(
    m: &Array3<T>,
    prepared: &Prepared,
    axis_map: AxisMap,
    fill: T,
) -> Array3<T> {
    axis_map.to_input(preprocess::uncrop(
        m.view(),
        &prepared.crop,
        prepared.canonical_shape,
        fill,
    ))
}

/// `figures/` (see `figures`).
fn write_figures(
    staging: &Staging,
    inputs: &crate::figures::FigureInputs,
) -> Result<Vec<String>, OutputError> {
    let dir = staging.file("figures");
    crate::figures::write_all(&dir, inputs).map_err(|(name, e)| OutputError::Io {
        path: dir.join(name),
        reason: e.to_string(),
    })
}

/// The labels and blobs `seg.dcm` carries: all, or only the accepted ones
/// (`dicom_output.seg_blobs: accepted`), other blobs' voxels set to 0. Blob ids are kept.
fn seg_selection(
    mut labels: Array3<u32>,
    found: &[Blob],
    p: &Pipeline,
) -> (Array3<u32>, Vec<Blob>) {
    use crate::pipeline::{Decision, SegBlobs};
    let decisions = match (p.dicom_output.seg_blobs, p.blobs.decisions) {
        (SegBlobs::Accepted, Some(d)) => d,
        _ => return (labels, found.to_vec()),
    };
    let kept: Vec<Blob> = found
        .iter()
        .filter(|b| decisions.decide(b.mean_logit) == Decision::Accept)
        .cloned()
        .collect();
    let mut keep = vec![false; found.iter().map(|b| b.id as usize).max().unwrap_or(0) + 1];
    for b in &kept {
        keep[b.id as usize] = true;
    }
    labels.mapv_inplace(|l| if keep[l as usize] { l } else { 0 });
    (labels, kept)
}

/// The DICOM SEG(s) (and, on request, the source channels as DICOM) from the labels and
/// probability on the input grid.
fn write_dicom(
    staging: &Staging,
    case: &Case,
    (labels, probability): (&Array3<u32>, Option<&Array3<f32>>),
    found: &[Blob],
    p: &Pipeline,
    parameters: &str,
) -> Result<SegSummary, OutputError> {
    let d = &p.dicom_output;
    let options = SegOptions {
        per_blob_segments: d.per_blob_segments,
        decision_segments: p.blobs.decisions.filter(|_| d.decision_segments),
        probability_seg: d.probability_seg,
        probability_levels: d.probability_levels.clone(),
        omit_empty_frames: d.omit_empty_frames,
        write_source_dicom: d.write_source_dicom,
        reference_channel: p.reference_channel().to_string(),
        patient_name: d.patient_name.clone(),
        patient_id: d.patient_id.clone(),
    };
    let inputs = SegInputs {
        case,
        labels: labels.view(),
        probability: probability.map(|a| a.view()),
        blobs: found,
        algorithm_parameters: parameters,
    };
    Ok(seg::write(staging.dir(), &inputs, &options)?)
}

/// AlgorithmParameters of the SEG segments: what produced the mask.
fn algorithm_parameters(p: &Pipeline, models: &[OrtModel]) -> String {
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let selection = match (p.dicom_output.seg_blobs, p.blobs.decisions) {
        (crate::pipeline::SegBlobs::Accepted, Some(d)) => {
            format!("; blobs: accepted only (mean logit >= {})", d.accept)
        }
        _ => String::new(),
    };
    format!(
        "models: {}; mode: {}; passes per model: {}; sigma: {}; seed: {}; aggregation: {}; \
         threshold: {}; connectivity: {}; min voxels: {}{selection}",
        names.join(", "),
        p.ensemble.mode.name(),
        p.passes_per_model(),
        p.effective_sigma(),
        p.ensemble.seed,
        snake(&p.ensemble.aggregation),
        p.blobs.threshold,
        p.blobs.connectivity,
        p.blobs.min_voxels
    )
}

fn case_info(case: &Case) -> report::CaseInfo {
    let g = &case.geometry;
    report::CaseInfo {
        id: case.id.clone(),
        inputs: case
            .channels
            .iter()
            .zip(&case.paths)
            .map(|(c, path)| report::InputEntry {
                channel: c.clone(),
                path: path.clone(),
            })
            .collect(),
        geometry: report::GeometryInfo {
            shape_ijk: g.shape_ijk,
            spacing_mm: g.spacing_mm(),
            axis_codes: g.axis_codes().iter().collect(),
            coordinate_system: "LPS".into(),
            affine_lps: g.affine_lps,
        },
    }
}

fn model_entries(models: &[OrtModel], p: &Pipeline) -> Vec<report::ModelEntry> {
    models
        .iter()
        .map(|m| report::ModelEntry {
            name: m.name().to_string(),
            path: m.info.path.clone(),
            sha256: m.info.sha256.clone(),
            patch_size: m.patch_size(),
            batch_size: m.fixed_batch().unwrap_or(crate::window::capped_batch(
                m.patch_size(),
                p.inference.batch_size,
                p.inference.max_batch_voxels,
            )),
            execution_provider: m.device().provider_name().to_string(),
            metadata: m.info.metadata.clone(),
        })
        .collect()
}

fn ensemble_info(p: &Pipeline, cost: &EnsembleCost) -> report::EnsembleInfo {
    report::EnsembleInfo {
        patches_run: cost.patches,
        patches_reused: cost.reused,
        mode: p.ensemble.mode.name().to_string(),
        passes_per_model: p.passes_per_model(),
        total_passes: p.passes_per_model() * p.models.len(),
        sigma: p.effective_sigma(),
        seed: p.ensemble.seed,
        noise_region: snake(&p.ensemble.noise_region),
        noise_on: snake(&p.ensemble.noise_on),
        aggregation: snake(&p.ensemble.aggregation),
        overlap: p.inference.overlap,
        weighting: snake(&p.inference.weighting),
    }
}

fn preprocess_info(
    prepared: &Prepared,
    p: &Pipeline,
    channels: &[String],
) -> report::PreprocessInfo {
    report::PreprocessInfo {
        model_orientation: p.orientation.to_ascii_uppercase(),
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

/// This process's peak resident memory so far (Linux `VmHWM`, which, unlike `ru_maxrss`, does
/// not include what the parent held before `exec`); `None` where it cannot be read.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Snake-case name of a config enum, as serde writes it.
fn snake<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
