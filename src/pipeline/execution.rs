//! The `execution` section: where the models run (`Device`, parsed once from `cpu`,
//! `cuda[:N]`, `tensorrt[:N]`, `openvino`), fallback, threads, and each provider's options.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Execution {
    pub providers: Vec<Device>,
    pub allow_fallback: bool,
    pub tensorrt: TensorRtOptions,
    pub cuda: CudaOptions,
    pub openvino: OpenVinoOptions,
    pub threads: usize,
    /// ONNX Runtime's intra-op threads spin between ops instead of sleeping.
    pub spinning: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtOptions {
    /// Engine and timing caches; empty = `$XDG_CACHE_HOME/stochseg/tensorrt`.
    pub cache_dir: String,
    pub fp16: bool,
}

/// Where a model's session runs: one entry of `execution.providers` (and `--device`), parsed
/// once when the config is read and written back as its canonical spelling (`cpu`, `cuda`,
/// `cuda:1`, `tensorrt`, `tensorrt:1`, `openvino`; device 0 is written without its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's own CPU provider.
    Cpu,
    Cuda(i32),
    TensorRt(i32),
    /// The OpenVINO plugin provider on the CPU.
    OpenVino,
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `tensorrt`, `tensorrt:N`, `openvino`.
    pub fn parse(s: &str) -> Option<Device> {
        let (kind, id) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n.parse::<i32>().ok().filter(|&n| n >= 0)?)),
            None => (s, None),
        };
        match (kind, id) {
            ("cpu", None) => Some(Device::Cpu),
            ("openvino", None) => Some(Device::OpenVino),
            ("cuda", id) => Some(Device::Cuda(id.unwrap_or(0))),
            ("tensorrt", id) => Some(Device::TensorRt(id.unwrap_or(0))),
            _ => None,
        }
    }

    /// The execution provider's name as ONNX Runtime reports it.
    pub fn provider_name(self) -> &'static str {
        match self {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda(_) => "CUDAExecutionProvider",
            Device::TensorRt(_) => "TensorrtExecutionProvider",
            Device::OpenVino => "OpenVINOExecutionProvider",
        }
    }

    /// Whether the model runs on the host's cores (the CPU and OpenVINO providers), rather
    /// than on a GPU while the cores are free for other work.
    pub fn on_host(self) -> bool {
        matches!(self, Device::Cpu | Device::OpenVino)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Device::Cpu => f.write_str("cpu"),
            Device::OpenVino => f.write_str("openvino"),
            Device::Cuda(0) => f.write_str("cuda"),
            Device::TensorRt(0) => f.write_str("tensorrt"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

/// A device name that is none of `cpu`, `cuda[:N]`, `tensorrt[:N]`, `openvino`.
#[derive(Debug, thiserror::Error)]
#[error("unknown device '{text}': use cpu, cuda[:N], tensorrt[:N] or openvino")]
pub struct UnknownDevice {
    pub text: String,
}

impl std::str::FromStr for Device {
    type Err = UnknownDevice;
    fn from_str(s: &str) -> Result<Device, UnknownDevice> {
        Device::parse(s).ok_or_else(|| UnknownDevice {
            text: s.to_string(),
        })
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The OpenVINO provider (`execution.openvino`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenVinoOptions {
    /// The plugin library; empty = `$STOCHSEG_OPENVINO_PLUGIN`, else the
    /// `onnxruntime_ep_openvino` package beside the loaded ONNX Runtime.
    pub library: String,
    pub precision: Precision,
    /// Compiled models; empty = `$XDG_CACHE_HOME/stochseg/openvino`.
    pub cache_dir: String,
}

/// Arithmetic precision OpenVINO runs the models in (`INFERENCE_PRECISION_HINT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Results match ONNX Runtime's CPU provider.
    #[default]
    F32,
    /// bfloat16 arithmetic, on CPUs that have it (AVX512_BF16 or AMX).
    Bf16,
}

impl Precision {
    /// The name the config, the report and OpenVINO use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    pub conv_algorithm_search: ConvSearch,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvSearch {
    #[default]
    Exhaustive,
    Heuristic,
    Default,
}

impl Default for Execution {
    fn default() -> Self {
        Execution {
            providers: vec![Device::Cpu],
            allow_fallback: false,
            tensorrt: TensorRtOptions::default(),
            cuda: CudaOptions::default(),
            openvino: OpenVinoOptions::default(),
            threads: 0,
            spinning: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use std::path::Path;

    #[test]
    fn devices_parse_and_print_back() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("openvino", Device::OpenVino),
            ("cuda", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("tensorrt", Device::TensorRt(0)),
            ("tensorrt:2", Device::TensorRt(2)),
        ] {
            assert_eq!(Device::parse(text), Some(device), "{text}");
            assert_eq!(device.to_string(), text);
        }
        // device 0 is written without its index
        assert_eq!(Device::parse("cuda:0").unwrap().to_string(), "cuda");
        for bad in ["cpu:1", "openvino:0", "gpu", "cuda:-1", "cuda:", ""] {
            assert_eq!(Device::parse(bad), None, "{bad}");
        }
        assert!(Device::OpenVino.on_host() && !Device::Cuda(0).on_host());
    }

    #[test]
    fn providers_are_typed_at_load_and_written_back_as_strings() {
        let yaml = "models: [{path: m.onnx}]\nexecution: {providers: [openvino, cuda:1, cpu], openvino: {precision: bf16}}";
        let p = Pipeline::from_yaml(yaml, Path::new(".")).unwrap();
        assert_eq!(
            p.execution.providers,
            [Device::OpenVino, Device::Cuda(1), Device::Cpu]
        );
        assert_eq!(p.execution.openvino.precision, Precision::Bf16);
        let v = serde_json::to_value(&p.execution).unwrap();
        assert_eq!(
            v["providers"],
            serde_json::json!(["openvino", "cuda:1", "cpu"])
        );
        assert_eq!(v["openvino"]["precision"], "bf16");
        let e = Pipeline::from_yaml(
            "models: [{path: m.onnx}]\nexecution: {providers: [npu]}",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/execution/providers"), "{e}");
    }
}
