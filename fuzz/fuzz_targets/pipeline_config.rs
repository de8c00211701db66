//! Pipeline config: any text given to `Pipeline::from_yaml` is accepted or refused with a
//! one-line error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = stochseg::pipeline::Pipeline::from_yaml(text, std::path::Path::new("/cfg")) {
        let message = e.to_string();
        assert!(!message.contains('\n'), "multi-line error: {message:?}");
    }
});
