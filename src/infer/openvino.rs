//! The OpenVINO execution provider: a plugin library of ONNX Runtime (PyPI
//! `onnxruntime-ep-openvino`, `onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so`
//! with OpenVINO and TBB beside it), registered with the environment once per process and put
//! on a session through its CPU EP device (`SessionOptionsAppendExecutionProvider_V2`).
//!
//! Where the plugin comes from, in order: `execution.openvino.library`, else
//! `$STOCHSEG_OPENVINO_PLUGIN` (either one is then the only candidate), else the
//! `onnxruntime_ep_openvino` package beside the loaded ONNX Runtime library (an installed tree,
//! `lib/stochseg/`), else in the site-packages folder of the loaded ONNX Runtime (a venv).
//! A missing plugin, one that does not register, or one without a CPU device is an error naming
//! the places tried: never a silent run on ONNX Runtime's CPU provider (sessions are also built
//! with the CPU fallback for unsupported nodes turned off).
//!
//! The plugin ignores the provider options `device_type`, `precision`, `num_of_threads` and
//! `cache_dir` (plugin 1.8.1 says so in a warning): precision, threads and the cache go in
//! `load_config`, a JSON object keyed by OpenVINO device, given inline. bf16 is offered only
//! where the plugin's CPU device lists `BF16` among its `OPTIMIZATION_CAPABILITIES` (AVX512_BF16
//! or AMX); OpenVINO itself would fall back to f32 in silence.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::builder::SessionBuilder;
use ort::AsPointer;

use super::model::{ModelError, PluginIdentity};
use super::runtime::Runtime;
use crate::pipeline::Precision;

/// The provider's name, as the plugin's EP devices give it.
pub const EP_NAME: &str = "OpenVINOExecutionProvider";
/// The environment variable naming the plugin library.
pub const PLUGIN_ENV: &str = "STOCHSEG_OPENVINO_PLUGIN";
const PLUGIN_FILE: &str = "libonnxruntime_providers_openvino_plugin.so";
const PLUGIN_PACKAGE: &str = "onnxruntime_ep_openvino";
/// The name the library is registered under with the environment.
const REGISTRATION: &str = "stochseg-openvino";

/// The registered plugin and what its CPU device reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub library: PathBuf,
    /// The plugin's version (EP metadata `version`, e.g. `1.8.1+95d534b.ci.79`).
    pub version: String,
    /// `OPTIMIZATION_CAPABILITIES` of the CPU device (`FP32`, `BF16`, ...).
    pub capabilities: Vec<String>,
    /// `FULL_DEVICE_NAME` of the CPU device.
    pub device_name: String,
}

impl Plugin {
    /// The library and version, as placements record them.
    pub fn identity(&self) -> PluginIdentity {
        PluginIdentity {
            library: self.library.clone(),
            version: self.version.clone(),
        }
    }

    /// Whether OpenVINO can run `precision` on this CPU.
    pub fn offers(&self, precision: Precision) -> bool {
        match precision {
            Precision::F32 => true,
            Precision::Bf16 => self.capabilities.iter().any(|c| c == "BF16"),
        }
    }

    /// `precision`, or why this CPU cannot run it.
    pub fn check(&self, precision: Precision) -> Result<(), ModelError> {
        if self.offers(precision) {
            return Ok(());
        }
        Err(ModelError::Provider(format!(
            "OpenVINO offers no {} on this CPU ({}; capabilities {}): it needs AVX512_BF16 or AMX; use precision f32",
            precision.name(),
            self.device_name,
            self.capabilities.join(" ")
        )))
    }
}

static PLUGIN: Mutex<Option<Plugin>> = Mutex::new(None);

/// Candidate plugin paths, in search order, each with where it came from. An explicit choice
/// (the config, else the environment variable) is the only candidate.
pub fn candidates(configured: Option<&Path>, runtime: &Runtime) -> Vec<(String, PathBuf)> {
    if let Some(p) = configured {
        return vec![("execution.openvino.library".into(), p.to_path_buf())];
    }
    if let Some(p) = std::env::var_os(PLUGIN_ENV).filter(|p| !p.is_empty()) {
        return vec![(PLUGIN_ENV.into(), PathBuf::from(p))];
    }
    // an installed tree keeps the package beside the library (lib/stochseg/onnxruntime_ep_openvino),
    // a venv in site-packages beside the onnxruntime package (.../onnxruntime/capi/libonnxruntime.so.X)
    let lib_dir = runtime.library.parent();
    let site = lib_dir.and_then(Path::parent).and_then(Path::parent);
    [
        ("beside the loaded ONNX Runtime", lib_dir),
        ("in the loaded ONNX Runtime's site-packages", site),
    ]
    .into_iter()
    .filter_map(|(origin, dir)| {
        Some((
            origin.to_string(),
            dir?.join(PLUGIN_PACKAGE).join(PLUGIN_FILE),
        ))
    })
    .collect()
}

/// Registers the plugin with `env` (once per process) and reads its CPU device.
pub fn register(
    env: &ort::environment::Environment,
    configured: Option<&Path>,
    runtime: &Runtime,
) -> Result<Plugin, ModelError> {
    let mut slot = PLUGIN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tried = candidates(configured, runtime);
    let Some((_, found)) = tried.iter().find(|(_, p)| p.is_file()) else {
        let places: Vec<String> = tried
            .iter()
            .map(|(origin, p)| format!("{} ({origin})", p.display()))
            .collect();
        return Err(ModelError::Provider(format!(
            "OpenVINO plugin not found; tried: {}",
            if places.is_empty() {
                "nothing (no ONNX Runtime folder to look beside)".to_string()
            } else {
                places.join("; ")
            }
        )));
    };
    // ONNX Runtime would resolve a relative path against its own folder
    let library = &std::path::absolute(found).unwrap_or_else(|_| found.clone());
    if let Some(plugin) = slot.as_ref() {
        if &plugin.library == library {
            return Ok(plugin.clone());
        }
        return Err(ModelError::Provider(format!(
            "{}: another OpenVINO plugin ({}) is already registered in this process",
            library.display(),
            plugin.library.display()
        )));
    }
    env.register_ep_library(REGISTRATION, library)
        .map_err(|e| {
            ModelError::Provider(format!(
                "{}: cannot register the OpenVINO plugin: {e}",
                library.display()
            ))
        })?;
    let metadata = cpu_device(env).map(|d| ep_metadata(&d)).ok_or_else(|| {
        ModelError::Provider(format!(
            "{}: the OpenVINO plugin offers no CPU device (its devices: {})",
            library.display(),
            plugin_devices(env).join(", ")
        ))
    })?;
    let plugin = Plugin {
        library: library.clone(),
        version: metadata.get("version").cloned().unwrap_or_default(),
        capabilities: metadata
            .get("OPTIMIZATION_CAPABILITIES")
            .map(|c| c.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        device_name: metadata
            .get("FULL_DEVICE_NAME")
            .cloned()
            .unwrap_or_default(),
    };
    *slot = Some(plugin.clone());
    Ok(plugin)
}

/// The plugin's EP device on the CPU (not its AUTO meta-device).
fn cpu_device(env: &ort::environment::Environment) -> Option<ort::device::Device<'_>> {
    env.devices().find(|d| {
        d.ep().ok() == Some(EP_NAME)
            && ep_metadata(d).get("ov_device").map(String::as_str) == Some("CPU")
    })
}

/// `EP/ov_device` of every device the plugin registered, for errors.
fn plugin_devices(env: &ort::environment::Environment) -> Vec<String> {
    let found: Vec<String> = env
        .devices()
        .filter(|d| d.ep().is_ok_and(|n| n.starts_with(EP_NAME)))
        .map(|d| {
            let meta = ep_metadata(&d);
            format!(
                "{}/{}",
                d.ep().unwrap_or("?"),
                meta.get("ov_device").map(String::as_str).unwrap_or("?")
            )
        })
        .collect();
    if found.is_empty() {
        vec!["none".into()]
    } else {
        found
    }
}

/// An EP device's metadata (`version`, `ov_device`, `OPTIMIZATION_CAPABILITIES`, ...); `ort`
/// has no wrapper for it, so this reads ONNX Runtime's key-value pairs directly.
fn ep_metadata(device: &ort::device::Device<'_>) -> BTreeMap<String, String> {
    let api = ort::api();
    let mut out = BTreeMap::new();
    // SAFETY: the device pointer is live for the environment's lifetime; ONNX Runtime owns the
    // pairs it returns (not freed here) and fills `n` keys and values, each a C string.
    unsafe {
        let pairs = (api.EpDevice_EpMetadata)(device.ptr());
        if pairs.is_null() {
            return out;
        }
        let (mut keys, mut values, mut n) = (std::ptr::null(), std::ptr::null(), 0usize);
        (api.GetKeyValuePairs)(pairs, &mut keys, &mut values, &mut n);
        if keys.is_null() || values.is_null() {
            return out;
        }
        for i in 0..n {
            let (k, v) = (*keys.add(i), *values.add(i));
            if k.is_null() || v.is_null() {
                continue;
            }
            out.insert(
                CStr::from_ptr(k).to_string_lossy().into_owned(),
                CStr::from_ptr(v).to_string_lossy().into_owned(),
            );
        }
    }
    out
}

/// The `load_config` value: OpenVINO's CPU properties for one session.
pub fn load_config(precision: Precision, threads: usize, cache_dir: &Path) -> String {
    serde_json::json!({
        "CPU": {
            "INFERENCE_PRECISION_HINT": precision.name(),
            "INFERENCE_NUM_THREADS": threads.to_string(),
            "CACHE_DIR": cache_dir.display().to_string(),
        }
    })
    .to_string()
}

/// Puts `builder`'s session on the plugin's CPU device with `load_config`; nodes OpenVINO
/// cannot run make the session fail instead of running on the CPU provider.
pub fn configure(
    env: &ort::environment::Environment,
    builder: SessionBuilder,
    load_config: &str,
) -> ort::Result<SessionBuilder> {
    let device = cpu_device(env).ok_or_else(|| ort::Error::new("no OpenVINO CPU device"))?;
    let options = [(format!("{EP_NAME}.load_config"), load_config.to_string())];
    Ok(builder
        .with_disable_cpu_fallback()?
        .with_devices([device], Some(&options))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(capabilities: &str) -> Plugin {
        Plugin {
            library: PathBuf::from("/p/libonnxruntime_providers_openvino_plugin.so"),
            version: "1.8.1".into(),
            capabilities: capabilities.split_whitespace().map(String::from).collect(),
            device_name: "Intel(R) Xeon(R) Processor".into(),
        }
    }

    #[test]
    fn bf16_is_offered_only_where_openvino_lists_it() {
        let amx = plugin("BF16 WINOGRAD FP32 FP16 INT8 BIN EXPORT_IMPORT");
        assert!(amx.check(Precision::Bf16).is_ok());
        let avx2 = plugin("WINOGRAD FP32 FP16 INT8 BIN EXPORT_IMPORT");
        assert!(avx2.check(Precision::F32).is_ok());
        let e = avx2.check(Precision::Bf16).unwrap_err().to_string();
        assert!(
            e.contains("no bf16") && e.contains("use precision f32"),
            "{e}"
        );
        assert!(e.contains("FP32 FP16"), "{e}");
    }

    #[test]
    fn the_plugin_is_looked_for_beside_the_runtime_unless_named() {
        let rt = Runtime {
            library: PathBuf::from(
                "/v/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
            ),
            version: "1.31.1".into(),
        };
        let named = candidates(Some(Path::new("/opt/ov.so")), &rt);
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].0, "execution.openvino.library");
        if std::env::var_os(PLUGIN_ENV).is_none() {
            let found: Vec<PathBuf> = candidates(None, &rt).into_iter().map(|c| c.1).collect();
            assert_eq!(
                found,
                [
                    "/v/lib/python3.11/site-packages/onnxruntime/capi/onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so",
                    "/v/lib/python3.11/site-packages/onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so",
                ]
                .map(PathBuf::from)
            );
            let installed = Runtime {
                library: PathBuf::from("/usr/local/lib/stochseg/libonnxruntime.so.1.31.1"),
                version: "1.31.1".into(),
            };
            assert_eq!(
                candidates(None, &installed)[0].1,
                Path::new("/usr/local/lib/stochseg/onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so")
            );
        }
    }

    #[test]
    fn load_config_carries_precision_threads_and_cache() {
        let text = load_config(Precision::Bf16, 2, Path::new("/c/x"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["CPU"]["INFERENCE_PRECISION_HINT"], "bf16");
        assert_eq!(v["CPU"]["INFERENCE_NUM_THREADS"], "2");
        assert_eq!(v["CPU"]["CACHE_DIR"], "/c/x");
    }
}
