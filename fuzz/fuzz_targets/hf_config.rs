//! A Hugging Face `config.json` → the architecture config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = infer::arch::HfConfig::from_json(text);
    }
});
