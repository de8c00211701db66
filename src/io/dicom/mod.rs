//! DICOM adapter: finds the MR image series under a folder, picks one per channel, checks that
//! its slices form one regular grid, and reads it into a `[k, j, i]` f32 volume with the same
//! `Geometry` the NIfTI adapter would give, plus the `DicomSource` derived objects (a SEG) need.
//!
//! A channel goes through four steps, one module each: `discover` finds the image series under
//! a folder (headers only), `rules` picks the channel's series, `series` checks it and sorts its
//! slices into a grid (the geometry itself, sorting along the normal, gap checks and the affine,
//! is `grid`), and `pixels` decodes its voxels. Below them, `header` turns one file's header into
//! the values these steps need, `open` opens a file with dicom-rs after `lengths` has checked its
//! element lengths, and `source` is what derived objects need of the series.
//!
//! What can go wrong is typed in `problem` (a file, a series, a channel's choice); the
//! `InputError` built from it names the folder and series (UID and description) or the file.
//! Patient name, ID, birth date and accession number are copied into `DicomSource::attributes`
//! for derived objects but never appear in messages or logs.

mod discover;
mod grid;
mod header;
mod lengths;
mod open;
mod pixels;
pub mod problem;
mod rules;
mod series;
mod source;

pub use discover::{scan, Scan, SeriesFiles};
pub use pixels::read_volume;
pub use rules::{choose, default_rule, rule_for};
pub use series::{prepare, Series};
pub use source::DicomSource;

#[cfg(test)]
use std::path::Path;

/// Writes one input of the `dicom_series` fuzz target (files separated by its separator) into
/// `dir`, as the target does.
#[cfg(test)]
pub(crate) fn write_fuzz_input(dir: &Path, input: &[u8]) {
    const SEPARATOR: &[u8] = b"\n--stochseg-fuzz-next-file--\n";
    let mut rest = input;
    for i in 0.. {
        let at = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR);
        let end = at.unwrap_or(rest.len());
        std::fs::write(dir.join(format!("{i:03}.dcm")), &rest[..end]).unwrap();
        match at {
            Some(at) => rest = &rest[at + SEPARATOR.len()..],
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `dicom_series` fuzz target (fuzz/regressions/dicom_series/panic-rle-decode):
    /// RLE Lossless pixel data whose segment offsets point outside the fragment made dicom-rs's
    /// decoder index out of bounds. The series is refused with an error, not a panic.
    #[test]
    fn a_panicking_pixel_decoder_gives_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_fuzz_input(
            dir.path(),
            include_bytes!("../../../fuzz/regressions/dicom_series/panic-rle-decode"),
        );
        let scan = scan(dir.path()).unwrap();
        let rule = default_rule("t1n");
        let files = choose(&scan, "t1n", rule.as_ref(), true).unwrap();
        let series = prepare(dir.path(), files).unwrap();
        let e = read_volume(&series, 1 << 16).unwrap_err().to_string();
        assert!(e.contains("the DICOM reader failed on this file"), "{e}");
    }
}
