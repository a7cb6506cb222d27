//! `.npy` bytes (the first byte 0) or an `.npz` archive (otherwise).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, npy)) => {
            let _ = infer::npy::parse_npy(npy);
        }
        Some((_, npz)) => {
            let _ = infer::npy::read_npz(&infer_fuzz::scratch_file("npz", npz));
        }
        None => {}
    }
});
