//! Where the running binary's own files are: the installed layout or a checkout, found from the
//! binary's resolved path (`std::env::current_exe`, symlinks resolved), so an installed tree
//! works wherever it is moved or mounted and needs no environment variable.
//!
//! Two layouts:
//! - installed (`make install PREFIX=P`): `P/bin/stochseg`, ONNX Runtime (and execution-provider
//!   plugins) in `P/lib/stochseg/`, the shipped pipelines and models in
//!   `P/share/stochseg/pipelines/` and `P/share/stochseg/onnx/`;
//! - a checkout: `ROOT/target/release/stochseg` (or `target/<triple>/release`, `target/debug`)
//!   with `ROOT/pipelines/` and `ROOT/onnx/`.
//!
//! Either way the data folder holds `pipelines/*.yaml`, whose models are `../onnx/*.onnx`. A
//! shipped pipeline's name is its file name without `.yaml`. Without `--pipeline` and
//! `--model`, a run uses the shipped [`DEFAULT_PIPELINE`] ([`choose_pipeline`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::pipeline::{ConfigError, Pipeline};

/// The pipeline a run uses when given neither `--pipeline` nor `--model`.
pub const DEFAULT_PIPELINE: &str = "brats-goat-stochastic";
/// The installed tree's folders, relative to the prefix.
const LIB_DIR: &str = "lib/stochseg";
const DATA_DIR: &str = "share/stochseg";
const PIPELINES: &str = "pipelines";

/// How the running binary is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// `PREFIX/bin/stochseg` with `PREFIX/lib/stochseg` and `PREFIX/share/stochseg`.
    Installed,
    /// `target/.../stochseg` in a checkout.
    Checkout,
}

/// The running binary and the folders it takes its library and data from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub kind: LayoutKind,
    /// The binary, symlinks resolved.
    pub executable: PathBuf,
    /// The shipped pipelines (`pipelines/`) and models (`onnx/`).
    pub data_dir: PathBuf,
    /// ONNX Runtime and its plugins (installed layout only).
    pub lib_dir: Option<PathBuf>,
}

/// The running binary, symlinks resolved.
pub fn executable() -> Option<PathBuf> {
    std::env::current_exe().ok()?.canonicalize().ok()
}

/// The running binary's layout; None for a binary outside both layouts (copied alone).
pub fn layout() -> Option<Layout> {
    layout_of(&executable()?)
}

/// The folder of the installed tree that holds ONNX Runtime and execution-provider plugins
/// (`PREFIX/lib/stochseg`, beside the binary's `bin/`), for the library search; None unless the
/// binary runs from an installed tree.
pub fn lib_dir() -> Option<PathBuf> {
    layout()?.lib_dir
}

/// The layout of a binary at `exe` (an absolute, resolved path).
pub fn layout_of(exe: &Path) -> Option<Layout> {
    let bin = exe.parent()?;
    if bin.file_name().is_some_and(|n| n == "bin") {
        let prefix = bin.parent()?;
        let data_dir = prefix.join(DATA_DIR);
        if data_dir.join(PIPELINES).is_dir() {
            return Some(Layout {
                kind: LayoutKind::Installed,
                executable: exe.to_path_buf(),
                data_dir,
                lib_dir: Some(prefix.join(LIB_DIR)),
            });
        }
    }
    // target/release, target/<triple>/release: the checkout is two or three folders up
    let default = Path::new(PIPELINES).join(format!("{DEFAULT_PIPELINE}.yaml"));
    bin.ancestors()
        .skip(1)
        .take(3)
        .find(|root| root.join("Cargo.toml").is_file() && root.join(&default).is_file())
        .map(|root| Layout {
            kind: LayoutKind::Checkout,
            executable: exe.to_path_buf(),
            data_dir: root.to_path_buf(),
            lib_dir: None,
        })
}

/// A pipeline config shipped with the tool.
#[derive(Debug, Clone)]
pub struct ShippedPipeline {
    /// The file name without `.yaml`: what `--pipeline NAME` takes.
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub default: bool,
}

/// The shipped pipelines of `data_dir`, by name; each is loaded (and so checked against the
/// schema).
pub fn shipped_pipelines(data_dir: &Path) -> Result<Vec<ShippedPipeline>, ConfigError> {
    let dir = data_dir.join(PIPELINES);
    let entries = std::fs::read_dir(&dir).map_err(|source| ConfigError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut files: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(name, path)| {
            let p = Pipeline::load(&path)?;
            Ok(ShippedPipeline {
                default: name == DEFAULT_PIPELINE,
                name,
                description: p.description,
                path,
            })
        })
        .collect()
}

/// The shipped pipelines of the running binary's data folder.
pub fn installed_pipelines() -> Result<Vec<ShippedPipeline>, ConfigError> {
    let data_dir = layout()
        .map(|l| l.data_dir)
        .ok_or(ConfigError::NoShippedPipelines {
            pipelines_dir: None,
        })?;
    shipped_pipelines(&data_dir)
}

/// Where a run's pipeline config came from (the report's `pipeline.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineSource {
    /// Neither `--pipeline` nor `--model`: the shipped default.
    Default,
    /// `--pipeline FILE`.
    File,
    /// `--pipeline NAME`, a shipped pipeline.
    Name,
    /// No config file: the models and settings of the command line.
    CommandLine,
}

/// The config file a run reads (none for [`PipelineSource::CommandLine`]) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineChoice {
    pub path: Option<PathBuf>,
    pub source: PipelineSource,
}

/// The config a run uses, from `--pipeline` (a file, else a shipped pipeline's name) and whether
/// `--model` was given, with the shipped pipelines of the running binary's data folder.
pub fn choose_pipeline(
    arg: Option<&Path>,
    models_given: bool,
) -> Result<PipelineChoice, ConfigError> {
    let data_dir = layout().map(|l| l.data_dir);
    let choice = choose_in(data_dir.as_deref(), arg, models_given)?;
    if choice.source == PipelineSource::Default {
        if let Some(path) = &choice.path {
            tracing::info!(
                pipeline = DEFAULT_PIPELINE,
                config = %path.display(),
                "no --pipeline or --model given: using the shipped default pipeline"
            );
        }
    }
    Ok(choice)
}

/// [`choose_pipeline`] with the data folder given (None: the binary has none).
pub fn choose_in(
    data_dir: Option<&Path>,
    arg: Option<&Path>,
    models_given: bool,
) -> Result<PipelineChoice, ConfigError> {
    let file = |path: &Path, source| PipelineChoice {
        path: Some(path.to_path_buf()),
        source,
    };
    match arg {
        // an existing file wins; a path that is not a bare name stays a path (and fails to load)
        Some(path) if path.is_file() || !is_bare_name(path) => Ok(file(path, PipelineSource::File)),
        Some(name) => {
            let name = name.to_string_lossy();
            let shipped =
                named(data_dir, &name).ok_or_else(|| unknown_pipeline(data_dir, &name))?;
            Ok(file(&shipped, PipelineSource::Name))
        }
        None if models_given => Ok(PipelineChoice {
            path: None,
            source: PipelineSource::CommandLine,
        }),
        None => {
            let shipped = named(data_dir, DEFAULT_PIPELINE).ok_or_else(|| {
                ConfigError::NoDefaultPipeline {
                    name: DEFAULT_PIPELINE,
                    pipelines_dir: pipelines_dir(data_dir),
                }
            })?;
            Ok(file(&shipped, PipelineSource::Default))
        }
    }
}

/// A name such as `brats-goat-stochastic`: one path component, no `.yaml`/`.yml` ending.
fn is_bare_name(path: &Path) -> bool {
    let text = path.to_string_lossy();
    path.components().count() == 1
        && !text.contains(std::path::MAIN_SEPARATOR)
        && !(text.ends_with(".yaml") || text.ends_with(".yml"))
}

/// The file of the shipped pipeline `name`, if there is one.
fn named(data_dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    let path = data_dir?.join(PIPELINES).join(format!("{name}.yaml"));
    path.is_file().then_some(path)
}

fn unknown_pipeline(data_dir: Option<&Path>, name: &str) -> ConfigError {
    let shipped = data_dir
        .and_then(|d| shipped_pipelines(d).ok())
        .map(|list| list.into_iter().map(|p| p.name).collect::<Vec<_>>())
        .unwrap_or_default();
    ConfigError::UnknownPipeline {
        name: name.to_string(),
        shipped,
        pipelines_dir: pipelines_dir(data_dir),
    }
}

/// Where the shipped pipelines of `data_dir` are.
fn pipelines_dir(data_dir: Option<&Path>) -> Option<PathBuf> {
    data_dir.map(|d| d.join(PIPELINES))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "description: a test pipeline\nmodels: [{path: ../onnx/m.onnx}]\n";

    /// An installed tree under `prefix` with the given pipelines.
    fn installed(prefix: &Path, names: &[&str]) -> PathBuf {
        let pipelines = prefix.join(DATA_DIR).join(PIPELINES);
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        for n in names {
            std::fs::write(pipelines.join(format!("{n}.yaml")), CONFIG).unwrap();
        }
        prefix.join("bin/stochseg")
    }

    #[test]
    fn an_installed_tree_is_found_from_its_bin_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let exe = installed(tmp.path(), &[DEFAULT_PIPELINE]);
        let layout = layout_of(&exe).unwrap();
        assert_eq!(layout.kind, LayoutKind::Installed);
        assert_eq!(layout.data_dir, tmp.path().join("share/stochseg"));
        assert_eq!(layout.lib_dir, Some(tmp.path().join("lib/stochseg")));
        // a bin/ without share/stochseg beside it is no installation
        assert_eq!(layout_of(&tmp.path().join("other/bin/stochseg")), None);
    }

    #[test]
    fn a_checkout_is_found_from_target_release() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("pipelines")).unwrap();
        std::fs::create_dir_all(root.join("target/x86_64-unknown-linux-gnu/release")).unwrap();
        std::fs::write(root.join("Cargo.toml"), "").unwrap();
        std::fs::write(
            root.join(format!("pipelines/{DEFAULT_PIPELINE}.yaml")),
            CONFIG,
        )
        .unwrap();
        for exe in [
            "target/release/stochseg",
            "target/x86_64-unknown-linux-gnu/release/stochseg",
        ] {
            let layout = layout_of(&root.join(exe)).unwrap();
            assert_eq!(layout.kind, LayoutKind::Checkout);
            assert_eq!(layout.data_dir, root);
            assert_eq!(layout.lib_dir, None);
        }
    }

    #[test]
    fn pipelines_are_chosen_by_file_name_and_default() {
        let tmp = tempfile::tempdir().unwrap();
        installed(tmp.path(), &[DEFAULT_PIPELINE, "other"]);
        let data = tmp.path().join(DATA_DIR);
        let shipped = |n: &str| Some(data.join(format!("pipelines/{n}.yaml")));

        let c = choose_in(Some(&data), None, false).unwrap();
        assert_eq!(c.source, PipelineSource::Default);
        assert_eq!(c.path, shipped(DEFAULT_PIPELINE));
        let c = choose_in(Some(&data), None, true).unwrap();
        assert_eq!((c.source, c.path), (PipelineSource::CommandLine, None));
        let c = choose_in(Some(&data), Some(Path::new("other")), false).unwrap();
        assert_eq!((c.source, c.path), (PipelineSource::Name, shipped("other")));

        // a file of that name in the working folder would win; a path stays a path
        let file = tmp.path().join("mine.yaml");
        std::fs::write(&file, CONFIG).unwrap();
        let c = choose_in(Some(&data), Some(&file), false).unwrap();
        assert_eq!((c.source, c.path), (PipelineSource::File, Some(file)));
        let c = choose_in(Some(&data), Some(Path::new("gone.yaml")), false).unwrap();
        assert_eq!(c.source, PipelineSource::File);
    }

    #[test]
    fn an_unknown_name_lists_the_shipped_ones() {
        let tmp = tempfile::tempdir().unwrap();
        installed(tmp.path(), &[DEFAULT_PIPELINE, "other"]);
        let data = tmp.path().join(DATA_DIR);
        let e = choose_in(Some(&data), Some(Path::new("nope")), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("--pipeline nope: no such file, and no shipped pipeline of that name (shipped pipelines: {DEFAULT_PIPELINE}, other)")
        );
        let e = choose_in(None, None, false).unwrap_err().to_string();
        assert!(e.contains("give --pipeline YAML or --model PATH"), "{e}");
    }

    #[test]
    fn shipped_pipelines_are_listed_with_their_descriptions() {
        let tmp = tempfile::tempdir().unwrap();
        installed(tmp.path(), &["zeta", DEFAULT_PIPELINE]);
        let list = shipped_pipelines(&tmp.path().join(DATA_DIR)).unwrap();
        let names: Vec<_> = list.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [DEFAULT_PIPELINE, "zeta"]);
        assert!(list[0].default && !list[1].default);
        assert_eq!(list[0].description, "a test pipeline");
    }
}
