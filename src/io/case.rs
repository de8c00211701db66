//! A case: the input channels of one subject on one grid, in the pipeline's channel order.
//!
//! Channels come from a case folder with BraTS 2024 names (`<case>-t1n.nii.gz`, `-t1c`, `-t2w`,
//! `-t2f`; `.nii` also accepted) or one path per channel. All channels must share one grid
//! (shape and affine within 1e-3 mm at the corners).

use std::path::{Path, PathBuf};

use ndarray::{Array4, Axis};

use crate::io::nifti::{self, NiftiImage};
use crate::io::InputError;
use crate::volume::Geometry;

/// Where each channel comes from.
#[derive(Debug, Clone)]
pub enum CaseSpec {
    /// A BraTS-style case folder.
    Folder(PathBuf),
    /// One path per channel, `(channel, path)`.
    Files(Vec<(String, PathBuf)>),
}

/// One loaded case.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    pub channels: Vec<String>,
    pub paths: Vec<PathBuf>,
    /// `[c, z, y, x]` voxel values after the file's scaling.
    pub images: Array4<f32>,
    pub geometry: Geometry,
    /// Where each channel came from, in channel order.
    pub sources: Vec<Source>,
}

/// The origin of one channel, as the writers need it.
#[derive(Debug, Clone)]
pub enum Source {
    /// A NIfTI file and its header (output NIfTI maps copy the first one's geometry fields).
    Nifti(::nifti::NiftiHeader),
    /// A DICOM series.
    Dicom(DicomSource),
}

/// What derived DICOM objects (a SEG) need to reference a source series and copy its patient
/// and study. Values are the source's own strings.
#[derive(Debug, Clone, Default)]
pub struct DicomSource {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// `(SOPClassUID, SOPInstanceUID)` of the slice at each k of the input grid.
    pub instances: Vec<(String, String)>,
    /// Patient, study and equipment attributes to copy into derived objects, as
    /// `(DICOM keyword, value)`; patient identifiers are only used where the config allows it.
    pub attributes: Vec<(String, String)>,
    /// ImageOrientationPatient as written in the source, kept verbatim for derived objects.
    pub image_orientation: String,
    /// ImagePositionPatient of each slice (k order), as written in the source.
    pub image_positions: Vec<String>,
    /// PixelSpacing as written in the source.
    pub pixel_spacing: String,
}

impl Case {
    /// The NIfTI header output maps copy their geometry fields from, if the case came from NIfTI.
    pub fn nifti_header(&self) -> Option<&::nifti::NiftiHeader> {
        self.sources.iter().find_map(|s| match s {
            Source::Nifti(h) => Some(h),
            Source::Dicom(_) => None,
        })
    }
}

/// Resolves which file holds each channel.
pub fn resolve(spec: &CaseSpec, channels: &[String]) -> Result<Vec<(String, PathBuf)>, InputError> {
    match spec {
        CaseSpec::Files(files) => Ok(files.clone()),
        CaseSpec::Folder(dir) => channels
            .iter()
            .map(|c| Ok((c.clone(), find_channel(dir, c)?)))
            .collect(),
    }
}

fn find_channel(dir: &Path, channel: &str) -> Result<PathBuf, InputError> {
    let entries = std::fs::read_dir(dir).map_err(|_| InputError::NotFound {
        path: dir.to_path_buf(),
    })?;
    let suffixes = [format!("-{channel}.nii.gz"), format!("-{channel}.nii")];
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            suffixes.iter().any(|s| name.ends_with(s.as_str()))
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(InputError::MissingChannel {
            dir: dir.to_path_buf(),
            channel: channel.to_string(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(InputError::AmbiguousChannel {
            dir: dir.to_path_buf(),
            channel: channel.to_string(),
            found: found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Case id: the file name of the first channel without its `-<channel>.nii[.gz]` suffix.
pub fn case_id(first: &(String, PathBuf)) -> String {
    let name = first
        .1
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("case");
    let stem = name.trim_end_matches(".gz").trim_end_matches(".nii");
    let suffix = format!("-{}", first.0);
    stem.strip_suffix(&suffix).unwrap_or(stem).to_string()
}

/// Loads every channel and checks they share one grid. Headers are checked first, so a grid
/// mismatch or an oversized file is refused before voxels are read.
pub fn load(files: &[(String, PathBuf)], max_voxels: usize) -> Result<Case, InputError> {
    let headers: Vec<Geometry> = files
        .iter()
        .map(|(_, p)| nifti::read_header(p, max_voxels).map(|(_, g)| g))
        .collect::<Result<_, _>>()?;
    for ((channel, path), g) in files.iter().zip(&headers).skip(1) {
        check_same_grid(&headers[0], g, &files[0].1, channel, path)?;
    }
    let images: Vec<NiftiImage> = files
        .iter()
        .map(|(_, p)| nifti::read_volume(p, max_voxels))
        .collect::<Result<_, _>>()?;
    for ((channel, path), img) in files.iter().zip(&images) {
        if img.data.iter().all(|&v| v == 0.0) {
            return Err(InputError::EmptyChannel {
                path: path.clone(),
                channel: channel.clone(),
            });
        }
    }
    let views: Vec<_> = images.iter().map(|i| i.data.view()).collect();
    let stacked = ndarray::stack(Axis(0), &views).map_err(|_| InputError::Format {
        path: files[0].1.clone(),
        reason: "channels could not be stacked".to_string(),
    })?;
    Ok(Case {
        id: case_id(&files[0]),
        channels: files.iter().map(|(c, _)| c.clone()).collect(),
        paths: files.iter().map(|(_, p)| p.clone()).collect(),
        images: stacked,
        geometry: images[0].geometry.clone(),
        sources: images
            .iter()
            .map(|i| Source::Nifti(i.header.clone()))
            .collect(),
    })
}

fn check_same_grid(
    reference: &Geometry,
    g: &Geometry,
    ref_path: &Path,
    channel: &str,
    path: &Path,
) -> Result<(), InputError> {
    if reference.same_grid(g, 1e-3) {
        return Ok(());
    }
    let detail = if reference.shape_ijk != g.shape_ijk {
        format!("shape {:?} vs {:?}", g.shape_ijk, reference.shape_ijk)
    } else {
        "same shape, different affine".to_string()
    };
    Err(InputError::GridMismatch {
        path: path.to_path_buf(),
        channel: channel.to_string(),
        reference: ref_path.to_path_buf(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_id_strips_channel_suffix() {
        let f = (
            "t1n".to_string(),
            PathBuf::from("/d/BraTS-GLI-00001-000-t1n.nii.gz"),
        );
        assert_eq!(case_id(&f), "BraTS-GLI-00001-000");
        let g = ("t2f".to_string(), PathBuf::from("flair.nii"));
        assert_eq!(case_id(&g), "flair");
    }
}
