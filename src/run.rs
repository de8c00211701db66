//! One case, end to end, as a list of stages: inspect the input's headers, open the models,
//! check the memory estimate, load, reorient and normalize, run the ensemble, find each region's
//! blobs and statistics, optionally compare with the deterministic ensemble, and write figures,
//! maps, the DICOM SEG and the report atomically into the output folder. Each stage is a call
//! into the module that owns it.

use std::path::PathBuf;

use crate::aggregate::{self, PassWriter, RegionAggregates, RegionAggregator};
use crate::blobs::Frame;
use crate::ensemble::{self, EnsembleOptions, PassDone};
use crate::error::Error;
use crate::estimate;
use crate::infer::{self, Model, ProviderPlan, SessionOptions, Threads};
use crate::install::PipelineSource;
use crate::io::case::{self, CaseSpec};
use crate::output::{self, Staging};
use crate::pipeline::{Mode, Pipeline};
use crate::preprocess::{self, Prepared};
use crate::progress::{Clock, PassCount};
use crate::regions::RegionPlan;
use crate::report::{self, EnsembleCost, Facts};
use crate::resources;
use crate::results;
use crate::seg;
use crate::streams::NoiseStreams;
use crate::window::WindowOptions;

pub use crate::progress::Event;

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
    let names: Vec<String> = models.iter().map(|m| m.name().to_string()).collect();
    let writer = p
        .outputs
        .pass_maps
        .then(|| {
            let regions = plan.regions.iter().map(|r| r.name.clone()).collect();
            let outside = p.inference.outside_logit;
            output::pass_writer(&staging, &case, &prepared, regions, names.clone(), outside)
        })
        .transpose()?;
    let (aggregates, cost) =
        ensemble_run.run(&mut models, p, count, &mut *clock.on_event, writer)?;
    cost.record(&mut clock.timings);
    clock.record("ensemble", t);

    let frame = Frame {
        crop: prepared.crop,
        axis_map: prepared.axis_map,
        input: &case.geometry,
    };
    let (found, label_map) = clock
        .stage("blobs", || {
            results::find_blobs(&aggregates, &plan, p, &frame)
        })
        .map_err(|e| output::spill_error(&staging, e))?;
    let mut results = clock.stage("statistics", || {
        results::region_results(aggregates, found, &plan, p, &prepared, label_map)
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
        let (det, _) = det_run.run(&mut models, &det_p, count, &mut *clock.on_event, None)?;
        results::compare_deterministic(&mut results, det, p, &names, &frame, &prepared)
            .map_err(|e| output::spill_error(&staging, e))?;
        clock.record("deterministic_comparison", t);
    }
    if p.outputs.figures || p.ensemble.compare_deterministic {
        results::model_statistics(&mut results, &names, &prepared)
            .map_err(|e| output::spill_error(&staging, e))?;
    }
    let figures = if p.outputs.figures {
        clock.stage("write_figures", || {
            output::write_figures(&staging, &results, &prepared, p, &names)
        })?
    } else {
        Vec::new()
    };
    let mut maps = clock.stage("write_maps", || {
        output::write_maps(&staging, &case, &prepared, &results, p)
    })?;
    if p.outputs.pass_maps {
        maps.push(format!("{}/", crate::pipeline::PASS_MAPS_DIR));
    }
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
        plan: ProviderPlan::from_config(&p.execution),
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
        writer: Option<PassWriter>,
    ) -> Result<(RegionAggregates, EnsembleCost), Error> {
        let opts = EnsembleOptions {
            passes: p.passes_per_model(),
            sigma: p.effective_sigma(),
            streams: self.streams,
            noise_region: p.ensemble.noise_region,
            noise_on: p.ensemble.noise_on,
            overlap_noise: models.iter().any(|m| !m.device().on_host()),
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
            aggregate::pass_stores(self.plan, opts.passes, shape, |name| {
                self.staging.file(&format!("{}{name}.f16", self.spill_name))
            })
            .map_err(|e| output::spill_error(self.staging, e))?,
            writer,
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
}
