//! One case, end to end, as a list of stages: inspect the input's headers, open the models,
//! check the memory estimate, load, reorient and normalize, run the ensemble, find each region's
//! blobs and statistics, optionally compare with the deterministic ensemble, and write figures,
//! maps, the DICOM SEG and the report atomically into the output folder. Each stage is a call
//! into the module that owns it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array3, ArrayView3, Zip};

use crate::aggregate::{PassStore, RegionAggregates, RegionAggregator};
use crate::blobs::Blob;
use crate::blobs::{self, BlobOptions, Frame};
use crate::compare::{self, CompareInputs};
use crate::ensemble::{self, EnsembleOptions, PassDone};
use crate::error::Error;
use crate::estimate;
use crate::infer::{self, Device, Model, ProviderPlan, SessionOptions, Threads};
use crate::install::PipelineSource;
use crate::io::case::{self, CaseSpec};
use crate::output::{self, Staging};
use crate::pipeline::{Mode, Pipeline};
use crate::preprocess::{self, Prepared};
use crate::regions::{self, LabelRule, RegionPlan};
use crate::report::{self, EnsembleCost, Facts};
use crate::resources;
use crate::results::{LabelMap, RegionResult, Results};
use crate::seg;
use crate::stats;
use crate::streams::NoiseStreams;
use crate::window::WindowOptions;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub pipeline: Pipeline,
    pub pipeline_path: Option<PathBuf>,
    /// Where the config came from (the report's `pipeline.source`).
    pub pipeline_source: PipelineSource,
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

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out: PathBuf,
    /// Blobs of the primary region.
    pub blobs: usize,
}

/// Runs one case.
pub fn run(req: &RunRequest, on_event: &mut dyn FnMut(Event)) -> Result<RunSummary, Error> {
    let p = &req.pipeline;
    // taken first: refuses an existing output or a concurrent run before any work is done
    let staging = Staging::new(&req.out, req.overwrite)?;
    let threads = resources::thread_count(p.execution.threads);
    let mut clock = Clock::new(on_event);

    // the channels' headers first (size limit, one grid), then the models, so that the memory
    // estimate refuses an oversized run before any voxel is read
    let t = clock.start("inspect_input");
    let files = case::resolve(&req.case, &p.channels, &p.dicom)?;
    let grid = estimate::case_grid_of(&files, p.limits.max_voxels)?;
    clock.record("inspect_input", t);
    let backend = infer::onnx_runtime(session_options(p, req.ort_lib.clone(), threads)?)?;
    let streams = NoiseStreams::new(p.ensemble.seed);
    let mut models = clock.stage("load_models", || {
        infer::open_models(backend.as_ref(), p, &streams)
    })?;
    let plan = region_plan(p, &models)?;
    estimate::check_memory(p, &models, &plan, &files[0].path, &grid)?;
    stop_if_cancelled()?;

    let case = clock.stage("load", || case::load(&files, p.limits.max_voxels))?;
    stop_if_cancelled()?;
    let prepared = clock.stage("preprocess", || {
        preprocess::prepare_case(
            case.images.view(),
            &case.geometry,
            p.orientation,
            &p.preprocess,
        )
    });
    let t = clock.start("ensemble");
    let count = PassCount::ensemble(p, models.len());
    let ensemble_run = EnsembleRun {
        prepared: &prepared,
        plan: &plan,
        streams,
        staging: &staging,
        spill_name: ".passes",
    };
    let (aggregates, cost) = ensemble_run.run(&mut models, p, count, &mut *clock.on_event)?;
    cost.record(&mut clock.timings);
    clock.record("ensemble", t);

    let frame = Frame {
        crop: prepared.crop,
        axis_map: prepared.axis_map,
        input: &case.geometry,
    };
    let names: Vec<String> = models.iter().map(|m| m.name().to_string()).collect();
    let (found, label_map) = clock
        .stage("blobs", || find_blobs(&aggregates, &plan, p, &frame))
        .map_err(|e| output::spill_error(&staging, e))?;
    let mut results = clock.stage("statistics", || {
        region_results(aggregates, found, &plan, p, &prepared, label_map)
    });
    if p.ensemble.compare_deterministic {
        let t = clock.start("deterministic_comparison");
        let det_run = EnsembleRun {
            spill_name: ".passes-deterministic",
            ..ensemble_run
        };
        let det_p = Pipeline {
            ensemble: crate::pipeline::Ensemble {
                mode: Mode::Deterministic,
                ..p.ensemble.clone()
            },
            ..p.clone()
        };
        let count = count.comparison(models.len());
        let (det, _) = det_run.run(&mut models, &det_p, count, &mut *clock.on_event)?;
        compare_deterministic(&mut results, det, p, &names, &frame, &prepared)
            .map_err(|e| output::spill_error(&staging, e))?;
        clock.record("deterministic_comparison", t);
    }
    if p.outputs.figures || p.ensemble.compare_deterministic {
        model_statistics(&mut results, &names, &prepared)
            .map_err(|e| output::spill_error(&staging, e))?;
    }
    let figures = if p.outputs.figures {
        clock.stage("write_figures", || {
            output::write_figures(&staging, &results, &prepared, p, &names)
        })?
    } else {
        Vec::new()
    };
    let maps = clock.stage("write_maps", || {
        output::write_maps(&staging, &case, &prepared, &results, p)
    })?;
    let seg = clock.stage("write_dicom", || {
        let selection = seg::select(&results, &prepared, p, &names);
        output::write_dicom(&staging, &case, &selection, p)
    })?;
    clock
        .timings
        .insert("total".to_string(), clock.started.elapsed().as_secs_f64());
    let facts = Facts {
        pipeline: p,
        pipeline_path: req.pipeline_path.as_deref(),
        pipeline_source: req.pipeline_source,
        engine: backend.engine(),
        threads,
        case: &case,
        prepared: &prepared,
        models: &models,
        plan: &plan,
        results: &results,
        cost: &cost,
        seg,
        maps,
        figures,
        timings_s: clock.timings.clone(),
        peak_rss_mib: resources::peak_rss_mib(),
    };
    let report = report::build(&facts);
    let (yaml, json) = report.render()?;
    staging.write("report.yaml", &yaml)?;
    staging.write("report.json", &json)?;
    // an interrupt that came after the ensemble still leaves nothing behind
    stop_if_cancelled()?;
    let blobs = results.primary().blobs.len();
    drop(results); // removes the spill files before the folder is committed
    let out = staging.commit()?;
    Ok(RunSummary { out, blobs })
}

/// How the ONNX Runtime sessions of a run are made.
fn session_options(
    p: &Pipeline,
    library: Option<PathBuf>,
    threads: usize,
) -> Result<SessionOptions, Error> {
    Ok(SessionOptions {
        library,
        plan: ProviderPlan::from_config(&p.execution)?,
        threads: Threads {
            intra: threads,
            spinning: p.execution.spinning,
        },
        batch_size: p.inference.batch_size,
        max_batch_voxels: p.inference.max_batch_voxels,
    })
}

/// The run's regions from what the opened models declare.
fn region_plan(p: &Pipeline, models: &[Box<dyn Model>]) -> Result<RegionPlan, Error> {
    let declared: Vec<_> = models
        .iter()
        .map(|m| (m.info().path.display().to_string(), m.outputs().clone()))
        .collect();
    Ok(RegionPlan::new(&p.regions, &declared).map_err(infer::ModelError::from)?)
}

/// `Error::Interrupted` once SIGINT/SIGTERM was received (the staging folder is then dropped).
fn stop_if_cancelled() -> Result<(), Error> {
    if crate::cancel::requested() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Per-pass maps larger than this (all regions together) go to spill files instead of memory.
const SPILL_ABOVE_BYTES: usize = 128 << 20;

/// One ensemble over the prepared case: the models' passes into one aggregator per region.
#[derive(Clone, Copy)]
struct EnsembleRun<'a> {
    prepared: &'a Prepared,
    plan: &'a RegionPlan,
    streams: NoiseStreams,
    staging: &'a Staging,
    /// Name stem of the per-pass spill files in the staging folder.
    spill_name: &'static str,
}

impl EnsembleRun<'_> {
    fn run(
        self,
        models: &mut [Box<dyn Model>],
        p: &Pipeline,
        count: PassCount,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(RegionAggregates, EnsembleCost), Error> {
        let opts = EnsembleOptions {
            passes: p.passes_per_model(),
            sigma: p.effective_sigma(),
            streams: self.streams,
            noise_region: p.ensemble.noise_region,
            noise_on: p.ensemble.noise_on,
            overlap_noise: models.iter().any(|m| m.device() != Device::Cpu),
            window: WindowOptions {
                overlap: p.inference.overlap,
                weighting: p.inference.weighting,
                batch_size: p.inference.batch_size,
                max_batch_voxels: p.inference.max_batch_voxels,
            },
        };
        let shape = self.prepared.crop.shape();
        let mut sink = RegionAggregator::new(
            self.plan,
            shape,
            p.ensemble.aggregation,
            self.pass_stores(opts.passes, shape)?,
        );
        let mut cost = EnsembleCost::default();
        ensemble::run(
            models,
            self.prepared.image.view(),
            self.prepared.brain.view(),
            &opts,
            &mut sink,
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
        let aggregates = sink
            .finish()
            .map_err(|e| output::spill_error(self.staging, e))?;
        Ok((aggregates, cost))
    }

    /// One pass store per region: in memory, or in spill files when all of them together would
    /// hold more than `SPILL_ABOVE_BYTES`.
    fn pass_stores(&self, passes: usize, shape: [usize; 3]) -> Result<Vec<PassStore>, Error> {
        let voxels: usize = shape.iter().product();
        let per_region = |r: usize| passes * self.plan.feeders(r).len();
        let regions = self.plan.regions.len();
        let bytes: usize = (0..regions)
            .map(|r| voxels * std::mem::size_of::<half::f16>() * per_region(r))
            .sum();
        (0..regions)
            .map(|r| {
                if bytes <= SPILL_ABOVE_BYTES {
                    return Ok(PassStore::in_memory(shape));
                }
                let name = match r {
                    0 => format!("{}.f16", self.spill_name),
                    _ => format!("{}-{}.f16", self.spill_name, self.plan.regions[r].name),
                };
                let path = self.staging.file(&name);
                PassStore::spilled(shape, &path)
                    .map_err(|e| output::spill_error(self.staging, e).into())
            })
            .collect()
    }
}

/// Blob ids on the canonical crop and the blobs, of one region.
type Found = (Array3<u32>, Vec<Blob>);

/// Each region's blobs, and the label map.
fn find_blobs(
    aggregates: &RegionAggregates,
    plan: &RegionPlan,
    p: &Pipeline,
    frame: &Frame,
) -> std::io::Result<(Vec<Found>, Option<LabelMap>)> {
    let opts = blob_options(p);
    let found = aggregates
        .regions
        .iter()
        .enumerate()
        .map(|(r, aggregate)| blobs::find(aggregate, &plan.feeders(r), &opts, frame))
        .collect::<std::io::Result<Vec<_>>>()?;
    let label_map = plan.label_map.as_ref().map(|(rule, names)| LabelMap {
        map: label_map(rule, aggregates, p.blobs.threshold),
        rule: rule.clone(),
        names: names.clone(),
    });
    Ok((found, label_map))
}

/// The label map by `rule` from the regions' aggregated logits or averaged class probabilities.
fn label_map(rule: &LabelRule, aggregates: &RegionAggregates, threshold: f32) -> Array3<u8> {
    match rule {
        LabelRule::Argmax { labels } => {
            let means = aggregates
                .class_means
                .as_ref()
                .expect("the region aggregator keeps the class means for the argmax rule");
            regions::argmax_labels(labels, means.view())
        }
        LabelRule::Nested { steps } => {
            let logits: Vec<ArrayView3<f32>> =
                aggregates.regions.iter().map(|a| a.logit.view()).collect();
            regions::nested_labels(steps, &logits, threshold)
        }
    }
}

/// Each region's results with its case-level statistics.
fn region_results(
    aggregates: RegionAggregates,
    found: Vec<Found>,
    plan: &RegionPlan,
    p: &Pipeline,
    prepared: &Prepared,
    label_map: Option<LabelMap>,
) -> Results {
    let regions = aggregates
        .regions
        .into_iter()
        .zip(found)
        .enumerate()
        .map(|(r, (aggregate, (labels, blobs)))| {
            let edges = histogram_edges(&aggregate.logit, &prepared.brain, p);
            let statistics =
                compare::statistics(&aggregate.logit, &prepared.brain, p.blobs.threshold, &edges);
            RegionResult {
                region: plan.regions[r].clone(),
                feeders: plan.feeders(r),
                aggregate,
                labels,
                blobs,
                statistics,
                edges,
                model_statistics: None,
                comparison: None,
            }
        })
        .collect();
    Results { regions, label_map }
}

fn blob_options(p: &Pipeline) -> BlobOptions {
    BlobOptions {
        threshold: p.blobs.threshold,
        connectivity: p.blobs.connectivity,
        min_voxels: p.blobs.min_voxels,
    }
}

/// Histogram edges of the case-level statistics: `histogram_bins` bins from the floor of the
/// lowest to the ceiling of the highest aggregated logit in the brain.
fn histogram_edges(logit: &Array3<f32>, brain: &Array3<bool>, p: &Pipeline) -> Vec<f64> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    Zip::from(logit).and(brain).for_each(|&v, &inside| {
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

/// Puts the deterministic ensemble (same models, no noise, one pass each) beside each region's
/// stochastic results (see `compare`).
fn compare_deterministic(
    results: &mut Results,
    det: RegionAggregates,
    p: &Pipeline,
    names: &[String],
    frame: &Frame,
    prepared: &Prepared,
) -> std::io::Result<()> {
    let opts = blob_options(p);
    for (result, det) in results.regions.iter_mut().zip(&det.regions) {
        let (_, own) = blobs::find(det, &result.feeders, &opts, frame)?;
        let inputs = CompareInputs {
            labels: &result.labels,
            stochastic_blobs: &result.blobs,
            model_names: names,
            brain: &prepared.brain,
            threshold: p.blobs.threshold,
            decisions: p.blobs.decisions,
            edges: &result.edges,
            deterministic_blobs_found: own.len(),
        };
        result.comparison = Some(compare::build(det, &inputs)?);
    }
    Ok(())
}

/// Per region, each feeding model's mean over its passes in the brain.
fn model_statistics(
    results: &mut Results,
    names: &[String],
    prepared: &Prepared,
) -> std::io::Result<()> {
    for result in &mut results.regions {
        result.model_statistics = Some(compare::model_mean_statistics(
            &result.aggregate,
            &prepared.brain,
            names,
            &result.edges,
        )?);
    }
    Ok(())
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
            ensemble: Mode::Deterministic.name(),
            ..self
        }
    }
}

/// Stage timer that records into the report's `timings_s` and reports each stage.
struct Clock<'a> {
    timings: BTreeMap<String, f64>,
    started: Instant,
    on_event: &'a mut dyn FnMut(Event),
}

impl<'a> Clock<'a> {
    fn new(on_event: &'a mut dyn FnMut(Event)) -> Clock<'a> {
        Clock {
            timings: BTreeMap::new(),
            started: Instant::now(),
            on_event,
        }
    }

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
