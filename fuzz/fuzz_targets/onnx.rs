//! ONNX bytes → load + plan, and run on small inputs when it plans.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    infer_fuzz::load_and_run_onnx(data);
});
