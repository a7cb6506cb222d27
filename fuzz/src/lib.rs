//! Helpers shared by the fuzz targets.

use infer::ir::{Dim, ValueKind};
use infer::{Session, Tensor};
use std::path::PathBuf;

/// Limits that keep one fuzz input cheap: a hostile model gets an error long before it
/// could exhaust the fuzzer's memory (libFuzzer's default `-rss_limit_mb` is 2048).
pub fn session_builder() -> infer::SessionBuilder {
    Session::builder()
        .threads(1)
        .max_tensor_bytes(64 << 20)
        .max_nodes(10_000)
}

/// Zeros for every tensor input, symbolic dimensions set to 1; `None` if an input is not a
/// plain tensor of known dtype and rank, or has more than 64K elements.
pub fn small_inputs(session: &Session) -> Option<Vec<Tensor>> {
    session
        .inputs()
        .into_iter()
        .map(|io| {
            let ty = io.ty;
            if ty.kind != ValueKind::Tensor {
                return None;
            }
            let shape: Vec<usize> = ty
                .shape?
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    _ => 1,
                })
                .collect();
            if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))? > 1 << 16 {
                return None;
            }
            Tensor::zeros(ty.dtype?, shape).ok()
        })
        .collect()
}

/// Loads an ONNX model from bytes and, when it plans, runs it once on small inputs.
pub fn load_and_run_onnx(data: &[u8]) {
    let Ok(session) = session_builder().build_from_bytes(data.to_vec()) else {
        return;
    };
    if let Some(inputs) = small_inputs(&session) {
        let _ = session.run_positional(inputs);
    }
}

/// Writes `data` to this process's scratch file (the file loaders map files by path) and
/// returns its path.
pub fn scratch_file(ext: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("infer-fuzz-{}.{ext}", std::process::id()));
    std::fs::write(&path, data).expect("the scratch file is writable");
    path
}

/// This process's scratch folder `infer-fuzz-<name>-<pid>` (for formats spread over several
/// files), created if needed.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infer-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the scratch folder can be created");
    dir
}
