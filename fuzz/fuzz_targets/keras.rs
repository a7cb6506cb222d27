//! Keras files: `.weights.h5`, `.keras` (a zip of config + HDF5 weights) and legacy `.h5`,
//! through both entry points that read them (the loader recognizes the format by content):
//! the weights reader, and the session builder, which also rebuilds the architecture from
//! the config and runs it once on small inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = infer_fuzz::scratch_file("keras", data);
    let _ = infer::weights::load_weights(&path);
    if let Ok(session) = infer_fuzz::session_builder().build_from_file(&path) {
        if let Some(inputs) = infer_fuzz::small_inputs(&session) {
            let _ = session.run_positional(inputs);
        }
    }
});
