//! Curves on the unit square (ROC, calibration) for `stochseg evaluate`: axes with ticks at 0,
//! 0.5 and 1, the diagonal in grey, each series as a polyline with its points marked, a colour
//! key, and the axis names, in the bitmap font.

use std::path::Path;

use super::canvas::{Canvas, Rgb, BLACK, WHITE};

const SIZE: usize = 360;
const LEFT: usize = 44;
const TOP: usize = 44;
const BOTTOM: usize = 36;
const GREY: Rgb = [190, 190, 190];

/// Colours for one series each, in order (blue, orange, green, red, purple, brown).
pub const PALETTE: [Rgb; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

/// One curve: its name in the key, its colour and its points (`x`, `y` in [0, 1]).
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: Rgb,
    pub points: &'a [[f64; 2]],
}

/// A square plot of `series` over [0, 1] x [0, 1], titled, with named axes.
pub fn curves_png(
    path: &Path,
    title: &str,
    axes: [&str; 2],
    series: &[Series],
) -> std::io::Result<()> {
    let mut c = Canvas::new(LEFT + SIZE + 16, TOP + SIZE + BOTTOM, WHITE);
    let to_px = |p: [f64; 2]| {
        let x = LEFT as f64 + p[0].clamp(0.0, 1.0) * (SIZE - 1) as f64;
        let y = (TOP + SIZE - 1) as f64 - p[1].clamp(0.0, 1.0) * (SIZE - 1) as f64;
        (x.round() as i64, y.round() as i64)
    };
    line(&mut c, to_px([0.0, 0.0]), to_px([1.0, 1.0]), GREY);
    frame(&mut c);
    for s in series {
        for pair in s.points.windows(2) {
            line(&mut c, to_px(pair[0]), to_px(pair[1]), s.colour);
        }
        for &p in s.points {
            let (x, y) = to_px(p);
            c.rect(
                (x - 1).max(0) as usize,
                (y - 1).max(0) as usize,
                (x + 2) as usize,
                (y + 2) as usize,
                s.colour,
            );
        }
    }
    c.text(LEFT, 6, title, 2, BLACK);
    for (i, s) in series.iter().enumerate() {
        let y = TOP + SIZE - 20 - 14 * (series.len() - 1 - i);
        c.rect(LEFT + SIZE - 150, y, LEFT + SIZE - 140, y + 8, s.colour);
        c.text(LEFT + SIZE - 134, y, s.name, 1, BLACK);
    }
    c.text(LEFT + SIZE / 2 - 30, TOP + SIZE + 22, axes[0], 1, BLACK);
    c.text(2, TOP - 12, axes[1], 1, BLACK);
    c.save(path)
}

/// The plot's box and its ticks at 0, 0.5 and 1 on both axes.
fn frame(c: &mut Canvas) {
    let (x0, y0, x1, y1) = (LEFT, TOP, LEFT + SIZE, TOP + SIZE);
    c.rect(x0, y0, x1, y0 + 1, BLACK);
    c.rect(x0, y1 - 1, x1, y1, BLACK);
    c.rect(x0, y0, x0 + 1, y1, BLACK);
    c.rect(x1 - 1, y0, x1, y1, BLACK);
    for (i, tick) in ["0", "0.5", "1"].iter().enumerate() {
        let at = i * (SIZE - 1) / 2;
        c.rect(x0 + at, y1, x0 + at + 1, y1 + 4, BLACK);
        c.text(x0 + at - 2 * tick.len(), y1 + 8, tick, 1, BLACK);
        c.rect(x0 - 4, y1 - 1 - at, x0, y1 - at, BLACK);
        c.text(x0 - 8 - 6 * tick.len(), y1 - 4 - at, tick, 1, BLACK);
    }
}

/// A one-pixel line from `a` to `b` (Bresenham).
fn line(c: &mut Canvas, a: (i64, i64), b: (i64, i64), colour: Rgb) {
    let (dx, dy) = ((b.0 - a.0).abs(), -(b.1 - a.1).abs());
    let (sx, sy) = ((b.0 - a.0).signum(), (b.1 - a.1).signum());
    let (mut x, mut y, mut err) = (a.0, a.1, dx + dy);
    loop {
        if x >= 0 && y >= 0 {
            c.set(x as usize, y as usize, colour);
        }
        if (x, y) == b {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_their_ends_without_gaps() {
        let mut c = Canvas::new(20, 20, WHITE);
        let red = [255, 0, 0];
        line(&mut c, (1, 2), (15, 9), red);
        let painted: Vec<(usize, usize)> = (0..20)
            .flat_map(|y| (0..20).map(move |x| (x, y)))
            .filter(|&(x, y)| c.get(x, y) == red)
            .collect();
        assert!(painted.contains(&(1, 2)) && painted.contains(&(15, 9)));
        // one pixel per column along the shallow line
        assert_eq!(painted.len(), 15);
    }
}
