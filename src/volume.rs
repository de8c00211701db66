//! Volumes and their geometry.
//!
//! A `Geometry` maps voxel indices of a grid to patient coordinates in millimetres, in the DICOM
//! patient frame LPS (x to the patient's left, y to posterior, z to superior). NIfTI stores RAS;
//! the NIfTI adapter converts at the edge. Voxel indices are `(i, j, k)` as in NIfTI (i = first
//! array axis), and arrays in memory are `[z, y, x] = [k, j, i]` (channels first for 4-D), so `i`
//! is the fastest-varying axis in both the file and memory.
//!
//! Reorientation to the model's canonical orientation is an exact permutation and flip of array
//! axes (no resampling): `AxisMap` describes it and maps results back onto the input grid.

use ndarray::{Array3, ArrayView3, ArrayView4, Axis};

/// Voxel-to-patient geometry of a 3-D grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Grid size along (i, j, k).
    pub shape_ijk: [usize; 3],
    /// Homogeneous affine mapping (i, j, k, 1) to LPS millimetres.
    pub affine_lps: [[f64; 4]; 4],
}

impl Geometry {
    /// Array shape `[z, y, x]` of a volume on this grid.
    pub fn shape_zyx(&self) -> [usize; 3] {
        [self.shape_ijk[2], self.shape_ijk[1], self.shape_ijk[0]]
    }

    pub fn voxel_count(&self) -> usize {
        self.shape_ijk.iter().product()
    }

    /// Patient (LPS, mm) position of a continuous voxel index `(i, j, k)`.
    pub fn index_to_lps_mm(&self, ijk: [f64; 3]) -> [f64; 3] {
        let a = &self.affine_lps;
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3];
        }
        out
    }

    /// Length of each voxel edge along (i, j, k) in millimetres.
    pub fn spacing_mm(&self) -> [f64; 3] {
        let a = &self.affine_lps;
        [0, 1, 2].map(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt())
    }

    pub fn voxel_volume_mm3(&self) -> f64 {
        let a = &self.affine_lps;
        let m = [
            [a[0][0], a[0][1], a[0][2]],
            [a[1][0], a[1][1], a[1][2]],
            [a[2][0], a[2][1], a[2][2]],
        ];
        det3(&m).abs()
    }

    /// Orientation codes of the array axes (i, j, k), as nibabel's `aff2axcodes` names them:
    /// the patient direction each axis points to, e.g. `['L', 'P', 'S']` for BraTS arrays.
    pub fn axis_codes(&self) -> [char; 3] {
        let perm = dominant_world_axes(&self.affine_lps);
        let mut codes = ['?'; 3];
        for (axis, code) in codes.iter_mut().enumerate() {
            let world = perm[axis];
            let positive = self.affine_lps[world][axis] > 0.0;
            *code = match (world, positive) {
                (0, true) => 'L',
                (0, false) => 'R',
                (1, true) => 'P',
                (1, false) => 'A',
                (_, true) => 'S',
                (_, false) => 'I',
            };
        }
        codes
    }

    /// Same geometry described in NIfTI's RAS frame.
    pub fn affine_ras(&self) -> [[f64; 4]; 4] {
        flip_xy(self.affine_lps)
    }

    /// True when two grids have the same shape and affines that agree within `tol_mm` at the
    /// grid's corners.
    pub fn same_grid(&self, other: &Geometry, tol_mm: f64) -> bool {
        if self.shape_ijk != other.shape_ijk {
            return false;
        }
        let n = self.shape_ijk.map(|s| s.saturating_sub(1) as f64);
        let corners = [
            [0.0, 0.0, 0.0],
            [n[0], 0.0, 0.0],
            [0.0, n[1], 0.0],
            [0.0, 0.0, n[2]],
        ];
        corners.iter().all(|&c| {
            let (p, q) = (self.index_to_lps_mm(c), other.index_to_lps_mm(c));
            (0..3).all(|r| (p[r] - q[r]).abs() <= tol_mm)
        })
    }
}

/// Converts an affine between RAS and LPS (negates the x and y rows; its own inverse).
pub fn flip_xy(mut affine: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    for row in affine.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v + 0.0;
        }
    }
    affine
}

fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// For each array axis, the world axis it runs closest to; a permutation (no two array axes
/// share a world axis), chosen to maximise the summed alignment as nibabel's `io_orientation`.
fn dominant_world_axes(a: &[[f64; 4]; 4]) -> [usize; 3] {
    const PERMS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let norm = |c: usize| {
        (0..3)
            .map(|r| a[r][c] * a[r][c])
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE)
    };
    let score = |p: &[usize; 3]| (0..3).map(|c| a[p[c]][c].abs() / norm(c)).sum::<f64>();
    let mut best = PERMS[0];
    for p in PERMS.iter().skip(1) {
        if score(p) > score(&best) {
            best = *p;
        }
    }
    best
}

/// How the axes of an input grid map onto a canonical orientation: canonical NIfTI axis `c`
/// (0 = i) is input axis `source[c]`, reversed when `flip[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisMap {
    pub source: [usize; 3],
    pub flip: [bool; 3],
}

impl AxisMap {
    /// The map that brings a grid with `from` axis codes to `to` axis codes (e.g. "LPS").
    /// Returns `None` when `to` is not a valid set of three orthogonal directions.
    pub fn between(from: [char; 3], to: [char; 3]) -> Option<AxisMap> {
        let mut source = [0; 3];
        let mut flip = [false; 3];
        for c in 0..3 {
            let (axis, reversed) =
                (0..3).find_map(|a| match_code(from[a], to[c]).map(|r| (a, r)))?;
            source[c] = axis;
            flip[c] = reversed;
        }
        let mut seen = source;
        seen.sort_unstable();
        (seen == [0, 1, 2]).then_some(AxisMap { source, flip })
    }

    /// The map that brings a grid with `geometry` to the orientation `to`. Both are three
    /// orthogonal directions (a geometry's `axis_codes` picks one world axis per array axis),
    /// so the map always exists.
    pub fn towards(geometry: &Geometry, to: AxisCodes) -> AxisMap {
        AxisMap::between(geometry.axis_codes(), to.codes())
            .expect("two sets of orthogonal axis codes always map onto each other")
    }

    pub fn is_identity(&self) -> bool {
        self.source == [0, 1, 2] && self.flip == [false; 3]
    }

    /// View of a `[z, y, x]` volume in canonical orientation.
    pub fn to_canonical<'a, T>(&self, v: ArrayView3<'a, T>) -> ArrayView3<'a, T> {
        // array axis of NIfTI axis a is 2 - a
        let mut v = v.permuted_axes([2 - self.source[2], 2 - self.source[1], 2 - self.source[0]]);
        for c in 0..3 {
            if self.flip[c] {
                v.invert_axis(Axis(2 - c));
            }
        }
        v
    }

    /// View of a `[c, z, y, x]` volume in canonical orientation.
    pub fn to_canonical4<'a, T>(&self, v: ArrayView4<'a, T>) -> ArrayView4<'a, T> {
        let mut v = v.permuted_axes([
            0,
            3 - self.source[2],
            3 - self.source[1],
            3 - self.source[0],
        ]);
        for c in 0..3 {
            if self.flip[c] {
                v.invert_axis(Axis(3 - c));
            }
        }
        v
    }

    /// Bring a canonical `[z, y, x]` volume back onto the input grid (owned, standard layout).
    pub fn to_input<T: Clone>(&self, v: Array3<T>) -> Array3<T> {
        if self.is_identity() {
            return v;
        }
        let mut v = v;
        for c in 0..3 {
            if self.flip[c] {
                v.invert_axis(Axis(2 - c));
            }
        }
        // canonical array axis (2 - c) holds input NIfTI axis source[c]; put input axes in order
        let mut order = [0; 3];
        for c in 0..3 {
            order[2 - self.source[c]] = 2 - c;
        }
        v.permuted_axes(order).as_standard_layout().into_owned()
    }
}

fn match_code(from: char, to: char) -> Option<bool> {
    let opposite = |c: char| match c {
        'L' => 'R',
        'R' => 'L',
        'P' => 'A',
        'A' => 'P',
        'S' => 'I',
        'I' => 'S',
        _ => '?',
    };
    if from == to {
        Some(false)
    } else if opposite(from) == to {
        Some(true)
    } else {
        None
    }
}

/// Parse an orientation string such as "LPS" or "RAS" into axis codes.
pub fn parse_axis_codes(s: &str) -> Option<[char; 3]> {
    let chars: Vec<char> = s.trim().to_ascii_uppercase().chars().collect();
    let codes: [char; 3] = chars.try_into().ok()?;
    AxisMap::between(codes, codes).map(|_| codes)
}

/// Three orthogonal directions in nibabel's axis codes (the direction each array axis points
/// to, e.g. `LPS`), parsed once where they are read (config `orientation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AxisCodes([char; 3]);

impl AxisCodes {
    pub const LPS: AxisCodes = AxisCodes(['L', 'P', 'S']);

    pub fn codes(self) -> [char; 3] {
        self.0
    }
}

impl TryFrom<String> for AxisCodes {
    type Error = String;
    fn try_from(s: String) -> Result<AxisCodes, String> {
        parse_axis_codes(&s).map(AxisCodes).ok_or_else(|| {
            format!("/orientation: '{s}' is not three orthogonal directions (e.g. LPS, RAS)")
        })
    }
}

impl From<AxisCodes> for String {
    fn from(a: AxisCodes) -> String {
        a.0.iter().collect()
    }
}

impl std::fmt::Display for AxisCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.0[0], self.0[1], self.0[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn geom(affine: [[f64; 4]; 4]) -> Geometry {
        Geometry {
            shape_ijk: [4, 3, 2],
            affine_lps: affine,
        }
    }

    #[test]
    fn brats_affine_is_lps() {
        // BraTS RAS affine diag(-1,-1,1) is LPS identity
        let g = geom([
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 239.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        assert_eq!(g.axis_codes(), ['L', 'P', 'S']);
    }

    #[test]
    fn permuted_axes_get_codes() {
        // i -> anterior (LPS -y), j -> superior, k -> right (LPS -x)
        let g = geom([
            [0.0, 0.0, -2.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]);
        assert_eq!(g.axis_codes(), ['A', 'S', 'R']);
        assert_eq!(g.spacing_mm(), [1.0, 3.0, 2.0]);
        assert_eq!(g.voxel_volume_mm3(), 6.0);
    }

    #[test]
    fn round_trip_through_canonical() {
        let from = ['A', 'S', 'R'];
        let map = AxisMap::between(from, ['L', 'P', 'S']).unwrap();
        let v = Array3::from_shape_fn((2, 3, 4), |(z, y, x)| (z * 100 + y * 10 + x) as i32);
        let canon = map.to_canonical(v.view()).to_owned();
        // canonical i (L) = input k reversed (R), j (P) = input i reversed (A), k (S) = input j
        assert_eq!(canon.shape(), &[3, 4, 2]);
        assert_eq!(canon[[0, 0, 0]], v[[1, 0, 3]]);
        assert_eq!(map.to_input(canon), v);
    }

    #[test]
    fn identity_map() {
        let map = AxisMap::between(['L', 'P', 'S'], ['L', 'P', 'S']).unwrap();
        assert!(map.is_identity());
        assert!(parse_axis_codes("lps").is_some());
        assert!(parse_axis_codes("LLS").is_none());
    }
}
