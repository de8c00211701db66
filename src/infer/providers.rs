//! Execution providers: which ones a run asks for (`Device`, parsed with the config), the
//! fallback policy, preloading the GPU libraries they need (by absolute path, from the Python
//! wheels' folders), the TensorRT and OpenVINO caches, TensorRT shape profiles, and the `ort`
//! registration of the built-in providers (OpenVINO, a plugin, is in `openvino`).
//!
//! Policy: providers are tried in the configured order. One that cannot be had is an error that
//! carries ONNX Runtime's reason (which names the missing library), unless `allow_fallback` is
//! set; then the next one is tried, a warning is logged, and the report records the provider
//! that really ran each model. There is never a silent fallback to the CPU.

use std::path::{Path, PathBuf};

use ort::ep::{self, ExecutionProviderDispatch};
use sha2::{Digest, Sha256};

use super::model::ModelError;
use super::openvino::Plugin;
use super::runtime::Runtime;
use crate::pipeline::{ConvSearch, Device, Execution, Precision};

/// The providers a run may use, in order, and how.
#[derive(Debug, Clone)]
pub struct ProviderPlan {
    pub devices: Vec<Device>,
    pub allow_fallback: bool,
    pub trt_cache_root: PathBuf,
    pub trt_fp16: bool,
    pub conv_search: ConvSearch,
    pub openvino: OpenVinoPlan,
}

/// How the OpenVINO provider runs (`execution.openvino`).
#[derive(Debug, Clone)]
pub struct OpenVinoPlan {
    /// The configured plugin library, if any (see `openvino::candidates`).
    pub library: Option<PathBuf>,
    pub precision: Precision,
    pub cache_root: PathBuf,
}

impl ProviderPlan {
    pub fn from_config(exec: &Execution) -> ProviderPlan {
        let ov = &exec.openvino;
        ProviderPlan {
            devices: exec.providers.clone(),
            allow_fallback: exec.allow_fallback,
            trt_cache_root: cache_root(&exec.tensorrt.cache_dir, "tensorrt"),
            trt_fp16: exec.tensorrt.fp16,
            conv_search: exec.cuda.conv_algorithm_search,
            openvino: OpenVinoPlan {
                library: (!ov.library.is_empty()).then(|| PathBuf::from(&ov.library)),
                precision: ov.precision,
                cache_root: cache_root(&ov.cache_dir, "openvino"),
            },
        }
    }

    pub fn cpu_only() -> ProviderPlan {
        ProviderPlan::from_config(&Execution::default())
    }
}

/// The configured cache folder, else `$XDG_CACHE_HOME/stochseg/<kind>` (`~/.cache` without it).
fn cache_root(configured: &str, kind: &str) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("stochseg").join(kind)
}

/// The fixed input shape a session will see, for TensorRT profiles.
#[derive(Debug, Clone)]
pub struct ShapeHint {
    pub input_name: String,
    pub batch: usize,
    pub channels: usize,
    pub patch: [usize; 3],
    pub model_sha256: String,
}

impl ShapeHint {
    /// `name:NxCxDxHxW`, as ONNX Runtime's TensorRT profile options take it.
    pub fn profile(&self) -> String {
        let [d, h, w] = self.patch;
        format!(
            "{}:{}x{}x{}x{}x{}",
            self.input_name, self.batch, self.channels, d, h, w
        )
    }
}

/// The CUDA provider on device `id`, as the plan configures it.
pub fn cuda(id: i32, plan: &ProviderPlan) -> ExecutionProviderDispatch {
    let search = match plan.conv_search {
        ConvSearch::Exhaustive => ep::cuda::ConvAlgorithmSearch::Exhaustive,
        ConvSearch::Heuristic => ep::cuda::ConvAlgorithmSearch::Heuristic,
        ConvSearch::Default => ep::cuda::ConvAlgorithmSearch::Default,
    };
    ep::CUDA::default()
        .with_device_id(id)
        .with_conv_algorithm_search(search)
        .with_tf32(false)
        .build()
        .error_on_failure()
}

/// Execution providers to register for `device` (empty for the CPU).
pub fn dispatch(
    device: Device,
    plan: &ProviderPlan,
    hint: &ShapeHint,
    runtime: &Runtime,
) -> Result<Vec<ExecutionProviderDispatch>, ModelError> {
    Ok(match device {
        Device::Cpu | Device::OpenVino => Vec::new(),
        Device::Cuda(id) => vec![cuda(id, plan)],
        Device::TensorRt(id) => {
            let dir = trt_cache_dir(plan, hint, runtime, id)?;
            let dir_text = dir.display().to_string();
            let profile = hint.profile();
            let trt = ep::TensorRT::default()
                .with_device_id(id)
                .with_fp16(plan.trt_fp16)
                .with_engine_cache(true)
                .with_engine_cache_path(&dir_text)
                .with_timing_cache(true)
                .with_timing_cache_path(&dir_text)
                .with_profile_min_shapes(&profile)
                .with_profile_opt_shapes(&profile)
                .with_profile_max_shapes(&profile)
                .build()
                .error_on_failure();
            vec![trt, cuda(id, plan)]
        }
    })
}

/// The cache folder for one (model, runtime, TensorRT library, options, profile, device): any
/// change gives a new folder, so a stale engine is never loaded.
pub fn trt_cache_dir(
    plan: &ProviderPlan,
    hint: &ShapeHint,
    runtime: &Runtime,
    device_id: i32,
) -> Result<PathBuf, ModelError> {
    let manifest = format!(
        "model_sha256={}\nonnxruntime={}\ntensorrt_library={}\nfp16={}\nprofile={}\ndevice={}\n",
        hint.model_sha256,
        runtime.version,
        library_identity(&gpu_library_dirs(runtime), "libnvinfer.so"),
        plan.trt_fp16,
        hint.profile(),
        device_id
    );
    keyed_cache_dir(
        &plan.trt_cache_root,
        &hint.model_sha256,
        &manifest,
        "TensorRT",
    )
}

/// The OpenVINO cache folder (OpenVINO's `CACHE_DIR`) for one (model, runtime, plugin library
/// and version, precision, threads): any change gives a new folder, so a model compiled for
/// another plugin or precision is never loaded.
pub fn openvino_cache_dir(
    plan: &ProviderPlan,
    model_sha256: &str,
    runtime: &Runtime,
    plugin: &Plugin,
    threads: usize,
) -> Result<PathBuf, ModelError> {
    let manifest = format!(
        "model_sha256={model_sha256}\nonnxruntime={}\nopenvino_plugin={}\nplugin_version={}\nprecision={}\nthreads={threads}\n",
        runtime.version,
        file_identity(&plugin.library),
        plugin.version,
        plan.openvino.precision.name(),
    );
    keyed_cache_dir(
        &plan.openvino.cache_root,
        model_sha256,
        &manifest,
        "OpenVINO",
    )
}

/// `root/<model sha prefix>-<manifest hash>`, holding the manifest (`stochseg-cache.txt`). A
/// folder whose manifest does not match is emptied and rebuilt; one without a manifest (made
/// by a concurrent run a moment ago) is kept and given its manifest.
fn keyed_cache_dir(
    root: &Path,
    model_sha256: &str,
    manifest: &str,
    what: &str,
) -> Result<PathBuf, ModelError> {
    let key: String = Sha256::digest(manifest.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = root.join(format!(
        "{}-{key}",
        &model_sha256[..model_sha256.len().min(12)]
    ));
    let manifest_path = dir.join("stochseg-cache.txt");
    let fail = |e: std::io::Error| {
        ModelError::Provider(format!(
            "{}: cannot prepare the {what} cache: {e}",
            dir.display()
        ))
    };
    match std::fs::read_to_string(&manifest_path) {
        Ok(found) if found == manifest => return Ok(dir),
        Ok(_) => std::fs::remove_dir_all(&dir).map_err(fail)?,
        Err(_) => {}
    }
    std::fs::create_dir_all(&dir).map_err(fail)?;
    // written whole under another name, then renamed: a concurrent reader sees all or nothing
    let partial = dir.join(format!("stochseg-cache.txt.{}", std::process::id()));
    std::fs::write(&partial, manifest).map_err(fail)?;
    std::fs::rename(&partial, &manifest_path).map_err(fail)?;
    Ok(dir)
}

/// Path, size and modification time of a file.
fn file_identity(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    format!(
        "{} {size} {}",
        path.display(),
        mtime.map(|d| d.as_secs()).unwrap_or(0)
    )
}

/// Path, size and modification time of the first library named `prefix*` in `dirs`.
fn library_identity(dirs: &[PathBuf], prefix: &str) -> String {
    for dir in dirs {
        if let Some(path) = super::runtime::newest_library(dir, prefix) {
            return file_identity(&path);
        }
    }
    "system".to_string()
}

/// Folders that may hold the CUDA, cuDNN and TensorRT libraries: `$STOCHSEG_GPU_LIB_PATH`
/// (colon-separated), then the NVIDIA wheels beside the loaded ONNX Runtime
/// (`site-packages/nvidia/*/lib`, `site-packages/tensorrt_libs`).
pub fn gpu_library_dirs(runtime: &Runtime) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("STOCHSEG_GPU_LIB_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    // .../site-packages/onnxruntime/capi/libonnxruntime.so.X
    if let Some(site) = runtime
        .library
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut libs: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("lib"))
                .filter(|p| p.is_dir())
                .collect();
            libs.sort();
            dirs.extend(libs);
        }
        dirs.push(site.join("tensorrt_libs"));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Library name prefixes preloaded for the CUDA provider (and cuDNN), then for TensorRT.
const CUDA_LIBS: &[&str] = &[
    "libcudart.so",
    "libcublasLt.so",
    "libcublas.so",
    "libcurand.so",
    "libcufft.so",
    "libnvrtc.so",
    "libnvJitLink.so",
    "libcudnn",
];
const TRT_LIBS: &[&str] = &[
    "libnvinfer.so",
    "libnvinfer_plugin.so",
    "libnvonnxparser.so",
];

/// Preloads, by absolute path, the GPU libraries `device` needs from `gpu_library_dirs`, so
/// ONNX Runtime's provider libraries find them without `LD_LIBRARY_PATH`. Libraries that are not
/// there are left to the system loader; if one is really missing, registering the provider fails
/// with ONNX Runtime's message naming it. Returns what was loaded.
pub fn preload(device: Device, runtime: &Runtime) -> Vec<PathBuf> {
    let prefixes: Vec<&str> = match device {
        Device::Cpu | Device::OpenVino => return Vec::new(),
        Device::Cuda(_) => CUDA_LIBS.to_vec(),
        Device::TensorRt(_) => CUDA_LIBS.iter().chain(TRT_LIBS).copied().collect(),
    };
    let mut pending: Vec<PathBuf> = Vec::new();
    for dir in gpu_library_dirs(runtime) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.contains(".so") && prefixes.iter().any(|pre| name.starts_with(pre))
            })
            .collect();
        files.sort();
        pending.extend(files);
    }
    // dependencies first: retry until a round loads nothing new
    let mut loaded = Vec::new();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|p| {
            let ok = ort::util::preload_dylib(p).is_ok();
            if ok {
                loaded.push(p.clone());
            }
            !ok
        });
        if pending.len() == before {
            break;
        }
    }
    for p in &pending {
        tracing::debug!(library = %p.display(), "could not preload");
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;

    #[test]
    fn plan_keeps_order_and_policy() {
        let yaml = "models: [{path: m.onnx}]\nexecution: {providers: [tensorrt:1, cuda:1, cpu], allow_fallback: true, tensorrt: {cache_dir: /c, fp16: true}}";
        let p = Pipeline::from_yaml(yaml, Path::new(".")).unwrap();
        let plan = ProviderPlan::from_config(&p.execution);
        assert_eq!(
            plan.devices,
            vec![Device::TensorRt(1), Device::Cuda(1), Device::Cpu]
        );
        assert!(plan.allow_fallback && plan.trt_fp16);
        assert_eq!(plan.trt_cache_root, Path::new("/c"));
    }

    #[test]
    fn trt_profile_matches_the_batches_used() {
        let hint = ShapeHint {
            input_name: "image".into(),
            batch: 4,
            channels: 4,
            patch: [16, 64, 64],
            model_sha256: "ab".repeat(32),
        };
        assert_eq!(hint.profile(), "image:4x4x16x64x64");
    }

    #[test]
    fn trt_cache_is_keyed_and_stale_manifests_are_wiped() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = ProviderPlan::cpu_only();
        plan.trt_cache_root = tmp.path().to_path_buf();
        let rt = Runtime {
            library: tmp.path().join("libonnxruntime.so.1.31.1"),
            version: "1.31.1".into(),
        };
        let hint = ShapeHint {
            input_name: "x".into(),
            batch: 2,
            channels: 4,
            patch: [16, 32, 32],
            model_sha256: "cd".repeat(32),
        };
        let dir = trt_cache_dir(&plan, &hint, &rt, 0).unwrap();
        std::fs::write(dir.join("engine.bin"), b"x").unwrap();
        // same key: the cache is reused
        assert_eq!(trt_cache_dir(&plan, &hint, &rt, 0).unwrap(), dir);
        assert!(dir.join("engine.bin").exists());
        // a manifest that does not match (e.g. edited or left by another version) is wiped
        std::fs::write(dir.join("stochseg-cache.txt"), "tampered").unwrap();
        assert_eq!(trt_cache_dir(&plan, &hint, &rt, 0).unwrap(), dir);
        assert!(!dir.join("engine.bin").exists());
        // another option gives another folder
        plan.trt_fp16 = true;
        assert_ne!(trt_cache_dir(&plan, &hint, &rt, 0).unwrap(), dir);
    }

    #[test]
    fn openvino_cache_is_keyed_by_model_plugin_precision_and_threads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut plan = ProviderPlan::cpu_only();
        plan.openvino.cache_root = tmp.path().to_path_buf();
        let rt = Runtime {
            library: tmp.path().join("libonnxruntime.so.1.31.1"),
            version: "1.31.1".into(),
        };
        let library = tmp
            .path()
            .join("libonnxruntime_providers_openvino_plugin.so");
        std::fs::write(&library, b"v1").unwrap();
        let plugin = Plugin {
            library: library.clone(),
            version: "1.8.1".into(),
            capabilities: vec!["FP32".into()],
            device_name: "cpu".into(),
        };
        let sha = "ef".repeat(32);
        let dir = openvino_cache_dir(&plan, &sha, &rt, &plugin, 2).unwrap();
        assert!(dir.starts_with(tmp.path()) && dir.join("stochseg-cache.txt").is_file());
        std::fs::write(dir.join("1234.blob"), b"compiled").unwrap();
        assert_eq!(
            openvino_cache_dir(&plan, &sha, &rt, &plugin, 2).unwrap(),
            dir
        );
        assert!(dir.join("1234.blob").exists());
        let others = [
            openvino_cache_dir(&plan, &"01".repeat(32), &rt, &plugin, 2).unwrap(),
            openvino_cache_dir(&plan, &sha, &rt, &plugin, 1).unwrap(),
            openvino_cache_dir(
                &plan,
                &sha,
                &rt,
                &Plugin {
                    version: "1.8.2".into(),
                    ..plugin.clone()
                },
                2,
            )
            .unwrap(),
        ];
        plan.openvino.precision = Precision::Bf16;
        let bf16 = openvino_cache_dir(&plan, &sha, &rt, &plugin, 2).unwrap();
        // a rebuilt plugin library (another size) is another key too
        plan.openvino.precision = Precision::F32;
        std::fs::write(&library, b"v2 rebuilt").unwrap();
        let rebuilt = openvino_cache_dir(&plan, &sha, &rt, &plugin, 2).unwrap();
        for other in others.iter().chain([&bf16, &rebuilt]) {
            assert_ne!(other, &dir);
        }
    }
}
