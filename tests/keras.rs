//! Keras models and TensorFlow bundles: a Keras MLP, a CNN, a two-input model of most other
//! supported layers, recurrent, attention, transposed-convolution and nested models, each as `.keras`, `.weights.h5` + config.json and legacy `.h5`,
//! predict what Keras predicted; TensorFlow checkpoint and SavedModel variables read back
//! exactly; damaged files fail cleanly.
//!
//! The `#[ignore]`d tests read samples written by Keras and TensorFlow themselves:
//! `python tests/data/make_keras.py DIR` then `INFER_KERAS_SAMPLES=DIR cargo test --test
//! keras -- --ignored` (scripts/test.sh does both, caching DIR by the script's hash).

mod common;

use infer::weights::{load_weights, MetaValue, WeightFormat};
use infer::{arch, npy, Session, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `INFER_KERAS_SAMPLES`, else the newest complete folder under `.cache/keras-samples`.
fn samples() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFER_KERAS_SAMPLES") {
        return PathBuf::from(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/keras-samples");
    std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let done = p.join(".complete").metadata().ok()?.modified().ok()?;
            Some((done, p))
        })
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "no Keras samples: run python tests/data/make_keras.py {}/<any name> and touch \
                 its .complete, or set INFER_KERAS_SAMPLES",
                root.display()
            )
        })
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_prediction(session: &Session, model: &str, file: &str) {
    let dir = samples();
    let one = dir.join(format!("{model}_x.npy"));
    let inputs = match one.is_file() {
        true => vec![npy::read_npy(&one).unwrap()],
        false => (0..)
            .map(|i| dir.join(format!("{model}_x{i}.npy")))
            .take_while(|p| p.is_file())
            .map(|p| npy::read_npy(&p).unwrap())
            .collect(),
    };
    let want = npy::read_npy(&dir.join(format!("{model}_y.npy"))).unwrap();
    let got = session
        .run_positional(inputs)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let diff = max_abs_diff(&got[0], &want);
    println!("{file}: max |infer - keras| = {diff:e}");
    assert!(diff <= 1e-4, "{file}: max abs difference {diff}");
}

/// Each sample `model` in all three files (`.keras`, legacy `.h5`, `.weights.h5` + config)
/// predicts what Keras did.
fn check_models(models: &[&str]) {
    let dir = samples();
    for model in models {
        for file in [format!("{model}.keras"), format!("{model}_legacy.h5")] {
            let session = Session::builder()
                .build_from_file(dir.join(&file))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            check_prediction(&session, model, &file);
        }
        let weights = dir.join(format!("{model}.weights.h5"));
        let config = dir.join(format!("{model}.config.json"));
        let graph = arch::keras::load_with_config(&weights, &config).unwrap();
        let session = Session::builder().build_from_graph(graph).unwrap();
        check_prediction(&session, model, &format!("{model}.weights.h5 + config"));
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn keras_models_match_keras_predictions() {
    check_models(&["mlp", "cnn", "mixed"]);
}

/// LSTM, GRU (reset_after both ways), SimpleRNN, backwards and Bidirectional layers.
#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn recurrent_models_match_keras_predictions() {
    check_models(&["lstm", "gru", "birnn"]);
}

/// Cross-attention with a mask, causal self-attention without biases, a separate key.
#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn multi_head_attention_matches_keras_predictions() {
    check_models(&["mha"]);
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn transposed_convolutions_match_keras_predictions() {
    check_models(&["deconv"]);
}

/// A Sequential and a shared Functional model used as layers.
#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn nested_models_match_keras_predictions() {
    check_models(&["nested"]);
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn a_weights_file_alone_asks_for_its_config() {
    let path = samples().join("mlp.weights.h5");
    let e = Session::builder()
        .build_from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mlp.weights.h5") && e.contains("config.json"),
        "{e}"
    );
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn tf_checkpoint_and_saved_model_variables_read_back_exactly() {
    let dir = samples();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tf_expected.json")).unwrap())
            .unwrap();
    for (kind, path) in [
        ("ckpt", dir.join("ckpt/ckpt")),
        ("saved_model", dir.join("saved_model")),
    ] {
        let store = load_weights(&path).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(store.format, WeightFormat::TfBundle);
        let entries = expected[kind].as_object().unwrap();
        let mut numeric = 0;
        for (key, npy_path) in entries {
            if key == "_CHECKPOINTABLE_OBJECT_GRAPH" {
                continue;
            }
            numeric += 1;
            let want = npy::read_npy(&dir.join(npy_path.as_str().unwrap())).unwrap();
            let got = store
                .get(key)
                .unwrap_or_else(|| panic!("{kind}: no tensor '{key}'"));
            assert_eq!(got.dtype(), want.dtype(), "{kind} {key}");
            assert_eq!(got.shape(), want.shape(), "{kind} {key}");
            assert_eq!(got.as_bytes(), want.as_bytes(), "{kind} {key}");
        }
        assert_eq!(store.tensors.len(), numeric, "{kind}: extra tensors");
        let graph = store
            .metadata
            .iter()
            .find(|(k, _)| k == "_CHECKPOINTABLE_OBJECT_GRAPH");
        assert!(matches!(graph, Some((_, MetaValue::Bytes(b))) if !b.is_empty()));
    }
}

fn inspect(path: &Path) -> (bool, String) {
    common::infer_cli(&[Path::new("inspect"), path])
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn inspect_lists_keras_and_tensorflow_tensors() {
    let dir = samples();
    let (ok, out) = inspect(&dir.join("cnn.keras"));
    assert!(ok, "{out}");
    assert!(out.contains("format: Keras (.keras)"), "{out}");
    assert!(out.contains("architecture: Functional 'cnn'"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("layers/conv2d/vars/0"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "layers/conv2d/vars/0",
            "float32",
            "[3,",
            "3,",
            "3,",
            "8]",
            "864",
            "bytes"
        ]
    );

    let (ok, out) = inspect(&dir.join("mlp_legacy.h5"));
    assert!(ok, "{out}");
    assert!(out.contains("architecture: Sequential 'mlp'"), "{out}");
    // Keras 3 nests legacy weights under the model name: model_weights/<layer>/<model>/….
    assert!(
        out.contains("model_weights/dense/mlp/dense/kernel"),
        "{out}"
    );

    let (ok, out) = inspect(&dir.join("ckpt/ckpt.index"));
    assert!(ok, "{out}");
    assert!(out.contains("format: TensorFlow bundle"), "{out}");
    assert!(out.contains("model/w/.ATTRIBUTES/VARIABLE_VALUE"), "{out}");
    let (ok, out) = inspect(&dir.join("saved_model"));
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("w/.ATTRIBUTES"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "w/.ATTRIBUTES/VARIABLE_VALUE",
            "float32",
            "[3,",
            "4]",
            "48",
            "bytes"
        ]
    );
    assert!(out.contains("_CHECKPOINTABLE_OBJECT_GRAPH: <"), "{out}");
}

/// A copy of sample `name` changed by `damage`, in a fresh temporary folder.
fn damaged(name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let src = samples().join(name);
    let dir = std::env::temp_dir().join(format!(
        "infer-keras-{}-{}",
        std::process::id(),
        name.replace('/', "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut bytes = std::fs::read(&src).unwrap();
    damage(&mut bytes);
    let path = dir.join(Path::new(name).file_name().unwrap());
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn damaged_files_fail_cleanly() {
    for name in ["cnn.keras", "cnn_legacy.h5", "cnn.weights.h5"] {
        let path = damaged(name, |b| b.truncate(b.len() / 2));
        let e = load_weights(&path).unwrap_err().to_string();
        println!("truncated {name}: {e}");
        assert!(e.contains(name), "{e}");
        let (ok, out) = inspect(&path);
        assert!(!ok && !out.contains("panicked"), "{out}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    // A dataset claiming far more elements than the file holds: `dense` has a [8, 16] kernel;
    // its dataspace stores the dimensions as little-endian u64s.
    let path = damaged("mlp.weights.h5", |b| {
        let dims: Vec<u8> = [8u64, 16].iter().flat_map(|d| d.to_le_bytes()).collect();
        let at = b.windows(16).position(|w| w == dims.as_slice()).unwrap();
        b[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    let e = load_weights(&path).unwrap_err().to_string();
    println!("oversized dataset: {e}");
    assert!(
        e.contains("mlp.weights.h5") && e.contains("layers/dense/vars/0"),
        "{e}"
    );

    // A TensorFlow index with one flipped byte inside a block.
    let index = damaged("ckpt/ckpt.index", |b| b[20] ^= 0x40);
    let data = samples().join("ckpt/ckpt.data-00000-of-00001");
    std::fs::copy(data, index.with_file_name("ckpt.data-00000-of-00001")).unwrap();
    let e = load_weights(&index).unwrap_err().to_string();
    println!("bad index CRC: {e}");
    assert!(e.contains("ckpt.index") && e.contains("checksum"), "{e}");

    for p in [path, index] {
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_keras.py DIR"]
fn cli_runs_a_weights_file_with_its_config() {
    let dir = samples();
    let out = Command::new(env!("CARGO_BIN_EXE_infer"))
        .arg("run")
        .arg(dir.join("mlp.weights.h5"))
        .arg("--config")
        .arg(dir.join("mlp.config.json"))
        .arg(dir.join("mlp_x.npy"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The output is named after the last layer, shaped [batch, 4].
    assert!(stdout.starts_with("softmax: float32 [3, 4]"), "{stdout}");
}
