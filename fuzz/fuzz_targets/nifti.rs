//! NIfTI reader: any bytes (plain or gzip-compressed) are read into a volume that matches its
//! header, or refused with a one-line error; never a panic, never an allocation beyond the voxel
//! limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Voxel limit of the target (the binary's default is 512^3): keeps each run small.
const MAX_VOXELS: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    match stochseg::io::nifti::read_volume_from_bytes(Path::new("fuzz.nii"), data, MAX_VOXELS) {
        Ok(image) => {
            let [nx, ny, nz] = image.geometry.shape_ijk;
            assert_eq!(image.data.shape(), [nz, ny, nx]);
            assert!(nx * ny * nz <= MAX_VOXELS);
            assert!(image.data.iter().all(|v| v.is_finite()));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
        }
    }
});
