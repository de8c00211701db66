//! Frame geometry of the DICOM objects written for a case: one frame (or image) per k-slice of
//! the input grid, `Rows` = shape j and `Columns` = shape i, so a frame's pixel (row r, column c)
//! is voxel (i = c, j = r, k). ImageOrientationPatient is the normalized affine column of i (the
//! row direction) then of j (the column direction), PixelSpacing is `[spacing_j, spacing_i]`
//! (between rows, between columns), and ImagePositionPatient of frame k is `affine · (0, 0, k)`,
//! all in LPS millimetres (PS3.3 C.7.6.2.1.1).
//!
//! For DICOM input the source's own strings are kept verbatim (viewers compare orientations
//! and positions with the source's), after checking that they describe the case's grid.

use crate::io::dicom::DicomSource;
use crate::vec3::{cross, dot};
use crate::volume::Geometry;

use super::values::format_ds;

/// Largest |cos| between the row and column directions accepted as orthogonal.
const MAX_IN_PLANE_COSINE: f64 = 1e-4;
/// Tolerance when checking a DICOM source's strings against the case grid.
const SOURCE_TOLERANCE_MM: f64 = 1e-2;
const SOURCE_TOLERANCE_COSINE: f64 = 1e-3;

/// DS strings describing every frame's plane.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub rows: usize,
    pub columns: usize,
    /// ImageOrientationPatient: row direction (i) then column direction (j).
    pub orientation: Vec<String>,
    /// PixelSpacing: between rows (j), between columns (i).
    pub pixel_spacing: Vec<String>,
    /// ImagePositionPatient of each k-slice, in k order.
    pub positions: Vec<Vec<String>>,
    /// Distance between adjacent planes along their normal (also written as SliceThickness).
    pub spacing_between_slices: String,
}

struct Axes {
    spacing_i: f64,
    spacing_j: f64,
    row: [f64; 3],
    column: [f64; 3],
    slice_spacing: f64,
}

fn column(g: &Geometry, c: usize) -> [f64; 3] {
    [g.affine_lps[0][c], g.affine_lps[1][c], g.affine_lps[2][c]]
}

fn axes(g: &Geometry) -> Result<Axes, String> {
    let [ni, nj, _] = g.shape_ijk;
    if ni > usize::from(u16::MAX) || nj > usize::from(u16::MAX) {
        return Err(format!(
            "a {ni} x {nj} slice exceeds the 65535 rows or columns of a DICOM image"
        ));
    }
    let [ci, cj, ck] = [0, 1, 2].map(|c| column(g, c));
    let [si, sj, sk] = g.spacing_mm();
    let valid = [si, sj, sk].iter().all(|s| s.is_finite() && *s > 0.0);
    if !valid {
        return Err(format!(
            "the grid has a zero or invalid voxel spacing {:?} mm",
            [si, sj, sk]
        ));
    }
    let row = ci.map(|v| v / si);
    let column = cj.map(|v| v / sj);
    let cosine = dot(row, column);
    if cosine.abs() > MAX_IN_PLANE_COSINE {
        return Err(format!(
            "the i and j axes of the grid are not orthogonal (cosine {cosine:.2e}); DICOM \
             ImageOrientationPatient cannot describe a sheared grid"
        ));
    }
    let normal = cross(row, column);
    let slice_spacing = dot(ck, normal).abs();
    if slice_spacing <= 1e-6 {
        return Err("the k axis of the grid lies in the i-j plane".to_string());
    }
    Ok(Axes {
        spacing_i: si,
        spacing_j: sj,
        row,
        column,
        slice_spacing,
    })
}

impl Planes {
    /// Planes computed from the grid's affine (NIfTI input).
    pub fn from_geometry(g: &Geometry) -> Result<Planes, String> {
        let a = axes(g)?;
        let [ni, nj, nk] = g.shape_ijk;
        Ok(Planes {
            rows: nj,
            columns: ni,
            orientation: a
                .row
                .iter()
                .chain(&a.column)
                .map(|&v| format_ds(v))
                .collect(),
            pixel_spacing: vec![format_ds(a.spacing_j), format_ds(a.spacing_i)],
            positions: (0..nk)
                .map(|k| {
                    g.index_to_lps_mm([0.0, 0.0, k as f64])
                        .iter()
                        .map(|&v| format_ds(v))
                        .collect()
                })
                .collect(),
            spacing_between_slices: format_ds(a.slice_spacing),
        })
    }

    /// The source series' own strings (DICOM input), checked against the grid.
    pub fn from_dicom(g: &Geometry, src: &DicomSource) -> Result<Planes, String> {
        let a = axes(g)?;
        let [ni, nj, nk] = g.shape_ijk;
        let orientation = split_ds(&src.image_orientation, 6, "ImageOrientationPatient")?;
        let pixel_spacing = split_ds(&src.pixel_spacing, 2, "PixelSpacing")?;
        if src.image_positions.len() != nk || src.instances.len() != nk {
            return Err(format!(
                "series {}: {} positions and {} instances for {nk} slices",
                src.series_instance_uid,
                src.image_positions.len(),
                src.instances.len()
            ));
        }
        let positions = src
            .image_positions
            .iter()
            .map(|p| split_ds(p, 3, "ImagePositionPatient"))
            .collect::<Result<Vec<_>, _>>()?;
        let planes = Planes {
            rows: nj,
            columns: ni,
            orientation,
            pixel_spacing,
            positions,
            spacing_between_slices: format_ds(a.slice_spacing),
        };
        planes
            .check_against(g, &a)
            .map_err(|e| format!("series {}: {e}", src.series_instance_uid))?;
        Ok(planes)
    }

    fn check_against(&self, g: &Geometry, a: &Axes) -> Result<(), String> {
        let iop = numbers(&self.orientation);
        let expected: Vec<f64> = a.row.iter().chain(&a.column).copied().collect();
        if iop
            .iter()
            .zip(&expected)
            .any(|(x, y)| (x - y).abs() > SOURCE_TOLERANCE_COSINE)
        {
            return Err(format!(
                "ImageOrientationPatient {} disagrees with the case grid {expected:?}",
                self.orientation.join("\\")
            ));
        }
        let ps = numbers(&self.pixel_spacing);
        if (ps[0] - a.spacing_j).abs() > SOURCE_TOLERANCE_MM
            || (ps[1] - a.spacing_i).abs() > SOURCE_TOLERANCE_MM
        {
            return Err(format!(
                "PixelSpacing {} disagrees with the case grid [{}, {}]",
                self.pixel_spacing.join("\\"),
                a.spacing_j,
                a.spacing_i
            ));
        }
        for (k, p) in self.positions.iter().enumerate() {
            let expected = g.index_to_lps_mm([0.0, 0.0, k as f64]);
            if numbers(p)
                .iter()
                .zip(&expected)
                .any(|(x, y)| (x - y).abs() > SOURCE_TOLERANCE_MM)
            {
                return Err(format!(
                    "ImagePositionPatient {} of slice {k} disagrees with the case grid {expected:?}",
                    p.join("\\")
                ));
            }
        }
        Ok(())
    }
}

/// Splits a multi-valued DS string into `n` trimmed values, each a valid number; a value
/// longer than DS allows (16 characters, seen in the wild) is rewritten to fit.
fn split_ds(s: &str, n: usize, name: &str) -> Result<Vec<String>, String> {
    let bad = || format!("{name} '{s}' is not {n} decimal strings");
    let values: Vec<String> = s
        .split('\\')
        .map(|v| {
            let v = v.trim();
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && v.len() <= 16 => Ok(v.to_string()),
                Ok(x) if x.is_finite() => Ok(format_ds(x)),
                _ => Err(bad()),
            }
        })
        .collect::<Result<_, _>>()?;
    if values.len() == n {
        Ok(values)
    } else {
        Err(bad())
    }
}

fn numbers(values: &[String]) -> Vec<f64> {
    values.iter().filter_map(|v| v.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        // i along (cos t, sin t, 0) * 0.9, j along (-sin t, cos t, 0) * 1.1, k along z * 2.5
        let (s, c) = 0.3f64.sin_cos();
        Geometry {
            shape_ijk: [13, 11, 3],
            affine_lps: [
                [0.9 * c, -1.1 * s, 0.0, -10.0],
                [0.9 * s, 1.1 * c, 0.0, 20.5],
                [0.0, 0.0, 2.5, -30.25],
                [0.0, 0.0, 0.0, 1.0],
            ],
        }
    }

    #[test]
    fn planes_follow_the_affine() {
        let p = Planes::from_geometry(&oblique()).unwrap();
        assert_eq!((p.rows, p.columns), (11, 13));
        assert_eq!(p.pixel_spacing, ["1.1", "0.9"]);
        assert_eq!(p.positions.len(), 3);
        assert_eq!(p.positions[2], ["-10", "20.5", "-25.25"]);
        assert_eq!(p.spacing_between_slices, "2.5");
        let iop = numbers(&p.orientation);
        let (s, c) = 0.3f64.sin_cos();
        for (x, y) in iop.iter().zip([c, s, 0.0, -s, c, 0.0]) {
            assert!((x - y).abs() < 1e-12);
        }
        assert!(p.orientation.iter().all(|v| v.len() <= 16));
    }

    #[test]
    fn sheared_grid_is_refused() {
        let mut g = oblique();
        g.affine_lps[0][1] += 0.2;
        assert!(Planes::from_geometry(&g)
            .unwrap_err()
            .contains("orthogonal"));
    }

    #[test]
    fn dicom_strings_are_kept_and_checked() {
        let g = Geometry {
            shape_ijk: [4, 3, 2],
            affine_lps: [
                [0.5, 0.0, 0.0, -1.0],
                [0.0, 0.5, 0.0, 2.0],
                [0.0, 0.0, 3.0, 7.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let mut src = DicomSource {
            image_orientation: "1.0\\0\\0\\0\\1.000000\\0 ".into(),
            pixel_spacing: "0.5\\0.5".into(),
            image_positions: vec!["-1\\2\\7".into(), "-1.0\\2.0\\10.0".into()],
            instances: vec![("c".into(), "1".into()), ("c".into(), "2".into())],
            ..Default::default()
        };
        let p = Planes::from_dicom(&g, &src).unwrap();
        assert_eq!(p.orientation[4], "1.000000");
        assert_eq!(p.positions[1], ["-1.0", "2.0", "10.0"]);
        src.pixel_spacing = "0.50000000000000001\\0.5".into();
        assert_eq!(
            Planes::from_dicom(&g, &src).unwrap().pixel_spacing,
            ["0.5", "0.5"]
        );
        src.image_positions[1] = "-1\\2\\11".into();
        assert!(Planes::from_dicom(&g, &src).is_err());
    }
}
