//! What the running binary is made of and whether it works: [`about`] (for `stochseg -v
//! --version`: the tool version, the binary's layout and data folder, the ONNX Runtime library
//! found, its version and providers) and [`doctor`] (`stochseg doctor`: the installation checked
//! end to end, stopping at the first problem).
//!
//! The doctor's checks, in order: the binary's layout (an installed tree or a checkout, see
//! `install`); ONNX Runtime loads (the library search of `infer::runtime`); every shipped
//! pipeline loads and every model it names opens on its execution provider (as `validate`
//! does); every model file in the data folder's `onnx/` opens; a synthetic case runs through the
//! default pipeline with one pass per model. The case is 32x32x16 voxels at 1 mm (a bright
//! sphere of radius 4 in an ellipsoid "head", every channel alike), written as BraTS-named
//! NIfTI files in a temporary folder and run into another, both removed afterwards.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array3;

use crate::error::Error;
use crate::infer::{self, runtime, ProviderPlan, SessionOptions, Threads};
use crate::install::{
    self, Layout, LayoutKind, PipelineChoice, PipelineSource, ShippedPipeline, DEFAULT_PIPELINE,
};
use crate::io::case::CaseSpec;
use crate::output::OutputError;
use crate::pipeline::{ConfigError, Overrides, Pipeline};
use crate::run::{self, RunRequest};
use crate::volume::Geometry;

/// The tool, where it runs from, and the ONNX Runtime it finds.
#[derive(Debug, Clone)]
pub struct About {
    pub version: String,
    pub layout: Option<Layout>,
    pub onnxruntime: Result<RuntimeAbout, String>,
}

/// The ONNX Runtime library found and what it offers.
#[derive(Debug, Clone)]
pub struct RuntimeAbout {
    pub library: PathBuf,
    pub version: String,
    pub providers: Vec<String>,
}

/// What `stochseg -v --version` prints; a library that does not load is said, not an error.
pub fn about(ort_lib: Option<&Path>) -> About {
    About {
        version: env!("CARGO_PKG_VERSION").to_string(),
        layout: install::layout(),
        onnxruntime: load_runtime(ort_lib).map_err(|e| e.to_string()),
    }
}

fn load_runtime(ort_lib: Option<&Path>) -> Result<RuntimeAbout, Error> {
    let (_, rt) = runtime::init(ort_lib)?;
    Ok(RuntimeAbout {
        library: rt.library.clone(),
        version: rt.version.clone(),
        providers: runtime::available_providers()?,
    })
}

impl About {
    /// The lines `stochseg -v --version` prints.
    pub fn text(&self) -> String {
        let mut out = format!("stochseg {}\n", self.version);
        match &self.layout {
            Some(l) => {
                let kind = match l.kind {
                    LayoutKind::Installed => "installed tree",
                    LayoutKind::Checkout => "checkout",
                };
                out += &format!("executable: {} ({kind})\n", l.executable.display());
                out += &format!("data: {}\n", l.data_dir.display());
            }
            None => {
                let exe = install::executable().unwrap_or_default();
                out += &format!("executable: {} (no installed tree or checkout around it; no shipped pipelines)\n", exe.display());
            }
        }
        match &self.onnxruntime {
            Ok(rt) => {
                out += &format!("onnxruntime: {} ({})\n", rt.version, rt.library.display());
                out += &format!("providers: {}\n", rt.providers.join(", "));
            }
            Err(e) => out += &format!("onnxruntime: not loaded: {e}\n"),
        }
        out
    }
}

/// One check that passed.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub detail: String,
}

/// Runs every check in order, telling `on_check` about each that passes; the first that fails
/// is the error (`Error::Check`, with the failure's own exit code).
pub fn doctor(ort_lib: Option<PathBuf>, on_check: &mut dyn FnMut(&Check)) -> Result<(), Error> {
    let mut pass = |name: &'static str, detail: String| on_check(&Check { name, detail });
    let layout = checked("installation", find_layout())?;
    pass("installation", layout_detail(&layout));
    let (backend, detail) = checked("onnxruntime", load_backend(ort_lib.clone()))?;
    pass("onnxruntime", detail);
    let shipped = checked(
        "pipelines",
        install::shipped_pipelines(&layout.data_dir).map_err(Error::from),
    )?;
    for p in &shipped {
        pass(
            "pipelines",
            checked("pipelines", open_pipeline(p, &ort_lib))?,
        );
    }
    for model in checked("models", model_files(&layout.data_dir))? {
        let info = checked("models", backend.describe(&model).map_err(Error::from))?;
        let short = info.sha256.get(..12).unwrap_or(&info.sha256);
        pass(
            "models",
            format!("{} opens (sha256 {short})", model.display()),
        );
    }
    let default = checked("synthetic case", default_pipeline(&shipped, &layout))?;
    let detail = checked("synthetic case", synthetic_run(&default.path, ort_lib))?;
    pass("synthetic case", detail);
    Ok(())
}

/// ONNX Runtime loaded (CPU sessions), and what it is.
fn load_backend(ort_lib: Option<PathBuf>) -> Result<(Box<dyn infer::Backend>, String), Error> {
    let backend = infer::onnx_runtime(SessionOptions {
        library: ort_lib,
        plan: ProviderPlan::cpu_only(),
        threads: Threads::ONE,
        batch_size: 1,
        max_batch_voxels: 1,
    })?;
    let engine = backend.engine();
    let providers = runtime::available_providers()?;
    let detail = format!(
        "{} ({}); providers: {}",
        engine.version,
        engine.library.display(),
        providers.join(", ")
    );
    Ok((backend, detail))
}

/// A shipped pipeline loaded and its models opened on its providers, as `validate` does.
fn open_pipeline(p: &ShippedPipeline, ort_lib: &Option<PathBuf>) -> Result<String, Error> {
    let pipeline = Pipeline::load(&p.path)?;
    let choice = PipelineChoice {
        path: Some(p.path.clone()),
        source: PipelineSource::Name,
    };
    let v = crate::validate::validate(&pipeline, &choice, None, ort_lib.clone())?;
    let models: Vec<&str> = v.models.iter().map(|m| m.name.as_str()).collect();
    Ok(format!("{}: models {} open", p.name, models.join(", ")))
}

fn default_pipeline<'a>(
    shipped: &'a [ShippedPipeline],
    layout: &Layout,
) -> Result<&'a ShippedPipeline, Error> {
    shipped.iter().find(|p| p.default).ok_or_else(|| {
        ConfigError::DefaultPipelineMissing {
            name: DEFAULT_PIPELINE,
            pipelines_dir: layout.data_dir.join("pipelines"),
        }
        .into()
    })
}

/// `result`, or its error as the failure of check `name`.
fn checked<T>(name: &'static str, result: Result<T, Error>) -> Result<T, Error> {
    result.map_err(|source| Error::Check {
        check: name,
        source: Box::new(source),
    })
}

fn find_layout() -> Result<Layout, Error> {
    install::layout().ok_or_else(|| {
        let exe = install::executable().unwrap_or_default();
        ConfigError::NotInstalled { executable: exe }.into()
    })
}

fn layout_detail(l: &Layout) -> String {
    match l.kind {
        LayoutKind::Installed => format!(
            "installed tree: {} (data {})",
            l.executable.display(),
            l.data_dir.display()
        ),
        LayoutKind::Checkout => format!(
            "checkout: {} (data {})",
            l.executable.display(),
            l.data_dir.display()
        ),
    }
}

/// The `.onnx` files of the data folder's `onnx/`, sorted.
fn model_files(data_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let dir = data_dir.join("onnx");
    let entries = std::fs::read_dir(&dir).map_err(|e| infer::ModelError::Load {
        path: dir.clone(),
        reason: format!("cannot list the shipped models: {e}"),
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(infer::ModelError::NotFound {
            path: dir.join("*.onnx"),
        }
        .into());
    }
    Ok(files)
}

/// The case id of the synthetic case.
const CASE_ID: &str = "DOCTOR-00000-000";
/// Its grid along (i, j, k).
const SHAPE_IJK: [usize; 3] = [32, 32, 16];

/// Runs the synthetic case through `pipeline_file` with one pass per model; says what came out.
fn synthetic_run(pipeline_file: &Path, ort_lib: Option<PathBuf>) -> Result<String, Error> {
    let pipeline = Pipeline::load(pipeline_file)?.apply(Overrides {
        passes: Some(1),
        ..Overrides::default()
    })?;
    let tmp = tempfile::Builder::new()
        .prefix("stochseg-doctor-")
        .tempdir()
        .map_err(|e| io_failure(&std::env::temp_dir(), e))?;
    let case_dir = tmp.path().join(CASE_ID);
    write_synthetic_case(&case_dir, &pipeline.channels)?;
    let started = Instant::now();
    let request = RunRequest {
        pipeline,
        pipeline_path: Some(pipeline_file.to_path_buf()),
        pipeline_source: PipelineSource::Default,
        case: CaseSpec::Folder(case_dir),
        out: tmp.path().join("out"),
        overwrite: false,
        ort_lib,
    };
    let summary = run::run(&request, &mut |_| {})?;
    Ok(format!(
        "{}x{}x{} voxels, 1 pass per model: {} blob(s) in {:.1} s",
        SHAPE_IJK[0],
        SHAPE_IJK[1],
        SHAPE_IJK[2],
        summary.blobs,
        started.elapsed().as_secs_f64()
    ))
}

/// Writes `<dir>/DOCTOR-00000-000-<channel>.nii.gz` for each channel.
fn write_synthetic_case(dir: &Path, channels: &[String]) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| io_failure(dir, e))?;
    let geometry = Geometry {
        shape_ijk: SHAPE_IJK,
        affine_lps: [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
    };
    let image = synthetic_image(geometry.shape_zyx());
    for channel in channels {
        let path = dir.join(format!("{CASE_ID}-{channel}.nii.gz"));
        crate::io::nifti::write_map(&path, image.view(), &geometry, None, "stochseg doctor")
            .map_err(|e| io_failure(&path, e))?;
    }
    Ok(())
}

fn io_failure(path: &Path, e: std::io::Error) -> OutputError {
    OutputError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// `[z, y, x]`: 0 outside an ellipsoid filling the grid, 100 inside, 400 in a sphere of radius
/// 4 voxels off its centre.
fn synthetic_image(shape_zyx: [usize; 3]) -> Array3<f32> {
    let half = shape_zyx.map(|n| n as f64 / 2.0);
    Array3::from_shape_fn(shape_zyx, |(z, y, x)| {
        let at = [z, y, x].map(|v| v as f64 + 0.5);
        let head: f64 = (0..3).map(|a| ((at[a] - half[a]) / half[a]).powi(2)).sum();
        let blob_centre = [half[0], half[1] + 4.0, half[2] - 4.0];
        let blob: f64 = (0..3).map(|a| (at[a] - blob_centre[a]).powi(2)).sum();
        match (head <= 1.0, blob <= 16.0) {
            (false, _) => 0.0,
            (true, false) => 100.0,
            (true, true) => 400.0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_image_has_a_head_and_a_bright_sphere() {
        let img = synthetic_image([16, 32, 32]);
        let count = |v: f32| img.iter().filter(|&&x| x == v).count();
        // a sphere of radius 4 holds about 268 voxel centres; the head most of the grid
        assert!((240..300).contains(&count(400.0)), "{}", count(400.0));
        assert!(count(0.0) > 0 && count(100.0) > 16 * 32 * 32 / 3);
        assert_eq!(img[[8, 20, 12]], 400.0);
        assert_eq!(img[[0, 0, 0]], 0.0);
    }

    #[test]
    fn a_failed_check_keeps_the_exit_code_of_its_cause() {
        let e = checked::<()>(
            "models",
            Err(infer::ModelError::NotFound {
                path: PathBuf::from("/x/onnx/*.onnx"),
            }
            .into()),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::ExitCode::Model);
        assert_eq!(
            e.to_string(),
            "doctor: models: /x/onnx/*.onnx: no such model file"
        );
    }
}
