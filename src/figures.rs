//! Figures (PNG, `outputs.figures` / `--figures`) in `OUT/figures/`, drawn pixel by pixel with
//! the `png` encoder (no font or system library; the numbers behind each figure are in the
//! report):
//!
//! - `logit-histogram.png`: the brain's aggregated-logit histogram (the report's
//!   `statistics.brain.histogram`), bar height log10(1 + count); stochastic bars blue (left half
//!   of each bin), deterministic bars orange (right half, with `--compare-deterministic`), the
//!   blob threshold as a grey vertical line.
//! - `blob-<id>.png` for the largest blobs: the axial slice (canonical model orientation, crop)
//!   where the blob is widest, a z-scored channel in grey (window -3..3), the blob tinted red with
//!   its outline bright red, other blobs tinted yellow. Each voxel is a `SCALE` x `SCALE` square.

use std::path::Path;

use ndarray::{ArrayView2, ArrayView3, Axis};

use crate::stats::Histogram;

const SCALE: usize = 4;
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

/// An RGB canvas.
struct Canvas {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize, fill: [u8; 3]) -> Canvas {
        Canvas {
            width,
            height,
            rgb: fill.repeat(width * height),
        }
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x, y, c);
            }
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&self.rgb)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    }
}

/// The histogram figure; `deterministic` must share `stochastic`'s edges.
pub fn histogram_png(
    path: &Path,
    stochastic: &Histogram,
    deterministic: Option<&Histogram>,
    threshold: f64,
) -> std::io::Result<()> {
    let (width, height, margin) = (720usize, 360usize, 20usize);
    let mut c = Canvas::new(width, height, [255, 255, 255]);
    let bins = stochastic.counts.len().max(1);
    let heights = |h: &Histogram| -> Vec<f64> {
        h.counts.iter().map(|&n| (1.0 + n as f64).log10()).collect()
    };
    let s = heights(stochastic);
    let d = deterministic.map(heights);
    let top = s
        .iter()
        .chain(d.iter().flatten())
        .copied()
        .fold(1e-9, f64::max);
    let plot_w = width - 2 * margin;
    let plot_h = height - 2 * margin;
    let base = height - margin;
    for b in 0..bins {
        let x0 = margin + b * plot_w / bins;
        let x1 = margin + (b + 1) * plot_w / bins;
        let mid = (x0 + x1) / 2;
        let bar = |v: f64| base - ((v / top) * plot_h as f64).round() as usize;
        let right = if d.is_some() { mid } else { x1 };
        c.rect(x0, bar(s[b]), right.max(x0 + 1), base, BLUE);
        if let Some(d) = &d {
            c.rect(mid, bar(d[b]), x1.max(mid + 1), base, ORANGE);
        }
    }
    c.rect(margin, base, width - margin, base + 1, [0, 0, 0]);
    let (lo, hi) = (
        stochastic.edges.first().copied().unwrap_or(0.0),
        stochastic.edges.last().copied().unwrap_or(1.0),
    );
    if hi > lo && (lo..=hi).contains(&threshold) {
        let x = margin + ((threshold - lo) / (hi - lo) * plot_w as f64).round() as usize;
        c.rect(x, margin, x + 1, base, [128, 128, 128]);
    }
    c.save(path)
}

/// The axial slice (`[z]` of the canonical crop) where blob `id` has the most voxels.
pub fn widest_slice(labels: ArrayView3<u32>, id: u32) -> Option<usize> {
    labels
        .axis_iter(Axis(0))
        .map(|plane| plane.iter().filter(|&&l| l == id).count())
        .enumerate()
        .filter(|&(_, n)| n > 0)
        .max_by_key(|&(z, n)| (n, std::cmp::Reverse(z)))
        .map(|(z, _)| z)
}

/// The overlay of blob `id` on one slice (`image`, `labels`: `[y, x]`).
pub fn overlay_png(
    path: &Path,
    image: ArrayView2<f32>,
    labels: ArrayView2<u32>,
    id: u32,
) -> std::io::Result<()> {
    let (ny, nx) = image.dim();
    let mut c = Canvas::new(nx * SCALE, ny * SCALE, [0, 0, 0]);
    for ((y, x), &v) in image.indexed_iter() {
        let g = (((v.clamp(-3.0, 3.0) + 3.0) / 6.0) * 255.0).round() as u8;
        let l = labels[[y, x]];
        let colour = if l == id {
            let edge = [(0, 1), (2, 1), (1, 0), (1, 2)].iter().any(|&(dy, dx)| {
                let (qy, qx) = (y + dy, x + dx);
                qy == 0 || qx == 0 || qy > ny || qx > nx || labels[[qy - 1, qx - 1]] != id
            });
            if edge {
                [255, 0, 0]
            } else {
                [g / 2 + 127, g / 2, g / 2]
            }
        } else if l > 0 {
            [g / 2 + 127, g / 2 + 127, g / 2]
        } else {
            [g, g, g]
        };
        c.rect(
            x * SCALE,
            y * SCALE,
            (x + 1) * SCALE,
            (y + 1) * SCALE,
            colour,
        );
    }
    c.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn widest_slice_picks_the_biggest_cross_section() {
        let mut l = Array3::<u32>::zeros((3, 4, 4));
        l[[0, 0, 0]] = 2;
        l[[1, 1, 1]] = 2;
        l[[1, 1, 2]] = 2;
        assert_eq!(widest_slice(l.view(), 2), Some(1));
        assert_eq!(widest_slice(l.view(), 3), None);
    }

    #[test]
    fn pngs_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let h = Histogram {
            edges: vec![-2.0, 0.0, 2.0],
            counts: vec![10, 3],
        };
        histogram_png(&dir.path().join("h.png"), &h, Some(&h), 0.0).unwrap();
        let img = ndarray::Array2::<f32>::zeros((5, 6));
        let mut l = ndarray::Array2::<u32>::zeros((5, 6));
        l[[2, 3]] = 1;
        overlay_png(&dir.path().join("o.png"), img.view(), l.view(), 1).unwrap();
        let bytes = std::fs::read(dir.path().join("o.png")).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
}
