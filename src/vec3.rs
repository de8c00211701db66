//! Vectors of three f64: patient coordinates in millimetres or directions, in whatever frame the
//! caller uses (LPS throughout the library). The dot and cross products and the Euclidean norm,
//! written once for the DICOM grid (`io::dicom`) and the SEG's planes (`seg::plane`).

/// `a . b`.
pub fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// `a x b` (right-handed).
pub fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Euclidean length `|a|`.
pub fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_the_unit_axes() {
        let (x, y, z) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]);
        assert_eq!(cross(x, y), z);
        assert_eq!(cross(y, z), x);
        assert_eq!(cross(z, x), y);
        assert_eq!(dot(x, y), 0.0);
        assert_eq!(dot([1.0, 2.0, 3.0], [4.0, -5.0, 6.0]), 12.0);
        assert_eq!(norm([3.0, 4.0, 12.0]), 13.0);
        // a x b is orthogonal to both
        let (a, b) = ([0.3, -1.2, 2.0], [1.5, 0.25, -0.75]);
        let c = cross(a, b);
        assert!(dot(a, c).abs() < 1e-12 && dot(b, c).abs() < 1e-12);
    }
}
