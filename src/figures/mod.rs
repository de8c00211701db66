//! Figures (PNG, `outputs.figures` / `--figures`) in `OUT/figures/`, drawn pixel by pixel with
//! the `png` encoder and labelled in a bitmap font of our own (`font`; capitals only). The
//! numbers behind each figure are in the report.
//!
//! - `logit-histogram.png`: one panel per histogram set, stacked. The first is the ensemble:
//!   the brain's aggregated-logit histogram (`statistics.brain.histogram`) with, under
//!   `--compare-deterministic`, the deterministic ensemble's
//!   (`comparison.deterministic.statistics.brain.histogram`). Then one panel per model: the mean
//!   of its own noisy passes (`model_statistics`) beside its single noise-free pass
//!   (`comparison.deterministic.model_statistics`). Bar height is log10(1 + count), scaled to the
//!   panel's tallest bar, ticks at counts 1, 10, 100, ... (the axis is 0); stochastic bars blue
//!   (left half of each bin), deterministic bars orange (right half); the blob threshold is a
//!   grey line; the colour key is on the first panel's title row. Without the comparison only
//!   the blue bars are drawn.
//! - `uncertainty-histogram.png`: the same layout for the uncertainty maps over the brain
//!   (`uncertainty`): entropy, expected entropy and mutual information (bits, 0 to 1), then the
//!   between- and within-model logit variance; the deterministic ensemble's beside them under
//!   `--compare-deterministic` (`comparison.deterministic.uncertainty`: no noise, so no
//!   within-model variance). No threshold line.
//! - `blob-<id>.png` for the largest blobs: the axial slice (canonical model orientation, crop)
//!   where the blob is widest, once per channel side by side (z-scored, grey window -3..3, the
//!   channel's name in the corner), then the per-voxel spread (`std_logits`, grey from 0 to the
//!   slice's largest spread, written in the corner). Blob outlines: the chosen blob red, other
//!   blobs on the slice yellow, each with `#<id> <mean logit>` beside it. A voxel is an `s` x `s`
//!   square, `s` = 512 / the slice's longer side, clamped to 1..=4.

mod canvas;
pub mod curves;
mod font;

use std::path::Path;

use std::collections::BTreeMap;

use ndarray::{Array3, Array4, ArrayView2, ArrayView3, Axis};

use crate::blobs::Blob;
use crate::compare::Comparison;
use crate::stats::Histogram;
use crate::stats::{DistributionInfo, Statistics, UncertaintyStatistics};
use canvas::{label_size, Canvas, Rgb, BLACK, WHITE};

pub const BLUE: Rgb = [31, 119, 180];
pub const ORANGE: Rgb = [255, 127, 14];
const GREY: Rgb = [128, 128, 128];
const RED: Rgb = [255, 40, 40];
const YELLOW: Rgb = [255, 220, 0];
/// Text scale: each font pixel is a 2 x 2 square.
const TEXT: usize = 2;

/// Blobs that get an overlay figure (the largest, ids 1, 2, 3).
const FIGURE_BLOBS: usize = 3;

/// What the figures show; maps are on the canonical crop (`[c,] z, y, x`).
pub struct FigureInputs<'a> {
    pub statistics: &'a Statistics,
    pub uncertainty: &'a UncertaintyStatistics,
    pub model_statistics: Option<&'a BTreeMap<String, DistributionInfo>>,
    pub comparison: Option<&'a Comparison>,
    pub threshold: f64,
    pub channels: &'a [String],
    pub image: &'a Array4<f32>,
    pub labels: &'a Array3<u32>,
    pub spread: &'a Array3<f32>,
    pub found: &'a [Blob],
    pub names: &'a [String],
}

/// Writes every figure into `dir` (created); returns their paths as `figures/<name>`, or the
/// name of the file that failed.
pub fn write_all(dir: &Path, f: &FigureInputs) -> Result<Vec<String>, (String, std::io::Error)> {
    std::fs::create_dir_all(dir).map_err(|e| (String::new(), e))?;
    let mut written = Vec::new();
    let name = "logit-histogram.png".to_string();
    histogram_png(&dir.join(&name), &histogram_panels(f), f.threshold)
        .map_err(|e| (name.clone(), e))?;
    written.push(format!("figures/{name}"));
    let name = "uncertainty-histogram.png".to_string();
    histogram_png(&dir.join(&name), &uncertainty_panels(f), f64::NAN)
        .map_err(|e| (name.clone(), e))?;
    written.push(format!("figures/{name}"));
    let confidence = |id: u32| f.found.iter().find(|b| b.id == id).map(|b| b.mean_logit);
    for id in 1..=f.found.len().min(FIGURE_BLOBS) as u32 {
        let Some(z) = widest_slice(f.labels.view(), id) else {
            continue;
        };
        let overlay = Overlay {
            panels: slice_panels(f, z),
            labels: f.labels.index_axis(Axis(0), z),
            id,
            confidence: &confidence,
        };
        let name = format!("blob-{id}.png");
        overlay_png(&dir.join(&name), &overlay).map_err(|e| (name.clone(), e))?;
        written.push(format!("figures/{name}"));
    }
    Ok(written)
}

/// The ensemble's panel, then one per model that has statistics.
fn histogram_panels<'a>(f: &FigureInputs<'a>) -> Vec<HistogramPanel<'a>> {
    let det = f.comparison.map(|c| &c.deterministic);
    let mut panels = vec![HistogramPanel {
        title: "ENSEMBLE - BRAIN LOGITS".into(),
        stochastic: &f.statistics.brain.histogram,
        deterministic: det.map(|d| &d.statistics.brain.histogram),
    }];
    for model in f.names {
        if let Some(s) = f.model_statistics.and_then(|m| m.get(model)) {
            panels.push(HistogramPanel {
                title: format!("{model} - MEAN OF ITS PASSES"),
                stochastic: &s.histogram,
                deterministic: det
                    .and_then(|d| d.model_statistics.get(model))
                    .map(|d| &d.histogram),
            });
        }
    }
    panels
}

/// One panel per uncertainty map, stochastic beside deterministic.
fn uncertainty_panels<'a>(f: &FigureInputs<'a>) -> Vec<HistogramPanel<'a>> {
    let det = f
        .comparison
        .and_then(|c| c.deterministic.uncertainty.as_ref());
    let of = |u: &'a UncertaintyStatistics| {
        [
            &u.entropy,
            &u.expected_entropy,
            &u.mutual_information,
            &u.logit_variance_between,
            &u.logit_variance_within,
        ]
    };
    let titles = [
        "ENTROPY (BITS)",
        "EXPECTED ENTROPY (BITS)",
        "MUTUAL INFORMATION (BITS)",
        "LOGIT VARIANCE BETWEEN MODELS",
        "LOGIT VARIANCE WITHIN MODELS",
    ];
    let stochastic = of(f.uncertainty);
    let deterministic = det.map(of);
    titles
        .iter()
        .enumerate()
        .map(|(i, title)| HistogramPanel {
            title: title.to_string(),
            stochastic: &stochastic[i].histogram,
            deterministic: deterministic.map(|d| &d[i].histogram),
        })
        .collect()
}

/// Slice `z` of every channel, then of the spread.
fn slice_panels<'a>(f: &FigureInputs<'a>, z: usize) -> Vec<Panel<'a>> {
    let spread = f.spread.index_axis(Axis(0), z);
    let top = spread.fold(0.0f32, |m, &v| m.max(v));
    let mut panels: Vec<Panel> = f
        .channels
        .iter()
        .zip(f.image.axis_iter(Axis(0)))
        .map(|(name, image)| Panel {
            name: name.clone(),
            image: image.index_axis_move(Axis(0), z),
            window: (-3.0, 3.0),
        })
        .collect();
    panels.push(Panel {
        name: format!("SPREAD 0-{top:.2}"),
        image: spread,
        window: (0.0, top),
    });
    panels
}

/// One panel of the histogram figure; `deterministic` shares `stochastic`'s edges.
pub struct HistogramPanel<'a> {
    pub title: String,
    pub stochastic: &'a Histogram,
    pub deterministic: Option<&'a Histogram>,
}

const PANEL_W: usize = 720;
const PANEL_H: usize = 220;
const LEFT: usize = 80;
const RIGHT: usize = 16;
const TOP: usize = 34;
const BOTTOM: usize = 34;

/// The histogram figure: `PANEL_W` wide, `PANEL_H` per panel.
pub fn histogram_png(
    path: &Path,
    panels: &[HistogramPanel],
    threshold: f64,
) -> std::io::Result<()> {
    let mut c = Canvas::new(PANEL_W, PANEL_H * panels.len().max(1), WHITE);
    for (i, panel) in panels.iter().enumerate() {
        draw_histogram(&mut c, i * PANEL_H, panel, threshold);
    }
    legend(&mut c, 10, panels.iter().any(|p| p.deterministic.is_some()));
    c.save(path)
}

/// The plot area of a panel whose top is at `y0`: `(x0, x1, top, base)`.
fn plot_area(y0: usize) -> (usize, usize, usize, usize) {
    (LEFT, PANEL_W - RIGHT, y0 + TOP, y0 + PANEL_H - BOTTOM)
}

fn draw_histogram(c: &mut Canvas, y0: usize, panel: &HistogramPanel, threshold: f64) {
    let (x0, x1, top, base) = plot_area(y0);
    let (plot_w, plot_h) = (x1 - x0, base - top);
    let heights = |h: &Histogram| -> Vec<f64> {
        h.counts.iter().map(|&n| (1.0 + n as f64).log10()).collect()
    };
    let s = heights(panel.stochastic);
    let d = panel.deterministic.map(heights);
    let tallest = s
        .iter()
        .chain(d.iter().flatten())
        .copied()
        .fold(1e-9, f64::max);
    let y_of = |v: f64| base - ((v / tallest).min(1.0) * plot_h as f64).round() as usize;
    let bins = s.len().max(1);
    for b in 0..s.len() {
        let left = x0 + b * plot_w / bins;
        let right = x0 + (b + 1) * plot_w / bins;
        let mid = (left + right) / 2;
        let split = if d.is_some() { mid } else { right };
        c.rect(left, y_of(s[b]), split.max(left + 1), base, BLUE);
        if let Some(d) = &d {
            c.rect(mid, y_of(d[b]), right.max(mid + 1), base, ORANGE);
        }
    }
    // axes and count ticks at 0, 1, 10, 100, ...
    c.rect(x0, base, x1, base + 1, BLACK);
    c.rect(x0 - 1, top, x0, base + 1, BLACK);
    let ticks = (0..12)
        .map(|k| ((1.0 + 10f64.powi(k)).log10(), count_label(k)))
        .take_while(|(v, _)| *v <= tallest);
    for (v, text) in ticks {
        let y = y_of(v);
        c.rect(x0 - 5, y, x0 - 1, y + 1, BLACK);
        let (w, h) = label_size(&text, TEXT);
        c.text(
            x0 - 6 - w,
            y.saturating_sub(h / 2 - TEXT),
            &text,
            TEXT,
            BLACK,
        );
    }
    let (lo, hi) = (
        panel.stochastic.edges.first().copied().unwrap_or(0.0),
        panel.stochastic.edges.last().copied().unwrap_or(1.0),
    );
    if hi > lo {
        let x_of = |v: f64| x0 + ((v - lo) / (hi - lo) * plot_w as f64).round() as usize;
        let step = nice_step((hi - lo) / 8.0);
        let mut v = (lo / step).ceil() * step;
        while v <= hi + step * 1e-9 {
            let x = x_of(v);
            c.rect(x, base + 1, x + 1, base + 5, BLACK);
            let text = tick_label(v, step);
            let w = font::text_width(&text, TEXT);
            c.text(x.saturating_sub(w / 2), base + 8, &text, TEXT, BLACK);
            v += step;
        }
        if (lo..=hi).contains(&threshold) {
            let x = x_of(threshold);
            c.rect(x, top, x + 1, base, GREY);
        }
    }
    c.text(x0, y0 + 10, &panel.title, TEXT, BLACK);
}

/// The colour key (for all panels), right-aligned on the first panel's title row.
fn legend(c: &mut Canvas, y: usize, deterministic: bool) {
    let entries: &[(&str, Rgb)] = if deterministic {
        &[("STOCHASTIC", BLUE), ("DETERMINISTIC", ORANGE)]
    } else {
        &[("STOCHASTIC", BLUE)]
    };
    let mut x = PANEL_W - RIGHT;
    for (text, colour) in entries.iter().rev() {
        x -= font::text_width(text, TEXT);
        c.text(x, y, text, TEXT, BLACK);
        let side = font::HEIGHT * TEXT;
        c.rect(x - side - 6, y, x - 6, y + side, *colour);
        x -= side + 20;
    }
}

/// `10^k` as a tick label: the number up to 10000, then `1E<k>`.
fn count_label(k: i32) -> String {
    if k <= 4 {
        format!("{}", 10u64.pow(k as u32))
    } else {
        format!("1E{k}")
    }
}

/// The smallest of 1, 2, 5 x 10^n that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.max(1e-12).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// An axis value at a tick spacing of `step` (one decimal below a step of 1; no `-0`).
fn tick_label(v: f64, step: f64) -> String {
    let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
    if step < 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
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

/// One image of an overlay: `image` `[y, x]` drawn in grey from `window.0` to `window.1`.
pub struct Panel<'a> {
    pub name: String,
    pub image: ArrayView2<'a, f32>,
    pub window: (f32, f32),
}

/// An overlay of blob `id` on one slice: the panels side by side, `labels` `[y, x]` outlined on
/// each, every blob on the slice tagged with its id and `confidence` (by blob id).
pub struct Overlay<'a> {
    pub panels: Vec<Panel<'a>>,
    pub labels: ArrayView2<'a, u32>,
    pub id: u32,
    pub confidence: &'a dyn Fn(u32) -> Option<f64>,
}

/// Pixels between panels.
const GAP: usize = 4;

/// Pixels per voxel for a `[ny, nx]` slice.
pub fn overlay_scale(ny: usize, nx: usize) -> usize {
    (512 / ny.max(nx).max(1)).clamp(1, 4)
}

pub fn overlay_png(path: &Path, overlay: &Overlay) -> std::io::Result<()> {
    let (ny, nx) = overlay.labels.dim();
    let s = overlay_scale(ny, nx);
    let n = overlay.panels.len();
    let width = n * nx * s + n.saturating_sub(1) * GAP;
    let mut c = Canvas::new(width.max(1), (ny * s).max(1), [40, 40, 40]);
    let tags = blob_tags(overlay.labels);
    for (k, panel) in overlay.panels.iter().enumerate() {
        let x0 = k * (nx * s + GAP);
        draw_slice(&mut c, x0, s, panel, overlay);
        c.label(x0, 0, &panel.name, TEXT, WHITE, BLACK);
        for &(id, [ymin, xmin, _, xmax]) in &tags {
            let text = match (overlay.confidence)(id) {
                Some(v) => format!("#{id} {v:.1}"),
                None => format!("#{id}"),
            };
            let (w, h) = label_size(&text, TEXT);
            // right of the blob's top row, else left of it, kept inside the panel
            let right = (xmax + 1) * s + 2;
            let x = if right + w <= nx * s {
                right
            } else {
                (xmin * s).saturating_sub(w + 2)
            };
            let y = (ymin * s)
                .saturating_sub(h / 2)
                .min((ny * s).saturating_sub(h));
            let colour = if id == overlay.id { RED } else { YELLOW };
            c.label(
                x0 + x.min((nx * s).saturating_sub(w)),
                y,
                &text,
                TEXT,
                colour,
                BLACK,
            );
        }
    }
    c.save(path)
}

fn draw_slice(c: &mut Canvas, x0: usize, s: usize, panel: &Panel, overlay: &Overlay) {
    let labels = overlay.labels;
    let (ny, nx) = labels.dim();
    let (lo, hi) = panel.window;
    let span = (hi - lo).max(1e-6);
    for ((y, x), &v) in panel.image.indexed_iter() {
        let g = (((v.clamp(lo, hi) - lo) / span) * 255.0).round() as u8;
        let l = labels[[y, x]];
        let edge = l > 0
            && [(0, 1), (2, 1), (1, 0), (1, 2)].iter().any(|&(dy, dx)| {
                let (qy, qx) = (y + dy, x + dx);
                qy == 0 || qx == 0 || qy > ny || qx > nx || labels[[qy - 1, qx - 1]] != l
            });
        let colour = match (edge, l == overlay.id) {
            (true, true) => RED,
            (true, false) => YELLOW,
            _ => [g, g, g],
        };
        let (px, py) = (x0 + x * s, y * s);
        c.rect(px, py, px + s, py + s, colour);
    }
}

/// Each blob on a slice with its `[ymin, xmin, ymax, xmax]` box there, by id.
fn blob_tags(labels: ArrayView2<u32>) -> Vec<(u32, [usize; 4])> {
    let mut boxes = std::collections::BTreeMap::<u32, [usize; 4]>::new();
    for ((y, x), &l) in labels.indexed_iter() {
        if l > 0 {
            let b = boxes.entry(l).or_insert([y, x, y, x]);
            *b = [b[0].min(y), b[1].min(x), b[2].max(y), b[3].max(x)];
        }
    }
    boxes.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

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
    fn ticks_are_round_numbers() {
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(5.0), 5.0);
        assert_eq!(tick_label(-1e-17, 2.0), "0");
        assert_eq!(tick_label(-2.5, 0.5), "-2.5");
        assert_eq!(count_label(2), "100");
        assert_eq!(count_label(6), "1E6");
    }

    fn decode(path: &Path) -> (usize, usize, Vec<u8>) {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width as usize, info.height as usize, buf)
    }

    #[test]
    fn histogram_bars_follow_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let h = Histogram {
            edges: vec![-2.0, 0.0, 2.0, 4.0],
            counts: vec![999, 0, 9],
        };
        let panels = [HistogramPanel {
            title: "ENSEMBLE".into(),
            stochastic: &h,
            deterministic: None,
        }];
        let path = dir.path().join("h.png");
        histogram_png(&path, &panels, 0.0).unwrap();
        let (w, ht, rgb) = decode(&path);
        assert_eq!((w, ht), (PANEL_W, PANEL_H));
        let (x0, x1, top, base) = plot_area(0);
        let column = |x: usize| -> usize {
            (top..base)
                .filter(|&y| rgb[3 * (y * w + x)..3 * (y * w + x) + 3] == BLUE)
                .count()
        };
        let third = (x1 - x0) / 3;
        // log10(1000) is the full height, log10(1) nothing, log10(10) a third
        assert_eq!(column(x0 + third / 2), base - top);
        assert_eq!(column(x0 + third + third / 2), 0);
        let small = column(x0 + 2 * third + third / 2) as f64;
        assert!((small - (base - top) as f64 / 3.0).abs() <= 1.0, "{small}");
    }

    #[test]
    fn overlay_tags_each_blob_in_every_panel() {
        let dir = tempfile::tempdir().unwrap();
        let image = Array2::<f32>::zeros((40, 60));
        let mut l = Array2::<u32>::zeros((40, 60));
        l[[20, 10]] = 1;
        l[[30, 30]] = 2;
        let confidence = |id: u32| (id == 1).then_some(17.06);
        let overlay = Overlay {
            panels: ["T1N", "T1C"]
                .iter()
                .map(|n| Panel {
                    name: n.to_string(),
                    image: image.view(),
                    window: (-3.0, 3.0),
                })
                .collect(),
            labels: l.view(),
            id: 1,
            confidence: &confidence,
        };
        let path = dir.path().join("o.png");
        overlay_png(&path, &overlay).unwrap();
        let s = overlay_scale(40, 60);
        let (w, h, rgb) = decode(&path);
        assert_eq!((w, h), (2 * 60 * s + GAP, 40 * s));
        let count = |c: Rgb, x0: usize, x1: usize| {
            (0..h)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| rgb[3 * (y * w + x)..3 * (y * w + x) + 3] == c)
                .count()
        };
        let panel = 60 * s;
        let glyph_pixels = |t: &str| -> usize {
            t.chars()
                .map(|ch| {
                    font::glyph(ch)
                        .iter()
                        .map(|r| r.count_ones() as usize)
                        .sum::<usize>()
                })
                .sum::<usize>()
                * TEXT
                * TEXT
        };
        for x0 in [0, panel + GAP] {
            // the chosen blob's one voxel is all edge, plus its tag
            assert_eq!(count(RED, x0, x0 + panel), s * s + glyph_pixels("#1 17.1"));
            assert_eq!(count(YELLOW, x0, x0 + panel), s * s + glyph_pixels("#2"));
        }
    }
}
