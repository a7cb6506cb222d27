//! Weights-only files: safetensors and PyTorch checkpoints read back exactly, hostile files
//! refused without running anything, and `infer inspect` on them.
//!
//! The `#[ignore]`d tests read samples written by torch itself:
//! `/work/main/.cache/venv/bin/python tests/data/make_weights.py .cache/weights-samples`
//! (or set `INFER_WEIGHTS_SAMPLES` to another output folder), then run with `--ignored`.
//! The others build their (tiny, hostile) files here.

mod common;

use common::*;
use infer::weights::{load_weights, MetaValue, WeightFormat};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn samples() -> PathBuf {
    std::env::var_os("INFER_WEIGHTS_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/weights-samples"))
}

fn expected() -> Value {
    let path = samples().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (generate the samples: python tests/data/make_weights.py {})",
            path.display(),
            samples().display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn format_name(f: WeightFormat) -> &'static str {
    match f {
        WeightFormat::Safetensors => "safetensors",
        WeightFormat::TorchZip => "torch-zip",
        WeightFormat::TorchLegacy => "torch-legacy",
        other => panic!("no {other} samples here"),
    }
}

/// The expected JSON scalar of a metadata value.
fn meta_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::None => Value::Null,
        MetaValue::Bool(b) => Value::from(*b),
        MetaValue::Int(i) => Value::from(*i),
        MetaValue::Float(f) => Value::from(*f),
        MetaValue::Str(s) => Value::from(s.as_str()),
        other => panic!("unexpected metadata value {other:?}"),
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn every_sample_reads_back_exactly() {
    let expected = expected();
    let files = expected["files"].as_object().unwrap();
    assert!(
        files.len() >= 11,
        "expected.json lists {} files",
        files.len()
    );
    for (file, want) in files {
        let store = load_weights(&samples().join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(format_name(store.format), want["format"], "{file}");
        let want_tensors = want["tensors"].as_array().unwrap();
        let keys: Vec<&str> = store.tensors.iter().map(|(k, _)| k.as_str()).collect();
        let want_keys: Vec<&str> = want_tensors
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, want_keys, "{file}: keys in file order");
        for ((key, t), w) in store.tensors.iter().zip(want_tensors) {
            let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
            assert_eq!(t.dtype().name(), w["dtype"], "{file} {key}: dtype");
            assert_eq!(t.shape(), &shape[..], "{file} {key}: shape");
            assert_eq!(hex(t.as_bytes()), w["hex"], "{file} {key}: values");
        }
        // Metadata is a map: the writer's key order is arbitrary (safetensors' header comes
        // from a hash map), so both sides are compared sorted by key.
        let by_key = |mut pairs: Vec<Value>| {
            pairs.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
            pairs
        };
        let meta: Vec<Value> = store
            .metadata
            .iter()
            .map(|(k, v)| Value::from(vec![Value::from(k.as_str()), meta_json(v)]))
            .collect();
        let want_meta = want["metadata"].as_array().cloned().unwrap_or_default();
        assert_eq!(by_key(meta), by_key(want_meta), "{file}: metadata");
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn contiguous_tensors_sharing_a_storage_share_the_mapped_bytes() {
    for file in ["state_zip_p2.pt", "state_zip_p4.pt"] {
        let store = load_weights(&samples().join(file)).unwrap();
        let base = store.get("shared.base").unwrap().as_bytes();
        let row = store.get("shared.row").unwrap().as_bytes();
        // `shared.row` is `base[2]` of a 4x5 float32 tensor: 10 elements in, no copy.
        assert_eq!(row.as_ptr(), base[40..].as_ptr(), "{file}");
        // torch aligns zip entries to 64 bytes, so mapped data is aligned too.
        assert!((base.as_ptr() as usize).is_multiple_of(64), "{file}");
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn hostile_samples_are_refused_and_nothing_runs() {
    let expected = expected();
    let errors = expected["errors"].as_object().unwrap();
    assert!(errors.len() >= 9);
    for (file, needles) in errors {
        let err = match load_weights(&samples().join(file)) {
            Ok(_) => panic!("{file}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(file.as_str()),
            "{file}: error names the file: {err}"
        );
        for n in needles.as_array().unwrap() {
            assert!(
                err.contains(n.as_str().unwrap()),
                "{file}: '{n}' not in: {err}"
            );
        }
    }
    // The `os.system` samples would have created this file.
    assert!(!samples().join("pwned.txt").exists());
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn hugging_face_folders_load_their_weights_files_in_order() {
    let expected = expected();
    let folders = expected["folders"].as_object().unwrap();
    assert_eq!(folders.len(), 3);
    for (dir, files) in folders {
        let want: Vec<&str> = files
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| {
                expected["files"][f.as_str().unwrap()]["tensors"]
                    .as_array()
                    .unwrap()
            })
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        let store = load_weights(&samples().join(dir)).unwrap_or_else(|e| panic!("{e}"));
        let keys: Vec<&str> = store.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, want, "{dir}");
    }
}

fn inspect(path: &Path) -> (bool, String) {
    common::infer_cli(&[Path::new("inspect"), path])
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn inspect_lists_every_tensor_and_the_folder_config() {
    let (ok, out) = inspect(&samples().join("checkpoint_legacy_p4.pt"));
    assert!(ok, "{out}");
    assert!(out.contains("format: PyTorch (legacy)"), "{out}");
    let line = out.lines().find(|l| l.contains("model.0.weight")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        ["model.0.weight", "float32", "[3,", "4]", "48", "bytes"]
    );
    assert!(out.contains("optimizer.state.0.exp_avg"), "{out}");
    assert!(out.contains("epoch: 3"), "{out}");
    assert!(out.contains("total: 16 tensors"), "{out}");

    let (ok, out) = inspect(&samples().join("hf_bert_safetensors"));
    assert!(ok, "{out}");
    assert!(out.contains("model_type: bert"), "{out}");
    assert!(out.contains("architectures: BertModel"), "{out}");
    assert!(out.contains("format: safetensors"), "{out}");
    assert!(out.contains("embeddings.word_embeddings.weight"), "{out}");

    let (ok, out) = inspect(&samples().join("full_model_user.pt"));
    assert!(
        !ok && out.contains("__main__.TinyNet") && !out.contains("panicked"),
        "{out}"
    );
}

// --- Files built here --------------------------------------------------------------------

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infer-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A safetensors file with the given JSON header and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn safetensors_round_trip_is_zero_copy() {
    let data: Vec<u8> = [1.0f32, -2.0, 0.5, 8.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain([1u8, 0])
        .collect();
    // 6-byte padding keeps the data 8-byte aligned, as writers do.
    let header = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[16,18]},"__metadata__":{"format":"pt"}}"#;
    let header = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let path = write_temp("ok.safetensors", &safetensors(&header, &data));
    let store = load_weights(&path).unwrap();
    assert_eq!(store.format, WeightFormat::Safetensors);
    let w = store.get("w").unwrap();
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(w.as_slice::<f32>().unwrap(), &[1.0, -2.0, 0.5, 8.0]);
    assert_eq!(
        store.get("m").unwrap().as_slice::<bool>().unwrap(),
        &[true, false]
    );
    assert_eq!(
        store.metadata,
        vec![("format".to_string(), MetaValue::Str("pt".into()))]
    );
}

#[test]
fn safetensors_offsets_past_the_end_are_refused() {
    let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let path = write_temp("short.safetensors", &safetensors(header, &[0u8; 8]));
    let err = load_weights(&path).unwrap_err().to_string();
    assert!(
        err.contains("short.safetensors") && err.contains("tensor 'w'"),
        "{err}"
    );
    assert!(err.contains("end past the data section"), "{err}");
}

#[test]
fn a_pickle_calling_os_system_is_refused_before_anything_runs() {
    let marker = std::env::temp_dir().join(format!("infer-pwned-{}", std::process::id()));
    let cmd = format!("touch {}", marker.display());
    // pickle.dumps of a `__reduce__` returning (os.system, (cmd,)), protocol 2.
    let mut p = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
    p.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    p.extend_from_slice(cmd.as_bytes());
    p.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    let path = write_temp("evil.pt", &p);
    let err = load_weights(&path).unwrap_err().to_string();
    assert!(
        err.contains("`posix.system`") && err.contains("never runs"),
        "{err}"
    );
    assert!(!marker.exists());
}

#[test]
fn unrecognized_files_are_named_in_the_error() {
    let path = write_temp("junk.bin", b"definitely not weights");
    let err = load_weights(&path).unwrap_err().to_string();
    assert!(
        err.contains("junk.bin") && err.contains("not a safetensors, PyTorch, Keras or TensorFlow"),
        "{err}"
    );
}

#[test]
fn inspect_still_reads_onnx_models() {
    let m = bytes(&model(
        vec![node("Relu", &["x"], &["y"])],
        vec![value_info("x", 1, &[2, 3])],
        vec![value_info("y", 1, &[2, 3])],
        vec![],
    ));
    let (ok, out) = inspect(&write_temp("relu.onnx", &m));
    assert!(ok, "{out}");
    assert!(out.contains("Relu: 1"), "{out}");
}

/// A folder holding `files`, fresh for each call.
fn temp_folder(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("infer-weights-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    dir
}

/// A one-tensor safetensors file: `key` = [v] as float32.
fn one_tensor(key: &str, v: f32) -> Vec<u8> {
    let header = format!(r#"{{"{key}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#);
    safetensors(&header, &v.to_le_bytes())
}

#[test]
fn sharded_folders_load_every_shard_and_check_the_index() {
    let index = |map: &str| format!(r#"{{"metadata": {{}}, "weight_map": {{{map}}}}}"#);
    let (s1, s2) = (one_tensor("b", 2.0), one_tensor("a", 1.0));
    let good = index(r#""a": "model-2.safetensors", "b": "model-1.safetensors""#);
    let dir = temp_folder(
        "sharded",
        &[
            ("model.safetensors.index.json", good.as_bytes()),
            ("model-1.safetensors", &s1),
            ("model-2.safetensors", &s2),
        ],
    );
    let store = load_weights(&dir).unwrap();
    let got: Vec<(&str, f32)> = store
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.as_slice::<f32>().unwrap()[0]))
        .collect();
    assert_eq!(got, [("b", 2.0), ("a", 1.0)]);

    let missing = index(r#""a": "model-1.safetensors", "c": "model-1.safetensors""#);
    let dir = temp_folder(
        "missing",
        &[
            ("model.safetensors.index.json", missing.as_bytes()),
            ("model-1.safetensors", &s1),
        ],
    );
    let err = load_weights(&dir).unwrap_err().to_string();
    assert!(
        err.contains("lists tensor 'a' but no shard holds it"),
        "{err}"
    );

    let escaping = index(r#""a": "../model-1.safetensors""#);
    let dir = temp_folder(
        "escaping",
        &[("model.safetensors.index.json", escaping.as_bytes())],
    );
    let err = load_weights(&dir).unwrap_err().to_string();
    assert!(
        err.contains("'../model-1.safetensors' is not a file of this folder"),
        "{err}"
    );

    let dir = temp_folder("empty", &[("config.json", b"{}")]);
    let err = load_weights(&dir).unwrap_err().to_string();
    assert!(err.contains("no weights file in this folder"), "{err}");
}

#[test]
#[ignore = "needs samples: python tests/data/make_weights.py .cache/weights-samples"]
fn sessions_load_folders_and_refuse_whole_model_pickles() {
    // Every Hugging Face folder layout (safetensors, pytorch_model.bin, shards) builds.
    for dir in ["hf_bert_safetensors", "hf_bert_bin", "hf_bert_sharded"] {
        let session = infer::Session::builder()
            .build_from_file(samples().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(session.outputs()[0].name, "last_hidden_state", "{dir}");
    }
    // A whole-model pickle fails on what it references, before any architecture question.
    let err = infer::Session::builder()
        .build_from_file(samples().join("full_model_user.pt"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("full_model_user.pt")
            && err.contains("__main__.TinyNet")
            && err.contains("state_dict"),
        "{err}"
    );
    // A readable weights file alone has no architecture.
    let err = infer::Session::builder()
        .build_from_file(samples().join("state_zip_p2.pt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no architecture"), "{err}");
}
