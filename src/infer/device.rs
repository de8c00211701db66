//! Where a model's session runs: the CPU or a GPU by index, with the execution provider's name
//! as ONNX Runtime reports it.

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
    TensorRt(i32),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `tensorrt`, `tensorrt:N`.
    pub fn parse(s: &str) -> Option<Device> {
        let (kind, id) = match s.split_once(':') {
            Some((k, n)) => (k, n.parse::<i32>().ok().filter(|&n| n >= 0)?),
            None => (s, 0),
        };
        match kind {
            "cpu" if !s.contains(':') => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(id)),
            "tensorrt" => Some(Device::TensorRt(id)),
            _ => None,
        }
    }

    /// The execution provider's name as ONNX Runtime reports it.
    pub fn provider_name(self) -> &'static str {
        match self {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda(_) => "CUDAExecutionProvider",
            Device::TensorRt(_) => "TensorrtExecutionProvider",
        }
    }
}
