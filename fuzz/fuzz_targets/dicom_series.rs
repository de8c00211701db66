//! DICOM series assembly: the input is a folder of files (concatenated, separated by
//! `SEPARATOR`; seeds are small series written by tests/fixtures/dicom/make_series.py) that is
//! scanned, its series chosen, checked and read exactly as a channel folder is. It gives a volume
//! on the series' grid or a one-line error; never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stochseg::io::dicom;

/// Between two files of one input (see fuzz/make_seeds.py).
const SEPARATOR: &[u8] = b"\n--stochseg-fuzz-next-file--\n";
const MAX_VOXELS: usize = 1 << 16;
const MAX_FILES: usize = 64;

/// One folder per process, emptied before each input: `$STOCHSEG_FUZZ_DIR` (the Makefile
/// points it into fuzz/work and removes it afterwards), else /dev/shm or the temp folder.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("STOCHSEG_FUZZ_DIR")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("dicom-series-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the series");
        dir
    })
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut files = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        files.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    files.push(rest);
    files.truncate(MAX_FILES);
    files
}

fuzz_target!(init: stochseg::guard::install_panic_hook(), |data: &[u8]| {
    let dir = folder();
    for entry in std::fs::read_dir(dir).expect("the folder") {
        std::fs::remove_file(entry.expect("an entry").path()).expect("removed");
    }
    for (i, bytes) in split(data).iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}.dcm")), bytes).expect("written");
    }
    let result = dicom::scan(dir).and_then(|scan| {
        let rule = dicom::default_rule("t1n");
        let files = dicom::choose(&scan, "t1n", rule.as_ref(), true)?;
        let series = dicom::prepare(dir, files)?;
        let volume = dicom::read_volume(&series, MAX_VOXELS)?;
        Ok((series, volume))
    });
    match result {
        Ok((series, volume)) => {
            let [nx, ny, nz] = series.geometry.shape_ijk;
            assert_eq!(volume.shape(), [nz, ny, nx]);
            assert!(volume.iter().all(|v| v.is_finite()));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "multi-line error: {message:?}");
        }
    }
});
