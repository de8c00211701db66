//! Blobs: connected components of the thresholded aggregate and their statistics.
//!
//! Labelling is a two-pass union-find over the raster order (written here: no maintained crate
//! labels 3-D boolean ndarrays with 6/18/26 connectivity), and agrees with
//! `scipy.ndimage.label` with the matching structuring element. Components smaller than
//! `min_voxels` are dropped. Blob ids are 1..n ordered by voxel count (largest first), then by
//! mean aggregated logit (highest first), then by the first voxel in the input grid's raster
//! order (k, then j, then i). Labelling runs on the canonical crop the ensemble ran on; positions
//! in the report are on the input grid.

use ndarray::{Array3, ArrayView3, Zip};

use crate::aggregate::Aggregate;
use crate::preprocess::CropBox;
use crate::volume::{AxisMap, Geometry};

/// Connected-component labels (0 = background) and the number of components.
pub fn label(mask: ArrayView3<bool>, connectivity: u8) -> (Array3<u32>, usize) {
    let offsets = backward_offsets(connectivity);
    let (nz, ny, nx) = mask.dim();
    let mut labels = Array3::<u32>::zeros((nz, ny, nx));
    let mut parent: Vec<u32> = vec![0];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                if !mask[[z, y, x]] {
                    continue;
                }
                let mut current = 0u32;
                for &(dz, dy, dx) in &offsets {
                    let (qz, qy, qx) = (z as isize + dz, y as isize + dy, x as isize + dx);
                    if qz < 0 || qy < 0 || qx < 0 || qy >= ny as isize || qx >= nx as isize {
                        continue;
                    }
                    let l = labels[[qz as usize, qy as usize, qx as usize]];
                    if l == 0 {
                        continue;
                    }
                    current = if current == 0 {
                        root(&mut parent, l)
                    } else {
                        union(&mut parent, current, l)
                    };
                }
                if current == 0 {
                    current = parent.len() as u32;
                    parent.push(current);
                }
                labels[[z, y, x]] = current;
            }
        }
    }
    // compact roots to 1..n in order of first appearance
    let mut compact = vec![0u32; parent.len()];
    let mut n = 0u32;
    for l in labels.iter_mut().filter(|l| **l > 0) {
        let root = root(&mut parent, *l) as usize;
        if compact[root] == 0 {
            n += 1;
            compact[root] = n;
        }
        *l = compact[root];
    }
    (labels, n as usize)
}

fn root(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        parent[x as usize] = parent[parent[x as usize] as usize];
        x = parent[x as usize];
    }
    x
}

fn union(parent: &mut [u32], a: u32, b: u32) -> u32 {
    let (ra, rb) = (root(parent, a), root(parent, b));
    let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
    parent[hi as usize] = lo;
    lo
}

/// Neighbours already visited in raster order, for 6, 18 or 26 connectivity.
fn backward_offsets(connectivity: u8) -> Vec<(isize, isize, isize)> {
    neighbour_offsets(connectivity)
        .into_iter()
        .filter(|&o| o < (0, 0, 0))
        .collect()
}

/// All neighbour offsets `(dz, dy, dx)` of 6, 18 or 26 connectivity (anything else counts as
/// 26), in raster order.
fn neighbour_offsets(connectivity: u8) -> Vec<(isize, isize, isize)> {
    let mut out = Vec::new();
    for dz in -1..=1isize {
        for dy in -1..=1isize {
            for dx in -1..=1isize {
                let manhattan = dz.abs() + dy.abs() + dx.abs();
                let allowed = match connectivity {
                    6 => manhattan == 1,
                    18 => manhattan <= 2,
                    _ => manhattan <= 3,
                };
                if manhattan > 0 && allowed {
                    out.push((dz, dy, dx));
                }
            }
        }
    }
    out
}

/// `mask` dilated `iterations` times by the 3x3x3 structure of `connectivity` (6, 18 or 26, plus
/// the centre); nothing outside the grid is set. As `scipy.ndimage.binary_dilation` with
/// `generate_binary_structure(3, 1 | 2 | 3)` and `iterations >= 1` (0 here returns the mask).
pub fn dilate(mask: ArrayView3<bool>, connectivity: u8, iterations: usize) -> Array3<bool> {
    let offsets = neighbour_offsets(connectivity);
    let (nz, ny, nx) = mask.dim();
    let inside = |p: isize, n: usize| (0..n as isize).contains(&p);
    let mut current = mask.to_owned();
    for _ in 0..iterations {
        let mut next = current.clone();
        for ((z, y, x), _) in current.indexed_iter().filter(|(_, &v)| v) {
            for &(dz, dy, dx) in &offsets {
                let (qz, qy, qx) = (z as isize + dz, y as isize + dy, x as isize + dx);
                if inside(qz, nz) && inside(qy, ny) && inside(qx, nx) {
                    next[[qz as usize, qy as usize, qx as usize]] = true;
                }
            }
        }
        current = next;
    }
    current
}

/// Voxel counts per label (index 0 = background).
pub fn sizes(labels: ArrayView3<u32>, n: usize) -> Vec<usize> {
    let mut counts = vec![0usize; n + 1];
    for &l in labels.iter() {
        counts[l as usize] += 1;
    }
    counts
}

/// Relabels with `mapping[old] = new` (0 drops the voxel).
pub fn relabel(labels: &mut Array3<u32>, mapping: &[u32]) {
    Zip::from(labels).par_for_each(|l| *l = mapping[*l as usize]);
}

/// How blobs are found.
#[derive(Debug, Clone, Copy)]
pub struct BlobOptions {
    pub threshold: f32,
    pub connectivity: u8,
    pub min_voxels: usize,
}

/// Maps voxel indices of the canonical crop to indices of the input grid.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub crop: CropBox,
    pub axis_map: AxisMap,
    pub input: &'a Geometry,
}

impl Frame<'_> {
    /// Input-grid `(i, j, k)` of a (possibly fractional) canonical-crop `[z, y, x]` index.
    pub fn to_input_ijk(&self, zyx: [f64; 3]) -> [f64; 3] {
        let canon_ijk = [
            zyx[2] + self.crop.start_zyx[2] as f64,
            zyx[1] + self.crop.start_zyx[1] as f64,
            zyx[0] + self.crop.start_zyx[0] as f64,
        ];
        let mut out = [0.0; 3];
        for (c, &v) in canon_ijk.iter().enumerate() {
            let axis = self.axis_map.source[c];
            let n = self.input.shape_ijk[axis] as f64;
            out[axis] = if self.axis_map.flip[c] {
                n - 1.0 - v
            } else {
                v
            };
        }
        out
    }
}

/// One blob, positions on the input grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub id: u32,
    pub voxels: usize,
    pub volume_mm3: f64,
    /// `(i, j, k)` of the centroid on the input grid.
    pub centroid_ijk: [f64; 3],
    pub centroid_lps_mm: [f64; 3],
    /// Inclusive `(i, j, k)` corners on the input grid.
    pub bbox_min_ijk: [usize; 3],
    pub bbox_max_ijk: [usize; 3],
    pub mean_logit: f64,
    pub mean_probability: f64,
    pub max_logit: f64,
    pub mean_spread: f64,
    /// Means over the blob of the uncertainty maps (`uncertainty`): entropy and mutual
    /// information in bits, and the between- and within-model logit variance.
    pub mean_entropy: f64,
    pub mean_mutual_information: f64,
    pub mean_logit_variance_between: f64,
    pub mean_logit_variance_within: f64,
    /// Mean logit over the blob of each feeding model's passes, in model order.
    pub model_mean_logits: Vec<f64>,
    /// Mean logit over the blob of each pass, in pass order.
    pub pass_mean_logits: Vec<f64>,
    /// Fraction of passes whose blob-mean logit exceeds the threshold.
    pub pass_agreement: f64,
}

/// Running sums for one provisional component.
#[derive(Debug, Clone, Default)]
struct Sums {
    voxels: usize,
    logit: f64,
    probability: f64,
    spread: f64,
    entropy: f64,
    mutual_information: f64,
    variance_between: f64,
    variance_within: f64,
    max_logit: f64,
    position: [f64; 3],
    min_zyx: [usize; 3],
    max_zyx: [usize; 3],
    first_input_key: u64,
}

/// Finds the blobs of `aggregate` (on the canonical crop) and measures them; `models` are the
/// indices of the models whose passes fed it (their means are reported in this order).
/// Returns the final label map (values = blob ids) on the canonical crop and the blobs; fails
/// only when a spilled pass cannot be read back.
pub fn find(
    aggregate: &Aggregate,
    models: &[usize],
    opts: &BlobOptions,
    frame: &Frame,
) -> std::io::Result<(Array3<u32>, Vec<Blob>)> {
    let mask = aggregate.logit.mapv(|v| v > opts.threshold);
    let (mut labels, n) = label(mask.view(), opts.connectivity);
    let sums = accumulate(&labels, n, aggregate, frame);
    let mut order: Vec<usize> = (1..=n)
        .filter(|&l| sums[l].voxels >= opts.min_voxels)
        .collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (&sums[a], &sums[b]);
        sb.voxels
            .cmp(&sa.voxels)
            .then((sb.logit / sb.voxels as f64).total_cmp(&(sa.logit / sa.voxels as f64)))
            .then(sa.first_input_key.cmp(&sb.first_input_key))
    });
    let mut mapping = vec![0u32; n + 1];
    for (new, &old) in order.iter().enumerate() {
        mapping[old] = new as u32 + 1;
    }
    relabel(&mut labels, &mapping);
    let pass_sums = pass_sums(&labels, order.len(), aggregate)?;
    let blobs = order
        .iter()
        .enumerate()
        .map(|(i, &old)| {
            describe(
                i,
                &sums[old],
                &pass_sums,
                aggregate,
                models,
                opts.threshold,
                frame,
            )
        })
        .collect();
    Ok((labels, blobs))
}

fn accumulate(labels: &Array3<u32>, n: usize, aggregate: &Aggregate, frame: &Frame) -> Vec<Sums> {
    let init = Sums {
        min_zyx: [usize::MAX; 3],
        max_logit: f64::NEG_INFINITY,
        first_input_key: u64::MAX,
        ..Default::default()
    };
    let mut sums = vec![init; n + 1];
    let [ni, nj, _] = frame.input.shape_ijk.map(|v| v as u64);
    for ((z, y, x), &l) in labels.indexed_iter() {
        if l == 0 {
            continue;
        }
        let s = &mut sums[l as usize];
        let logit = f64::from(aggregate.logit[[z, y, x]]);
        s.voxels += 1;
        s.logit += logit;
        s.probability += f64::from(aggregate.probability[[z, y, x]]);
        s.spread += f64::from(aggregate.std_logit[[z, y, x]]);
        let u = &aggregate.uncertainty;
        s.entropy += f64::from(u.entropy[[z, y, x]]);
        s.mutual_information += f64::from(u.mutual_information[[z, y, x]]);
        s.variance_between += f64::from(u.variance_between[[z, y, x]]);
        s.variance_within += f64::from(u.variance_within[[z, y, x]]);
        s.max_logit = s.max_logit.max(logit);
        for (a, v) in [z, y, x].into_iter().enumerate() {
            s.position[a] += v as f64;
            s.min_zyx[a] = s.min_zyx[a].min(v);
            s.max_zyx[a] = s.max_zyx[a].max(v);
        }
        let ijk = frame
            .to_input_ijk([z as f64, y as f64, x as f64])
            .map(|v| v as u64);
        s.first_input_key = s.first_input_key.min((ijk[2] * nj + ijk[1]) * ni + ijk[0]);
    }
    sums
}

/// `sums[pass][blob]`: sum of the pass's logits over the blob (blob ids 1..=n).
pub fn pass_sums(
    labels: &Array3<u32>,
    n: usize,
    aggregate: &Aggregate,
) -> std::io::Result<Vec<Vec<f64>>> {
    let mut all = Vec::new();
    aggregate.passes.for_each(|_, _, logits| {
        let mut sums = vec![0.0f64; n + 1];
        Zip::from(labels).and(&logits).for_each(|&l, &v| {
            if l > 0 {
                sums[l as usize] += f64::from(v.to_f32());
            }
        });
        all.push(sums);
    })?;
    Ok(all)
}

fn describe(
    index: usize,
    s: &Sums,
    pass_sums: &[Vec<f64>],
    aggregate: &Aggregate,
    models: &[usize],
    threshold: f32,
    frame: &Frame,
) -> Blob {
    let id = index as u32 + 1;
    let n = s.voxels as f64;
    let centroid_zyx = s.position.map(|p| p / n);
    let centroid_ijk = frame.to_input_ijk(centroid_zyx);
    let corner_a = frame.to_input_ijk(s.min_zyx.map(|v| v as f64));
    let corner_b = frame.to_input_ijk(s.max_zyx.map(|v| v as f64));
    let pass_mean_logits: Vec<f64> = pass_sums.iter().map(|p| p[id as usize] / n).collect();
    let model_mean_logits = models
        .iter()
        .map(|&m| {
            let own: Vec<f64> = aggregate
                .passes
                .models()
                .iter()
                .zip(&pass_mean_logits)
                .filter(|(&pm, _)| pm == m)
                .map(|(_, &v)| v)
                .collect();
            own.iter().sum::<f64>() / own.len().max(1) as f64
        })
        .collect();
    let agreeing = pass_mean_logits
        .iter()
        .filter(|&&v| v > f64::from(threshold))
        .count();
    Blob {
        id,
        voxels: s.voxels,
        volume_mm3: n * frame.input.voxel_volume_mm3(),
        centroid_ijk,
        centroid_lps_mm: frame.input.index_to_lps_mm(centroid_ijk),
        bbox_min_ijk: [0, 1, 2].map(|a| corner_a[a].min(corner_b[a]).round() as usize),
        bbox_max_ijk: [0, 1, 2].map(|a| corner_a[a].max(corner_b[a]).round() as usize),
        mean_logit: s.logit / n,
        mean_probability: s.probability / n,
        max_logit: s.max_logit,
        mean_spread: s.spread / n,
        mean_entropy: s.entropy / n,
        mean_mutual_information: s.mutual_information / n,
        mean_logit_variance_between: s.variance_between / n,
        mean_logit_variance_within: s.variance_within / n,
        model_mean_logits,
        pass_agreement: agreeing as f64 / pass_mean_logits.len().max(1) as f64,
        pass_mean_logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(points: &[(usize, usize, usize)], shape: (usize, usize, usize)) -> Array3<bool> {
        let mut m = Array3::from_elem(shape, false);
        for &p in points {
            m[p] = true;
        }
        m
    }

    #[test]
    fn connectivity_decides_diagonals() {
        // face neighbours, an edge diagonal, and a corner diagonal
        let m = mask_from(&[(0, 0, 0), (0, 0, 1), (0, 1, 2), (1, 2, 3)], (2, 3, 4));
        assert_eq!(label(m.view(), 6).1, 3);
        assert_eq!(label(m.view(), 18).1, 2);
        assert_eq!(label(m.view(), 26).1, 1);
    }

    #[test]
    fn dilation_follows_the_structure() {
        let m = mask_from(&[(2, 2, 2)], (5, 5, 5));
        // 18-neighbourhood: the 3x3x3 cube less its 8 corners, then L1 <= 4 within Chebyshev 2
        assert_eq!(dilate(m.view(), 18, 1).iter().filter(|&&v| v).count(), 19);
        let twice = dilate(m.view(), 18, 2);
        assert!(twice[[0, 0, 2]] && !twice[[0, 0, 0]] && twice[[1, 1, 1]]);
        assert_eq!(dilate(m.view(), 6, 1).iter().filter(|&&v| v).count(), 7);
        assert_eq!(dilate(m.view(), 26, 2).iter().filter(|&&v| v).count(), 125);
        assert_eq!(dilate(m.view(), 18, 0), m);
        // clipped at the border
        let corner = mask_from(&[(0, 0, 0)], (3, 3, 3));
        assert_eq!(
            dilate(corner.view(), 26, 1).iter().filter(|&&v| v).count(),
            8
        );
    }

    #[test]
    fn u_shape_merges_late() {
        // two arms that only meet on the last row
        let m = mask_from(
            &[
                (0, 0, 0),
                (0, 1, 0),
                (0, 0, 2),
                (0, 1, 2),
                (0, 2, 0),
                (0, 2, 1),
                (0, 2, 2),
            ],
            (1, 3, 3),
        );
        let (l, n) = label(m.view(), 6);
        assert_eq!(n, 1);
        assert_eq!(l[[0, 0, 0]], l[[0, 0, 2]]);
        assert_eq!(sizes(l.view(), n), vec![2, 7]);
    }
}
