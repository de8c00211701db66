//! The grid of a series, from its slices' positions: slices are sorted by their position along
//! the slice normal, `IPP . (row x column)` (never by InstanceNumber, SliceLocation or file
//! name), and must form one regular stack: no two slices at one position (closer than 0.01 mm),
//! no missing slice (a gap over 1.5x the median gap), uniform spacing (every gap within 1% of the
//! median) and slices stacked along the normal (no gantry tilt or shear: each slice within 1% of
//! the spacing of where the normal puts it). A single slice takes its spacing from
//! SpacingBetweenSlices, else SliceThickness.
//!
//! Voxel `(i, j, k)` is column `i`, row `j` of the `k`-th slice in that order; the LPS affine's
//! columns are the row cosine times the column spacing (PixelSpacing[1]), the column cosine
//! times the row spacing (PixelSpacing[0]) and the unit normal times the slice spacing (first to
//! last position over `n - 1`), and its origin is the first slice's ImagePositionPatient. DICOM
//! patient coordinates are already LPS, so no flip is needed; a case written as NIfTI and as
//! DICOM gives the same `Geometry`.

use crate::stats;
use crate::vec3::{cross, dot, norm};

/// Two slices closer than this along the normal are at the same position (mm).
const DUPLICATE_MM: f64 = 0.01;
/// A gap larger than this times the median gap means a slice is missing.
const MISSING_FACTOR: f64 = 1.5;
/// Each gap must be within this fraction of the median gap.
const SPACING_TOLERANCE: f64 = 0.01;

/// An ImageOrientationPatient that is not two orthogonal unit vectors (within 1e-3).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("ImageOrientationPatient {iop:?} is not two orthogonal unit vectors")]
pub struct OrientationProblem {
    pub iop: [f64; 6],
}

/// Unit row cosine, column cosine and slice normal (row x column) from ImageOrientationPatient.
pub(super) fn plane_axes(iop: [f64; 6]) -> Result<[[f64; 3]; 3], OrientationProblem> {
    let row = [iop[0], iop[1], iop[2]];
    let col = [iop[3], iop[4], iop[5]];
    let (nr, nc) = (norm(row), norm(col));
    if (nr - 1.0).abs() > 1e-3 || (nc - 1.0).abs() > 1e-3 || dot(row, col).abs() > 1e-3 {
        return Err(OrientationProblem { iop });
    }
    let row = row.map(|v| v / nr);
    let col = col.map(|v| v / nc);
    let n = cross(row, col);
    let nn = norm(n);
    Ok([row, col, n.map(|v| v / nn)])
}

/// The sorted stack: `order[k]` is the input index of slice `k`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stack {
    pub(super) order: Vec<usize>,
    pub(super) spacing_mm: f64,
}

/// Why slices do not form a regular stack. Positions are in mm along the normal; slices are
/// named by their file names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StackProblem {
    #[error("duplicate slice position: {first} and {second} both at {position_mm:.3} mm along the slice normal")]
    Duplicate {
        position_mm: f64,
        first: String,
        second: String,
    },
    #[error("slice missing between {from_mm:.3} and {to_mm:.3} mm along the slice normal (spacing {spacing_mm:.3} mm){}", more_gaps(*more))]
    Missing {
        from_mm: f64,
        to_mm: f64,
        spacing_mm: f64,
        /// Further gaps as large.
        more: usize,
    },
    #[error("slice spacing is not uniform: gap of {gap_mm:.4} mm between {from_mm:.3} and {to_mm:.3} mm along the slice normal, median spacing {spacing_mm:.4} mm (tolerance {:.0}%)", SPACING_TOLERANCE * 100.0)]
    Uneven {
        from_mm: f64,
        to_mm: f64,
        gap_mm: f64,
        spacing_mm: f64,
    },
    #[error("slices are not stacked along the slice normal: {slice} is {offset_mm:.3} mm off it in-plane (gantry tilt or shear; resample the series first)")]
    Sheared { slice: String, offset_mm: f64 },
    #[error("a single slice without SpacingBetweenSlices or SliceThickness")]
    SingleSlice,
}

fn more_gaps(more: usize) -> String {
    if more > 0 {
        format!(" and {more} more gaps")
    } else {
        String::new()
    }
}

/// Sorts slices by position along `normal` and checks they form a regular stack; `names` (the
/// slices' file names, in input order) only name slices in a `StackProblem`.
pub(super) fn stack_slices(
    normal: [f64; 3],
    positions: &[[f64; 3]],
    names: &[String],
    single_spacing_mm: Option<f64>,
) -> Result<Stack, StackProblem> {
    let name = |i: usize| names.get(i).cloned().unwrap_or_default();
    let along: Vec<f64> = positions.iter().map(|&p| dot(p, normal)).collect();
    let mut order: Vec<usize> = (0..positions.len()).collect();
    order.sort_by(|&a, &b| along[a].total_cmp(&along[b]));
    let sorted: Vec<f64> = order.iter().map(|&i| along[i]).collect();
    let gaps: Vec<f64> = sorted.windows(2).map(|w| w[1] - w[0]).collect();
    let Some(median) = stats::median(&gaps) else {
        // fewer than two slices: no gap gives the spacing
        return match single_spacing_mm.filter(|s| *s > 0.0 && s.is_finite()) {
            Some(spacing_mm) => Ok(Stack { order, spacing_mm }),
            None => Err(StackProblem::SingleSlice),
        };
    };
    if let Some(k) = gaps.iter().position(|&g| g < DUPLICATE_MM) {
        return Err(StackProblem::Duplicate {
            position_mm: sorted[k],
            first: name(order[k]),
            second: name(order[k + 1]),
        });
    }
    check_gaps(&sorted, &gaps, median)?;
    let spacing_mm = (sorted[sorted.len() - 1] - sorted[0]) / (sorted.len() - 1) as f64;
    let p0 = positions[order[0]];
    for &i in &order {
        let d = along[i] - sorted[0];
        let expected = [0, 1, 2].map(|a| p0[a] + normal[a] * d);
        let offset_mm = norm([0, 1, 2].map(|a| positions[i][a] - expected[a]));
        if offset_mm > SPACING_TOLERANCE * spacing_mm + 1e-3 {
            return Err(StackProblem::Sheared {
                slice: name(i),
                offset_mm,
            });
        }
    }
    Ok(Stack { order, spacing_mm })
}

/// No gap between sorted positions over `MISSING_FACTOR` times the median, and every gap within
/// `SPACING_TOLERANCE` of it.
fn check_gaps(sorted: &[f64], gaps: &[f64], median: f64) -> Result<(), StackProblem> {
    let missing: Vec<usize> = (0..gaps.len())
        .filter(|&k| gaps[k] > MISSING_FACTOR * median)
        .collect();
    if let Some(&k) = missing.first() {
        return Err(StackProblem::Missing {
            from_mm: sorted[k],
            to_mm: sorted[k + 1],
            spacing_mm: median,
            more: missing.len() - 1,
        });
    }
    let worst = (0..gaps.len())
        .max_by(|&a, &b| {
            (gaps[a] - median)
                .abs()
                .total_cmp(&(gaps[b] - median).abs())
        })
        .unwrap_or(0);
    if (gaps[worst] - median).abs() > SPACING_TOLERANCE * median {
        return Err(StackProblem::Uneven {
            from_mm: sorted[worst],
            to_mm: sorted[worst + 1],
            gap_mm: gaps[worst],
            spacing_mm: median,
        });
    }
    Ok(())
}

/// Voxel `(i, j, k)` to LPS: columns row * PixelSpacing[1], column * PixelSpacing[0],
/// normal * slice spacing; origin at the first slice's position.
pub(super) fn affine_lps(
    row: [f64; 3],
    col: [f64; 3],
    normal: [f64; 3],
    pixel_spacing: [f64; 2],
    slice_spacing_mm: f64,
    origin: [f64; 3],
) -> [[f64; 4]; 4] {
    let axes = [
        row.map(|v| v * pixel_spacing[1]),
        col.map(|v| v * pixel_spacing[0]),
        normal.map(|v| v * slice_spacing_mm),
    ];
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r] = [axes[0][r], axes[1][r], axes[2][r], origin[r]];
    }
    a[3][3] = 1.0;
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Geometry;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    /// `f0.dcm`, `f1.dcm`, ...: the file names of `n` slices.
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i}.dcm")).collect()
    }

    #[test]
    fn sorts_by_position_along_the_normal() {
        // axial, z = 10, 12, ..., shuffled
        let [_, _, n] = plane_axes(AXIAL).unwrap();
        let z = [14.0, 10.0, 18.0, 12.0, 16.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [-5.0, 3.0, z]).collect();
        let stack = stack_slices(n, &positions, &names(positions.len()), None).unwrap();
        assert_eq!(stack.order, vec![1, 3, 0, 4, 2]);
        assert!(close(stack.spacing_mm, 2.0));
    }

    #[test]
    fn a_flipped_column_cosine_reverses_the_stack() {
        // column cosine -y: normal is -z, so k runs from superior to inferior
        let [row, col, n] = plane_axes([1.0, 0.0, 0.0, 0.0, -1.0, 0.0]).unwrap();
        assert_eq!(n, [0.0, 0.0, -1.0]);
        let positions: Vec<[f64; 3]> = (0..4).map(|k| [0.0, 0.0, k as f64 * 1.5]).collect();
        let stack = stack_slices(n, &positions, &names(positions.len()), None).unwrap();
        assert_eq!(stack.order, vec![3, 2, 1, 0]);
        let a = affine_lps(row, col, n, [0.5, 0.8], stack.spacing_mm, positions[3]);
        // k = 3 lands on the slice at z = 0
        assert!(close(a[2][2] * 3.0 + a[2][3], 0.0));
        assert!(close(a[0][0], 0.8) && close(a[1][1], -0.5) && close(a[2][2], -1.5));
    }

    #[test]
    fn affine_matches_positions_for_an_oblique_stack() {
        // rotate 30 degrees about x: row = x, column = (0, cos, sin)
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let iop = [1.0, 0.0, 0.0, 0.0, c, s];
        let [row, col, n] = plane_axes(iop).unwrap();
        let origin = [-40.0, 20.0, 5.0];
        let positions: Vec<[f64; 3]> = [2, 0, 1, 3]
            .iter()
            .map(|&k| [0, 1, 2].map(|a| origin[a] + n[a] * 3.0 * k as f64))
            .collect();
        let stack = stack_slices(n, &positions, &names(positions.len()), None).unwrap();
        assert_eq!(stack.order, vec![1, 2, 0, 3]);
        let a = affine_lps(row, col, n, [0.9, 1.1], stack.spacing_mm, positions[1]);
        let g = Geometry {
            shape_ijk: [4, 4, 4],
            affine_lps: a,
        };
        for k in 0..4 {
            let p = g.index_to_lps_mm([0.0, 0.0, k as f64]);
            let q = positions[stack.order[k]];
            assert!((0..3).all(|r| (p[r] - q[r]).abs() < 1e-9), "{p:?} {q:?}");
        }
        // one column step moves along the row cosine by PixelSpacing[1]
        let p = g.index_to_lps_mm([1.0, 0.0, 0.0]);
        assert!(close(p[0] - origin[0], 1.1));
        let p = g.index_to_lps_mm([0.0, 1.0, 0.0]);
        assert!(close(p[1] - origin[1], 0.9 * c) && close(p[2] - origin[2], 0.9 * s));
        assert!(close(g.spacing_mm()[2], 3.0));
    }

    #[test]
    fn duplicate_positions_are_refused() {
        let positions = [
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 2.0],
        ];
        let e =
            stack_slices([0.0, 0.0, 1.0], &positions, &names(positions.len()), None).unwrap_err();
        assert!(
            matches!(
                e,
                StackProblem::Duplicate {
                    ref first,
                    ref second,
                    ..
                } if first == "f1.dcm" && second == "f2.dcm"
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("f1.dcm and f2.dcm") && msg.contains("1.000 mm"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_slice_is_found() {
        let z = [12.0, 13.5, 10.5, 9.0, 16.5, 18.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        let e =
            stack_slices([0.0, 0.0, 1.0], &positions, &names(positions.len()), None).unwrap_err();
        assert_eq!(
            e,
            StackProblem::Missing {
                from_mm: 13.5,
                to_mm: 16.5,
                spacing_mm: 1.5,
                more: 0
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("between 13.500 and 16.500 mm") && msg.contains("spacing 1.500 mm"),
            "{msg}"
        );
    }

    #[test]
    fn uneven_spacing_reports_the_gap() {
        let z = [0.0, 1.0, 2.0, 3.05, 4.05];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        let e =
            stack_slices([0.0, 0.0, 1.0], &positions, &names(positions.len()), None).unwrap_err();
        match e {
            StackProblem::Uneven {
                gap_mm, spacing_mm, ..
            } => {
                assert!((gap_mm - 1.05).abs() < 1e-9 && close(spacing_mm, 1.0))
            }
            other => panic!("{other:?}"),
        }
        // within 1% passes
        let z = [0.0, 1.0, 2.0, 3.005, 4.0];
        let positions: Vec<[f64; 3]> = z.iter().map(|&z| [0.0, 0.0, z]).collect();
        assert!(stack_slices([0.0, 0.0, 1.0], &positions, &names(positions.len()), None).is_ok());
    }

    #[test]
    fn sheared_stacks_are_refused() {
        // gantry tilt: each slice shifted 0.2 mm in y per mm in z
        let positions: Vec<[f64; 3]> = (0..5).map(|k| [0.0, 0.2 * k as f64, k as f64]).collect();
        let e =
            stack_slices([0.0, 0.0, 1.0], &positions, &names(positions.len()), None).unwrap_err();
        assert!(
            matches!(e, StackProblem::Sheared { ref slice, .. } if slice == "f1.dcm"),
            "{e:?}"
        );
    }

    #[test]
    fn a_single_slice_needs_a_thickness() {
        let p = [[1.0, 2.0, 3.0]];
        assert_eq!(
            stack_slices([0.0, 0.0, 1.0], &p, &names(p.len()), None).unwrap_err(),
            StackProblem::SingleSlice
        );
        assert!(close(
            stack_slices([0.0, 0.0, 1.0], &p, &names(p.len()), Some(2.5))
                .unwrap()
                .spacing_mm,
            2.5
        ));
    }

    #[test]
    fn bad_orientations_are_refused() {
        assert!(plane_axes([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).is_err());
        assert!(plane_axes([2.0, 0.0, 0.0, 0.0, 1.0, 0.0]).is_err());
        assert!(plane_axes([0.0; 6]).is_err());
    }
}
