//! Preprocessing before the models: reorientation to the models' canonical orientation,
//! z-score normalization per channel over the brain mask, and the crop to the mask's bounding
//! box (as nnU-Net does), so the models only see the region that holds the brain.
//!
//! The brain mask is every voxel where any channel is nonzero (BraTS inputs are skull-stripped
//! with exact zeros outside the brain). Normalized values are `(x - mean) / max(std, 1e-8)`
//! inside the mask (population std over the mask, accumulated in f64) and exactly 0 outside.
//! Arrays are `[c, z, y, x]`; the crop box is in canonical `[z, y, x]` indices, end exclusive.

use ndarray::{s, Array3, Array4, ArrayView3, ArrayView4, Axis, Zip};
use serde::{Deserialize, Serialize};

use crate::pipeline::Preprocess;
use crate::volume::{AxisCodes, AxisMap, Geometry};

/// A half-open box `[start, end)` in `[z, y, x]` indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    pub start_zyx: [usize; 3],
    pub end_zyx: [usize; 3],
}

impl CropBox {
    pub fn shape(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.end_zyx[a] - self.start_zyx[a])
    }

    pub fn full(shape: [usize; 3]) -> CropBox {
        CropBox {
            start_zyx: [0; 3],
            end_zyx: shape,
        }
    }
}

/// Mean and standard deviation used to normalize one channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    pub mean: f64,
    pub std: f64,
}

/// Model-ready input: normalized, canonical, cropped.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `[c, z, y, x]` normalized voxels inside `crop`.
    pub image: Array4<f32>,
    /// Brain mask inside `crop`.
    pub brain: Array3<bool>,
    /// Crop box within the canonical grid.
    pub crop: CropBox,
    /// Canonical grid shape `[z, y, x]`.
    pub canonical_shape: [usize; 3],
    pub channel_stats: Vec<ChannelStats>,
    /// How the input grid's axes map onto the canonical ones.
    pub axis_map: AxisMap,
}

/// Reorients `images` (`[c, z, y, x]` on the input grid `geometry`) to `orientation`, then
/// normalizes and crops them (`prepare`).
pub fn prepare_case(
    images: ArrayView4<f32>,
    geometry: &Geometry,
    orientation: AxisCodes,
    opts: &Preprocess,
) -> Prepared {
    let axis_map = AxisMap::towards(geometry, orientation);
    let canonical = axis_map.to_canonical4(images);
    let mut prepared = prepare(canonical, opts.crop_to_nonzero, opts.crop_margin_voxels);
    prepared.axis_map = axis_map;
    prepared
}

impl Prepared {
    /// A map on the canonical crop (`[z, y, x]`) back on the input grid, `fill` outside the
    /// crop.
    pub fn to_input_grid<T: Clone>(&self, map: ArrayView3<T>, fill: T) -> Array3<T> {
        self.axis_map
            .to_input(uncrop(map, &self.crop, self.canonical_shape, fill))
    }
}

/// Normalizes and crops an image already in canonical orientation.
pub fn prepare(canonical: ArrayView4<f32>, crop_to_nonzero: bool, margin: usize) -> Prepared {
    let brain = brain_mask(canonical);
    let shape = [brain.shape()[0], brain.shape()[1], brain.shape()[2]];
    let crop = if crop_to_nonzero {
        bounding_box(&brain, margin).unwrap_or(CropBox::full(shape))
    } else {
        CropBox::full(shape)
    };
    let (a, b) = (crop.start_zyx, crop.end_zyx);
    let window = s![a[0]..b[0], a[1]..b[1], a[2]..b[2]];
    let brain_crop = brain.slice(window).to_owned();
    let mut image = canonical
        .slice(s![.., a[0]..b[0], a[1]..b[1], a[2]..b[2]])
        .to_owned();
    let mut channel_stats = Vec::with_capacity(image.shape()[0]);
    for mut channel in image.axis_iter_mut(Axis(0)) {
        let stats = masked_stats(channel.view(), brain_crop.view());
        let scale = 1.0 / stats.std.max(1e-8);
        Zip::from(&mut channel)
            .and(&brain_crop)
            .par_for_each(|v, &inside| {
                *v = if inside {
                    ((f64::from(*v) - stats.mean) * scale) as f32
                } else {
                    0.0
                };
            });
        channel_stats.push(stats);
    }
    Prepared {
        image,
        brain: brain_crop,
        crop,
        canonical_shape: shape,
        channel_stats,
        axis_map: AxisMap {
            source: [0, 1, 2],
            flip: [false; 3],
        },
    }
}

/// Voxels where any channel is nonzero.
pub fn brain_mask(image: ArrayView4<f32>) -> Array3<bool> {
    let shape = (image.shape()[1], image.shape()[2], image.shape()[3]);
    let mut mask = Array3::from_elem(shape, false);
    for channel in image.axis_iter(Axis(0)) {
        Zip::from(&mut mask)
            .and(&channel)
            .par_for_each(|m, &v| *m |= v != 0.0);
    }
    mask
}

fn masked_stats(values: ndarray::ArrayView3<f32>, mask: ndarray::ArrayView3<bool>) -> ChannelStats {
    let (mut n, mut sum) = (0usize, 0.0f64);
    Zip::from(values).and(mask).for_each(|&v, &m| {
        if m {
            n += 1;
            sum += f64::from(v);
        }
    });
    if n == 0 {
        return ChannelStats {
            mean: 0.0,
            std: 1.0,
        };
    }
    let mean = sum / n as f64;
    // a second pass keeps the variance exact for large means
    let mut m2 = 0.0f64;
    Zip::from(values).and(mask).for_each(|&v, &m| {
        if m {
            m2 += (f64::from(v) - mean).powi(2);
        }
    });
    ChannelStats {
        mean,
        std: (m2 / n as f64).sqrt(),
    }
}

/// Bounding box of the true voxels, grown by `margin` and clipped to the grid.
pub fn bounding_box(mask: &Array3<bool>, margin: usize) -> Option<CropBox> {
    let shape = mask.shape();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for ((z, y, x), &m) in mask.indexed_iter() {
        if m {
            any = true;
            for (a, v) in [z, y, x].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v + 1);
            }
        }
    }
    any.then(|| CropBox {
        start_zyx: [0, 1, 2].map(|a| lo[a].saturating_sub(margin)),
        end_zyx: [0, 1, 2].map(|a| (hi[a] + margin).min(shape[a])),
    })
}

/// Places a cropped `[z, y, x]` map back into a full grid filled with `outside`.
pub fn uncrop<T: Clone>(
    cropped: ndarray::ArrayView3<T>,
    crop: &CropBox,
    shape: [usize; 3],
    outside: T,
) -> Array3<T> {
    let mut full = Array3::from_elem(shape, outside);
    let (a, b) = (crop.start_zyx, crop.end_zyx);
    full.slice_mut(s![a[0]..b[0], a[1]..b[1], a[2]..b[2]])
        .assign(&cropped);
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_inside_mask_zero_outside() {
        let mut img = Array4::<f32>::zeros((2, 3, 4, 5));
        img[[0, 1, 1, 1]] = 10.0;
        img[[0, 1, 2, 3]] = 20.0;
        img[[1, 1, 1, 1]] = 5.0;
        let p = prepare(img.view(), true, 0);
        assert_eq!(
            p.crop,
            CropBox {
                start_zyx: [1, 1, 1],
                end_zyx: [2, 3, 4]
            }
        );
        assert_eq!(
            p.channel_stats[0],
            ChannelStats {
                mean: 15.0,
                std: 5.0
            }
        );
        assert_eq!(p.image[[0, 0, 0, 0]], -1.0);
        assert_eq!(p.image[[0, 0, 1, 2]], 1.0);
        // channel 1 is 5 at one brain voxel and 0 at the other: mean 2.5, std 2.5
        assert_eq!(p.image[[1, 0, 0, 0]], 1.0);
        assert_eq!(p.image[[1, 0, 0, 1]], 0.0); // outside the mask
        let full = uncrop(p.brain.view(), &p.crop, p.canonical_shape, false);
        assert_eq!(full, brain_mask(img.view()));
    }
}
