//! ONNX Runtime backend of `Model`: opens a session, reads the model's contract from its graph
//! and metadata (input/output names and shapes, patch size, channels), and runs batches.
//!
//! Patch size comes from, in order: the pipeline (`patch_size` / `--model PATH:DxHxW`), the
//! model's `patch_size` metadata, the input's fixed spatial dimensions. Any two of these that
//! disagree, or a patch the fixed input shape cannot take, is an error before inference.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::{Array5, ArrayView5, Axis, Ix4, Ix5};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::{TensorRef, ValueType};
use sha2::{Digest, Sha256};

use super::backend::{Backend, Engine, NoiseOnDevice, SessionOptions, Threads};
use super::model::{capped_batch, Model, ModelError, ModelInfo, Placement, TensorInfo};
use super::noise::DeviceNoise;
use super::openvino;
use super::providers::{self, ProviderPlan, ShapeHint};
use super::runtime::{self, Runtime};
use crate::pipeline::{Device, ModelSpec, OutputDecl};
use crate::regions::{self, Declared};

/// How sessions are made for one run.
#[derive(Debug, Clone)]
pub struct OpenOptions<'a> {
    pub plan: &'a ProviderPlan,
    pub runtime: &'a Runtime,
    pub threads: Threads,
    /// Patches per call for models with a dynamic batch dimension (capped by voxels, see
    /// `window::capped_batch`).
    pub batch_size: usize,
    pub max_batch_voxels: usize,
}

impl OpenOptions<'_> {
    /// The one batch size a GPU session of a dynamic-batch model is pinned to.
    fn gpu_batch(&self, patch: [usize; 3]) -> usize {
        capped_batch(patch, self.batch_size, self.max_batch_voxels)
    }
}

/// The ONNX Runtime backend: the loaded library and how its sessions are made.
pub struct OrtBackend {
    env: &'static ort::environment::Environment,
    runtime: &'static Runtime,
    opts: SessionOptions,
}

impl OrtBackend {
    /// Loads ONNX Runtime (once per process, see `runtime`).
    pub fn new(opts: SessionOptions) -> Result<OrtBackend, ModelError> {
        let (env, runtime) = runtime::init(opts.library.as_deref())?;
        Ok(OrtBackend { env, runtime, opts })
    }

    fn open_options(&self) -> OpenOptions<'_> {
        OpenOptions {
            plan: &self.opts.plan,
            runtime: self.runtime,
            threads: self.opts.threads,
            batch_size: self.opts.batch_size,
            max_batch_voxels: self.opts.max_batch_voxels,
        }
    }
}

impl Backend for OrtBackend {
    fn engine(&self) -> Engine {
        Engine {
            version: self.runtime.version.clone(),
            library: self.runtime.library.clone(),
        }
    }

    fn open(
        &self,
        spec: &ModelSpec,
        channels: &[String],
        noise: Option<NoiseOnDevice>,
    ) -> Result<Box<dyn Model>, ModelError> {
        let opts = self.open_options();
        let mut model = OrtModel::open(self.env, spec, channels, &opts)?;
        if let Some(noise) = noise {
            model.add_device_noise(self.env, &opts, noise.sigma, noise.seed)?;
        }
        Ok(Box::new(model))
    }

    fn describe(&self, path: &Path) -> Result<ModelInfo, ModelError> {
        inspect(self.env, path)
    }
}

/// An ONNX model ready to run patches.
pub struct OrtModel {
    name: String,
    session: Session,
    input_name: String,
    output_name: String,
    patch: [usize; 3],
    batch: Option<usize>,
    /// The one channel read as the model's logit (`output_channel`), else all of them.
    select: Option<usize>,
    /// What the output channels are.
    declared: Declared,
    placement: Placement,
    /// The noise graph run before the model with `ensemble.noise_on: device`.
    noise: Option<DeviceNoise>,
    pub info: ModelInfo,
}

fn read_model(path: &Path) -> Result<(Vec<u8>, String), ModelError> {
    if !path.is_file() {
        return Err(ModelError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ModelError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let digest = Sha256::digest(&bytes);
    let sha = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes, sha))
}

fn build_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    providers: Vec<ort::ep::ExecutionProviderDispatch>,
    threads: Threads,
) -> ort::Result<Session> {
    session_builder(env, providers, threads)?.commit_from_memory(bytes)
}

fn session_builder(
    env: &ort::environment::Environment,
    providers: Vec<ort::ep::ExecutionProviderDispatch>,
    threads: Threads,
) -> ort::Result<SessionBuilder> {
    // ONNX Runtime's CPU memory arena stays on: without it the (16, 256, 256) model runs about
    // 40% slower (its activations are allocated and faulted in on every call), for 15-20% less
    // peak RSS (measured on the demo models with onnxruntime's Python API and the binary).
    // Spinning (ONNX Runtime's own default; `execution.spinning`, off here) bought nothing on
    // two cores in `make bench` (full demo case 102.9 s on vs 104.0 s off, 64^3 13.1 vs
    // 11.8 s) for 6% more CPU time, which other jobs sharing the cores would lose.
    let mut builder = Session::builder(env)?
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)?
        .with_intra_threads(threads.intra)?
        .with_intra_op_spinning(threads.spinning)?;
    if !providers.is_empty() {
        return Ok(builder.with_execution_providers(providers)?);
    }
    // On the CPU, activations come from the arena one by one rather than as one block planned
    // per input shape: the (16, 256, 256) model's arena grows by about 220 MiB less, at the
    // same speed; and the arena is the environment's, shared by every model.
    builder = builder.with_memory_pattern(false)?;
    if super::runtime::shared_cpu_arena() {
        builder = builder.with_env_allocators()?;
    }
    Ok(builder)
}

fn tensor_info(outlet: &ort::value::Outlet) -> TensorInfo {
    match outlet.dtype() {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => TensorInfo {
            name: outlet.name().to_string(),
            element_type: format!("{ty:?}").to_lowercase(),
            shape: shape.iter().copied().collect(),
            dimension_names: dimension_symbols.iter().map(|s| s.to_string()).collect(),
        },
        other => TensorInfo {
            name: outlet.name().to_string(),
            element_type: format!("{other}"),
            shape: Vec::new(),
            dimension_names: Vec::new(),
        },
    }
}

/// Opens a model on the CPU and reads its declared inputs, outputs and metadata.
pub fn inspect(env: &ort::environment::Environment, path: &Path) -> Result<ModelInfo, ModelError> {
    load(env, path, Threads::ONE).map(|(info, _, _)| info)
}

/// Opens a CPU session and reads what the model declares (no contract checks).
fn load(
    env: &ort::environment::Environment,
    path: &Path,
    threads: Threads,
) -> Result<(ModelInfo, Session, Vec<u8>), ModelError> {
    let (bytes, sha256) = read_model(path)?;
    let session =
        build_session(env, &bytes, Vec::new(), threads).map_err(|e| ModelError::Load {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut metadata = BTreeMap::new();
    if let Ok(meta) = session.metadata() {
        for key in meta.custom_keys().unwrap_or_default() {
            if let Some(v) = meta.custom(&key) {
                metadata.insert(key, v);
            }
        }
    }
    let info = ModelInfo {
        path: path.to_path_buf(),
        sha256,
        inputs: session.inputs().iter().map(tensor_info).collect(),
        outputs: session.outputs().iter().map(tensor_info).collect(),
        metadata,
    };
    Ok((info, session, bytes))
}

impl OrtModel {
    /// Opens `spec` for `channels` input channels, checks the model can take them, and puts it
    /// on the first provider of the plan that can be had (see `providers` for the policy).
    pub fn open(
        env: &ort::environment::Environment,
        spec: &ModelSpec,
        channels: &[String],
        opts: &OpenOptions,
    ) -> Result<OrtModel, ModelError> {
        let path = spec.path.as_path();
        let (info, cpu_session, bytes) = load(env, path, opts.threads)?;
        let contract = Contract::check(&info, spec, channels)?;
        let (session, placement) = place(
            env,
            &bytes,
            cpu_session,
            &info,
            &contract,
            channels.len(),
            opts,
        )?;
        let name = spec.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
                .trim_end_matches(".onnx")
                .to_string()
        });
        // a GPU session keeps one input shape, so the batch is pinned even when the graph's is dynamic
        let batch = contract
            .batch
            .or((!placement.device.on_host()).then_some(opts.gpu_batch(contract.patch)));
        Ok(OrtModel {
            name,
            session,
            input_name: contract.input_name,
            output_name: contract.output_name,
            patch: contract.patch,
            batch,
            select: spec.output_channel,
            declared: contract.declared,
            placement,
            noise: None,
            info,
        })
    }

    /// Adds noise N(0, sigma^2) to every batch on this model's own provider before the model
    /// sees it (`predict_noisy`; see `noise` for the stream and how it differs from host noise).
    pub fn add_device_noise(
        &mut self,
        env: &ort::environment::Environment,
        opts: &OpenOptions,
        sigma: f32,
        seed: u64,
    ) -> Result<(), ModelError> {
        // OpenVINO runs on the host: its noise comes from the CPU provider, in host memory
        let (providers, memory) = match self.placement.device {
            Device::Cpu | Device::OpenVino => (Vec::new(), host_memory()),
            Device::Cuda(id) | Device::TensorRt(id) => (
                vec![providers::cuda(id, opts.plan)],
                MemoryInfo::new(
                    AllocationDevice::CUDA,
                    id,
                    AllocatorType::Device,
                    MemoryType::Default,
                ),
            ),
        };
        let fail = |e: ort::Error| ModelError::Load {
            path: self.info.path.clone(),
            reason: format!("cannot build the device-noise graph: {e}"),
        };
        let builder = session_builder(env, providers, opts.threads).map_err(fail)?;
        let noise = DeviceNoise::new(&builder, memory.map_err(fail)?, sigma, seed).map_err(fail)?;
        self.noise = Some(noise);
        Ok(())
    }

    /// How inference errors name the model: its file.
    fn label(&self) -> String {
        self.info.path.display().to_string()
    }
}

/// The session on the first provider of the plan that works.
fn place(
    env: &ort::environment::Environment,
    bytes: &[u8],
    cpu_session: Session,
    info: &ModelInfo,
    contract: &Contract,
    channels: usize,
    opts: &OpenOptions,
) -> Result<(Session, Placement), ModelError> {
    let hint = ShapeHint {
        input_name: contract.input_name.clone(),
        batch: contract.batch.unwrap_or(opts.gpu_batch(contract.patch)),
        channels,
        patch: contract.patch,
        model_sha256: info.sha256.clone(),
    };
    let mut failures = Vec::new();
    let mut cpu_session = Some(cpu_session);
    for (i, &device) in opts.plan.devices.iter().enumerate() {
        let result = match (device, cpu_session.take_if(|_| device == Device::Cpu)) {
            // the CPU provider cannot fail: the plan's first CPU entry ends the search
            (_, Some(session)) => Ok((session, placement_on(device, opts.plan))),
            (Device::OpenVino, None) => openvino_session(env, bytes, &hint, opts),
            (_, None) => accelerator_session(env, bytes, device, &hint, opts)
                .map(|session| (session, placement_on(device, opts.plan))),
        };
        match result {
            Ok((session, placement)) => {
                log_placement(info, &placement);
                return Ok((session, placement));
            }
            Err(e) => {
                let reason = one_line(e);
                let more = i + 1 < opts.plan.devices.len();
                if opts.plan.allow_fallback && more {
                    tracing::warn!(provider = device.provider_name(), %reason, "provider unavailable, falling back");
                    failures.push(format!("{}: {reason}", device.provider_name()));
                    continue;
                }
                return Err(ModelError::Provider(format!(
                    "{}: {} cannot be used: {reason} ({})",
                    info.path.display(),
                    device.provider_name(),
                    provider_hint(device, &reason)
                )));
            }
        }
    }
    Err(ModelError::Provider(format!(
        "{}: no execution provider could be used ({})",
        info.path.display(),
        failures.join("; ")
    )))
}

/// A provider failure's reason on one line (ONNX Runtime's messages end in a newline and may
/// span lines).
fn one_line(e: ModelError) -> String {
    let reason = match e {
        ModelError::Provider(r) => r,
        other => other.to_string(),
    };
    reason.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn log_placement(info: &ModelInfo, placement: &Placement) {
    let model = info.path.display().to_string();
    let provider = placement.device.provider_name();
    match &placement.plugin {
        Some(plugin) => tracing::info!(
            %model, provider, precision = placement.precision,
            plugin_version = %plugin.version, plugin = %plugin.library.display(),
            "model placed"
        ),
        None => tracing::info!(%model, provider, precision = placement.precision, "model placed"),
    }
}

/// A session on a GPU provider (`device` is CUDA or TensorRT), its libraries preloaded.
fn accelerator_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    device: Device,
    hint: &ShapeHint,
    opts: &OpenOptions,
) -> Result<Session, ModelError> {
    let attempt = providers::preload(device, opts.runtime);
    tracing::debug!(
        provider = device.provider_name(),
        preloaded = attempt.len(),
        "gpu libraries preloaded"
    );
    let eps = providers::dispatch(device, opts.plan, hint, opts.runtime)?;
    build_session(env, bytes, eps, opts.threads).map_err(|e| ModelError::Provider(e.to_string()))
}

/// A session on the OpenVINO plugin's CPU device, at the plan's precision, with its compiled
/// model cached (see `openvino`).
fn openvino_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    hint: &ShapeHint,
    opts: &OpenOptions,
) -> Result<(Session, Placement), ModelError> {
    let ov = &opts.plan.openvino;
    let plugin = openvino::register(env, ov.library.as_deref(), opts.runtime)?;
    plugin.check(ov.precision)?;
    let cache = providers::openvino_cache_dir(
        opts.plan,
        &hint.model_sha256,
        opts.runtime,
        &plugin,
        opts.threads.intra,
    )?;
    let config = openvino::load_config(ov.precision, opts.threads.intra, &cache);
    let session = session_builder(env, Vec::new(), opts.threads)
        .and_then(|b| openvino::configure(env, b, &config))
        .and_then(|mut b| b.commit_from_memory(bytes))
        .map_err(|e| ModelError::Provider(e.to_string()))?;
    let mut placement = placement_on(Device::OpenVino, opts.plan);
    placement.plugin = Some(plugin.identity());
    Ok((session, placement))
}

/// A session on `device` as the plan configures it: its precision, no plugin.
fn placement_on(device: Device, plan: &ProviderPlan) -> Placement {
    let precision = match device {
        Device::OpenVino => plan.openvino.precision.name(),
        Device::TensorRt(_) if plan.trt_fp16 => "fp16",
        _ => "f32",
    };
    Placement {
        device,
        precision,
        plugin: None,
    }
}

/// How to get past a provider failure: the driver cannot come from a wheel, the rest can.
fn provider_hint(device: Device, reason: &str) -> &'static str {
    if device == Device::OpenVino {
        "run `make setup` (installs onnxruntime-ep-openvino), set execution.openvino.library or STOCHSEG_OPENVINO_PLUGIN, or use --device cpu"
    } else if reason.contains("libcuda.so") {
        "libcuda.so.1 is the NVIDIA driver: this machine has no usable NVIDIA GPU; allow fallback in the pipeline's execution section, or use --device cpu"
    } else {
        "run `make setup-gpu`, or allow fallback in the pipeline's execution section, or use --device cpu"
    }
}

/// What the pipeline may assume about a model, derived from its graph, metadata and spec.
struct Contract {
    input_name: String,
    output_name: String,
    patch: [usize; 3],
    batch: Option<usize>,
    declared: Declared,
}

impl Contract {
    fn check(
        info: &ModelInfo,
        spec: &ModelSpec,
        channels: &[String],
    ) -> Result<Contract, ModelError> {
        let bad = |reason: String| ModelError::Incompatible {
            path: info.path.clone(),
            reason,
        };
        let input = info
            .inputs
            .first()
            .ok_or_else(|| bad("the model has no input".into()))?;
        let output = info
            .outputs
            .first()
            .ok_or_else(|| bad("the model has no output".into()))?;
        if input.shape.len() != 5 || input.element_type != "float32" {
            return Err(bad(format!(
                "input '{}' must be a 5-D float32 tensor (N, C, D, H, W), got {} {:?}",
                input.name, input.element_type, input.shape
            )));
        }
        if input.shape[1] > 0 && input.shape[1] as usize != channels.len() {
            return Err(bad(format!(
                "input '{}' takes {} channels, the pipeline gives {} ({})",
                input.name,
                input.shape[1],
                channels.len(),
                channels.join(", ")
            )));
        }
        if let Some(declared) = info.metadata.get("channels") {
            let declared: Vec<&str> = declared.split(',').map(str::trim).collect();
            if declared != channels.iter().map(String::as_str).collect::<Vec<_>>() {
                return Err(bad(format!(
                    "model expects channels {declared:?}, the pipeline gives {channels:?}"
                )));
            }
        }
        let patch = Self::patch(info, spec, &input.shape).map_err(bad)?;
        let channels = Self::check_output(output, spec.output_channel, patch).map_err(bad)?;
        let declared = regions::declare(
            &info.path.display().to_string(),
            spec.outputs.as_ref(),
            info.metadata.get("outputs").map(String::as_str),
            spec.output_channel,
            channels,
        )?;
        let batch = (input.shape[0] > 0).then_some(input.shape[0] as usize);
        Ok(Contract {
            input_name: input.name.clone(),
            output_name: output.name.clone(),
            patch,
            batch,
            declared,
        })
    }

    fn patch(
        info: &ModelInfo,
        spec: &ModelSpec,
        input_shape: &[i64],
    ) -> Result<[usize; 3], String> {
        let fixed: Option<[usize; 3]> = input_shape[2..]
            .iter()
            .all(|&d| d > 0)
            .then(|| [2, 3, 4].map(|a| input_shape[a] as usize));
        let meta = match info.metadata.get("patch_size") {
            Some(text) => Some(
                parse_triplet(text)
                    .ok_or_else(|| format!("metadata patch_size '{text}' is not D,H,W"))?,
            ),
            None => None,
        };
        let chosen = spec.patch_size.or(meta).or(fixed).ok_or_else(|| {
            "patch size unknown: the input's spatial dimensions are dynamic and there is no patch_size metadata; give --model PATH:DxHxW or patch_size in the pipeline".to_string()
        })?;
        for (what, other) in [
            ("metadata patch_size", meta),
            ("the input's fixed shape", fixed),
        ] {
            if let Some(o) = other {
                if o != chosen {
                    return Err(format!("patch size {chosen:?} disagrees with {what} {o:?}"));
                }
            }
        }
        Ok(chosen)
    }

    /// Checks the output tensor; returns its channel count where the graph fixes it.
    fn check_output(
        output: &TensorInfo,
        channel: Option<usize>,
        patch: [usize; 3],
    ) -> Result<Option<usize>, String> {
        let s = &output.shape;
        if output.element_type != "float32" || !(s.len() == 4 || s.len() == 5) {
            return Err(format!(
                "output '{}' must be a float32 (N, C, D, H, W) or (N, D, H, W) tensor, got {} {s:?}",
                output.name, output.element_type
            ));
        }
        let channels = match s.len() {
            4 => Some(1),
            _ => (s[1] > 0).then_some(s[1] as usize),
        };
        if let (Some(c), Some(n)) = (channel, channels) {
            if c >= n {
                return Err(format!(
                    "output channel {c} requested, output '{}' has {n} channels",
                    output.name
                ));
            }
        }
        let spatial = &s[s.len() - 3..];
        if spatial
            .iter()
            .zip(patch)
            .any(|(&d, p)| d > 0 && d as usize != p)
        {
            return Err(format!(
                "output '{}' spatial shape {spatial:?} differs from the patch {patch:?}",
                output.name
            ));
        }
        Ok(channels)
    }
}

fn parse_triplet(text: &str) -> Option<[usize; 3]> {
    let v: Vec<usize> = text
        .split([',', 'x', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let t: [usize; 3] = v.try_into().ok()?;
    (!t.contains(&0)).then_some(t)
}

impl Model for OrtModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn placement(&self) -> Placement {
        self.placement.clone()
    }

    fn output_channels(&self) -> usize {
        self.declared.channels
    }

    fn outputs(&self) -> &OutputDecl {
        &self.declared.outputs
    }

    fn patch_size(&self) -> [usize; 3] {
        self.patch
    }

    fn fixed_batch(&self) -> Option<usize> {
        self.batch
    }

    fn prefers_full_batches(&self) -> bool {
        !self.device().on_host()
    }

    fn predict(&mut self, batch: ArrayView5<f32>) -> Result<Array5<f32>, ModelError> {
        let shape = self.output_shape(batch.shape()[0]);
        let label = self.label();
        let fail = |e: ort::Error| ModelError::Inference {
            model: label.clone(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(batch).map_err(fail)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(fail)?;
        logits(&outputs[self.output_name.as_str()], shape, &label)
    }

    /// The noise graph's output stays on the device and is bound as the model's input (an
    /// `IoBinding`); only the logits come back to the host.
    fn predict_noisy(
        &mut self,
        batch: ArrayView5<f32>,
        mask: ArrayView5<f32>,
    ) -> Result<Array5<f32>, ModelError> {
        let shape = self.output_shape(batch.shape()[0]);
        let label = self.label();
        let fail = |e: ort::Error| ModelError::Inference {
            model: label.clone(),
            reason: e.to_string(),
        };
        let Some(noise) = self.noise.as_mut() else {
            return Err(ModelError::Inference {
                model: label,
                reason: "no device-noise graph was built for this model".to_string(),
            });
        };
        let noisy = noise.apply(batch, mask).map_err(fail)?;
        let mut binding = self.session.create_binding().map_err(fail)?;
        binding
            .bind_input(self.input_name.as_str(), &noisy)
            .map_err(fail)?;
        binding
            .bind_output_to_device(self.output_name.as_str(), &host_memory().map_err(fail)?)
            .map_err(fail)?;
        let outputs = self.session.run_binding(&binding).map_err(fail)?;
        logits(&outputs[self.output_name.as_str()], shape, &label)
    }
}

impl OrtModel {
    /// What one call must give back for `n` patches.
    fn output_shape(&self, n: usize) -> OutputShape {
        let [d, h, w] = self.patch;
        OutputShape {
            logits: [n, self.declared.channels, d, h, w],
            select: self.select,
        }
    }
}

/// The logits a call must return, `(N, K, D, H, W)`: the declared channels, or channel
/// `select` of the output (a 4-D output is one channel).
#[derive(Debug, Clone, Copy)]
struct OutputShape {
    logits: [usize; 5],
    select: Option<usize>,
}

fn host_memory() -> ort::Result<MemoryInfo<'static>> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )
}

/// The logits of one call, checked for shape and finite values.
fn logits(
    value: &ort::value::DynValue,
    shape: OutputShape,
    label: &str,
) -> Result<Array5<f32>, ModelError> {
    let fail = |reason: String| ModelError::Inference {
        model: label.to_string(),
        reason,
    };
    let view = value
        .try_extract_array::<f32>()
        .map_err(|e| fail(e.to_string()))?;
    let selected = match (view.ndim(), shape.select) {
        (5, None) => view.into_dimensionality::<Ix5>().ok(),
        (5, Some(c)) => view
            .into_dimensionality::<Ix5>()
            .ok()
            .filter(|v| c < v.shape()[1])
            .map(|v| v.slice_move(ndarray::s![.., c..c + 1, .., .., ..])),
        (4, _) => view
            .into_dimensionality::<Ix4>()
            .ok()
            .map(|v| v.insert_axis(Axis(1))),
        _ => None,
    };
    let out = match selected {
        Some(v) if v.shape() == shape.logits => v.to_owned(),
        _ => {
            return Err(fail(format!(
                "output has shape {:?}, expected {:?}",
                value.shape(),
                shape.logits
            )))
        }
    };
    let bad = out.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(ModelError::NonFinite {
            model: label.to_string(),
            count: bad,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_driver_is_named_as_such() {
        let cuda = Device::Cuda(0);
        assert!(
            provider_hint(cuda, "libcuda.so.1: cannot open shared object file")
                .contains("NVIDIA driver")
        );
        assert!(provider_hint(cuda, "libcudnn.so.9: cannot open").contains("make setup-gpu"));
        assert!(provider_hint(Device::OpenVino, "not found").contains("onnxruntime-ep-openvino"));
    }

    #[test]
    fn triplets() {
        assert_eq!(parse_triplet("16,64,64"), Some([16, 64, 64]));
        assert_eq!(parse_triplet("16x32x32"), Some([16, 32, 32]));
        assert_eq!(parse_triplet("16,64"), None);
    }
}
