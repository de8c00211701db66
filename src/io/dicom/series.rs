//! Checking a series: its files must be classic single-frame grayscale images in a transfer
//! syntax this build decodes, with one orientation (ImageOrientationPatient equal within 1e-4),
//! one Rows/Columns and one PixelSpacing; then `grid` sorts the slices along the normal, checks
//! the stack and gives the affine. The result, a `Series`, holds the slices in k order and the
//! `Geometry`; no pixel data is read here.

use std::path::{Path, PathBuf};

use dicom::encoding::TransferSyntaxIndex;
use dicom::transfer_syntax::TransferSyntaxRegistry;

use super::discover::SeriesFiles;
use super::grid::{affine_lps, plane_axes, stack_slices};
use super::header::{clean, SliceHeader};
use super::problem::SeriesProblem;
use super::source::DicomSource;
use crate::io::InputError;
use crate::volume::Geometry;

/// ImageOrientationPatient components of one series may differ by at most this.
const IOP_TOLERANCE: f64 = 1e-4;
/// PixelSpacing of one series may differ by at most this (mm).
const PIXEL_SPACING_TOLERANCE_MM: f64 = 1e-4;

/// Multi-frame (enhanced) image SOP classes: MR, MR color, legacy converted MR, CT, legacy CT.
const ENHANCED_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.4.1",
    "1.2.840.10008.5.1.4.1.1.4.3",
    "1.2.840.10008.5.1.4.1.1.4.4",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.2.2",
];

/// A checked series: slices sorted along the normal, on one regular grid.
#[derive(Debug, Clone)]
pub struct Series {
    /// The folder that was searched.
    pub dir: PathBuf,
    /// The deepest folder holding all of the series' files.
    pub folder: PathBuf,
    pub uid: String,
    pub description: String,
    pub number: String,
    pub geometry: Geometry,
    pub(super) slices: Vec<SliceHeader>,
}

impl Series {
    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    /// What derived objects need to reference this series (slices in k order).
    pub fn source(&self) -> DicomSource {
        let Some(first) = self.slices.first() else {
            return DicomSource::default();
        };
        DicomSource {
            study_instance_uid: first.study_uid.clone(),
            series_instance_uid: self.uid.clone(),
            frame_of_reference_uid: first.frame_of_reference_uid.clone(),
            instances: self
                .slices
                .iter()
                .map(|s| (s.sop_class_uid.clone(), s.sop_instance_uid.clone()))
                .collect(),
            attributes: first.attributes.clone(),
            image_orientation: first.orientation_text.clone(),
            image_positions: self
                .slices
                .iter()
                .map(|s| s.position_text.clone())
                .collect(),
            pixel_spacing: first.pixel_spacing_text.clone(),
        }
    }

    /// The input error for `problem` with this series.
    pub(super) fn problem(&self, problem: impl Into<SeriesProblem>) -> InputError {
        InputError::DicomSeries {
            dir: self.dir.clone(),
            uid: self.uid.clone(),
            description: self.description.clone(),
            problem: Box::new(problem.into()),
        }
    }
}

/// Checks a series (one orientation, size and spacing; a regular stack; decodable pixels) and
/// sorts its slices along the normal. No pixel data is read.
pub fn prepare(scan_dir: &Path, files: &SeriesFiles) -> Result<Series, InputError> {
    let mut series = Series {
        dir: scan_dir.to_path_buf(),
        folder: common_folder(files.slices.iter().map(|s| s.path.as_path())),
        uid: files.uid.clone(),
        description: files.description.clone(),
        number: files.number.clone(),
        geometry: Geometry {
            shape_ijk: [0; 3],
            affine_lps: [[0.0; 4]; 4],
        },
        slices: files.slices.clone(),
    };
    check_kind(&series)?;
    check_transfer_syntaxes(&series)?;
    let Some(first) = series.slices.first() else {
        return Err(series.problem(SeriesProblem::NoImageFiles));
    };
    let missing = |s: &SliceHeader, keyword| {
        series.problem(SeriesProblem::Missing {
            file: s.name(),
            keyword,
        })
    };
    let orientation = first
        .orientation
        .ok_or_else(|| missing(first, "ImageOrientationPatient"))?;
    let pixel_spacing = first
        .pixel_spacing
        .ok_or_else(|| missing(first, "PixelSpacing"))?;
    check_uniform(&series, orientation, pixel_spacing)?;
    let [row, col, normal] = plane_axes(orientation).map_err(|p| series.problem(p))?;
    let positions: Vec<[f64; 3]> = series
        .slices
        .iter()
        .map(|s| s.position.ok_or_else(|| missing(s, "ImagePositionPatient")))
        .collect::<Result<_, _>>()?;
    let single = first.spacing_between_slices.or(first.slice_thickness);
    let shape_ij = [first.columns as usize, first.rows as usize];
    let names: Vec<String> = series.slices.iter().map(SliceHeader::name).collect();
    let stack = stack_slices(normal, &positions, &names, single).map_err(|p| series.problem(p))?;
    series.slices = stack
        .order
        .iter()
        .map(|&i| series.slices[i].clone())
        .collect();
    let origin = positions[stack.order[0]];
    series.geometry = Geometry {
        shape_ijk: [shape_ij[0], shape_ij[1], series.slices.len()],
        affine_lps: affine_lps(row, col, normal, pixel_spacing, stack.spacing_mm, origin),
    };
    Ok(series)
}

fn check_kind(series: &Series) -> Result<(), InputError> {
    for s in &series.slices {
        if ENHANCED_CLASSES.contains(&s.sop_class_uid.as_str()) || s.frames > 1 {
            return Err(series.problem(SeriesProblem::MultiFrame { file: s.name() }));
        }
        if s.samples_per_pixel != 1 || !s.photometric.starts_with("MONOCHROME") {
            return Err(series.problem(SeriesProblem::NotGrayscale {
                file: s.name(),
                photometric: clean(&s.photometric),
                samples: s.samples_per_pixel,
            }));
        }
        if let Err(problem) = &s.rescale {
            return Err(series.problem(SeriesProblem::Rescale {
                file: s.name(),
                problem: problem.clone(),
            }));
        }
    }
    Ok(())
}

fn check_transfer_syntaxes(series: &Series) -> Result<(), InputError> {
    let mut seen: Vec<&str> = Vec::new();
    for s in &series.slices {
        let uid = s.transfer_syntax.as_str();
        if seen.contains(&uid) {
            continue;
        }
        seen.push(uid);
        let name = match TransferSyntaxRegistry.get(uid) {
            Some(ts) if ts.can_decode_all() => continue,
            Some(ts) => ts.name().to_string(),
            None => "unknown transfer syntax".to_string(),
        };
        return Err(InputError::UnsupportedTransferSyntax {
            path: s.path.clone(),
            uid: clean(uid),
            name,
        });
    }
    Ok(())
}

fn check_uniform(
    series: &Series,
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
) -> Result<(), InputError> {
    let first = &series.slices[0];
    if first.rows == 0 || first.columns == 0 {
        return Err(series.problem(SeriesProblem::NoPixels { file: first.name() }));
    }
    for s in &series.slices[1..] {
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(series.problem(SeriesProblem::MixedSizes {
                first: [first.rows, first.columns],
                first_file: first.name(),
                found: [s.rows, s.columns],
                file: s.name(),
            }));
        }
        let same_spacing = s.pixel_spacing.is_some_and(|p| {
            (0..2).all(|a| (p[a] - pixel_spacing[a]).abs() <= PIXEL_SPACING_TOLERANCE_MM)
        });
        if !same_spacing {
            return Err(series.problem(SeriesProblem::MixedPixelSpacing {
                first: clean(&first.pixel_spacing_text),
                first_file: first.name(),
                found: clean(&s.pixel_spacing_text),
                file: s.name(),
            }));
        }
        let same_orientation = s
            .orientation
            .is_some_and(|o| (0..6).all(|a| (o[a] - orientation[a]).abs() <= IOP_TOLERANCE));
        if !same_orientation {
            return Err(series.problem(SeriesProblem::MixedOrientations {
                first: clean(&first.orientation_text),
                first_file: first.name(),
                found: clean(&s.orientation_text),
                file: s.name(),
            }));
        }
    }
    if pixel_spacing.iter().any(|&p| p <= 0.0) {
        return Err(series.problem(SeriesProblem::PixelSpacing {
            pixel_spacing: clean(&first.pixel_spacing_text),
        }));
    }
    Ok(())
}

fn common_folder<'a>(paths: impl Iterator<Item = &'a Path>) -> PathBuf {
    let parents: Vec<&Path> = paths.filter_map(Path::parent).collect();
    let Some(mut common) = parents.first().map(|p| p.to_path_buf()) else {
        return PathBuf::new();
    };
    while !parents.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    common
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_folder_holds_every_file() {
        let paths = [Path::new("/a/b/c/1.dcm"), Path::new("/a/b/d/2.dcm")];
        assert_eq!(common_folder(paths.into_iter()), PathBuf::from("/a/b"));
    }
}
