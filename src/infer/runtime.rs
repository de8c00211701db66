//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`).
//!
//! Search order: `--ort-lib PATH`, `$ORT_DYLIB_PATH`, the installed tree's `lib/stochseg/`
//! (`make install`; found from the resolved binary, see `install`), the binary's folder (and
//! its `lib/`), a `.venv` made by `make setup` in a checkout the binary was built in
//! (`target/release/..`), then the Python `onnxruntime` package (`$VIRTUAL_ENV` first, then
//! whatever `python3` imports), whose wheel ships `onnxruntime/capi/libonnxruntime.so.<version>`.
//! Nothing is downloaded.
//! ONNX Runtime allows one environment per process, so `init` runs once.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::model::ModelError;

/// The loaded library: where it came from and its version.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
const ORT_LIBRARY: &str = "libonnxruntime.so";
static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
static SHARED_CPU_ARENA: OnceLock<bool> = OnceLock::new();

/// Candidate library paths, in search order, each with where it came from. An explicit choice
/// (`--ort-lib`, else `ORT_DYLIB_PATH`) is the only candidate: it never falls back in silence.
pub fn candidates(flag: Option<&Path>) -> Vec<(String, PathBuf)> {
    if let Some(p) = flag {
        return vec![("--ort-lib".to_string(), p.to_path_buf())];
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![("ORT_DYLIB_PATH".to_string(), PathBuf::from(p))];
    }
    let mut out = Vec::new();
    if let Some(dir) = crate::install::lib_dir() {
        out.push((
            "the installation (lib/stochseg)".to_string(),
            newest_library(&dir, ORT_LIBRARY).unwrap_or(dir.join(ORT_LIBRARY)),
        ));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        for d in [dir.clone(), dir.join("lib")] {
            out.push((
                "next to the binary".to_string(),
                newest_library(&d, ORT_LIBRARY).unwrap_or(d.join(ORT_LIBRARY)),
            ));
        }
    }
    let checkout = exe_dir.iter().flat_map(|d| checkout_venv_dirs(d));
    for (origin, capi) in checkout.chain(python_package_dirs()) {
        out.push((
            origin,
            newest_library(&capi, ORT_LIBRARY).unwrap_or(capi.join(format!("{ORT_LIBRARY}.*"))),
        ));
    }
    out
}

/// `onnxruntime/capi` folders of a `.venv` in the checkout holding the binary (at most three
/// folders up: `target/release/stochseg`, `target/<triple>/release/stochseg`); only those that
/// exist.
fn checkout_venv_dirs(exe_dir: &Path) -> Vec<(String, PathBuf)> {
    exe_dir
        .ancestors()
        .skip(1)
        .take(3)
        .flat_map(|root| site_package_dirs(&root.join(".venv")))
        .filter(|capi| capi.is_dir())
        .map(|capi| ("the checkout's .venv (make setup)".to_string(), capi))
        .collect()
}

/// `<venv>/lib/<python>/site-packages/onnxruntime/capi` for each Python of a venv.
fn site_package_dirs(venv: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(venv.join("lib"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("site-packages/onnxruntime/capi"))
                .collect()
        })
        .unwrap_or_default()
}

/// `onnxruntime/capi` folders of the Python package, found without importing it.
fn python_package_dirs() -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        for capi in site_package_dirs(Path::new(&venv)) {
            dirs.push(("$VIRTUAL_ENV".to_string(), capi));
        }
    }
    let probe = "import importlib.util as u,os;s=u.find_spec('onnxruntime');print(os.path.dirname(s.origin) if s else '')";
    if let Ok(out) = std::process::Command::new("python3")
        .args(["-c", probe])
        .output()
    {
        let pkg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !pkg.is_empty() {
            dirs.push((
                "python3 onnxruntime package".to_string(),
                Path::new(&pkg).join("capi"),
            ));
        }
    }
    dirs
}

/// The file in `dir` whose name starts with `prefix` (`libonnxruntime.so`, `libnvinfer.so`) with
/// the highest version after the prefix (`.1.31.1`, compared number by number; none is lowest).
pub(crate) fn newest_library(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let version = |p: &PathBuf| -> Vec<u32> {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        name.strip_prefix(prefix)
            .unwrap_or_default()
            .split('.')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<u32>().unwrap_or(0))
            .collect()
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort_by_key(version);
    found.pop()
}

fn version_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let v = name.strip_prefix("libonnxruntime.so.")?;
    (!v.is_empty()).then(|| v.to_string())
}

/// Loads ONNX Runtime (once per process) and returns the shared environment.
pub fn init(
    flag: Option<&Path>,
) -> Result<(&'static ort::environment::Environment, &'static Runtime), ModelError> {
    if let (Some(env), Some(rt)) = (ENVIRONMENT.get(), RUNTIME.get()) {
        return Ok((env, rt));
    }
    let tried = candidates(flag);
    let mut attempts = Vec::new();
    for (origin, path) in &tried {
        if !path.is_file() {
            attempts.push(format!("{} ({origin}: not found)", path.display()));
            continue;
        }
        let builder = ort::init_from(path).map_err(|e| ModelError::RuntimeLoad {
            path: path.clone(),
            reason: load_error_text(&e),
        })?;
        let env = builder
            .with_name("stochseg")
            .with_telemetry(false)
            .build()
            .map_err(|e| ModelError::RuntimeLoad {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        SHARED_CPU_ARENA.get_or_init(|| register_cpu_arena(&env));
        let version = version_of(path).unwrap_or_else(|| build_version(ort::info()));
        let rt = RUNTIME.get_or_init(|| Runtime {
            library: path.clone(),
            version,
        });
        return Ok((ENVIRONMENT.get_or_init(|| env), rt));
    }
    Err(ModelError::RuntimeNotFound {
        tried: attempts.join("; "),
    })
}

/// The execution providers the loaded library was built with (`GetAvailableProviders`, e.g.
/// `CPUExecutionProvider`); whether a GPU provider can really run also depends on its libraries
/// and the device, which only opening a session shows.
pub fn available_providers() -> Result<Vec<String>, ModelError> {
    let failed = |e: ort::Error| ModelError::Provider(format!("cannot list providers: {e}"));
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: ONNX Runtime is loaded (`ort::api` would have failed otherwise); on success it
    // hands back `count` C strings, read here and released with the matching call.
    unsafe {
        let status = (ort::api().GetAvailableProviders)(&mut names, &mut count);
        ort::Error::result_from_status(status).map_err(failed)?;
        if names.is_null() {
            return Ok(Vec::new());
        }
        let list = (0..count.max(0) as usize)
            .map(|i| {
                std::ffi::CStr::from_ptr(*names.add(i))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let status = (ort::api().ReleaseAvailableProviders)(names, count);
        ort::Error::result_from_status(status).map_err(failed)?;
        Ok(list)
    }
}

/// Whether the environment holds one CPU memory arena for all sessions (`init` registers it).
pub fn shared_cpu_arena() -> bool {
    SHARED_CPU_ARENA.get().copied().unwrap_or(false)
}

/// Registers one CPU arena with the environment, for the sessions that ask for the
/// environment's allocators: the models run one after another, so one arena sized for the
/// largest replaces one per model, each kept at its own peak (with the memory pattern off, see
/// `ort::session_builder`, the demo ensemble's peak RSS drops by about 310 MiB). Without it (a
/// warning is logged) each session keeps its own.
fn register_cpu_arena(env: &ort::environment::Environment) -> bool {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    use ort::AsPointer;
    let registered = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .and_then(|memory| {
        // SAFETY: both pointers are live for the call; a null arena config asks for the
        // default arena, and the returned status is taken over by `result_from_status`.
        unsafe {
            let status = (ort::api().CreateAndRegisterAllocator)(
                env.ptr().cast_mut(),
                memory.ptr(),
                std::ptr::null(),
            );
            ort::Error::result_from_status(status)
        }
    });
    match registered {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(reason = %e, "no shared CPU arena; each model keeps its own");
            false
        }
    }
}

fn load_error_text(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => std::error::Error::source(error)
            .map(|s| s.to_string())
            .unwrap_or_else(|| error.to_string()),
        other => other.to_string(),
    }
}

/// Version from ONNX Runtime's build string (`git-branch=rel-1.31.1, ...`).
fn build_version(info: &str) -> String {
    info.split("rel-")
        .nth(1)
        .and_then(|s| s.split([',', ' ']).next())
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names_and_build_info() {
        assert_eq!(
            version_of(Path::new("/x/libonnxruntime.so.1.31.1")).as_deref(),
            Some("1.31.1")
        );
        assert_eq!(version_of(Path::new("/x/libonnxruntime.so")), None);
        assert_eq!(
            build_version("ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc"),
            "1.31.1"
        );
    }

    #[test]
    fn flag_comes_first() {
        let c = candidates(Some(Path::new("/opt/ort/libonnxruntime.so.1.31.1")));
        assert_eq!(c[0].0, "--ort-lib");
    }

    #[test]
    fn a_checkout_venv_is_found_from_target_release() {
        let root = tempfile::tempdir().unwrap();
        let capi = root
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        let exe_dir = root.path().join("target/release");
        std::fs::create_dir_all(&exe_dir).unwrap();
        let found = checkout_venv_dirs(&exe_dir);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, capi);
        assert!(checkout_venv_dirs(&capi).is_empty());
    }

    #[test]
    fn the_newest_library_is_chosen_by_version_numbers() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.30.0",
            "libother.so.9",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let newest = newest_library(dir.path(), ORT_LIBRARY).unwrap();
        assert!(newest.ends_with("libonnxruntime.so.1.31.1"), "{newest:?}");
        assert_eq!(newest_library(dir.path(), "libnvinfer.so"), None);
    }
}
