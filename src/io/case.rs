//! A case: the input channels of one subject on one grid, in the pipeline's channel order.
//!
//! Channels come from a case folder with BraTS 2024 names (`<case>-t1n.nii.gz`, `-t1c`, `-t2w`,
//! `-t2f`; `.nii` also accepted) or one path per channel. A channel path that is a folder is a
//! DICOM series (`io::dicom`; the folder's series chosen by the config's `dicom.series` rules
//! when it holds several); a case folder without NIfTI files is searched for one DICOM series per
//! channel by those rules. NIfTI and DICOM channels can be mixed. All channels must share one
//! grid (shape and affine within 1e-3 mm at the corners).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4, Axis};

use crate::io::dicom::problem::ChoiceProblem;
use crate::io::dicom::{self, DicomSource, Series};
use crate::io::nifti;
use crate::io::InputError;
use crate::pipeline::DicomInput;
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

impl Case {
    /// The NIfTI header output maps copy their geometry fields from, if the case came from NIfTI.
    pub fn nifti_header(&self) -> Option<&::nifti::NiftiHeader> {
        self.sources.iter().find_map(|s| match s {
            Source::Nifti(h) => Some(h),
            Source::Dicom(_) => None,
        })
    }
}

/// How one channel is read.
#[derive(Debug, Clone)]
pub enum ChannelInput {
    /// The NIfTI file at the channel's path.
    Nifti,
    /// A checked DICOM series (headers read and sorted; pixels not yet read).
    Dicom(Box<Series>),
}

/// One channel's input, resolved.
#[derive(Debug, Clone)]
pub struct ChannelFile {
    pub channel: String,
    /// The NIfTI file, or the folder holding the DICOM series.
    pub path: PathBuf,
    pub input: ChannelInput,
}

/// Resolves what holds each channel; DICOM series are found, chosen and checked here (headers
/// only).
pub fn resolve(
    spec: &CaseSpec,
    channels: &[String],
    dicom_config: &DicomInput,
) -> Result<Vec<ChannelFile>, InputError> {
    let mut scans: BTreeMap<PathBuf, dicom::Scan> = BTreeMap::new();
    let mut out = Vec::new();
    match spec {
        CaseSpec::Files(files) => {
            for (channel, path) in files {
                if path.is_dir() {
                    out.push(dicom_channel(
                        &mut scans,
                        path,
                        channel,
                        dicom_config,
                        true,
                    )?);
                } else {
                    out.push(ChannelFile {
                        channel: channel.clone(),
                        path: path.clone(),
                        input: ChannelInput::Nifti,
                    });
                }
            }
        }
        CaseSpec::Folder(dir) if !has_nifti(dir)? => {
            for channel in channels {
                out.push(dicom_channel(
                    &mut scans,
                    dir,
                    channel,
                    dicom_config,
                    false,
                )?);
            }
        }
        CaseSpec::Folder(dir) => {
            for channel in channels {
                out.push(ChannelFile {
                    channel: channel.clone(),
                    path: find_channel(dir, channel)?,
                    input: ChannelInput::Nifti,
                });
            }
        }
    }
    check_distinct_series(&out)?;
    Ok(out)
}

/// True when `dir` holds a NIfTI file (top level only).
fn has_nifti(dir: &Path) -> Result<bool, InputError> {
    let entries = std::fs::read_dir(dir).map_err(|_| InputError::NotFound {
        path: dir.to_path_buf(),
    })?;
    Ok(entries.filter_map(|e| e.ok()).any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".nii") || name.ends_with(".nii.gz")
    }))
}

/// Finds, chooses and checks the DICOM series of `channel` under `dir` (scanned once).
fn dicom_channel(
    scans: &mut BTreeMap<PathBuf, dicom::Scan>,
    dir: &Path,
    channel: &str,
    config: &DicomInput,
    sole_ok: bool,
) -> Result<ChannelFile, InputError> {
    if !scans.contains_key(dir) {
        scans.insert(dir.to_path_buf(), dicom::scan(dir)?);
    }
    let scan = &scans[dir];
    let rule = dicom::rule_for(&config.series, channel);
    let files = dicom::choose(scan, channel, rule.as_ref(), sole_ok)?;
    let series = dicom::prepare(dir, files)?;
    tracing::info!(
        channel,
        series = %series.uid,
        description = %series.description,
        slices = series.slice_count(),
        folder = %series.folder.display(),
        "DICOM series"
    );
    Ok(ChannelFile {
        channel: channel.to_string(),
        path: series.folder.clone(),
        input: ChannelInput::Dicom(Box::new(series)),
    })
}

/// Two channels must not read the same DICOM series.
fn check_distinct_series(files: &[ChannelFile]) -> Result<(), InputError> {
    let mut seen: Vec<(&str, &Series)> = Vec::new();
    for f in files {
        let ChannelInput::Dicom(s) = &f.input else {
            continue;
        };
        if let Some((other, _)) = seen.iter().find(|(_, o)| o.uid == s.uid) {
            return Err(InputError::DicomSeriesChoice {
                dir: s.dir.clone(),
                channel: f.channel.clone(),
                problem: Box::new(ChoiceProblem::AlreadyChosen {
                    uid: s.uid.clone(),
                    description: s.description.clone(),
                    other: other.to_string(),
                }),
                found: format!("{} files in {}", s.slice_count(), s.folder.display()),
            });
        }
        seen.push((&f.channel, s));
    }
    Ok(())
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

/// Case id of resolved channels: from the first NIfTI name, or the name of the DICOM folder
/// searched (its parent's when the folder is named after the channel, as `case/t1n/`).
fn resolved_case_id(first: &ChannelFile) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match &first.input {
        ChannelInput::Nifti => case_id(&(first.channel.clone(), first.path.clone())),
        ChannelInput::Dicom(s) => {
            let own = name(&s.dir);
            let parent = s.dir.parent().and_then(name);
            match (own, parent) {
                (Some(o), Some(p)) if o.eq_ignore_ascii_case(&first.channel) => p,
                (Some(o), _) => o,
                _ => "case".to_string(),
            }
        }
    }
}

/// Grid of one channel from its header alone; refuses oversized inputs.
fn channel_geometry(f: &ChannelFile, max_voxels: usize) -> Result<Geometry, InputError> {
    match &f.input {
        ChannelInput::Nifti => nifti::read_header(&f.path, max_voxels).map(|(_, g)| g),
        ChannelInput::Dicom(s) => {
            let voxels = s.geometry.voxel_count();
            if voxels > max_voxels {
                return Err(InputError::TooLarge {
                    path: f.path.clone(),
                    voxels,
                    max_voxels,
                });
            }
            Ok(s.geometry.clone())
        }
    }
}

fn read_channel(f: &ChannelFile, max_voxels: usize) -> Result<(Array3<f32>, Source), InputError> {
    match &f.input {
        ChannelInput::Nifti => {
            nifti::read_volume(&f.path, max_voxels).map(|i| (i.data, Source::Nifti(i.header)))
        }
        ChannelInput::Dicom(s) => {
            dicom::read_volume(s, max_voxels).map(|d| (d, Source::Dicom(s.source())))
        }
    }
}

/// The case id and grid from the channels' headers alone (no voxel is read), with the checks
/// `load` makes before reading voxels: size limit and one grid.
pub fn header_grid(
    files: &[ChannelFile],
    max_voxels: usize,
) -> Result<(String, Geometry), InputError> {
    let first = files.first().ok_or_else(|| InputError::NotFound {
        path: PathBuf::new(),
    })?;
    let headers: Vec<Geometry> = files
        .iter()
        .map(|f| channel_geometry(f, max_voxels))
        .collect::<Result<_, _>>()?;
    for (f, g) in files.iter().zip(&headers).skip(1) {
        check_same_grid(&headers[0], g, &first.path, &f.channel, &f.path)?;
    }
    Ok((resolved_case_id(first), headers[0].clone()))
}

/// Loads every channel and checks they share one grid. Headers are checked first, so a grid
/// mismatch or an oversized input is refused before voxels are read.
pub fn load(files: &[ChannelFile], max_voxels: usize) -> Result<Case, InputError> {
    let (id, geometry) = header_grid(files, max_voxels)?;
    // each channel goes straight into its slot: one copy of the case in memory, not two
    let [ni, nj, nk] = geometry.shape_ijk;
    let mut stacked = ndarray::Array4::<f32>::zeros((files.len(), nk, nj, ni));
    let mut sources = Vec::with_capacity(files.len());
    for (c, f) in files.iter().enumerate() {
        let (image, source) = read_channel(f, max_voxels)?;
        if image.iter().all(|&v| v == 0.0) {
            return Err(InputError::EmptyChannel {
                path: f.path.clone(),
                channel: f.channel.clone(),
            });
        }
        if image.shape() != stacked.index_axis(Axis(0), c).shape() {
            return Err(InputError::Format {
                path: f.path.clone(),
                reason: "voxel data does not match the header dimensions".to_string(),
            });
        }
        stacked.index_axis_mut(Axis(0), c).assign(&image);
        sources.push(source);
    }
    Ok(Case {
        id,
        channels: files.iter().map(|f| f.channel.clone()).collect(),
        paths: files.iter().map(|f| f.path.clone()).collect(),
        images: stacked,
        geometry,
        sources,
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
