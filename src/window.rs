//! Sliding-window inference: where the windows go, how they are weighted, and how patch outputs
//! are stitched back into one map.
//!
//! Rules (shared with the golden reference `tests/fixtures/golden/make_golden.py`):
//! - an axis shorter than the patch is padded with zeros to the patch size, `floor(diff / 2)`
//!   before and the rest after, and the output is cropped back (done by clipping windows to the
//!   input, without a padded copy);
//! - window starts follow nnU-Net: `n = ceil((S - P) / (P * (1 - overlap))) + 1` windows spread
//!   evenly from 0 to `S - P`, start `i` at `floor(i * (S - P) / (n - 1) + 0.5)`;
//! - windows are visited z outer, then y, then x;
//! - Gaussian importance: per axis `exp(-0.5 ((t - (P - 1) / 2) / (P / 8))^2)` (nnU-Net's sigma
//!   scale 1/8), outer product, scaled to a maximum of 1; constant weighting is all ones;
//! - the stitched value is `sum(w * out) / sum(w)` over the windows covering a voxel.
//!
//! Arrays are `[c, z, y, x]` in and `[k, z, y, x]` out (the model's output channels, each
//! stitched alone); a patch is `(D, H, W) = (z, y, x)`.

use std::sync::mpsc;

use ndarray::{s, Array3, Array4, Array5, ArrayView3, ArrayView4, Axis, Zip};

use crate::infer::{capped_batch, Model, ModelError};
use crate::pipeline::Weighting;

/// How to tile.
#[derive(Debug, Clone, Copy)]
pub struct WindowOptions {
    pub overlap: f64,
    pub weighting: Weighting,
    /// Patches per model call (a model with a fixed batch dimension overrides it).
    pub batch_size: usize,
    /// At most this many voxels per batch (see `batch_for`).
    pub max_batch_voxels: usize,
}

/// Window start positions along one axis of (padded) length `size >= patch`.
pub fn window_starts(size: usize, patch: usize, overlap: f64) -> Vec<usize> {
    if size <= patch {
        return vec![0];
    }
    let target_step = patch as f64 * (1.0 - overlap);
    let n = ((size - patch) as f64 / target_step).ceil() as usize + 1;
    let actual = (size - patch) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| (actual * i as f64 + 0.5).floor() as usize)
        .collect()
}

/// Importance map for a patch `(D, H, W)`.
pub fn importance_map(patch: [usize; 3], weighting: Weighting) -> Array3<f32> {
    match weighting {
        Weighting::Constant => Array3::ones(patch),
        Weighting::Gaussian => {
            let axis = |p: usize| -> Vec<f64> {
                let (c, sigma) = ((p as f64 - 1.0) / 2.0, p as f64 / 8.0);
                (0..p)
                    .map(|t| (-0.5 * ((t as f64 - c) / sigma).powi(2)).exp())
                    .collect()
            };
            let (gz, gy, gx) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
            let map = Array3::from_shape_fn(patch, |(z, y, x)| gz[z] * gy[y] * gx[x]);
            let max = map.iter().cloned().fold(f64::MIN_POSITIVE, f64::max);
            map.mapv(|v| ((v / max) as f32).max(f32::MIN_POSITIVE))
        }
    }
}

/// Where each window lies on one axis of the input: windows are placed on the axis padded to at
/// least the patch size (`floor(diff / 2)` before), so a start may be negative.
fn axis_starts(size: usize, patch: usize, overlap: f64) -> Vec<isize> {
    let before = (patch.saturating_sub(size) / 2) as isize;
    window_starts(size.max(patch), patch, overlap)
        .into_iter()
        .map(|s| s as isize - before)
        .collect()
}

/// The part of a window that lies inside the input, per axis: `(input range, patch offset)`.
fn overlap_ranges(
    start: [isize; 3],
    patch: [usize; 3],
    shape: [usize; 3],
) -> ([std::ops::Range<usize>; 3], [usize; 3]) {
    let axis = |a: usize| {
        let lo = start[a].max(0) as usize;
        let hi = ((start[a] + patch[a] as isize).max(0) as usize).min(shape[a]);
        (lo..hi.max(lo), (lo as isize - start[a]) as usize)
    };
    let (z, y, x) = (axis(0), axis(1), axis(2));
    ([z.0, y.0, x.0], [z.1, y.1, x.1])
}

/// Patches per model call: the model's fixed batch, else `batch_size` capped so a batch holds at
/// most `max_batch_voxels` voxels (large patches run one at a time: on the CPU a batch costs
/// the same per patch, and the activations of a big batch cost memory).
pub fn batch_for(model: &dyn Model, opts: &WindowOptions) -> usize {
    model
        .fixed_batch()
        .unwrap_or_else(|| capped_batch(model.patch_size(), opts.batch_size, opts.max_batch_voxels))
}

/// The stitched output channels and what they cost.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// `[k, z, y, x]`: each of the model's output channels.
    pub logits: Array4<f32>,
    /// Patches run through the model (padding slots of the last batch not counted).
    pub patches: usize,
    /// Patches whose output was kept from an earlier pass instead of run again.
    pub reused: usize,
    /// Seconds spent inside the model's `predict` calls.
    pub model_seconds: f64,
}

/// The windows of one model over one input shape, and the outputs kept for reuse.
///
/// `predict` is pipelined: a helper thread copies the windows of the next batch into a second
/// buffer and another stitches the previous batch's outputs while the model computes, so the
/// model (ONNX Runtime) is never kept waiting for the copies. Outputs are stitched in window
/// order whatever the batching, so the result does not depend on the batch size or on reuse.
pub struct Tiling {
    shape: [usize; 3],
    patch: [usize; 3],
    /// Output channels of each patch.
    channels: usize,
    windows: Vec<[isize; 3]>,
    importance: Array3<f32>,
    batch: usize,
    /// Pad the last batch to `batch` patches (fixed shapes on GPUs) instead of sending fewer.
    full_batches: bool,
    /// `constant[i]`: window i sees the same input in every pass.
    constant: Vec<bool>,
    /// Outputs of constant windows (`[k, D, H, W]`), once computed.
    kept: Vec<Option<Array4<f32>>>,
}

impl Tiling {
    pub fn new(model: &dyn Model, shape: [usize; 3], opts: &WindowOptions) -> Tiling {
        let patch = model.patch_size();
        let starts: Vec<Vec<isize>> = (0..3)
            .map(|a| axis_starts(shape[a], patch[a], opts.overlap))
            .collect();
        let mut windows = Vec::with_capacity(starts.iter().map(Vec::len).product());
        for &z in &starts[0] {
            for &y in &starts[1] {
                windows.extend(starts[2].iter().map(|&x| [z, y, x]));
            }
        }
        let n = windows.len();
        Tiling {
            shape,
            patch,
            channels: model.output_channels(),
            windows,
            importance: importance_map(patch, opts.weighting),
            batch: batch_for(model, opts),
            full_batches: model.fixed_batch().is_some() || model.prefers_full_batches(),
            constant: vec![false; n],
            kept: vec![None; n],
        }
    }

    /// Marks the windows that hold no voxel where `varies` is true: their input is the same in
    /// every pass, so their output is computed once and reused. Returns how many there are.
    pub fn reuse_where_constant(&mut self, varies: ArrayView3<bool>) -> usize {
        for (w, constant) in self.windows.iter().zip(&mut self.constant) {
            let ([rz, ry, rx], _) = overlap_ranges(*w, self.patch, self.shape);
            *constant = !varies.slice(s![rz, ry, rx]).iter().any(|&v| v);
        }
        self.constant.iter().filter(|&&c| c).count()
    }

    /// Windows per pass.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }

    /// Runs `model` over `input` (`[c, z, y, x]`) window by window and stitches the outputs.
    /// With `device_noise` (the region where noise applies, `[z, y, x]`), each batch goes with
    /// its noise mask to `Model::predict_noisy`, which adds the noise on the model's device.
    pub fn predict(
        &mut self,
        model: &mut dyn Model,
        input: ArrayView4<f32>,
        device_noise: Option<ArrayView3<bool>>,
    ) -> Result<Prediction, ModelError> {
        let todo: Vec<usize> = (0..self.windows.len())
            .filter(|&i| self.kept[i].is_none())
            .collect();
        let reused = self.windows.len() - todo.len();
        let (stitched, model_seconds, new_kept) = std::thread::scope(|scope| {
            self.pipeline(
                scope,
                model,
                Source {
                    input,
                    device_noise,
                },
                &todo,
            )
        })?;
        for (i, out) in new_kept {
            self.kept[i] = Some(out);
        }
        Ok(Prediction {
            logits: stitched,
            patches: todo.len(),
            reused,
            model_seconds,
        })
    }

    /// The model calls on this thread; filling batches and stitching on two scoped threads.
    fn pipeline<'s, 'e>(
        &'s self,
        scope: &'s std::thread::Scope<'s, 'e>,
        model: &mut dyn Model,
        source: Source<'s>,
        todo: &'s [usize],
    ) -> Result<Stitched, ModelError> {
        let groups: Vec<&[usize]> = todo.chunks(self.batch.max(1)).collect();
        let (free_tx, free_rx) = mpsc::channel::<Batch>();
        let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(1);
        let (out_tx, out_rx) = mpsc::channel::<Array5<f32>>();
        let [d, h, w] = self.patch;
        for _ in 0..2 {
            let _ = free_tx.send(Batch {
                x: Array5::zeros((self.batch, source.input.shape()[0], d, h, w)),
                mask: source
                    .device_noise
                    .map(|_| Array5::zeros((self.batch, 1, d, h, w))),
            });
        }
        let filler_groups = groups.clone();
        scope.spawn(move || self.fill(source, &filler_groups, free_rx, full_tx));
        let stitcher = scope.spawn(move || self.stitch(out_rx));
        let mut model_seconds = 0.0;
        for group in &groups {
            if crate::cancel::requested() {
                return Err(ModelError::Interrupted);
            }
            let Ok(batch) = full_rx.recv() else {
                break;
            };
            let n = if self.full_batches {
                self.batch
            } else {
                group.len()
            };
            let t = std::time::Instant::now();
            let x = batch.x.slice(s![..n, .., .., .., ..]);
            let out = match &batch.mask {
                Some(mask) => model.predict_noisy(x, mask.slice(s![..n, .., .., .., ..]))?,
                None => model.predict(x)?,
            };
            model_seconds += t.elapsed().as_secs_f64();
            let _ = free_tx.send(batch);
            if out_tx
                .send(out.slice_move(s![..group.len(), .., .., .., ..]))
                .is_err()
            {
                break;
            }
        }
        drop(out_tx);
        match stitcher.join() {
            Ok(Some((stitched, kept))) => Ok((stitched, model_seconds, kept)),
            Ok(None) => Err(ModelError::Interrupted),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Copies each group's windows (and noise masks) into a free batch and hands it on.
    fn fill(
        &self,
        source: Source,
        groups: &[&[usize]],
        free: mpsc::Receiver<Batch>,
        full: mpsc::SyncSender<Batch>,
    ) {
        for group in groups {
            let Ok(mut batch) = free.recv() else {
                return;
            };
            for (slot, &i) in group.iter().enumerate() {
                let start = self.windows[i];
                fill_patch(batch.x.index_axis_mut(Axis(0), slot), source.input, start);
                if let (Some(mask), Some(region)) = (&mut batch.mask, source.device_noise) {
                    fill_mask(mask.index_axis_mut(Axis(0), slot), region, start);
                }
            }
            if self.full_batches {
                for slot in group.len()..self.batch {
                    batch.x.index_axis_mut(Axis(0), slot).fill(0.0);
                    if let Some(mask) = &mut batch.mask {
                        mask.index_axis_mut(Axis(0), slot).fill(0.0);
                    }
                }
            }
            if full.send(batch).is_err() {
                return;
            }
        }
    }

    /// Stitches every window in order: kept outputs, and model outputs as they arrive (batches
    /// in window order). Returns the map and the new outputs to keep; `None` when the model
    /// side stopped early.
    fn stitch(&self, outputs: mpsc::Receiver<Array5<f32>>) -> Option<(Array4<f32>, Kept)> {
        let mut stitcher = Stitcher::new(self.shape, self.channels, self.importance.clone());
        let mut new_kept = Vec::new();
        let mut batch: Option<Array5<f32>> = None;
        let mut slot = 0;
        for (i, &start) in self.windows.iter().enumerate() {
            if let Some(out) = &self.kept[i] {
                stitcher.add(start, out.view());
                continue;
            }
            if batch.as_ref().is_none_or(|b| slot >= b.shape()[0]) {
                batch = Some(outputs.recv().ok()?);
                slot = 0;
            }
            let patch = batch.as_ref()?.index_axis(Axis(0), slot);
            stitcher.add(start, patch);
            if self.constant[i] {
                new_kept.push((i, patch.to_owned()));
            }
            slot += 1;
        }
        Some((stitcher.finish(), new_kept))
    }
}

/// What the windows are cut from.
#[derive(Clone, Copy)]
struct Source<'a> {
    input: ArrayView4<'a, f32>,
    /// Where noise applies when the model adds it on its device.
    device_noise: Option<ArrayView3<'a, bool>>,
}

/// One batch of patches, and their noise masks when the model adds noise on its device.
struct Batch {
    x: Array5<f32>,
    mask: Option<Array5<f32>>,
}

/// New outputs of constant windows, by window index.
type Kept = Vec<(usize, Array4<f32>)>;

/// The stitched channels, the seconds inside the model, and outputs to keep.
type Stitched = (Array4<f32>, f64, Kept);

/// Copies the window at `start` into `patch` (`[c, D, H, W]`), zeros where it leaves the input.
fn fill_patch(mut patch: ndarray::ArrayViewMut4<f32>, input: ArrayView4<f32>, start: [isize; 3]) {
    let p = [patch.shape()[1], patch.shape()[2], patch.shape()[3]];
    let shape = [input.shape()[1], input.shape()[2], input.shape()[3]];
    let ([rz, ry, rx], [oz, oy, ox]) = overlap_ranges(start, p, shape);
    let inside = [rz.len(), ry.len(), rx.len()];
    if inside != p {
        patch.fill(0.0);
    }
    patch
        .slice_mut(s![
            ..,
            oz..oz + inside[0],
            oy..oy + inside[1],
            ox..ox + inside[2]
        ])
        .assign(&input.slice(s![.., rz, ry, rx]));
}

/// Writes the noise mask of the window at `start` into `mask` (`[1, D, H, W]`): 1 where the
/// window lies inside the input and `region` is true, 0 elsewhere (zero padding gets no noise,
/// as with host noise).
fn fill_mask(mut mask: ndarray::ArrayViewMut4<f32>, region: ArrayView3<bool>, start: [isize; 3]) {
    let p = [mask.shape()[1], mask.shape()[2], mask.shape()[3]];
    let shape = [region.shape()[0], region.shape()[1], region.shape()[2]];
    let ([rz, ry, rx], [oz, oy, ox]) = overlap_ranges(start, p, shape);
    mask.fill(0.0);
    let inside = s![0, oz..oz + rz.len(), oy..oy + ry.len(), ox..ox + rx.len()];
    Zip::from(mask.slice_mut(inside))
        .and(region.slice(s![rz, ry, rx]))
        .for_each(|m, &r| *m = f32::from(u8::from(r)));
}

/// Weighted accumulation of patch outputs (`[k, D, H, W]`, every channel with the same
/// weights); `finish` consumes it.
pub struct Stitcher {
    sum: Array4<f32>,
    weight: Array3<f32>,
    importance: Array3<f32>,
}

impl Stitcher {
    pub fn new(shape: [usize; 3], channels: usize, importance: Array3<f32>) -> Stitcher {
        Stitcher {
            sum: Array4::zeros((channels, shape[0], shape[1], shape[2])),
            weight: Array3::zeros(shape),
            importance,
        }
    }

    /// Adds one patch output whose corner is at `start` (`[z, y, x]`, may lie outside the map:
    /// only the part inside is kept).
    pub fn add(&mut self, start: [isize; 3], patch: ArrayView4<f32>) {
        let p = [patch.shape()[1], patch.shape()[2], patch.shape()[3]];
        let ([rz, ry, rx], [oz, oy, ox]) = overlap_ranges(start, p, self.weight.dim().into());
        let inside = s![oz..oz + rz.len(), oy..oy + ry.len(), ox..ox + rx.len()];
        let region = s![rz, ry, rx];
        let importance = self.importance.slice(inside);
        for (mut sum, channel) in self.sum.outer_iter_mut().zip(patch.outer_iter()) {
            Zip::from(sum.slice_mut(region))
                .and(channel.slice(inside))
                .and(importance)
                .for_each(|s, &v, &imp| *s += imp * v);
        }
        Zip::from(self.weight.slice_mut(region))
            .and(importance)
            .for_each(|w, &imp| *w += imp);
    }

    /// The stitched channels: weighted mean where any window contributed, 0 elsewhere.
    pub fn finish(self) -> Array4<f32> {
        let mut sum = self.sum;
        for mut channel in sum.outer_iter_mut() {
            Zip::from(&mut channel)
                .and(&self.weight)
                .for_each(|s, &w| *s = if w > 0.0 { *s / w } else { 0.0 });
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::testing::Pointwise;
    use ndarray::Array4;

    fn predict(
        model: &mut Pointwise,
        input: ArrayView4<f32>,
        opts: &WindowOptions,
    ) -> Result<Prediction, ModelError> {
        let shape = [input.shape()[1], input.shape()[2], input.shape()[3]];
        Tiling::new(model, shape, opts).predict(model, input, None)
    }

    fn opts(batch_size: usize) -> WindowOptions {
        WindowOptions {
            overlap: 0.5,
            weighting: Weighting::Gaussian,
            batch_size,
            max_batch_voxels: 1 << 20,
        }
    }

    #[test]
    fn starts_cover_the_axis_evenly() {
        assert_eq!(window_starts(32, 32, 0.5), vec![0]);
        assert_eq!(window_starts(100, 32, 0.5), vec![0, 14, 27, 41, 54, 68]);
        assert_eq!(window_starts(10, 32, 0.5), vec![0]);
        for (size, patch, overlap) in [
            (97, 16, 0.5),
            (240, 64, 0.25),
            (155, 16, 0.0),
            (33, 32, 0.9),
        ] {
            let s = window_starts(size, patch, overlap);
            assert_eq!(*s.last().unwrap(), size - patch);
            assert!(s.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= patch));
        }
    }

    #[test]
    fn gaussian_peaks_at_one_in_the_centre() {
        let g = importance_map([16, 32, 32], Weighting::Gaussian);
        let max = g.iter().cloned().fold(0.0f32, f32::max);
        assert!((max - 1.0).abs() < 1e-3);
        assert!(g[[0, 0, 0]] > 0.0 && g[[0, 0, 0]] < 1e-3);
        assert_eq!(g[[7, 15, 15]], g[[8, 16, 16]]);
    }

    /// Stitching is exact: a pointwise model's stitched output equals the function of the input,
    /// for many patch sizes, overlaps, weightings, batch sizes and shapes (including smaller
    /// than the patch and not a multiple of the stride).
    #[test]
    fn stitching_a_pointwise_model_is_exact() {
        let shapes = [[7, 9, 11], [16, 32, 32], [23, 50, 41], [40, 17, 70]];
        let patches = [[16, 32, 32], [4, 8, 8], [5, 7, 9], [16, 64, 64]];
        for shape in shapes {
            let input = Array4::from_shape_fn((2, shape[0], shape[1], shape[2]), |(c, z, y, x)| {
                (c as f32) * 0.5 + ((z * 31 + y * 7 + x * 3) % 17) as f32 * 0.25 - 2.0
            });
            for patch in patches {
                for overlap in [0.0, 0.25, 0.5, 0.8] {
                    for weighting in [Weighting::Gaussian, Weighting::Constant] {
                        for batch_size in [1, 3] {
                            let mut model = Pointwise::new(patch, None);
                            let opts = WindowOptions {
                                overlap,
                                weighting,
                                batch_size,
                                max_batch_voxels: 1 << 20,
                            };
                            let out = predict(&mut model, input.view(), &opts).unwrap().logits;
                            let out = out.index_axis(Axis(0), 0);
                            let want = input.index_axis(Axis(0), 0).mapv(|v| v + 1.0);
                            let worst = Zip::from(&out)
                                .and(&want)
                                .fold(0.0f32, |m, &a, &b| m.max((a - b).abs()));
                            // f32 sums over up to 5^3 overlapping windows: a few ulps of |v| <= 4
                            assert!(
                                worst <= 1e-5,
                                "shape {shape:?} patch {patch:?} overlap {overlap}: {worst}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_patches_are_batched_by_voxels() {
        assert_eq!(capped_batch([16, 32, 32], 4, 1 << 18), 4);
        assert_eq!(capped_batch([16, 64, 64], 8, 1 << 18), 4);
        assert_eq!(capped_batch([16, 256, 256], 4, 1 << 18), 1);
        let mut model = Pointwise::new([16, 256, 256], None);
        let opts = WindowOptions {
            max_batch_voxels: 1 << 18,
            ..opts(4)
        };
        predict(
            &mut model,
            Array4::<f32>::zeros((1, 40, 20, 20)).view(),
            &opts,
        )
        .unwrap();
        assert!(model.batch_sizes_seen.iter().all(|&b| b == 1));
    }

    #[test]
    fn fixed_batch_models_get_full_batches() {
        let input = Array4::<f32>::zeros((1, 20, 20, 20));
        let mut model = Pointwise::new([8, 8, 8], Some(1));
        predict(&mut model, input.view(), &opts(8)).unwrap();
        assert!(model.batch_sizes_seen.iter().all(|&b| b == 1));
    }

    #[test]
    fn the_last_batch_is_short_unless_full_batches_are_wanted() {
        // 20 / (8 * 0.5) -> 4 starts per axis: 64 windows, batches of 6: 10 full, one of 4
        let input = Array4::<f32>::zeros((1, 20, 20, 20));
        let mut dynamic = Pointwise::new([8, 8, 8], None);
        predict(&mut dynamic, input.view(), &opts(6)).unwrap();
        assert_eq!(dynamic.batch_sizes_seen.len(), 11);
        assert_eq!(dynamic.batch_sizes_seen.last(), Some(&4));
        let mut gpu = Pointwise::new([8, 8, 8], None);
        gpu.full_batches = true;
        let p = predict(&mut gpu, input.view(), &opts(6)).unwrap();
        assert!(gpu.batch_sizes_seen.iter().all(|&b| b == 6));
        assert_eq!(p.patches, 64);
    }

    /// Windows without a varying voxel are run once; the stitched map is the same bytes as
    /// running every window again.
    #[test]
    fn constant_windows_are_reused_without_changing_the_result() {
        let shape = [12, 40, 40];
        let base = Array4::from_shape_fn((2, 12, 40, 40), |(c, z, y, x)| {
            (c + z * 3 + y * 5 + x * 7) as f32 * 0.01
        });
        let varies = Array3::from_shape_fn(shape, |(_, y, x)| y < 10 && x < 10);
        let noisy = |k: f32| {
            let mut a = base.clone();
            Zip::indexed(a.index_axis_mut(Axis(0), 0)).for_each(|(z, y, x), v| {
                if varies[[z, y, x]] {
                    *v += k * ((z + y + x) % 5) as f32;
                }
            });
            a
        };
        let mut model = Pointwise::new([4, 8, 8], None);
        let mut tiling = Tiling::new(&model, shape, &opts(3));
        let constant = tiling.reuse_where_constant(varies.view());
        assert!(constant > 0 && constant < tiling.windows());
        let first = tiling.predict(&mut model, noisy(1.0).view(), None).unwrap();
        assert_eq!((first.patches, first.reused), (tiling.windows(), 0));
        let second = tiling.predict(&mut model, noisy(2.0).view(), None).unwrap();
        assert_eq!(second.reused, constant);
        assert_eq!(second.patches, tiling.windows() - constant);
        let fresh = predict(
            &mut Pointwise::new([4, 8, 8], None),
            noisy(2.0).view(),
            &opts(3),
        );
        assert_eq!(second.logits, fresh.unwrap().logits);
        assert_ne!(first.logits, second.logits);
    }

    /// With device noise, each patch goes with a mask that is 1 exactly where the region is
    /// true inside the input: the test model adds 10 there.
    #[test]
    fn device_noise_masks_follow_the_region_and_the_input() {
        let shape = [10, 30, 30];
        let input = Array4::<f32>::zeros((1, 10, 30, 30));
        let region = Array3::from_shape_fn(shape, |(z, y, _)| z > 4 && y < 12);
        let mut model = Pointwise::new([16, 8, 8], None);
        let mut tiling = Tiling::new(&model, shape, &opts(4));
        let out = tiling
            .predict(&mut model, input.view(), Some(region.view()))
            .unwrap();
        let want = region.mapv(|r| if r { 11.0f32 } else { 1.0 });
        let worst = Zip::from(&out.logits.index_axis(Axis(0), 0))
            .and(&want)
            .fold(0.0f32, |m, &a, &b| m.max((a - b).abs()));
        assert!(worst < 1e-5, "{worst}");
    }
}
