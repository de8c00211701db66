//! The ensemble: every model runs `passes` times on the normalized input plus fresh Gaussian
//! noise N(0, sigma^2) (sigma in z-score units), and each pass's stitched logits go straight into
//! the aggregator. Deterministic mode is one noise-free pass per model.
//!
//! Noise is reproducible by construction: the noise for (model m, pass p, channel c, slice z) is
//! drawn from its own ChaCha8 stream seeded from `(seed, m, p, c, z)`, so it does not depend on
//! thread count, batch size or the order in which slices are filled. It is defined on the
//! canonical, cropped grid the models see.

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::aggregate::PassSink;
use crate::infer::{Model, ModelError};
use crate::pipeline::{NoiseOn, NoiseRegion};
use crate::streams::NoiseStreams;
use crate::window::{Tiling, WindowOptions};

/// How to run the ensemble.
#[derive(Debug, Clone, Copy)]
pub struct EnsembleOptions {
    pub passes: usize,
    pub sigma: f32,
    pub streams: NoiseStreams,
    pub noise_region: NoiseRegion,
    /// Where the noise is drawn: here (the reference) or by the model on its device.
    pub noise_on: NoiseOn,
    /// Draw the next pass's host noise while the current pass runs, into a second noisy copy of
    /// the input: worth it on a GPU, where host work is the bottleneck; on the CPU, where ONNX
    /// Runtime keeps every core busy, it saves little and the copy is memory.
    pub overlap_noise: bool,
    pub window: WindowOptions,
}

/// Reported after each pass.
#[derive(Debug, Clone, Copy)]
pub struct PassDone {
    pub model: usize,
    pub pass: usize,
    pub done: usize,
    pub total: usize,
    /// Drawing this pass's noise (done while the previous pass ran).
    pub noise_seconds: f64,
    /// Sliding window, model calls and stitching of this pass.
    pub inference_seconds: f64,
    /// Of which inside the model's calls (ONNX Runtime).
    pub model_seconds: f64,
    /// Adding the previous pass to the aggregator (done while this pass ran).
    pub aggregate_seconds: f64,
    pub patches: usize,
    /// Windows whose output was reused from the model's first pass (see `Tiling`).
    pub reused: usize,
}

/// Runs every pass of every model and feeds the aggregator.
///
/// While a pass runs through the model, a helper thread adds the previous pass to the
/// aggregator and (with `overlap_noise`) draws the noise of the next one into a second buffer.
/// With noise inside the brain only, windows without a brain voxel see the same input in every
/// pass: their outputs are computed in the first pass and reused.
pub fn run(
    models: &mut [Box<dyn Model + '_>],
    input: ArrayView4<f32>,
    brain: ArrayView3<bool>,
    opts: &EnsembleOptions,
    aggregator: &mut dyn PassSink,
    on_pass: &mut dyn FnMut(PassDone),
) -> Result<(), ModelError> {
    let shape = [input.shape()[1], input.shape()[2], input.shape()[3]];
    let noisy = opts.sigma > 0.0 && opts.noise_on == NoiseOn::Host;
    let everywhere;
    let device_noise = match (opts.sigma > 0.0, opts.noise_on, opts.noise_region) {
        (true, NoiseOn::Device, NoiseRegion::Brain) => Some(brain),
        (true, NoiseOn::Device, NoiseRegion::Volume) => {
            everywhere = Array3::from_elem(shape, true);
            Some(everywhere.view())
        }
        _ => None,
    };
    let mut steps: Vec<(usize, usize)> = Vec::with_capacity(models.len() * opts.passes);
    for m in 0..models.len() {
        steps.extend((0..opts.passes).map(|p| (m, p)));
    }
    // the noisy copy of the input, and (overlapping) the next pass's, drawn ahead
    let buffer = |wanted: bool| {
        Array4::<f32>::zeros(if wanted {
            input.raw_dim()
        } else {
            Default::default()
        })
    };
    let (mut current, mut next) = (buffer(noisy), buffer(noisy && opts.overlap_noise));
    let mut noise_seconds = 0.0;
    let mut previous: Option<(usize, Array4<f32>)> = None;
    let mut tiling: Option<Tiling> = None;
    for (done, &(m, p)) in steps.iter().enumerate() {
        let model = models[m].as_mut();
        if p == 0 {
            tiling = Some(new_tiling(model, shape, brain, opts));
        }
        let Some(tiling) = tiling.as_mut() else {
            continue;
        };
        // drawn here for the first pass, and for every pass unless drawn ahead
        if noisy && (done == 0 || !opts.overlap_noise) {
            noise_seconds = timed(|| add_noise(input, brain, opts, m, p, &mut current));
        }
        let source = if noisy { current.view() } else { input };
        let upcoming = steps.get(done + 1).filter(|_| noisy && opts.overlap_noise);
        let (prediction, inference_seconds, (aggregate_seconds, next_noise_seconds)) =
            std::thread::scope(|scope| {
                let helper = scope.spawn(|| {
                    let aggregate = previous
                        .take()
                        .map_or(0.0, |(pm, logits)| timed(|| aggregator.add(pm, logits)));
                    let noise = upcoming.map_or(0.0, |&(nm, np)| {
                        timed(|| add_noise(input, brain, opts, nm, np, &mut next))
                    });
                    (aggregate, noise)
                });
                let t = std::time::Instant::now();
                let prediction = tiling.predict(model, source, device_noise);
                let seconds = t.elapsed().as_secs_f64();
                let helped = helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (prediction, seconds, helped)
            });
        let prediction = prediction?;
        on_pass(PassDone {
            model: m,
            pass: p,
            done: done + 1,
            total: steps.len(),
            noise_seconds,
            inference_seconds,
            model_seconds: prediction.model_seconds,
            aggregate_seconds,
            patches: prediction.patches,
            reused: prediction.reused,
        });
        previous = Some((m, prediction.logits));
        if opts.overlap_noise {
            noise_seconds = next_noise_seconds;
            std::mem::swap(&mut current, &mut next);
        }
    }
    if let Some((m, logits)) = previous {
        aggregator.add(m, logits);
    }
    Ok(())
}

/// The windows of one model; with noise inside the brain only, those without a brain voxel
/// are computed once.
fn new_tiling(
    model: &dyn Model,
    shape: [usize; 3],
    brain: ArrayView3<bool>,
    opts: &EnsembleOptions,
) -> Tiling {
    let mut tiling = Tiling::new(model, shape, &opts.window);
    if opts.passes > 1 && opts.sigma > 0.0 && opts.noise_region == NoiseRegion::Brain {
        tiling.reuse_where_constant(brain);
    }
    tiling
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = std::time::Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Writes `input + noise` into `out` for pass `p` of model `m`.
pub fn add_noise(
    input: ArrayView4<f32>,
    brain: ArrayView3<bool>,
    opts: &EnsembleOptions,
    m: usize,
    p: usize,
    out: &mut Array4<f32>,
) {
    if out.shape() != input.shape() || !out.is_standard_layout() {
        *out = Array4::zeros(input.raw_dim());
    }
    let depth = input.shape()[1];
    let plane = input.shape()[2] * input.shape()[3];
    let Some(data) = out.as_slice_mut() else {
        return;
    };
    // chunk `c * depth + z` is channel c, slice z
    data.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(index, chunk)| {
            let (c, z) = (index / depth, index % depth);
            let mut rng = ChaCha8Rng::seed_from_u64(opts.streams.host(m, p, c, z));
            let source = input.slice(ndarray::s![c, z, .., ..]);
            let mask = brain.index_axis(Axis(0), z);
            for ((o, &x), &inside) in chunk.iter_mut().zip(source.iter()).zip(mask.iter()) {
                let eps: f32 = StandardNormal.sample(&mut rng);
                let apply = inside || opts.noise_region == NoiseRegion::Volume;
                *o = if apply { x + opts.sigma * eps } else { x };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, PassStore};
    use crate::pipeline::{Aggregation, Weighting};
    use ndarray::Array3;

    fn opts(sigma: f32, seed: u64) -> EnsembleOptions {
        EnsembleOptions {
            passes: 2,
            sigma,
            streams: NoiseStreams::new(seed),
            noise_region: NoiseRegion::Volume,
            noise_on: NoiseOn::Host,
            overlap_noise: false,
            window: WindowOptions {
                max_batch_voxels: 1 << 20,
                overlap: 0.5,
                weighting: Weighting::Gaussian,
                batch_size: 2,
            },
        }
    }

    #[test]
    fn noise_is_reproducible_and_has_the_right_spread() {
        let input = Array4::<f32>::zeros((2, 8, 40, 40));
        let brain = Array3::from_elem((8, 40, 40), true);
        let (mut a, mut b, mut c) = (input.clone(), input.clone(), input.clone());
        add_noise(input.view(), brain.view(), &opts(0.5, 7), 1, 3, &mut a);
        add_noise(input.view(), brain.view(), &opts(0.5, 7), 1, 3, &mut b);
        add_noise(input.view(), brain.view(), &opts(0.5, 8), 1, 3, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let sd = (a
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(
            mean.abs() < 0.02 && (sd - 0.5).abs() < 0.01,
            "mean {mean} sd {sd}"
        );
    }

    #[test]
    fn brain_region_noise_leaves_background_alone() {
        let input = Array4::<f32>::zeros((1, 2, 4, 4));
        let mut brain = Array3::from_elem((2, 4, 4), false);
        brain[[1, 2, 2]] = true;
        let mut o = opts(1.0, 1);
        o.noise_region = NoiseRegion::Brain;
        let mut out = input.clone();
        add_noise(input.view(), brain.view(), &o, 0, 0, &mut out);
        assert_eq!(out.iter().filter(|&&v| v != 0.0).count(), 1);
    }

    /// The noise of the next pass drawn ahead (as on GPUs) is the noise drawn pass by pass.
    #[test]
    fn noise_drawn_ahead_is_the_same_noise() {
        let input = Array4::from_elem((1, 6, 10, 10), 1.0f32);
        let brain = Array3::from_elem((6, 10, 10), true);
        let aggregate = |overlap_noise: bool| {
            let mut models: Vec<Box<dyn Model>> = (0..2)
                .map(|_| {
                    Box::new(crate::infer::testing::Pointwise::new([4, 8, 8], None))
                        as Box<dyn Model>
                })
                .collect();
            let mut agg = Aggregator::new(
                [6, 10, 10],
                Aggregation::MeanLogit,
                PassStore::in_memory([6, 10, 10]),
            );
            let o = EnsembleOptions {
                passes: 3,
                overlap_noise,
                ..opts(0.5, 11)
            };
            run(
                &mut models,
                input.view(),
                brain.view(),
                &o,
                &mut agg,
                &mut |_| {},
            )
            .unwrap();
            agg.finish().unwrap()
        };
        let (ahead, in_turn) = (aggregate(true), aggregate(false));
        assert_eq!(ahead.mean_logit, in_turn.mean_logit);
        assert_eq!(ahead.std_logit, in_turn.std_logit);
        assert!(in_turn.std_logit.iter().all(|&v| v > 0.0));
    }

    #[test]
    fn passes_reach_the_aggregator() {
        let input = Array4::from_elem((1, 6, 10, 10), 1.0f32);
        let brain = Array3::from_elem((6, 10, 10), true);
        let mut models: Vec<Box<dyn Model>> = vec![Box::new(
            crate::infer::testing::Pointwise::new([4, 8, 8], None),
        )];
        let mut agg = Aggregator::new(
            [6, 10, 10],
            Aggregation::MeanLogit,
            PassStore::in_memory([6, 10, 10]),
        );
        let mut seen = 0;
        run(
            &mut models,
            input.view(),
            brain.view(),
            &opts(0.0, 0),
            &mut agg,
            &mut |_| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 2);
        let a = agg.finish().unwrap();
        assert!(a.mean_logit.iter().all(|&v| (v - 2.0).abs() < 1e-6));
        assert!(a.std_logit.iter().all(|&v| v == 0.0));
    }
}
