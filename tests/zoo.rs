//! Zoo parity: every model of the zoo (real architectures exported by torch, see
//! `models/zoo.py`) matches onnxruntime's outputs within rtol 1e-3 / atol 1e-4, through the
//! library and through the CLI. Every case of a model runs on one session, so the dynamic
//! batch/sequence cases of bert and minilm also check re-planning-free shape changes.
//!
//! Needs the zoo: `models/build_zoo.sh` (or `INFER_ZOO_DIR`); run with `--ignored`.

mod common;

use infer::{npy, Session};
use std::path::{Path, PathBuf};
use std::process::Command;

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

fn zoo_dir() -> PathBuf {
    std::env::var_os("INFER_ZOO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/zoo/current"))
}

fn cases(model_dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(model_dir.join("cases"))
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (build the zoo: models/build_zoo.sh)",
                model_dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "{}: no cases", model_dir.display());
    cases
}

fn check_library(name: &str) {
    // The default plan (channel-blocked handoffs between convolutions) and the plain NCHW one.
    for blocked in [true, false] {
        check_library_with(name, blocked);
    }
}

fn check_library_with(name: &str, blocked: bool) {
    let dir = zoo_dir().join(name);
    let session = Session::builder()
        .threads(2)
        .blocked_layout(blocked)
        .build_from_file(dir.join("model.onnx"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let name = &format!("{name} (blocked layout {blocked})");
    for case in cases(&dir) {
        let inputs = npy::read_npz(&case.join("inputs.npz")).unwrap();
        let expected = npy::read_npz(&case.join("expected.npz")).unwrap();
        let outputs = session
            .run(inputs.iter().map(|(n, t)| (n.as_str(), t.clone())))
            .unwrap_or_else(|e| panic!("{name} {}: {e}", case.display()));
        for (out_name, want) in &expected {
            let got = outputs
                .get(out_name)
                .unwrap_or_else(|| panic!("{name}: no output '{out_name}'"));
            let what = format!(
                "{name} {} {out_name}",
                case.file_name().unwrap().to_string_lossy()
            );
            common::assert_close(&what, got, want, RTOL, ATOL);
        }
    }
}

fn check_cli(name: &str) {
    let dir = zoo_dir().join(name);
    let case = &cases(&dir)[0];
    let out_dir = std::env::temp_dir().join(format!("infer-zoo-cli-{name}-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_infer"))
        .arg("run")
        .arg(dir.join("model.onnx"))
        .arg(case.join("inputs.npz"))
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("--threads")
        .arg("2")
        // The opt-in channels-last handoff (a no-op without pointwise → depthwise edges):
        // the library test above covers the default plan, this one the other.
        .arg("--channels-last")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for (out_name, want) in npy::read_npz(&case.join("expected.npz")).unwrap() {
        let safe: String = out_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let got = npy::read_npy(&out_dir.join(format!("{safe}.npy"))).unwrap();
        common::assert_close(&format!("{name} (cli) {out_name}"), &got, &want, RTOL, ATOL);
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

macro_rules! zoo_tests {
    ($($name:ident),*) => {$(
        mod $name {
            #[test]
            #[ignore = "needs the model zoo (models/build_zoo.sh)"]
            fn library_matches_onnxruntime() {
                super::check_library(stringify!($name));
            }

            #[test]
            #[ignore = "needs the model zoo (models/build_zoo.sh)"]
            fn cli_matches_onnxruntime() {
                super::check_cli(stringify!($name));
            }
        }
    )*};
}

zoo_tests!(
    mlp,
    squeezenet1_1,
    mobilenet_v2,
    efficientnet_b0,
    resnet50,
    vit_b_16,
    minilm,
    bert_base,
    gpt2
);
