//! An RGB canvas (row-major, top-left origin, `x` to the right, `y` down) with rectangles and
//! text in the bitmap font of `font`, saved as an 8-bit RGB PNG with the `png` encoder.

use std::path::Path;

use super::font;

pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [0, 0, 0];
pub const WHITE: Rgb = [255, 255, 255];

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, fill: Rgb) -> Canvas {
        Canvas {
            width,
            height,
            rgb: fill.repeat(width * height),
        }
    }

    /// Sets one pixel; pixels outside the canvas are ignored.
    pub fn set(&mut self, x: usize, y: usize, c: Rgb) {
        if x < self.width && y < self.height {
            let i = 3 * (y * self.width + x);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    #[cfg(test)]
    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = 3 * (y * self.width + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Fills `[x0, x1) x [y0, y1)`.
    pub fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: Rgb) {
        for y in y0..y1.min(self.height) {
            for x in x0..x1.min(self.width) {
                self.set(x, y, c);
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel a `scale` square;
    /// only the glyphs' set pixels are painted.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: Rgb) {
        for (i, ch) in text.chars().enumerate() {
            let left = x + i * font::ADVANCE * scale;
            for (row, bits) in font::glyph(ch).iter().enumerate() {
                for col in 0..font::WIDTH {
                    if bits >> (font::WIDTH - 1 - col) & 1 == 1 {
                        let (px, py) = (left + col * scale, y + row * scale);
                        self.rect(px, py, px + scale, py + scale, c);
                    }
                }
            }
        }
    }

    /// `text` on a filled box with a `scale`-pixel margin; `(x, y)` is the box's top-left.
    pub fn label(&mut self, x: usize, y: usize, text: &str, scale: usize, fg: Rgb, bg: Rgb) {
        let (w, h) = label_size(text, scale);
        self.rect(x, y, x + w, y + h, bg);
        self.text(x + scale, y + scale, text, scale, fg);
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
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

/// Width and height of a `label` box.
pub fn label_size(text: &str, scale: usize) -> (usize, usize) {
    (
        font::text_width(text, scale) + 2 * scale,
        (font::HEIGHT + 2) * scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_paints_exactly_the_glyph_bitmaps() {
        let scale = 2;
        let mut c = Canvas::new(40, 20, BLACK);
        c.text(3, 4, "#1", scale, WHITE);
        for y in 0..c.height {
            for x in 0..c.width {
                let expected = (|| {
                    let (fx, fy) = ((x.checked_sub(3)?) / scale, (y.checked_sub(4)?) / scale);
                    let (ch, col) = (fx / font::ADVANCE, fx % font::ADVANCE);
                    let glyph = font::glyph(['#', '1'].get(ch).copied()?);
                    let bits = *glyph.get(fy)?;
                    Some(col < font::WIDTH && bits >> (font::WIDTH - 1 - col) & 1 == 1)
                })()
                .unwrap_or(false);
                assert_eq!(c.get(x, y) == WHITE, expected, "({x}, {y})");
            }
        }
    }

    #[test]
    fn labels_sit_on_their_box() {
        let mut c = Canvas::new(30, 30, WHITE);
        c.label(1, 1, "7", 1, WHITE, BLACK);
        assert_eq!(label_size("7", 1), (7, 9));
        assert_eq!(c.get(1, 1), BLACK); // margin
        assert_eq!(c.get(2, 2), WHITE); // top row of the 7 is full
        assert_eq!(c.get(8, 1), WHITE); // outside the box
    }
}
