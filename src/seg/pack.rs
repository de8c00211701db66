//! Pixel data of a BINARY segmentation (PS3.5 8.1.1 with BitsAllocated 1): all frames form one
//! contiguous bit stream, pixel `n` of the stream (frames in order, rows top to bottom, columns
//! left to right) is bit `n % 8` of byte `n / 8`, least significant bit first. There is no
//! padding at the end of a frame, only the total is padded to an even number of bytes. (DCMTK
//! before the fix of dcmqi #341 and dcmjs #66 padded per frame; that is wrong when Rows x Columns
//! is not a multiple of 8.)

/// Accumulates pixels into the LSB-first bit stream.
#[derive(Debug, Clone, Default)]
pub struct BitPacker {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitPacker {
    /// A packer with room for `pixels` pixels.
    pub fn with_capacity(pixels: usize) -> BitPacker {
        BitPacker {
            bytes: Vec::with_capacity(pixels.div_ceil(8) + 1),
            bits: 0,
        }
    }

    /// Appends one pixel.
    pub fn push(&mut self, set: bool) {
        let bit = self.bits % 8;
        if bit == 0 {
            self.bytes.push(0);
        }
        if set {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 1 << bit;
            }
        }
        self.bits += 1;
    }

    /// Appends a frame (or any run of pixels) in order.
    pub fn extend<I: IntoIterator<Item = bool>>(&mut self, pixels: I) {
        for p in pixels {
            self.push(p);
        }
    }

    /// Pixels pushed so far.
    pub fn len(&self) -> usize {
        self.bits
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The stream, `ceil(pixels / 8)` bytes padded with one zero byte to an even length.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.bytes.len().is_multiple_of(2) {
            self.bytes.push(0);
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 frames of 11 rows x 13 columns (143 pixels a frame, not a multiple of 8).
    fn pattern(f: usize, r: usize, c: usize) -> bool {
        (f * 7 + r * 3 + c * 5) % 11 < 4 || (r * 13 + c).is_multiple_of(17)
    }

    #[test]
    fn frames_are_one_contiguous_lsb_first_stream() {
        let mut p = BitPacker::with_capacity(3 * 11 * 13);
        for f in 0..3 {
            for r in 0..11 {
                p.extend((0..13).map(|c| pattern(f, r, c)));
            }
        }
        assert_eq!(p.len(), 429);
        // Independent expectation, computed once with numpy:
        //   f, r, c = np.meshgrid(np.arange(3), np.arange(11), np.arange(13), indexing="ij")
        //   m = ((f * 7 + r * 3 + c * 5) % 11 < 4) | ((r * 13 + c) % 17 == 0)
        //   np.packbits(m.ravel(), bitorder="little").tolist()
        // (54 bytes = ceil(429 / 8), already even, so no padding byte)
        let expected: [u8; 54] = [
            161, 170, 10, 9, 85, 85, 88, 168, 184, 130, 98, 69, 85, 21, 138, 170, 168, 209, 133,
            138, 43, 42, 22, 84, 85, 161, 169, 170, 26, 9, 117, 85, 88, 168, 168, 66, 21, 146, 170,
            170, 177, 80, 83, 5, 133, 138, 42, 42, 20, 84, 113, 161, 225, 10,
        ];
        assert_eq!(p.finish(), expected);
    }

    #[test]
    fn odd_byte_count_is_padded_once() {
        let mut p = BitPacker::default();
        p.extend([true, false, true]);
        assert_eq!(p.finish(), vec![0b101, 0]);
        let mut q = BitPacker::default();
        q.extend(std::iter::repeat_n(true, 9));
        assert_eq!(q.finish(), vec![0xff, 0x01]);
        assert!(BitPacker::default().finish().is_empty());
    }
}
