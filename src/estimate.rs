//! What a run will need before it starts: peak resident memory and the size of the output
//! folder, from the case's grid (headers only, no voxel read), the pipeline and the models' patch
//! and batch sizes. Workflow engines size their memory request (`mem_mb`, `--mem`) from it.
//!
//! Both figures are meant as upper bounds within about 2x of a real run on the CPU provider
//! (checked by `tests/python/test_estimate.py` against the peak RSS of real runs). Notation:
//! `N` voxels of the input grid, `C` voxels of the crop box (the whole grid, since the crop is
//! only known once voxels are read), `K` channels, `T` passes in all, and per model a patch of
//! `V` voxels and a batch of `b` patches (the model's fixed batch, else `inference.batch_size`
//! capped by `inference.max_batch_voxels`, as `window::batch_for` does).
//!
//! With several regions (`regions`), `R` is the number of regions, `T` counts the passes of
//! every region (a pass of a model that feeds three regions counts three times), a model has
//! `O` output channels, and `L` is the number of classes whose mean probability is kept for the
//! argmax label map (else 0); a one-region run has `R = O = 1`.
//!
//! Peak memory = base (binary, ONNX Runtime, threads: [`BASE_BYTES`]) + per model (every
//! session stays open for the whole run) 2 x the model file + the largest model's `b x V x`
//! [`ACTIVATION_BYTES`] (on the CPU the models share one ONNX Runtime arena and run one after
//! another) + the largest of three phases of data:
//! - load: `8K N` (each channel as f32, then the stacked case);
//! - ensemble: the case `4K N`, the normalized crop and mask `(4K + 1) C`, the noisy copy
//!   `4K C`, Welford mean and M2 `8 R C`, the uncertainty sums `20 R C` (mean probability and
//!   entropy, the current model's mean and M2, the within-model sum), the class means
//!   `4 L C`, the f16 pass maps `2 T C`, the previous pass's channels `4 O C` (aggregated while
//!   the next pass runs), and for the largest model the stitching sums and weights
//!   `4 (O + 1) C`, the importance map `4 V` and two batches in flight, in and out,
//!   `2 x 4 (K + O) b V`;
//! - finish: the case `4K N`, the normalized crop `(4K + 1) C`, the pass maps `2 T C`, each
//!   region's aggregated maps and labels `20 R C` and uncertainty maps `24 R C`, the mask `C`
//!   (and the label map `C`), and
//!   the largest of: a map on the input grid while it is written `12 N`, the SEG's labels (and
//!   probability) on the input grid `4 N` (`8 N`), the statistics' value lists `8 C`; plus
//!   `2 N` with `--write-source-dicom`.
//!
//! Output size: each f32 map `4 C + N / 64` bytes (gzip barely shrinks noisy f32 inside the crop
//! and squeezes the constant outside), the labels `N / 16`, `seg.dcm` one bit per voxel for
//! segment 1 and as much again with per-blob segments, `prob-seg.dcm` a byte per voxel,
//! `source-dicom/` `2 K N` plus 2 KiB per slice file, and [`REPORT_BYTES`] for the two reports.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::infer::{capped_batch, Model};
use crate::io::case::{self, CaseSpec, ChannelFile};
use crate::io::InputError;
use crate::pipeline::{MapKind, Pipeline, LABEL_MAP_FILE};
use crate::regions::{LabelRule, RegionPlan};
use crate::volume::{AxisMap, Geometry};

/// The binary, the ONNX Runtime library and thread stacks (measured: 40 to 60 MiB).
pub const BASE_BYTES: u64 = 64 << 20;
/// ONNX Runtime's working memory per patch voxel and batch item, after the shared arena has
/// settled (measured on the demo U-Nets, base width 8: 160 to 230 bytes); wider networks need
/// more.
pub const ACTIVATION_BYTES: u64 = 320;
/// `report.yaml` plus `report.json`.
pub const REPORT_BYTES: u64 = 64 << 10;
/// Header and attributes of one DICOM file.
const DICOM_FILE_OVERHEAD: u64 = 2 << 10;

/// One model as the run will use it.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    pub name: String,
    /// `(D, H, W)` = `(z, y, x)`.
    pub patch_zyx: [usize; 3],
    /// A fixed batch dimension of the model, else the configured batch size is used.
    pub fixed_batch: Option<usize>,
    pub file_bytes: u64,
    /// Channels of the model's output.
    pub output_channels: usize,
}

/// How the regions multiply the per-pass maps.
#[derive(Debug, Clone)]
pub struct RegionLoad {
    /// Names of the regions (their maps' file names), the primary one first.
    pub names: Vec<String>,
    /// Passes in all per region.
    pub passes: Vec<u64>,
    /// Classes whose mean probability is kept (argmax label map), else 0.
    pub class_maps: u64,
    /// Whether a label map is written.
    pub label_map: bool,
}

impl RegionLoad {
    /// The load of `plan` with `passes_per_model` passes per model.
    pub fn of(plan: &RegionPlan, passes_per_model: usize) -> RegionLoad {
        RegionLoad {
            names: plan.regions.iter().map(|r| r.name.clone()).collect(),
            passes: (0..plan.regions.len())
                .map(|r| (plan.feeders(r).len() * passes_per_model) as u64)
                .collect(),
            class_maps: match &plan.label_map {
                Some((LabelRule::Argmax { labels }, _)) => labels.len() as u64,
                _ => 0,
            },
            label_map: plan.label_map.is_some(),
        }
    }
}

/// The grid of a case, as far as the estimate needs it.
#[derive(Debug, Clone)]
pub struct CaseGrid {
    pub id: String,
    pub geometry: Geometry,
}

/// The estimate, in bytes, with its parts.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub peak_memory_bytes: u64,
    pub output_bytes: u64,
    /// Named parts of the peak (`base`, `models`, and the phase that peaks).
    pub memory_parts: BTreeMap<String, u64>,
    /// Named parts of the output size (file name to bytes).
    pub output_parts: BTreeMap<String, u64>,
}

impl Estimate {
    pub fn peak_memory_mib(&self) -> u64 {
        self.peak_memory_bytes.div_ceil(1 << 20)
    }

    pub fn output_mib(&self) -> u64 {
        self.output_bytes.div_ceil(1 << 20)
    }
}

/// Reads the headers of the case `spec` names (for DICOM, the series' headers) and checks what
/// a run would check first: channels found, size limit, one grid.
pub fn case_grid(spec: &CaseSpec, p: &Pipeline) -> Result<CaseGrid, InputError> {
    let files = case::resolve(spec, &p.channels, &p.dicom)?;
    case_grid_of(&files, p.limits.max_voxels)
}

/// The grid of a case's resolved channel files (headers only).
pub fn case_grid_of(files: &[ChannelFile], max_voxels: usize) -> Result<CaseGrid, InputError> {
    let (id, geometry) = case::header_grid(files, max_voxels)?;
    Ok(CaseGrid { id, geometry })
}

/// The plan of an opened model; its file size is read here.
pub fn model_plan(model: &dyn Model) -> ModelPlan {
    ModelPlan {
        name: model.name().to_string(),
        patch_zyx: model.patch_size(),
        fixed_batch: model.fixed_batch(),
        file_bytes: std::fs::metadata(&model.info().path)
            .map(|m| m.len())
            .unwrap_or(0),
        output_channels: model.output_channels(),
    }
}

/// The estimate for running `p` with `models` feeding `regions` on a case of grid `grid`.
pub fn estimate(
    p: &Pipeline,
    models: &[ModelPlan],
    regions: &RegionLoad,
    grid: &CaseGrid,
) -> Estimate {
    let map = AxisMap::towards(&grid.geometry, p.orientation);
    let s = grid.geometry.shape_ijk;
    // canonical array axis (2 - c) holds input axis source[c]
    let crop_zyx = [s[map.source[2]], s[map.source[1]], s[map.source[0]]];
    let sizes = Sizes::new(p, models, regions, grid, crop_zyx);
    Estimate {
        peak_memory_bytes: 0,
        output_bytes: 0,
        memory_parts: memory_parts(p, models, &sizes),
        output_parts: output_parts(p, regions, &sizes),
    }
    .totalled()
}

/// Refuses the run when its estimated peak memory exceeds `limits.max_memory_mib`.
pub fn check_memory(
    p: &Pipeline,
    models: &[Box<dyn Model>],
    plan: &RegionPlan,
    first_input: &Path,
    grid: &CaseGrid,
) -> Result<(), InputError> {
    let plans: Vec<ModelPlan> = models.iter().map(|m| model_plan(m.as_ref())).collect();
    let regions = RegionLoad::of(plan, p.passes_per_model());
    let needed_mib = estimate(p, &plans, &regions, grid).peak_memory_mib();
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
        });
    }
    Ok(())
}

impl Estimate {
    fn totalled(mut self) -> Estimate {
        self.peak_memory_bytes = self.memory_parts.values().sum();
        self.output_bytes = self.output_parts.values().sum();
        self
    }
}

/// Voxel counts the formulas use.
struct Sizes {
    n: u64,
    c: u64,
    k: u64,
    /// Passes in all, over the regions (`T`).
    passes: u64,
    /// Regions (`R`).
    regions: u64,
    /// The largest output channel count (`O`).
    outputs: u64,
    class_maps: u64,
    label_map: u64,
    slices: u64,
    /// Per model: (patch voxels, batch, output channels).
    models: Vec<(u64, u64, u64)>,
}

impl Sizes {
    fn new(
        p: &Pipeline,
        models: &[ModelPlan],
        regions: &RegionLoad,
        grid: &CaseGrid,
        crop_zyx: [usize; 3],
    ) -> Sizes {
        let per_model = models
            .iter()
            .map(|m| {
                let batch = m.fixed_batch.unwrap_or_else(|| {
                    capped_batch(
                        m.patch_zyx,
                        p.inference.batch_size,
                        p.inference.max_batch_voxels,
                    )
                });
                let outputs = m.output_channels as u64;
                (product(m.patch_zyx), batch as u64, outputs)
            })
            .collect();
        Sizes {
            n: grid.geometry.voxel_count() as u64,
            c: product(crop_zyx),
            k: p.channels.len() as u64,
            passes: regions.passes.iter().sum(),
            regions: regions.passes.len() as u64,
            outputs: models
                .iter()
                .map(|m| m.output_channels as u64)
                .max()
                .unwrap_or(1),
            class_maps: regions.class_maps,
            label_map: u64::from(regions.label_map),
            slices: grid.geometry.shape_ijk[2] as u64,
            models: per_model,
        }
    }
}

fn product(v: [usize; 3]) -> u64 {
    v.iter().map(|&x| x as u64).product()
}

fn memory_parts(p: &Pipeline, models: &[ModelPlan], z: &Sizes) -> BTreeMap<String, u64> {
    let (n, c, k, t, r) = (z.n, z.c, z.k, z.passes, z.regions);
    let files: u64 = models.iter().map(|m| 2 * m.file_bytes).sum();
    let arena = z.models.iter().map(|&(v, b, _)| b * v).max().unwrap_or(0) * ACTIVATION_BYTES;
    let sessions = files + arena;
    let load = 8 * k * n;

    let window = z
        .models
        .iter()
        .map(|&(v, b, o)| 4 * (o + 1) * c + 4 * v + 2 * 4 * (k + o) * b * v)
        .max()
        .unwrap_or(0);
    // the previous pass's channels (`4 O C`) wait for the aggregator while the next pass runs
    let ensemble = 4 * k * n
        + (4 * k + 1) * c
        + 4 * k * c
        + 8 * r * c
        + 20 * r * c
        + 4 * z.outputs * c
        + 4 * z.class_maps * c
        + 2 * t * c
        + window;
    let seg_grids = if p.dicom_output.probability_seg {
        8 * n
    } else {
        4 * n
    };
    let source_dicom = if p.dicom_output.write_source_dicom {
        2 * n
    } else {
        0
    };
    // maps written one at a time, then the SEG's grids; the statistics' vectors come before
    let writing = (12 * n).max(seg_grids).max(8 * c);
    let finish = 4 * k * n
        + (4 * k + 1) * c
        + 2 * t * c
        + (44 * r + 1 + z.label_map) * c
        + writing
        + source_dicom;
    let (phase, bytes) = [
        ("data_load", load),
        ("data_ensemble", ensemble),
        ("data_finish", finish),
    ]
    .into_iter()
    .max_by_key(|&(_, b)| b)
    .unwrap_or(("data_ensemble", ensemble));
    BTreeMap::from([
        ("base".to_string(), BASE_BYTES),
        ("models".to_string(), sessions),
        (phase.to_string(), bytes),
    ])
}

fn output_parts(p: &Pipeline, regions: &RegionLoad, z: &Sizes) -> BTreeMap<String, u64> {
    let (n, c, k) = (z.n, z.c, z.k);
    let mut parts = BTreeMap::new();
    for (r, region) in regions.names.iter().enumerate() {
        for kind in &p.outputs.maps {
            let bytes = match kind {
                MapKind::Labels | MapKind::Uncertainty => n / 16,
                _ => 4 * c + n / 64,
            };
            parts.insert(kind.file_name_for(region, r == 0), bytes + 352);
        }
    }
    if regions.label_map {
        parts.insert(LABEL_MAP_FILE.to_string(), n / 16 + 352);
    }
    let segments = if p.dicom_output.per_blob_segments {
        2
    } else {
        1
    };
    parts.insert(
        "seg.dcm".to_string(),
        segments * n / 8 + z.slices * segments * 64 + (64 << 10),
    );
    if p.dicom_output.probability_seg {
        parts.insert("prob-seg.dcm".to_string(), n + z.slices * 64 + (64 << 10));
    }
    if p.dicom_output.write_source_dicom {
        parts.insert(
            "source-dicom/".to_string(),
            2 * k * n + k * z.slices * DICOM_FILE_OVERHEAD,
        );
    }
    parts.insert("report.yaml, report.json".to_string(), REPORT_BYTES);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    fn grid(shape_ijk: [usize; 3]) -> CaseGrid {
        // LPS identity affine: canonical zyx = (k, j, i)
        let mut affine = [[0.0; 4]; 4];
        for (i, row) in affine.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        CaseGrid {
            id: "c".into(),
            geometry: Geometry {
                shape_ijk,
                affine_lps: affine,
            },
        }
    }

    fn plan(patch: [usize; 3]) -> ModelPlan {
        ModelPlan {
            name: "m".into(),
            patch_zyx: patch,
            fixed_batch: None,
            file_bytes: 1 << 20,
            output_channels: 1,
        }
    }

    fn one_region(models: usize, passes: u64) -> RegionLoad {
        RegionLoad {
            names: vec!["WT".into()],
            passes: vec![models as u64 * passes],
            class_maps: 0,
            label_map: false,
        }
    }

    fn pipeline(passes: usize) -> Pipeline {
        let mut p = Pipeline::from_models(Vec::new());
        p.ensemble.passes = passes;
        p
    }

    #[test]
    fn brats_case_with_one_small_model() {
        let p = pipeline(10);
        let e = estimate(
            &p,
            &[plan([16, 32, 32])],
            &one_region(1, 10),
            &grid([240, 240, 155]),
        );
        let n: u64 = 240 * 240 * 155;
        // ensemble phase: 16N + 17N + 16N + 8N + 20N (uncertainty sums) + 4N (previous pass)
        // + 20N (passes) + window
        // (8N + importance + two batches of 4 patches in flight)
        let v = 16 * 32 * 32;
        let window = 8 * n + 4 * v + 2 * 4 * 5 * 4 * v;
        let ensemble = (16 + 17 + 16 + 8 + 20 + 4 + 20) * n + window;
        // finish: case, crop, pass maps, aggregate + labels + uncertainty + mask, a map being
        // written
        let finish = (16 + 17 + 20 + 45 + 12) * n;
        let data = ensemble.max(finish);
        let phase = if ensemble > finish {
            "data_ensemble"
        } else {
            "data_finish"
        };
        assert_eq!(e.memory_parts[phase], data);
        assert_eq!(e.memory_parts.len(), 3);
        let models = 2 * (1 << 20) + 4 * 16 * 32 * 32 * ACTIVATION_BYTES;
        assert_eq!(e.peak_memory_bytes, BASE_BYTES + models + data);
        // about 0.9 GB for a full-box BraTS case with 10 passes
        assert!(
            (800..1200).contains(&e.peak_memory_mib()),
            "{}",
            e.peak_memory_mib()
        );
        assert_eq!(e.output_bytes, e.output_parts.values().sum::<u64>());
    }

    #[test]
    fn batch_follows_the_voxel_cap_and_fixed_batches() {
        let mut p = pipeline(2);
        let g = grid([96, 112, 48]);
        let v = 16 * 256 * 256;
        // the default cap (64^3 voxels) runs a 16x256x256 patch one at a time
        let capped = estimate(&p, &[plan([16, 256, 256])], &one_region(1, 2), &g);
        assert_eq!(
            capped.memory_parts["models"],
            2 * (1 << 20) + v * ACTIVATION_BYTES
        );
        p.inference.max_batch_voxels = 1 << 24;
        let big = estimate(&p, &[plan([16, 256, 256])], &one_region(1, 2), &g);
        let mut fixed = plan([16, 256, 256]);
        fixed.fixed_batch = Some(2);
        let two = estimate(&p, &[fixed], &one_region(1, 2), &g);
        assert_eq!(
            big.memory_parts["models"] - two.memory_parts["models"],
            2 * v * ACTIVATION_BYTES
        );
        assert!(big.peak_memory_bytes > two.peak_memory_bytes);
        let small = estimate(&p, &[plan([16, 32, 32])], &one_region(1, 2), &g);
        assert!(big.memory_parts["models"] > 50 * small.memory_parts["models"]);
    }

    #[test]
    fn the_models_share_one_arena_sized_for_the_largest() {
        let p = pipeline(2);
        let g = grid([96, 112, 48]);
        let both = estimate(
            &p,
            &[plan([16, 32, 32]), plan([16, 256, 256])],
            &one_region(2, 2),
            &g,
        );
        // p256 one at a time under the default voxel cap (1M voxels) outweighs p32 in batches
        // of 4 (64K voxels): only the larger is counted
        let largest = 16 * 256 * 256 * ACTIVATION_BYTES;
        assert_eq!(both.memory_parts["models"], 2 * 2 * (1 << 20) + largest);
    }

    #[test]
    fn more_passes_more_memory_same_output() {
        let g = grid([100, 100, 100]);
        let a = estimate(&pipeline(2), &[plan([16, 32, 32])], &one_region(1, 2), &g);
        let b = estimate(&pipeline(30), &[plan([16, 32, 32])], &one_region(1, 30), &g);
        assert!(b.peak_memory_bytes > a.peak_memory_bytes);
        assert_eq!(a.output_bytes, b.output_bytes);
        assert!(a.output_parts.contains_key("seg.dcm"));
        assert!(a.output_parts.contains_key("mean_logits.nii.gz"));
    }
}
