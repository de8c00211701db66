//! The layout of the run's random streams: every random draw comes from the ensemble's seed
//! through one of these, so the same seed gives the same bytes whatever the thread count, batch
//! size or order of work.
//!
//! - Host noise (`ensemble.noise_on: host`, the reference): one ChaCha8 stream per
//!   `(model, pass, channel, slice)` of the canonical crop, so slices can be filled in any order
//!   and on any thread.
//! - Device noise (`noise_on: device`): one seed per model for the noise graph on the model's
//!   own provider (`infer::noise`), advanced by ONNX Runtime call by call.
//!
//! Each stream's seed mixes the ensemble seed with its coordinates (SplitMix64's finalizer per
//! word); the device streams use a pass coordinate no host stream has (`u64::MAX`).

/// The random streams of one run.
#[derive(Debug, Clone, Copy)]
pub struct NoiseStreams {
    seed: u64,
}

impl NoiseStreams {
    pub fn new(seed: u64) -> NoiseStreams {
        NoiseStreams { seed }
    }

    /// Seed of the host noise of `(model, pass, channel, slice)`.
    pub fn host(self, model: usize, pass: usize, channel: usize, slice: usize) -> u64 {
        mix(
            self.seed,
            [model as u64, pass as u64, channel as u64, slice as u64],
        )
    }

    /// Seed of the device noise stream of `model`.
    pub fn device(self, model: usize) -> u64 {
        mix(self.seed, [model as u64, u64::MAX, 0, 0])
    }
}

/// Mixes the stream coordinates into one seed (SplitMix64 finalizer per word).
fn mix(seed: u64, words: [u64; 4]) -> u64 {
    let finalize = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    words.iter().fold(finalize(seed), |acc, &w| {
        finalize(acc ^ finalize(w.wrapping_add(0x9e37_79b9_7f4a_7c15)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every coordinate changes the stream, and device streams never meet host streams of
    /// small pass numbers.
    #[test]
    fn streams_differ_by_every_coordinate() {
        let s = NoiseStreams::new(7);
        let base = s.host(1, 2, 3, 4);
        for other in [s.host(0, 2, 3, 4), s.host(1, 3, 3, 4), s.host(1, 2, 0, 4)] {
            assert_ne!(base, other);
        }
        assert_ne!(base, s.host(1, 2, 3, 5));
        assert_ne!(base, NoiseStreams::new(8).host(1, 2, 3, 4));
        let hosts: Vec<u64> = (0..30).map(|p| s.host(0, p, 0, 0)).collect();
        assert!(!hosts.contains(&s.device(0)));
        assert_ne!(s.device(0), s.device(1));
        assert_eq!(s.host(1, 2, 3, 4), NoiseStreams::new(7).host(1, 2, 3, 4));
    }
}
