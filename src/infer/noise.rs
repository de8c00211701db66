//! Noise on the device (`ensemble.noise_on: device`): a small ONNX graph, built in memory with
//! ONNX Runtime's model editor API, that adds seeded Gaussian noise to a batch of patches where a
//! mask is 1,
//!
//! ```text
//! noisy = x + RandomNormalLike(x; mean 0, scale sigma, seed) * mask
//! ```
//!
//! It runs on the U-Net's own execution provider, and its output is handed to the U-Net through
//! an `IoBinding` (see `OrtModel::predict_noisy`), so on a GPU the noisy batch is made on the GPU
//! and never crosses to the host.
//!
//! How it differs from host noise (`noise_on: host`, the reference, `ensemble::add_noise`):
//! - the random stream is ONNX Runtime's (on the CPU a `std::default_random_engine`, on CUDA a
//!   Philox generator), seeded once per model from `(seed, model)` and advanced call by call: a
//!   run is reproducible for the same seed, batch size, provider and ONNX Runtime version, but the
//!   draws are not those of the host stream;
//! - noise is drawn per patch: a voxel covered by several overlapping windows gets an independent
//!   draw in each, where host noise gives it one draw per pass shared by all its windows. Every
//!   window still sees i.i.d. N(0, sigma^2) noise on its voxels (the same distribution), but the
//!   stitched map of a pass averages over more independent draws, so the spread between passes
//!   comes out smaller than with host noise.

use ndarray::ArrayView5;
use ort::editor::{Graph, Model, Node, Opset, ONNX_DOMAIN};
use ort::memory::MemoryInfo;
use ort::operator::Attribute;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::ValueType;
use ort::value::{DynValue, Outlet, Shape, SymbolicDimensions, Tensor, TensorElementType};

/// ONNX opset of the graph: `RandomNormalLike` has kernels in ONNX Runtime's CPU and CUDA
/// providers up to opset 21 (version 22 of the operator, which adds bfloat16, has none in 1.31).
const OPSET: u32 = 21;

/// Seeds of `RandomNormalLike` are floats: keep them exact (below 2^24).
const SEED_BITS: u32 = 24;

/// The `RandomNormalLike` seed for a 64-bit stream seed: its top `SEED_BITS` bits, a whole
/// number below 2^24 that an f32 holds exactly (ONNX Runtime turns the attribute back into an
/// integer seed).
fn float_seed(seed: u64) -> f32 {
    (seed >> (64 - SEED_BITS)) as f32
}

/// The noise graph of one model, as a session on that model's provider.
pub struct DeviceNoise {
    session: Session,
    /// Where the noisy batch is kept: the provider's device memory.
    memory: MemoryInfo<'static>,
}

impl DeviceNoise {
    /// Builds the graph and opens it with `builder` (the model's provider); the noisy batch is
    /// kept in `memory`. `seed` is reduced to a float-exact `RandomNormalLike` seed.
    pub fn new(
        builder: &SessionBuilder,
        memory: MemoryInfo<'static>,
        sigma: f32,
        seed: u64,
    ) -> ort::Result<DeviceNoise> {
        // (N, C, D, H, W), dynamic but for the mask's one channel
        let batch = |name: &str, channels: i64| {
            let symbol = if channels < 0 { "C" } else { "" };
            Outlet::new(
                name,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape: Shape::new([-1, channels, -1, -1, -1]),
                    dimension_symbols: SymbolicDimensions::new(
                        ["N", symbol, "D", "H", "W"].map(String::from),
                    ),
                },
            )
        };
        let mut graph = Graph::new()?;
        graph.set_inputs([batch("x", -1), batch("mask", 1)])?;
        graph.set_outputs([batch("noisy", -1)])?;
        graph.add_node(Node::new(
            "RandomNormalLike",
            ONNX_DOMAIN,
            "draw",
            ["x"],
            ["eps"],
            [
                Attribute::new("mean", 0.0f32)?,
                Attribute::new("scale", sigma)?,
                Attribute::new("seed", float_seed(seed))?,
            ],
        )?)?;
        graph.add_node(Node::new(
            "Mul",
            ONNX_DOMAIN,
            "where",
            ["eps", "mask"],
            ["masked"],
            [],
        )?)?;
        graph.add_node(Node::new(
            "Add",
            ONNX_DOMAIN,
            "add",
            ["x", "masked"],
            ["noisy"],
            [],
        )?)?;
        let mut model = Model::new([Opset::new(ONNX_DOMAIN, OPSET)?])?;
        model.set_graph(graph)?;
        Ok(DeviceNoise {
            session: model.into_session(builder)?,
            memory,
        })
    }

    /// `x + noise * mask` for one batch (`x` `(N, C, D, H, W)`, `mask` `(N, 1, D, H, W)`), left
    /// in the provider's memory.
    pub fn apply(&mut self, x: ArrayView5<f32>, mask: ArrayView5<f32>) -> ort::Result<DynValue> {
        // owned copies: ort 2.0.0-rc.15 clones a borrowed tensor bound to an IoBinding through
        // an identity session that binds it again, and deadlocks on its own lock
        let x = Tensor::from_array(x.to_owned())?;
        let mask = Tensor::from_array(mask.to_owned())?;
        let mut binding = self.session.create_binding()?;
        binding.bind_input("x", &x)?;
        binding.bind_input("mask", &mask)?;
        binding.bind_output_to_device("noisy", &self.memory)?;
        let mut outputs = self.session.run_binding(&binding)?;
        outputs
            .remove("noisy")
            .ok_or_else(|| ort::Error::new("the noise graph gave no output"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top 24 bits of `seed`, read from its big-endian bytes (not by shifting).
    fn top_three_bytes(seed: u64) -> u64 {
        let b = seed.to_be_bytes();
        u64::from(b[0]) * 65_536 + u64::from(b[1]) * 256 + u64::from(b[2])
    }

    #[test]
    fn seeds_stay_exact_as_floats() {
        // seeds spread over the whole u64 range (a Weyl sequence), and the extremes
        let spread = (0..10_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let edges = [
            0u64,
            1,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 40) - 1,
            1 << 40,
        ];
        for seed in spread.chain(edges) {
            let f = float_seed(seed);
            // a whole number below 2^24, so the f32 is exact and ONNX Runtime's integer
            // conversion gives it back unchanged
            assert!(
                f.fract() == 0.0 && (0.0..16_777_216.0).contains(&f),
                "{seed}: {f}"
            );
            assert_eq!(f64::from(f), top_three_bytes(seed) as f64, "seed {seed:#x}");
        }
        // seeds that differ in any of their top 24 bits give different float seeds
        let base = 0x0123_4567_89ab_cdefu64;
        for bit in 40..64 {
            assert_ne!(float_seed(base), float_seed(base ^ (1 << bit)), "bit {bit}");
        }
    }
}
