//! Streaming aggregation of the ensemble's logit maps.
//!
//! Passes arrive one at a time; per voxel the aggregator keeps the running mean and the sum of
//! squared deviations (Welford's update, f32, one pass over memory), the running mean of
//! probabilities when that aggregation is chosen, and a compact f16 copy of each pass's logits
//! (2 bytes per voxel per pass, for per-blob pass agreement and per-model means). It never holds
//! the passes as f32. The compact copies live in memory, or, when they would be large, in a spill
//! file (`PassStore::spilled`) that is read back one pass at a time. The spread is the sample
//! standard deviation across passes (0 with one pass). Maps are `[z, y, x]` on whatever grid the
//! passes come on (the canonical crop).
//!
//! A run with several regions keeps one aggregator per region (`RegionAggregator`): each pass's
//! stitched output channels go through the model's `regions::Head` to the regions it provides,
//! and, for the argmax label rule, the running mean of its softmax class probabilities.

use std::path::{Path, PathBuf};

use half::f16;
use ndarray::{Array3, Array4, ArrayView3, Axis, Zip};

use crate::pipeline::Aggregation;
use crate::regions::{self, Head, LabelRule, RegionPlan};
use crate::uncertainty::{UncertaintyAccumulator, UncertaintyMaps};

/// Where the ensemble hands each pass: the model's stitched output channels `[k, z, y, x]`.
pub trait PassSink: Send {
    fn add(&mut self, model: usize, channels: Array4<f32>);
}

/// Each pass's logits in f16, with the model that made it.
#[derive(Debug)]
pub struct PassStore {
    shape: [usize; 3],
    models: Vec<usize>,
    backing: Backing,
}

#[derive(Debug)]
enum Backing {
    Memory(Vec<Array3<f16>>),
    File { path: PathBuf, file: std::fs::File },
}

impl PassStore {
    pub fn in_memory(shape: [usize; 3]) -> PassStore {
        PassStore {
            shape,
            models: Vec::new(),
            backing: Backing::Memory(Vec::new()),
        }
    }

    /// Passes go to a new file at `path` (removed when the store is dropped).
    pub fn spilled(shape: [usize; 3], path: &Path) -> std::io::Result<PassStore> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(PassStore {
            shape,
            models: Vec::new(),
            backing: Backing::File {
                path: path.to_path_buf(),
                file,
            },
        })
    }

    /// Model index of each pass, in pass order.
    pub fn models(&self) -> &[usize] {
        &self.models
    }

    fn push(&mut self, model: usize, compact: Array3<f16>) -> std::io::Result<()> {
        match &mut self.backing {
            Backing::Memory(maps) => maps.push(compact),
            Backing::File { file, .. } => {
                use std::io::Write;
                let values = compact
                    .as_slice()
                    .map(<[f16]>::to_vec)
                    .unwrap_or_else(|| compact.iter().copied().collect());
                file.write_all(bytemuck::cast_slice(&values))?;
            }
        }
        self.models.push(model);
        Ok(())
    }

    /// Calls `f(pass, model, logits)` for every pass, in order.
    pub fn for_each(
        &self,
        mut f: impl FnMut(usize, usize, ArrayView3<f16>),
    ) -> std::io::Result<()> {
        match &self.backing {
            Backing::Memory(maps) => {
                for (i, (map, &m)) in maps.iter().zip(&self.models).enumerate() {
                    f(i, m, map.view());
                }
            }
            Backing::File { file, .. } => {
                use std::io::{Read, Seek};
                let mut reader = std::io::BufReader::new(file);
                reader.seek(std::io::SeekFrom::Start(0))?;
                let mut map = Array3::from_elem(self.shape, f16::ZERO);
                for (i, &m) in self.models.iter().enumerate() {
                    let values = map
                        .as_slice_mut()
                        .ok_or_else(|| std::io::Error::other("pass map not contiguous"))?;
                    reader.read_exact(bytemuck::cast_slice_mut(values))?;
                    f(i, m, map.view());
                }
            }
        }
        Ok(())
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        if let Backing::File { path, .. } = &self.backing {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Running statistics over passes; `finish` consumes it.
pub struct Aggregator {
    aggregation: Aggregation,
    count: usize,
    mean: Array3<f32>,
    m2: Array3<f32>,
    /// The mean of the pass probabilities and the decomposition of the spread.
    uncertainty: UncertaintyAccumulator,
    passes: PassStore,
    spill_error: Option<std::io::Error>,
}

/// The aggregated maps.
#[derive(Debug)]
pub struct Aggregate {
    /// The logit that is thresholded: the mean logit, or the logit of the mean probability.
    pub logit: Array3<f32>,
    pub mean_logit: Array3<f32>,
    pub std_logit: Array3<f32>,
    pub probability: Array3<f32>,
    /// Entropy, mutual information and the between/within-model variance (`uncertainty`).
    pub uncertainty: UncertaintyMaps,
    pub passes: PassStore,
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

impl Aggregator {
    /// An aggregator whose per-pass copies go to `passes` (see `PassStore`).
    pub fn new(shape: [usize; 3], aggregation: Aggregation, passes: PassStore) -> Aggregator {
        Aggregator {
            aggregation,
            count: 0,
            mean: Array3::zeros(shape),
            m2: Array3::zeros(shape),
            uncertainty: UncertaintyAccumulator::new(shape),
            passes,
            spill_error: None,
        }
    }

    /// Adds one pass of `model`.
    pub fn add(&mut self, model: usize, logits: ArrayView3<f32>) {
        self.count += 1;
        let inv_n = 1.0 / self.count as f32;
        Zip::from(&mut self.mean)
            .and(&mut self.m2)
            .and(&logits)
            .par_for_each(|mean, m2, &x| {
                let delta = x - *mean;
                *mean += delta * inv_n;
                *m2 += delta * (x - *mean);
            });
        self.uncertainty.add(model, logits);
        let mut compact = Array3::from_elem(logits.raw_dim(), f16::ZERO);
        Zip::from(&mut compact)
            .and(&logits)
            .par_for_each(|c, &x| *c = f16::from_f32(x));
        if self.spill_error.is_none() {
            self.spill_error = self.passes.push(model, compact).err();
        }
    }

    /// The aggregated maps; fails only when writing the spill file failed.
    pub fn finish(self) -> std::io::Result<Aggregate> {
        if let Some(e) = self.spill_error {
            return Err(e);
        }
        let n = self.count;
        let std_logit = self.m2.mapv(|m2| {
            if n > 1 {
                (m2.max(0.0) / (n - 1) as f32).sqrt()
            } else {
                0.0
            }
        });
        let uncertainty = self.uncertainty.finish(&self.m2);
        let (logit_map, probability) = match self.aggregation {
            Aggregation::MeanProbability => (
                uncertainty.probability.mapv(logit),
                uncertainty.probability.clone(),
            ),
            Aggregation::MeanLogit => (self.mean.clone(), self.mean.mapv(sigmoid)),
        };
        Ok(Aggregate {
            logit: logit_map,
            mean_logit: self.mean,
            std_logit,
            probability,
            uncertainty,
            passes: self.passes,
        })
    }
}

/// Per-pass maps larger than this (all regions together) go to spill files instead of memory.
const SPILL_ABOVE_BYTES: usize = 128 << 20;

/// One pass store per region of `plan` for `passes` passes per model on a grid of `shape`: in
/// memory, or in spill files when all of them together would hold more than 128 MiB; region
/// r's file is `spill(suffix)`, the suffix empty for the first region and `-<region>` for the
/// others.
pub fn pass_stores(
    plan: &RegionPlan,
    passes: usize,
    shape: [usize; 3],
    spill: impl Fn(&str) -> PathBuf,
) -> std::io::Result<Vec<PassStore>> {
    let voxels: usize = shape.iter().product();
    let regions = plan.regions.len();
    let bytes: usize = (0..regions)
        .map(|r| voxels * std::mem::size_of::<f16>() * passes * plan.feeders(r).len())
        .sum();
    (0..regions)
        .map(|r| {
            if bytes <= SPILL_ABOVE_BYTES {
                return Ok(PassStore::in_memory(shape));
            }
            let suffix = match r {
                0 => String::new(),
                _ => format!("-{}", plan.regions[r].name),
            };
            PassStore::spilled(shape, &spill(&suffix))
        })
        .collect()
}

/// A single map aggregates channel 0 of every pass (the one-region case, and tests).
impl PassSink for Aggregator {
    fn add(&mut self, model: usize, channels: Array4<f32>) {
        Aggregator::add(self, model, channels.index_axis(Axis(0), 0));
    }
}

/// One pass's logits of one region, as handed to a `PassWriter`.
pub struct PassMap<'v> {
    pub region: usize,
    pub model: usize,
    /// The pass's number among the model's passes, from 0.
    pub pass: usize,
    pub logits: ArrayView3<'v, f32>,
}

/// Writes each pass's region logits somewhere (`outputs.pass_maps`).
pub type PassWriter<'a> = Box<dyn FnMut(PassMap) -> std::io::Result<()> + Send + 'a>;

/// One aggregator per region, each fed by the models that provide the region.
pub struct RegionAggregator<'a> {
    heads: Vec<Head>,
    regions: Vec<Aggregator>,
    /// Sums of the softmax class probabilities and their count (argmax label rule only).
    classes: Option<(Array4<f32>, usize)>,
    /// Where the pass maps go, passes seen per model, and the first failure to write one.
    writer: Option<PassWriter<'a>>,
    passes_of_model: Vec<usize>,
    write_error: Option<std::io::Error>,
}

/// The aggregated maps of every region, and the averaged class probabilities `[k, z, y, x]`
/// for the argmax label rule.
#[derive(Debug)]
pub struct RegionAggregates {
    pub regions: Vec<Aggregate>,
    pub class_means: Option<Array4<f32>>,
}

impl<'a> RegionAggregator<'a> {
    /// Aggregators for the regions of `plan` on a grid of `shape`, with one pass store per
    /// region (see `PassStore`), and each pass's region logits handed to `writer` when given.
    pub fn new(
        plan: &RegionPlan,
        shape: [usize; 3],
        aggregation: Aggregation,
        stores: Vec<PassStore>,
        writer: Option<PassWriter<'a>>,
    ) -> RegionAggregator<'a> {
        let classes = match &plan.label_map {
            Some((LabelRule::Argmax { labels }, _)) => {
                let [z, y, x] = shape;
                Some((Array4::zeros((labels.len(), z, y, x)), 0))
            }
            _ => None,
        };
        RegionAggregator {
            heads: plan.heads.clone(),
            regions: stores
                .into_iter()
                .map(|store| Aggregator::new(shape, aggregation, store))
                .collect(),
            classes,
            writer,
            passes_of_model: vec![0; plan.heads.len()],
            write_error: None,
        }
    }

    /// The aggregated maps; fails only when writing a spill file or a pass map failed.
    pub fn finish(self) -> std::io::Result<RegionAggregates> {
        if let Some(e) = self.write_error {
            return Err(e);
        }
        let regions = self
            .regions
            .into_iter()
            .map(Aggregator::finish)
            .collect::<std::io::Result<_>>()?;
        let class_means = self.classes.map(|(mut sums, n)| {
            let inv = 1.0 / n.max(1) as f32;
            sums.mapv_inplace(|v| v * inv);
            sums
        });
        Ok(RegionAggregates {
            regions,
            class_means,
        })
    }
}

impl PassSink for RegionAggregator<'_> {
    fn add(&mut self, model: usize, channels: Array4<f32>) {
        if let Some((sums, n)) = self.classes.as_mut() {
            regions::add_softmax(channels.view(), sums);
            *n += 1;
        }
        let pass = self.passes_of_model[model];
        self.passes_of_model[model] += 1;
        for (region, logits) in self.heads[model].region_logits(channels) {
            self.regions[region].add(model, logits.view());
            if let (Some(write), None) = (self.writer.as_mut(), &self.write_error) {
                let map = PassMap {
                    region,
                    model,
                    pass,
                    logits: logits.view(),
                };
                self.write_error = write(map).err();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes_of(a: &Aggregate) -> Vec<(usize, Array3<f16>)> {
        let mut out = Vec::new();
        a.passes
            .for_each(|_, m, map| out.push((m, map.to_owned())))
            .unwrap();
        out
    }

    #[test]
    fn welford_matches_two_pass_statistics() {
        let values = [1.5f32, -2.0, 0.25, 3.0, 7.5];
        let tmp = tempfile::tempdir().unwrap();
        let spill = tmp.path().join("passes.f16");
        for store in [
            PassStore::in_memory([1, 1, 2]),
            PassStore::spilled([1, 1, 2], &spill).unwrap(),
        ] {
            let mut agg = Aggregator::new([1, 1, 2], Aggregation::MeanLogit, store);
            for (i, v) in values.iter().enumerate() {
                agg.add(i % 2, Array3::from_elem((1, 1, 2), *v).view());
            }
            let a = agg.finish().unwrap();
            let mean = values.iter().sum::<f32>() / 5.0;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!((a.mean_logit[[0, 0, 1]] - mean).abs() < 1e-6);
            assert!((a.std_logit[[0, 0, 0]] - var.sqrt()).abs() < 1e-5);
            let passes = passes_of(&a);
            assert_eq!(passes.len(), 5);
            assert_eq!(passes[3].0, 1);
            assert_eq!(passes[2].1[[0, 0, 0]], f16::from_f32(0.25));
            assert_eq!(passes[4].1[[0, 0, 1]], f16::from_f32(7.5));
        }
        assert!(!spill.exists(), "the spill file goes with the store");
    }

    #[test]
    fn one_pass_has_zero_spread() {
        let values = [1.5f32];
        let mut agg = Aggregator::new(
            [1, 1, 2],
            Aggregation::MeanLogit,
            PassStore::in_memory([1, 1, 2]),
        );
        for (i, v) in values.iter().enumerate() {
            agg.add(i % 2, Array3::from_elem((1, 1, 2), *v).view());
        }
        let a = agg.finish().unwrap();
        assert_eq!(a.std_logit[[0, 0, 0]], 0.0);
    }

    #[test]
    fn mean_probability_aggregation() {
        let mut agg = Aggregator::new(
            [1, 1, 1],
            Aggregation::MeanProbability,
            PassStore::in_memory([1, 1, 1]),
        );
        agg.add(0, Array3::from_elem((1, 1, 1), 10.0).view());
        agg.add(0, Array3::from_elem((1, 1, 1), -10.0).view());
        let a = agg.finish().unwrap();
        assert!((a.probability[[0, 0, 0]] - 0.5).abs() < 1e-6);
        assert!(a.logit[[0, 0, 0]].abs() < 1e-4);
        assert_eq!(a.mean_logit[[0, 0, 0]], 0.0);
    }
}
