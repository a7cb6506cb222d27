//! `infer inspect`: what a model contains, without planning it.

use infer::weights::{self, WeightFormat, WeightStore};
use std::collections::BTreeMap;
use std::path::Path;

type CliResult = Result<(), Box<dyn std::error::Error>>;

/// Inspects an ONNX model, a weights file (safetensors, PyTorch) or a Hugging Face folder.
pub fn inspect(model: &Path) -> CliResult {
    if weights::tf_bundle_index(model).is_some() {
        return inspect_weights(model);
    }
    if model.is_dir() {
        return inspect_folder(model);
    }
    if weights::detect_file_format(model)?.is_some() {
        return inspect_weights(model);
    }
    inspect_onnx(model).map_err(|e| {
        let is_onnx = model
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("onnx"));
        if is_onnx {
            e
        } else {
            format!(
                "{}: not a recognized model file (ONNX, safetensors, PyTorch checkpoint, \
                 Keras, TensorFlow checkpoint or Hugging Face folder): {e}",
                model.display()
            )
            .into()
        }
    })
}

/// A Hugging Face folder: what config.json says the model is, then its weights.
fn inspect_folder(dir: &Path) -> CliResult {
    let files = weights::find_weights_files(dir)?;
    println!("folder: {}", dir.display());
    let config_path = dir.join("config.json");
    if let Ok(text) = std::fs::read_to_string(&config_path) {
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not valid JSON: {e}", config_path.display()))?;
        if let Some(t) = config.get("model_type").and_then(|v| v.as_str()) {
            println!("model_type: {t}");
        }
        if let Some(archs) = config.get("architectures").and_then(|v| v.as_array()) {
            let names: Vec<&str> = archs.iter().filter_map(|a| a.as_str()).collect();
            println!("architectures: {}", names.join(", "));
        }
        // What the runtime would build, or why it cannot (the weights are listed either way).
        match infer::arch::HfConfig::from_json(&text) {
            Ok(c) => println!(
                "architecture: {} ({} layers, hidden size {}, {} heads)",
                c.model_type,
                c.layers(),
                c.hidden_size(),
                c.heads()
            ),
            Err(reason) => println!("architecture: none runnable ({reason})"),
        }
    }
    let store = weights::load_weights(dir)?;
    for f in &files {
        println!("weights: {}", f.display());
    }
    println!("format: {}", store.format);
    print_weights(&store);
    Ok(())
}

fn inspect_weights(path: &Path) -> CliResult {
    let store = weights::load_weights(path)?;
    println!("weights: {}", path.display());
    println!("format: {}", store.format);
    if matches!(store.format, WeightFormat::Keras | WeightFormat::Hdf5) {
        match infer::arch::keras::describe_file(path)? {
            Some(arch) => println!("architecture: {arch}"),
            None => println!("architecture: none stored (a .weights.h5: pass its config.json)"),
        }
    }
    print_weights(&store);
    Ok(())
}

/// Every tensor with its dtype, shape and size, then metadata and totals.
fn print_weights(store: &WeightStore) {
    let key_width = store
        .tensors
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    println!("tensors ({}):", store.tensors.len());
    for (key, t) in &store.tensors {
        let shape = format!("{:?}", t.shape());
        println!(
            "  {key:key_width$}  {:<8}  {shape:<16}  {} bytes",
            t.dtype().name(),
            t.as_bytes().len()
        );
    }
    if !store.metadata.is_empty() {
        println!("metadata ({}):", store.metadata.len());
        for (key, v) in &store.metadata {
            println!("  {key}: {v}");
        }
    }
    let elements: usize = store.tensors.iter().map(|(_, t)| t.len()).sum();
    let bytes = store.total_bytes();
    println!(
        "total: {} tensors, {elements} elements, {bytes} bytes ({:.2} MiB)",
        store.tensors.len(),
        bytes as f64 / (1024.0 * 1024.0)
    );
}

fn inspect_onnx(model: &Path) -> CliResult {
    let g = infer::onnx::load_file(model)?;
    let mut opsets: Vec<_> = g.opsets.iter().collect();
    opsets.sort();
    println!("model: {}", model.display());
    for (domain, v) in opsets {
        let d = if domain.is_empty() { "ai.onnx" } else { domain };
        println!("opset: {d} {v}");
    }
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {}: {}", g.values[i].name, g.values[i].ty);
    }
    println!("outputs:");
    for &o in &g.outputs {
        println!("  {}: {}", g.values[o].name, g.values[o].ty);
    }
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &g.nodes {
        *hist.entry(n.op_type.as_str()).or_default() += 1;
    }
    println!("operators ({} nodes):", g.nodes.len());
    for (op, count) in hist {
        println!("  {op}: {count}");
    }
    let (params, bytes) = g.parameter_count();
    println!(
        "parameters: {params} ({:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
