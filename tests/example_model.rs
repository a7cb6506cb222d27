//! The bundled example model (`models/example`, a small CNN written by torch) matches
//! onnxruntime, and one `Session` shared by 8 threads gives results identical to a
//! single-threaded run.

mod common;

use infer::{npy, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/example")
        .join(file)
}

fn load() -> (Session, Tensor, Tensor) {
    let session = Session::builder()
        .threads(2)
        .build_from_file(example("tiny_cnn.onnx"))
        .unwrap();
    let input = npy::read_npy(&example("input.npy")).unwrap();
    let expected = npy::read_npy(&example("expected_output.npy")).unwrap();
    (session, input, expected)
}

#[test]
fn example_matches_onnxruntime() {
    let (session, input, expected) = load();
    let out = session.run_positional(vec![input]).unwrap();
    common::assert_close("tiny_cnn", &out[0], &expected, 1e-3, 1e-4);
}

#[test]
fn one_session_serves_eight_threads_identically() {
    let (session, input, _) = load();
    // Distinct inputs per thread so a mix-up between concurrent runs would show.
    let inputs: Vec<Tensor> = (0..8)
        .map(|i| {
            let v: Vec<f32> = input
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|x| x * (1.0 + i as f32 * 0.1))
                .collect();
            Tensor::from_vec(input.shape().to_vec(), v).unwrap()
        })
        .collect();
    let sequential: Vec<Tensor> = inputs
        .iter()
        .map(|x| session.run_positional(vec![x.clone()]).unwrap()[0].clone())
        .collect();
    let session = Arc::new(session);
    let handles: Vec<_> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let s = Arc::clone(&session);
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| s.run_positional(vec![x.clone()]).unwrap()[0].clone())
                    .map(move |t| (i, t))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (i, t) in h.join().unwrap() {
            assert!(
                t.bit_eq(&sequential[i]),
                "thread {i} differs from the sequential run"
            );
        }
    }
}

#[test]
fn cli_run_writes_outputs_and_fails_cleanly() {
    let out_dir = std::env::temp_dir().join(format!("infer-example-cli-{}", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(["run"])
        .arg(example("tiny_cnn.onnx"))
        .arg(example("input.npy"))
        .arg("--out-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = Session::builder()
        .build_from_file(example("tiny_cnn.onnx"))
        .unwrap();
    let name = &session.outputs()[0].name;
    let written = npy::read_npy(&out_dir.join(format!("{name}.npy"))).unwrap();
    let expected = npy::read_npy(&example("expected_output.npy")).unwrap();
    common::assert_close("cli", &written, &expected, 1e-3, 1e-4);
    let _ = std::fs::remove_dir_all(&out_dir);

    // A missing input file: non-zero exit, one line on stderr, no panic.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infer"))
        .args(["run"])
        .arg(example("tiny_cnn.onnx"))
        .arg("/nonexistent/x.npy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/x.npy") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
