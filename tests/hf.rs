//! Hugging Face folders run as sessions: outputs match transformers on real and tiny models,
//! and weights that do not fit the architecture are refused with one complete report.
//!
//! The `#[ignore]`d tests read folders written by transformers itself:
//! `/work/main/.cache/venv/bin/python tests/data/make_hf.py .cache/hf-samples` (or set
//! `INFER_HF_SAMPLES` to another output folder), then run with `--ignored`. The others build
//! their (tiny) files here.

mod common;

use common::assert_close;
use infer::arch::Inputs;
use infer::npy::read_npy;
use infer::{Session, Tensor};
use std::path::{Path, PathBuf};

fn samples() -> PathBuf {
    std::env::var_os("INFER_HF_SAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/hf-samples"))
}

fn model_dir(name: &str) -> PathBuf {
    let dir = samples().join(name);
    assert!(
        dir.join("config.json").is_file(),
        "{}: missing (generate the samples: python tests/data/make_hf.py {})",
        dir.display(),
        samples().display()
    );
    dir
}

/// The batches of a sample folder: (folder, inputs by name).
fn batches(dir: &Path) -> Vec<(PathBuf, Vec<(String, Tensor)>)> {
    let mut out = Vec::new();
    for i in 0.. {
        let b = dir.join(format!("batch{i}"));
        if !b.is_dir() {
            break;
        }
        let inputs = ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|n| (n.to_string(), b.join(format!("{n}.npy"))))
            .filter(|(_, p)| p.is_file())
            .map(|(n, p)| (n, read_npy(&p).unwrap()))
            .collect();
        out.push((b, inputs));
    }
    assert!(!out.is_empty(), "{}: no batches", dir.display());
    out
}

fn max_abs_diff(a: &Tensor, e: &Tensor) -> f32 {
    let (a, e) = (a.as_slice::<f32>().unwrap(), e.as_slice::<f32>().unwrap());
    a.iter()
        .zip(e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs every batch of sample `name` and checks `outputs` against transformers' within
/// `tol` (max abs); returns the largest difference seen.
fn check_model(name: &str, outputs: &[&str], tol: f32) -> f32 {
    let dir = model_dir(name);
    let session = Session::builder()
        .threads(2)
        .build_from_file(&dir)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut worst = 0f32;
    for (batch, inputs) in batches(&dir) {
        let got = session
            .run(inputs.iter().map(|(n, t)| (n.as_str(), t.clone())))
            .unwrap_or_else(|e| panic!("{}: {e}", batch.display()));
        for out in outputs {
            let want = read_npy(&batch.join(format!("{out}.npy"))).unwrap();
            let what = format!("{} {out}", batch.display());
            let actual = got.get(out).unwrap_or_else(|| panic!("{what}: no output"));
            assert_close(&what, actual, &want, 0.0, tol as f64);
            let d = max_abs_diff(actual, &want);
            eprintln!("{what}: max abs diff {d:e}");
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn minilm_from_safetensors_matches_transformers() {
    check_model("minilm", &["last_hidden_state"], 1e-4);
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn minilm_from_pytorch_bin_matches_transformers() {
    check_model("minilm_bin", &["last_hidden_state"], 1e-4);
}

/// sentence-transformers' embedding: mean of the token states under the attention mask,
/// L2-normalized.
fn sentence_embedding(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let [b, s, h] = hidden.shape() else {
        panic!("rank")
    };
    let (x, m) = (
        hidden.as_slice::<f32>().unwrap(),
        mask.to_i64_vec().unwrap(),
    );
    let mut out = vec![0f32; b * h];
    for (i, row) in out.chunks_mut(*h).enumerate() {
        let mut count = 0f32;
        for t in 0..*s {
            if m[i * s + t] != 0 {
                count += 1.0;
                let tok = &x[(i * s + t) * h..][..*h];
                row.iter_mut().zip(tok).for_each(|(r, v)| *r += v);
            }
        }
        row.iter_mut().for_each(|r| *r /= count.max(1e-9));
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|r| *r /= norm);
    }
    Tensor::from_vec(vec![*b, *h], out).unwrap()
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn minilm_mean_pooling_gives_the_sentence_embedding() {
    let dir = model_dir("minilm");
    let session = Session::builder().build_from_file(&dir).unwrap();
    for (batch, inputs) in batches(&dir) {
        let mask = inputs[1].1.clone();
        let out = session
            .run(inputs.iter().map(|(n, t)| (n.as_str(), t.clone())))
            .unwrap();
        let got = sentence_embedding(out.get("last_hidden_state").unwrap(), &mask);
        let want = read_npy(&batch.join("embedding.npy")).unwrap();
        let what = format!("{} embedding", batch.display());
        assert_close(&what, &got, &want, 0.0, 1e-5);
        eprintln!("{what}: max abs diff {:e}", max_abs_diff(&got, &want));
    }
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn tiny_bert_with_prefixed_keys_and_a_head_matches_transformers() {
    check_model("bert", &["last_hidden_state"], 1e-4);
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn tiny_roberta_matches_transformers() {
    check_model("roberta", &["last_hidden_state"], 1e-4);
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn tiny_distilbert_matches_transformers() {
    check_model("distilbert", &["last_hidden_state"], 1e-4);
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn tiny_gpt2_matches_transformers_with_tied_logits() {
    check_model("gpt2", &["last_hidden_state", "logits"], 1e-4);
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn cli_runs_and_inspects_a_folder() {
    let dir = model_dir("minilm");
    let (ok, out) = common::infer_cli(&[Path::new("inspect"), &dir]);
    assert!(ok, "{out}");
    assert!(
        out.contains("architecture: bert (6 layers, hidden size 384, 12 heads)"),
        "{out}"
    );
    let batch = dir.join("batch1");
    let arg = |n: &str| PathBuf::from(format!("{n}={}", batch.join(format!("{n}.npy")).display()));
    let (ids, mask, types) = (
        arg("input_ids"),
        arg("attention_mask"),
        arg("token_type_ids"),
    );
    let (ok, out) = common::infer_cli(&[Path::new("run"), &dir, &ids, &mask, &types]);
    assert!(ok, "{out}");
    assert!(
        out.contains("last_hidden_state: float32 [1, 23, 384]"),
        "{out}"
    );
}

// --- Files built here --------------------------------------------------------------------

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("infer-hf-{}", std::process::id()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file of f32 zeros with the given names and shapes.
fn safetensors(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 0;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        entries.push(format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{}]}}"#,
            offset + bytes
        ));
        offset += bytes;
    }
    let header = format!("{{{}}}", entries.join(","));
    let header = format!("{header:<width$}", width = header.len().next_multiple_of(8));
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + offset, 0);
    out
}

const TINY_GPT2: &str = r#"{"model_type": "gpt2", "vocab_size": 5, "n_embd": 4, "n_layer": 1,
    "n_head": 2, "n_positions": 8}"#;

/// The tensors of TINY_GPT2 (stored without the `transformer.` prefix).
fn tiny_gpt2_tensors() -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("wte.weight".into(), vec![5, 4]),
        ("wpe.weight".into(), vec![8, 4]),
        ("ln_f.weight".into(), vec![4]),
        ("ln_f.bias".into(), vec![4]),
    ];
    for (name, shape) in [
        ("ln_1", vec![4]),
        ("ln_2", vec![4]),
        ("attn.c_attn", vec![4, 12]),
        ("attn.c_proj", vec![4, 4]),
        ("mlp.c_fc", vec![4, 16]),
        ("mlp.c_proj", vec![16, 4]),
    ] {
        let out = vec![*shape.last().unwrap()];
        t.push((format!("h.0.{name}.weight"), shape));
        t.push((format!("h.0.{name}.bias"), out));
    }
    t
}

fn write_folder(name: &str, config: &str, tensors: &[(String, Vec<usize>)]) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("config.json"), config).unwrap();
    let refs: Vec<(&str, &[usize])> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    std::fs::write(dir.join("model.safetensors"), safetensors(&refs)).unwrap();
    dir
}

#[test]
fn a_fitting_folder_builds_with_symbolic_batch_and_sequence() {
    let dir = write_folder("fits", TINY_GPT2, &tiny_gpt2_tensors());
    let session = Session::builder().build_from_file(&dir).unwrap();
    let inputs: Vec<String> = session.inputs().iter().map(|i| i.name.clone()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask"]);
    assert_eq!(session.inputs()[0].ty.to_string(), "int64[batch, sequence]");
    let outputs: Vec<String> = session.outputs().iter().map(|o| o.name.clone()).collect();
    assert_eq!(outputs, ["last_hidden_state", "logits"]);
    assert_eq!(
        session.outputs()[1].ty.to_string(),
        "float32[batch, sequence, 5]"
    );
    // All-zero weights: LayerNorm outputs its zero bias, so every state and logit is 0.
    let ids = Tensor::from_vec(vec![2, 3], vec![0i64, 1, 4, 2, 3, 0]).unwrap();
    let mask = Tensor::from_vec(vec![2, 3], vec![1i64, 1, 1, 1, 1, 0]).unwrap();
    let out = session
        .run([("input_ids", ids), ("attention_mask", mask)])
        .unwrap();
    assert_eq!(out[0].shape(), &[2, 3, 4]);
    assert_eq!(out[1].shape(), &[2, 3, 5]);
    assert!(out[1].as_slice::<f32>().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn one_error_lists_missing_unexpected_and_misshapen_tensors() {
    let mut tensors = tiny_gpt2_tensors();
    tensors.retain(|(n, _)| n != "h.0.ln_2.bias");
    tensors.push(("h.0.mlp.extra".into(), vec![3]));
    // Buffers and heads of known layouts are not complaints.
    tensors.push(("h.0.attn.bias".into(), vec![1, 1, 8, 8]));
    let wpe = tensors.iter_mut().find(|(n, _)| n == "wpe.weight").unwrap();
    wpe.1 = vec![7, 4];
    let dir = write_folder("misfit", TINY_GPT2, &tensors);
    let err = Session::builder()
        .build_from_file(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "names the file: {err}");
    assert!(err.contains("missing (1):\n    h.0.ln_2.bias [4]"), "{err}");
    assert!(err.contains("unexpected (1):\n    h.0.mlp.extra"), "{err}");
    assert!(
        err.contains("wpe.weight: stored [7, 4], expected [8, 4]"),
        "{err}"
    );
    assert!(!err.contains("attn.bias"), "{err}");
}

#[test]
fn a_weights_file_alone_needs_an_architecture() {
    let dir = write_folder("plain", TINY_GPT2, &tiny_gpt2_tensors());
    let file = dir.join("model.safetensors");
    let err = Session::builder()
        .build_from_file(&file)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("no architecture"),
        "{err}"
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = Session::builder()
        .build_from_file(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no config.json"), "{err}");
}

#[test]
fn an_unsupported_model_type_is_named() {
    let dir = write_folder("llama", r#"{"model_type": "llama"}"#, &tiny_gpt2_tensors());
    let err = Session::builder()
        .build_from_file(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("'llama'"),
        "{err}"
    );
}

#[test]
fn the_planner_fuses_bias_and_activation_into_the_gemms() {
    let dir = write_folder("fused", TINY_GPT2, &tiny_gpt2_tensors());
    let session = Session::builder().build_from_file(&dir).unwrap();
    let ops: Vec<&str> = session.plan().step_op_types().collect();
    // Per layer: c_attn, c_proj, c_fc (+ GELU epilogue), c_proj; then the tied lm_head.
    assert_eq!(ops.iter().filter(|&&o| o == "Gemm").count(), 5, "{ops:?}");
    assert!(!ops.contains(&"Gelu"), "{ops:?}");
    assert_eq!(
        ops.iter().filter(|&&o| o == "LayerNormalization").count(),
        3
    );
}

#[test]
#[ignore = "needs samples: python tests/data/make_hf.py .cache/hf-samples"]
fn left_out_inputs_take_transformers_defaults() {
    // batch1 of each sample is one unpadded row (and MiniLM's token types are all 0), so
    // dropping the mask and the token types must not change the output.
    for name in ["minilm", "gpt2"] {
        let dir = model_dir(name);
        let graph = infer::arch::load_folder_with(&dir, &Inputs::from_names(["input_ids"]));
        let session = Session::builder().build_from_graph(graph.unwrap()).unwrap();
        let inputs: Vec<String> = session.inputs().iter().map(|i| i.name.clone()).collect();
        assert_eq!(inputs, ["input_ids"]);
        let batch = dir.join("batch1");
        let ids = read_npy(&batch.join("input_ids.npy")).unwrap();
        let out = session.run([("input_ids", ids)]).unwrap();
        let want = read_npy(&batch.join("last_hidden_state.npy")).unwrap();
        let got = out.get("last_hidden_state").unwrap();
        assert_close(name, got, &want, 0.0, 1e-4);
        eprintln!(
            "{name} without mask: max abs diff {:e}",
            max_abs_diff(got, &want)
        );
    }
}
