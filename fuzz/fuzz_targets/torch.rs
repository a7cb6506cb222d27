//! PyTorch checkpoints: the zip format and the legacy bare pickle, both through the
//! restricted unpickler (the loader recognizes the format by content).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = infer::weights::load_weights(&infer_fuzz::scratch_file("pt", data));
});
