//! Keras models: a Keras 3 architecture (`config.json` of a `.keras` zip, a separate config
//! file beside a `.weights.h5`, or a legacy `.h5`'s `model_config`) interpreted into an IR
//! graph of ONNX ops over the stored weights.
//!
//! Sequential and Functional models of the common layers are supported (see
//! `keras_layers`, `keras_spatial`, `keras_recurrent`, `keras_attention`), also as layers
//! of another model (inlined, their weights and node names scoped under their name);
//! anything else is an error naming the layer. The graph keeps Keras's
//! channels-last layout at its edges: convolutions and pools are wrapped in Transposes to
//! and from ONNX's channels-first (the optimizer cancels adjacent pairs).

use super::graph::GraphBuilder;
use super::keras_layers::{Call, Layer, LayerBuilder, Scope};
use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, ValueId, ValueType};
use crate::tensor::{DType, Tensor};
use crate::weights::{self, keras::KerasFile, WeightFormat};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Loads a `.keras` zip or a legacy `.h5` (both carry their architecture).
pub fn load_file(path: &Path) -> Result<Graph> {
    let KerasFile { config, layers, .. } = read(path)?;
    let config = config.ok_or_else(|| Error::Format {
        path: path.into(),
        reason: "a Keras .weights.h5 file holds no architecture: give its config.json too \
                 (`infer run model.weights.h5 --config config.json …`)"
            .into(),
    })?;
    build(&config, layers, path)
}

/// Loads a Keras `.weights.h5` (or any Keras file) with the architecture of `config`.
pub fn load_with_config(weights_path: &Path, config: &Path) -> Result<Graph> {
    let text = std::fs::read_to_string(config).map_err(|source| Error::Io {
        path: config.into(),
        source,
    })?;
    let config: Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: config.into(),
        reason: format!("not JSON: {e}"),
    })?;
    let file = read(weights_path)?;
    build(&config, file.layers, weights_path)
}

/// A one-line description of the architecture a Keras file carries (`None` without one).
pub fn describe_file(path: &Path) -> Result<Option<String>> {
    Ok(read(path)?.config.as_ref().map(describe))
}

/// `Sequential 'mlp': 5 layers (Dense ×3, Dropout, Softmax)`.
pub fn describe(config: &Value) -> String {
    let class = config["class_name"].as_str().unwrap_or("?");
    let name = config["config"]["name"].as_str().unwrap_or("?");
    let layers = config["config"]["layers"].as_array().map_or(&[][..], |l| l);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for l in layers {
        let c = l["class_name"].as_str().unwrap_or("?");
        match counts.iter_mut().find(|(k, _)| *k == c) {
            Some((_, n)) => *n += 1,
            None => counts.push((c, 1)),
        }
    }
    let list: Vec<String> = counts
        .iter()
        .map(|(c, n)| {
            if *n > 1 {
                format!("{c} ×{n}")
            } else {
                c.to_string()
            }
        })
        .collect();
    format!(
        "{class} '{name}': {} layers ({})",
        layers.len(),
        list.join(", ")
    )
}

fn read(path: &Path) -> Result<KerasFile> {
    let fmt_err = |reason: String| Error::Format {
        path: path.into(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    match weights::detect_bytes(&bytes) {
        Some(WeightFormat::Keras) => weights::keras::read_zip(&bytes),
        Some(WeightFormat::Hdf5) => weights::keras::read_h5(bytes),
        _ => return Err(fmt_err("not a Keras file (.keras zip or HDF5)".into())),
    }
    .map_err(fmt_err)
}

/// Builds the graph of a Keras model config over each layer's variables (by layer name).
pub fn build(config: &Value, weights: HashMap<String, Vec<Tensor>>, path: &Path) -> Result<Graph> {
    let err = |reason: String| Error::Format {
        path: path.into(),
        reason,
    };
    let mut b = LayerBuilder::new(weights);
    let outputs = model(
        &mut b,
        config["class_name"].as_str(),
        &config["config"],
        None,
    )
    .map_err(err)?;
    for (v, name) in outputs {
        b.output(v, &name).map_err(err)?;
    }
    Ok(b.finish())
}

/// The layers of a Sequential or Functional model `config` on `inputs` (`None`: the
/// model's own inputs, declared as graph inputs); its outputs with their layer names.
fn model(
    b: &mut LayerBuilder,
    class: Option<&str>,
    config: &Value,
    inputs: Option<&[ValueId]>,
) -> Result<Vec<(ValueId, String)>, String> {
    match class {
        Some("Sequential") => sequential(b, config, inputs),
        Some("Functional" | "Model") => functional(b, config, inputs),
        Some(other) => Err(format!(
            "model class '{other}' is not supported (Sequential and Functional models are)"
        )),
        None => Err("the config has no class_name: not a Keras model config".into()),
    }
}

fn sequential(
    b: &mut LayerBuilder,
    config: &Value,
    inputs: Option<&[ValueId]>,
) -> Result<Vec<(ValueId, String)>, String> {
    let layers = config["layers"]
        .as_array()
        .ok_or("the Sequential config has no layers")?;
    let (first, rest) = match layers.split_first() {
        Some((f, rest)) if f["class_name"] == "InputLayer" => (f, rest),
        _ => (&Value::Null, &layers[..]),
    };
    let mut x = match inputs {
        Some([x]) => *x,
        Some(more) => {
            return Err(format!(
                "a Sequential model called on {} inputs",
                more.len()
            ))
        }
        None if first.is_null() => {
            // No InputLayer: the input shape is the model's build shape.
            let shape = &config["build_input_shape"];
            declare_input(b, "input", shape, "float32")?
        }
        None => input(b, first)?,
    };
    let mut last = "input".to_string();
    for layer in rest {
        let l = Layer::parse(layer)?;
        x = b.apply(&l, &[x], "")?;
        last = l.name;
    }
    Ok(vec![(x, last)])
}

fn input(b: &mut LayerBuilder, layer: &Value) -> Result<ValueId, String> {
    let c = &layer["config"];
    let name = c["name"]
        .as_str()
        .or(layer["name"].as_str())
        .unwrap_or("input");
    let shape = if c["batch_shape"].is_array() {
        &c["batch_shape"]
    } else {
        &c["batch_input_shape"]
    };
    declare_input(b, name, shape, c["dtype"].as_str().unwrap_or("float32"))
}

/// An input of Keras shape `[null, d…]` (null: any size; the first is the batch).
fn declare_input(
    b: &mut LayerBuilder,
    name: &str,
    shape: &Value,
    dtype: &str,
) -> Result<ValueId, String> {
    let dims = shape
        .as_array()
        .ok_or_else(|| format!("input '{name}' has no shape"))?;
    let shape = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d.as_u64() {
            Some(n) => Dim::Known(n as usize),
            None if i == 0 => Dim::Symbol("batch".into()),
            None => Dim::Symbol(format!("{name}_{i}")),
        })
        .collect();
    let dtype = match dtype {
        "float32" => DType::F32,
        "float64" => DType::F64,
        "float16" => DType::F16,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        other => return Err(format!("input '{name}': unsupported dtype {other}")),
    };
    let ty = ValueType {
        kind: Default::default(),
        dtype: Some(dtype),
        shape: Some(shape),
    };
    Ok(b.graph().input(name, ty))
}

/// `[layer, node index, tensor index]` of a Functional model's inputs/outputs lists (one
/// triple alone when the model has a single input or output).
fn endpoints(v: &Value) -> Vec<(String, u64, u64)> {
    let triple = |t: &Value| -> Option<(String, u64, u64)> {
        Some((t[0].as_str()?.to_string(), t[1].as_u64()?, t[2].as_u64()?))
    };
    match v.as_array() {
        Some(a) if a.first().is_some_and(Value::is_string) => triple(v).into_iter().collect(),
        Some(a) => a.iter().filter_map(triple).collect(),
        None => Vec::new(),
    }
}

fn functional(
    b: &mut LayerBuilder,
    config: &Value,
    inputs: Option<&[ValueId]>,
) -> Result<Vec<(ValueId, String)>, String> {
    let layers = config["layers"]
        .as_array()
        .ok_or("the model config has no layers")?;
    let input_layers = endpoints(&config["input_layers"]);
    if let Some(given) = inputs {
        if given.len() != input_layers.len() {
            return Err(format!(
                "a model of {} inputs called on {}",
                input_layers.len(),
                given.len()
            ));
        }
    }
    // The output of (layer, call index, tensor index).
    let mut values: HashMap<(String, u64, u64), ValueId> = HashMap::new();
    for layer in layers {
        if layer["class_name"] == "InputLayer" {
            let name = layer["config"]["name"]
                .as_str()
                .or(layer["name"].as_str())
                .unwrap_or("");
            let position = input_layers.iter().position(|(l, ..)| l == name);
            let v = match (inputs, position) {
                (Some(given), Some(i)) => given[i],
                (Some(_), None) => return Err(format!("input '{name}' is not a model input")),
                (None, _) => input(b, layer)?,
            };
            values.insert((name.to_string(), 0, 0), v);
            continue;
        }
        let l = Layer::parse(layer)?;
        let nodes = layer["inbound_nodes"].as_array().map_or(&[][..], |n| n);
        for (k, node) in nodes.iter().enumerate() {
            let lookup = |h: (String, u64, u64)| {
                values.get(&h).copied().ok_or_else(|| {
                    format!("layer '{}' reads '{}' before it is computed", l.name, h.0)
                })
            };
            let mut args = Call::positional(&[]);
            for h in history(node) {
                args.inputs.push(lookup(h)?);
            }
            // Keyword tensors (MultiHeadAttention's `key`, `attention_mask`).
            if let Some(kwargs) = node["kwargs"].as_object() {
                for (key, v) in kwargs {
                    if let [h] = tensors(v).as_slice() {
                        args.tensors.push((key.clone(), lookup(h.clone())?));
                    }
                }
                args.options = node["kwargs"].clone();
            }
            let call = if k == 0 {
                String::new()
            } else {
                format!("@{k}")
            };
            let out = b.apply_call(&l, &args, &call)?;
            values.insert((l.name.clone(), k as u64, 0), out);
        }
    }
    let mut outputs = Vec::new();
    for (layer, node, tensor) in endpoints(&config["output_layers"]) {
        let v = *values
            .get(&(layer.clone(), node, tensor))
            .ok_or_else(|| format!("output layer '{layer}' is never computed"))?;
        outputs.push((v, layer));
    }
    Ok(outputs)
}

/// The `(layer, node, tensor)` each input of an inbound node comes from, in argument order:
/// Keras 3's `{"args": [...keras tensors...]}` or Keras 2's `[[layer, node, tensor, {}], …]`.
fn history(node: &Value) -> Vec<(String, u64, u64)> {
    match node {
        Value::Object(o) => tensors(o.get("args").unwrap_or(&Value::Null)),
        Value::Array(calls) => calls
            .iter()
            .filter_map(|c| Some((c[0].as_str()?.to_string(), c[1].as_u64()?, c[2].as_u64()?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The Keras 3 tensors (`__keras_tensor__`) within `v`, in order.
fn tensors(v: &Value) -> Vec<(String, u64, u64)> {
    fn walk(v: &Value, out: &mut Vec<(String, u64, u64)>) {
        match v {
            Value::Object(o) if o.get("class_name").is_some_and(|c| c == "__keras_tensor__") => {
                let h = &v["config"]["keras_history"];
                if let (Some(l), Some(n), Some(t)) = (h[0].as_str(), h[1].as_u64(), h[2].as_u64()) {
                    out.push((l.to_string(), n, t));
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

impl LayerBuilder {
    pub(super) fn graph(&mut self) -> &mut GraphBuilder {
        &mut self.g
    }

    /// A Sequential or Functional model used as a layer: its layers inlined, their weights
    /// and node names scoped under its name (`inner/dense`; `inner@1/…` for a second call).
    pub(super) fn nested(
        &mut self,
        layer: &Layer,
        inputs: &[ValueId],
        call: &str,
    ) -> Result<ValueId, String> {
        let outer = self.scope.clone();
        self.scope = Scope {
            weights: format!("{}{}/", outer.weights, layer.name),
            names: format!("{}{}{call}/", outer.names, layer.name),
        };
        let outputs = model(self, Some(&layer.class), &layer.config, Some(inputs));
        self.scope = outer;
        match outputs?.as_slice() {
            [(v, _)] => Ok(*v),
            more => Err(format!(
                "layer '{}': nested models with {} outputs are not supported",
                layer.name,
                more.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sequential(layers: Value) -> Value {
        json!({"class_name": "Sequential", "config": {"name": "m", "layers": layers}})
    }

    fn input(shape: Value) -> Value {
        json!({"class_name": "InputLayer", "config": {"name": "x", "batch_shape": shape}})
    }

    #[test]
    fn a_dense_relu_model_computes_x_w_plus_b() {
        let config = sequential(json!([
            input(json!([null, 2])),
            {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "relu"}},
        ]));
        let kernel = Tensor::from_vec(vec![2, 3], vec![1f32, -1., 2., 0.5, 1., -3.]).unwrap();
        let bias = Tensor::from_vec(vec![3], vec![0.5f32, 0., -1.]).unwrap();
        let weights = HashMap::from([("d".to_string(), vec![kernel, bias])]);
        let graph = build(&config, weights, Path::new("m.keras")).unwrap();
        let session = crate::Session::builder().build_from_graph(graph).unwrap();
        let x = Tensor::from_vec(vec![1, 2], vec![2f32, 4.]).unwrap();
        let y = session.run_positional(vec![x]).unwrap();
        // [2, 4] · [[1, -1, 2], [0.5, 1, -3]] + [0.5, 0, -1] = [4.5, 2, -9] → relu.
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[4.5, 2.0, 0.0]);
        assert_eq!(y.names(), ["d"]);
    }

    #[test]
    fn unsupported_layers_and_missing_weights_are_named() {
        let config = sequential(json!([
            input(json!([null, 4, 2])),
            {"class_name": "ConvLSTM1D", "config": {"name": "clstm"}},
        ]));
        let e = build(&config, HashMap::new(), Path::new("m.keras"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.keras") && e.contains("'clstm'") && e.contains("ConvLSTM1D"),
            "{e}"
        );

        let config = sequential(json!([
            input(json!([null, 2])),
            {"class_name": "Dense", "config": {"name": "head", "units": 3}},
        ]));
        let e = build(&config, HashMap::new(), Path::new("m.keras"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'head'") && e.contains("0 stored variables, expected 2"),
            "{e}"
        );
    }

    #[test]
    fn a_nested_model_reads_its_weights_under_its_name() {
        let inner = json!({"class_name": "Sequential", "config": {"name": "inner", "layers": [
            input(json!([null, 2])),
            {"class_name": "Dense", "config": {"name": "d", "units": 1}},
        ]}});
        let config = sequential(json!([input(json!([null, 2])), inner]));
        let kernel = Tensor::from_vec(vec![2, 1], vec![3f32, -1.]).unwrap();
        let bias = Tensor::from_vec(vec![1], vec![0.5f32]).unwrap();
        let weights = HashMap::from([("inner/d".to_string(), vec![kernel, bias])]);
        let graph = build(&config, weights, Path::new("m.keras")).unwrap();
        let session = crate::Session::builder().build_from_graph(graph).unwrap();
        let x = Tensor::from_vec(vec![1, 2], vec![2f32, 4.]).unwrap();
        let y = session.run_positional(vec![x]).unwrap();
        // 2·3 + 4·(−1) + 0.5.
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[2.5]);
        assert_eq!(y.names(), ["inner"]);
    }

    #[test]
    fn keras_masks_reaching_a_recurrent_layer_are_refused() {
        let config = sequential(json!([
            input(json!([null, 5])),
            {"class_name": "Embedding", "config": {"name": "emb", "mask_zero": true}},
            {"class_name": "LSTM", "config": {"name": "rnn", "units": 2}},
        ]));
        let table = Tensor::from_vec(vec![4, 3], vec![0f32; 12]).unwrap();
        let weights = HashMap::from([("emb".to_string(), vec![table])]);
        let e = build(&config, weights, Path::new("m.keras"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'rnn'") && e.contains("mask_zero"), "{e}");
    }

    #[test]
    fn descriptions_count_layer_classes() {
        let config = sequential(json!([
            input(json!([null, 2])),
            {"class_name": "Dense", "config": {"name": "a"}},
            {"class_name": "Dense", "config": {"name": "b"}},
        ]));
        assert_eq!(
            describe(&config),
            "Sequential 'm': 3 layers (InputLayer, Dense ×2)"
        );
    }
}
